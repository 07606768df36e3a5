// ConvBN: a convolution (regular, grouped or depthwise) followed by an optional batch norm
// and an activation — the unit every block is made of.
//
// The layer owns its parameters in PyTorch's meaning (weight in OHWI, optional bias, BN
// gamma/beta/running statistics) under PyTorch's state_dict names, so weights files bind by
// name. For inference, prepare() folds the BN into a copy of the weights and packs them
// for the SIMD architecture; forward() then runs one fused kernel:
//   out = act(BN(conv(in)) [+ residual])
// Parameters are allocated when the model is built; forward() never allocates.
#pragma once

#include <string>
#include <vector>

#include "edgenn/kernels/batchnorm.hpp"
#include "edgenn/kernels/conv2d.hpp"
#include "edgenn/kernels/depthwise.hpp"

namespace edgenn::nn {

// One named parameter tensor of a layer (what a weights file binds to).
struct ParamRef {
  std::string name;
  std::vector<int> shape;  // file layout: conv OHWI, linear [out][in], vectors [C]
  std::vector<float>* data;
  bool trainable;  // running statistics are state, not trainable
};

template <class Arch = simd::default_arch>
struct ConvBN {
  static constexpr bool is_conv = true;
  // Structure.
  std::string conv_name;  // e.g. "layer1.0.conv1" (tensors "<conv_name>.weight", ".bias")
  std::string bn_name;    // e.g. "layer1.0.bn1" (tensors ".weight", ".bias", ".running_mean", ...); empty = no BN
  kernels::Conv2dParams p;
  int cin = 0, cout = 0;
  float bn_eps = 1e-5f;

  // Parameters (PyTorch semantics).
  std::vector<float> weight;  // OHWI [cout][kh][kw][cin/groups]
  std::vector<float> bias;    // [cout] or empty
  std::vector<float> gamma, beta, running_mean, running_var;  // [cout] each, or empty (no BN / folded)

  // Inference cache (prepare()).
  std::vector<float> packed;
  kernels::PackedWeights pw;
  kernels::DepthwiseWeights dw;

  bool has_bn() const { return !bn_name.empty() && !running_mean.empty(); }
  bool depthwise() const { return p.groups == cin && cout == cin && cin > 1; }
  int k_per_out() const { return p.taps() * (cin / p.groups); }

  // Allocate zeroed parameters for the declared structure (BN identity: gamma 1, var 1).
  void allocate(bool with_bias) {
    weight.assign(std::size_t(cout) * k_per_out(), 0.0f);
    bias.assign(with_bias ? std::size_t(cout) : 0, 0.0f);
    if (!bn_name.empty()) {
      gamma.assign(std::size_t(cout), 1.0f);
      beta.assign(std::size_t(cout), 0.0f);
      running_mean.assign(std::size_t(cout), 0.0f);
      running_var.assign(std::size_t(cout), 1.0f);
    }
  }

  // Visit the parameter tensors under their file names.
  template <class F>
  void visit_params(F&& f) {
    f(ParamRef{conv_name + ".weight", {cout, p.kernel_h, p.kernel_w, cin / p.groups}, &weight, true});
    if (!bias.empty()) f(ParamRef{conv_name + ".bias", {cout}, &bias, true});
    if (!bn_name.empty() && !gamma.empty()) {
      f(ParamRef{bn_name + ".weight", {cout}, &gamma, true});
      f(ParamRef{bn_name + ".bias", {cout}, &beta, true});
      f(ParamRef{bn_name + ".running_mean", {cout}, &running_mean, false});
      f(ParamRef{bn_name + ".running_var", {cout}, &running_var, false});
    }
  }

  Shape output_shape(Shape in) const { return p.output_shape(in, cout); }
  std::int64_t macs(Shape in) const {
    const Shape o = output_shape(in);
    return std::int64_t(o.n) * o.h * o.w * cout * k_per_out();
  }
  std::size_t workspace_bytes(Shape in) const { return kernels::conv2d_workspace_bytes(p, in); }

  // Fold BN (if any) into a copy of the weights and pack them for Arch.
  Status prepare() {
    EDGENN_CHECK(weight.size() == std::size_t(cout) * k_per_out(), Error::shape_mismatch,
                 "ConvBN: weight size does not match the layer");
    std::vector<float> w = weight;
    std::vector<float> b = bias.empty() ? std::vector<float>(std::size_t(cout), 0.0f) : bias;
    if (has_bn()) {
      const kernels::BatchNormParams bn{gamma.data(), beta.data(), running_mean.data(), running_var.data(), bn_eps};
      EDGENN_TRY(kernels::fold_batchnorm(bn, cout, k_per_out(), w.data(), b.data()));
    }
    if (depthwise()) {
      packed.assign(std::size_t(kernels::depthwise_packed_floats<Arch>(p, cin)), 0.0f);
      dw = kernels::pack_depthwise_weights<Arch>(p, cin, w.data(), b.data(), packed.data());
    } else {
      packed.assign(std::size_t(kernels::conv_packed_floats<Arch>(p, cin, cout)), 0.0f);
      pw = kernels::pack_conv_weights<Arch>(p, cin, cout, w.data(), b.data(), packed.data());
    }
    return Status::ok();
  }

  Status forward(ConstTensor in, Tensor out, Workspace& ws, const ConstTensor* residual = nullptr,
                 kernels::RowRange rows = {}) const {
    EDGENN_CHECK(!packed.empty(), Error::invalid_argument, "ConvBN: prepare() was not called");
    EDGENN_CHECK(in.c() == cin, Error::shape_mismatch, "ConvBN: input channels differ from the layer");
    if (depthwise()) return kernels::depthwise_conv2d<Arch>(p, in, dw, out, ws, residual, rows);
    return kernels::conv2d<Arch>(p, in, pw, out, ws, residual, rows);
  }
};

// A convolution with BN and activation, as the builders declare it.
template <class Arch = simd::default_arch>
ConvBN<Arch> make_conv_bn(std::string conv_name, std::string bn_name, int cin, int cout, int k, int stride,
                          int groups, Activation act, bool conv_bias = false) {
  ConvBN<Arch> c;
  c.conv_name = std::move(conv_name);
  c.bn_name = std::move(bn_name);
  c.cin = cin;
  c.cout = cout;
  c.p = kernels::Conv2dParams::square(k, stride, k / 2, groups, act);
  c.allocate(conv_bias);
  return c;
}

}  // namespace edgenn::nn
