// The portable scalar backend: a one-lane "vector". Mandatory on Cortex-M (xsimd has no
// target there) and the reference point every SIMD backend is tested against.
#pragma once

#include <cmath>

#include "edgenn/core/config.hpp"

namespace edgenn::simd {

// Architecture tag of the scalar backend.
struct scalar {
  static constexpr const char* name() { return "scalar"; }
};

template <class Arch>
struct Vec;

template <>
struct Vec<scalar> {
  static constexpr int size = 1;
  // Accumulator registers a microkernel may use (Cortex-M4F has 32 single-precision registers).
  static constexpr int registers = 24;
  float v;

  static EDGENN_INLINE Vec load(const float* p) { return Vec{*p}; }
  static EDGENN_INLINE Vec broadcast(float x) { return Vec{x}; }
  static EDGENN_INLINE Vec zero() { return Vec{0.0f}; }
  EDGENN_INLINE void store(float* p) const { *p = v; }
  // n <= size elements; the rest of the lanes read as 0.
  static EDGENN_INLINE Vec load_partial(const float* p, int n) { return Vec{n > 0 ? *p : 0.0f}; }
  EDGENN_INLINE void store_partial(float* p, int n) const {
    if (n > 0) *p = v;
  }

  friend EDGENN_INLINE Vec operator+(Vec a, Vec b) { return Vec{a.v + b.v}; }
  friend EDGENN_INLINE Vec operator-(Vec a, Vec b) { return Vec{a.v - b.v}; }
  friend EDGENN_INLINE Vec operator*(Vec a, Vec b) { return Vec{a.v * b.v}; }
  friend EDGENN_INLINE Vec operator/(Vec a, Vec b) { return Vec{a.v / b.v}; }
  // a * b + c
  friend EDGENN_INLINE Vec fma(Vec a, Vec b, Vec c) { return Vec{a.v * b.v + c.v}; }
  friend EDGENN_INLINE Vec max(Vec a, Vec b) { return Vec{a.v > b.v ? a.v : b.v}; }
  friend EDGENN_INLINE Vec min(Vec a, Vec b) { return Vec{a.v < b.v ? a.v : b.v}; }
  friend EDGENN_INLINE Vec exp(Vec a) { return Vec{std::exp(a.v)}; }
  friend EDGENN_INLINE Vec select_gt(Vec y, Vec t, Vec v) { return Vec{y.v > t.v ? v.v : 0.0f}; }
  friend EDGENN_INLINE Vec select_lt(Vec y, Vec t, Vec v) { return Vec{y.v < t.v ? v.v : 0.0f}; }
  friend EDGENN_INLINE float reduce_add(Vec a) { return a.v; }
  friend EDGENN_INLINE float reduce_max(Vec a) { return a.v; }
};

}  // namespace edgenn::simd
