// Shapes of NHWC activations (batch, height, width, channels).
#pragma once

#include "edgenn/core/config.hpp"

namespace edgenn {

struct Shape {
  int n = 0, h = 0, w = 0, c = 0;

  constexpr index_t pixels() const { return index_t(h) * w; }
  constexpr index_t per_item() const { return index_t(h) * w * c; }
  constexpr index_t size() const { return index_t(n) * h * w * c; }
  constexpr bool empty() const { return size() == 0; }
  constexpr bool valid() const { return n > 0 && h > 0 && w > 0 && c > 0; }
  friend constexpr bool operator==(const Shape& a, const Shape& b) {
    return a.n == b.n && a.h == b.h && a.w == b.w && a.c == b.c;
  }
  friend constexpr bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }
};

// Output extent of a sliding window (convolution or pooling) along one axis; <= 0 if the
// window does not fit.
constexpr int window_output_size(int in, int kernel, int stride, int dilation, int pad_begin, int pad_end) {
  const int span = dilation * (kernel - 1) + 1;
  const int padded = in + pad_begin + pad_end;
  return padded < span ? 0 : (padded - span) / stride + 1;
}

// Round `v` up to a multiple of `m` (m > 0).
constexpr index_t round_up(index_t v, index_t m) { return (v + m - 1) / m * m; }
constexpr index_t div_up(index_t v, index_t m) { return (v + m - 1) / m; }

}  // namespace edgenn
