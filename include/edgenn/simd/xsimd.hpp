// SIMD backend over xsimd 8.1: SSE/AVX2/AVX-512 on x86, NEON on Arm. One template covers
// every xsimd architecture; kernels see the same Vec interface as the scalar backend.
//
// xsimd 8.1 pitfalls avoided here: the free load_unaligned<Arch>() is broken for
// non-default architectures (use the batch member), and `hadd` is the reduction's name.
#pragma once

#include <xsimd/xsimd.hpp>

#include <type_traits>

#include "edgenn/simd/scalar.hpp"

namespace edgenn::simd {

template <class Arch>
struct Vec {
  using batch = xsimd::batch<float, Arch>;
  static constexpr int size = static_cast<int>(batch::size);
  // AVX-512 and AArch64 NEON have 32 vector registers, the others 16.
  static constexpr int registers =
      (std::is_base_of<xsimd::avx512f, Arch>::value || std::is_base_of<xsimd::neon64, Arch>::value) ? 32 : 16;
  batch v;

  static EDGENN_INLINE Vec load(const float* p) { return Vec{batch::load_unaligned(p)}; }
  static EDGENN_INLINE Vec broadcast(float x) { return Vec{batch(x)}; }
  static EDGENN_INLINE Vec zero() { return Vec{batch(0.0f)}; }
  EDGENN_INLINE void store(float* p) const { v.store_unaligned(p); }
  // n < size lanes (channel tails). xsimd 8.1 has no masked memory access, so x86 uses the
  // intrinsics directly; elsewhere a small stack copy.
  static EDGENN_INLINE Vec load_partial(const float* p, int n) {
#if defined(__AVX512F__)
    if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
      return Vec{batch(_mm512_maskz_loadu_ps(__mmask16((1u << n) - 1u), p))};
    }
#endif
#if defined(__AVX2__)
    if constexpr (std::is_base_of<xsimd::avx2, Arch>::value && size == 8) {
      return Vec{batch(_mm256_maskload_ps(p, tail_mask8(n)))};
    }
#endif
    alignas(64) float tmp[size] = {};
    // A fixed trip count: with `i < n` GCC's loop analysis reported impossible iterations
    // (-Waggressive-loop-optimizations) in some inlining contexts on aarch64.
    for (int i = 0; i < size; ++i)
      if (i < n) tmp[i] = p[i];
    return Vec{batch::load_aligned(tmp)};
  }
  EDGENN_INLINE void store_partial(float* p, int n) const {
#if defined(__AVX512F__)
    if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
      _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1u), v);
      return;
    }
#endif
#if defined(__AVX2__)
    if constexpr (std::is_base_of<xsimd::avx2, Arch>::value && size == 8) {
      _mm256_maskstore_ps(p, tail_mask8(n), v);
      return;
    }
#endif
    alignas(64) float tmp[size];
    v.store_aligned(tmp);
    for (int i = 0; i < size; ++i)
      if (i < n) p[i] = tmp[i];
  }

#if defined(__AVX2__)
  static EDGENN_INLINE __m256i tail_mask8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
#endif

  friend EDGENN_INLINE Vec operator+(Vec a, Vec b) { return Vec{a.v + b.v}; }
  friend EDGENN_INLINE Vec operator-(Vec a, Vec b) { return Vec{a.v - b.v}; }
  friend EDGENN_INLINE Vec operator*(Vec a, Vec b) { return Vec{a.v * b.v}; }
  friend EDGENN_INLINE Vec operator/(Vec a, Vec b) { return Vec{a.v / b.v}; }
  friend EDGENN_INLINE Vec fma(Vec a, Vec b, Vec c) { return Vec{xsimd::fma(a.v, b.v, c.v)}; }
  friend EDGENN_INLINE Vec max(Vec a, Vec b) { return Vec{xsimd::max(a.v, b.v)}; }
  friend EDGENN_INLINE Vec min(Vec a, Vec b) { return Vec{xsimd::min(a.v, b.v)}; }
  friend EDGENN_INLINE Vec exp(Vec a) { return Vec{xsimd::exp(a.v)}; }
  // v where y > t, else 0; v where y < t, else 0 (activation masks).
  friend EDGENN_INLINE Vec select_gt(Vec y, Vec t, Vec v) { return Vec{xsimd::select(y.v > t.v, v.v, batch(0.0f))}; }
  friend EDGENN_INLINE Vec select_lt(Vec y, Vec t, Vec v) { return Vec{xsimd::select(y.v < t.v, v.v, batch(0.0f))}; }
  friend EDGENN_INLINE float reduce_add(Vec a) { return xsimd::hadd(a.v); }
  friend EDGENN_INLINE float reduce_max(Vec a) {
    alignas(64) float tmp[size];
    a.v.store_aligned(tmp);
    float m = tmp[0];
    for (int i = 1; i < size; ++i) m = tmp[i] > m ? tmp[i] : m;
    return m;
  }
};

}  // namespace edgenn::simd
