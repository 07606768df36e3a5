// CIFAR-style ResNet (He et al. 2016, section 4.2): depth 6n+2, three stages of n
// BasicBlocks at widths w, 2w, 4w (stride 2 between stages, 1x1 projection shortcuts),
// global average pooling and a linear classifier. Any depth and width; any input channels.
#pragma once

#include "edgenn/nn/classifier.hpp"

namespace edgenn::nn {

struct ResNetCifarConfig {
  int depth = 20;
  int width = 16;
  int in_ch = 1;
  int num_classes = 10;

  Status validate() const {
    EDGENN_CHECK(depth >= 8 && (depth - 2) % 6 == 0, Error::invalid_argument, "resnet_cifar: depth must be 6n+2, n >= 1");
    EDGENN_CHECK(width > 0 && in_ch > 0 && num_classes > 0, Error::invalid_argument,
                 "resnet_cifar: width, input channels and classes must be positive");
    return Status::ok();
  }
  int feature_channels() const { return 4 * width; }
};

// `prefix` is prepended to every tensor name (e.g. "main." inside MEANet).
template <class Arch = simd::default_arch>
Classifier<Arch> build_resnet_cifar(const ResNetCifarConfig& cfg, const std::string& prefix = "") {
  Classifier<Arch> m;
  const int n = (cfg.depth - 2) / 6;
  m.features.add(make_conv_bn<Arch>(prefix + "conv1", prefix + "bn1", cfg.in_ch, cfg.width, 3, 1, 1, Activation::relu));
  int cin = cfg.width;
  for (int stage = 0; stage < 3; ++stage) {
    const int cout = cfg.width << stage;
    for (int i = 0; i < n; ++i) {
      const std::string name = prefix + "layer" + std::to_string(stage + 1) + "." + std::to_string(i);
      m.features.add(BasicBlock<Arch>::make(name, cin, cout, (stage > 0 && i == 0) ? 2 : 1));
      cin = cout;
    }
  }
  m.head.name = prefix + "fc";
  m.head.in_features = cin;
  m.head.out_features = cfg.num_classes;
  m.head.allocate();
  return m;
}

}  // namespace edgenn::nn
