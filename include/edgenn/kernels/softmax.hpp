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

// y = softmax(x) per row; y may alias x. SIMD across the row: vector maximum, vector exp
// (the backend's: xsimd's polynomial, std::exp on the scalar backend), a float sum over
// several vector accumulators, one scaling pass.
template <class Arch = simd::default_arch>
Status softmax(int rows, int n, const float* x, index_t ldx, float* y, index_t ldy) {
  EDGENN_CHECK(rows >= 0 && n > 0 && ldx >= n && ldy >= n, Error::invalid_argument, "softmax: bad sizes");
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  const int nfull = n / VL * VL;
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    float m = xr[0];
    if (nfull > 0) {
      V vm = V::load(xr);
      for (int i = VL; i < nfull; i += VL) vm = max(vm, V::load(xr + i));
      m = reduce_max(vm);
    }
    for (int i = nfull; i < n; ++i) m = xr[i] > m ? xr[i] : m;
    const V vmax = V::broadcast(m);
    V s0 = V::zero(), s1 = V::zero();
    int i = 0;
    for (; i + 2 * VL <= nfull; i += 2 * VL) {
      const V e0 = exp(V::load(xr + i) - vmax), e1 = exp(V::load(xr + i + VL) - vmax);
      e0.store(yr + i);
      e1.store(yr + i + VL);
      s0 = s0 + e0;
      s1 = s1 + e1;
    }
    for (; i < nfull; i += VL) {
      const V e = exp(V::load(xr + i) - vmax);
      e.store(yr + i);
      s0 = s0 + e;
    }
    float sum = reduce_add(s0 + s1);
    if (nfull < n) {
      const V e = exp(V::load_partial(xr + nfull, n - nfull) - vmax);
      e.store_partial(yr + nfull, n - nfull);
      for (int j = nfull; j < n; ++j) sum += yr[j];
    }
    const V inv = V::broadcast(1.0f / sum);
    for (i = 0; i < nfull; i += VL) (V::load(yr + i) * inv).store(yr + i);
    if (nfull < n) (V::load_partial(yr + nfull, n - nfull) * inv).store_partial(yr + nfull, n - nfull);
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
