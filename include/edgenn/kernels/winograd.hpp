// Winograd F(4x4, 3x3) convolution for the training step's 3x3, stride-1, "same" layers
// (Lavin & Gray's minimal filtering): each 4x4 block of outputs is computed from a 6x6
// block of input through 36 element-wise products per channel pair instead of 144, so the
// GEMM work is 2.25/9 of the direct convolution's on maps whose side is a multiple of 4
// (7x7 maps cover 8x8: 3.06x fewer multiplies; 28x28: 4x).
//
//   forward        Y = A^T [ (G g G^T) . (B^T d B) ] A            per 4x4 output tile
//   input grad     the same, with the weights flipped and transposed (dX = conv(dY, W'))
//   weight grad    dg = G^T [ sum_tiles (B^T d B) . (A dY A^T) ] G
//
// The point-wise products of all tiles form 36 GEMMs (one per point of the 6x6 transform
// domain) on the engine's microkernel, over chunks of tiles sized to stay in the L2 cache.
// A chunk's transforms are stored tile by tile ([tile][point][channel]): the transforms read
// and write one tile's 36 vectors contiguously, and the GEMMs step over rows 36 points apart
// (strided rows cost the GEMMs nothing; 36 strided streams per tile slowed the transforms).
// Tiles are per batch item, so an output does not depend on how the batch is split over
// threads. The transforms add rounding: results agree with the exact convolution to a few
// 1e-6 of the terms' magnitude (tests/test_winograd.cpp), not bit for bit with the direct
// kernels, which is why the inference and cluster-tiling paths keep those.
#pragma once

#include <algorithm>

#include "edgenn/core/tensor.hpp"
#include "edgenn/core/workspace.hpp"
#include "edgenn/kernels/conv2d.hpp"
#include "edgenn/kernels/gemm.hpp"

namespace edgenn::kernels {

namespace winograd {
constexpr int kTile = 4;                 // outputs per tile side
constexpr int kIn = 6;                   // inputs per tile side
constexpr int kPoints = kIn * kIn;       // GEMMs per convolution
// Floats of one chunk's transformed inputs and outputs (640 KB): the chunk stays in the L2
// cache between the transforms and the GEMMs.
constexpr index_t kChunkFloats = 160 * 1024;
}  // namespace winograd

// The layers this path computes: 3x3 kernel, stride 1, no dilation, padding 1 on every
// side, one group.
constexpr bool winograd_applies(const Conv2dParams& p) {
  return p.kernel_h == 3 && p.kernel_w == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 &&
         p.dilation_w == 1 && p.pad_top == 1 && p.pad_left == 1 && p.pad_bottom == 1 && p.pad_right == 1 &&
         p.groups == 1;
}

// Which convolution the packed weights compute from OHWI weights w[cout][3][3][cin].
enum class WinogradPass {
  forward,     // cin -> cout with w
  input_grad,  // cout -> cin with w flipped in space and transposed (the input gradient)
};

// Floats of packed transformed weights for a convolution from `k_in` to `k_out` channels.
template <class Arch = simd::default_arch>
constexpr index_t winograd_packed_floats(int k_in, int k_out) {
  return packed_floats<Arch>(k_in, k_out, winograd::kPoints);
}
// The 36 transformed k_in x k_out matrices (the weight gradient's point-wise sums).
constexpr index_t winograd_transform_floats(int cin, int cout) {
  return index_t(winograd::kPoints) * cin * cout;
}

namespace detail {

// u = G g for 3 vectors g[k * s], u[i * us] (i = 0..5): the weight transform.
template <class V>
EDGENN_INLINE void winograd_g(const V* g, int s, V* u, int us) {
  const V g0 = g[0], g1 = g[s], g2 = g[2 * s];
  const V q = V::broadcast(0.25f), sixth = V::broadcast(1.0f / 6), msixth = V::broadcast(-1.0f / 6),
          twelfth = V::broadcast(1.0f / 12);
  const V even = g0 + g2, g0q = g0 * q;  // (g0 / 24 + g2 / 6) = (g0 / 4 + g2) / 6
  u[0] = g0q;
  u[us] = (even + g1) * msixth;
  u[2 * us] = (g1 - even) * sixth;
  const V e = (g0q + g2) * sixth, o = g1 * twelfth;
  u[3 * us] = e + o;
  u[4 * us] = e - o;
  u[5 * us] = g2;
}

// g = G^T s for 6 vectors s[k * ss], g[i * gs] (i = 0..2): the weight gradient's output.
template <class V>
EDGENN_INLINE void winograd_gt(const V* s, int ss, V* g, int gs) {
  const V q = V::broadcast(0.25f), sixth = V::broadcast(1.0f / 6), msixth = V::broadcast(-1.0f / 6),
          twelfth = V::broadcast(1.0f / 12), t24 = V::broadcast(1.0f / 24);
  const V p12 = s[ss] + s[2 * ss], m12 = s[2 * ss] - s[ss];
  const V p34 = s[3 * ss] + s[4 * ss], m34 = s[3 * ss] - s[4 * ss];
  g[0] = fma(s[0], q, fma(p12, msixth, p34 * t24));
  g[gs] = fma(m12, sixth, m34 * twelfth);
  g[2 * gs] = fma(p34 - p12, sixth, s[5 * ss]);
}

// r = B^T d for 6 vectors d[k * s] (k = 0..5), r[i * rs].
template <class V>
EDGENN_INLINE void winograd_bt(const V* d, int s, V* r, int rs) {
  const V four = V::broadcast(4.0f), five = V::broadcast(5.0f), two = V::broadcast(2.0f);
  const V d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
  r[0] = fma(four, d0, d4) - five * d2;
  const V a = d4 - four * d2, b = d3 - four * d1;
  r[rs] = a + b;
  r[2 * rs] = a - b;
  const V c = d4 - d2, e = two * (d3 - d1);
  r[3 * rs] = c + e;
  r[4 * rs] = c - e;
  r[5 * rs] = fma(four, d1, d5) - five * d3;
}

// o = A^T m for 6 vectors m[k * s], o[i * os] (i = 0..3).
template <class V>
EDGENN_INLINE void winograd_at(const V* m, int s, V* o, int os) {
  const V two = V::broadcast(2.0f), four = V::broadcast(4.0f), eight = V::broadcast(8.0f);
  const V p12 = m[s] + m[2 * s], m12 = m[s] - m[2 * s];
  const V p34 = m[3 * s] + m[4 * s], m34 = m[3 * s] - m[4 * s];
  o[0] = m[0] + p12 + p34;
  o[os] = fma(two, m34, m12);
  o[2 * os] = fma(four, p34, p12);
  o[3 * os] = fma(eight, m34, m12) + m[5 * s];
}

// z = A dy for 4 vectors dy[k * s], z[i * zs] (i = 0..5): the weight gradient's dY transform.
template <class V>
EDGENN_INLINE void winograd_a(const V* dy, int s, V* z, int zs) {
  const V two = V::broadcast(2.0f), four = V::broadcast(4.0f), eight = V::broadcast(8.0f);
  const V d0 = dy[0], d1 = dy[s], d2 = dy[2 * s], d3 = dy[3 * s];
  const V e = d0 + d2, o = d1 + d3;
  const V e4 = fma(four, d2, d0), o4 = fma(eight, d3, two * d1);
  z[0] = d0;
  z[zs] = e + o;
  z[2 * zs] = e - o;
  z[3 * zs] = e4 + o4;
  z[4 * zs] = e4 - o4;
  z[5 * zs] = d3;
}

// Tiles per chunk for k_in -> k_out channels (the chunk's transforms fill kChunkFloats).
constexpr index_t winograd_chunk_tiles(int k_in, int k_out) {
  return std::max<index_t>(1, winograd::kChunkFloats / (index_t(winograd::kPoints) * (k_in + k_out)));
}

// Tiles of a map, their chunks, and where a tile lies.
struct WinogradTiles {
  int ty = 0, tx = 0;   // tiles per column / row of one batch item
  index_t total = 0;    // over the batch
  int chunk = 1;        // tiles per chunk
  struct Origin {
    int b, y0, x0;  // batch item, first output row and column
  };
  Origin origin(index_t id) const {
    const index_t per_item = index_t(ty) * tx;
    const int r = int(id % per_item);
    return Origin{int(id / per_item), (r / tx) * winograd::kTile, (r % tx) * winograd::kTile};
  }
};

inline WinogradTiles winograd_tiles(Shape s, int k_in, int k_out) {
  WinogradTiles t;
  t.ty = int(div_up(s.h, winograd::kTile));
  t.tx = int(div_up(s.w, winograd::kTile));
  t.total = index_t(s.n) * t.ty * t.tx;
  t.chunk = int(winograd_chunk_tiles(k_in, k_out));
  return t;
}

// The 36 transformed input vectors of one tile (channels [c, c + VL), `valid` of them
// real), stored at v[point * ld].
template <class Arch, bool Interior>
EDGENN_INLINE void winograd_input_tile(ConstTensor in, int b, int y0, int x0, int c, int valid, float* v,
                                       index_t ld) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  constexpr int N = winograd::kIn;
  // Column by column into registers (B^T d), then row by row straight to v: the only
  // buffer is t, where the rows are gathered.
  V t[N * N];
#pragma GCC unroll 6
  for (int j = 0; j < N; ++j) {
    const int ix = x0 + j;
    const bool col_in = Interior || (ix >= 0 && ix < in.w());
    V d[N], r[N];
#pragma GCC unroll 6
    for (int i = 0; i < N; ++i) {
      const int iy = y0 + i;
      if (Interior || (col_in && iy >= 0 && iy < in.h())) {
        const float* p = in.pixel(b, iy, ix) + c;
        d[i] = valid >= VL ? V::load(p) : V::load_partial(p, valid);
      } else {
        d[i] = V::zero();
      }
    }
    winograd_bt(d, 1, r, 1);
#pragma GCC unroll 6
    for (int i = 0; i < N; ++i) t[i * N + j] = r[i];
  }
#pragma GCC unroll 6
  for (int i = 0; i < N; ++i) {
    V r[N];
    winograd_bt(t + i * N, 1, r, 1);  // rows: (B^T d) B
#pragma GCC unroll 6
    for (int k = 0; k < N; ++k) {
      float* o = v + (i * N + k) * ld;
      if (valid >= VL) {
        r[k].store(o);
      } else {
        r[k].store_partial(o, valid);
      }
    }
  }
}

// All channels of one tile (output origin y0, x0): v[point * ld + channel].
template <class Arch>
EDGENN_INLINE void winograd_input_channels(ConstTensor in, int b, int y0, int x0, float* v, index_t ld) {
  constexpr int VL = simd::Vec<Arch>::size;
  // Tiles whose 6x6 window lies inside the map skip the bounds checks.
  const bool interior = y0 >= 1 && x0 >= 1 && y0 + 5 <= in.h() && x0 + 5 <= in.w();
  for (int c = 0; c < in.c(); c += VL) {
    if (interior) {
      winograd_input_tile<Arch, true>(in, b, y0 - 1, x0 - 1, c, std::min(VL, in.c() - c), v + c, ld);
    } else {
      winograd_input_tile<Arch, false>(in, b, y0 - 1, x0 - 1, c, std::min(VL, in.c() - c), v + c, ld);
    }
  }
}

}  // namespace detail

// Floats of scratch pack_winograd_weights needs (the forward's weights as HWIO).
constexpr index_t winograd_pack_scratch_floats(int cin, int cout) { return index_t(9) * cin * cout; }

// Pack the transformed weights G g G^T of a 3x3 layer (OHWI w[cout][3][3][cin]) for `pass`
// into `dst` (winograd_packed_floats(k_in, k_out) floats; k_in, k_out = cin, cout for the
// forward, cout, cin for the input gradient) as 36 groups of k_in x k_out GEMM weights.
// `scratch`: winograd_pack_scratch_floats floats (used by the forward).
template <class Arch = simd::default_arch>
PackedWeights pack_winograd_weights(int cin, int cout, const float* w, WinogradPass pass, float* scratch,
                                    float* dst) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size, P = winograd::kPoints;
  const bool grad = pass == WinogradPass::input_grad;
  const int k_in = grad ? cout : cin, k_out = grad ? cin : cout;
  PackedWeights pw = packed_layout<Arch>(k_in, k_out, P);
  pw.data = dst;
  std::fill_n(dst, std::size_t(pw.total_floats()), 0.0f);  // bias rows and padding columns
  // Source element (tap, k, n), contiguous in n (the packed columns), so the transform runs
  // on vectors of columns. Forward: HWIO (tap, ci, co). Input gradient: OHWI read as
  // (tap, co, ci) with the tap turned by 180 degrees (the gradient correlates with it).
  const float* src = w;
  index_t tap_stride = cin, row_stride = index_t(9) * cin;
  if (!grad) {
    for (int co = 0; co < cout; ++co)
      for (int t = 0; t < 9; ++t)
        for (int ci = 0; ci < cin; ++ci) scratch[(index_t(t) * cin + ci) * cout + co] = w[(index_t(co) * 9 + t) * cin + ci];
    src = scratch;
    tap_stride = index_t(cin) * cout;
    row_stride = cout;
  }
  for (int k = 0; k < k_in; ++k) {
    for (int n0 = 0; n0 < k_out; n0 += VL) {
      const int valid = std::min(VL, k_out - n0);
      V g[9], rows[3 * 6], u[P];
      for (int t = 0; t < 9; ++t) {
        const float* p = src + k * row_stride + (grad ? 8 - t : t) * tap_stride + n0;
        g[t] = valid >= VL ? V::load(p) : V::load_partial(p, valid);
      }
      for (int ky = 0; ky < 3; ++ky) detail::winograd_g(g + ky * 3, 1, rows + ky * 6, 1);  // rows: g G^T
      for (int j = 0; j < 6; ++j) detail::winograd_g(rows + j, 6, u + j, 6);              // columns: G (g G^T)
      const int q = n0 / pw.nr;
      for (int p = 0; p < P; ++p) {
        float* o = const_cast<float*>(pw.panel(p, q)) + index_t(pw.panel_columns(q)) * (1 + k) + (n0 - q * pw.nr);
        if (valid >= VL) {
          u[p].store(o);
        } else {
          u[p].store_partial(o, valid);
        }
      }
    }
  }
  return pw;
}

// Workspace of winograd_conv3x3 and winograd_weight_grad for `k_in` -> `k_out` channels.
constexpr std::size_t winograd_workspace_bytes(int k_in, int k_out) {
  const index_t chunk = detail::winograd_chunk_tiles(k_in, k_out);
  return aligned_bytes<float>(std::size_t(chunk * winograd::kPoints * k_in)) +
         aligned_bytes<float>(std::size_t(chunk * winograd::kPoints * k_out));
}

// out (=, or += with accumulate) conv3x3(in, packed weights), stride 1, padding 1, no bias.
//   in: N x H x W x k_in, out: N x H x W x k_out (views), pw from pack_winograd_weights.
template <class Arch = simd::default_arch>
Status winograd_conv3x3(ConstTensor in, const PackedWeights& pw, Tensor out, Workspace& ws, bool accumulate) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  constexpr int N = winograd::kIn, T4 = winograd::kTile, P = winograd::kPoints;
  const int k_in = in.c(), k_out = out.c();
  EDGENN_CHECK(pw.data && pw.groups == P && pw.k == k_in && pw.cols == k_out, Error::shape_mismatch,
               "winograd_conv3x3: packed weights do not match the channels");
  EDGENN_CHECK(packed_for<Arch>(pw), Error::invalid_argument,
               "winograd_conv3x3: weights were packed for another SIMD architecture");
  EDGENN_CHECK(in.n() == out.n() && in.h() == out.h() && in.w() == out.w(), Error::shape_mismatch,
               "winograd_conv3x3: output map differs from the input map (stride 1, padding 1)");
  WorkspaceScope scope(ws);
  const detail::WinogradTiles tiles = detail::winograd_tiles(in.shape, k_in, k_out);
  float* vbuf = ws.take<float>(std::size_t(index_t(P) * tiles.chunk * k_in));
  float* mbuf = ws.take<float>(std::size_t(index_t(P) * tiles.chunk * k_out));
  EDGENN_TRY(ws.status());
  if (ws.measuring() || tiles.total == 0) return Status::ok();
  for (index_t t0 = 0; t0 < tiles.total; t0 += tiles.chunk) {
    const int nt = int(std::min<index_t>(tiles.chunk, tiles.total - t0));
    // Transformed inputs: vbuf[tile][point][k_in].
    for (int t = 0; t < nt; ++t) {
      const auto o = tiles.origin(t0 + t);
      detail::winograd_input_channels<Arch>(in, o.b, o.y0, o.x0, vbuf + index_t(t) * P * k_in, k_in);
    }
    // One GEMM per point: mbuf[.][point] = vbuf[.][point] x U[point].
    for (int p = 0; p < P; ++p) {
      const float* a = vbuf + index_t(p) * k_in;
      float* c = mbuf + index_t(p) * k_out;
      for_panel_widths<Arch>(pw, [&](auto nv, int p0, int p1) {
        gemm_panels<Arch, decltype(nv)::value>(nt, a, index_t(P) * k_in, pw, p, p0, p1, c, index_t(P) * k_out,
                                               nullptr, 0, Clamp{});
      });
    }
    // Output transform of every tile, clipped to the map.
    for (int t = 0; t < nt; ++t) {
      const auto [b, y0, x0] = tiles.origin(t0 + t);
      const int hy = std::min(T4, out.h() - y0), hx = std::min(T4, out.w() - x0);
      const index_t ld = k_out;
      for (int c = 0; c < k_out; c += VL) {
        const int valid = std::min(VL, k_out - c);
        const float* m = mbuf + index_t(t) * P * k_out + c;
        // Column by column from mbuf into registers (A^T m), then row by row to the map.
        V cols[T4 * N];
#pragma GCC unroll 6
        for (int j = 0; j < N; ++j) {
          V mv[N], r[T4];
#pragma GCC unroll 6
          for (int i = 0; i < N; ++i) {
            const float* src = m + (i * N + j) * ld;
            mv[i] = valid >= VL ? V::load(src) : V::load_partial(src, valid);
          }
          detail::winograd_at(mv, 1, r, 1);
#pragma GCC unroll 4
          for (int i = 0; i < T4; ++i) cols[i * N + j] = r[i];
        }
        for (int i = 0; i < hy; ++i) {
          V o[T4];
          detail::winograd_at(cols + i * N, 1, o, 1);  // rows: (A^T m) A
          for (int j = 0; j < hx; ++j) {
            float* dst = out.pixel(b, y0 + i, x0 + j) + c;
            V v = o[j];
            if (valid >= VL) {
              if (accumulate) v = v + V::load(dst);
              v.store(dst);
            } else {
              if (accumulate) v = v + V::load_partial(dst, valid);
              v.store_partial(dst, valid);
            }
          }
        }
      }
    }
  }
  return Status::ok();
}

namespace detail {

// The rank-update sums' register tile: NV vectors of columns (the fewest that hold the
// columns, so 16 or 32 input channels do not multiply zero vectors) by as many rows as the
// register file holds accumulators for. The broadcast rows are read at fixed offsets from
// one pointer, so the row count is not capped by the general registers.
template <class Arch>
struct WinogradSumTile {
  static constexpr int lanes = simd::Vec<Arch>::size;
  static constexpr bool wide = simd::Vec<Arch>::registers >= 32;
  static constexpr int vectors(int cols) { return PanelConfig<Arch>::vectors_for(cols); }
  static constexpr int rows(int nv) {
    if (lanes == 1) return 4;
    if (nv == 1) return wide ? 16 : 12;
    if (nv == 2) return wide ? 8 : 6;
    return 6;
  }
  static constexpr int max_rows() { return rows(1); }
};

}  // namespace detail

// Workspace of winograd_weight_grad: the 36 point-wise sums, and one chunk of transformed
// inputs and output gradients (and the rows the sums' last register tile reads past them).
template <class Arch = simd::default_arch>
constexpr std::size_t winograd_weight_grad_workspace_bytes(int cin, int cout) {
  return aligned_bytes<float>(std::size_t(winograd_transform_floats(cin, cout))) + winograd_workspace_bytes(cin, cout) +
         aligned_bytes<float>(std::size_t(detail::WinogradSumTile<Arch>::max_rows()));
}

namespace detail {

// s[i][..nc) (+)= sum_t z[t][i] * v[t][..nc) for rows i < mr: a rank-nt update of MR rows of
// one point's sums, both operands as the transforms wrote them (tile-major), so neither is
// transposed or packed. z rows are ldz apart, v rows ldv, s rows lds. Rows mr..MR-1 of z are
// read (the next point's or tile's values, or the zeroed tail of the buffer) and their sums
// dropped.
template <class Arch, int MR, int NV>
EDGENN_NOINLINE void winograd_sum_tile(const float* z, index_t ldz, const float* v, index_t ldv, int nt, float* s,
                                       index_t lds, int mr, int nc, bool accumulate) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = V::zero();
  if (nc >= NV * VL) {
    for (int t = 0; t < nt; ++t) {
      V wv[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) wv[j] = V::load(v + j * VL);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const V a = V::broadcast(z[i]);
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = fma(a, wv[j], acc[i][j]);
      }
      z += ldz;
      v += ldv;
    }
  } else {
    for (int t = 0; t < nt; ++t) {
      V wv[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        const int valid = nc - j * VL;
        wv[j] = valid >= VL ? V::load(v + j * VL) : V::load_partial(v + j * VL, valid > 0 ? valid : 0);
      }
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const V a = V::broadcast(z[i]);
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = fma(a, wv[j], acc[i][j]);
      }
      z += ldz;
      v += ldv;
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= mr) break;
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      const int valid = nc - j * VL;
      if (valid <= 0) break;
      float* o = s + i * lds + j * VL;
      V r = acc[i][j];
      if (valid >= VL) {
        if (accumulate) r = r + V::load(o);
        r.store(o);
      } else {
        if (accumulate) r = r + V::load_partial(o, valid);
        r.store_partial(o, valid);
      }
    }
  }
}

template <class Arch, int NV>
void winograd_sum_panel(const float* z, int rows, index_t ldz, const float* v, int cols, index_t ldv, int nt,
                        float* sums, int nc, bool accumulate) {
  constexpr int MR = WinogradSumTile<Arch>::rows(NV);
  for (int m0 = 0; m0 < rows; m0 += MR)
    winograd_sum_tile<Arch, MR, NV>(z + m0, ldz, v, ldv, nt, sums + index_t(m0) * cols, cols, std::min(MR, rows - m0),
                                    nc, accumulate);
}

// sums[rows][cols] (+)= z^T v over nt tiles (z: nt x rows, rows ldz apart; v: nt x cols,
// rows ldv apart; z readable WinogradSumTile::max_rows() floats past its end). Column panels
// of the fewest vectors that hold them.
template <class Arch>
void winograd_sum(const float* z, int rows, index_t ldz, const float* v, int cols, index_t ldv, int nt, float* sums,
                  bool accumulate) {
  using T = WinogradSumTile<Arch>;
  const int nv = T::vectors(cols);
  const int nr = nv * T::lanes;
  for (int n0 = 0; n0 < cols; n0 += nr) {
    const int nc = std::min(nr, cols - n0);
    const int need = int(div_up(nc, T::lanes));  // the last panel may need fewer vectors (need <= nv)
    const int pv = need <= 1 ? 1 : need <= 2 ? 2 : 4;
    const float* vp = v + n0;
    float* sp = sums + n0;
    if (pv >= 4) {
      winograd_sum_panel<Arch, 4>(z, rows, ldz, vp, cols, ldv, nt, sp, nc, accumulate);
    } else if (pv >= 2) {
      winograd_sum_panel<Arch, 2>(z, rows, ldz, vp, cols, ldv, nt, sp, nc, accumulate);
    } else {
      winograd_sum_panel<Arch, 1>(z, rows, ldz, vp, cols, ldv, nt, sp, nc, accumulate);
    }
  }
}

}  // namespace detail

// dW (OHWI [cout][3][3][cin]) and db ([cout], may be null) of a 3x3, stride-1, padding-1
// convolution from its input x (N x H x W x cin) and output gradient dy (N x H x W x cout):
// written, or added to with `accumulate`.
template <class Arch = simd::default_arch>
Status winograd_weight_grad(ConstTensor x, ConstTensor dy, float* dw, float* db, Workspace& ws,
                            bool accumulate = false) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  constexpr int N = winograd::kIn, T4 = winograd::kTile, P = winograd::kPoints;
  const int cin = x.c(), cout = dy.c();
  EDGENN_CHECK(x.n() == dy.n() && x.h() == dy.h() && x.w() == dy.w(), Error::shape_mismatch,
               "winograd_weight_grad: output gradient map differs from the input map (stride 1, padding 1)");
  WorkspaceScope scope(ws);
  const detail::WinogradTiles tiles = detail::winograd_tiles(x.shape, cin, cout);
  float* sums = ws.take<float>(std::size_t(winograd_transform_floats(cin, cout)));  // [point][cout][cin]
  float* vbuf = ws.take<float>(std::size_t(index_t(P) * tiles.chunk * cin));       // [point][tile][cin]
  constexpr int tail = detail::WinogradSumTile<Arch>::max_rows();
  float* zbuf = ws.take<float>(std::size_t(index_t(P) * tiles.chunk * cout + tail));  // [point][tile][cout], tail
  EDGENN_TRY(ws.status());
  if (ws.measuring()) return Status::ok();
  for (index_t t0 = 0; t0 < tiles.total; t0 += tiles.chunk) {
    const int nt = int(std::min<index_t>(tiles.chunk, tiles.total - t0));
    // The sums' last register tile of rows reads past a point's rows into the next point's
    // (real values) or, after the last point, into these floats; zero keeps garbage (and slow
    // denormals) out of the dropped sums.
    std::fill_n(zbuf + index_t(P) * nt * cout, tail, 0.0f);
    for (int t = 0; t < nt; ++t) {
      const auto [b, y0, x0] = tiles.origin(t0 + t);
      detail::winograd_input_channels<Arch>(x, b, y0, x0, vbuf + index_t(t) * P * cin, cin);
      // Output-gradient tile (zero past the map): z = A dY A^T.
      const int hy = std::min(T4, dy.h() - y0), hx = std::min(T4, dy.w() - x0);
      for (int c = 0; c < cout; c += VL) {
        const int valid = std::min(VL, cout - c);
        // Column by column into registers (A dY), then row by row straight to zbuf.
        V cols[N * T4];
#pragma GCC unroll 4
        for (int j = 0; j < T4; ++j) {
          V d[T4], r[N];
#pragma GCC unroll 4
          for (int i = 0; i < T4; ++i) {
            if (i < hy && j < hx) {
              const float* src = dy.pixel(b, y0 + i, x0 + j) + c;
              d[i] = valid >= VL ? V::load(src) : V::load_partial(src, valid);
            } else {
              d[i] = V::zero();
            }
          }
          detail::winograd_a(d, 1, r, 1);
#pragma GCC unroll 6
          for (int i = 0; i < N; ++i) cols[i * T4 + j] = r[i];
        }
        float* dst = zbuf + index_t(t) * P * cout + c;
#pragma GCC unroll 6
        for (int i = 0; i < N; ++i) {
          V r[N];
          detail::winograd_a(cols + i * T4, 1, r, 1);  // rows: (A dY) A^T
#pragma GCC unroll 6
          for (int k = 0; k < N; ++k) {
            float* o = dst + (i * N + k) * index_t(cout);
            if (valid >= VL) {
              r[k].store(o);
            } else {
              r[k].store_partial(o, valid);
            }
          }
        }
      }
    }
    // sums[point] (+)= Z[point]^T x V[point], over the chunk's tiles.
    for (int p = 0; p < P; ++p)
      detail::winograd_sum<Arch>(zbuf + index_t(p) * cout, cout, index_t(P) * cout, vbuf + index_t(p) * cin, cin,
                                 index_t(P) * cin, nt, sums + index_t(p) * cout * cin, t0 > 0);
  }
  if (tiles.total == 0) std::fill_n(sums, std::size_t(winograd_transform_floats(cin, cout)), 0.0f);
  // dW = G^T S G per channel pair, on vectors of input channels.
  for (int co = 0; co < cout; ++co) {
    for (int c = 0; c < cin; c += VL) {
      const int valid = std::min(VL, cin - c);
      V sv[P], rows[6 * 3], g[9];
      for (int p = 0; p < P; ++p) {
        const float* src = sums + (index_t(p) * cout + co) * cin + c;
        sv[p] = valid >= VL ? V::load(src) : V::load_partial(src, valid);
      }
      for (int i = 0; i < N; ++i) detail::winograd_gt(sv + i * N, 1, rows + i * 3, 1);  // rows: S G
      for (int kx = 0; kx < 3; ++kx) detail::winograd_gt(rows + kx, 3, g + kx, 3);     // columns: G^T (S G)
      for (int t = 0; t < 9; ++t) {
        float* o = dw + (index_t(co) * 9 + t) * cin + c;
        V v = g[t];
        if (accumulate) v = v + (valid >= VL ? V::load(o) : V::load_partial(o, valid));
        if (valid >= VL) {
          v.store(o);
        } else {
          v.store_partial(o, valid);
        }
      }
    }
  }
  if (db) {
    for (int co = 0; co < cout; ++co) {
      double s = 0;
      for (int b = 0; b < dy.n(); ++b)
        for (int yy = 0; yy < dy.h(); ++yy)
          for (int xx = 0; xx < dy.w(); ++xx) s += dy.at(b, yy, xx, co);
      db[co] = accumulate ? db[co] + float(s) : float(s);
    }
  }
  return Status::ok();
}

}  // namespace edgenn::kernels
