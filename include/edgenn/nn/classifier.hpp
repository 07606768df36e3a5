// Classifier: a feature network and a pooling + linear head. The last feature map stays
// available to the caller (MEANet reuses the main block's features).
#pragma once

#include "edgenn/nn/linear.hpp"
#include "edgenn/nn/network.hpp"

namespace edgenn::nn {

template <class Arch = simd::default_arch>
struct Classifier {
  Network<Arch> features;
  PoolLinear<Arch> head;

  int num_classes() const { return head.out_features; }
  Shape feature_shape(Shape in) const { return features.output_shape(in); }
  std::int64_t macs(Shape in) const { return features.macs(in) + head.macs(in.n); }

  template <class F>
  void visit_layers(F&& f) {
    features.visit_layers(f);
    f(head);
  }
  Status prepare() {
    EDGENN_TRY(features.prepare());
    return head.prepare();
  }

  // Logits for every item of `in` (in.n rows of num_classes() at stride ldl). If `feat` is
  // given (shaped feature_shape(in.shape)), the last feature map is written there.
  Status forward(ConstTensor in, float* logits, index_t ldl, Workspace& ws, const Tensor* feat = nullptr) const {
    WorkspaceScope scope(ws);
    const Shape fs = features.output_shape(in.shape);
    Tensor f;
    if (feat) {
      EDGENN_CHECK(feat->shape == fs, Error::shape_mismatch, "Classifier: feature view has the wrong shape");
      f = *feat;
    } else {
      f = Tensor::dense(ws.take<float>(std::size_t(fs.size())), fs);
      EDGENN_TRY(ws.status());
    }
    EDGENN_TRY(features.forward(in, f, ws));
    return head.forward(f, logits, ldl, ws);
  }

  std::size_t workspace_bytes(Shape in) const {
    Workspace m = Workspace::measure();
    (void)forward(ConstTensor(nullptr, in, 0, 0, 0), nullptr, num_classes(), m);
    return m.peak();
  }
};

}  // namespace edgenn::nn
