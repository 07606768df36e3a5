// All tiles of a plan in one process: the synchronisation points are run tile after tile
// (every tile packs, then every tile unpacks and computes), messages are handed over in
// memory. Same TileRunner code as the MPI runtime; weight gradients summed in tile order.
#pragma once

#include "edgenn/dist/reference.hpp"
#include "edgenn/dist/tile_exec.hpp"

namespace edgenn::dist {

namespace detail {
// outgoing[src][dst] -> incoming[dst][src]
inline std::vector<PeerBuffers> route(std::vector<PeerBuffers>& outgoing) {
  const std::size_t T = outgoing.size();
  std::vector<PeerBuffers> incoming(T, PeerBuffers(T));
  for (std::size_t s = 0; s < T; ++s)
    for (std::size_t d = 0; d < T; ++d) incoming[d][s] = std::move(outgoing[s][d]);
  return incoming;
}
}  // namespace detail

inline Status simulate_step(const Plan& plan, const PackedModel& model, ConstTensor input, const LossFn& loss,
                            StepResult& res) {
  const int T = plan.tile_count(), L = plan.depth(), n = input.n();
  std::vector<TileRunner> tiles;
  for (int t = 0; t < T; ++t) tiles.emplace_back(plan, t);
  for (auto& t : tiles) t.begin(input, model);
  std::vector<PeerBuffers> out(T);
  for (std::size_t g = 0; g < plan.fwd_groups.size(); ++g) {
    for (int t = 0; t < T; ++t) tiles[t].pack_forward(int(g), out[t]);
    std::vector<PeerBuffers> in = detail::route(out);
    for (int t = 0; t < T; ++t) EDGENN_TRY(tiles[t].run_forward(int(g), in[t]));
  }
  // Stitch the output cores (the head's gather), run the loss, hand the cores of dy back.
  res.output.reset(plan.stack.map_rect(L), n, plan.stack.map_c(L));
  for (int t = 0; t < T; ++t) copy_view(tiles[t].output_core(), res.output.sub(plan.tiles[t].core[L]));
  RegionBuf delta;
  delta.reset(plan.stack.map_rect(L), n, plan.stack.map_c(L));
  res.loss = loss(res.output.view(), delta.view());
  for (int t = 0; t < T; ++t) tiles[t].set_output_grad(delta.sub(plan.tiles[t].core[L]));
  for (int g = int(plan.bwd_groups.size()) - 1; g >= 0; --g) {
    for (int t = 0; t < T; ++t) EDGENN_TRY(tiles[t].pack_backward(g, out[t]));
    std::vector<PeerBuffers> in = detail::route(out);
    for (int t = 0; t < T; ++t) EDGENN_TRY(tiles[t].run_backward(g, in[t]));
  }
  res.grads.resize_like(plan.stack);
  res.grads.zero();
  res.peak_bytes = 0;
  for (int t = 0; t < T; ++t) {
    res.grads.add(tiles[t].grads());
    res.peak_bytes = std::max(res.peak_bytes, tiles[t].peak_bytes());
  }
  if (plan.input_grad) {
    res.input_grad.reset(plan.stack.map_rect(0), n, plan.stack.map_c(0));
    for (int t = 0; t < T; ++t) copy_view(tiles[t].input_grad_core(), res.input_grad.sub(plan.tiles[t].core[0]));
  }
  return Status::ok();
}

}  // namespace edgenn::dist
