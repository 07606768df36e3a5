// Single-device training step of a fused stack (no tiles): the oracle the tiled runs are
// compared against, and the baseline of the measurements. Same kernels, whole maps.
#pragma once

#include <functional>
#include <vector>

#include "edgenn/dist/model.hpp"
#include "edgenn/dist/tile_exec.hpp"

namespace edgenn::dist {

// Consumer of the stack output: fills dy (shaped like y) with dLoss/dy and returns the loss.
using LossFn = std::function<float(ConstTensor y, Tensor dy)>;

struct StepResult {
  RegionBuf output;      // map L, whole batch
  RegionBuf input_grad;  // map 0 (when asked for)
  ModelGrads grads;      // summed over tiles
  float loss = 0.0f;
  std::size_t peak_bytes = 0;  // largest per-tile activation + halo storage
};

inline Status reference_step(const Stack& st, const PackedModel& model, ConstTensor input, const LossFn& loss,
                             StepResult& res, bool input_grad = false) {
  EDGENN_TRY(st.validate());
  const int L = st.depth(), n = input.n();
  std::vector<RegionBuf> y(L);
  std::vector<unsigned char> wsmem;
  auto workspace = [&](std::size_t bytes) {
    if (wsmem.size() < bytes + kAlignment) wsmem.resize(bytes + kAlignment);
    return Workspace(wsmem.data(), wsmem.size());
  };
  for (int l = 0; l < L; ++l) {
    const LayerDesc& ly = st.layers[l];
    const ConstTensor x = l == 0 ? input : ConstTensor(y[l - 1].view());
    y[l].reset(st.map_rect(l + 1), n, ly.cout);
    if (ly.kind == LayerKind::maxpool) {
      EDGENN_TRY(kernels::max_pool2d(ly.pool_params(), x, y[l].view()));
    } else if (ly.kind == LayerKind::depthwise) {
      Workspace ws = workspace(4096);
      EDGENN_TRY(kernels::depthwise_conv2d(ly.conv_params(), x, model.layer(l).dw_packed, y[l].view(), ws));
    } else {
      Workspace ws = workspace(kernels::conv2d_workspace_bytes(ly.conv_params(), x.shape) + 4096);
      EDGENN_TRY(kernels::conv2d(ly.conv_params(), x, model.layer(l).packed, y[l].view(), ws));
    }
  }
  std::size_t bytes = 0;
  for (const RegionBuf& b : y) bytes += b.bytes();
  res.peak_bytes = bytes + std::size_t(input.shape.size()) * sizeof(float);
  res.output = y[L - 1];
  RegionBuf delta;
  delta.reset(st.map_rect(L), n, st.map_c(L));
  res.loss = loss(res.output.view(), delta.view());
  res.grads.resize_like(st);
  res.grads.zero();
  for (int l = L - 1; l >= 0; --l) {
    const LayerDesc& ly = st.layers[l];
    const ConstTensor x = l == 0 ? input : ConstTensor(y[l - 1].view());
    EDGENN_TRY(kernels::activation_backward(y[l].view(), delta.view(), delta.view(), ly.act));
    const bool need_dx = l > 0 || input_grad;
    RegionBuf dx;
    dx.reset(st.map_rect(l), n, ly.cin);
    if (ly.kind == LayerKind::maxpool) {
      Workspace ws = workspace(kernels::max_pool2d_backward_workspace_bytes(ly.cin) + 4096);
      if (need_dx) EDGENN_TRY(kernels::max_pool2d_backward(ly.pool_params(), x, delta.view(), dx.view(), ws));
    } else {
      const kernels::Conv2dParams p = ly.conv_params();
      LayerGrads& g = res.grads.layers[l];
      if (ly.kind == LayerKind::depthwise) {
        Workspace ws = workspace(kernels::depthwise_backward_weights_workspace_bytes(p, ly.cin) + 4096);
        EDGENN_TRY(kernels::depthwise_backward_weights(p, x, delta.view(), g.w.data(), g.b.data(), ws));
        if (need_dx)
          EDGENN_TRY(kernels::depthwise_backward_input(p, delta.view(), model.layer(l).dw_packed, dx.view(), ws));
      } else {
        Workspace ws = workspace(kernels::conv2d_backward_weights_workspace_bytes(p, ly.cin, ly.cout) +
                                 kernels::conv2d_backward_input_workspace_bytes(p, ly.cout) + 4096);
        EDGENN_TRY(kernels::conv2d_backward_weights(p, x, delta.view(), g.w.data(), g.b.data(), ws));
        if (need_dx)
          EDGENN_TRY(kernels::conv2d_backward_input(p, delta.view(), model.layer(l).dx_packed, dx.view(), ws));
      }
    }
    delta = std::move(dx);
  }
  if (input_grad) res.input_grad = std::move(delta);
  return Status::ok();
}

}  // namespace edgenn::dist
