// Backward of conv2d (conv2d.hpp): the input gradient dX and the weight and bias gradients
// dW, db, for any kernel size, stride, dilation, (asymmetric) padding and groups.
//
// Forward: Y[b,oy,ox,co] = bias[co] + sum_{ky,kx,ci} W[co][ky][kx][ci] * X[b, oy*sh - pt + ky*dh,
//                                                                       ox*sw - pl + kx*dw, ci]
// (channels within the group of co). p.activation is ignored here: apply the activation's
// backward (elementwise_backward.hpp) to dY first.
//
//  - dX[b,iy,ix,ci] = sum_{ky,kx,co} dY[b,oy,ox,co] * W[co][ky][kx][ci] with oy = (iy + pt - ky*dh)/sh
//    when that divides exactly and lies inside dY. A gather on the forward's microkernel
//    (gemm_tile): rows = input pixels, reduction = (tap, cout), columns = cin, weights packed
//    transposed. Pixels are processed by phase (iy + pt) mod sh, (ix + pl) mod sw: inside one
//    phase the same taps divide for every pixel, so the row provider passes only those
//    (sub-pixel decomposition, no FMAs on zeros for stride > 1) and the weights are packed per
//    phase with only those taps.
//  - dW[co][ky][kx][ci] = sum_{b,oy,ox} dY[b,oy,ox,co] * X[b, iy, ix, ci], db[co] = sum dY: a
//    GEMM with rows = cout, columns = (tap, cin) in OHWI order, reduction = output pixels.
//    When cin/groups is a multiple of the SIMD width (every ResNet layer but the stem), each
//    vector of columns is a plain load from one input pixel, and a dedicated tile walks dY and
//    X in place (direct path: no staging; a tile within one tap walks the in-bounds pixels as
//    one rectangle per batch item). Otherwise chunks of pixels are staged in the
//    workspace (dY transposed to [cout][pixels], the implicit im2col of X packed into panels)
//    and run on gemm_tile (packed path). Either way partial sums are added into dW chunk after
//    chunk in a fixed order that depends only on the shapes (replicas in the cluster runtime
//    compare bit for bit).
//
// Tiles: every function takes an optional TileOrigin placing the views in the layer's global
// coordinates. Positions outside a view count as zero (padding, or a dY that is zero outside
// the map), so the cluster runtime produces dX on a tile from a view of dY covering it, and a
// partial dW from the dY core and the input region it reads (specs/tiled_training.md §3.3).
#pragma once

#include "edgenn/core/tensor.hpp"
#include "edgenn/core/workspace.hpp"
#include "edgenn/kernels/conv2d.hpp"
#include "edgenn/kernels/gemm.hpp"

#include <type_traits>

namespace edgenn::kernels {

// Where a tile's views sit in the layer's global coordinates. The input side (x or dx) view
// starts at global pixel (in_y, in_x), the output side (dy) view at (out_y, out_x). With a
// tile, the views need not cover the whole maps; without one (nullptr), dy must have the
// shape p.output_shape(x) and both views are the whole maps.
struct TileOrigin {
  int in_y = 0, in_x = 0;
  int out_y = 0, out_x = 0;
};

namespace detail {

constexpr int floor_mod(int a, int m) { return ((a % m) + m) % m; }
constexpr int floor_div(int a, int m) { return a >= 0 ? a / m : -((-a + m - 1) / m); }
constexpr int gcd_int(int a, int b) { return b == 0 ? a : gcd_int(b, a % b); }

// Window arithmetic in view-local coordinates: input position = out * stride - pad + k * dilation.
// The pads include the tile offsets, so they may be negative.
struct LocalWindow {
  int kh, kw, sh, sw, dh, dw;
  int pt, pl;
};

inline LocalWindow local_window(const Conv2dParams& p, const TileOrigin* t) {
  LocalWindow w{p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_top, p.pad_left};
  if (t) {
    w.pt = p.pad_top + t->in_y - t->out_y * p.stride_h;
    w.pl = p.pad_left + t->in_x - t->out_x * p.stride_w;
  }
  return w;
}

// The kernel parameters alone (no shapes): what Conv2dParams::validate checks besides shapes.
constexpr Status validate_conv_params(const Conv2dParams& p, const char* who) {
  EDGENN_CHECK(p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0 && p.dilation_h > 0 &&
                   p.dilation_w > 0 && p.groups > 0,
               Error::invalid_argument, who);
  EDGENN_CHECK(p.pad_top >= 0 && p.pad_left >= 0 && p.pad_bottom >= 0 && p.pad_right >= 0, Error::invalid_argument,
               who);
  return Status::ok();
}

// Shapes of a backward call: input side `in` (x or dx), output side `out` (dy).
inline Status validate_conv_backward(const Conv2dParams& p, Shape in, Shape out, const TileOrigin* tile,
                                     const char* who) {
  EDGENN_TRY(validate_conv_params(p, who));
  if (!tile) {
    EDGENN_TRY(p.validate(in, out.c));
    EDGENN_CHECK(out == p.output_shape(in, out.c), Error::shape_mismatch,
                 "conv2d backward: dy does not have the output shape of x (pass a TileOrigin for tiles)");
  } else {
    EDGENN_CHECK(in.valid() && out.valid() && in.n == out.n, Error::shape_mismatch,
                 "conv2d backward: empty views or batch sizes differ");
    EDGENN_CHECK(in.c % p.groups == 0 && out.c % p.groups == 0, Error::shape_mismatch,
                 "conv2d backward: channels not divisible by groups");
  }
  return Status::ok();
}

// Taps of one kernel axis reaching input positions of phase r, i.e. with k * d = r (mod s):
// an arithmetic progression k = first + j * step. For tap j the output offset is
// q0 + j * dq, output = (in + pad - r) / s - (q0 + j * dq).
struct PhaseTaps {
  int first = 0, count = 0, step = 1;
  int q0 = 0, dq = 0;
};

constexpr PhaseTaps phase_taps(int k, int s, int d, int r) {
  PhaseTaps t;
  const int g = gcd_int(s, d);
  t.step = s / g;
  t.dq = d / g;
  for (int kk = 0; kk < k && kk < t.step; ++kk) {
    if ((kk * d - r) % s == 0) {
      t.first = kk;
      t.count = (k - 1 - kk) / t.step + 1;
      t.q0 = (kk * d - r) / s;  // >= 0: kk * d - r > -s and divisible by s
      return t;
    }
  }
  return t;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Input gradient
// ---------------------------------------------------------------------------------------------

// Weights packed for the input gradient: per phase (ry, rx), per group, per panel of NR input
// channels: [bias: NR zeros][tap of the phase (ky-major)][cout/groups][NR]. Packed from the
// forward's OHWI weights once per training step.
struct ConvInputGradWeights {
  const float* data = nullptr;
  int kernel_h = 0, kernel_w = 0, stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int groups = 1;
  int cin_g = 0;   // columns per group (input channels per group)
  int cout_g = 0;  // reduction rows per tap (output channels per group)
  int nv = 1, nr = 1, panels = 0;

  constexpr int phase_tap_count(int ry, int rx) const {
    return detail::phase_taps(kernel_h, stride_h, dilation_h, ry).count *
           detail::phase_taps(kernel_w, stride_w, dilation_w, rx).count;
  }
  constexpr index_t panel_floats(int taps) const { return index_t(nr) * (1 + index_t(taps) * cout_g); }
  constexpr index_t phase_floats(int ry, int rx) const {
    return index_t(groups) * panels * panel_floats(phase_tap_count(ry, rx));
  }
  constexpr index_t phase_offset(int ry, int rx) const {
    index_t off = 0;
    for (int i = 0; i < stride_h * stride_w && i < ry * stride_w + rx; ++i)
      off += phase_floats(i / stride_w, i % stride_w);
    return off;
  }
  constexpr index_t total_floats() const { return phase_offset(stride_h - 1, stride_w - 1) + phase_floats(stride_h - 1, stride_w - 1); }
};

template <class Arch = simd::default_arch>
constexpr ConvInputGradWeights conv_input_grad_layout(const Conv2dParams& p, int cin, int cout) {
  ConvInputGradWeights w;
  w.kernel_h = p.kernel_h;
  w.kernel_w = p.kernel_w;
  w.stride_h = p.stride_h;
  w.stride_w = p.stride_w;
  w.dilation_h = p.dilation_h;
  w.dilation_w = p.dilation_w;
  w.groups = p.groups > 0 ? p.groups : 1;
  w.cin_g = cin / w.groups;
  w.cout_g = cout / w.groups;
  w.nv = PanelConfig<Arch>::vectors_for(w.cin_g);
  w.nr = w.nv * PanelConfig<Arch>::lanes;
  w.panels = int(div_up(w.cin_g, w.nr));
  return w;
}

// Floats needed by pack_conv_input_grad_weights.
template <class Arch = simd::default_arch>
constexpr index_t conv_input_grad_packed_floats(const Conv2dParams& p, int cin, int cout) {
  return conv_input_grad_layout<Arch>(p, cin, cout).total_floats();
}

// Pack OHWI weights ([cout][kh][kw][cin/groups]) for conv2d_backward_input into `dst`
// (conv_input_grad_packed_floats floats).
template <class Arch = simd::default_arch>
ConvInputGradWeights pack_conv_input_grad_weights(const Conv2dParams& p, int cin, int cout, const float* ohwi,
                                                  float* dst) {
  ConvInputGradWeights w = conv_input_grad_layout<Arch>(p, cin, cout);
  w.data = dst;
  const int taps = p.kernel_h * p.kernel_w;
  float* out = dst;
  for (int ry = 0; ry < w.stride_h; ++ry)
    for (int rx = 0; rx < w.stride_w; ++rx) {
      const auto ty = detail::phase_taps(w.kernel_h, w.stride_h, w.dilation_h, ry);
      const auto tx = detail::phase_taps(w.kernel_w, w.stride_w, w.dilation_w, rx);
      for (int g = 0; g < w.groups; ++g)
        for (int pn = 0; pn < w.panels; ++pn) {
          for (int j = 0; j < w.nr; ++j) *out++ = 0.0f;  // no bias in a gradient
          for (int a = 0; a < ty.count; ++a)
            for (int b = 0; b < tx.count; ++b) {
              const int tap = (ty.first + a * ty.step) * w.kernel_w + (tx.first + b * tx.step);
              for (int co = 0; co < w.cout_g; ++co) {
                const float* src = ohwi + (index_t(g * w.cout_g + co) * taps + tap) * w.cin_g;
                for (int j = 0; j < w.nr; ++j) {
                  const int ci = pn * w.nr + j;
                  *out++ = ci < w.cin_g ? src[ci] : 0.0f;
                }
              }
            }
        }
    }
  return w;
}

// Workspace of conv2d_backward_input with packed weights: a zero vector standing in for dY
// outside its view, and the dY offset of each tap of a phase.
constexpr std::size_t conv2d_backward_input_workspace_bytes(const Conv2dParams& p, int cout) {
  return aligned_bytes<float>(std::size_t(cout / (p.groups > 0 ? p.groups : 1))) +
         aligned_bytes<index_t>(std::size_t(p.kernel_h > 0 ? p.kernel_h : 0) * std::size_t(p.kernel_w > 0 ? p.kernel_w : 0));
}

namespace detail {

// Rows of MR input pixels of one phase near the border of dY: for tap t of the phase, the dY
// pixel each input pixel receives from, or the zero vector outside dY. (Pixels whose taps all
// land inside dY take OffsetRows: one base pointer per pixel plus a per-tap offset.)
template <int MR>
struct InputGradRows {
  const float* img[MR];  // dY of each row's batch item, group channel offset applied
  int my[MR], mx[MR];    // (iy + pt - ry) / sh and (ix + pl - rx) / sw of each pixel
  index_t sh, sw;        // dY row and pixel strides
  int OH, OW;
  int ntx;               // taps of the phase along x
  int qy0, dqy, qx0, dqx;
  const float* zero;

  template <int N>
  EDGENN_INLINE void operator()(int t, const float* (&a)[N]) const {
    static_assert(N <= MR, "InputGradRows: too few rows");
    const int ty = t / ntx, tx = t - (t / ntx) * ntx;
    const int qy = qy0 + ty * dqy, qx = qx0 + tx * dqx;
    for (int i = 0; i < N; ++i) {
      const int y = my[i] - qy, x = mx[i] - qx;
      a[i] = (unsigned(y) < unsigned(OH) && unsigned(x) < unsigned(OW)) ? img[i] + y * sh + x * sw : zero;
    }
  }
};

// The pixels of each phase are sorted into two running tiles, as in the forward
// (conv2d_panels): pixels every tap of which lands inside dY (OffsetRows) and the others
// (InputGradRows); a tile runs when it has MR pixels, from any rows and batch items. Every
// pixel is reduced in the same order whichever tile it falls in.
template <class Arch, int MR, int NV>
void conv2d_input_grad_phases(const LocalWindow& lw, ConstTensor dy, const ConvInputGradWeights& w, Tensor dx,
                              bool accumulate, int row0, int row1, const float* zero, index_t* tap_offset) {
  const int W = dx.w();
  for (int ry = 0; ry < lw.sh; ++ry)
    for (int rx = 0; rx < lw.sw; ++rx) {
      const PhaseTaps ty = phase_taps(lw.kh, lw.sh, lw.dh, ry), tx = phase_taps(lw.kw, lw.sw, lw.dw, rx);
      const int ntaps = ty.count * tx.count;
      if (ntaps == 0 && accumulate) continue;  // nothing reaches these pixels
      // Pixels of the phase: rows iy0, iy0 + sh, ... < row1; columns ix0, ix0 + sw, ... < W.
      const int iy0 = row0 + floor_mod(ry - (row0 + lw.pt), lw.sh);
      const int ix0 = floor_mod(rx - lw.pl, lw.sw);
      const int ny = iy0 < row1 ? (row1 - 1 - iy0) / lw.sh + 1 : 0;
      const int nx = ix0 < W ? (W - 1 - ix0) / lw.sw + 1 : 0;
      const int m = ny * nx;
      if (m == 0) continue;
      if (ntaps == 0) {  // no tap reaches these pixels: their gradient is zero
        for (int b = 0; b < dx.n(); ++b)
          for (int py = 0; py < ny; ++py)
            for (int px = 0; px < nx; ++px) {
              float* d = dx.pixel(b, iy0 + py * lw.sh, ix0 + px * lw.sw);
              for (int c = 0; c < dx.c(); ++c) d[c] = 0.0f;
            }
        continue;
      }
      const int qy_max = ty.q0 + (ty.count - 1) * ty.dq, qx_max = tx.q0 + (tx.count - 1) * tx.dq;
      const float* phase_w = w.data + w.phase_offset(ry, rx);
      const index_t panel_floats = w.panel_floats(ntaps);
      for (int t = 0; t < ntaps; ++t) {  // interior pixels: dY offset of each tap of the phase
        const int qy = ty.q0 + (t / tx.count) * ty.dq, qx = tx.q0 + (t % tx.count) * tx.dq;
        tap_offset[t] = -(index_t(qy) * dy.stride_h + index_t(qx) * dy.stride_w);
      }
      for (int g = 0; g < w.groups; ++g)
        for (int pn = 0; pn < w.panels; ++pn) {
          const float* wp = phase_w + (index_t(g) * w.panels + pn) * panel_floats;
          const int n0 = pn * w.nr;
          const int nc = w.cin_g - n0 < w.nr ? w.cin_g - n0 : w.nr;
          const int ch0 = g * w.cin_g + n0;
          InputGradRows<MR> re;
          re.sh = dy.stride_h;
          re.sw = dy.stride_w;
          re.OH = dy.h();
          re.OW = dy.w();
          re.ntx = tx.count;
          re.qy0 = ty.q0;
          re.dqy = ty.dq;
          re.qx0 = tx.q0;
          re.dqx = tx.dq;
          re.zero = zero;
          OffsetRows<MR> ri;
          ri.off = tap_offset;
          TileOutput<MR> oi, oe;
          oi.residual = oe.residual = accumulate;
          int ni = 0, ne = 0;
          for (int b = 0; b < dx.n(); ++b) {
            const float* img = dy.pixel(b, 0, 0) + g * w.cout_g;
            for (int py = 0; py < ny; ++py) {
              const int iy = iy0 + py * lw.sh;
              const int my = (iy + lw.pt - ry) / lw.sh;  // exact division
              const bool row_inside = my - qy_max >= 0 && my - ty.q0 < re.OH;
              float* drow = dx.pixel(b, iy, 0) + ch0;
              for (int px = 0; px < nx; ++px) {
                const int ix = ix0 + px * lw.sw;
                const int mx = (ix + lw.pl - rx) / lw.sw;
                float* c = drow + index_t(ix) * dx.stride_w;
                if (row_inside && mx - qx_max >= 0 && mx - tx.q0 < re.OW) {
                  ri.base[ni] = img + my * re.sh + mx * re.sw;
                  oi.c[ni] = c;
                  oi.r[ni] = c;
                  if (++ni == MR) {
                    gemm_tile_call<Arch, MR, NV>(ri, MR, nc, ntaps, w.cout_g, wp, oi);
                    ni = 0;
                  }
                } else {
                  re.img[ne] = img;
                  re.my[ne] = my;
                  re.mx[ne] = mx;
                  oe.c[ne] = c;
                  oe.r[ne] = c;
                  if (++ne == MR) {
                    gemm_tile_call<Arch, MR, NV>(re, MR, nc, ntaps, w.cout_g, wp, oe);
                    ne = 0;
                  }
                }
              }
            }
          }
          if (ni > 0) {
            pad_tile<MR>(ni, [&](int i, int last) {
              ri.base[i] = ri.base[last];
              oi.c[i] = oi.c[last];
              oi.r[i] = oi.r[last];
            });
            gemm_tile_call<Arch, MR, NV>(ri, ni, nc, ntaps, w.cout_g, wp, oi);
          }
          if (ne > 0) {
            pad_tile<MR>(ne, [&](int i, int last) {
              re.img[i] = re.img[last];
              re.my[i] = re.my[last];
              re.mx[i] = re.mx[last];
              oe.c[i] = oe.c[last];
              oe.r[i] = oe.r[last];
            });
            gemm_tile_call<Arch, MR, NV>(re, ne, nc, ntaps, w.cout_g, wp, oe);
          }
        }
    }
}

}  // namespace detail

// dX = conv2d input gradient of dY (written, or added to dX with `accumulate`).
//   dy: N x OH x OW x Cout, dx: N x H x W x Cin (views; channel slices or tiles)
//   w: pack_conv_input_grad_weights of the forward's OHWI weights, same Arch
//   rows: dx rows [begin, end) to produce (a thread's share); tile: see TileOrigin
//   ws: conv2d_backward_input_workspace_bytes(p, Cout)
// Needs only dY and the weights (no forward activations). dx must not overlap dy.
template <class Arch = simd::default_arch>
Status conv2d_backward_input(const Conv2dParams& p, ConstTensor dy, const ConvInputGradWeights& w, Tensor dx,
                             Workspace& ws, bool accumulate = false, RowRange rows = {},
                             const TileOrigin* tile = nullptr) {
  EDGENN_TRY(detail::validate_conv_backward(p, dx.shape, dy.shape, tile, "conv2d_backward_input: bad parameters"));
  const ConvInputGradWeights expect = conv_input_grad_layout<Arch>(p, dx.c(), dy.c());
  EDGENN_CHECK(w.data && w.kernel_h == p.kernel_h && w.kernel_w == p.kernel_w && w.stride_h == p.stride_h &&
                   w.stride_w == p.stride_w && w.dilation_h == p.dilation_h && w.dilation_w == p.dilation_w &&
                   w.groups == p.groups && w.cin_g == expect.cin_g && w.cout_g == expect.cout_g,
               Error::shape_mismatch, "conv2d_backward_input: packed weights do not match the layer");
  EDGENN_CHECK(w.nr == expect.nr && w.nv == expect.nv, Error::invalid_argument,
               "conv2d_backward_input: weights were packed for another SIMD architecture");
  const int row0 = rows.begin, row1 = rows.end < 0 ? dx.h() : rows.end;
  EDGENN_CHECK(0 <= row0 && row0 <= row1 && row1 <= dx.h(), Error::invalid_argument,
               "conv2d_backward_input: row range outside dx");

  WorkspaceScope scope(ws);
  float* zero = ws.take<float>(std::size_t(w.cout_g));
  index_t* tap_offset = ws.take<index_t>(std::size_t(p.kernel_h) * std::size_t(p.kernel_w));
  EDGENN_TRY(ws.status());
  if (ws.measuring() || row0 == row1) return Status::ok();
  for (int i = 0; i < w.cout_g; ++i) zero[i] = 0.0f;

  const detail::LocalWindow lw = detail::local_window(p, tile);
  using PC = PanelConfig<Arch>;
  switch (w.nv) {
    case 1:
      detail::conv2d_input_grad_phases<Arch, PC::rows_for(1), 1>(lw, dy, w, dx, accumulate, row0, row1, zero, tap_offset);
      break;
    case 2:
      detail::conv2d_input_grad_phases<Arch, PC::rows_for(2), 2>(lw, dy, w, dx, accumulate, row0, row1, zero, tap_offset);
      break;
    default:
      if constexpr (PC::registers >= 32 || PC::lanes == 1) {
        detail::conv2d_input_grad_phases<Arch, PC::rows_for(4), 4>(lw, dy, w, dx, accumulate, row0, row1, zero, tap_offset);
      }
      break;
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// Weight and bias gradients
// ---------------------------------------------------------------------------------------------

namespace detail {

// Tiling of the weight-gradient GEMM (rows = cout/groups, columns = taps * cin/groups): the
// panel width with the least work, counting padded rows and columns and the microkernel's
// load/FMA balance (an MR x NV tile issues MR + NV loads for MR * NV FMAs per step).
template <class Arch>
constexpr int weight_grad_vectors(int rows, int cols) {
  using PC = PanelConfig<Arch>;
  int best_nv = 1;
  long best_cost = -1;
  for (int nv = 4; nv >= 1; nv /= 2) {
    if (nv == 4 && !(PC::registers >= 32 || PC::lanes == 1)) continue;
    const int mr = PC::rows_for(nv);
    const long row_tiles = long(div_up(rows, mr));
    const long panels = long(div_up(cols, nv * PC::lanes));
    const long issue = (mr * nv > mr + nv ? mr * nv : mr + nv);  // per tile and reduction step
    const long cost = row_tiles * panels * issue;
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_nv = nv;
    }
  }
  return best_nv;
}

// Output pixels staged per chunk: the packed im2col panel (chunk x NR floats) stays near 32 KB,
// in L1/L2 while every row tile of the GEMM streams through it.
constexpr int weight_grad_chunk(int nr) {
  const int c = 8192 / nr;
  return c < 64 ? 64 : c > 512 ? 512 : c;
}

// Where each output pixel of a chunk reads the input: the top-left input position of its
// window and that position's element offset in x (only dereferenced when inside x).
struct ChunkPixels {
  int* y;
  int* x;
  index_t* offset;
};

// Panel columns [j, j + len) reading channels [ci, ci + len) of one tap at input offset (dy, dx).
struct ColumnSegment {
  int j, len, dy, dx;
  index_t offset;  // element offset of (dy, dx, ci) from the window's top-left pixel
};

template <class Arch>
EDGENN_INLINE void copy_floats(const float* EDGENN_RESTRICT src, float* EDGENN_RESTRICT dst, int n) {
  using V = simd::Vec<Arch>;
  int i = 0;
  for (; i + V::size <= n; i += V::size) V::load(src + i).store(dst + i);
  if (i < n) V::load_partial(src + i, n - i).store_partial(dst + i, n - i);
}

EDGENN_INLINE void zero_floats(float* dst, int n) {
  for (int i = 0; i < n; ++i) dst[i] = 0.0f;
}

// Pack the implicit im2col of x for the chunk's pixels, columns [n0, n0 + nc) of the
// (tap, cin/groups) matrix, into `panel`: [bias: NR zeros][kc rows of NR floats].
template <class Arch, int NR>
void pack_im2col_panel(const LocalWindow& lw, ConstTensor x, const float* xg, int cin_g, int n0, int nc,
                       const ChunkPixels& px, int kc, float* panel) {
  ColumnSegment seg[NR];
  int nseg = 0;
  for (int j = 0, n = n0; j < nc; ++nseg) {
    const int tap = n / cin_g, ci = n - (n / cin_g) * cin_g;
    const int len = cin_g - ci < nc - j ? cin_g - ci : nc - j;
    const int ky = tap / lw.kw, kx = tap - (tap / lw.kw) * lw.kw;
    seg[nseg].j = j;
    seg[nseg].len = len;
    seg[nseg].dy = ky * lw.dh;
    seg[nseg].dx = kx * lw.dw;
    seg[nseg].offset = index_t(seg[nseg].dy) * x.stride_h + index_t(seg[nseg].dx) * x.stride_w + ci;
    j += len;
    n += len;
  }
  zero_floats(panel, NR);
  float* rows = panel + NR;
  const unsigned H = unsigned(x.h()), W = unsigned(x.w());
  for (int s = 0; s < nseg; ++s) {
    const ColumnSegment sg = seg[s];
    for (int q = 0; q < kc; ++q) {
      float* dst = rows + index_t(q) * NR + sg.j;
      if (unsigned(px.y[q] + sg.dy) < H && unsigned(px.x[q] + sg.dx) < W) {
        copy_floats<Arch>(xg + px.offset[q] + sg.offset, dst, sg.len);
      } else {
        zero_floats(dst, sg.len);
      }
    }
  }
  if (nc < NR)
    for (int q = 0; q < kc; ++q) zero_floats(rows + index_t(q) * NR + nc, NR - nc);
}

struct WeightGradScratch {
  float* at;        // [cout/groups][chunk]: the chunk of dY, transposed
  float* panel;     // [chunk + 1][NR]: one packed im2col panel
  float* db_chunk;  // [cout/groups]: the chunk's bias-gradient sums
  ChunkPixels px;   // [chunk] each
};

template <class Arch, int MR, int NV>
void conv2d_weight_grad(const LocalWindow& lw, int groups, ConstTensor x, ConstTensor dy, float* dw, float* db,
                        const WeightGradScratch& s, int chunk) {
  constexpr int NR = NV * simd::Vec<Arch>::size;
  const int cin_g = x.c() / groups, cout_g = dy.c() / groups;
  const int K = lw.kh * lw.kw * cin_g;  // columns per group = OHWI row length
  const int OH = dy.h(), OW = dy.w();
  const index_t per_item = index_t(OH) * OW, total = per_item * dy.n();
  for (index_t q0 = 0; q0 < total; q0 += chunk) {
    const int kc = int(total - q0 < chunk ? total - q0 : chunk);
    const int b0 = int(q0 / per_item);
    const int oy0 = int((q0 - b0 * per_item) / OW), ox0 = int(q0 - b0 * per_item - index_t(oy0) * OW);
    {
      int b = b0, oy = oy0, ox = ox0;
      for (int q = 0; q < kc; ++q) {
        const int iy = oy * lw.sh - lw.pt, ix = ox * lw.sw - lw.pl;
        s.px.y[q] = iy;
        s.px.x[q] = ix;
        s.px.offset[q] = b * x.stride_n + index_t(iy) * x.stride_h + index_t(ix) * x.stride_w;
        if (++ox == OW) {
          ox = 0;
          if (++oy == OH) {
            oy = 0;
            ++b;
          }
        }
      }
    }
    for (int g = 0; g < groups; ++g) {
      // The chunk of dY transposed to [cout_g][kc] (row stride `chunk`), and its column sums.
      for (int co = 0; co < cout_g; ++co) s.db_chunk[co] = 0.0f;
      int b = b0, oy = oy0, ox = ox0;
      for (int q = 0; q < kc; ++q) {
        const float* src = dy.pixel(b, oy, ox) + g * cout_g;
        for (int co = 0; co < cout_g; ++co) {
          s.at[index_t(co) * chunk + q] = src[co];
          s.db_chunk[co] += src[co];
        }
        if (++ox == OW) {
          ox = 0;
          if (++oy == OH) {
            oy = 0;
            ++b;
          }
        }
      }
      if (db)
        for (int co = 0; co < cout_g; ++co) db[g * cout_g + co] += s.db_chunk[co];
      for (int n0 = 0; n0 < K; n0 += NR) {
        const int nc = K - n0 < NR ? K - n0 : NR;
        pack_im2col_panel<Arch, NR>(lw, x, x.data + g * cin_g, cin_g, n0, nc, s.px, kc, s.panel);
        for (int m0 = 0; m0 < cout_g; m0 += MR) {
          const int mr = cout_g - m0 < MR ? cout_g - m0 : MR;
          StridedRowsT<MR> rows;
          rows.a0 = s.at + index_t(m0) * chunk;
          rows.lda = chunk;
          rows.mr = mr;
          TileOutput<MR> o;
          o.residual = true;  // dW += this chunk's share
          for (int i = 0; i < MR; ++i) {
            o.c[i] = dw + index_t(g * cout_g + m0 + (i < mr ? i : mr - 1)) * K + n0;
            o.r[i] = o.c[i];
          }
          gemm_tile<Arch, MR, NV>(rows, mr, nc, 1, kc, s.panel, o);
        }
      }
    }
  }
}


// --- Direct path: input channels per group a multiple of the SIMD width -------------------
//
// Then every SIMD vector of a dW row is one tap's run of input channels, which is a plain
// vector load from an input pixel: the microkernel below reads dY and X in place (no
// transposition, no im2col packing). An MR x NV tile of dW (MR output channels, NV vectors of
// (tap, channels)) keeps its accumulators in registers while it walks the output pixels:
// per pixel, MR broadcasts from one dY pixel (one base pointer) and NV loads, MR * NV FMAs.

// (rows, vectors) of the direct tile for an architecture: candidates that fit the register
// file (MR * NV accumulators + NV operands + one broadcast), least padded work first. With
// `per_tap` (vectors per tap of the direct path; 0: no preference) a tile whose NV divides it
// wins when its work is at most 1/8 above the best: it stays within one tap and walks the
// pixels inside the input as rectangles instead of row segments with padding switches, which
// pays on small maps (14x14, 7x7).
struct DirectTile {
  int mr, nv;
};
template <class Arch>
constexpr DirectTile direct_weight_grad_tile(int rows, int vectors, int per_tap = 0) {
  using PC = PanelConfig<Arch>;
  const DirectTile wide[] = {{8, 3}, {12, 2}, {6, 4}, {4, 1}};    // 32 vector registers
  const DirectTile narrow[] = {{6, 2}, {4, 3}, {4, 2}, {4, 1}};   // 16 vector registers
  const DirectTile scalar[] = {{4, 4}, {4, 2}, {2, 2}, {4, 1}};   // one lane: keep tiles small
  const DirectTile* c = PC::lanes == 1 ? scalar : PC::registers >= 32 ? wide : narrow;
  constexpr int candidates = 4;
  long cost[candidates] = {};
  int best = 0;
  for (int i = 0; i < candidates; ++i) {
    const long tiles = long(div_up(rows, c[i].mr)) * long(div_up(vectors, c[i].nv));
    const long fmas = long(c[i].mr) * c[i].nv, loads = long(c[i].mr) + c[i].nv;
    cost[i] = tiles * (fmas > loads ? fmas : loads);
    if (cost[i] < cost[best]) best = i;
  }
  if (per_tap > 0 && per_tap % c[best].nv != 0) {
    int aligned = -1;
    for (int i = 0; i < candidates; ++i)
      if (per_tap % c[i].nv == 0 && c[i].nv > 1 && 8 * cost[i] <= 9 * cost[best] &&
          (aligned < 0 || cost[i] < cost[aligned]))
        aligned = i;
    if (aligned >= 0) best = aligned;
  }
  return c[best];
}

// Output rows per chunk: about 192 output pixels, so a chunk's dY and X stay in L1/L2 while
// every tile of dW walks them.
constexpr int direct_weight_grad_rows(int out_w) { return out_w >= 192 ? 1 : 192 / out_w; }

// Output positions [lo, hi) along one axis whose input position out * stride - pad + off lies
// in [0, in) (clamped to [0, out); empty when lo == hi).
inline void inside_outputs(int pad, int off, int stride, int in, int out, int& lo, int& hi) {
  int a = -floor_div(-(pad - off), stride);  // ceil((pad - off) / stride)
  int e = floor_div(in - 1 + pad - off, stride) + 1;
  a = a < 0 ? 0 : a > out ? out : a;
  e = e < a ? a : e > out ? out : e;
  lo = a;
  hi = e;
}

// Output columns [lo, hi) at which each of N taps (input column offset dx) reads inside x,
// and the sorted breakpoints `cut`: between two consecutive cuts the set of taps reading
// padding is constant, so each segment runs without per-pixel checks.
template <int N>
struct ColumnRuns {
  int lo[N], hi[N];
  int cut[2 * N + 2];
  int ncut = 0;

  void set(int i, const LocalWindow& lw, int in_w, int out_w, int dx) {
    inside_outputs(lw.pl, dx, lw.sw, in_w, out_w, lo[i], hi[i]);
    const int a = lo[i], e = hi[i];
    if (ncut == 0) {
      cut[ncut++] = 0;
      cut[ncut++] = out_w;
    }
    cut[ncut++] = a;
    cut[ncut++] = e;
  }
  void sort_cuts() {  // insertion sort of a handful of values
    for (int a = 1; a < ncut; ++a)
      for (int k = a; k > 0 && cut[k - 1] > cut[k]; --k) {
        const int t = cut[k];
        cut[k] = cut[k - 1];
        cut[k - 1] = t;
      }
  }
};

// One vector of the tile: its tap and first input channel.
struct TileVector {
  int dy, dx;  // input offset of the tap: ky * dh, kx * dw
  int ci;      // first input channel (within the group)
};

template <class Arch, int MR, int NV>
EDGENN_INLINE void direct_pixels(const float* g, index_t g_step, const float* const (&xp)[NV],
                                 const index_t (&x_step)[NV], const int (&row)[MR], int count,
                                 simd::Vec<Arch> (&acc)[MR][NV]) {
  using V = simd::Vec<Arch>;
  for (int p = 0; p < count; ++p) {
    V xv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) xv[v] = V::load(xp[v] + p * x_step[v]);
    const float* gp = g + p * g_step;
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const V b = V::broadcast(gp[row[i]]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = fma(b, xv[v], acc[i][v]);
    }
  }
}

// direct_pixels where every vector of the tile reads inside x and the tile's MR output
// channels are consecutive: constant broadcast offsets and one input step, which leaves GCC
// enough registers to keep every pointer out of the stack.
template <class Arch, int MR, int NV>
EDGENN_INLINE void direct_pixels_inside(const float* g, index_t g_step, const float* const (&xp)[NV], index_t x_step,
                                        int count, simd::Vec<Arch> (&acc)[MR][NV]) {
  using V = simd::Vec<Arch>;
  const float* x[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) x[v] = xp[v];
  for (int p = 0; p < count; ++p, g += g_step) {
    V xv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      xv[v] = V::load(x[v]);
      x[v] += x_step;
    }
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const V b = V::broadcast(g[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = fma(b, xv[v], acc[i][v]);
    }
  }
}

// The pixels of a tile whose NV vectors are consecutive channels of one tap: `rows` x `cols`
// output pixels inside the input (no padding), in row-major order; x points at the channels
// of the first vector. Contiguous: the MR output channels follow one another from g (else
// row[] holds each one's offset).
template <class Arch, int MR, int NV, bool Contiguous>
EDGENN_INLINE void direct_block(const float* g, index_t g_row, index_t g_px, const float* x, index_t x_row,
                                index_t x_px, int rows, int cols, const int (&row)[MR],
                                simd::Vec<Arch> (&acc)[MR][NV]) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  for (int r = 0; r < rows; ++r, g += g_row, x += x_row) {
    const float* gp = g;
    const float* xp = x;
    for (int c = 0; c < cols; ++c, gp += g_px, xp += x_px) {
      V xv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) xv[v] = V::load(xp + v * VL);
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        const V b = V::broadcast(Contiguous ? gp[i] : gp[row[i]]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = fma(b, xv[v], acc[i][v]);
      }
    }
  }
}

template <class Arch, int MR, int NV>
EDGENN_INLINE void zero_tile(simd::Vec<Arch> (&acc)[MR][NV]) {
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = simd::Vec<Arch>::zero();
}

// dW rows [0, mr) x vectors [0, nv) of the tile (d: its first row and vector, row stride K)
// += the accumulators. Compile-time loop bounds keep the accumulators in registers.
template <class Arch, int MR, int NV>
EDGENN_INLINE void add_tile(const simd::Vec<Arch> (&acc)[MR][NV], float* d, index_t K, int mr, int nv) {
  using V = simd::Vec<Arch>;
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
    if (i >= mr) break;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (v >= nv) break;
      float* p = d + i * K + v * V::size;
      (V::load(p) + acc[i][v]).store(p);
    }
  }
}

template <class Arch, int MR, int NV>
void conv2d_weight_grad_direct(const LocalWindow& lw, int groups, ConstTensor x, ConstTensor dy, float* dw,
                               const float* zero) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  const int cin_g = x.c() / groups, cout_g = dy.c() / groups;
  const int K = lw.kh * lw.kw * cin_g, vectors = K / VL, per_tap = cin_g / VL;
  const int OH = dy.h(), OW = dy.w(), H = x.h(), W = x.w();
  const int total_rows = dy.n() * OH, chunk_rows = direct_weight_grad_rows(OW);
  // Tiles within one tap (NV divides the vectors of a tap): the pixels inside the input form
  // one rectangle per batch item, walked without per-pixel checks (padding adds nothing).
  const bool tap_tiles = per_tap % NV == 0;
  for (int g = 0; g < groups; ++g)
    for (int r0 = 0; r0 < total_rows; r0 += chunk_rows) {
      const int r1 = r0 + chunk_rows < total_rows ? r0 + chunk_rows : total_rows;
      for (int co0 = 0; co0 < cout_g; co0 += MR) {
        const int mr = cout_g - co0 < MR ? cout_g - co0 : MR;
        int row[MR];
        for (int i = 0; i < MR; ++i) row[i] = g * cout_g + co0 + (i < mr ? i : mr - 1);
        if (tap_tiles) {
          auto imax = [](int u, int v) { return u > v ? u : v; };
          auto imin = [](int u, int v) { return u < v ? u : v; };
          for (int i = MR - 1; i >= 0; --i) row[i] -= row[0];  // offsets from the tile's first channel
          for (int j0 = 0; j0 < vectors; j0 += NV) {
            const int tap = j0 / per_tap;
            const int tdy = (tap / lw.kw) * lw.dh, tdx = (tap - (tap / lw.kw) * lw.kw) * lw.dw;
            const int ci = g * cin_g + (j0 - tap * per_tap) * VL;
            // Output columns [xlo, xhi) and rows [ylo, yhi) of an item reading inside x.
            int xlo, xhi, ylo, yhi;
            inside_outputs(lw.pl, tdx, lw.sw, W, OW, xlo, xhi);
            inside_outputs(lw.pt, tdy, lw.sh, H, OH, ylo, yhi);
            V acc[MR][NV];
            zero_tile<Arch>(acc);
            for (int rr = r0; xlo < xhi && rr < r1;) {
              const int b = rr / OH, oy0 = rr - b * OH;
              const int n = imin(r1 - rr, OH - oy0);  // rows of this item in the chunk
              const int y0 = imax(oy0, ylo), y1 = imin(oy0 + n, yhi);
              if (y0 < y1) {
                const float* gp = dy.pixel(b, y0, xlo) + g * cout_g + co0;
                const float* xp = x.pixel(b, y0 * lw.sh - lw.pt + tdy, xlo * lw.sw - lw.pl + tdx) + ci;
                const index_t xr = index_t(lw.sh) * x.stride_h, xc = index_t(lw.sw) * x.stride_w;
                if (mr == MR)
                  direct_block<Arch, MR, NV, true>(gp, dy.stride_h, dy.stride_w, xp, xr, xc, y1 - y0, xhi - xlo, row, acc);
                else
                  direct_block<Arch, MR, NV, false>(gp, dy.stride_h, dy.stride_w, xp, xr, xc, y1 - y0, xhi - xlo, row,
                                                    acc);
              }
              rr += n;
            }
            add_tile<Arch>(acc, dw + index_t(g * cout_g + co0) * K + index_t(j0) * VL, K, mr, NV);
          }
          continue;
        }
        for (int j0 = 0; j0 < vectors; j0 += NV) {
          const int nvv = vectors - j0 < NV ? vectors - j0 : NV;
          TileVector tv[NV];
          for (int v = 0; v < NV; ++v) {
            const int j = j0 + (v < nvv ? v : nvv - 1);
            const int tap = j / per_tap;
            tv[v].dy = (tap / lw.kw) * lw.dh;
            tv[v].dx = (tap - (tap / lw.kw) * lw.kw) * lw.dw;
            tv[v].ci = g * cin_g + (j - tap * per_tap) * VL;
          }
          ColumnRuns<NV> runs;
          for (int v = 0; v < NV; ++v) runs.set(v, lw, W, OW, tv[v].dx);
          runs.sort_cuts();
          V acc[MR][NV];
          zero_tile<Arch>(acc);
          for (int rr = r0; rr < r1; ++rr) {
            const int b = rr / OH, oy = rr - (rr / OH) * OH;
            const float* g_row = dy.pixel(b, oy, 0);
            const float* base[NV];  // the vector's input row, or null when it is padding
            for (int v = 0; v < NV; ++v) {
              const int iy = oy * lw.sh - lw.pt + tv[v].dy;
              base[v] = unsigned(iy) < unsigned(H) ? x.pixel(b, iy, 0) + tv[v].ci : nullptr;
            }
            for (int k = 0; k + 1 < runs.ncut; ++k) {
              const int s0 = runs.cut[k], s1 = runs.cut[k + 1];
              if (s0 == s1) continue;
              const float* xp[NV];
              index_t step[NV];
              bool all_inside = mr == MR;
              for (int v = 0; v < NV; ++v) {
                const bool inside = base[v] && s0 >= runs.lo[v] && s0 < runs.hi[v];
                xp[v] = inside ? base[v] + index_t(s0 * lw.sw - lw.pl + tv[v].dx) * x.stride_w : zero;
                step[v] = inside ? index_t(lw.sw) * x.stride_w : 0;
                all_inside = all_inside && inside;
              }
              if (all_inside)
                direct_pixels_inside<Arch, MR, NV>(g_row + index_t(s0) * dy.stride_w + row[0], dy.stride_w, xp,
                                                   index_t(lw.sw) * x.stride_w, s1 - s0, acc);
              else
                direct_pixels<Arch, MR, NV>(g_row + index_t(s0) * dy.stride_w, dy.stride_w, xp, step, row, s1 - s0,
                                            acc);
            }
          }
          add_tile<Arch>(acc, dw + index_t(g * cout_g + co0) * K + index_t(j0) * VL, K, mr, nvv);
        }
      }
    }
}


// --- Small-input path: cin/groups below the SIMD width, cout/groups a multiple of it --------
//
// A network's stem (1 or 3 input channels). Here the transposed product is the efficient one:
// dW^T[(tap, ci)][co] accumulates a broadcast input value times a dY vector of output
// channels, both read in place. An MR x NV tile holds MR (tap, ci) rows and NV vectors of
// output channels; it is transposed into dW once per chunk.

template <class Arch, int MR, int NV, bool AllInside>
EDGENN_INLINE void small_input_pixels(const float* xd, index_t x_pixel, index_t x_step, const index_t (&off)[MR],
                                      const bool (&inside)[MR], const float* g, const index_t (&g_off)[NV],
                                      index_t g_step, int count, simd::Vec<Arch> (&acc)[MR][NV]) {
  using V = simd::Vec<Arch>;
  for (int p = 0; p < count; ++p, x_pixel += x_step, g += g_step) {
    V gv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) gv[v] = V::load(g + g_off[v]);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const V b = (AllInside || inside[i]) ? V::broadcast(xd[x_pixel + off[i]]) : V::zero();
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = fma(b, gv[v], acc[i][v]);
    }
  }
}

template <class Arch, int MR, int NV>
void conv2d_weight_grad_small_input(const LocalWindow& lw, int groups, ConstTensor x, ConstTensor dy, float* dw) {
  using V = simd::Vec<Arch>;
  constexpr int VL = V::size;
  const int cin_g = x.c() / groups, cout_g = dy.c() / groups;
  const int K = lw.kh * lw.kw * cin_g, cvec = cout_g / VL;
  const int OH = dy.h(), OW = dy.w(), H = x.h();
  const int total_rows = dy.n() * OH, chunk_rows = direct_weight_grad_rows(OW);
  for (int g = 0; g < groups; ++g)
    for (int r0 = 0; r0 < total_rows; r0 += chunk_rows) {
      const int r1 = r0 + chunk_rows < total_rows ? r0 + chunk_rows : total_rows;
      for (int k0 = 0; k0 < K; k0 += MR) {
        const int mk = K - k0 < MR ? K - k0 : MR;
        int row_dy[MR];  // input row offset of the tile row's tap
        index_t off[MR];
        ColumnRuns<MR> runs;
        for (int i = 0; i < MR; ++i) {
          const int k = k0 + (i < mk ? i : mk - 1);
          const int tap = k / cin_g, ci = k - (k / cin_g) * cin_g;
          const int dyo = (tap / lw.kw) * lw.dh, dxo = (tap - (tap / lw.kw) * lw.kw) * lw.dw;
          row_dy[i] = dyo;
          off[i] = index_t(dyo) * x.stride_h + index_t(dxo) * x.stride_w + g * cin_g + ci;
          runs.set(i, lw, x.w(), OW, dxo);
        }
        runs.sort_cuts();
        for (int j0 = 0; j0 < cvec; j0 += NV) {
          const int nvv = cvec - j0 < NV ? cvec - j0 : NV;
          // Vectors past the last one re-read it (their sums are never stored): no read beyond dY.
          index_t g_off[NV];
          for (int v = 0; v < NV; ++v) g_off[v] = index_t(v < nvv ? v : nvv - 1) * VL;
          V acc[MR][NV];
#pragma GCC unroll 12
          for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
          for (int rr = r0; rr < r1; ++rr) {
            const int b = rr / OH, oy = rr - (rr / OH) * OH;
            const int iy = oy * lw.sh - lw.pt;
            bool row_inside[MR];
            for (int i = 0; i < MR; ++i) row_inside[i] = unsigned(iy + row_dy[i]) < unsigned(H);
            for (int k = 0; k + 1 < runs.ncut; ++k) {
              const int s0 = runs.cut[k], s1 = runs.cut[k + 1];
              if (s0 == s1) continue;
              bool inside[MR];
              bool all = true;
              for (int i = 0; i < MR; ++i) {
                inside[i] = row_inside[i] && s0 >= runs.lo[i] && s0 < runs.hi[i];
                all = all && inside[i];
              }
              // Element offsets, not pointers: the window's corner may lie outside x.
              const index_t x_pixel = b * x.stride_n + index_t(iy) * x.stride_h + index_t(s0 * lw.sw - lw.pl) * x.stride_w;
              const float* gp = dy.pixel(b, oy, s0) + g * cout_g + j0 * VL;
              const index_t x_step = index_t(lw.sw) * x.stride_w;
              if (all) {
                small_input_pixels<Arch, MR, NV, true>(x.data, x_pixel, x_step, off, inside, gp, g_off, dy.stride_w, s1 - s0, acc);
              } else {
                small_input_pixels<Arch, MR, NV, false>(x.data, x_pixel, x_step, off, inside, gp, g_off, dy.stride_w, s1 - s0, acc);
              }
            }
          }
          // Transpose the tile into dW rows (output channels), columns k0 + i.
#pragma GCC unroll 12
          for (int i = 0; i < MR; ++i) {
            if (i >= mk) break;
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
              if (v >= nvv) break;
              alignas(64) float lanes[VL];
              acc[i][v].store(lanes);
              float* d = dw + index_t(g * cout_g + (j0 + v) * VL) * K + k0 + i;
              for (int l = 0; l < VL; ++l) d[index_t(l) * K] += lanes[l];
            }
          }
        }
      }
    }
}

}  // namespace detail

// How conv2d_backward_weights runs for a layer:
//  - direct: cin/groups a multiple of the SIMD width; mr x nv tiles of (cout, tap-channel vectors)
//  - small_input: cin/groups below the SIMD width and cout/groups a multiple of it (stems);
//    mr x nv tiles of ((tap, cin) rows, cout vectors)
//  - packed: anything else; panels of nv vectors, `chunk` output pixels staged at a time.
enum class WeightGradPath : std::uint8_t { direct, small_input, packed };
struct WeightGradTiling {
  WeightGradPath path = WeightGradPath::packed;
  int mr = 1, nv = 1;
  int nr = 1, chunk = 64;  // packed path
};
template <class Arch = simd::default_arch>
constexpr WeightGradTiling conv_weight_grad_tiling(const Conv2dParams& p, int cin, int cout) {
  constexpr int VL = PanelConfig<Arch>::lanes;
  const int groups = p.groups > 0 ? p.groups : 1;
  const int cin_g = cin / groups, cout_g = cout / groups;
  WeightGradTiling t;
  if (cin_g % VL == 0) {
    t.path = WeightGradPath::direct;
    const detail::DirectTile d = detail::direct_weight_grad_tile<Arch>(cout_g, p.taps() * cin_g / VL, cin_g / VL);
    t.mr = d.mr;
    t.nv = d.nv;
  } else if (cout_g % VL == 0) {
    t.path = WeightGradPath::small_input;
    const detail::DirectTile d = detail::direct_weight_grad_tile<Arch>(p.taps() * cin_g, cout_g / VL);
    t.mr = d.mr;
    t.nv = d.nv;
  } else {
    t.nv = detail::weight_grad_vectors<Arch>(cout_g, p.taps() * cin_g);
    t.mr = PanelConfig<Arch>::rows_for(t.nv);
    t.nr = t.nv * VL;
    t.chunk = detail::weight_grad_chunk(t.nr);
  }
  return t;
}

// Workspace of conv2d_backward_weights: a zero vector (direct and small-input paths), or the
// transposed dY chunk, one packed im2col panel, the chunk's bias sums and its pixel positions
// (packed path).
template <class Arch = simd::default_arch>
constexpr std::size_t conv2d_backward_weights_workspace_bytes(const Conv2dParams& p, int cin, int cout) {
  const std::size_t cout_g = std::size_t(cout / (p.groups > 0 ? p.groups : 1));
  const WeightGradTiling t = conv_weight_grad_tiling<Arch>(p, cin, cout);
  if (t.path != WeightGradPath::packed) return aligned_bytes<float>(std::size_t(PanelConfig<Arch>::lanes));
  const std::size_t chunk = std::size_t(t.chunk);
  return aligned_bytes<float>(cout_g * chunk) + aligned_bytes<float>((chunk + 1) * std::size_t(t.nr)) +
         aligned_bytes<float>(cout_g) + 2 * aligned_bytes<int>(chunk) + aligned_bytes<index_t>(chunk);
}

namespace detail {

// db[c] += sum of dy[..., c]: per output row partial sums, then into db (fixed order).
template <class Arch>
void conv2d_bias_grad(ConstTensor dy, float* db) {
  using V = simd::Vec<Arch>;
  const int C = dy.c();
  for (int b = 0; b < dy.n(); ++b)
    for (int oy = 0; oy < dy.h(); ++oy) {
      int c0 = 0;
      for (; c0 + V::size <= C; c0 += V::size) {
        V r = V::zero();
        for (int ox = 0; ox < dy.w(); ++ox) r = r + V::load(dy.pixel(b, oy, ox) + c0);
        (V::load(db + c0) + r).store(db + c0);
      }
      if (c0 < C) {
        const int n = C - c0;
        V r = V::zero();
        for (int ox = 0; ox < dy.w(); ++ox) r = r + V::load_partial(dy.pixel(b, oy, ox) + c0, n);
        (V::load_partial(db + c0, n) + r).store_partial(db + c0, n);
      }
    }
}

template <int V>
using IntConstant = std::integral_constant<int, V>;

// Calls run(IntConstant<MR>, IntConstant<NV>) with the tile direct_weight_grad_tile chose for
// this architecture (its candidates are the only instantiations).
template <class Arch, class Run>
void with_direct_tile(const WeightGradTiling& t, Run&& run) {
  using PC = PanelConfig<Arch>;
  if constexpr (PC::lanes == 1) {
    if (t.mr == 4 && t.nv == 4) return run(IntConstant<4>{}, IntConstant<4>{});
    if (t.mr == 4 && t.nv == 2) return run(IntConstant<4>{}, IntConstant<2>{});
    if (t.mr == 2 && t.nv == 2) return run(IntConstant<2>{}, IntConstant<2>{});
  } else if constexpr (PC::registers >= 32) {
    if (t.mr == 8 && t.nv == 3) return run(IntConstant<8>{}, IntConstant<3>{});
    if (t.mr == 12 && t.nv == 2) return run(IntConstant<12>{}, IntConstant<2>{});
    if (t.mr == 6 && t.nv == 4) return run(IntConstant<6>{}, IntConstant<4>{});
  } else {
    if (t.mr == 6 && t.nv == 2) return run(IntConstant<6>{}, IntConstant<2>{});
    if (t.mr == 4 && t.nv == 3) return run(IntConstant<4>{}, IntConstant<3>{});
    if (t.mr == 4 && t.nv == 2) return run(IntConstant<4>{}, IntConstant<2>{});
  }
  run(IntConstant<4>{}, IntConstant<1>{});
}

}  // namespace detail

// dW (OHWI, [cout][kh][kw][cin/groups], like the forward weights) and db ([cout], may be null)
// of a convolution, from its input x and the output gradient dy; written, or added to dW and
// db with `accumulate` (sum over tiles or micro-batches).
//   x: N x H x W x Cin (the forward's saved input), dy: N x OH x OW x Cout
//   tile: see TileOrigin (x covers the input the dy view's windows read; outside it is zero)
//   ws: conv2d_backward_weights_workspace_bytes<Arch>(p, Cin, Cout)
// Deterministic: the summation order depends only on the shapes.
template <class Arch = simd::default_arch>
Status conv2d_backward_weights(const Conv2dParams& p, ConstTensor x, ConstTensor dy, float* dw, float* db,
                               Workspace& ws, bool accumulate = false, const TileOrigin* tile = nullptr) {
  EDGENN_TRY(detail::validate_conv_backward(p, x.shape, dy.shape, tile, "conv2d_backward_weights: bad parameters"));
  EDGENN_CHECK(dw != nullptr, Error::invalid_argument, "conv2d_backward_weights: dw is null");
  const int groups = p.groups, cin_g = x.c() / groups, cout_g = dy.c() / groups;
  const WeightGradTiling t = conv_weight_grad_tiling<Arch>(p, x.c(), dy.c());
  WorkspaceScope scope(ws);
  float* zero = nullptr;
  detail::WeightGradScratch s{};
  if (t.path != WeightGradPath::packed) {
    zero = ws.take<float>(std::size_t(PanelConfig<Arch>::lanes));
  } else {
    s.at = ws.take<float>(std::size_t(cout_g) * t.chunk);
    s.panel = ws.take<float>(std::size_t(t.chunk + 1) * t.nr);
    s.db_chunk = ws.take<float>(std::size_t(cout_g));
    s.px.y = ws.take<int>(std::size_t(t.chunk));
    s.px.x = ws.take<int>(std::size_t(t.chunk));
    s.px.offset = ws.take<index_t>(std::size_t(t.chunk));
  }
  EDGENN_TRY(ws.status());
  if (ws.measuring()) return Status::ok();

  const index_t wsize = index_t(dy.c()) * p.taps() * cin_g;
  if (!accumulate) {
    for (index_t i = 0; i < wsize; ++i) dw[i] = 0.0f;
    if (db)
      for (int i = 0; i < dy.c(); ++i) db[i] = 0.0f;
  }
  const detail::LocalWindow lw = detail::local_window(p, tile);
  if (t.path == WeightGradPath::direct) {
    for (int i = 0; i < PanelConfig<Arch>::lanes; ++i) zero[i] = 0.0f;
    detail::with_direct_tile<Arch>(t, [&](auto mr, auto nv) {
      detail::conv2d_weight_grad_direct<Arch, decltype(mr)::value, decltype(nv)::value>(lw, groups, x, dy, dw, zero);
    });
    if (db) detail::conv2d_bias_grad<Arch>(dy, db);
    return Status::ok();
  }
  if (t.path == WeightGradPath::small_input) {
    detail::with_direct_tile<Arch>(t, [&](auto mr, auto nv) {
      detail::conv2d_weight_grad_small_input<Arch, decltype(mr)::value, decltype(nv)::value>(lw, groups, x, dy, dw);
    });
    if (db) detail::conv2d_bias_grad<Arch>(dy, db);
    return Status::ok();
  }
  using PC = PanelConfig<Arch>;
  switch (t.nv) {
    case 1: detail::conv2d_weight_grad<Arch, PC::rows_for(1), 1>(lw, groups, x, dy, dw, db, s, t.chunk); break;
    case 2: detail::conv2d_weight_grad<Arch, PC::rows_for(2), 2>(lw, groups, x, dy, dw, db, s, t.chunk); break;
    default:
      if constexpr (PC::registers >= 32 || PC::lanes == 1) {
        detail::conv2d_weight_grad<Arch, PC::rows_for(4), 4>(lw, groups, x, dy, dw, db, s, t.chunk);
      }
      break;
  }
  return Status::ok();
}

}  // namespace edgenn::kernels
