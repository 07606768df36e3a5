// Tiled training without MPI: the planner's regions and halo messages (specs/tiled_training.md
// §4 worked example), and tiled steps simulated in one process against the single-device step
// on random stacks, grids and groupings (forward output, input gradient, summed weight gradients).
#include <doctest/doctest.h>

#include <random>

#include "dist/dist_util.hpp"
#include "edgenn/dist/cost.hpp"
#include "edgenn/dist/plan.hpp"
#include "edgenn/dist/workloads.hpp"
#include "edgenn/dist/reference.hpp"
#include "edgenn/dist/simulate.hpp"

using namespace edgenn;
using namespace edgenn::dist;
using namespace edgenn::dist::testing;

namespace {

Stack worked_example(int c = 2) {
  Stack s;
  s.in_h = s.in_w = 32;
  s.in_c = c;
  for (int i = 0; i < 3; ++i) s.layers.push_back(LayerDesc::conv(c, c, 3, 1, 1, Activation::relu));
  s.layers.push_back(LayerDesc::maxpool(c, 2, 2));
  return s;
}

Rect sq(int lo, int hi) { return Rect{Interval{lo, hi}, Interval{lo, hi}}; }

long received_remote(const Sync& s, int self, int map, Kind kind) {
  long v = 0;
  for (const Need& n : s.needs)
    if (n.map == map && n.kind == kind)
      for (const Piece& p : n.parts)
        if (p.src != self) v += p.rect.area();
  return v;
}

}  // namespace

TEST_CASE("dist plan: worked example regions (3 convs + pool, 32x32, 2x2, fully fused)") {
  Plan plan;
  REQUIRE(make_plan(worked_example(), 2, 2, Grouping{0}, Grouping{0, 1}, plan).is_ok());
  const TilePlan& t0 = plan.tiles[0];
  CHECK(t0.core[4] == sq(0, 7));
  CHECK(t0.core[3] == sq(0, 15));
  CHECK(t0.core[0] == sq(0, 15));
  CHECK(plan.tiles[3].core[4] == sq(8, 15));
  // DeepThings' clamped regions (spec §4.1): 16, 17, 18, 19 wide.
  CHECK(t0.fwd_out[3] == sq(0, 7));
  CHECK(t0.fwd_in[3] == sq(0, 15));
  CHECK(t0.fwd_in[2] == sq(0, 16));
  CHECK(t0.fwd_in[1] == sq(0, 17));
  CHECK(t0.fwd_in[0] == sq(0, 18));
  CHECK(plan.tiles[3].fwd_in[0] == sq(13, 31));
  // Backward group {1,2,3} (spec §4.3): delta of the pool output on [-1,8] clamped = [0,8],
  // 8 + 8 + 1 values per channel from the three peers.
  CHECK(t0.bwd_g[3] == sq(0, 8));
  CHECK(received_remote(t0.bwd_sync[1], 0, 4, Kind::gradient) == 17);
  CHECK(t0.bwd_g[2] == sq(0, 17));
  CHECK(t0.bwd_g[1] == sq(0, 16));
  CHECK(t0.bwd_dx[1] == sq(0, 15));
  // Layer 0 has its own group; no input gradient asked for: it only forms the weight gradient.
  CHECK(t0.bwd_dx[0].empty());
  CHECK(t0.bwd_g[0] == sq(0, 15));
  // Exactness needs the inner layers' forward state on the halo ring: y2 on [0,17] and y1 on
  // [0,16] minus what the tile computed itself, and the pool input on its windows.
  CHECK(received_remote(t0.bwd_sync[1], 0, 3, Kind::activation) > 0);
  // y1 on [0,16] is not sent: the fused forward computed y1 on [0,17] already.
  CHECK(received_remote(t0.bwd_sync[1], 0, 2, Kind::activation) == 0);
}

TEST_CASE("dist plan: halo volumes of the three groupings of the worked example (spec §4.2)") {
  const int C = 2;
  Plan fused, two, layer;
  REQUIRE(make_plan(worked_example(C), 2, 2, Grouping{0}, Grouping{0}, fused).is_ok());
  REQUIRE(make_plan(worked_example(C), 2, 2, Grouping{0, 2}, Grouping{0}, two).is_ok());
  REQUIRE(make_plan(worked_example(C), 2, 2, Grouping{0, 1, 2}, Grouping{0}, layer).is_ok());
  // Map 0 is read by every tile from the input: no forward message in the fused plan.
  CHECK(tile_traffic(fused, 0).fwd_values == 0);
  // {L0,L1} | {L2,L3}: L2 input halo 1 = 16 + 16 + 1 = 33 per channel.
  CHECK(tile_traffic(two, 0).fwd_values == 33 * C);
  CHECK(tile_traffic(two, 0).fwd_messages == 3);
  // One exchange per conv: 33 per channel at the inputs of L1 and L2.
  CHECK(tile_traffic(layer, 0).fwd_values == 2 * 33 * C);
  // The corner pieces are there: tile 0 receives exactly 1x1 from the diagonal tile 3.
  bool corner = false;
  for (const Need& n : two.tiles[0].fwd_sync[1].needs)
    for (const Piece& p : n.parts) corner |= p.src == 3 && p.rect == sq(16, 16);
  CHECK(corner);
  // Sends mirror receives.
  for (const Plan* p : {&fused, &two, &layer})
    for (int t = 0; t < p->tile_count(); ++t)
      for (std::size_t g = 0; g < p->tiles[t].fwd_sync.size(); ++g)
        for (int q = 0; q < p->tile_count(); ++q) {
          long sent = 0;
          for (const Piece& pc : p->tiles[t].fwd_sync[g].send[q]) sent += pc.rect.area() * C;
          CHECK(sent == p->tiles[q].fwd_sync[g].recv_values[t]);
        }
}

TEST_CASE("dist plan: cores partition every map, uneven grids, stride-aligned") {
  std::mt19937 rng(7);
  for (int it = 0; it < 200; ++it) {
    const Stack s = random_stack(rng);
    const int L = s.depth();
    const int gr = std::uniform_int_distribution<int>(1, std::min(4, s.map_h(L)))(rng);
    const int gc = std::uniform_int_distribution<int>(1, std::min(4, s.map_w(L)))(rng);
    Plan plan;
    if (!make_plan(s, gr, gc, random_grouping(rng, L), random_grouping(rng, L), plan).is_ok()) continue;
    for (int m = 0; m <= L; ++m) {
      long area = 0;
      for (int t = 0; t < plan.tile_count(); ++t) {
        area += plan.tiles[t].core[m].area();
        CHECK(s.map_rect(m).contains(plan.tiles[t].core[m]));
        for (int q = t + 1; q < plan.tile_count(); ++q)
          CHECK(intersect(plan.tiles[t].core[m], plan.tiles[q].core[m]).empty());
        if (m < L && plan.tiles[t].col > 0)  // interior boundaries are stride multiples
          CHECK(plan.tiles[t].core[m].c.lo == plan.tiles[t].core[m + 1].c.lo * s.layers[m].sw);
      }
      CHECK(area == s.map_rect(m).area());
    }
    // Every needed piece comes from its owner's core.
    for (int t = 0; t < plan.tile_count(); ++t)
      for (const auto* syncs : {&plan.tiles[t].fwd_sync, &plan.tiles[t].bwd_sync})
        for (const Sync& sy : *syncs)
          for (const Need& n : sy.needs) {
            long a = 0;
            for (const Piece& p : n.parts) {
              a += p.rect.area();
              if (p.src != t)
                CHECK(plan.tiles[p.src].core[p.map].contains(p.rect));
              else
                CHECK((plan.tiles[t].core[p.map].contains(p.rect) || plan.holds_forward(t, p.map, p.rect)));
            }
            CHECK(a == n.rect.area());
          }
  }
}

TEST_CASE("dist plan: batch norm in the fused stack is rejected with a clear error") {
  Stack s = worked_example();
  s.layers[1].batchnorm = true;
  Plan plan;
  const Status st = make_plan(s, 2, 2, Grouping{0}, Grouping{0}, plan);
  CHECK(st.code() == Error::unsupported);
  CHECK(std::string(st.message()).find("batch norm") != std::string::npos);
}

namespace {

void check_tiled_equals_single(const Stack& s, int gr, int gc, const Grouping& fg, const Grouping& bg, int batch,
                               std::uint32_t seed) {
  INFO(describe(s), " grid ", gr, "x", gc, " groups fwd ", fg.size(), " bwd ", bg.size());
  std::mt19937 rng(seed);
  const ModelParams params = random_params(s, seed);
  PackedModel model;
  model.pack(s, params);
  std::vector<float> x = random_values(rng, std::size_t(batch) * s.in_h * s.in_w * s.in_c);
  const ConstTensor input = ConstTensor::dense(x.data(), Shape{batch, s.in_h, s.in_w, s.in_c});
  const int L = s.depth();
  const std::vector<float> G = random_values(rng, std::size_t(batch) * s.map_h(L) * s.map_w(L) * s.map_c(L));
  StepResult ref, tiled;
  REQUIRE(reference_step(s, model, input, linear_loss(G), ref, true).is_ok());
  Plan plan;
  const Status ps = make_plan(s, gr, gc, fg, bg, plan, true);
  if (!ps.is_ok()) {
    MESSAGE("plan rejected: ", ps.message());
    return;
  }
  const Status ts = simulate_step(plan, model, input, linear_loss(G), tiled);
  REQUIRE_MESSAGE(ts.is_ok(), ts.message());
  CHECK(rel_err(tiled.output.data, ref.output.data) <= 1e-6);
  CHECK(rel_err(tiled.input_grad.data, ref.input_grad.data) <= 1e-5);
  for (int l = 0; l < L; ++l) {
    INFO("layer ", l);
    // Relative to the layer's largest gradient (weights and bias together): a bias gradient is
    // a sum that may cancel, and tiles sum it in another order.
    std::vector<float> a = tiled.grads.layers[l].w, b = ref.grads.layers[l].w;
    a.insert(a.end(), tiled.grads.layers[l].b.begin(), tiled.grads.layers[l].b.end());
    b.insert(b.end(), ref.grads.layers[l].b.begin(), ref.grads.layers[l].b.end());
    CHECK(rel_err(a, b) <= 1e-5);
  }
}

}  // namespace

TEST_CASE("dist simulate: worked example, every grouping pair, 2x2 and uneven 3x2") {
  const Stack s = worked_example(3);
  for (const Grouping& fg : {Grouping{0}, Grouping{0, 2}, Grouping{0, 1, 2, 3}, Grouping{0, 3}})
    for (const Grouping& bg : {Grouping{0}, Grouping{0, 1}, Grouping{0, 1, 2, 3}, Grouping{0, 2}}) {
      check_tiled_equals_single(s, 2, 2, fg, bg, 2, 11);
      check_tiled_equals_single(s, 3, 2, fg, bg, 1, 12);
    }
}

TEST_CASE("dist simulate: random stacks, grids and groupings equal the single-device step") {
  std::mt19937 rng(2024);
  int run = 0;
  for (int it = 0; it < 150; ++it) {
    const Stack s = random_stack(rng);
    const int L = s.depth();
    const int gr = std::uniform_int_distribution<int>(1, std::min(3, s.map_h(L)))(rng);
    const int gc = std::uniform_int_distribution<int>(1, std::min(3, s.map_w(L)))(rng);
    check_tiled_equals_single(s, gr, gc, random_grouping(rng, L), random_grouping(rng, L), 2, 100 + it);
    ++run;
  }
  CHECK(run == 150);
}

namespace {
CostModel flat_model(int L, double alpha, double beta) {
  CostModel cm;
  cm.layers.assign(L, LayerRates{1e-8, 1e-8, 1e-8});
  cm.alpha = alpha;
  cm.beta = beta;
  return cm;
}
}  // namespace

TEST_CASE("dist cost: automatic grouping follows the link (fused on slow links, never worse than the extremes)") {
  const Stack s = yolov2_front(64);
  const int L = s.depth();
  AutoGrouping slow, fast;
  REQUIRE(auto_grouping(s, 2, 2, flat_model(L, 1.0, 1e-12), 1, 0, slow).is_ok());
  CHECK(slow.fwd == Grouping{0});  // latency-bound links: one group, no forward exchange
  // One backward exchange with the 3 peers (groups that need no message may be split off).
  CHECK(slow.predicted.halo_s == doctest::Approx(3.0).epsilon(1e-6));
  REQUIRE(auto_grouping(s, 2, 2, flat_model(L, 0.0, 0.0), 1, 0, fast).is_ok());
  CHECK(fast.fwd.size() > 4);  // free links: no redundant halo compute
  for (const CostModel& cm : {flat_model(L, 1.0, 1e-3), flat_model(L, 0.0, 0.0), flat_model(L, 1e-4, 1e-8)}) {
    AutoGrouping ag;
    REQUIRE(auto_grouping(s, 2, 2, cm, 2, 0, ag).is_ok());
    for (const Grouping& f : {fully_fused(L), layer_wise(L)})
      for (const Grouping& b : {fully_fused(L), layer_wise(L)}) {
        Plan p;
        REQUIRE(make_plan(s, 2, 2, f, b, p).is_ok());
        CHECK(ag.predicted.total_s <= predict(p, cm, 2).total_s * (1 + 1e-9));
      }
  }
}

TEST_CASE("dist cost: memory limit and the predicted traffic") {
  const Stack s = yolov2_front(64);
  const int L = s.depth();
  const CostModel cm = flat_model(L, 1.0, 1e-3);  // would pick fully fused without a limit
  AutoGrouping free_choice, limited;
  REQUIRE(auto_grouping(s, 2, 2, cm, 1, 0, free_choice).is_ok());
  const double limit = double(free_choice.predicted.peak_bytes) * 0.9;
  const Status st = auto_grouping(s, 2, 2, cm, 1, limit, limited);
  if (st.is_ok()) {
    CHECK(limited.fwd != free_choice.fwd);
    CHECK(double(limited.predicted.peak_bytes) <= double(free_choice.predicted.peak_bytes));
  } else {
    CHECK(st.code() == Error::invalid_argument);
  }
  Plan p;
  REQUIRE(make_plan(s, 2, 2, layer_wise(L), layer_wise(L), p).is_ok());
  const TileTraffic tr = tile_traffic(p, 0);
  CHECK(predict(p, cm, 3).halo_bytes >= (tr.fwd_values + tr.bwd_values) * 3 * 4);
  Grouping g;
  CHECK(parse_grouping("0,3,5", L, g));
  CHECK(g == Grouping{0, 3, 5});
  CHECK(parse_grouping("fused", L, g));
  CHECK(g == Grouping{0});
  CHECK_FALSE(parse_grouping("1,3", L, g));
  CHECK_FALSE(parse_grouping("0,x", L, g));
}

TEST_CASE("dist simulate: YOLOv2 front (16 layers) at 64x64 on a 2x2 grid equals single device") {
  const Stack s = yolov2_front(64);
  check_tiled_equals_single(s, 2, 2, fully_fused(16), layer_wise(16), 1, 5);
  check_tiled_equals_single(s, 2, 2, Grouping{0, 4, 8, 12}, Grouping{0, 5, 7, 9}, 1, 6);
}
