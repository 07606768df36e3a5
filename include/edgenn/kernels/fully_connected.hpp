// Fully connected layer: y[b][o] = act(sum_i x[b][i] * W[o][i] + bias[o]).
// A GEMM with one row per batch item; weights packed from PyTorch's [out][in] layout.
// Batches of one or two rows reduce with split accumulators (latency, not FMA throughput,
// bounds a one-row GEMM), so their sums are ordered differently from larger batches'.
#pragma once

#include "edgenn/kernels/gemm.hpp"

namespace edgenn::kernels {

template <class Arch = simd::default_arch>
constexpr index_t fc_packed_floats(int in_features, int out_features) {
  return packed_floats<Arch>(in_features, out_features, 1);
}

template <class Arch = simd::default_arch>
PackedWeights pack_fc_weights(int in_features, int out_features, const float* w_oi, const float* bias, float* dst) {
  return pack_weights<Arch>(in_features, out_features, 1, w_oi, bias, dst);
}

// x: batch rows of `in_features` floats at stride ldx; y: rows of out_features at stride ldy.
template <class Arch = simd::default_arch>
Status fully_connected(int batch, const float* x, index_t ldx, const PackedWeights& w, float* y, index_t ldy,
                       Activation act = Activation::none) {
  EDGENN_CHECK(batch >= 0 && w.data && w.groups == 1, Error::invalid_argument,
               "fully_connected: bad batch or weights");
  EDGENN_CHECK(ldx >= w.k && ldy >= w.cols, Error::shape_mismatch, "fully_connected: row stride below the width");
  EDGENN_CHECK(packed_for<Arch>(w), Error::invalid_argument,
               "fully_connected: weights were packed for another SIMD architecture");
  const Clamp clamp = activation_clamp(act);
  // One or two rows: the reduction split over several accumulators (gemm_tile_rows; SIMD
  // backends only: the scalar backend has no such kernel, and no second copy of its GEMM).
  if (batch > 2 || simd::Vec<Arch>::size == 1) {
    gemm<Arch>(batch, x, ldx, w, 0, y, ldy, nullptr, 0, clamp);
  } else if (batch > 0) {
    for_panel_widths<Arch>(w, [&](auto nv, int p0, int p1) {
      gemm_panels<Arch, decltype(nv)::value, true>(batch, x, ldx, w, 0, p0, p1, y, ldy, nullptr, 0, clamp);
    });
  }
  return Status::ok();
}

}  // namespace edgenn::kernels
