// Backward of the fully connected layer (fully_connected.hpp): y[b][o] = sum_i x[b][i] W[o][i] + bias[o].
//   dX[b][i] = sum_o dY[b][o] W[o][i]          (a GEMM over the weights as stored, [out][in])
//   dW[o][i] = sum_b dY[b][o] x[b][i], db[o] = sum_b dY[b][o]
// A fully connected layer is a 1x1 convolution, so both gradients run on the convolution's
// backward kernels (conv2d_backward.hpp), with the batch as one row of pixels (1 x 1 x N x in:
// the kernels' per-row work is paid once).
// The layer's activation is not included: apply its backward to dY first.
#pragma once

#include "edgenn/kernels/conv2d_backward.hpp"
#include "edgenn/kernels/fully_connected.hpp"

namespace edgenn::kernels {

namespace detail {
// `rows` rows of `cols` floats at stride ld as a 1 x 1 x rows x cols tensor.
template <class T>
constexpr TensorView<T> rows_as_pixels(T* data, int rows, int cols, index_t ld) {
  return TensorView<T>(data, Shape{1, 1, rows, cols}, ld * rows, ld * rows, ld);
}
constexpr Conv2dParams fc_as_conv() { return Conv2dParams::square(1); }
}  // namespace detail

template <class Arch = simd::default_arch>
constexpr index_t fc_input_grad_packed_floats(int in_features, int out_features) {
  return conv_input_grad_packed_floats<Arch>(detail::fc_as_conv(), in_features, out_features);
}

// Pack PyTorch-layout weights [out][in] for fully_connected_backward_input (once per step).
template <class Arch = simd::default_arch>
ConvInputGradWeights pack_fc_input_grad_weights(int in_features, int out_features, const float* w_oi, float* dst) {
  return pack_conv_input_grad_weights<Arch>(detail::fc_as_conv(), in_features, out_features, w_oi, dst);
}

constexpr std::size_t fc_backward_input_workspace_bytes(int out_features) {
  return conv2d_backward_input_workspace_bytes(detail::fc_as_conv(), out_features);
}

// dx (batch rows of in_features at stride lddx) = dy (rows of out_features at stride lddy) * W;
// written, or added with `accumulate`. w: pack_fc_input_grad_weights.
// ws: fc_backward_input_workspace_bytes(out_features).
template <class Arch = simd::default_arch>
Status fully_connected_backward_input(int batch, const float* dy, index_t lddy, const ConvInputGradWeights& w, float* dx,
                                      index_t lddx, Workspace& ws, bool accumulate = false) {
  const int in_f = w.cin_g, out_f = w.cout_g;
  EDGENN_CHECK(batch >= 0 && dy && dx && w.data && w.groups == 1, Error::invalid_argument,
               "fully_connected_backward_input: bad batch, buffers or weights");
  EDGENN_CHECK(lddy >= out_f && lddx >= in_f, Error::shape_mismatch,
               "fully_connected_backward_input: row stride below the width");
  if (batch == 0) return Status::ok();
  return conv2d_backward_input<Arch>(detail::fc_as_conv(), detail::rows_as_pixels(dy, batch, out_f, lddy), w,
                                     detail::rows_as_pixels(dx, batch, in_f, lddx), ws, accumulate);
}

template <class Arch = simd::default_arch>
constexpr std::size_t fc_backward_weights_workspace_bytes(int in_features, int out_features) {
  return conv2d_backward_weights_workspace_bytes<Arch>(detail::fc_as_conv(), in_features, out_features);
}

// dW ([out][in]) and db ([out], may be null) from the layer input x (rows of in_features at
// stride ldx) and dy (rows of out_features at stride lddy); written, or added with `accumulate`.
// ws: fc_backward_weights_workspace_bytes<Arch>(in_features, out_features).
template <class Arch = simd::default_arch>
Status fully_connected_backward_weights(int batch, int in_features, int out_features, const float* x, index_t ldx,
                                        const float* dy, index_t lddy, float* dw, float* db, Workspace& ws,
                                        bool accumulate = false) {
  EDGENN_CHECK(batch >= 0 && in_features > 0 && out_features > 0 && x && dy && dw, Error::invalid_argument,
               "fully_connected_backward_weights: bad sizes or buffers");
  EDGENN_CHECK(ldx >= in_features && lddy >= out_features, Error::shape_mismatch,
               "fully_connected_backward_weights: row stride below the width");
  if (batch == 0) {
    if (!accumulate) {
      for (index_t i = 0; i < index_t(in_features) * out_features; ++i) dw[i] = 0.0f;
      if (db)
        for (int o = 0; o < out_features; ++o) db[o] = 0.0f;
    }
    return Status::ok();
  }
  return conv2d_backward_weights<Arch>(detail::fc_as_conv(), detail::rows_as_pixels(x, batch, in_features, ldx),
                                       detail::rows_as_pixels(dy, batch, out_features, lddy), dw, db, ws, accumulate);
}

}  // namespace edgenn::kernels
