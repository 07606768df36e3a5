// Tiled training on MPI (run under mpirun with 1, 2, 3, 4 or 6 ranks; one tile per rank):
// K SGD steps on random stacks (stride 2, 1x1, 5x5, dilation, depthwise, max pools, odd sizes,
// uneven grids, random forward/backward groupings, mixed-sign inputs and weights) give the
// same weights as single-device training (relative error <= 1e-5), the same bits as the
// in-process simulator, identical replicas on every rank, and the same per-step losses.
#include <mpi.h>

#include <cstdio>
#include <random>

#include "dist/dist_util.hpp"
#include "edgenn/dist.hpp"

using namespace edgenn;
using namespace edgenn::dist;
using namespace edgenn::dist::testing;

namespace {

int failures = 0;
void expect(bool ok, int rank, const char* what, const std::string& ctx, double v = 0) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d FAILED: %s (%g) [%s]\n", rank, what, v, ctx.c_str());
  }
}

// rows x cols grid for `ranks` tiles that fits the map.
bool grid_for(int ranks, int h, int w, int& gr, int& gc) {
  for (gr = 1; gr <= ranks; ++gr) {
    if (ranks % gr) continue;
    gc = ranks / gr;
    if (gr <= h && gc <= w && (gr >= gc || gc > w)) return true;
  }
  for (gr = 1; gr <= ranks; ++gr)
    if (ranks % gr == 0 && gr <= h && ranks / gr <= w) {
      gc = ranks / gr;
      return true;
    }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const int cases = argc > 1 ? std::atoi(argv[1]) : 12;
  const int steps = 3, batch = 2;
  std::mt19937 rng(4242);  // same stream on every rank
  int ran = 0;
  for (int it = 0; it < cases * 4 && ran < cases; ++it) {
    Stack s = random_stack(rng);
    const int L = s.depth();
    const Grouping fg = random_grouping(rng, L), bg = random_grouping(rng, L);
    const std::uint32_t seed = 1000u + unsigned(it);
    int gr = 1, gc = 1;
    if (!grid_for(size, s.map_h(L), s.map_w(L), gr, gc)) continue;
    Plan plan;
    if (!make_plan(s, gr, gc, fg, bg, plan).is_ok()) continue;
    ++ran;
    const std::string ctx = describe(s) + " grid " + std::to_string(gr) + "x" + std::to_string(gc);
    std::mt19937 drng(seed);
    std::vector<std::vector<float>> xs, Gs;
    for (int k = 0; k < steps; ++k) {
      xs.push_back(random_values(drng, std::size_t(batch) * s.in_h * s.in_w * s.in_c));
      Gs.push_back(random_values(drng, std::size_t(batch) * s.map_h(L) * s.map_w(L) * s.map_c(L)));
    }
    Sgd sgd;
    sgd.lr = 0.05f;
    sgd.momentum = 0.9f;
    sgd.weight_decay = 1e-3f;
    MpiTrainer trainer(MPI_COMM_WORLD, plan, random_params(s, seed), sgd);
    ModelParams ref = random_params(s, seed), sim = ref;
    Sgd ref_sgd = sgd, sim_sgd = sgd;
    for (int k = 0; k < steps; ++k) {
      const ConstTensor input = ConstTensor::dense(xs[k].data(), Shape{batch, s.in_h, s.in_w, s.in_c});
      const float loss = trainer.step(input, linear_loss(Gs[k]));
      if (rank == 0) {
        PackedModel pm;
        pm.pack(s, ref);
        StepResult r;
        expect(reference_step(s, pm, input, linear_loss(Gs[k]), r).is_ok(), rank, "reference step", ctx);
        ref_sgd.step(ref, r.grads);
        expect(rel_err(trainer.last_output().data, r.output.data) <= 1e-5, rank, "stack output vs single device", ctx,
               rel_err(trainer.last_output().data, r.output.data));
        expect(std::fabs(loss - r.loss) <= 1e-5f * (1.0f + std::fabs(r.loss)), rank, "loss vs single device", ctx,
               loss - r.loss);
        pm.pack(s, sim);
        StepResult t;
        expect(simulate_step(plan, pm, input, linear_loss(Gs[k]), t).is_ok(), rank, "simulated step", ctx);
        sim_sgd.step(sim, t.grads);
      }
    }
    // Replicas agree bit for bit (also checked inside every step).
    trainer.verify_replicas();
    if (rank == 0) {
      const std::vector<float> got = trainer.params().flatten(), want = ref.flatten(), simv = sim.flatten();
      expect(rel_err(got, want) <= 1e-5, rank, "weights after K SGD steps vs single device", ctx, rel_err(got, want));
      expect(got == simv, rank, "weights bitwise equal to the in-process simulator", ctx, rel_err(got, simv));
    }
  }
  int all_fail = 0;
  MPI_Allreduce(&failures, &all_fail, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0)
    std::printf("dist mpi: %d ranks, %d random stacks x %d SGD steps: %s\n", size, ran, steps,
                all_fail == 0 && ran > 0 ? "OK" : "FAILED");
  MPI_Finalize();
  return all_fail == 0 && ran > 0 ? 0 : 1;
}
