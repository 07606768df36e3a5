// Image files (PNG, JPEG, BMP, ...) into the engine's uint8 input layout through stb_image:
// decoded, converted to grayscale (ITU-R BT.601 luma) when the model has one channel,
// resized with area averaging (down) or bilinear interpolation (up), optionally inverted
// (Fashion-MNIST has light objects on a dark background; photos are usually the reverse).
// Host side: needs the edgenn::image target (stb_image.h, Debian libstb-dev).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

// stb_image compiled privately into every translation unit that includes this header
// (static functions), so the header-only library needs no separate implementation file.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#endif
#ifndef STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#endif
#include <stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include "edgenn/io/result.hpp"

namespace edgenn::image {

struct LoadOptions {
  int height = 28, width = 28, channels = 1;  // the model's input
  bool invert = false;                        // 255 - value after conversion
};

// One channel plane resampled from (sh, sw) to (dh, dw).
inline void resample(const std::vector<float>& src, int sh, int sw, std::vector<float>& dst, int dh, int dw) {
  dst.assign(std::size_t(dh) * dw, 0.f);
  if (sh == dh && sw == dw) {
    dst = src;
    return;
  }
  const double sy = double(sh) / dh, sx = double(sw) / dw;
  for (int y = 0; y < dh; ++y)
    for (int x = 0; x < dw; ++x) {
      double v = 0;
      if (sy >= 1 && sx >= 1) {
        // Area average over the source box [y*sy, (y+1)*sy) x [x*sx, (x+1)*sx).
        const double y0 = y * sy, y1 = (y + 1) * sy, x0 = x * sx, x1 = (x + 1) * sx;
        double wsum = 0;
        for (int yy = int(y0); yy < std::min(sh, int(std::ceil(y1))); ++yy) {
          const double wy = std::min(y1, yy + 1.0) - std::max(y0, double(yy));
          for (int xx = int(x0); xx < std::min(sw, int(std::ceil(x1))); ++xx) {
            const double w = wy * (std::min(x1, xx + 1.0) - std::max(x0, double(xx)));
            v += w * src[std::size_t(yy) * sw + xx];
            wsum += w;
          }
        }
        v = wsum > 0 ? v / wsum : 0;
      } else {
        // Bilinear, pixel centres aligned.
        const double fy = std::clamp((y + 0.5) * sy - 0.5, 0.0, double(sh - 1));
        const double fx = std::clamp((x + 0.5) * sx - 0.5, 0.0, double(sw - 1));
        const int y0 = int(fy), x0 = int(fx), y1 = std::min(y0 + 1, sh - 1), x1 = std::min(x0 + 1, sw - 1);
        const double ay = fy - y0, ax = fx - x0;
        auto at = [&](int yy, int xx) { return double(src[std::size_t(yy) * sw + xx]); };
        v = (1 - ay) * ((1 - ax) * at(y0, x0) + ax * at(y0, x1)) + ay * ((1 - ax) * at(y1, x0) + ax * at(y1, x1));
      }
      dst[std::size_t(y) * dw + x] = float(v);
    }
}

// Decode `path` into height x width x channels bytes (HWC), ready for nn::normalize_pixels.
inline io::Result<std::vector<unsigned char>> load_image(const std::string& path, const LoadOptions& opt = {}) {
  if (opt.channels != 1 && opt.channels != 3)
    return io::fail(Error::invalid_argument, "load_image: models with " + std::to_string(opt.channels) +
                                                 " input channels are not supported (1 or 3)");
  if (opt.height <= 0 || opt.width <= 0) return io::fail(Error::invalid_argument, "load_image: bad target size");
  int w = 0, h = 0, c = 0;
  unsigned char* raw = stbi_load(path.c_str(), &w, &h, &c, opt.channels);
  if (!raw) return io::fail(Error::io_error, path + ": cannot decode image (" + stbi_failure_reason() + ")");
  std::vector<std::vector<float>> planes(std::size_t(opt.channels), std::vector<float>(std::size_t(w) * h));
  for (int i = 0; i < w * h; ++i)
    for (int k = 0; k < opt.channels; ++k) planes[std::size_t(k)][std::size_t(i)] = raw[std::size_t(i) * opt.channels + k];
  stbi_image_free(raw);  // stb converts to the requested channel count (grey = BT.601 luma)
  std::vector<unsigned char> out(std::size_t(opt.height) * opt.width * opt.channels);
  std::vector<float> r;
  for (int k = 0; k < opt.channels; ++k) {
    resample(planes[std::size_t(k)], h, w, r, opt.height, opt.width);
    for (int i = 0; i < opt.height * opt.width; ++i) {
      float v = std::clamp(std::round(r[std::size_t(i)]), 0.f, 255.f);
      if (opt.invert) v = 255.f - v;
      out[std::size_t(i) * opt.channels + k] = static_cast<unsigned char>(v);
    }
  }
  return out;
}

}  // namespace edgenn::image
