// Naive references for softmax, log-softmax and entropy, in double precision.
#pragma once

#include <cmath>

#include "edgenn/core/config.hpp"

namespace edgenn::ref {

inline void softmax(int rows, int n, const float* x, float* y, bool log_space = false) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + index_t(r) * n;
    double m = xr[0];
    for (int i = 1; i < n; ++i) m = xr[i] > m ? xr[i] : m;
    double s = 0;
    for (int i = 0; i < n; ++i) s += std::exp(xr[i] - m);
    for (int i = 0; i < n; ++i)
      y[index_t(r) * n + i] = float(log_space ? xr[i] - m - std::log(s) : std::exp(xr[i] - m) / s);
  }
}

inline double entropy(const float* p, int n) {
  double h = 0;
  for (int i = 0; i < n; ++i)
    if (p[i] > 0) h -= double(p[i]) * std::log(double(p[i]));
  return h;
}

}  // namespace edgenn::ref
