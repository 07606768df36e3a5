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
// columns: [panel][bias: NR][K rows: NR], zero-padded past the last column. On SIMD
// architectures the last panel is only as wide as the columns it has left (NV_last <= NV
// vectors, its own microkernel), so a layer with 80 outputs computes 64 + 16 columns, not
// 128. The scalar backend keeps uniform panels (tools/emit_header.py writes that layout).
// The panel widths depend on the SIMD architecture and the number of output channels
// (see PanelConfig), so packed weights belong to the architecture that packed them.
//
// Row tiles: MR rows per microkernel call (PanelConfig::rows_for). A last, partial tile
// runs a narrower instantiation (gemm_tile_rows): 1 or 2 rows split the reduction over
// several accumulators per column vector (a batch-1 fully connected layer is one row),
// up to half a tile runs the half-height kernel; the rest the full one.
#pragma once

#include <type_traits>

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
  // (The input-gradient weights of conv2d_backward use this uniform choice.)
  static constexpr int vectors_for(int cols) {
    const int need = int(div_up(cols, lanes));
    if (lanes == 1) return need >= 4 ? 4 : need >= 2 ? 2 : 1;
    if (need >= 4 && registers >= 32) return 4;
    return need >= 2 ? 2 : 1;
  }
  // Forward weights: vectors of the full panels. With 32 registers 1..4 (3 columns vectors
  // fit one panel of 8 rows), with 16 registers 1 or 2; the scalar backend as vectors_for.
  static constexpr int main_vectors(int cols) {
    const int need = int(div_up(cols, lanes));
    if (lanes == 1) return vectors_for(cols);
    if (registers >= 32) return need >= 4 ? 4 : need;
    return need >= 2 ? 2 : 1;
  }
  // Vectors of the last panel: the columns left after the full panels (scalar: uniform).
  static constexpr int last_vectors(int cols) {
    const int nv = main_vectors(cols);
    if (lanes == 1) return nv;
    const int panels = int(div_up(cols, nv * lanes));
    return int(div_up(cols - (panels - 1) * nv * lanes, lanes));
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
  int nv = 1;       // vectors per full panel
  int nr = 1;       // columns per full panel (nv * lanes)
  int panels = 0;   // panels per group
  int nv_last = 1;  // vectors of the last panel of a group (<= nv)
  int nr_last = 1;  // columns of the last panel of a group

  constexpr index_t panel_floats() const { return index_t(nr) * (k + 1); }
  constexpr index_t last_panel_floats() const { return index_t(nr_last) * (k + 1); }
  constexpr index_t group_floats() const {
    return panels > 0 ? panel_floats() * (panels - 1) + last_panel_floats() : 0;
  }
  constexpr index_t total_floats() const { return group_floats() * groups; }
  constexpr const float* panel(int g, int p) const { return data + g * group_floats() + p * panel_floats(); }
  constexpr int panel_vectors(int p) const { return p == panels - 1 ? nv_last : nv; }
  constexpr int panel_columns(int p) const { return p == panels - 1 ? nr_last : nr; }
};

// Layout of packed weights for `groups` groups of a k x cols matrix (no data yet).
template <class Arch = simd::default_arch>
constexpr PackedWeights packed_layout(int k, int cols, int groups = 1) {
  PackedWeights pw;
  pw.k = k;
  pw.cols = cols;
  pw.groups = groups;
  pw.nv = PanelConfig<Arch>::main_vectors(cols);
  pw.nr = pw.nv * PanelConfig<Arch>::lanes;
  pw.panels = int(div_up(cols, pw.nr));
  pw.nv_last = PanelConfig<Arch>::last_vectors(cols);
  pw.nr_last = pw.nv_last * PanelConfig<Arch>::lanes;
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
      const int width = pw.panel_columns(p);
      for (int j = 0; j < width; ++j) {
        const int n = p * pw.nr + j;
        *out++ = (bias && n < cols) ? bias[g * cols + n] : 0.0f;
      }
      for (int kk = 0; kk < k; ++kk) {
        for (int j = 0; j < width; ++j) {
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
// KS > 1 splits the reduction over KS accumulators per output vector (k, k + 1, ...), for
// tiles with too few accumulators to hide the FMA latency (one or two rows); they are
// summed before the epilogue. The output may have room for more rows than MR (MRO >= MR).
template <class Arch, int MR, int NV, int KS = 1, class Rows, int MRO>
EDGENN_INLINE void gemm_tile(const Rows& rows, int mr, int nc, int taps, int kc, const float* EDGENN_RESTRICT w,
                             const TileOutput<MRO>& out) {
  static_assert(MR <= MRO, "gemm_tile: more rows than the output has pointers");
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  V acc[KS][MR][NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) {
    const V b = V::load(w + j * VL);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      acc[0][i][j] = b;
#pragma GCC unroll 8
      for (int s = 1; s < KS; ++s) acc[s][i][j] = V::zero();
    }
  }
  w += NV * VL;
  for (int t = 0; t < taps; ++t) {
    const float* a[MR];
    rows(t, a);
    int k = 0;
    if constexpr (KS > 1) {
      for (; k + KS <= kc; k += KS) {
#pragma GCC unroll 8
        for (int s = 0; s < KS; ++s) {
          V wv[NV];
#pragma GCC unroll 4
          for (int j = 0; j < NV; ++j) wv[j] = V::load(w + (s * NV + j) * VL);
#pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) {
            const V av = V::broadcast(a[i][k + s]);
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) acc[s][i][j] = fma(av, wv[j], acc[s][i][j]);
          }
        }
        w += KS * NV * VL;
      }
    }
    for (; k < kc; ++k) {
      V wv[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) wv[j] = V::load(w + j * VL);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const V av = V::broadcast(a[i][k]);
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[0][i][j] = fma(av, wv[j], acc[0][i][j]);
      }
      w += NV * VL;
    }
  }
#pragma GCC unroll 8
  for (int s = 1; s < KS; ++s)
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[0][i][j] = acc[0][i][j] + acc[s][i][j];
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
      V v = acc[0][i][j];
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

// A tile of mr <= MR rows on the narrowest kernel that covers them (SIMD backends; the
// scalar backend, which matters for code size on microcontrollers, always runs MR rows):
// up to half a tile on the half-height kernel, else the full one. Every row is reduced in
// the same order whichever kernel runs it, so an output does not depend on where its row
// falls in the tiling (tiled and single-device runs agree to the last bit). SplitK (only
// for GEMMs of one or two rows, e.g. a batch-1 fully connected layer) runs 1 or 2 rows with
// the reduction split over about 8 accumulators, which changes the summation order.
// `rows` must provide MR valid row pointers.
template <class Arch, int MR, int NV, bool SplitK = false, class Rows>
EDGENN_INLINE void gemm_tile_rows(const Rows& rows, int mr, int nc, int taps, int kc, const float* w,
                                  const TileOutput<MR>& out) {
  if constexpr (simd::Vec<Arch>::size > 1 && MR > 2) {
    if (mr < MR) {
      if constexpr (SplitK) {
        if (mr == 1) {
          gemm_tile<Arch, 1, NV, (NV >= 4 ? 2 : NV == 1 ? 8 : 4)>(rows, mr, nc, taps, kc, w, out);
          return;
        }
        if (mr == 2) {
          gemm_tile<Arch, 2, NV, (NV >= 3 ? 1 : NV == 2 ? 2 : 4)>(rows, mr, nc, taps, kc, w, out);
          return;
        }
      }
      constexpr int HALF = (MR + 1) / 2;
      if (mr <= HALF) {
        gemm_tile<Arch, HALF, NV>(rows, mr, nc, taps, kc, w, out);
        return;
      }
    }
  }
  gemm_tile<Arch, MR, NV>(rows, mr, nc, taps, kc, w, out);
}

// gemm_tile_rows as a call of its own: one out-of-line copy of the microkernels per row
// provider (row providers fill a tile in one place and flush the partial tile in another),
// and GCC allocates the microkernel's registers on its own: inlined into a tile loop it
// spills the weight vectors to the stack.
template <class Arch, int MR, int NV, bool SplitK = false, class Rows>
EDGENN_NOINLINE void gemm_tile_call(const Rows& rows, int mr, int nc, int taps, int kc, const float* w,
                                    const TileOutput<MR>& out) {
  gemm_tile_rows<Arch, MR, NV, SplitK>(rows, mr, nc, taps, kc, w, out);
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
  template <int N>
  EDGENN_INLINE void operator()(int, const float* (&a)[N]) const {
    static_assert(N <= MR, "PointerRows: too few rows");
    for (int i = 0; i < N; ++i) a[i] = p[i];
  }
};

// Rows as one base pointer per tile row plus a per-tap offset shared by all rows: the
// windows of a convolution that lie inside the input (no bounds checks), and plain GEMM
// (one tap, offset 0).
template <int MR>
struct OffsetRows {
  const float* base[MR];
  const index_t* off;  // [taps]
  template <int N>
  EDGENN_INLINE void operator()(int t, const float* (&a)[N]) const {
    static_assert(N <= MR, "OffsetRows: too few rows");
    const index_t o = off[t];
    for (int i = 0; i < N; ++i) a[i] = base[i] + o;
  }
};

// Rows of A (or output rows of a convolution, `row_floats` input floats each) per cache
// block when `panels` weight panels of `panel_floats` each run over `rows` rows. Panels
// are the outer loop within a block: one panel stays in cache while the block's rows
// stream through it, and the block (about 192 KB of input) stays in the L2 cache for the
// next panel. Blocking only pays when there is more than one panel and the panels
// themselves fit the L2 cache beside the block (up to about 512 KB); otherwise one block.
inline int cache_block_rows(int panels, index_t panel_floats, index_t row_floats, int rows) {
  constexpr index_t block_floats = 192 * 1024 / sizeof(float);
  constexpr index_t weight_floats = 512 * 1024 / sizeof(float);
  if (panels <= 1 || panels * panel_floats > weight_floats || row_floats <= 0) return rows > 0 ? rows : 1;
  const index_t r = block_floats / row_floats;
  return int(r < 1 ? 1 : r < rows ? r : rows);
}

// Dense GEMM over a full matrix A [m][k] (row stride lda) into C [m][cols] (row stride ldc),
// with optional residual R (row stride ldr; may equal C for accumulation), panels
// [p0, p1) of group g, all of them NV vectors wide. SplitK: see gemm_tile_rows.
template <class Arch, int NV, bool SplitK = false>
void gemm_panels(int m, const float* a, index_t lda, const PackedWeights& pw, int g, int p0, int p1, float* c,
                 index_t ldc, const float* r, index_t ldr, Clamp clamp) {
  constexpr int MR = PanelConfig<Arch>::rows_for(NV);
  const index_t zero_offset[1] = {0};
  int block = cache_block_rows(p1 - p0, pw.panel_floats(), pw.k, m);
  if (block < m) block = int(round_up(block, MR));
  for (int b0 = 0; b0 < m; b0 += block) {
    const int b1 = m - b0 < block ? m : b0 + block;
    for (int p = p0; p < p1; ++p) {
      const float* w = pw.panel(g, p);
      const int n0 = p * pw.nr;
      const int nc = pw.cols - n0 < NV * PanelConfig<Arch>::lanes ? pw.cols - n0 : NV * PanelConfig<Arch>::lanes;
      for (int m0 = b0; m0 < b1; m0 += MR) {
        const int mr = b1 - m0 < MR ? b1 - m0 : MR;
        // Row pointers precomputed once per tile (recomputing a0 + i * lda inside the
        // microkernel costs registers and makes GCC spill the weight vectors).
        OffsetRows<MR> rows;
        rows.off = zero_offset;
        TileOutput<MR> out;
        out.clamp = clamp;
        out.residual = r != nullptr;
        for (int i = 0; i < MR; ++i) {
          const int row = m0 + (i < mr ? i : mr - 1);
          rows.base[i] = a + row * lda;
          out.c[i] = c + row * ldc + n0;
          out.r[i] = r ? r + row * ldr + n0 : nullptr;
        }
        gemm_tile_call<Arch, MR, NV, SplitK>(rows, mr, nc, 1, pw.k, w, out);
      }
    }
  }
}

// Calls f(std::integral_constant<int, NV>{}, p0, p1) for the runs [p0, p1) of panels of
// equal width of packed weights: the full panels, then the last one when it is narrower.
template <class Arch, class F>
EDGENN_INLINE void for_panel_widths(const PackedWeights& pw, F&& f) {
  using PC = PanelConfig<Arch>;
  auto run = [&](int nv, int p0, int p1) {
    if (p0 >= p1) return;
    switch (nv) {
      case 1: f(std::integral_constant<int, 1>{}, p0, p1); break;
      case 2: f(std::integral_constant<int, 2>{}, p0, p1); break;
      case 3:
        if constexpr (PC::registers >= 32 && PC::lanes > 1) f(std::integral_constant<int, 3>{}, p0, p1);
        break;
      default:
        if constexpr (PC::registers >= 32 || PC::lanes == 1) f(std::integral_constant<int, 4>{}, p0, p1);
        break;
    }
  };
  if (pw.nv_last == pw.nv) {
    run(pw.nv, 0, pw.panels);
  } else {
    run(pw.nv, 0, pw.panels - 1);
    run(pw.nv_last, pw.panels - 1, pw.panels);
  }
}

// True when `pw` has the layout packed_layout<Arch> gives its shape (i.e. it was packed
// for this architecture).
template <class Arch>
constexpr bool packed_for(const PackedWeights& pw) {
  const PackedWeights e = packed_layout<Arch>(pw.k, pw.cols, pw.groups);
  return pw.nv == e.nv && pw.nr == e.nr && pw.panels == e.panels && pw.nv_last == e.nv_last && pw.nr_last == e.nr_last;
}

// C = clamp(A * W + bias (+ R)) for group g of packed weights. A: m x pw.k.
template <class Arch = simd::default_arch>
void gemm(int m, const float* a, index_t lda, const PackedWeights& pw, int g, float* c, index_t ldc,
          const float* r = nullptr, index_t ldr = 0, Clamp clamp = {}) {
  for_panel_widths<Arch>(pw, [&](auto nv, int p0, int p1) {
    gemm_panels<Arch, decltype(nv)::value>(m, a, lda, pw, g, p0, p1, c, ldc, r, ldr, clamp);
  });
}

}  // namespace edgenn::kernels
