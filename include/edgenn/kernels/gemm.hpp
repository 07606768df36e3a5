// The register-blocked matrix-multiply microkernel behind convolution, pointwise
// convolution and fully connected layers, and the weight packing it reads.
//
//   C[m][n] = clamp( bias[n] + sum_t sum_k A_t[m][k] * W[t][k][n] (+ R[m][n]) )
//
// A is not packed: a "row provider" hands the microkernel, for every tap t, one pointer
// per output row (an input pixel's channels, or a zero vector for padding). A plain GEMM
// has one tap and rows at a fixed stride; a convolution has KH*KW taps and computes the
// pointers from the window position (implicit im2col, no im2col buffer).
//
// W is packed once (at load or conversion time) into panels of NR = NV * lanes output
// columns: [panel][bias: NR][K rows: NR], zero-padded past the last column. The panel
// width depends on the SIMD architecture and the number of output channels
// (see PanelConfig), so packed weights belong to the architecture that packed them.
#pragma once

#include "edgenn/core/shape.hpp"
#include "edgenn/core/status.hpp"
#include "edgenn/kernels/activation.hpp"
#include "edgenn/simd/simd.hpp"

namespace edgenn::kernels {

// Tile shape of the microkernel for one architecture and a given panel width (NV vectors).
template <class Arch>
struct PanelConfig {
  static constexpr int lanes = simd::Vec<Arch>::size;
  static constexpr int registers = simd::Vec<Arch>::registers;

  // Vectors per panel for `cols` output columns: 1, 2 or 4 (4 only with 32 registers).
  static constexpr int vectors_for(int cols) {
    const int need = int(div_up(cols, lanes));
    if (lanes == 1) return need >= 4 ? 4 : need >= 2 ? 2 : 1;
    if (need >= 4 && registers >= 32) return 4;
    return need >= 2 ? 2 : 1;
  }
  // Rows per tile for a panel of `nv` vectors: as many accumulators as the register file
  // allows, capped at 8 row pointers (x86-64 has 16 general registers).
  static constexpr int rows_for(int nv) {
    if (lanes == 1) return 4;
    if (registers >= 32) return nv == 4 ? 6 : 8;
    return nv == 1 ? 8 : 6;
  }
};

// Non-owning view of packed weights.
struct PackedWeights {
  const float* data = nullptr;
  int k = 0;        // reduction length per group (taps * input channels per group)
  int cols = 0;     // output columns per group
  int groups = 1;
  int nv = 1;       // vectors per panel
  int nr = 1;       // columns per panel (nv * lanes)
  int panels = 0;   // panels per group

  constexpr index_t panel_floats() const { return index_t(nr) * (k + 1); }
  constexpr index_t group_floats() const { return panel_floats() * panels; }
  constexpr index_t total_floats() const { return group_floats() * groups; }
  constexpr const float* panel(int g, int p) const { return data + g * group_floats() + p * panel_floats(); }
};

// Layout of packed weights for `groups` groups of a k x cols matrix (no data yet).
template <class Arch = simd::default_arch>
constexpr PackedWeights packed_layout(int k, int cols, int groups = 1) {
  PackedWeights pw;
  pw.k = k;
  pw.cols = cols;
  pw.groups = groups;
  pw.nv = PanelConfig<Arch>::vectors_for(cols);
  pw.nr = pw.nv * PanelConfig<Arch>::lanes;
  pw.panels = int(div_up(cols, pw.nr));
  return pw;
}

// Floats needed by pack_weights.
template <class Arch = simd::default_arch>
constexpr index_t packed_floats(int k, int cols, int groups = 1) {
  return packed_layout<Arch>(k, cols, groups).total_floats();
}

// Pack weights given as [groups * cols][k] (row n of group g at (g * cols + n) * k) and an
// optional bias [groups * cols] into `dst` (packed_floats(k, cols, groups) floats).
template <class Arch = simd::default_arch>
PackedWeights pack_weights(int k, int cols, int groups, const float* src, const float* bias, float* dst) {
  PackedWeights pw = packed_layout<Arch>(k, cols, groups);
  pw.data = dst;
  float* out = dst;
  for (int g = 0; g < groups; ++g) {
    for (int p = 0; p < pw.panels; ++p) {
      for (int j = 0; j < pw.nr; ++j) {
        const int n = p * pw.nr + j;
        *out++ = (bias && n < cols) ? bias[g * cols + n] : 0.0f;
      }
      for (int kk = 0; kk < k; ++kk) {
        for (int j = 0; j < pw.nr; ++j) {
          const int n = p * pw.nr + j;
          *out++ = n < cols ? src[(index_t(g) * cols + n) * k + kk] : 0.0f;
        }
      }
    }
  }
  return pw;
}

// Epilogue of a microkernel call: where the rows go and what is fused.
template <int MR>
struct TileOutput {
  float* c[MR];                 // output row pointers (rows >= mr are not written)
  const float* r[MR];           // residual row pointers, or all null
  bool residual = false;
  Clamp clamp{};
};

// The microkernel: MR rows x NV vectors of accumulators, `taps` x `kc` reduction.
// `rows(t, a)` fills a[0..MR) with the A row pointers of tap t (rows >= mr may repeat a
// valid row; their results are discarded). `nc` is the number of valid columns.
template <class Arch, int MR, int NV, class Rows>
EDGENN_INLINE void gemm_tile(const Rows& rows, int mr, int nc, int taps, int kc, const float* EDGENN_RESTRICT w,
                             const TileOutput<MR>& out) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  V acc[MR][NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) {
    const V b = V::load(w + j * VL);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i][j] = b;
  }
  w += NV * VL;
  for (int t = 0; t < taps; ++t) {
    const float* a[MR];
    rows(t, a);
    for (int k = 0; k < kc; ++k) {
      V wv[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) wv[j] = V::load(w + j * VL);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const V av = V::broadcast(a[i][k]);
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = fma(av, wv[j], acc[i][j]);
      }
      w += NV * VL;
    }
  }
  const V lo = V::broadcast(out.clamp.lo);
  const V hi = V::broadcast(out.clamp.hi);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= mr) break;
    float* c = out.c[i];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      const int valid = nc - j * VL;
      if (valid <= 0) break;
      V v = acc[i][j];
      if (out.residual) {
        v = v + (valid >= VL ? V::load(out.r[i] + j * VL) : V::load_partial(out.r[i] + j * VL, valid));
      }
      v = min(max(v, lo), hi);
      if (valid >= VL) {
        v.store(c + j * VL);
      } else {
        v.store_partial(c + j * VL, valid);
      }
    }
  }
}

// Rows of a plain matrix: row i of the tile starts at a0 + i * lda (one tap).
struct StridedRows {
  const float* a0;
  index_t lda;
  int mr;
  template <int MR>
  EDGENN_INLINE void fill(const float* (&a)[MR]) const {
    for (int i = 0; i < MR; ++i) a[i] = a0 + (i < mr ? i : mr - 1) * lda;
  }
};

template <int MR>
struct StridedRowsT : StridedRows {
  EDGENN_INLINE void operator()(int, const float* (&a)[MR]) const { fill(a); }
};

// Rows given as one pointer per tile row (one tap).
template <int MR>
struct PointerRows {
  const float* p[MR];
  EDGENN_INLINE void operator()(int, const float* (&a)[MR]) const {
    for (int i = 0; i < MR; ++i) a[i] = p[i];
  }
};

// Dense GEMM over a full matrix A [m][k] (row stride lda) into C [m][cols] (row stride ldc),
// with optional residual R (row stride ldr; may equal C for accumulation).
template <class Arch, int MR, int NV>
void gemm_panel_loop(int m, const float* a, index_t lda, const PackedWeights& pw, int g, float* c, index_t ldc,
                     const float* r, index_t ldr, Clamp clamp) {
  for (int p = 0; p < pw.panels; ++p) {
    const float* w = pw.panel(g, p);
    const int n0 = p * pw.nr;
    const int nc = pw.cols - n0 < pw.nr ? pw.cols - n0 : pw.nr;
    for (int m0 = 0; m0 < m; m0 += MR) {
      const int mr = m - m0 < MR ? m - m0 : MR;
      // Row pointers precomputed once per tile (recomputing a0 + i * lda inside the
      // microkernel costs registers and makes GCC spill the weight vectors).
      PointerRows<MR> rows;
      for (int i = 0; i < MR; ++i) rows.p[i] = a + (m0 + (i < mr ? i : mr - 1)) * lda;
      TileOutput<MR> out;
      out.clamp = clamp;
      out.residual = r != nullptr;
      for (int i = 0; i < MR; ++i) {
        const int row = m0 + (i < mr ? i : mr - 1);
        out.c[i] = c + row * ldc + n0;
        out.r[i] = r ? r + row * ldr + n0 : nullptr;
      }
      gemm_tile<Arch, MR, NV>(rows, mr, nc, 1, pw.k, w, out);
    }
  }
}

// C = clamp(A * W + bias (+ R)) for group g of packed weights. A: m x pw.k.
template <class Arch = simd::default_arch>
void gemm(int m, const float* a, index_t lda, const PackedWeights& pw, int g, float* c, index_t ldc,
          const float* r = nullptr, index_t ldr = 0, Clamp clamp = {}) {
  using PC = PanelConfig<Arch>;
  switch (pw.nv) {
    case 1: gemm_panel_loop<Arch, PC::rows_for(1), 1>(m, a, lda, pw, g, c, ldc, r, ldr, clamp); break;
    case 2: gemm_panel_loop<Arch, PC::rows_for(2), 2>(m, a, lda, pw, g, c, ldc, r, ldr, clamp); break;
    default: gemm_panel_loop<Arch, PC::rows_for(4), 4>(m, a, lda, pw, g, c, ldc, r, ldr, clamp); break;
  }
}

}  // namespace edgenn::kernels
