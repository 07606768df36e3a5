// tiled_project: step time and memory of tiled training projected with the cost model for a
// cluster of 2-6 devices (docs/tiled_training.md, "Projection").
//
// The per-layer rates are profiled on this machine and scaled to the device profile by the
// ratio of achieved conv throughput (host GFLOP/s measured here, device GFLOP/s given); links
// are alpha + beta * bytes. One tile per core (the seed's setup: 4 tiles per quad-core board),
// the boards' link shared by its tiles. Speedup is against one core of the device, as the seed
// reports it.
//
//   tiled_project --size 608 --device-gflops 1.0 --cores-per-device 4 --link-mbps 100 --latency-us 300
#include <CLI/CLI.hpp>
#include <cstdio>

#include "edgenn/dist/cost.hpp"
#include "edgenn/dist/workloads.hpp"

using namespace edgenn::dist;

int main(int argc, char** argv) {
  CLI::App app{"Project tiled-training step time and memory for a cluster of edge devices"};
  int size = 608, profile_size = 160, batch = 1, cores = 4, reps = 2;
  double device_gflops = 1.0, link_mbps = 100, latency_us = 300, intra_gbps = 2.0;
  app.add_option("--size", size, "YOLOv2 front input size (multiple of 16)");
  app.add_option("--profile-size", profile_size, "input size profiled on this machine");
  app.add_option("--batch", batch, "batch size");
  app.add_option("--device-gflops", device_gflops, "achieved fp32 conv GFLOP/s of one device core");
  app.add_option("--cores-per-device", cores, "tiles (ranks) per device");
  app.add_option("--link-mbps", link_mbps, "device network bandwidth, Mbit/s");
  app.add_option("--latency-us", latency_us, "one-way message latency between devices, us");
  app.add_option("--intra-gbps", intra_gbps, "bandwidth between tiles of one device, GB/s");
  app.add_option("--reps", reps, "profiling repetitions");
  CLI11_PARSE(app, argc, argv);

  const Stack prof = yolov2_front(profile_size), st = yolov2_front(size);
  CostModel cm;
  if (!profile_layers(prof, 1, reps, cm).is_ok()) return 1;
  // Host conv throughput from the profile: 2 * MACs per output pixel / time per output pixel.
  double flops = 0, secs = 0;
  for (int l = 0; l < prof.depth(); ++l) {
    const LayerDesc& ly = prof.layers[l];
    if (!ly.has_weights()) continue;
    const double px = double(prof.map_rect(l + 1).area());
    flops += 2.0 * ly.kh * ly.kw * ly.cin * ly.cout * px;
    secs += cm.layers[l].fwd * px;
  }
  const double host_gflops = flops / secs / 1e9, scale = host_gflops / device_gflops;
  for (auto& r : cm.layers) {
    r.fwd *= scale;
    r.dw *= scale;
    r.dx *= scale;
  }
  cm.sgd_s_per_param *= scale;
  std::printf("host conv forward: %.1f GFLOP/s per core; device profile %.2f GFLOP/s per core (x%.1f slower)\n",
              host_gflops, device_gflops, scale);
  std::printf("link %.0f Mbit/s shared by %d tiles per device, latency %.0f us\n\n", link_mbps, cores, latency_us);

  // One core alone: the whole map on one tile, no communication.
  Plan one;
  if (!make_plan(st, 1, 1, fully_fused(st.depth()), fully_fused(st.depth()), one).is_ok()) return 1;
  CostModel solo = cm;
  const Prediction p1 = predict(one, solo, batch);
  std::printf("| devices | tiles | grid | groups fwd / bwd (auto) | step s | speedup vs 1 core | "
              "memory/tile MB | reduction vs 1 core | fully fused s | layer-wise s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| 1 core | 1 | 1x1 | - | %.2f | 1.00 | %.1f | 1.0x | - | - |\n", p1.total_s, p1.peak_bytes / 1e6);
  for (int d = 2; d <= 6; ++d) {
    const int tiles = d * cores;
    int gr = 1;
    for (int r = 1; r * r <= tiles; ++r)
      if (tiles % r == 0) gr = r;
    const int gc = tiles / gr;
    // Inter-device bandwidth shared by the device's tiles; the worst tile talks across devices.
    cm.alpha = latency_us * 1e-6;
    cm.beta = 1.0 / (link_mbps * 1e6 / 8 / cores);
    AutoGrouping ag;
    if (!auto_grouping(st, gr, gc, cm, batch, 0, ag).is_ok()) continue;
    auto list = [](const Grouping& g) {
      std::string s;
      for (int v : g) s += (s.empty() ? "" : ",") + std::to_string(v);
      return s;
    };
    Plan pf, pl;
    (void)make_plan(st, gr, gc, fully_fused(st.depth()), fully_fused(st.depth()), pf);
    (void)make_plan(st, gr, gc, layer_wise(st.depth()), layer_wise(st.depth()), pl);
    const double tf = predict(pf, cm, batch).total_s, tl = predict(pl, cm, batch).total_s;
    std::printf("| %d | %d | %dx%d | {%s} / {%s} | %.2f | %.2f | %.1f | %.1fx | %.2f | %.2f |\n", d, tiles, gr, gc,
                list(ag.fwd).c_str(), list(ag.bwd).c_str(), ag.predicted.total_s, p1.total_s / ag.predicted.total_s,
                ag.predicted.peak_bytes / 1e6, double(p1.peak_bytes) / ag.predicted.peak_bytes, tf, tl);
  }
  (void)intra_gbps;
  return 0;
}
