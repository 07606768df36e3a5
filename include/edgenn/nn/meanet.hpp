// MEANet's edge network (Long et al., ICDCS 2021; spec: shared/specs/meanet.md §2):
//   main block       a trained classifier over all C classes (frozen on the device)
//   adaptive block   conv3x3-BN-ReLU + BasicBlocks on the raw input
//   extension block  BasicBlocks on concat(main features, adaptive features), pooling and a
//                    linear classifier over the H hard classes only
//
// Running it is split in two so the router can stop after the main block: run_main()
// writes the main features straight into the first channels of the concat buffer (zero
// copy), run_extension() fills the rest with the adaptive block and runs the extension.
// Nothing of the extension path is computed unless run_extension() is called.
#pragma once

#include <utility>
#include <vector>

#include "edgenn/nn/resnet.hpp"

namespace edgenn::nn {

struct MEANetConfig {
  ResNetCifarConfig main;
  int adaptive_stem = 16;
  std::vector<std::pair<int, int>> adaptive_blocks = {{16, 1}, {32, 2}, {64, 2}};    // (channels, stride)
  std::vector<std::pair<int, int>> extension_blocks = {{64, 1}, {64, 1}, {64, 1}, {64, 1}};
  std::vector<int> hard_classes;  // extension output h -> original class hard_classes[h]

  Status validate() const {
    EDGENN_TRY(main.validate());
    EDGENN_CHECK(adaptive_stem > 0 && !adaptive_blocks.empty() && !extension_blocks.empty(), Error::invalid_argument,
                 "meanet: adaptive and extension blocks must not be empty");
    EDGENN_CHECK(!hard_classes.empty() && int(hard_classes.size()) <= main.num_classes, Error::invalid_argument,
                 "meanet: the hard-class table must list 1..C classes");
    std::vector<bool> seen(std::size_t(main.num_classes), false);
    for (int c : hard_classes) {
      EDGENN_CHECK(c >= 0 && c < main.num_classes, Error::invalid_argument, "meanet: hard class out of range");
      EDGENN_CHECK(!seen[std::size_t(c)], Error::invalid_argument, "meanet: hard class listed twice");
      seen[std::size_t(c)] = true;
    }
    for (const auto& b : adaptive_blocks)
      EDGENN_CHECK(b.first > 0 && (b.second == 1 || b.second == 2), Error::invalid_argument,
                   "meanet: adaptive block needs channels > 0 and stride 1 or 2");
    for (const auto& b : extension_blocks)
      EDGENN_CHECK(b.first > 0 && (b.second == 1 || b.second == 2), Error::invalid_argument,
                   "meanet: extension block needs channels > 0 and stride 1 or 2");
    return Status::ok();
  }
};

template <class Arch = simd::default_arch>
struct MEANet {
  Classifier<Arch> main;
  Network<Arch> adaptive;
  Network<Arch> extension;
  PoolLinear<Arch> extension_head;
  std::vector<int> hard_classes;
  std::vector<int> hard_index;  // original class -> h, or -1 for easy classes

  int num_classes() const { return main.num_classes(); }
  int num_hard() const { return int(hard_classes.size()); }
  bool is_hard(int cls) const { return cls >= 0 && cls < int(hard_index.size()) && hard_index[std::size_t(cls)] >= 0; }

  Shape main_feature_shape(Shape in) const { return main.feature_shape(in); }
  Shape concat_shape(Shape in) const {
    const Shape m = main.feature_shape(in), a = adaptive.output_shape(in);
    return Shape{m.n, m.h, m.w, m.c + a.c};
  }

  std::int64_t main_macs(Shape in) const { return main.macs(in); }
  std::int64_t extension_macs(Shape in) const {
    return adaptive.macs(in) + extension.macs(concat_shape(in)) + extension_head.macs(in.n);
  }

  template <class F>
  void visit_layers(F&& f) {
    main.visit_layers(f);
    adaptive.visit_layers(f);
    extension.visit_layers(f);
    f(extension_head);
  }
  Status prepare() {
    EDGENN_TRY(main.prepare());
    EDGENN_TRY(adaptive.prepare());
    EDGENN_TRY(extension.prepare());
    return extension_head.prepare();
  }

  // Main block: logits over all classes; main features into concat.channels(0, Cm).
  Status run_main(ConstTensor x, Tensor concat, float* logits, index_t ldl, Workspace& ws) const {
    const Shape ms = main.feature_shape(x.shape);
    EDGENN_CHECK(concat.shape == concat_shape(x.shape), Error::shape_mismatch, "MEANet: concat buffer has the wrong shape");
    const Tensor feat = concat.channels(0, ms.c);
    return main.forward(x, logits, ldl, ws, &feat);
  }

  // Adaptive + extension blocks on inputs whose main features are already in `concat`:
  // logits over the hard classes (ext_logits rows of num_hard() at stride lde).
  Status run_extension(ConstTensor x, Tensor concat, float* ext_logits, index_t lde, Workspace& ws) const {
    EDGENN_CHECK(concat.shape == concat_shape(x.shape), Error::shape_mismatch, "MEANet: concat buffer has the wrong shape");
    const Shape ms = main.feature_shape(x.shape);
    EDGENN_TRY(adaptive.forward(x, concat.channels(ms.c, concat.c() - ms.c), ws));
    WorkspaceScope scope(ws);
    const Shape es = extension.output_shape(concat.shape);
    float* e = ws.take<float>(std::size_t(es.size()));
    EDGENN_TRY(ws.status());
    EDGENN_TRY(extension.forward(concat, Tensor::dense(e, es), ws));
    return extension_head.forward(ConstTensor::dense(e, es), ext_logits, lde, ws);
  }

  // Workspace for run_main + run_extension on `in` (the concat buffer is the caller's).
  std::size_t workspace_bytes(Shape in) const {
    Workspace m = Workspace::measure();
    std::vector<float> dummy(std::size_t(in.n) * num_classes());
    const Tensor cat(nullptr, concat_shape(in), 0, 0, 0);
    (void)run_main(ConstTensor(nullptr, in, 0, 0, 0), cat, dummy.data(), num_classes(), m);
    (void)run_extension(ConstTensor(nullptr, in, 0, 0, 0), cat, dummy.data(), num_hard(), m);
    return m.peak();
  }
};

template <class Arch = simd::default_arch>
MEANet<Arch> build_meanet(const MEANetConfig& cfg) {
  MEANet<Arch> m;
  m.main = build_resnet_cifar<Arch>(cfg.main, "main.");
  m.adaptive.add(make_conv_bn<Arch>("adaptive.conv1", "adaptive.bn1", cfg.main.in_ch, cfg.adaptive_stem, 3, 1, 1,
                                    Activation::relu));
  int c = cfg.adaptive_stem;
  for (std::size_t i = 0; i < cfg.adaptive_blocks.size(); ++i) {
    const auto [ch, s] = cfg.adaptive_blocks[i];
    m.adaptive.add(BasicBlock<Arch>::make("adaptive.blocks." + std::to_string(i), c, ch, s));
    c = ch;
  }
  c += cfg.main.feature_channels();
  for (std::size_t i = 0; i < cfg.extension_blocks.size(); ++i) {
    const auto [ch, s] = cfg.extension_blocks[i];
    m.extension.add(BasicBlock<Arch>::make("extension.blocks." + std::to_string(i), c, ch, s));
    c = ch;
  }
  m.extension_head.name = "extension.fc";
  m.extension_head.in_features = c;
  m.extension_head.out_features = int(cfg.hard_classes.size());
  m.extension_head.allocate();
  m.hard_classes = cfg.hard_classes;
  m.hard_index.assign(std::size_t(cfg.main.num_classes), -1);
  for (std::size_t h = 0; h < cfg.hard_classes.size(); ++h) m.hard_index[std::size_t(cfg.hard_classes[h])] = int(h);
  return m;
}

}  // namespace edgenn::nn
