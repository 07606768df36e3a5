// Naive reference pooling (PyTorch semantics: max ignores padding; average divides by the
// window clipped to the padded input, or by the in-input taps with count_include_pad off).
#pragma once

#include <limits>

#include "edgenn/kernels/pooling.hpp"

namespace edgenn::ref {

inline void max_pool2d(const kernels::Pool2dParams& p, ConstTensor in, Tensor out) {
  for (int b = 0; b < out.n(); ++b)
    for (int oy = 0; oy < out.h(); ++oy)
      for (int ox = 0; ox < out.w(); ++ox)
        for (int c = 0; c < out.c(); ++c) {
          float m = -std::numeric_limits<float>::infinity();
          for (int ky = 0; ky < p.kernel_h; ++ky)
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const int y = oy * p.stride_h - p.pad_top + ky, x = ox * p.stride_w - p.pad_left + kx;
              if (y < 0 || y >= in.h() || x < 0 || x >= in.w()) continue;
              m = in.at(b, y, x, c) > m ? in.at(b, y, x, c) : m;
            }
          out.at(b, oy, ox, c) = m;
        }
}

inline void avg_pool2d(const kernels::Pool2dParams& p, ConstTensor in, Tensor out) {
  for (int b = 0; b < out.n(); ++b)
    for (int oy = 0; oy < out.h(); ++oy)
      for (int ox = 0; ox < out.w(); ++ox)
        for (int c = 0; c < out.c(); ++c) {
          double s = 0;
          int inside = 0, padded = 0;
          for (int ky = 0; ky < p.kernel_h; ++ky)
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const int y = oy * p.stride_h - p.pad_top + ky, x = ox * p.stride_w - p.pad_left + kx;
              if (y >= in.h() + p.pad_bottom || x >= in.w() + p.pad_right) continue;
              ++padded;
              if (y < 0 || y >= in.h() || x < 0 || x >= in.w()) continue;
              ++inside;
              s += in.at(b, y, x, c);
            }
          const int count = p.count_include_pad ? padded : inside;
          out.at(b, oy, ox, c) = float(count ? s / count : 0.0);
        }
}

inline void global_avg_pool(ConstTensor in, float* out) {
  for (int b = 0; b < in.n(); ++b)
    for (int c = 0; c < in.c(); ++c) {
      double s = 0;
      for (int y = 0; y < in.h(); ++y)
        for (int x = 0; x < in.w(); ++x) s += in.at(b, y, x, c);
      out[index_t(b) * in.c() + c] = float(s / (in.h() * in.w()));
    }
}

}  // namespace edgenn::ref
