// Cost model and automatic layer grouping (specs/tiled_training.md §6.2).
//
//   compute: per-layer rates measured on the device (profile_layers): seconds per output pixel
//            forward, per output pixel for the weight gradient, per input pixel for the input
//            gradient; a tile's work is its plan's regions times these rates.
//   links:   one-way time of an m-byte message = alpha + beta * m, from a ping-pong on the real
//            transport (mpi_ping_pong in mpi_cost.hpp), or a documented device profile.
//   step:    sum over synchronisation phases of the slowest tile's (compute + alpha * messages
//            + beta * bytes received), plus the boundary gather/scatter, the tail, and the
//            weight-gradient all-reduce (2 (K-1) alpha + 2 beta * bytes * (K-1) / K).
//   memory:  per tile, the forward activations kept for backward (every layer's computed
//            region, plus assembled group inputs) and the largest backward halo assembly.
// auto_grouping picks forward then backward groupings with an O(L^2) dynamic program over
// layer boundaries (a group's cost depends only on its own layers), under a per-device memory
// limit via a Lagrangian penalty on the forward activations.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <limits>
#include <vector>

#include "edgenn/dist/model.hpp"
#include "edgenn/dist/plan.hpp"
#include "edgenn/dist/reference.hpp"

namespace edgenn::dist {

struct LayerRates {
  double fwd = 0;  // s per output pixel per batch item
  double dw = 0;   // s per output pixel per batch item (weight gradient)
  double dx = 0;   // s per input pixel per batch item (input gradient)
};

struct CostModel {
  std::vector<LayerRates> layers;
  double alpha = 50e-6;     // s per message
  double beta = 1.0 / 1e8;  // s per byte
  double tail_s = 0;        // head's tail + loss per step (whole batch)
  double sgd_s_per_param = 1e-9;
  // Measured single-device step / sum of the per-layer kernel times (profile_layers).
  double calibration = 1.0;
  // Ranks sharing a core run their compute one after the other.
  double oversubscription = 1.0;
};

struct Prediction {
  double fwd_s = 0, bwd_s = 0, halo_s = 0, boundary_s = 0, allreduce_s = 0, tail_s = 0, total_s = 0;
  long halo_bytes = 0;  // received by the busiest tile per step
  std::size_t peak_bytes = 0;  // per tile
};

namespace detail {
inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace detail

// Per-layer rates, timing the single-device kernels on whole maps (best of `reps`).
inline Status profile_layers(const Stack& st, int batch, int reps, CostModel& cm) {
  EDGENN_TRY(st.validate());
  const int L = st.depth();
  cm.layers.assign(L, LayerRates{});
  const ModelParams params = random_params(st, 1);
  PackedModel model;
  model.pack(st, params);
  std::vector<float> x(std::size_t(batch) * st.in_h * st.in_w * st.in_c, 0.5f);
  const ConstTensor input = ConstTensor::dense(x.data(), Shape{batch, st.in_h, st.in_w, st.in_c});
  std::vector<RegionBuf> maps(L + 1);
  std::vector<unsigned char> wsmem(1 << 20);
  auto workspace = [&](std::size_t bytes) {
    if (wsmem.size() < bytes + kAlignment) wsmem.resize(bytes + kAlignment);
    return Workspace(wsmem.data(), wsmem.size());
  };
  ModelGrads g;
  g.resize_like(st);
  for (int l = 0; l < L; ++l) {
    const LayerDesc& ly = st.layers[l];
    const ConstTensor in = l == 0 ? input : ConstTensor(maps[l].view());
    maps[l + 1].reset(st.map_rect(l + 1), batch, ly.cout);
    RegionBuf dy, dx;
    dy.reset(st.map_rect(l + 1), batch, ly.cout);
    std::fill(dy.data.begin(), dy.data.end(), 0.01f);
    dx.reset(st.map_rect(l), batch, ly.cin);
    double tf = 1e30, tw = 1e30, tx = 1e30;
    for (int r = 0; r < reps; ++r) {
      double t0 = detail::now_s();
      if (ly.kind == LayerKind::maxpool) {
        EDGENN_TRY(kernels::max_pool2d(ly.pool_params(), in, maps[l + 1].view()));
      } else if (ly.kind == LayerKind::depthwise) {
        Workspace ws = workspace(4096);
        EDGENN_TRY(kernels::depthwise_conv2d(ly.conv_params(), in, model.layer(l).dw_packed, maps[l + 1].view(), ws));
      } else {
        Workspace ws = workspace(kernels::conv2d_workspace_bytes(ly.conv_params(), in.shape) + 4096);
        EDGENN_TRY(kernels::conv2d(ly.conv_params(), in, model.layer(l).packed, maps[l + 1].view(), ws));
      }
      double t1 = detail::now_s();
      tf = std::min(tf, t1 - t0);
      const kernels::Conv2dParams p = ly.conv_params();
      if (ly.kind == LayerKind::conv) {
        Workspace ws = workspace(kernels::conv2d_backward_weights_workspace_bytes(p, ly.cin, ly.cout) + 4096);
        EDGENN_TRY(kernels::conv2d_backward_weights(p, in, dy.view(), g.layers[l].w.data(), g.layers[l].b.data(), ws));
        double t2 = detail::now_s();
        Workspace ws2 = workspace(kernels::conv2d_backward_input_workspace_bytes(p, ly.cout) + 4096);
        EDGENN_TRY(kernels::conv2d_backward_input(p, dy.view(), model.layer(l).dx_packed, dx.view(), ws2));
        double t3 = detail::now_s();
        tw = std::min(tw, t2 - t1);
        tx = std::min(tx, t3 - t2);
      } else if (ly.kind == LayerKind::depthwise) {
        Workspace ws = workspace(kernels::depthwise_backward_weights_workspace_bytes(p, ly.cin) + 4096);
        EDGENN_TRY(
            kernels::depthwise_backward_weights(p, in, dy.view(), g.layers[l].w.data(), g.layers[l].b.data(), ws));
        double t2 = detail::now_s();
        EDGENN_TRY(kernels::depthwise_backward_input(p, dy.view(), model.layer(l).dw_packed, dx.view(), ws));
        double t3 = detail::now_s();
        tw = std::min(tw, t2 - t1);
        tx = std::min(tx, t3 - t2);
      } else {
        Workspace ws = workspace(kernels::max_pool2d_backward_workspace_bytes(ly.cin) + 4096);
        EDGENN_TRY(kernels::max_pool2d_backward(ly.pool_params(), in, dy.view(), dx.view(), ws));
        tw = 0;
        tx = std::min(tx, detail::now_s() - t1);
      }
    }
    const double out_px = double(batch) * st.map_rect(l + 1).area(), in_px = double(batch) * st.map_rect(l).area();
    cm.layers[l].fwd = tf / out_px;
    cm.layers[l].dw = tw / out_px;
    cm.layers[l].dx = tx / in_px;
  }
  // Per-step work proportional to the parameters: packing the weights and the SGD update.
  double count = 0;
  for (const LayerDesc& ly : st.layers) count += double(ly.weight_count()) + (ly.has_weights() ? ly.cout : 0);
  if (count > 0) {
    ModelParams p = params;
    Sgd sgd;
    sgd.momentum = 0.9f;
    double best = 1e30;
    for (int r = 0; r < std::max(1, reps); ++r) {
      const double t0 = detail::now_s();
      model.pack(st, p);
      sgd.step(p, g);
      best = std::min(best, detail::now_s() - t0);
    }
    cm.sgd_s_per_param = best / count;
  }
  // Whole-step calibration: time single-device steps (median) and scale the layer rates so
  // their sum matches, which folds in what the per-layer kernels leave out (buffer set-up,
  // activation derivatives, cache effects between layers).
  std::vector<double> steps;
  const LossFn loss = [](ConstTensor, Tensor dy) {
    for (int b = 0; b < dy.n(); ++b)
      for (int y = 0; y < dy.h(); ++y)
        for (int x = 0; x < dy.w(); ++x)
          for (int c = 0; c < dy.c(); ++c) dy.at(b, y, x, c) = 0.01f;
    return 0.0f;
  };
  for (int r = 0; r < std::max(3, reps); ++r) {
    const double t0 = detail::now_s();
    StepResult res;
    EDGENN_TRY(reference_step(st, model, input, loss, res));
    steps.push_back(detail::now_s() - t0);
  }
  std::sort(steps.begin(), steps.end());
  double layers = 0;
  for (int l = 0; l < L; ++l)
    layers += (cm.layers[l].fwd + cm.layers[l].dw) * batch * st.map_rect(l + 1).area() +
              cm.layers[l].dx * batch * st.map_rect(l).area();
  cm.calibration = layers > 0 ? steps[steps.size() / 2] / layers : 1.0;
  for (LayerRates& r : cm.layers) {
    r.fwd *= cm.calibration;
    r.dw *= cm.calibration;
    r.dx *= cm.calibration;
  }
  return Status::ok();
}

namespace detail {

inline double sync_comm(const Sync& s, int n, const CostModel& cm, const Stack&, long* bytes) {
  long values = 0;
  int msgs = 0;
  for (long v : s.recv_values) {
    values += v;
    msgs += v > 0;
  }
  if (bytes) *bytes += values * n * 4;
  return msgs * cm.alpha + double(values) * n * 4 * cm.beta;
}

inline double fwd_group_compute(const Plan& p, int t, int a, int b, int n, const CostModel& cm) {
  double s = 0;
  for (int l = a; l <= b; ++l) s += cm.layers[l].fwd * p.tiles[t].fwd_out[l].area() * n;
  return s * cm.oversubscription;
}
inline double bwd_group_compute(const Plan& p, int t, int a, int b, int n, const CostModel& cm) {
  double s = 0;
  for (int l = a; l <= b; ++l)
    s += (cm.layers[l].dw * p.tiles[t].core[l + 1].area() + cm.layers[l].dx * p.tiles[t].bwd_dx[l].area()) * n;
  return s * cm.oversubscription;
}

// Forward activations a tile keeps (bytes per batch item) for the layers of one group.
inline double fwd_group_memory(const Plan& p, int t, int a, int b) {
  double m = 0;
  for (int l = a; l <= b; ++l) m += double(p.tiles[t].fwd_out[l].area()) * p.stack.map_c(l + 1) * 4;
  if (a > 0) m += double(p.tiles[t].fwd_in[a].area()) * p.stack.map_c(a) * 4;
  return m;
}
inline double bwd_sync_memory(const Plan& p, int t, int g) {
  double m = 0;
  for (const Need& nd : p.tiles[t].bwd_sync[g].needs) m += double(nd.rect.area()) * p.stack.map_c(nd.map) * 4;
  return m;
}

}  // namespace detail

inline Prediction predict(const Plan& p, const CostModel& cm, int n) {
  Prediction pr;
  const int L = p.depth(), T = p.tile_count();
  for (std::size_t g = 0; g < p.fwd_groups.size(); ++g) {
    const int a = p.fwd_groups[g], b = group_end(p.fwd_groups, int(g), L);
    double worst = 0, wc = 0, wh = 0;
    for (int t = 0; t < T; ++t) {
      long bytes = 0;
      const double h = detail::sync_comm(p.tiles[t].fwd_sync[g], n, cm, p.stack, &bytes);
      const double c = detail::fwd_group_compute(p, t, a, b, n, cm);
      if (c + h > worst) {
        worst = c + h;
        wc = c;
        wh = h;
      }
    }
    pr.fwd_s += wc;
    pr.halo_s += wh;
  }
  for (std::size_t g = 0; g < p.bwd_groups.size(); ++g) {
    const int a = p.bwd_groups[g], b = group_end(p.bwd_groups, int(g), L);
    double worst = 0, wc = 0, wh = 0;
    for (int t = 0; t < T; ++t) {
      long bytes = 0;
      const double h = detail::sync_comm(p.tiles[t].bwd_sync[g], n, cm, p.stack, &bytes);
      const double c = detail::bwd_group_compute(p, t, a, b, n, cm);
      if (c + h > worst) {
        worst = c + h;
        wc = c;
        wh = h;
      }
    }
    pr.bwd_s += wc;
    pr.halo_s += wh;
  }
  for (int t = 0; t < T; ++t) {
    const TileTraffic tr = tile_traffic(p, t);
    pr.halo_bytes = std::max(pr.halo_bytes, (tr.fwd_values + tr.bwd_values) * n * 4);
    double mem = 0, bw = 0;
    for (std::size_t g = 0; g < p.fwd_groups.size(); ++g)
      mem += detail::fwd_group_memory(p, t, p.fwd_groups[g], group_end(p.fwd_groups, int(g), L));
    for (std::size_t g = 0; g < p.bwd_groups.size(); ++g) bw = std::max(bw, detail::bwd_sync_memory(p, t, int(g)));
    pr.peak_bytes = std::max(pr.peak_bytes, std::size_t((mem + bw) * n));
  }
  if (T > 1) {
    const double out_bytes = double(p.stack.map_rect(L).area()) * p.stack.map_c(L) * 4 * n;
    pr.boundary_s = 2 * ((T - 1) * cm.alpha + out_bytes * (T - 1) / T * cm.beta);
    double params = 0;
    for (const LayerDesc& ly : p.stack.layers) params += double(ly.weight_count()) + (ly.has_weights() ? ly.cout : 0);
    pr.allreduce_s = 2 * (T - 1) * cm.alpha + 2 * params * 4 * cm.beta * (T - 1) / T;
  }
  double params = 0;
  for (const LayerDesc& ly : p.stack.layers) params += double(ly.weight_count());
  pr.tail_s = cm.tail_s + params * cm.sgd_s_per_param;
  pr.total_s = pr.fwd_s + pr.bwd_s + pr.halo_s + pr.boundary_s + pr.allreduce_s + pr.tail_s;
  return pr;
}

struct AutoGrouping {
  Grouping fwd, bwd;
  Prediction predicted;
};

// Groupings minimising the predicted step time with at most `memory_limit` bytes of kept
// activations + backward halo buffers per tile (0: no limit).
inline Status auto_grouping(const Stack& st, int rows, int cols, const CostModel& cm, int n, double memory_limit,
                            AutoGrouping& out) {
  const int L = st.depth();
  // A grouping that is layer-wise except for one group [i..j].
  auto with_group = [&](int i, int j) {
    Grouping g;
    for (int l = 0; l < i; ++l) g.push_back(l);
    g.push_back(i);
    for (int l = j + 1; l < L; ++l) g.push_back(l);
    return g;
  };
  auto group_index = [](const Grouping& g, int start) {
    return int(std::find(g.begin(), g.end(), start) - g.begin());
  };
  // Forward group costs (time, memory) for every [i..j].
  std::vector<std::vector<double>> ft(L, std::vector<double>(L, 0)), fm(L, std::vector<double>(L, 0));
  for (int i = 0; i < L; ++i)
    for (int j = i; j < L; ++j) {
      Plan p;
      EDGENN_TRY(make_plan(st, rows, cols, with_group(i, j), layer_wise(L), p));
      const int g = group_index(p.fwd_groups, i);
      double worst = 0, mem = 0;
      for (int t = 0; t < p.tile_count(); ++t) {
        worst = std::max(worst, detail::fwd_group_compute(p, t, i, j, n, cm) +
                                    detail::sync_comm(p.tiles[t].fwd_sync[g], n, cm, st, nullptr));
        mem = std::max(mem, detail::fwd_group_memory(p, t, i, j) * n);
      }
      ft[i][j] = worst;
      fm[i][j] = mem;
    }
  auto solve = [&](const std::vector<std::vector<double>>& cost, const std::vector<std::vector<double>>& mem,
                   double lambda, Grouping& g, double& total_mem) {
    std::vector<double> best(L + 1, std::numeric_limits<double>::infinity());
    std::vector<int> from(L + 1, 0);
    best[0] = 0;
    for (int j = 0; j < L; ++j)
      for (int i = 0; i <= j; ++i) {
        const double c = best[i] + cost[i][j] + lambda * mem[i][j];
        if (c < best[j + 1]) {
          best[j + 1] = c;
          from[j + 1] = i;
        }
      }
    g.clear();
    total_mem = 0;
    for (int e = L; e > 0; e = from[e]) {
      g.insert(g.begin(), from[e]);
      total_mem += mem[from[e]][e - 1];
    }
  };
  double mem = 0, lambda = 0;
  solve(ft, fm, 0, out.fwd, mem);
  // Tighten by penalising memory until the kept activations fit.
  for (int it = 0; memory_limit > 0 && mem > memory_limit && it < 60; ++it) {
    lambda = lambda == 0 ? 1e-12 : lambda * 2;
    solve(ft, fm, lambda, out.fwd, mem);
  }
  EDGENN_CHECK(memory_limit <= 0 || mem <= memory_limit, Error::invalid_argument,
               "dist: no grouping fits the memory limit at this grid (use more tiles)");
  // Backward group costs given the chosen forward grouping (what forward state is held).
  std::vector<std::vector<double>> bt(L, std::vector<double>(L, 0)), bm(L, std::vector<double>(L, 0));
  for (int i = 0; i < L; ++i)
    for (int j = i; j < L; ++j) {
      Plan p;
      EDGENN_TRY(make_plan(st, rows, cols, out.fwd, with_group(i, j), p));
      const int g = group_index(p.bwd_groups, i);
      double worst = 0;
      for (int t = 0; t < p.tile_count(); ++t)
        worst = std::max(worst, detail::bwd_group_compute(p, t, i, j, n, cm) +
                                    detail::sync_comm(p.tiles[t].bwd_sync[g], n, cm, st, nullptr));
      bt[i][j] = worst;
      double m = 0;
      for (int t = 0; t < p.tile_count(); ++t) m = std::max(m, detail::bwd_sync_memory(p, t, g) * n);
      // Halo assemblies are transient: a group is admissible if it fits beside the kept activations.
      if (memory_limit > 0 && mem + m > memory_limit) bt[i][j] = std::numeric_limits<double>::infinity();
    }
  double unused = 0;
  solve(bt, bm, 0, out.bwd, unused);
  Plan p;
  EDGENN_TRY(make_plan(st, rows, cols, out.fwd, out.bwd, p));
  out.predicted = predict(p, cm, n);
  return Status::ok();
}

// Parse "auto", "fused", "layer" or a list of group start layers "0,3,5".
inline bool parse_grouping(const std::string& s, int depth, Grouping& g) {
  if (s == "fused") {
    g = fully_fused(depth);
    return true;
  }
  if (s == "layer") {
    g = layer_wise(depth);
    return true;
  }
  g.clear();
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t e = s.find(',', pos);
    if (e == std::string::npos) e = s.size();
    const std::string item = s.substr(pos, e - pos);
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0') return false;
    g.push_back(int(v));
    pos = e + 1;
  }
  return validate_grouping(g, depth, "grouping").is_ok();
}

}  // namespace edgenn::dist
