// Depthwise convolution (groups == channels, one filter per channel), NHWC.
//
// SIMD runs across channels. The 3x3 stride-1/stride-2 fast path keeps the nine weight
// vectors of a channel block in registers and produces four output pixels per step,
// sharing the loaded input columns between neighbouring pixels; every other kernel size,
// dilation, the image borders and channel tails go through the general per-pixel path.
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

// 3x3 stride S: four output pixels [ox, ox + 4) of row oy whose windows lie inside the
// input columns, one full channel block. `rows[ky]` is the input row (null = padding).
template <class Arch, int S>
EDGENN_INLINE void depthwise3x3_quad(const float* const rows[3], index_t sw, int x0, int c0, const simd::Vec<Arch> (&wv)[9],
                                     simd::Vec<Arch> bias, float* out, index_t osw, const float* res, index_t rsw,
                                     simd::Vec<Arch> lo, simd::Vec<Arch> hi) {
  using V = simd::Vec<Arch>;
  constexpr int PX = 4;
  constexpr int COLS = (PX - 1) * S + 3;
  V acc[PX];
  for (int i = 0; i < PX; ++i) acc[i] = bias;
#pragma GCC unroll 3
  for (int ky = 0; ky < 3; ++ky) {
    if (!rows[ky]) continue;
    V col[COLS];
    const float* src = rows[ky] + index_t(x0) * sw + c0;
#pragma GCC unroll 12
    for (int j = 0; j < COLS; ++j) col[j] = V::load(src + j * sw);
#pragma GCC unroll 4
    for (int i = 0; i < PX; ++i) {
      acc[i] = fma(col[i * S + 0], wv[ky * 3 + 0], acc[i]);
      acc[i] = fma(col[i * S + 1], wv[ky * 3 + 1], acc[i]);
      acc[i] = fma(col[i * S + 2], wv[ky * 3 + 2], acc[i]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < PX; ++i) {
    V v = acc[i];
    if (res) v = v + V::load(res + i * rsw);
    min(max(v, lo), hi).store(out + i * osw);
  }
}

template <class Arch, int S>
void depthwise3x3(const Conv2dParams& p, ConstTensor in, const DepthwiseWeights& w, Tensor out, const ConstTensor* res,
                  int b, int row0, int row1) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  const Clamp clamp = activation_clamp(p.activation);
  const V lo = V::broadcast(clamp.lo), hi = V::broadcast(clamp.hi);
  const int C = in.c(), OW = out.w();
  // Output columns whose 3-wide window is inside the input: x0 = ox*S - pad_left >= 0 and
  // x0 + 2 < W.
  int xa = (p.pad_left + S - 1) / S;
  int xb = (in.w() - 3 + p.pad_left) / S + 1;  // exclusive
  if (in.w() < 3 - p.pad_left) xb = xa;
  if (xb > OW) xb = OW;
  if (xb < xa) xb = xa;
  const int cfull = C / VL * VL;
  for (int oy = row0; oy < row1; ++oy) {
    const float* rows[3];
    for (int ky = 0; ky < 3; ++ky) {
      const int y = oy * S - p.pad_top + ky;
      rows[ky] = unsigned(y) < unsigned(in.h()) ? in.pixel(b, y, 0) : nullptr;
    }
    float* orow = out.pixel(b, oy, 0);
    const float* rrow = res ? res->pixel(b, oy, 0) : nullptr;
    for (int c0 = 0; c0 < cfull; c0 += VL) {
      V wv[9];
      for (int t = 0; t < 9; ++t) wv[t] = V::load(w.tap(t) + c0);
      const V bias = V::load(w.bias() + c0);
      int ox = xa;
      for (; ox + 4 <= xb; ox += 4) {
        depthwise3x3_quad<Arch, S>(rows, in.stride_w, ox * S - p.pad_left, c0, wv, bias, orow + ox * out.stride_w + c0,
                                   out.stride_w, rrow ? rrow + ox * res->stride_w + c0 : nullptr,
                                   res ? res->stride_w : 0, lo, hi);
      }
      for (; ox < xb; ++ox)
        depthwise_pixel<Arch>(p, in, w, b, oy, ox, c0, VL, orow + ox * out.stride_w + c0,
                              rrow ? rrow + ox * res->stride_w + c0 : nullptr, clamp);
      for (int e = 0; e < xa && e < OW; ++e)
        depthwise_pixel<Arch>(p, in, w, b, oy, e, c0, VL, orow + e * out.stride_w + c0,
                              rrow ? rrow + e * res->stride_w + c0 : nullptr, clamp);
      for (int e = xb > xa ? xb : xa; e < OW; ++e)
        depthwise_pixel<Arch>(p, in, w, b, oy, e, c0, VL, orow + e * out.stride_w + c0,
                              rrow ? rrow + e * res->stride_w + c0 : nullptr, clamp);
    }
    if (cfull < C) {
      for (int ox = 0; ox < OW; ++ox)
        depthwise_pixel<Arch>(p, in, w, b, oy, ox, cfull, C - cfull, orow + ox * out.stride_w + cfull,
                              rrow ? rrow + ox * res->stride_w + cfull : nullptr, clamp);
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
