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

// Elements [0, s.c) of pixel (b, i, j) of every view are contiguous; so are whole rows when
// stride_w == c, and the whole tensor when it is dense. Calls f(b, i, j, count) once per
// maximal contiguous run common to all the views (count elements from that pixel on).
template <class F, class... Views>
void for_each_run(Shape s, F&& f, const Views&... v) {
  const bool rows = ((v.stride_w == index_t(s.c)) && ...);
  const bool dense = rows && ((v.stride_h == index_t(s.w) * s.c) && ...) &&
                     (s.n <= 1 || ((v.stride_n == index_t(s.h) * s.w * s.c) && ...));
  if (dense) {
    f(0, 0, 0, index_t(s.n) * s.h * s.w * s.c);
  } else if (rows) {
    for (int b = 0; b < s.n; ++b)
      for (int i = 0; i < s.h; ++i) f(b, i, 0, index_t(s.w) * s.c);
  } else {
    for_each_pixel(s, [&](int b, int i, int j) { f(b, i, j, index_t(s.c)); });
  }
}

// d[0, n) = clamp(a + b) (b null: clamp(a)), four vectors per step, masked tail.
template <class Arch>
EDGENN_INLINE void add_clamp_run(const float* a, const float* b, float* d, index_t n, Clamp cl) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  const V lo = V::broadcast(cl.lo), hi = V::broadcast(cl.hi);
  auto op = [&](index_t i) { return b ? V::load(a + i) + V::load(b + i) : V::load(a + i); };
  index_t i = 0;
  for (; i + 4 * VL <= n; i += 4 * VL) {
    const V v0 = op(i), v1 = op(i + VL), v2 = op(i + 2 * VL), v3 = op(i + 3 * VL);
    min(max(v0, lo), hi).store(d + i);
    min(max(v1, lo), hi).store(d + i + VL);
    min(max(v2, lo), hi).store(d + i + 2 * VL);
    min(max(v3, lo), hi).store(d + i + 3 * VL);
  }
  for (; i + VL <= n; i += VL) min(max(op(i), lo), hi).store(d + i);
  if (i < n) {
    const int t = int(n - i);
    V v = V::load_partial(a + i, t);
    if (b) v = v + V::load_partial(b + i, t);
    min(max(v, lo), hi).store_partial(d + i, t);
  }
}
}  // namespace detail

// y = act(x); x and y may be the same view.
template <class Arch = simd::default_arch>
Status activation(ConstTensor x, Tensor y, Activation act) {
  EDGENN_CHECK(x.shape == y.shape, Error::shape_mismatch, "activation: input and output shapes differ");
  const Clamp cl = activation_clamp(act);
  detail::for_each_run(
      x.shape,
      [&](int b, int i, int j, index_t n) {
        detail::add_clamp_run<Arch>(x.pixel(b, i, j), nullptr, y.pixel(b, i, j), n, cl);
      },
      x, y);
  return Status::ok();
}

// y = act(a + b); y may alias a or b. Dense views (or rows of them) run as one array.
template <class Arch = simd::default_arch>
Status add(ConstTensor a, ConstTensor b, Tensor y, Activation act = Activation::none) {
  EDGENN_CHECK(a.shape == b.shape && a.shape == y.shape, Error::shape_mismatch, "add: operand shapes differ");
  const Clamp cl = activation_clamp(act);
  detail::for_each_run(
      a.shape,
      [&](int n, int i, int j, index_t count) {
        detail::add_clamp_run<Arch>(a.pixel(n, i, j), b.pixel(n, i, j), y.pixel(n, i, j), count, cl);
      },
      a, b, y);
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
