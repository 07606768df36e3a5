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

// Window rows of MR output pixels: per tap, a pointer to each pixel's input channels or
// to the zero vector when the tap falls into the padding.
template <int MR>
struct ConvWindowRows {
  const float* in;  // batch item, channel offset of the group applied
  index_t sh, sw;
  int H, W, kw, dh, dw;
  const float* zero;
  int iy[MR], ix[MR];  // top-left input coordinate of each pixel's window
  bool interior;       // every window of the tile lies inside the input

  EDGENN_INLINE void operator()(int t, const float* (&a)[MR]) const {
    const int ky = t / kw, kx = t - (t / kw) * kw;
    const int oy = ky * dh, ox = kx * dw;
    if (interior) {
      for (int i = 0; i < MR; ++i) a[i] = in + (iy[i] + oy) * sh + (ix[i] + ox) * sw;
    } else {
      for (int i = 0; i < MR; ++i) {
        const int y = iy[i] + oy, x = ix[i] + ox;
        a[i] = (unsigned(y) < unsigned(H) && unsigned(x) < unsigned(W)) ? in + y * sh + x * sw : zero;
      }
    }
  }
};

template <class Arch, int MR, int NV>
void conv2d_windows(const Conv2dParams& p, ConstTensor in, const PackedWeights& pw, Tensor out, ConstTensor res,
                    bool has_res, int b, int g, int row0, int row1, const float* zero) {
  const int OW = out.w();
  const int cin_g = in.c() / p.groups;
  const Clamp clamp = activation_clamp(p.activation);
  const int m_begin = row0 * OW, m_end = row1 * OW;
  // Windows that can never touch the padding: rows/cols whose whole span is inside.
  const int span_h = p.dilation_h * (p.kernel_h - 1), span_w = p.dilation_w * (p.kernel_w - 1);
  for (int pn = 0; pn < pw.panels; ++pn) {
    const float* w = pw.panel(g, pn);
    const int n0 = pn * pw.nr;
    const int nc = pw.cols - n0 < pw.nr ? pw.cols - n0 : pw.nr;
    const int ch0 = g * pw.cols + n0;
    for (int m0 = m_begin; m0 < m_end; m0 += MR) {
      const int mr = m_end - m0 < MR ? m_end - m0 : MR;
      ConvWindowRows<MR> rows;
      rows.in = in.pixel(b, 0, 0) + g * cin_g;
      rows.sh = in.stride_h;
      rows.sw = in.stride_w;
      rows.H = in.h();
      rows.W = in.w();
      rows.kw = p.kernel_w;
      rows.dh = p.dilation_h;
      rows.dw = p.dilation_w;
      rows.zero = zero;
      rows.interior = true;
      TileOutput<MR> o;
      o.clamp = clamp;
      o.residual = has_res;
      int oy = m0 / OW, ox = m0 - (m0 / OW) * OW;
      for (int i = 0; i < MR; ++i) {
        if (i < mr && i > 0) {
          if (++ox == OW) {
            ox = 0;
            ++oy;
          }
        }
        const int y = oy * p.stride_h - p.pad_top, x = ox * p.stride_w - p.pad_left;
        rows.iy[i] = y;
        rows.ix[i] = x;
        if (y < 0 || x < 0 || y + span_h >= rows.H || x + span_w >= rows.W) rows.interior = false;
        o.c[i] = out.pixel(b, oy, ox) + ch0;
        o.r[i] = has_res ? res.pixel(b, oy, ox) + ch0 : nullptr;
      }
      gemm_tile<Arch, MR, NV>(rows, mr, nc, p.taps(), cin_g, w, o);
    }
  }
}

template <class Arch, int MR, int NV>
void conv2d_dispatch(const Conv2dParams& p, ConstTensor in, const PackedWeights& pw, Tensor out, ConstTensor res,
                     bool has_res, int row0, int row1, const float* zero) {
  const bool pointwise = p.taps() == 1 && p.stride_h == 1 && p.stride_w == 1 && !p.has_padding();
  for (int b = 0; b < in.n(); ++b) {
    for (int g = 0; g < p.groups; ++g) {
      // Pointwise over pixels that are evenly spaced in memory, in and out: one GEMM.
      const bool flat_in = in.stride_h == index_t(in.w()) * in.stride_w;
      const bool flat_out = out.stride_h == index_t(out.w()) * out.stride_w &&
                            (!has_res || res.stride_h == index_t(res.w()) * res.stride_w);
      if (pointwise && flat_in && flat_out) {
        const int cin_g = in.c() / p.groups;
        const int m0 = row0 * out.w(), m = (row1 - row0) * out.w();
        const float* a = in.pixel(b, 0, 0) + index_t(m0) * in.stride_w + g * cin_g;
        const index_t col0 = index_t(g) * pw.cols;
        gemm_panel_loop<Arch, MR, NV>(m, a, in.stride_w, pw, g, out.pixel(b, 0, 0) + m0 * out.stride_w + col0,
                                      out.stride_w, has_res ? res.pixel(b, 0, 0) + m0 * res.stride_w + col0 : nullptr,
                                      res.stride_w, activation_clamp(p.activation));
      } else {
        conv2d_windows<Arch, MR, NV>(p, in, pw, out, res, has_res, b, g, row0, row1, zero);
      }
    }
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
  const PackedWeights expect = packed_layout<Arch>(pw.k, pw.cols, pw.groups);
  EDGENN_CHECK(pw.nr == expect.nr && pw.nv == expect.nv, Error::invalid_argument,
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
  using PC = PanelConfig<Arch>;
  switch (pw.nv) {
    case 1:
      detail::conv2d_dispatch<Arch, PC::rows_for(1), 1>(p, in, pw, out, res, residual != nullptr, row0, row1, zero);
      break;
    case 2:
      detail::conv2d_dispatch<Arch, PC::rows_for(2), 2>(p, in, pw, out, res, residual != nullptr, row0, row1, zero);
      break;
    default:
      if constexpr (PC::registers >= 32 || PC::lanes == 1) {
        detail::conv2d_dispatch<Arch, PC::rows_for(4), 4>(p, in, pw, out, res, residual != nullptr, row0, row1,
                                                          zero);
      }
      break;
  }
  return Status::ok();
}

}  // namespace edgenn::kernels
