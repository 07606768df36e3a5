// Build-time configuration of edgenn: compiler helpers and the SIMD backend choice.
//
// Defines (all optional, set by the user or CMake):
//   EDGENN_SIMD_SCALAR    force the portable scalar backend even where xsimd exists
//   EDGENN_NO_XSIMD       never include xsimd (implied on bare-metal targets)
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__GNUC__) || defined(__clang__)
#define EDGENN_INLINE inline __attribute__((always_inline))
#define EDGENN_NOINLINE __attribute__((noinline))
#define EDGENN_RESTRICT __restrict__
#define EDGENN_LIKELY(x) __builtin_expect(!!(x), 1)
#define EDGENN_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define EDGENN_INLINE inline
#define EDGENN_NOINLINE
#define EDGENN_RESTRICT
#define EDGENN_LIKELY(x) (x)
#define EDGENN_UNLIKELY(x) (x)
#endif

// Bare-metal Arm (Cortex-M): xsimd has no target there and its header needs POSIX.
#if defined(__ARM_ARCH_PROFILE) && (__ARM_ARCH_PROFILE == 'M')
#define EDGENN_BARE_METAL 1
#ifndef EDGENN_NO_XSIMD
#define EDGENN_NO_XSIMD 1
#endif
#endif

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define EDGENN_HAS_EXCEPTIONS 1
#else
#define EDGENN_HAS_EXCEPTIONS 0
#endif

namespace edgenn {

// Alignment of every buffer edgenn hands out: one AVX-512 register / cache line.
inline constexpr std::size_t kAlignment = 64;

using index_t = std::ptrdiff_t;

}  // namespace edgenn
