// The SIMD layer: one thin vector type, Vec<Arch>, over xsimd where it exists and the
// scalar backend everywhere else. Kernels are templates on Arch; `default_arch` is the
// compile-time choice for this build:
//   - EDGENN_SIMD_SCALAR defined, bare metal, or no usable xsimd architecture -> scalar
//   - otherwise xsimd::default_arch (e.g. avx512bw with -march=native, neon64 on AArch64,
//     neon on armhf with -mfpu=neon-vfpv4).
#pragma once

#include "edgenn/core/config.hpp"
#include "edgenn/simd/scalar.hpp"

#if !defined(EDGENN_SIMD_SCALAR) && !defined(EDGENN_NO_XSIMD)
#if defined(__has_include)
#if __has_include(<xsimd/xsimd.hpp>)
// GCC 12 reports false "may be used uninitialized" warnings inside its own AVX-512
// intrinsics (the _mm512_undefined_* idiom) once xsimd's reductions are inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
#define EDGENN_HAS_XSIMD 1
#endif
#endif
#endif
#endif

#if defined(EDGENN_HAS_XSIMD)
#include "edgenn/simd/xsimd.hpp"
#endif

namespace edgenn::simd {

#if defined(EDGENN_HAS_XSIMD)
using default_arch = xsimd::default_arch;
#else
using default_arch = scalar;
#endif

// Lanes of the default backend.
inline constexpr int default_width = Vec<default_arch>::size;

}  // namespace edgenn::simd
