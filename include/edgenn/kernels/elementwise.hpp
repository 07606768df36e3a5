// Element-wise kernels: activations, residual add with fused activation, channel concat.
#pragma once

#include "edgenn/core/tensor.hpp"
#include "edgenn/kernels/activation.hpp"
#include "edgenn/simd/simd.hpp"

namespace edgenn::kernels {

namespace detail {
// Apply f(dst, src0, src1, channels) to every pixel of same-shaped views.
template <class F>
void for_each_pixel(Shape s, F&& f) {
  for (int b = 0; b < s.n; ++b)
    for (int i = 0; i < s.h; ++i)
      for (int j = 0; j < s.w; ++j) f(b, i, j);
}
}  // namespace detail

// y = act(x); x and y may be the same view.
template <class Arch = simd::default_arch>
Status activation(ConstTensor x, Tensor y, Activation act) {
  EDGENN_CHECK(x.shape == y.shape, Error::shape_mismatch, "activation: input and output shapes differ");
  using V = simd::Vec<Arch>;
  const Clamp cl = activation_clamp(act);
  const V lo = V::broadcast(cl.lo), hi = V::broadcast(cl.hi);
  detail::for_each_pixel(x.shape, [&](int b, int i, int j) {
    const float* s = x.pixel(b, i, j);
    float* d = y.pixel(b, i, j);
    int c = 0;
    for (; c + V::size <= x.c(); c += V::size) min(max(V::load(s + c), lo), hi).store(d + c);
    for (; c < x.c(); ++c) d[c] = s[c] < cl.lo ? cl.lo : s[c] > cl.hi ? cl.hi : s[c];
  });
  return Status::ok();
}

// y = act(a + b); y may alias a or b.
template <class Arch = simd::default_arch>
Status add(ConstTensor a, ConstTensor b, Tensor y, Activation act = Activation::none) {
  EDGENN_CHECK(a.shape == b.shape && a.shape == y.shape, Error::shape_mismatch, "add: operand shapes differ");
  using V = simd::Vec<Arch>;
  const Clamp cl = activation_clamp(act);
  const V lo = V::broadcast(cl.lo), hi = V::broadcast(cl.hi);
  detail::for_each_pixel(a.shape, [&](int n, int i, int j) {
    const float* pa = a.pixel(n, i, j);
    const float* pb = b.pixel(n, i, j);
    float* d = y.pixel(n, i, j);
    int c = 0;
    for (; c + V::size <= a.c(); c += V::size) min(max(V::load(pa + c) + V::load(pb + c), lo), hi).store(d + c);
    for (; c < a.c(); ++c) {
      const float v = pa[c] + pb[c];
      d[c] = v < cl.lo ? cl.lo : v > cl.hi ? cl.hi : v;
    }
  });
  return Status::ok();
}

// y = concat(a, b) along channels. (Producers can also write into channel slices of one
// buffer directly — TensorView::channels — which makes the concat free.)
inline Status concat_channels(ConstTensor a, ConstTensor b, Tensor y) {
  EDGENN_CHECK(a.n() == b.n() && a.h() == b.h() && a.w() == b.w(), Error::shape_mismatch,
               "concat: operands differ in batch or spatial size");
  EDGENN_CHECK(y.n() == a.n() && y.h() == a.h() && y.w() == a.w() && y.c() == a.c() + b.c(), Error::shape_mismatch,
               "concat: output shape is not the concatenation");
  detail::for_each_pixel(y.shape, [&](int n, int i, int j) {
    float* d = y.pixel(n, i, j);
    const float* pa = a.pixel(n, i, j);
    const float* pb = b.pixel(n, i, j);
    for (int c = 0; c < a.c(); ++c) d[c] = pa[c];
    for (int c = 0; c < b.c(); ++c) d[a.c() + c] = pb[c];
  });
  return Status::ok();
}

}  // namespace edgenn::kernels
