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

template <class Arch = simd::default_arch>
Status max_pool2d(const Pool2dParams& p, ConstTensor in, Tensor out, RowRange rows = {}) {
  EDGENN_TRY(p.validate(in.shape));
  EDGENN_CHECK(out.shape == p.output_shape(in.shape), Error::shape_mismatch, "max_pool2d: output shape mismatch");
  using V = simd::Vec<Arch>;
  const int C = in.c();
  const int r0 = rows.begin, r1 = rows.end < 0 ? out.h() : rows.end;
  EDGENN_CHECK(0 <= r0 && r0 <= r1 && r1 <= out.h(), Error::invalid_argument, "max_pool2d: row range outside");
  for (int b = 0; b < in.n(); ++b)
    for (int oy = r0; oy < r1; ++oy)
      for (int ox = 0; ox < out.w(); ++ox) {
        const int y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
        float* dst = out.pixel(b, oy, ox);
        for (int c = 0; c < C; c += V::size) {
          const int n = C - c < V::size ? C - c : V::size;
          bool first = true;
          V m = V::zero();
          for (int ky = 0; ky < p.kernel_h; ++ky) {
            const int y = y0 + ky;
            if (unsigned(y) >= unsigned(in.h())) continue;
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const int x = x0 + kx;
              if (unsigned(x) >= unsigned(in.w())) continue;
              const float* s = in.pixel(b, y, x) + c;
              const V v = n == V::size ? V::load(s) : V::load_partial(s, n);
              m = first ? v : max(m, v);
              first = false;
            }
          }
          if (n == V::size) {
            m.store(dst + c);
          } else {
            m.store_partial(dst + c, n);
          }
        }
      }
  return Status::ok();
}

template <class Arch = simd::default_arch>
Status avg_pool2d(const Pool2dParams& p, ConstTensor in, Tensor out, RowRange rows = {}) {
  EDGENN_TRY(p.validate(in.shape));
  EDGENN_CHECK(out.shape == p.output_shape(in.shape), Error::shape_mismatch, "avg_pool2d: output shape mismatch");
  using V = simd::Vec<Arch>;
  const int C = in.c();
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
        const V inv = V::broadcast(count > 0 ? 1.0f / float(count) : 0.0f);
        float* dst = out.pixel(b, oy, ox);
        for (int c = 0; c < C; c += V::size) {
          const int n = C - c < V::size ? C - c : V::size;
          V acc = V::zero();
          for (int y = ys; y < yi; ++y)
            for (int x = xs; x < xi; ++x) {
              const float* s = in.pixel(b, y, x) + c;
              acc = acc + (n == V::size ? V::load(s) : V::load_partial(s, n));
            }
          acc = acc * inv;
          if (n == V::size) {
            acc.store(dst + c);
          } else {
            acc.store_partial(dst + c, n);
          }
        }
      }
  return Status::ok();
}

// out[b][c] = mean over the H x W pixels of in[b, :, :, c]; out rows at stride ldo.
template <class Arch = simd::default_arch>
Status global_avg_pool(ConstTensor in, float* out, index_t ldo) {
  EDGENN_CHECK(in.shape.valid() && ldo >= in.c(), Error::shape_mismatch, "global_avg_pool: bad shape or stride");
  using V = simd::Vec<Arch>;
  const V inv = V::broadcast(1.0f / float(in.h() * in.w()));
  for (int b = 0; b < in.n(); ++b) {
    float* dst = out + b * ldo;
    for (int c = 0; c < in.c(); c += V::size) {
      const int n = in.c() - c < V::size ? in.c() - c : V::size;
      V acc = V::zero();
      for (int y = 0; y < in.h(); ++y)
        for (int x = 0; x < in.w(); ++x) {
          const float* s = in.pixel(b, y, x) + c;
          acc = acc + (n == V::size ? V::load(s) : V::load_partial(s, n));
        }
      acc = acc * inv;
      if (n == V::size) {
        acc.store(dst + c);
      } else {
        acc.store_partial(dst + c, n);
      }
    }
  }
  return Status::ok();
}

}  // namespace edgenn::kernels
