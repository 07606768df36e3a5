// Batch normalisation for inference: y = x * scale + shift per channel, with
// scale = gamma / sqrt(var + eps), shift = beta - mean * scale; and folding of a BN into
// the convolution (or FC) before it. Training-mode BN lives with the backward kernels.
#pragma once

#include <cmath>

#include "edgenn/core/status.hpp"
#include "edgenn/core/tensor.hpp"
#include "edgenn/kernels/activation.hpp"
#include "edgenn/simd/simd.hpp"

namespace edgenn::kernels {

struct BatchNormParams {
  const float* gamma = nullptr;  // null = 1
  const float* beta = nullptr;   // null = 0
  const float* mean = nullptr;
  const float* var = nullptr;
  float eps = 1e-5f;
};

// scale/shift of `channels` channels from running statistics.
inline Status batchnorm_scale_shift(const BatchNormParams& bn, int channels, float* scale, float* shift) {
  EDGENN_CHECK(bn.mean && bn.var, Error::invalid_argument, "batchnorm: running mean and variance are required");
  for (int c = 0; c < channels; ++c) {
    EDGENN_CHECK(bn.var[c] + bn.eps > 0.0f, Error::invalid_argument, "batchnorm: variance + eps must be positive");
    const float s = (bn.gamma ? bn.gamma[c] : 1.0f) / std::sqrt(bn.var[c] + bn.eps);
    scale[c] = s;
    shift[c] = (bn.beta ? bn.beta[c] : 0.0f) - bn.mean[c] * s;
  }
  return Status::ok();
}

// y = act(x * scale + shift); x and y may be the same view.
template <class Arch = simd::default_arch>
Status batchnorm_inference(ConstTensor x, const float* scale, const float* shift, Tensor y,
                           Activation act = Activation::none) {
  EDGENN_CHECK(x.shape == y.shape, Error::shape_mismatch, "batchnorm: input and output shapes differ");
  using V = simd::Vec<Arch>;
  const Clamp cl = activation_clamp(act);
  const V lo = V::broadcast(cl.lo), hi = V::broadcast(cl.hi);
  const int C = x.c();
  for (int b = 0; b < x.n(); ++b)
    for (int i = 0; i < x.h(); ++i)
      for (int j = 0; j < x.w(); ++j) {
        const float* src = x.pixel(b, i, j);
        float* dst = y.pixel(b, i, j);
        int c = 0;
        for (; c + V::size <= C; c += V::size)
          min(max(fma(V::load(src + c), V::load(scale + c), V::load(shift + c)), lo), hi).store(dst + c);
        for (; c < C; ++c) {
          float v = src[c] * scale[c] + shift[c];
          dst[c] = v < cl.lo ? cl.lo : v > cl.hi ? cl.hi : v;
        }
      }
  return Status::ok();
}

// Fold BN into the preceding layer's weights [cout][k] (any per-output-row layout, e.g.
// OHWI) and bias: W'[o] = W[o] * scale[o], b'[o] = (b[o] - mean[o]) * scale[o] + beta[o].
// `bias` (cout floats) receives the folded bias; pass the layer's own bias or zeros in it.
inline Status fold_batchnorm(const BatchNormParams& bn, int cout, int k, float* weights, float* bias) {
  EDGENN_CHECK(bn.mean && bn.var && weights && bias, Error::invalid_argument, "fold_batchnorm: missing tensors");
  for (int o = 0; o < cout; ++o) {
    EDGENN_CHECK(bn.var[o] + bn.eps > 0.0f, Error::invalid_argument, "fold_batchnorm: variance + eps must be positive");
    const float s = (bn.gamma ? bn.gamma[o] : 1.0f) / std::sqrt(bn.var[o] + bn.eps);
    for (int i = 0; i < k; ++i) weights[index_t(o) * k + i] *= s;
    bias[o] = (bias[o] - bn.mean[o]) * s + (bn.beta ? bn.beta[o] : 0.0f);
  }
  return Status::ok();
}

}  // namespace edgenn::kernels
