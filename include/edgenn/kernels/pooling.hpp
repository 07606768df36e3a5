// Max, average and global-average pooling, NHWC, SIMD across channels.
#pragma once

#include "edgenn/core/tensor.hpp"
#include "edgenn/kernels/conv2d.hpp"

namespace edgenn::kernels {

struct Pool2dParams {
  int kernel_h = 2, kernel_w = 2;
  int stride_h = 2, stride_w = 2;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  // Average pooling: divide by the full window (PyTorch's default) or only by the taps
  // inside the input.
  bool count_include_pad = true;

  static constexpr Pool2dParams square(int k, int s, int p = 0) {
    Pool2dParams q;
    q.kernel_h = q.kernel_w = k;
    q.stride_h = q.stride_w = s;
    q.pad_top = q.pad_left = q.pad_bottom = q.pad_right = p;
    return q;
  }
  constexpr Shape output_shape(Shape in) const {
    return Shape{in.n, window_output_size(in.h, kernel_h, stride_h, 1, pad_top, pad_bottom),
                 window_output_size(in.w, kernel_w, stride_w, 1, pad_left, pad_right), in.c};
  }
  constexpr Status validate(Shape in) const {
    EDGENN_CHECK(kernel_h > 0 && kernel_w > 0 && stride_h > 0 && stride_w > 0, Error::invalid_argument,
                 "pool2d: kernel and stride must be positive");
    EDGENN_CHECK(pad_top >= 0 && pad_left >= 0 && pad_bottom >= 0 && pad_right >= 0, Error::invalid_argument,
                 "pool2d: padding must be non-negative");
    // Like PyTorch: a window must not start in the padding only.
    EDGENN_CHECK(pad_top < kernel_h && pad_bottom < kernel_h && pad_left < kernel_w && pad_right < kernel_w,
                 Error::invalid_argument, "pool2d: padding must be smaller than the kernel");
    EDGENN_CHECK(in.valid(), Error::shape_mismatch, "pool2d: empty input");
    EDGENN_CHECK(output_shape(in).h > 0 && output_shape(in).w > 0, Error::shape_mismatch,
                 "pool2d: window larger than the padded input");
    return Status::ok();
  }
};

namespace detail {

// Max or sum over the input pixels [ys, ye) x [xs, xe) of batch item b, channels [0, C),
// into dst (sums scaled by `scale`). Channels in runs of four vectors (four independent
// chains), then single vectors, then a masked tail; no bounds checks inside the window.
template <class Arch, bool MAX>
EDGENN_INLINE void pool_window(ConstTensor in, int b, int ys, int ye, int xs, int xe, float scale, float* dst) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  const int C = in.c();
  const V sv = V::broadcast(scale);
  auto combine = [](V a, V v) { return MAX ? max(a, v) : a + v; };
  auto finish = [&](V a) { return MAX ? a : a * sv; };
  const float* first = in.pixel(b, ys, xs);
  int c = 0;
  for (; c + 4 * VL <= C; c += 4 * VL) {
    V a0 = V::load(first + c), a1 = V::load(first + c + VL), a2 = V::load(first + c + 2 * VL),
      a3 = V::load(first + c + 3 * VL);
    for (int y = ys; y < ye; ++y)
      for (int x = (y == ys ? xs + 1 : xs); x < xe; ++x) {
        const float* s = in.pixel(b, y, x) + c;
        a0 = combine(a0, V::load(s));
        a1 = combine(a1, V::load(s + VL));
        a2 = combine(a2, V::load(s + 2 * VL));
        a3 = combine(a3, V::load(s + 3 * VL));
      }
    finish(a0).store(dst + c);
    finish(a1).store(dst + c + VL);
    finish(a2).store(dst + c + 2 * VL);
    finish(a3).store(dst + c + 3 * VL);
  }
  for (; c < C; c += VL) {
    const int n = C - c < VL ? C - c : VL;
    V a = n == VL ? V::load(first + c) : V::load_partial(first + c, n);
    for (int y = ys; y < ye; ++y)
      for (int x = (y == ys ? xs + 1 : xs); x < xe; ++x) {
        const float* s = in.pixel(b, y, x) + c;
        a = combine(a, n == VL ? V::load(s) : V::load_partial(s, n));
      }
    if (n == VL) {
      finish(a).store(dst + c);
    } else {
      finish(a).store_partial(dst + c, n);
    }
  }
}

}  // namespace detail

// Windows are clipped to the input (padding never wins a maximum: a window always holds
// at least one input pixel, see Pool2dParams::validate).
template <class Arch = simd::default_arch>
Status max_pool2d(const Pool2dParams& p, ConstTensor in, Tensor out, RowRange rows = {}) {
  EDGENN_TRY(p.validate(in.shape));
  EDGENN_CHECK(out.shape == p.output_shape(in.shape), Error::shape_mismatch, "max_pool2d: output shape mismatch");
  const int r0 = rows.begin, r1 = rows.end < 0 ? out.h() : rows.end;
  EDGENN_CHECK(0 <= r0 && r0 <= r1 && r1 <= out.h(), Error::invalid_argument, "max_pool2d: row range outside");
  for (int b = 0; b < in.n(); ++b)
    for (int oy = r0; oy < r1; ++oy) {
      const int y0 = oy * p.stride_h - p.pad_top;
      const int ys = y0 < 0 ? 0 : y0, ye = y0 + p.kernel_h < in.h() ? y0 + p.kernel_h : in.h();
      for (int ox = 0; ox < out.w(); ++ox) {
        const int x0 = ox * p.stride_w - p.pad_left;
        const int xs = x0 < 0 ? 0 : x0, xe = x0 + p.kernel_w < in.w() ? x0 + p.kernel_w : in.w();
        detail::pool_window<Arch, true>(in, b, ys, ye, xs, xe, 1.0f, out.pixel(b, oy, ox));
      }
    }
  return Status::ok();
}

template <class Arch = simd::default_arch>
Status avg_pool2d(const Pool2dParams& p, ConstTensor in, Tensor out, RowRange rows = {}) {
  EDGENN_TRY(p.validate(in.shape));
  EDGENN_CHECK(out.shape == p.output_shape(in.shape), Error::shape_mismatch, "avg_pool2d: output shape mismatch");
  const int r0 = rows.begin, r1 = rows.end < 0 ? out.h() : rows.end;
  EDGENN_CHECK(0 <= r0 && r0 <= r1 && r1 <= out.h(), Error::invalid_argument, "avg_pool2d: row range outside");
  for (int b = 0; b < in.n(); ++b)
    for (int oy = r0; oy < r1; ++oy)
      for (int ox = 0; ox < out.w(); ++ox) {
        const int y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
        // Window clipped to the padded extent (PyTorch), and to the input.
        const int ye = y0 + p.kernel_h < in.h() + p.pad_bottom ? y0 + p.kernel_h : in.h() + p.pad_bottom;
        const int xe = x0 + p.kernel_w < in.w() + p.pad_right ? x0 + p.kernel_w : in.w() + p.pad_right;
        const int ys = y0 < 0 ? 0 : y0, xs = x0 < 0 ? 0 : x0;
        const int yi = ye < in.h() ? ye : in.h(), xi = xe < in.w() ? xe : in.w();
        const int count = p.count_include_pad ? (ye - y0) * (xe - x0) : (yi - ys) * (xi - xs);
        float* dst = out.pixel(b, oy, ox);
        if (yi <= ys || xi <= xs) {  // the window holds padding only
          for (int c = 0; c < in.c(); ++c) dst[c] = 0.0f;
          continue;
        }
        detail::pool_window<Arch, false>(in, b, ys, yi, xs, xi, count > 0 ? 1.0f / float(count) : 0.0f, dst);
      }
  return Status::ok();
}

// out[b][c] = mean over the H x W pixels of in[b, :, :, c]; out rows at stride ldo.
// Up to eight vectors of channels the sums stay in registers (pixels inner); wider rows are
// summed into `out` pixel by pixel, so the input is read in memory order (at batch sizes
// that do not fit the caches this streams instead of striding).
template <class Arch = simd::default_arch>
Status global_avg_pool(ConstTensor in, float* out, index_t ldo) {
  EDGENN_CHECK(in.shape.valid() && ldo >= in.c(), Error::shape_mismatch, "global_avg_pool: bad shape or stride");
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  const int C = in.c();
  const float scale = 1.0f / float(in.h() * in.w());
  for (int b = 0; b < in.n(); ++b) {
    float* dst = out + b * ldo;
    if (C <= 8 * VL) {
      detail::pool_window<Arch, false>(in, b, 0, in.h(), 0, in.w(), scale, dst);
      continue;
    }
    const int cfull = C / VL * VL;
    for (int y = 0; y < in.h(); ++y)
      for (int x = 0; x < in.w(); ++x) {
        const float* s = in.pixel(b, y, x);
        if (y == 0 && x == 0) {
          for (int c = 0; c < cfull; c += VL) V::load(s + c).store(dst + c);
          for (int c = cfull; c < C; ++c) dst[c] = s[c];
        } else {
          for (int c = 0; c < cfull; c += VL) (V::load(dst + c) + V::load(s + c)).store(dst + c);
          for (int c = cfull; c < C; ++c) dst[c] += s[c];
        }
      }
    const V sv = V::broadcast(scale);
    for (int c = 0; c < cfull; c += VL) (V::load(dst + c) * sv).store(dst + c);
    for (int c = cfull; c < C; ++c) dst[c] *= scale;
  }
  return Status::ok();
}

}  // namespace edgenn::kernels
