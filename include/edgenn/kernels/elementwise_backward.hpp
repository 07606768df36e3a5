// Backward of the element-wise kernels (elementwise.hpp) and of fused activations.
//
//   activation:    y = act(x)        dx = dy * act'(y), from the saved output y (PyTorch: relu
//                                    passes where y > 0, relu6 where 0 < y < 6)
//   residual add:  y = act(a + b)    da = db = dy * act'(y)
//   concat:        y = [a, b]        da = dy[..., :Ca], db = dy[..., Ca:] (slicing; a consumer
//                                    can also read dy.channels(...) directly, zero-copy)
// Every output is written, or added to with its `accumulate` flag (a tensor feeding several
// consumers sums their gradients).
//
// The activation masks need a comparison, which the Vec layer does not offer: those loops are
// plain channel loops that the compiler vectorizes (compare + blend); the rest uses Vec.
#pragma once

#include "edgenn/core/tensor.hpp"
#include "edgenn/kernels/activation.hpp"
#include "edgenn/simd/simd.hpp"

namespace edgenn::kernels {

namespace detail {

// d[c] (+)= g[c] * act'(y[c]) for c < n.
inline void masked_gradient(Activation act, const float* EDGENN_RESTRICT y, const float* g, float* d, int n,
                            bool accumulate) {
  if (act == Activation::relu) {
    if (accumulate) {
      for (int c = 0; c < n; ++c) d[c] += y[c] > 0.0f ? g[c] : 0.0f;
    } else {
      for (int c = 0; c < n; ++c) d[c] = y[c] > 0.0f ? g[c] : 0.0f;
    }
  } else {  // relu6
    if (accumulate) {
      for (int c = 0; c < n; ++c) d[c] += (y[c] > 0.0f && y[c] < 6.0f) ? g[c] : 0.0f;
    } else {
      for (int c = 0; c < n; ++c) d[c] = (y[c] > 0.0f && y[c] < 6.0f) ? g[c] : 0.0f;
    }
  }
}

// d[c] (+)= g[c] for c < n.
template <class Arch>
EDGENN_INLINE void pass_gradient(const float* g, float* d, int n, bool accumulate) {
  using V = simd::Vec<Arch>;
  int c = 0;
  for (; c + V::size <= n; c += V::size) (accumulate ? V::load(d + c) + V::load(g + c) : V::load(g + c)).store(d + c);
  if (c < n) {
    const int r = n - c;
    (accumulate ? V::load_partial(d + c, r) + V::load_partial(g + c, r) : V::load_partial(g + c, r)).store_partial(d + c, r);
  }
}

template <class F>
void for_each_pixel_of(Shape s, F&& f) {
  for (int b = 0; b < s.n; ++b)
    for (int i = 0; i < s.h; ++i)
      for (int j = 0; j < s.w; ++j) f(b, i, j);
}

}  // namespace detail

// dx = dy * act'(y) (written, or added with `accumulate`); y is the activation's output.
// dx may be the same view as dy (not with accumulate).
template <class Arch = simd::default_arch>
Status activation_backward(ConstTensor y, ConstTensor dy, Tensor dx, Activation act, bool accumulate = false) {
  EDGENN_CHECK(y.shape == dy.shape && y.shape == dx.shape, Error::shape_mismatch,
               "activation_backward: y, dy and dx shapes differ");
  const int C = dy.c();
  detail::for_each_pixel_of(dy.shape, [&](int b, int i, int j) {
    if (act == Activation::none) {
      detail::pass_gradient<Arch>(dy.pixel(b, i, j), dx.pixel(b, i, j), C, accumulate);
    } else {
      detail::masked_gradient(act, y.pixel(b, i, j), dy.pixel(b, i, j), dx.pixel(b, i, j), C, accumulate);
    }
  });
  return Status::ok();
}

// Residual add y = act(a + b): da and db (+)= dy * act'(y). A view with null data is skipped
// (e.g. an input that needs no gradient). y may be empty (null data) when act is none.
template <class Arch = simd::default_arch>
Status add_backward(ConstTensor y, ConstTensor dy, Activation act, Tensor da, Tensor db, bool accumulate_a = false,
                    bool accumulate_b = false) {
  EDGENN_CHECK(act == Activation::none || (y.data && y.shape == dy.shape), Error::shape_mismatch,
               "add_backward: the activation needs the output y, shaped like dy");
  EDGENN_CHECK((!da.data || da.shape == dy.shape) && (!db.data || db.shape == dy.shape), Error::shape_mismatch,
               "add_backward: gradient views are not shaped like dy");
  const int C = dy.c();
  detail::for_each_pixel_of(dy.shape, [&](int n, int i, int j) {
    const float* g = dy.pixel(n, i, j);
    Tensor outs[2] = {da, db};
    const bool acc[2] = {accumulate_a, accumulate_b};
    for (int k = 0; k < 2; ++k) {
      if (!outs[k].data) continue;
      if (act == Activation::none) {
        detail::pass_gradient<Arch>(g, outs[k].pixel(n, i, j), C, acc[k]);
      } else {
        detail::masked_gradient(act, y.pixel(n, i, j), g, outs[k].pixel(n, i, j), C, acc[k]);
      }
    }
  });
  return Status::ok();
}

// Concat along channels y = [a, b]: da (+)= dy[..., :Ca], db (+)= dy[..., Ca:]. A view with
// null data is skipped.
template <class Arch = simd::default_arch>
Status concat_channels_backward(ConstTensor dy, Tensor da, Tensor db, bool accumulate = false) {
  const Shape& s = dy.shape;
  EDGENN_CHECK(da.n() == s.n && da.h() == s.h && da.w() == s.w && db.n() == s.n && db.h() == s.h && db.w() == s.w &&
                   da.c() + db.c() == s.c,
               Error::shape_mismatch, "concat_channels_backward: dy is not the concatenation of da and db");
  detail::for_each_pixel_of(s, [&](int n, int i, int j) {
    const float* g = dy.pixel(n, i, j);
    if (da.data) detail::pass_gradient<Arch>(g, da.pixel(n, i, j), da.c(), accumulate);
    if (db.data) detail::pass_gradient<Arch>(g + da.c(), db.pixel(n, i, j), db.c(), accumulate);
  });
  return Status::ok();
}

}  // namespace edgenn::kernels
