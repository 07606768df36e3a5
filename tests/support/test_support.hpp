// Shared helpers of the test suites: deterministic random data, the architectures every
// kernel is tested on, and tolerances derived from the computation.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "edgenn/edgenn.hpp"

namespace edgenn::test {

// Every kernel test runs for the build's SIMD backend and for the scalar backend. tools/test.sh
// builds its SIMD stages without the scalar twins (EDGENN_TEST_SIMD_ONLY, CMake option
// EDGENN_TEST_SCALAR_TWINS=OFF): its scalar and Cortex-M stages test the scalar backend, and
// the twins doubled the build (and under qemu the run).
#if defined(EDGENN_HAS_XSIMD) && defined(EDGENN_TEST_SIMD_ONLY)
#define EDGENN_TEST_ARCHS ::edgenn::simd::default_arch
#elif defined(EDGENN_HAS_XSIMD)
#define EDGENN_TEST_ARCHS ::edgenn::simd::default_arch, ::edgenn::simd::scalar
#else
#define EDGENN_TEST_ARCHS ::edgenn::simd::scalar
#endif

// EDGENN_TEST_SCALE (environment) multiplies the number of random cases (default 1).
inline int scaled(int n) {
  const char* s = std::getenv("EDGENN_TEST_SCALE");
  const double f = s ? std::atof(s) : 1.0;
  const int r = int(n * f);
  return r < 1 ? 1 : r;
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : gen_(seed) {}
  int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen_); }
  float uniform(float lo = -1.0f, float hi = 1.0f) { return std::uniform_real_distribution<float>(lo, hi)(gen_); }
  bool coin(double p = 0.5) { return std::bernoulli_distribution(p)(gen_); }
  std::vector<float> vec(std::size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[std::size_t(uniform_int(0, int(v.size()) - 1))]; }
  std::mt19937_64& engine() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

// Owned NHWC buffer with optional padding around the view, so kernels are exercised on
// strided sub-views (channel slices of wider buffers, tiles of larger maps).
struct Buffer {
  std::vector<float> storage;
  Tensor view;

  static Buffer make(Shape s, Rng* rng, bool strided = false, Rng* layout = nullptr) {
    Buffer b;
    int extra_c = 0, extra_w = 0, extra_h = 0, c0 = 0, x0 = 0, y0 = 0;
    if (strided && layout) {
      extra_c = layout->uniform_int(0, 5);
      c0 = layout->uniform_int(0, extra_c);
      extra_w = layout->uniform_int(0, 2);
      x0 = layout->uniform_int(0, extra_w);
      extra_h = layout->uniform_int(0, 2);
      y0 = layout->uniform_int(0, extra_h);
    }
    const Shape full{s.n, s.h + extra_h, s.w + extra_w, s.c + extra_c};
    b.storage.assign(std::size_t(full.size()), 0.0f);
    // Fill everything (including the bytes outside the view) so stray reads change results.
    for (auto& x : b.storage) x = rng ? rng->uniform() : 0.0f;
    b.view = Tensor::dense(b.storage.data(), full).region(y0, x0, s.h, s.w).channels(c0, s.c);
    return b;
  }
};

// Copy of a view into a dense vector (for comparisons).
inline std::vector<float> to_dense(ConstTensor v) {
  std::vector<float> out;
  out.reserve(std::size_t(v.shape.size()));
  for (int b = 0; b < v.n(); ++b)
    for (int i = 0; i < v.h(); ++i)
      for (int j = 0; j < v.w(); ++j)
        for (int c = 0; c < v.c(); ++c) out.push_back(v.at(b, i, j, c));
  return out;
}

// Element-wise |a - b| <= atol + rtol * scale[i]; reports the first failure.
inline bool close(const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& scale,
                  double rtol, double atol, std::string* where = nullptr) {
  if (a.size() != b.size()) {
    if (where) *where = "size " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double tol = atol + rtol * (scale.empty() ? std::fabs(double(b[i])) : double(scale[i]));
    if (!(std::fabs(double(a[i]) - double(b[i])) <= tol)) {
      if (where)
        *where = "index " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " + std::to_string(b[i]) +
                 " (tol " + std::to_string(tol) + ")";
      return false;
    }
  }
  return true;
}

// Workspace memory owned by a test: `bytes` usable after the alignment the kernels need.
struct OwnedWorkspace {
  std::vector<unsigned char> mem;
  Workspace ws;
  explicit OwnedWorkspace(std::size_t bytes) : mem(bytes + kAlignment), ws(mem.data(), mem.size()) {}
};

inline std::vector<float> abs_of(std::vector<float> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}

}  // namespace edgenn::test
