// Backward of depthwise convolution (depthwise.hpp; groups == channels, one filter per channel).
//
// Forward: Y[b,oy,ox,c] = bias[c] + sum_{ky,kx} W[c][ky][kx] * X[b, oy*sh - pt + ky*dh, ox*sw - pl + kx*dw, c].
//  - dX[b,iy,ix,c] = sum over the taps with oy = (iy + pt - ky*dh)/sh exact and inside dY of
//    dY[b,oy,ox,c] * W[c][ky][kx]: a gather, SIMD across channels, reading the forward's packed
//    weights (one vector of channels per tap). The 3x3 fast path (dilation 1, stride 1 or 2)
//    keeps the nine tap vectors in registers and produces four input pixels per step: for each
//    pixel the valid taps and the dY columns they read are compile-time constants of the
//    stride and of the phase of the first pixel.
//  - dW[c][ky][kx] = sum_{b,oy,ox} dY * X at the tap's input position, db[c] = sum dY. Per tap
//    the output pixels whose input lies inside x form a rectangle, so the general path sums
//    rectangles without bounds checks; the 3x3 path keeps nine accumulators and reads each dY
//    vector once. Sums are two-level (per output row, then into the totals) and in a fixed order.
// p.activation is ignored: apply the activation's backward to dY first.
#pragma once

#include "edgenn/kernels/conv2d_backward.hpp"
#include "edgenn/kernels/depthwise.hpp"

namespace edgenn::kernels {

namespace detail {

inline Status validate_depthwise_backward(const Conv2dParams& p, Shape in, Shape out, const TileOrigin* tile,
                                          const char* who) {
  EDGENN_TRY(validate_conv_backward(p, in, out, tile, who));
  EDGENN_CHECK(p.groups == in.c && out.c == in.c, Error::shape_mismatch,
               "depthwise backward: needs groups == input channels == output channels");
  return Status::ok();
}

// dX of one input pixel, channels [c_begin, c_end), any window, with bounds checks. The taps
// reaching the pixel are worked out once for all its channels.
template <class Arch>
void depthwise_input_grad_pixel(const LocalWindow& lw, ConstTensor dy, const DepthwiseWeights& w, int b, int iy,
                                int ix, int c_begin, int c_end, float* dst, bool accumulate) {
  using V = simd::Vec<Arch>;
  const int ry = floor_mod(iy + lw.pt, lw.sh), rx = floor_mod(ix + lw.pl, lw.sw);
  const PhaseTaps ty = phase_taps(lw.kh, lw.sh, lw.dh, ry), tx = phase_taps(lw.kw, lw.sw, lw.dw, rx);
  const int my = (iy + lw.pt - ry) / lw.sh, mx = (ix + lw.pl - rx) / lw.sw;
  // Taps whose output lies inside dY: a rectangle of the phase's progressions.
  int a0 = 0, a1 = ty.count, e0 = 0, e1 = tx.count;
  while (a0 < a1 && my - (ty.q0 + a0 * ty.dq) >= dy.h()) ++a0;
  while (a1 > a0 && my - (ty.q0 + (a1 - 1) * ty.dq) < 0) --a1;
  while (e0 < e1 && mx - (tx.q0 + e0 * tx.dq) >= dy.w()) ++e0;
  while (e1 > e0 && mx - (tx.q0 + (e1 - 1) * tx.dq) < 0) --e1;
  for (int c0 = c_begin; c0 < c_end; c0 += V::size) {
    const int n = c_end - c0 < V::size ? c_end - c0 : V::size;
    const bool full = n == V::size;
    float* d = dst + c0;
    V acc = accumulate ? (full ? V::load(d) : V::load_partial(d, n)) : V::zero();
    for (int a = a0; a < a1; ++a) {
      const int oy = my - (ty.q0 + a * ty.dq), ky = ty.first + a * ty.step;
      for (int e = e0; e < e1; ++e) {
        const int ox = mx - (tx.q0 + e * tx.dq);
        const float* src = dy.pixel(b, oy, ox) + c0;
        const V g = full ? V::load(src) : V::load_partial(src, n);
        acc = fma(g, V::load(w.tap(ky * lw.kw + tx.first + e * tx.step) + c0), acc);
      }
    }
    if (full) {
      acc.store(d);
    } else {
      acc.store_partial(d, n);
    }
  }
}

// 3x3, stride S: PX input pixels [ix0, ix0 + PX) of one row, one channel block of n lanes.
// (ix0 + pl) mod S == PH; m0 = (ix0 + pl - PH) / S is the dY column of pixel 0's tap kx with
// PH - kx = 0. rows[ky]: the dY row tap ky reads (null: none). The valid taps of each pixel and
// the dY columns they read are compile-time constants. Checked: dY columns outside [0, OW)
// read as zero (border pixels); Tail: a partial channel block.
template <class Arch, int S, int PH, int PX, bool Checked, bool Tail>
EDGENN_INLINE void depthwise3x3_input_grad_step(const float* const rows[3], index_t dsw, int OW, int m0, int c0, int n,
                                                const simd::Vec<Arch> (&wv)[9], float* dst, index_t xsw,
                                                bool accumulate) {
  using V = simd::Vec<Arch>;
  constexpr int LO = floor_div(PH - 2, S), HI = floor_div(PH + PX - 1, S);
  constexpr int NC = HI - LO + 1;
  auto load = [n](const float* p) { return Tail ? V::load_partial(p, n) : V::load(p); };
  V acc[PX];
#pragma GCC unroll 4
  for (int i = 0; i < PX; ++i) acc[i] = accumulate ? load(dst + i * xsw) : V::zero();
#pragma GCC unroll 3
  for (int ky = 0; ky < 3; ++ky) {
    if (!rows[ky]) continue;
    V col[NC];
    const float* src = rows[ky] + index_t(m0 + LO) * dsw + c0;
#pragma GCC unroll 6
    for (int j = 0; j < NC; ++j)
      col[j] = (!Checked || unsigned(m0 + LO + j) < unsigned(OW)) ? load(src + j * dsw) : V::zero();
#pragma GCC unroll 4
    for (int i = 0; i < PX; ++i)
#pragma GCC unroll 3
      for (int kx = 0; kx < 3; ++kx) {
        // Pixel i receives from tap kx when (PH + i - kx) is a multiple of S (folded at compile time).
        if ((PH + i - kx - floor_div(PH + i - kx, S) * S) != 0) continue;
        acc[i] = fma(col[floor_div(PH + i - kx, S) - LO], wv[ky * 3 + kx], acc[i]);
      }
  }
#pragma GCC unroll 4
  for (int i = 0; i < PX; ++i) {
    if (Tail) {
      acc[i].store_partial(dst + i * xsw, n);
    } else {
      acc[i].store(dst + i * xsw);
    }
  }
}

// One input pixel ix with the step kernel of its phase.
template <class Arch, int S, bool Checked, bool Tail>
EDGENN_INLINE void depthwise3x3_input_grad_pixel(const float* const rows[3], index_t dsw, int OW, int pl, int ix,
                                                 int c0, int n, const simd::Vec<Arch> (&wv)[9], float* xrow,
                                                 index_t xsw, bool accumulate) {
  const int t = ix + pl;  // phase and dY column: exact division of t - phase
  if (S == 1 || floor_mod(t, S) == 0) {
    depthwise3x3_input_grad_step<Arch, S, 0, 1, Checked, Tail>(rows, dsw, OW, floor_div(t, S), c0, n, wv,
                                                               xrow + ix * xsw + c0, xsw, accumulate);
  } else {
    depthwise3x3_input_grad_step<Arch, S, (S > 1 ? 1 : 0), 1, Checked, Tail>(
        rows, dsw, OW, floor_div(t - 1, S), c0, n, wv, xrow + ix * xsw + c0, xsw, accumulate);
  }
}

// Input pixels [xa, xb) of one row (their taps land inside dY), one full channel block: four
// at a time, then one by one.
template <class Arch, int S>
EDGENN_INLINE void depthwise3x3_input_grad_run(const float* const rows[3], index_t dsw, int OW, int pl, int xa, int xb,
                                               int c0, const simd::Vec<Arch> (&wv)[9], float* xrow, index_t xsw,
                                               bool accumulate) {
  constexpr int VL = simd::Vec<Arch>::size;
  int ix = xa;
  if (S == 1 || floor_mod(xa + pl, S) == 0) {
    for (; ix + 4 <= xb; ix += 4)
      depthwise3x3_input_grad_step<Arch, S, 0, 4, false, false>(rows, dsw, OW, (ix + pl) / S, c0, VL, wv,
                                                                xrow + ix * xsw + c0, xsw, accumulate);
  } else {
    for (; ix + 4 <= xb; ix += 4)
      depthwise3x3_input_grad_step<Arch, S, (S > 1 ? 1 : 0), 4, false, false>(rows, dsw, OW, (ix + pl - 1) / S, c0, VL,
                                                                              wv, xrow + ix * xsw + c0, xsw, accumulate);
  }
  for (; ix < xb; ++ix)
    depthwise3x3_input_grad_pixel<Arch, S, false, false>(rows, dsw, OW, pl, ix, c0, VL, wv, xrow, xsw, accumulate);
}

template <class Arch, int S>
void depthwise3x3_input_grad(const LocalWindow& lw, ConstTensor dy, const DepthwiseWeights& w, Tensor dx, int b,
                             int row0, int row1, bool accumulate) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  const int C = dx.c(), W = dx.w(), OW = dy.w();
  // Input columns whose three taps read dY columns inside [0, OW): ix + pl - 2 >= 0 and
  // ix + pl <= S * (OW - 1).
  int xa = 2 - lw.pl < 0 ? 0 : 2 - lw.pl;
  int xb = S * (OW - 1) - lw.pl + 1;
  if (xb > W) xb = W;
  if (xb < xa) xb = xa;
  const int cfull = C / VL * VL;
  for (int iy = row0; iy < row1; ++iy) {
    const float* rows[3];
    for (int ky = 0; ky < 3; ++ky) {
      const int t = iy + lw.pt - ky;
      const int oy = floor_div(t, S);
      rows[ky] = (t - oy * S == 0 && unsigned(oy) < unsigned(dy.h())) ? dy.pixel(b, oy, 0) : nullptr;
    }
    float* xrow = dx.pixel(b, iy, 0);
    const index_t dsw = dy.stride_w, xsw = dx.stride_w;
    for (int c0 = 0; c0 < C; c0 += VL) {
      V wv[9];
      for (int t = 0; t < 9; ++t) wv[t] = V::load(w.tap(t) + c0);  // padded to whole vectors
      if (c0 < cfull) {
        depthwise3x3_input_grad_run<Arch, S>(rows, dsw, OW, lw.pl, xa, xb, c0, wv, xrow, xsw, accumulate);
        for (int ix = 0; ix < xa && ix < W; ++ix)
          depthwise3x3_input_grad_pixel<Arch, S, true, false>(rows, dsw, OW, lw.pl, ix, c0, VL, wv, xrow, xsw, accumulate);
        for (int ix = xb; ix < W; ++ix)
          depthwise3x3_input_grad_pixel<Arch, S, true, false>(rows, dsw, OW, lw.pl, ix, c0, VL, wv, xrow, xsw, accumulate);
      } else {
        for (int ix = 0; ix < W; ++ix)
          depthwise3x3_input_grad_pixel<Arch, S, true, true>(rows, dsw, OW, lw.pl, ix, c0, C - c0, wv, xrow, xsw,
                                                             accumulate);
      }
    }
  }
}

}  // namespace detail

constexpr std::size_t depthwise_backward_input_workspace_bytes(const Conv2dParams&, Shape) { return 0; }

// dX of a depthwise convolution (written, or added to dX with `accumulate`).
//   dy: N x OH x OW x C, dx: N x H x W x C (views; channel slices or tiles)
//   w: the forward's packed weights (pack_depthwise_weights, same Arch; the bias is unused)
//   rows: dx rows [begin, end) to produce; tile: see TileOrigin. No workspace is needed.
// Needs only dY and the weights. dx must not overlap dy.
template <class Arch = simd::default_arch>
Status depthwise_backward_input(const Conv2dParams& p, ConstTensor dy, const DepthwiseWeights& w, Tensor dx,
                                Workspace& ws, bool accumulate = false, RowRange rows = {},
                                const TileOrigin* tile = nullptr) {
  EDGENN_TRY(detail::validate_depthwise_backward(p, dx.shape, dy.shape, tile, "depthwise_backward_input: bad parameters"));
  EDGENN_CHECK(w.data && w.channels == dx.c() && w.taps == p.taps() &&
                   w.stride == round_up(dx.c(), simd::Vec<Arch>::size),
               Error::shape_mismatch, "depthwise_backward_input: packed weights do not match the layer");
  const int row0 = rows.begin, row1 = rows.end < 0 ? dx.h() : rows.end;
  EDGENN_CHECK(0 <= row0 && row0 <= row1 && row1 <= dx.h(), Error::invalid_argument,
               "depthwise_backward_input: row range outside dx");
  if (ws.measuring()) return Status::ok();
  const detail::LocalWindow lw = detail::local_window(p, tile);
  const bool fast3x3 = p.kernel_h == 3 && p.kernel_w == 3 && p.dilation_h == 1 && p.dilation_w == 1 &&
                       p.stride_h == p.stride_w && (p.stride_h == 1 || p.stride_h == 2);
  for (int b = 0; b < dx.n(); ++b) {
    if (fast3x3 && p.stride_h == 1) {
      detail::depthwise3x3_input_grad<Arch, 1>(lw, dy, w, dx, b, row0, row1, accumulate);
    } else if (fast3x3) {
      detail::depthwise3x3_input_grad<Arch, 2>(lw, dy, w, dx, b, row0, row1, accumulate);
    } else {
      for (int iy = row0; iy < row1; ++iy)
        for (int ix = 0; ix < dx.w(); ++ix)
          detail::depthwise_input_grad_pixel<Arch>(lw, dy, w, b, iy, ix, 0, dx.c(), dx.pixel(b, iy, ix), accumulate);
    }
  }
  return Status::ok();
}

namespace detail {

// Output positions o in [0, out) whose input o*s - pad + off lies in [0, in): [lo, hi).
struct OutputSpan {
  int lo, hi;
};
constexpr OutputSpan inside_span(int out, int in, int s, int pad, int off) {
  int lo = -floor_div(-(pad - off), s);  // ceil((pad - off) / s)
  int hi = floor_div(in - 1 + pad - off, s) + 1;
  lo = lo < 0 ? 0 : lo;
  hi = hi > out ? out : hi;
  return {lo, hi < lo ? lo : hi};
}

// Totals of tap t, channels [c0, c0 + n): acc[t] += sum over the rectangle of dY * X.
template <class Arch>
void depthwise_weight_grad_tap(const LocalWindow& lw, ConstTensor x, ConstTensor dy, int ky, int kx, int c0, int n,
                               float* total) {
  using V = simd::Vec<Arch>;
  const bool full = n == V::size;
  const OutputSpan ys = inside_span(dy.h(), x.h(), lw.sh, lw.pt, ky * lw.dh);
  const OutputSpan xs = inside_span(dy.w(), x.w(), lw.sw, lw.pl, kx * lw.dw);
  if (ys.lo >= ys.hi || xs.lo >= xs.hi) return;  // the tap reads only padding
  V sum = V::load(total);
  for (int b = 0; b < dy.n(); ++b)
    for (int oy = ys.lo; oy < ys.hi; ++oy) {
      const float* g = dy.pixel(b, oy, xs.lo) + c0;
      const float* in = x.pixel(b, oy * lw.sh - lw.pt + ky * lw.dh, xs.lo * lw.sw - lw.pl + kx * lw.dw) + c0;
      const index_t xstep = index_t(lw.sw) * x.stride_w;
      // Two interleaved partial sums hide the FMA latency; the order is fixed.
      V r0 = V::zero(), r1 = V::zero();
      int ox = xs.lo;
      for (; ox + 2 <= xs.hi; ox += 2, g += 2 * dy.stride_w, in += 2 * xstep) {
        if (full) {
          r0 = fma(V::load(g), V::load(in), r0);
          r1 = fma(V::load(g + dy.stride_w), V::load(in + xstep), r1);
        } else {
          r0 = fma(V::load_partial(g, n), V::load_partial(in, n), r0);
          r1 = fma(V::load_partial(g + dy.stride_w, n), V::load_partial(in + xstep, n), r1);
        }
      }
      if (ox < xs.hi) r0 = fma(full ? V::load(g) : V::load_partial(g, n), full ? V::load(in) : V::load_partial(in, n), r0);
      sum = sum + (r0 + r1);
    }
  sum.store(total);
}

// 3x3, dilation 1: the nine taps of channels [c0, c0 + VL) in one pass over dY; `total` holds
// nine vectors (tap-major).
template <class Arch>
void depthwise3x3_weight_grad(const LocalWindow& lw, ConstTensor x, ConstTensor dy, int c0, float* total) {
  using V = simd::Vec<Arch>;
  const int H = x.h(), W = x.w(), OW = dy.w();
  // Output columns whose three taps are inside x: ox*sw - pl >= 0 and ox*sw - pl + 2 < W.
  const OutputSpan left = inside_span(OW, W, lw.sw, lw.pl, 0), right = inside_span(OW, W, lw.sw, lw.pl, 2);
  OutputSpan inner{left.lo > right.lo ? left.lo : right.lo, left.hi < right.hi ? left.hi : right.hi};
  if (inner.hi < inner.lo) inner.hi = inner.lo;
  for (int b = 0; b < dy.n(); ++b)
    for (int oy = 0; oy < dy.h(); ++oy) {
      const int y0 = oy * lw.sh - lw.pt;
      const bool row_inside = y0 >= 0 && y0 + 2 < H;
      V r[9];
      for (int t = 0; t < 9; ++t) r[t] = V::zero();
      auto border_pixel = [&](int ox) {
        const V g = V::load(dy.pixel(b, oy, ox) + c0);
        const int x0 = ox * lw.sw - lw.pl;
        for (int ky = 0; ky < 3; ++ky) {
          if (unsigned(y0 + ky) >= unsigned(H)) continue;
          for (int kx = 0; kx < 3; ++kx) {
            if (unsigned(x0 + kx) >= unsigned(W)) continue;
            r[ky * 3 + kx] = fma(g, V::load(x.pixel(b, y0 + ky, x0 + kx) + c0), r[ky * 3 + kx]);
          }
        }
      };
      if (row_inside) {
        for (int ox = 0; ox < inner.lo; ++ox) border_pixel(ox);
        const float* rows[3] = {x.pixel(b, y0, 0) + c0, x.pixel(b, y0 + 1, 0) + c0, x.pixel(b, y0 + 2, 0) + c0};
        for (int ox = inner.lo; ox < inner.hi; ++ox) {
          const V g = V::load(dy.pixel(b, oy, ox) + c0);
          const index_t xo = index_t(ox * lw.sw - lw.pl) * x.stride_w;
#pragma GCC unroll 3
          for (int ky = 0; ky < 3; ++ky)
#pragma GCC unroll 3
            for (int kx = 0; kx < 3; ++kx)
              r[ky * 3 + kx] = fma(g, V::load(rows[ky] + xo + kx * x.stride_w), r[ky * 3 + kx]);
        }
        for (int ox = inner.hi; ox < OW; ++ox) border_pixel(ox);
      } else {
        for (int ox = 0; ox < OW; ++ox) border_pixel(ox);
      }
      for (int t = 0; t < 9; ++t) (V::load(total + t * V::size) + r[t]).store(total + t * V::size);
    }
}

}  // namespace detail

// Workspace of depthwise_backward_weights: per-tap totals of one channel block and the bias sums.
template <class Arch = simd::default_arch>
constexpr std::size_t depthwise_backward_weights_workspace_bytes(const Conv2dParams& p, int channels) {
  return aligned_bytes<float>(std::size_t(p.taps()) * simd::Vec<Arch>::size) +
         aligned_bytes<float>(std::size_t(round_up(channels, simd::Vec<Arch>::size)));
}

// dW ([C][kh][kw], the canonical OHWI with one input channel) and db ([C], may be null) of a
// depthwise convolution, from its input x and the output gradient dy; written, or added
// with `accumulate`.
//   x: N x H x W x C (the forward's saved input), dy: N x OH x OW x C; tile: see TileOrigin
//   ws: depthwise_backward_weights_workspace_bytes<Arch>(p, C)
template <class Arch = simd::default_arch>
Status depthwise_backward_weights(const Conv2dParams& p, ConstTensor x, ConstTensor dy, float* dw, float* db,
                                  Workspace& ws, bool accumulate = false, const TileOrigin* tile = nullptr) {
  EDGENN_TRY(detail::validate_depthwise_backward(p, x.shape, dy.shape, tile, "depthwise_backward_weights: bad parameters"));
  EDGENN_CHECK(dw != nullptr, Error::invalid_argument, "depthwise_backward_weights: dw is null");
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  const int C = x.c(), taps = p.taps();
  WorkspaceScope scope(ws);
  float* total = ws.take<float>(std::size_t(taps) * VL);
  float* bias_sum = ws.take<float>(std::size_t(round_up(C, VL)));
  EDGENN_TRY(ws.status());
  if (ws.measuring()) return Status::ok();

  const detail::LocalWindow lw = detail::local_window(p, tile);
  const bool fast3x3 = p.kernel_h == 3 && p.kernel_w == 3 && p.dilation_h == 1 && p.dilation_w == 1;
  for (int c0 = 0; c0 < C; c0 += VL) {
    const int n = C - c0 < VL ? C - c0 : VL;
    for (int i = 0; i < taps * VL; ++i) total[i] = 0.0f;
    if (fast3x3 && n == VL) {
      detail::depthwise3x3_weight_grad<Arch>(lw, x, dy, c0, total);
    } else {
      for (int t = 0; t < taps; ++t)
        detail::depthwise_weight_grad_tap<Arch>(lw, x, dy, t / p.kernel_w, t % p.kernel_w, c0, n, total + t * VL);
    }
    for (int i = 0; i < n; ++i)
      for (int t = 0; t < taps; ++t) {
        float& d = dw[index_t(c0 + i) * taps + t];
        d = accumulate ? d + total[t * VL + i] : total[t * VL + i];
      }
  }
  if (db) {
    // Bias: per row partial sums across channels, then into the totals.
    for (int i = 0; i < round_up(C, VL); ++i) bias_sum[i] = 0.0f;
    for (int b = 0; b < dy.n(); ++b)
      for (int oy = 0; oy < dy.h(); ++oy)
        for (int c0 = 0; c0 < C; c0 += VL) {
          const int n = C - c0 < VL ? C - c0 : VL;
          V r = V::zero();
          for (int ox = 0; ox < dy.w(); ++ox) {
            const float* g = dy.pixel(b, oy, ox) + c0;
            r = r + (n == VL ? V::load(g) : V::load_partial(g, n));
          }
          (V::load(bias_sum + c0) + r).store(bias_sum + c0);
        }
    for (int c = 0; c < C; ++c) db[c] = accumulate ? db[c] + bias_sum[c] : bias_sum[c];
  }
  return Status::ok();
}

}  // namespace edgenn::kernels
