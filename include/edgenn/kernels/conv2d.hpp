// 2-D convolution, NHWC, any kernel size, stride, dilation, (asymmetric) padding and groups.
//
// One mechanism covers every case: the gemm_tile microkernel with a row provider that
// points each output pixel's window at the input (implicit im2col). 1x1 stride-1 unpadded
// convolutions over contiguous pixels take the plain GEMM row provider (pointwise = GEMM).
// Depthwise convolution (groups == channels) has its own kernel (depthwise.hpp).
//
// Tiles: `rows` restricts the run to output rows [begin, end), and views may be sub-regions
// of larger buffers, so the cluster runtime can run valid-padding convolutions on a tile
// and a thread pool can split one image. The weights are packed by pack_conv_weights from
// the canonical OHWI layout ([cout][kh][kw][cin / groups]).
#pragma once

#include "edgenn/core/tensor.hpp"
#include "edgenn/core/workspace.hpp"
#include "edgenn/kernels/gemm.hpp"

namespace edgenn::kernels {

struct Conv2dParams {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int groups = 1;
  Activation activation = Activation::none;

  // Square kernel with stride s and symmetric padding p.
  static constexpr Conv2dParams square(int k, int s = 1, int p = 0, int groups = 1,
                                       Activation act = Activation::none) {
    Conv2dParams c;
    c.kernel_h = c.kernel_w = k;
    c.stride_h = c.stride_w = s;
    c.pad_top = c.pad_left = c.pad_bottom = c.pad_right = p;
    c.groups = groups;
    c.activation = act;
    return c;
  }
  constexpr int taps() const { return kernel_h * kernel_w; }
  constexpr bool has_padding() const { return pad_top | pad_left | pad_bottom | pad_right; }
  constexpr int out_h(int in_h) const {
    return window_output_size(in_h, kernel_h, stride_h, dilation_h, pad_top, pad_bottom);
  }
  constexpr int out_w(int in_w) const {
    return window_output_size(in_w, kernel_w, stride_w, dilation_w, pad_left, pad_right);
  }
  constexpr Shape output_shape(Shape in, int cout) const { return Shape{in.n, out_h(in.h), out_w(in.w), cout}; }

  constexpr Status validate(Shape in, int cout) const {
    EDGENN_CHECK(kernel_h > 0 && kernel_w > 0, Error::invalid_argument, "conv2d: kernel size must be positive");
    EDGENN_CHECK(stride_h > 0 && stride_w > 0, Error::invalid_argument, "conv2d: stride must be positive");
    EDGENN_CHECK(dilation_h > 0 && dilation_w > 0, Error::invalid_argument, "conv2d: dilation must be positive");
    EDGENN_CHECK(pad_top >= 0 && pad_left >= 0 && pad_bottom >= 0 && pad_right >= 0, Error::invalid_argument,
                 "conv2d: padding must be non-negative");
    EDGENN_CHECK(groups > 0, Error::invalid_argument, "conv2d: groups must be positive");
    EDGENN_CHECK(in.valid() && cout > 0, Error::shape_mismatch, "conv2d: empty input or output");
    EDGENN_CHECK(in.c % groups == 0 && cout % groups == 0, Error::shape_mismatch,
                 "conv2d: channels not divisible by groups");
    EDGENN_CHECK(out_h(in.h) > 0 && out_w(in.w) > 0, Error::shape_mismatch,
                 "conv2d: kernel window larger than the padded input");
    return Status::ok();
  }
};

// Output rows [begin, end) to compute; end < 0 means "to the last row".
struct RowRange {
  int begin = 0;
  int end = -1;
};

// Packed-weight layout of a convolution (cin = input channels of the whole layer).
template <class Arch = simd::default_arch>
constexpr PackedWeights conv_packed_layout(const Conv2dParams& p, int cin, int cout) {
  return packed_layout<Arch>(p.taps() * (cin / p.groups), cout / p.groups, p.groups);
}
template <class Arch = simd::default_arch>
constexpr index_t conv_packed_floats(const Conv2dParams& p, int cin, int cout) {
  return conv_packed_layout<Arch>(p, cin, cout).total_floats();
}
// Pack OHWI weights ([cout][kh][kw][cin/groups]) and optional bias [cout] into `dst`.
template <class Arch = simd::default_arch>
PackedWeights pack_conv_weights(const Conv2dParams& p, int cin, int cout, const float* ohwi, const float* bias,
                                float* dst) {
  return pack_weights<Arch>(p.taps() * (cin / p.groups), cout / p.groups, p.groups, ohwi, bias, dst);
}

// Workspace the convolution needs: a zero vector standing in for padded input pixels.
constexpr std::size_t conv2d_workspace_bytes(const Conv2dParams& p, Shape in) {
  return p.has_padding() ? aligned_bytes<float>(std::size_t(in.c / (p.groups > 0 ? p.groups : 1))) : 0;
}

namespace detail {

// Window rows with bounds checks, for windows that touch the padding: per tap, a pointer
// to each pixel's input channels or to the zero vector when the tap falls outside.
template <int MR>
struct ConvEdgeRows {
  const float* img[MR];  // batch item of each row, channel offset of the group applied
  int iy[MR], ix[MR];    // top-left input coordinate of each row's window
  index_t sh, sw;
  int H, W, kw, dh, dw;
  const int* tap_dy = nullptr;  // per-tap window offsets (ky * dh, kx * dw), or null
  const int* tap_dx = nullptr;
  const float* zero;

  template <int N>
  EDGENN_INLINE void operator()(int t, const float* (&a)[N]) const {
    static_assert(N <= MR, "ConvEdgeRows: too few rows");
    int oy, ox;
    if (tap_dy) {
      oy = tap_dy[t];
      ox = tap_dx[t];
    } else {
      const int ky = t / kw, kx = t - (t / kw) * kw;
      oy = ky * dh;
      ox = kx * dw;
    }
    for (int i = 0; i < N; ++i) {
      const int y = iy[i] + oy, x = ix[i] + ox;
      a[i] = (unsigned(y) < unsigned(H) && unsigned(x) < unsigned(W)) ? img[i] + y * sh + x * sw : zero;
    }
  }
};

// The reduction of windows that lie inside the input, as (taps x kc) over offsets from the
// window's top-left pixel. When the pixels of an input row are contiguous (one group,
// dense channels, no horizontal dilation) the kernel_w taps of a kernel row are one run
// of kernel_w * cin floats, in the input and in the packed weights ([tap][cin] order):
// kernel_h taps of kernel_w * cin. A 3x3 stem over one input channel then runs 3 taps of
// 3 instead of 9 of 1.
struct ConvTaps {
  static constexpr int max_taps = 32;
  index_t off[max_taps];
  int count = 0;
  int kc = 0;
  bool ok = false;  // false: more taps than the table holds (every window takes the checked rows)
  // Window offsets (ky * dilation_h, kx * dilation_w) of every tap for the checked rows.
  int dy[max_taps], dx[max_taps];
  bool per_tap = false;
};

inline ConvTaps conv_taps(const Conv2dParams& p, ConstTensor in) {
  ConvTaps t;
  const int cin_g = in.c() / p.groups;
  if (p.dilation_w == 1 && p.groups == 1 && in.stride_w == index_t(cin_g) && p.kernel_h <= ConvTaps::max_taps) {
    t.count = p.kernel_h;
    t.kc = p.kernel_w * cin_g;
    for (int ky = 0; ky < p.kernel_h; ++ky) t.off[ky] = index_t(ky) * p.dilation_h * in.stride_h;
    t.ok = true;
  } else if (p.taps() <= ConvTaps::max_taps) {
    t.count = p.taps();
    t.kc = cin_g;
    for (int ky = 0; ky < p.kernel_h; ++ky)
      for (int kx = 0; kx < p.kernel_w; ++kx)
        t.off[ky * p.kernel_w + kx] = index_t(ky) * p.dilation_h * in.stride_h + index_t(kx) * p.dilation_w * in.stride_w;
    t.ok = true;
  }
  if (p.taps() <= ConvTaps::max_taps) {
    for (int ky = 0; ky < p.kernel_h; ++ky)
      for (int kx = 0; kx < p.kernel_w; ++kx) {
        t.dy[ky * p.kernel_w + kx] = ky * p.dilation_h;
        t.dx[ky * p.kernel_w + kx] = kx * p.dilation_w;
      }
    t.per_tap = true;
  }
  return t;
}

// Repeat the last of n filled rows into rows [n, MR) (the microkernel reads MR rows).
template <int MR, class F>
EDGENN_INLINE void pad_tile(int n, F&& copy_row) {
  for (int i = n; i < MR; ++i) copy_row(i, n - 1);
}

// Panels [p0, p1) of group g, all NV vectors wide, over output rows [row0, row1) of every
// batch item. Output pixels are sorted into two running tiles: windows inside the input
// (OffsetRows: base pointer + tap offset) and windows touching the padding (ConvEdgeRows);
// a tile runs when it has MR pixels, from any rows and batch items, and the two partial
// tiles run last on the narrower kernels. The rows (over all batch items) are cut into
// cache blocks, and every panel runs over one block before the next block starts.
template <class Arch, int NV>
void conv2d_panels(const Conv2dParams& p, ConstTensor in, const PackedWeights& pw, Tensor out, ConstTensor res,
                   bool has_res, int g, int p0, int p1, int row0, int row1, const float* zero, const ConvTaps& taps) {
  constexpr int MR = PanelConfig<Arch>::rows_for(NV);
  constexpr int NRV = NV * PanelConfig<Arch>::lanes;
  const int OW = out.w();
  const int H = in.h(), W = in.w();
  const int cin_g = in.c() / p.groups;
  const Clamp clamp = activation_clamp(p.activation);
  // Windows that never touch the padding: their whole span is inside the input.
  const int span_h = p.dilation_h * (p.kernel_h - 1), span_w = p.dilation_w * (p.kernel_w - 1);
  // Output columns [xa, xb) whose windows lie inside the input columns.
  int xa = int(div_up(p.pad_left, p.stride_w));
  int xb = W - span_w + p.pad_left > 0 ? int(div_up(W - span_w + p.pad_left, p.stride_w)) : 0;
  if (xb > OW) xb = OW;
  if (xa > xb) xa = xb;
  const index_t osw = out.stride_w, rsw = has_res ? res.stride_w : 0;
  const index_t step = index_t(p.stride_w) * in.stride_w;
  const int rows_per_item = row1 - row0;
  const int total_rows = in.n() * rows_per_item;
  const int block = cache_block_rows(p1 - p0, pw.panel_floats(), index_t(W) * in.c() * p.stride_h, total_rows);

  OffsetRows<MR> ri;
  ri.off = taps.off;
  TileOutput<MR> oi;
  oi.clamp = clamp;
  oi.residual = has_res;

  ConvEdgeRows<MR> re;
  re.sh = in.stride_h;
  re.sw = in.stride_w;
  re.H = H;
  re.W = W;
  re.kw = p.kernel_w;
  re.dh = p.dilation_h;
  re.dw = p.dilation_w;
  re.zero = zero;
  if (taps.per_tap) {
    re.tap_dy = taps.dy;
    re.tap_dx = taps.dx;
  }
  TileOutput<MR> oe;
  oe.clamp = clamp;
  oe.residual = has_res;

  for (int q0 = 0; q0 < total_rows; q0 += block) {
    const int q1 = total_rows - q0 < block ? total_rows : q0 + block;
    for (int pn = p0; pn < p1; ++pn) {
      const float* w = pw.panel(g, pn);
      const int n0 = pn * pw.nr;
      const int nc = pw.cols - n0 < NRV ? pw.cols - n0 : NRV;
      const int ch0 = g * pw.cols + n0;
      int ni = 0, ne = 0;
      auto push_edge = [&](const float* img, int y, int x, float* c, const float* r) {
        re.img[ne] = img;
        re.iy[ne] = y;
        re.ix[ne] = x;
        oe.c[ne] = c;
        oe.r[ne] = r;
        if (++ne == MR) {
          gemm_tile_call<Arch, MR, NV>(re, MR, nc, p.taps(), cin_g, w, oe);
          ne = 0;
        }
      };
      for (int q = q0; q < q1; ++q) {
        const int b = q / rows_per_item, oy = row0 + (q - b * rows_per_item);
        const float* img = in.pixel(b, 0, 0) + g * cin_g;
        const int y = oy * p.stride_h - p.pad_top;
        float* orow = out.pixel(b, oy, 0) + ch0;
        const float* rrow = has_res ? res.pixel(b, oy, 0) + ch0 : nullptr;
        const bool inside = taps.ok && y >= 0 && y + span_h < H;
        const int ia = inside ? xa : 0, ib = inside ? xb : 0;
        for (int ox = 0; ox < ia; ++ox)
          push_edge(img, y, ox * p.stride_w - p.pad_left, orow + ox * osw, has_res ? rrow + ox * rsw : nullptr);
        if (ia < ib) {
          const float* src = img + y * in.stride_h + (ia * p.stride_w - p.pad_left) * in.stride_w;
          float* c = orow + ia * osw;
          const float* r = rrow ? rrow + ia * rsw : nullptr;
          for (int ox = ia; ox < ib;) {
            const int n = ib - ox < MR - ni ? ib - ox : MR - ni;
            for (int j = 0; j < n; ++j) {
              ri.base[ni + j] = src;
              oi.c[ni + j] = c;
              oi.r[ni + j] = r;
              src += step;
              c += osw;
              if (r) r += rsw;
            }
            ni += n;
            ox += n;
            if (ni == MR) {
              gemm_tile_call<Arch, MR, NV>(ri, MR, nc, taps.count, taps.kc, w, oi);
              ni = 0;
            }
          }
        }
        for (int ox = ib; ox < OW; ++ox)
          push_edge(img, y, ox * p.stride_w - p.pad_left, orow + ox * osw, has_res ? rrow + ox * rsw : nullptr);
      }
      if (ni > 0) {
        pad_tile<MR>(ni, [&](int i, int last) {
          ri.base[i] = ri.base[last];
          oi.c[i] = oi.c[last];
          oi.r[i] = oi.r[last];
        });
        gemm_tile_call<Arch, MR, NV>(ri, ni, nc, taps.count, taps.kc, w, oi);
      }
      if (ne > 0) {
        pad_tile<MR>(ne, [&](int i, int last) {
          re.img[i] = re.img[last];
          re.iy[i] = re.iy[last];
          re.ix[i] = re.ix[last];
          oe.c[i] = oe.c[last];
          oe.r[i] = oe.r[last];
        });
        gemm_tile_call<Arch, MR, NV>(re, ne, nc, p.taps(), cin_g, w, oe);
      }
    }
  }
}

// Rows [row0, row1) of every batch item, every group.
template <class Arch>
void conv2d_run(const Conv2dParams& p, ConstTensor in, const PackedWeights& pw, Tensor out, ConstTensor res,
                bool has_res, int row0, int row1, const float* zero) {
  const bool pointwise = p.taps() == 1 && p.stride_h == 1 && p.stride_w == 1 && !p.has_padding();
  // Pointwise over pixels that are evenly spaced in memory, in and out: one GEMM per batch
  // item, or one for the whole batch when the batch items are evenly spaced too.
  const bool flat_in = in.stride_h == index_t(in.w()) * in.stride_w;
  const bool flat_out = out.stride_h == index_t(out.w()) * out.stride_w &&
                        (!has_res || res.stride_h == index_t(res.w()) * res.stride_w);
  const Clamp clamp = activation_clamp(p.activation);
  const int cin_g = in.c() / p.groups;
  if (pointwise && flat_in && flat_out) {
    const bool whole = row0 == 0 && row1 == out.h();
    const bool flat_batch = whole && in.stride_n == index_t(in.h()) * in.stride_h &&
                            out.stride_n == index_t(out.h()) * out.stride_h &&
                            (!has_res || res.stride_n == index_t(res.h()) * res.stride_h);
    const int items = flat_batch ? 1 : in.n();
    const int m = (row1 - row0) * out.w() * (flat_batch ? in.n() : 1);
    for (int b = 0; b < items; ++b) {
      for (int g = 0; g < p.groups; ++g) {
        const index_t m0 = index_t(row0) * out.w();
        const float* a = in.pixel(b, 0, 0) + m0 * in.stride_w + g * cin_g;
        const index_t col0 = index_t(g) * pw.cols;
        float* c = out.pixel(b, 0, 0) + m0 * out.stride_w + col0;
        const float* r = has_res ? res.pixel(b, 0, 0) + m0 * res.stride_w + col0 : nullptr;
        for_panel_widths<Arch>(pw, [&](auto nv, int p0, int p1) {
          gemm_panels<Arch, decltype(nv)::value>(m, a, in.stride_w, pw, g, p0, p1, c, out.stride_w, r, res.stride_w,
                                                 clamp);
        });
      }
    }
    return;
  }
  const ConvTaps taps = conv_taps(p, in);
  for (int g = 0; g < p.groups; ++g) {
    for_panel_widths<Arch>(pw, [&](auto nv, int p0, int p1) {
      conv2d_panels<Arch, decltype(nv)::value>(p, in, pw, out, res, has_res, g, p0, p1, row0, row1, zero, taps);
    });
  }
}

}  // namespace detail

// out = act(conv(in, W) + bias [+ residual]).
//   in:  N x H x W x Cin, out: N x OH x OW x Cout (views; may be channel slices or tiles)
//   residual: optional view shaped like `out` (may alias `out` to accumulate in place)
//   ws: conv2d_workspace_bytes(p, in.shape) bytes
template <class Arch = simd::default_arch>
Status conv2d(const Conv2dParams& p, ConstTensor in, const PackedWeights& pw, Tensor out, Workspace& ws,
              const ConstTensor* residual = nullptr, RowRange rows = {}) {
  EDGENN_TRY(p.validate(in.shape, out.c()));
  EDGENN_CHECK(out.shape == p.output_shape(in.shape, out.c()), Error::shape_mismatch,
               "conv2d: output view does not match the input shape and parameters");
  EDGENN_CHECK(pw.data && pw.groups == p.groups && pw.cols * p.groups == out.c() &&
                   pw.k == p.taps() * (in.c() / p.groups),
               Error::shape_mismatch, "conv2d: packed weights do not match the layer");
  EDGENN_CHECK(packed_for<Arch>(pw), Error::invalid_argument,
               "conv2d: weights were packed for another SIMD architecture");
  EDGENN_CHECK(!residual || residual->shape == out.shape, Error::shape_mismatch,
               "conv2d: residual shape differs from the output");
  const int row0 = rows.begin, row1 = rows.end < 0 ? out.h() : rows.end;
  EDGENN_CHECK(0 <= row0 && row0 <= row1 && row1 <= out.h(), Error::invalid_argument,
               "conv2d: output row range outside the output");
  if (row0 == row1) return Status::ok();

  WorkspaceScope scope(ws);
  const float* zero = nullptr;
  if (p.has_padding()) {
    float* z = ws.take<float>(std::size_t(in.c() / p.groups));
    EDGENN_TRY(ws.status());
    if (ws.measuring()) return Status::ok();
    for (int i = 0; i < in.c() / p.groups; ++i) z[i] = 0.0f;
    zero = z;
  } else if (ws.measuring()) {
    return Status::ok();
  }
  const ConstTensor res = residual ? *residual : ConstTensor();
  detail::conv2d_run<Arch>(p, in, pw, out, res, residual != nullptr, row0, row1, zero);
  return Status::ok();
}

}  // namespace edgenn::kernels
