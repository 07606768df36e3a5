// Depthwise convolution (groups == channels, one filter per channel), NHWC.
//
// SIMD runs across channels. The 3x3 stride-1/stride-2 fast path produces four output
// pixels of a row per step, sharing the loaded input columns between neighbouring pixels,
// with the channel blocks innermost; at the image borders the columns outside the input
// read as zero (the same kernel, checked), channel tails use masked loads and stores.
// Every other kernel size and dilation goes through the general per-pixel path.
//
// Weights are packed from the canonical OHWI layout ([C][kh][kw][1]) into
// [bias: Cp][tap 0: Cp]...[tap kh*kw-1: Cp], Cp = C rounded up to the SIMD width.
#pragma once

#include "edgenn/core/tensor.hpp"
#include "edgenn/core/workspace.hpp"
#include "edgenn/kernels/conv2d.hpp"

namespace edgenn::kernels {

struct DepthwiseWeights {
  const float* data = nullptr;
  int channels = 0;
  int taps = 0;
  int stride = 0;  // floats per tap row (channels rounded up to the SIMD width)

  constexpr const float* bias() const { return data; }
  constexpr const float* tap(int t) const { return data + index_t(t + 1) * stride; }
};

template <class Arch = simd::default_arch>
constexpr index_t depthwise_packed_floats(const Conv2dParams& p, int channels) {
  return round_up(channels, simd::Vec<Arch>::size) * (p.taps() + 1);
}

template <class Arch = simd::default_arch>
DepthwiseWeights pack_depthwise_weights(const Conv2dParams& p, int channels, const float* ohwi, const float* bias,
                                        float* dst) {
  DepthwiseWeights dw;
  dw.data = dst;
  dw.channels = channels;
  dw.taps = p.taps();
  dw.stride = int(round_up(channels, simd::Vec<Arch>::size));
  for (int c = 0; c < dw.stride; ++c) dst[c] = (bias && c < channels) ? bias[c] : 0.0f;
  for (int t = 0; t < dw.taps; ++t)
    for (int c = 0; c < dw.stride; ++c) dst[index_t(t + 1) * dw.stride + c] = c < channels ? ohwi[index_t(c) * dw.taps + t] : 0.0f;
  return dw;
}

constexpr std::size_t depthwise_workspace_bytes(const Conv2dParams&, Shape) { return 0; }

namespace detail {

// One output pixel, channels [c0, c0 + n), any window, with bounds checks.
template <class Arch>
EDGENN_INLINE void depthwise_pixel(const Conv2dParams& p, ConstTensor in, const DepthwiseWeights& w, int b, int oy,
                                   int ox, int c0, int n, float* out, const float* res, Clamp clamp) {
  using V = simd::Vec<Arch>;
  const bool full = n == V::size;
  V acc = V::load(w.bias() + c0);
  const int y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
  for (int ky = 0; ky < p.kernel_h; ++ky) {
    const int y = y0 + ky * p.dilation_h;
    if (unsigned(y) >= unsigned(in.h())) continue;
    for (int kx = 0; kx < p.kernel_w; ++kx) {
      const int x = x0 + kx * p.dilation_w;
      if (unsigned(x) >= unsigned(in.w())) continue;
      const float* src = in.pixel(b, y, x) + c0;
      const V v = full ? V::load(src) : V::load_partial(src, n);
      acc = fma(v, V::load(w.tap(ky * p.kernel_w + kx) + c0), acc);
    }
  }
  if (res) acc = acc + (full ? V::load(res) : V::load_partial(res, n));
  acc = min(max(acc, V::broadcast(clamp.lo)), V::broadcast(clamp.hi));
  if (full) {
    acc.store(out);
  } else {
    acc.store_partial(out, n);
  }
}

// 3x3 stride S: `px` <= 4 output pixels of one row starting at input column x0, one
// channel block [c0, c0 + n) (n < lanes only when PARTIAL). `rows[ky]` is the input row
// (null = padding). CHECKED: columns outside [0, W) read as zero (image borders, any
// padding); otherwise the 4 windows lie inside the input.
template <class Arch, int S, bool CHECKED, bool PARTIAL>
EDGENN_INLINE void depthwise3x3_quad(const float* const rows[3], index_t sw, int x0, int W, int c0, int n,
                                     const DepthwiseWeights& w, int px, float* out, index_t osw, const float* res,
                                     index_t rsw, simd::Vec<Arch> lo, simd::Vec<Arch> hi) {
  using V = simd::Vec<Arch>;
  constexpr int PX = 4;
  constexpr int COLS = (PX - 1) * S + 3;
  const V bias = V::load(w.bias() + c0);
  V acc[PX];
  for (int i = 0; i < PX; ++i) acc[i] = bias;
#pragma GCC unroll 3
  for (int ky = 0; ky < 3; ++ky) {
    if (!rows[ky]) continue;
    const V w0 = V::load(w.tap(ky * 3 + 0) + c0);
    const V w1 = V::load(w.tap(ky * 3 + 1) + c0);
    const V w2 = V::load(w.tap(ky * 3 + 2) + c0);
    V col[COLS];
    const float* src = rows[ky] + c0;
#pragma GCC unroll 12
    for (int j = 0; j < COLS; ++j) {
      const int x = x0 + j;
      if (CHECKED && unsigned(x) >= unsigned(W)) {
        col[j] = V::zero();
      } else {
        col[j] = PARTIAL ? V::load_partial(src + x * sw, n) : V::load(src + x * sw);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < PX; ++i) {
      acc[i] = fma(col[i * S + 0], w0, acc[i]);
      acc[i] = fma(col[i * S + 1], w1, acc[i]);
      acc[i] = fma(col[i * S + 2], w2, acc[i]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < PX; ++i) {
    if (CHECKED && i >= px) break;
    V v = acc[i];
    if (res) v = v + (PARTIAL ? V::load_partial(res + i * rsw, n) : V::load(res + i * rsw));
    v = min(max(v, lo), hi);
    if (PARTIAL) {
      v.store_partial(out + i * osw, n);
    } else {
      v.store(out + i * osw);
    }
  }
}

// One group of <= 4 output pixels of a row, every channel block (channels innermost: the
// loads of consecutive blocks are consecutive in memory, which streams at batch sizes
// whose activations do not fit the caches).
template <class Arch, int S, bool CHECKED>
EDGENN_INLINE void depthwise3x3_quad_channels(const float* const rows[3], index_t sw, int x0, int W, int C,
                                              const DepthwiseWeights& w, int px, float* out, index_t osw,
                                              const float* res, index_t rsw, simd::Vec<Arch> lo, simd::Vec<Arch> hi) {
  constexpr int VL = simd::Vec<Arch>::size;
  int c0 = 0;
  for (; c0 + VL <= C; c0 += VL)
    depthwise3x3_quad<Arch, S, CHECKED, false>(rows, sw, x0, W, c0, VL, w, px, out + c0, osw, res ? res + c0 : nullptr,
                                               rsw, lo, hi);
  if (c0 < C)
    depthwise3x3_quad<Arch, S, CHECKED, true>(rows, sw, x0, W, c0, C - c0, w, px, out + c0, osw,
                                              res ? res + c0 : nullptr, rsw, lo, hi);
}

template <class Arch, int S>
void depthwise3x3(const Conv2dParams& p, ConstTensor in, const DepthwiseWeights& w, Tensor out, const ConstTensor* res,
                  int b, int row0, int row1) {
  using V = simd::Vec<Arch>;
  const Clamp clamp = activation_clamp(p.activation);
  const V lo = V::broadcast(clamp.lo), hi = V::broadcast(clamp.hi);
  const int C = in.c(), OW = out.w(), W = in.w();
  const index_t sw = in.stride_w, osw = out.stride_w, rsw = res ? res->stride_w : 0;
  for (int oy = row0; oy < row1; ++oy) {
    const float* rows[3];
    for (int ky = 0; ky < 3; ++ky) {
      const int y = oy * S - p.pad_top + ky;
      rows[ky] = unsigned(y) < unsigned(in.h()) ? in.pixel(b, y, 0) : nullptr;
    }
    float* orow = out.pixel(b, oy, 0);
    const float* rrow = res ? res->pixel(b, oy, 0) : nullptr;
    for (int ox = 0; ox < OW; ox += 4) {
      const int px = OW - ox < 4 ? OW - ox : 4;
      const int x0 = ox * S - p.pad_left;
      float* o = orow + ox * osw;
      const float* r = rrow ? rrow + ox * rsw : nullptr;
      // The four windows lie inside the input columns: no checks.
      if (px == 4 && x0 >= 0 && x0 + 3 * S + 2 < W) {
        depthwise3x3_quad_channels<Arch, S, false>(rows, sw, x0, W, C, w, px, o, osw, r, rsw, lo, hi);
      } else {
        depthwise3x3_quad_channels<Arch, S, true>(rows, sw, x0, W, C, w, px, o, osw, r, rsw, lo, hi);
      }
    }
  }
}

}  // namespace detail

// out = act(depthwise(in, W) + bias [+ residual]); in and out have the same channel count.
template <class Arch = simd::default_arch>
Status depthwise_conv2d(const Conv2dParams& p, ConstTensor in, const DepthwiseWeights& w, Tensor out, Workspace& ws,
                        const ConstTensor* residual = nullptr, RowRange rows = {}) {
  EDGENN_TRY(p.validate(in.shape, out.c()));
  EDGENN_CHECK(p.groups == in.c() && out.c() == in.c(), Error::shape_mismatch,
               "depthwise_conv2d: needs groups == input channels == output channels");
  EDGENN_CHECK(out.shape == p.output_shape(in.shape, out.c()), Error::shape_mismatch,
               "depthwise_conv2d: output view does not match the input shape and parameters");
  EDGENN_CHECK(w.data && w.channels == in.c() && w.taps == p.taps() &&
                   w.stride == round_up(in.c(), simd::Vec<Arch>::size),
               Error::shape_mismatch, "depthwise_conv2d: packed weights do not match the layer");
  EDGENN_CHECK(!residual || residual->shape == out.shape, Error::shape_mismatch,
               "depthwise_conv2d: residual shape differs from the output");
  const int row0 = rows.begin, row1 = rows.end < 0 ? out.h() : rows.end;
  EDGENN_CHECK(0 <= row0 && row0 <= row1 && row1 <= out.h(), Error::invalid_argument,
               "depthwise_conv2d: output row range outside the output");
  if (ws.measuring()) return Status::ok();
  using V = simd::Vec<Arch>;
  const bool fast3x3 = p.kernel_h == 3 && p.kernel_w == 3 && p.dilation_h == 1 && p.dilation_w == 1 &&
                       p.stride_h == p.stride_w && (p.stride_h == 1 || p.stride_h == 2);
  for (int b = 0; b < in.n(); ++b) {
    if (fast3x3 && p.stride_h == 1) {
      detail::depthwise3x3<Arch, 1>(p, in, w, out, residual, b, row0, row1);
    } else if (fast3x3) {
      detail::depthwise3x3<Arch, 2>(p, in, w, out, residual, b, row0, row1);
    } else {
      const Clamp clamp = activation_clamp(p.activation);
      for (int oy = row0; oy < row1; ++oy)
        for (int ox = 0; ox < out.w(); ++ox)
          for (int c0 = 0; c0 < in.c(); c0 += V::size) {
            const int n = in.c() - c0 < V::size ? in.c() - c0 : V::size;
            detail::depthwise_pixel<Arch>(p, in, w, b, oy, ox, c0, n, out.pixel(b, oy, ox) + c0,
                                          residual ? residual->pixel(b, oy, ox) + c0 : nullptr, clamp);
          }
    }
  }
  return Status::ok();
}

}  // namespace edgenn::kernels
