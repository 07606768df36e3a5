// Softmax, log-softmax (numerically stable: the row maximum is subtracted first) and the
// entropy of a probability vector, over rows of a [rows][n] matrix.
#pragma once

#include <cmath>

#include "edgenn/core/status.hpp"
#include "edgenn/simd/simd.hpp"

namespace edgenn::kernels {

namespace detail {
inline float row_max(const float* x, int n) {
  float m = x[0];
  for (int i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}
}  // namespace detail

// y = softmax(x) per row; y may alias x.
inline Status softmax(int rows, int n, const float* x, index_t ldx, float* y, index_t ldy) {
  EDGENN_CHECK(rows >= 0 && n > 0 && ldx >= n && ldy >= n, Error::invalid_argument, "softmax: bad sizes");
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    const float m = detail::row_max(xr, n);
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
      yr[i] = std::exp(xr[i] - m);
      sum += yr[i];
    }
    const float inv = float(1.0 / sum);
    for (int i = 0; i < n; ++i) yr[i] *= inv;
  }
  return Status::ok();
}

// y = log_softmax(x) per row; y may alias x.
inline Status log_softmax(int rows, int n, const float* x, index_t ldx, float* y, index_t ldy) {
  EDGENN_CHECK(rows >= 0 && n > 0 && ldx >= n && ldy >= n, Error::invalid_argument, "log_softmax: bad sizes");
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    const float m = detail::row_max(xr, n);
    double sum = 0.0;
    for (int i = 0; i < n; ++i) sum += std::exp(double(xr[i] - m));
    const float lse = m + float(std::log(sum));
    for (int i = 0; i < n; ++i) yr[i] = xr[i] - lse;
  }
  return Status::ok();
}

// Entropy in nats, -sum p log p (0 log 0 = 0), of a probability vector of n entries.
inline float entropy(const float* p, int n) {
  double h = 0.0;
  for (int i = 0; i < n; ++i)
    if (p[i] > 0.0f) h -= double(p[i]) * std::log(double(p[i]));
  return float(h);
}

// Entropy divided by its maximum, log n: 0 = certain, 1 = uniform.
inline float normalized_entropy(const float* p, int n) {
  return n > 1 ? float(double(entropy(p, n)) / std::log(double(n))) : 0.0f;
}

}  // namespace edgenn::kernels
