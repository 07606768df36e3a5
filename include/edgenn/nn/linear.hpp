// Classifier head: global average pooling over the last feature map, then a fully
// connected layer (PyTorch [out][in] weights). The head of ResNet, MobileNetV2 and the
// MEANet extension block.
#pragma once

#include <string>
#include <vector>

#include "edgenn/kernels/fully_connected.hpp"
#include "edgenn/kernels/pooling.hpp"
#include "edgenn/nn/conv_bn.hpp"

namespace edgenn::nn {

template <class Arch = simd::default_arch>
struct PoolLinear {
  static constexpr bool is_conv = false;
  std::string name;  // e.g. "fc" (tensors "fc.weight", "fc.bias")
  int in_features = 0, out_features = 0;
  std::vector<float> weight;  // [out][in]
  std::vector<float> bias;    // [out]

  std::vector<float> packed;
  kernels::PackedWeights pw;

  void allocate() {
    weight.assign(std::size_t(in_features) * out_features, 0.0f);
    bias.assign(std::size_t(out_features), 0.0f);
  }
  template <class F>
  void visit_params(F&& f) {
    f(ParamRef{name + ".weight", {out_features, in_features}, &weight, true});
    f(ParamRef{name + ".bias", {out_features}, &bias, true});
  }
  std::int64_t macs(int batch) const { return std::int64_t(batch) * in_features * out_features; }
  std::size_t workspace_bytes(Shape in) const { return aligned_bytes<float>(std::size_t(in.n) * in.c); }

  Status prepare() {
    EDGENN_CHECK(weight.size() == std::size_t(in_features) * out_features && bias.size() == std::size_t(out_features),
                 Error::shape_mismatch, "PoolLinear: parameter sizes do not match the layer");
    packed.assign(std::size_t(kernels::fc_packed_floats<Arch>(in_features, out_features)), 0.0f);
    pw = kernels::pack_fc_weights<Arch>(in_features, out_features, weight.data(), bias.data(), packed.data());
    return Status::ok();
  }

  // logits: in.n rows of out_features floats at stride ldl.
  Status forward(ConstTensor in, float* logits, index_t ldl, Workspace& ws) const {
    EDGENN_CHECK(!packed.empty(), Error::invalid_argument, "PoolLinear: prepare() was not called");
    EDGENN_CHECK(in.c() == in_features, Error::shape_mismatch, "PoolLinear: feature channels differ from the layer");
    WorkspaceScope scope(ws);
    float* pooled = ws.take<float>(std::size_t(in.n()) * in.c());
    EDGENN_TRY(ws.status());
    if (ws.measuring()) return Status::ok();
    EDGENN_TRY(kernels::global_avg_pool<Arch>(in, pooled, in.c()));
    return kernels::fully_connected<Arch>(in.n(), pooled, in.c(), pw, logits, ldl);
  }
};

}  // namespace edgenn::nn
