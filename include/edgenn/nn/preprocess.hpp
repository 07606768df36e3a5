// Input preprocessing as in training: 8-bit pixels to normalised floats,
// x = (pixel / 255 - mean[c]) / std[c], NHWC.
#pragma once

#include "edgenn/core/tensor.hpp"

namespace edgenn::nn {

// pixels: n images of h*w*c bytes (HWC, row-major); out: dense NHWC view of the same shape.
inline Status normalize_pixels(const unsigned char* pixels, const float* mean, const float* stdv, Tensor out) {
  EDGENN_CHECK(pixels && mean && stdv && out.shape.valid(), Error::invalid_argument, "normalize_pixels: bad arguments");
  const int c = out.c();
  for (int b = 0; b < out.n(); ++b)
    for (int y = 0; y < out.h(); ++y)
      for (int x = 0; x < out.w(); ++x) {
        float* dst = out.pixel(b, y, x);
        const unsigned char* src = pixels + ((index_t(b) * out.h() + y) * out.w() + x) * c;
        for (int ch = 0; ch < c; ++ch) dst[ch] = (float(src[ch]) / 255.0f - mean[ch]) / stdv[ch];
      }
  return Status::ok();
}

}  // namespace edgenn::nn
