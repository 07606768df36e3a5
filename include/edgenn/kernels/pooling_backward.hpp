// Backward of pooling (pooling.hpp), NHWC, PyTorch semantics.
//
//   max:     each output's gradient goes to the first maximum of its window, scanning taps in
//            (ky, kx) order like the forward (PyTorch: a later value wins only if strictly
//            greater, or NaN). The argmax is recomputed from the saved input x: nothing but x
//            is kept from the forward. Overlapping windows add up.
//   average: each output's gradient / divisor goes to every input tap of its window; the
//            divisor is the window clipped to the padded input (count_include_pad) or to the
//            input, as in the forward.
//   global:  dx[b,y,x,c] = dy[b][c] / (H * W).
// dx is written (zeroed first), or added to with `accumulate`.
#pragma once

#include "edgenn/core/tensor.hpp"
#include "edgenn/core/workspace.hpp"
#include "edgenn/kernels/pooling.hpp"
#include "edgenn/simd/simd.hpp"

namespace edgenn::kernels {

namespace detail {

inline void zero_view(Tensor t) {
  for (int b = 0; b < t.n(); ++b)
    for (int i = 0; i < t.h(); ++i)
      for (int j = 0; j < t.w(); ++j) {
        float* d = t.pixel(b, i, j);
        for (int c = 0; c < t.c(); ++c) d[c] = 0.0f;
      }
}

inline Status validate_pool_backward(const Pool2dParams& p, Shape in, Shape dy, Shape dx, const char* who) {
  EDGENN_TRY(p.validate(in));
  EDGENN_CHECK(dx == in && dy == p.output_shape(in), Error::shape_mismatch, who);
  return Status::ok();
}

}  // namespace detail

// Workspace of max_pool2d_backward: the running maximum and its tap, per channel.
constexpr std::size_t max_pool2d_backward_workspace_bytes(int channels) {
  return aligned_bytes<float>(std::size_t(channels)) + aligned_bytes<int>(std::size_t(channels));
}

// x: the forward's input; dy: N x OH x OW x C; dx: shaped like x (must not overlap dy or x).
// ws: max_pool2d_backward_workspace_bytes(C).
template <class Arch = simd::default_arch>
Status max_pool2d_backward(const Pool2dParams& p, ConstTensor x, ConstTensor dy, Tensor dx, Workspace& ws,
                           bool accumulate = false) {
  EDGENN_TRY(detail::validate_pool_backward(p, x.shape, dy.shape, dx.shape, "max_pool2d_backward: shape mismatch"));
  const int C = x.c();
  WorkspaceScope scope(ws);
  float* best = ws.take<float>(std::size_t(C));
  int* best_tap = ws.take<int>(std::size_t(C));
  EDGENN_TRY(ws.status());
  if (ws.measuring()) return Status::ok();
  if (!accumulate) detail::zero_view(dx);
  for (int b = 0; b < dy.n(); ++b)
    for (int oy = 0; oy < dy.h(); ++oy)
      for (int ox = 0; ox < dy.w(); ++ox) {
        const int y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
        // Window clipped to the input; validate() guarantees it is not empty.
        const int ys = y0 < 0 ? 0 : y0, xs = x0 < 0 ? 0 : x0;
        const int ye = y0 + p.kernel_h < x.h() ? y0 + p.kernel_h : x.h();
        const int xe = x0 + p.kernel_w < x.w() ? x0 + p.kernel_w : x.w();
        const int ww = xe - xs;
        // Channel loops innermost: compare + blend vectorize.
        {
          const float* v = x.pixel(b, ys, xs);
          for (int c = 0; c < C; ++c) {
            best[c] = v[c];
            best_tap[c] = 0;
          }
        }
        for (int y = ys; y < ye; ++y)
          for (int xx = (y == ys ? xs + 1 : xs); xx < xe; ++xx) {
            const float* v = x.pixel(b, y, xx);
            const int tap = (y - ys) * ww + (xx - xs);
            for (int c = 0; c < C; ++c) {
              const bool take = v[c] > best[c] || v[c] != v[c];  // NaN wins, as in PyTorch
              best[c] = take ? v[c] : best[c];
              best_tap[c] = take ? tap : best_tap[c];
            }
          }
        const float* g = dy.pixel(b, oy, ox);
        for (int c = 0; c < C; ++c) {
          const int ty = best_tap[c] / ww, tx = best_tap[c] - (best_tap[c] / ww) * ww;
          dx.pixel(b, ys + ty, xs + tx)[c] += g[c];
        }
      }
  return Status::ok();
}

// dy: N x OH x OW x C; dx: N x H x W x C, the forward's input shape (must not overlap dy).
// No workspace and no forward activations needed.
template <class Arch = simd::default_arch>
Status avg_pool2d_backward(const Pool2dParams& p, ConstTensor dy, Tensor dx, bool accumulate = false) {
  EDGENN_TRY(detail::validate_pool_backward(p, dx.shape, dy.shape, dx.shape, "avg_pool2d_backward: shape mismatch"));
  using V = simd::Vec<Arch>;
  const int C = dx.c(), H = dx.h(), W = dx.w();
  if (!accumulate) detail::zero_view(dx);
  for (int b = 0; b < dy.n(); ++b)
    for (int oy = 0; oy < dy.h(); ++oy)
      for (int ox = 0; ox < dy.w(); ++ox) {
        const int y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
        // Same divisor as the forward: window clipped to the padded extent, and to the input.
        const int ye = y0 + p.kernel_h < H + p.pad_bottom ? y0 + p.kernel_h : H + p.pad_bottom;
        const int xe = x0 + p.kernel_w < W + p.pad_right ? x0 + p.kernel_w : W + p.pad_right;
        const int ys = y0 < 0 ? 0 : y0, xs = x0 < 0 ? 0 : x0;
        const int yi = ye < H ? ye : H, xi = xe < W ? xe : W;
        const int count = p.count_include_pad ? (ye - y0) * (xe - x0) : (yi - ys) * (xi - xs);
        if (count <= 0) continue;
        const V inv = V::broadcast(1.0f / float(count));
        const float* g = dy.pixel(b, oy, ox);
        for (int c = 0; c < C; c += V::size) {
          const int n = C - c < V::size ? C - c : V::size;
          const V share = (n == V::size ? V::load(g + c) : V::load_partial(g + c, n)) * inv;
          for (int y = ys; y < yi; ++y)
            for (int xx = xs; xx < xi; ++xx) {
              float* d = dx.pixel(b, y, xx) + c;
              if (n == V::size) {
                (V::load(d) + share).store(d);
              } else {
                (V::load_partial(d, n) + share).store_partial(d, n);
              }
            }
        }
      }
  return Status::ok();
}

// dy: [N][C] rows at stride lddy (the global pool's output gradient); dx: N x H x W x C.
template <class Arch = simd::default_arch>
Status global_avg_pool_backward(const float* dy, index_t lddy, Tensor dx, bool accumulate = false) {
  EDGENN_CHECK(dx.shape.valid() && dy && lddy >= dx.c(), Error::shape_mismatch,
               "global_avg_pool_backward: bad shape, stride or null dy");
  using V = simd::Vec<Arch>;
  const int C = dx.c();
  const V inv = V::broadcast(1.0f / float(dx.h() * dx.w()));
  for (int b = 0; b < dx.n(); ++b)
    for (int c = 0; c < C; c += V::size) {
      const int n = C - c < V::size ? C - c : V::size;
      const float* g = dy + b * lddy + c;
      const V share = (n == V::size ? V::load(g) : V::load_partial(g, n)) * inv;
      for (int y = 0; y < dx.h(); ++y)
        for (int x = 0; x < dx.w(); ++x) {
          float* d = dx.pixel(b, y, x) + c;
          const V v = accumulate ? share + (n == V::size ? V::load(d) : V::load_partial(d, n)) : share;
          if (n == V::size) {
            v.store(d);
          } else {
            v.store_partial(d, n);
          }
        }
    }
  return Status::ok();
}

}  // namespace edgenn::kernels
