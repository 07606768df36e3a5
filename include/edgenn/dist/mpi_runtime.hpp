// Tiled distributed training on MPI: one tile per rank (rank r runs tile r of the plan).
//
// A step:
//   1. forward groups: at each group start, non-blocking halo exchange (MPI_Irecv from every
//      peer that sends, MPI_Isend of the packed pieces, MPI_Waitall), then the group's layers;
//   2. the head rank gathers the output cores of the stack (MPI_Gatherv), stitches them, runs
//      the tail + loss (the caller's LossFn, head only) and scatters the cores of dLoss/dy;
//   3. backward groups, top first: exchange of the entry gradient and the forward state the
//      group's halo needs, then the group's layers;
//   4. weight gradients summed in a fixed order (reduce-scatter by chunk: every rank adds the
//      ranks' parts of its chunk in rank order; then all-gather), so every rank holds the same
//      bits, equal to the in-process simulator's tile-order sum;
//   5. the same SGD step on every rank; every `check_every` steps the ranks compare a checksum
//      of their weights (MPI_Allgather) and fail if any replica differs.
// Uses std::vector (allocates). A failure inside a step aborts the job (MPI_Abort): the peers
// would otherwise wait forever for its messages.
#pragma once

#include <mpi.h>

#include <cstdio>
#include <vector>

#include "edgenn/dist/model.hpp"
#include "edgenn/dist/reference.hpp"
#include "edgenn/dist/tile_exec.hpp"

namespace edgenn::dist {

struct StepStats {
  double total_s = 0, compute_s = 0, halo_s = 0, boundary_s = 0, allreduce_s = 0;
  long halo_bytes_sent = 0, boundary_bytes = 0, allreduce_bytes = 0;
  std::size_t peak_bytes = 0;
  void add(const StepStats& o) {
    total_s += o.total_s;
    compute_s += o.compute_s;
    halo_s += o.halo_s;
    boundary_s += o.boundary_s;
    allreduce_s += o.allreduce_s;
    halo_bytes_sent += o.halo_bytes_sent;
    boundary_bytes += o.boundary_bytes;
    allreduce_bytes += o.allreduce_bytes;
    peak_bytes = std::max(peak_bytes, o.peak_bytes);
  }
};

class MpiTrainer {
 public:
  // plan.tile_count() must equal the communicator's size. params: identical on every rank.
  MpiTrainer(MPI_Comm comm, const Plan& plan, ModelParams params, Sgd sgd, int head = 0)
      : comm_(comm), plan_(plan), params_(std::move(params)), sgd_(std::move(sgd)), head_(head),
        runner_(plan_, rank_of(comm)) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    if (size_ != plan_.tile_count()) fail("dist: the plan's tile count differs from the number of MPI ranks");
  }

  MpiTrainer(const MpiTrainer&) = delete;  // the runner points into plan_
  MpiTrainer& operator=(const MpiTrainer&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_head() const { return rank_ == head_; }
  const ModelParams& params() const { return params_; }
  const Plan& plan() const { return plan_; }
  const StepStats& last_stats() const { return stats_; }
  // The stitched stack output of the last step (head only).
  const RegionBuf& last_output() const { return output_; }
  std::size_t steps() const { return steps_; }
  int check_every = 1;

  // One training step on `input` (the whole batch of map 0, the same on every rank; each rank
  // reads its own region). Returns the loss on the head (0 elsewhere).
  float step(ConstTensor input, const LossFn& loss) {
    stats_ = StepStats{};
    const double t0 = MPI_Wtime();
    const int L = plan_.depth(), n = input.n();
    model_.pack(plan_.stack, params_);
    runner_.begin(input, model_);
    PeerBuffers out, in;
    for (std::size_t g = 0; g < plan_.fwd_groups.size(); ++g) {
      runner_.pack_forward(int(g), out);
      exchange(runner_.tp().fwd_sync[g], out, in, n, 1000 + int(g));
      const double c0 = MPI_Wtime();
      check(runner_.run_forward(int(g), in));
      stats_.compute_s += MPI_Wtime() - c0;
    }
    // Boundary: gather output cores on the head, loss, scatter the gradient cores.
    const double b0 = MPI_Wtime();
    const int C = plan_.stack.map_c(L);
    std::vector<int> counts(size_), displs(size_);
    for (int t = 0, off = 0; t < size_; ++t) {
      counts[t] = int(plan_.tiles[t].core[L].area() * C * n);
      displs[t] = off;
      off += counts[t];
    }
    std::vector<float> mine, all;
    append_view(runner_.output_core(), mine);
    if (is_head()) all.resize(std::size_t(displs.back() + counts.back()));
    MPI_Gatherv(mine.data(), int(mine.size()), MPI_FLOAT, all.data(), counts.data(), displs.data(), MPI_FLOAT, head_,
                comm_);
    float loss_value = 0.0f;
    std::vector<float> dall;
    if (is_head()) {
      output_.reset(plan_.stack.map_rect(L), n, C);
      RegionBuf delta;
      delta.reset(plan_.stack.map_rect(L), n, C);
      for (int t = 0; t < size_; ++t) read_view(all.data() + displs[t], output_.sub(plan_.tiles[t].core[L]));
      const double l0 = MPI_Wtime();
      loss_value = loss(output_.view(), delta.view());
      stats_.compute_s += MPI_Wtime() - l0;
      for (int t = 0; t < size_; ++t) append_view(delta.sub(plan_.tiles[t].core[L]), dall);
      stats_.boundary_bytes = long(all.size() + dall.size()) * 4;
    }
    RegionBuf dcore;
    dcore.reset(plan_.tiles[rank_].core[L], n, C);
    MPI_Scatterv(dall.data(), counts.data(), displs.data(), MPI_FLOAT, dcore.data.data(), counts[rank_], MPI_FLOAT,
                 head_, comm_);
    runner_.set_output_grad(dcore.view());
    stats_.boundary_s += MPI_Wtime() - b0;

    for (int g = int(plan_.bwd_groups.size()) - 1; g >= 0; --g) {
      const double c0 = MPI_Wtime();
      check(runner_.pack_backward(g, out));
      stats_.compute_s += MPI_Wtime() - c0;
      exchange(runner_.tp().bwd_sync[g], out, in, n, 2000 + g);
      const double c1 = MPI_Wtime();
      check(runner_.run_backward(g, in));
      stats_.compute_s += MPI_Wtime() - c1;
    }
    const double r0 = MPI_Wtime();
    ModelGrads grads = runner_.grads();
    allreduce_fixed_order(grads);
    stats_.allreduce_s = MPI_Wtime() - r0;
    sgd_.step(params_, grads);
    ++steps_;
    if (check_every > 0 && steps_ % std::size_t(check_every) == 0) verify_replicas();
    stats_.peak_bytes = runner_.peak_bytes();
    stats_.total_s = MPI_Wtime() - t0;
    return loss_value;
  }

  // Every rank's checksum equal, or the job fails.
  std::uint64_t verify_replicas() {
    const std::uint64_t mine = checksum(params_);
    std::vector<unsigned long long> all(size_);
    unsigned long long m = mine;
    MPI_Allgather(&m, 1, MPI_UNSIGNED_LONG_LONG, all.data(), 1, MPI_UNSIGNED_LONG_LONG, comm_);
    for (unsigned long long v : all)
      if (v != m) fail("dist: replicas hold different weights (checksum mismatch)");
    return mine;
  }

 private:
  MPI_Comm comm_;
  Plan plan_;
  ModelParams params_;
  Sgd sgd_;
  int head_;
  int rank_ = 0, size_ = 1;
  TileRunner runner_;
  PackedModel model_;
  RegionBuf output_;
  StepStats stats_;
  std::size_t steps_ = 0;

  static int rank_of(MPI_Comm c) {
    int r = 0;
    MPI_Comm_rank(c, &r);
    return r;
  }
  [[noreturn]] void fail(const char* what) const {
    std::fprintf(stderr, "edgenn dist (rank %d): %s\n", rank_, what);
    MPI_Abort(comm_, 1);
    std::abort();
  }
  void check(const Status& s) const {
    if (!s.is_ok()) fail(s.message());
  }

  void exchange(const Sync& s, const PeerBuffers& out, PeerBuffers& in, int n, int tag) {
    const double h0 = MPI_Wtime();
    in.assign(size_, {});
    std::vector<MPI_Request> req;
    for (int q = 0; q < size_; ++q)
      if (s.recv_values[q] > 0) {
        in[q].resize(std::size_t(s.recv_values[q]) * n);
        req.emplace_back();
        MPI_Irecv(in[q].data(), int(in[q].size()), MPI_FLOAT, q, tag, comm_, &req.back());
      }
    for (int q = 0; q < size_; ++q)
      if (!out[q].empty()) {
        req.emplace_back();
        MPI_Isend(out[q].data(), int(out[q].size()), MPI_FLOAT, q, tag, comm_, &req.back());
        stats_.halo_bytes_sent += long(out[q].size()) * 4;
      }
    MPI_Waitall(int(req.size()), req.data(), MPI_STATUSES_IGNORE);
    stats_.halo_s += MPI_Wtime() - h0;
  }

  // Sum over ranks in rank order, bitwise identical everywhere.
  void allreduce_fixed_order(ModelGrads& g) {
    std::vector<float> flat = g.flatten();
    const int total = int(flat.size());
    if (size_ == 1) return;
    std::vector<int> cnt(size_), dsp(size_), rcnt(size_), rdsp(size_);
    for (int r = 0; r < size_; ++r) {
      dsp[r] = int((long(total) * r) / size_);
      cnt[r] = int((long(total) * (r + 1)) / size_) - dsp[r];
    }
    for (int r = 0; r < size_; ++r) {
      rcnt[r] = cnt[rank_];
      rdsp[r] = r * cnt[rank_];
    }
    std::vector<float> parts(std::size_t(cnt[rank_]) * size_);
    MPI_Alltoallv(flat.data(), cnt.data(), dsp.data(), MPI_FLOAT, parts.data(), rcnt.data(), rdsp.data(), MPI_FLOAT,
                  comm_);
    std::vector<float> chunk(std::size_t(cnt[rank_]), 0.0f);
    for (int r = 0; r < size_; ++r)
      for (int i = 0; i < cnt[rank_]; ++i) chunk[i] += parts[std::size_t(r) * cnt[rank_] + i];
    MPI_Allgatherv(chunk.data(), cnt[rank_], MPI_FLOAT, flat.data(), cnt.data(), dsp.data(), MPI_FLOAT, comm_);
    stats_.allreduce_bytes = long(total) * 4 * 2 * (size_ - 1) / size_;
    g.unflatten(flat.data());
  }
};

}  // namespace edgenn::dist

namespace edgenn::dist {

// Link calibration on the real transport: ranks 0 and 1 bounce messages of `small` and
// `large` bytes; one-way time = alpha + beta * bytes. Every rank gets the result.
inline void mpi_ping_pong(MPI_Comm comm, double& alpha, double& beta, int reps = 50, int small = 8,
                          int large = 1 << 20) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  double res[2] = {alpha, beta};
  if (size >= 2) {
    std::vector<char> buf(static_cast<std::size_t>(large));
    auto one_way = [&](int bytes) {
      double best = 1e30;
      for (int r = 0; r < reps; ++r) {
        MPI_Barrier(comm);
        const double t0 = MPI_Wtime();
        if (rank == 0) {
          MPI_Send(buf.data(), bytes, MPI_CHAR, 1, 7, comm);
          MPI_Recv(buf.data(), bytes, MPI_CHAR, 1, 7, comm, MPI_STATUS_IGNORE);
        } else if (rank == 1) {
          MPI_Recv(buf.data(), bytes, MPI_CHAR, 0, 7, comm, MPI_STATUS_IGNORE);
          MPI_Send(buf.data(), bytes, MPI_CHAR, 0, 7, comm);
        }
        best = std::min(best, (MPI_Wtime() - t0) / 2);
      }
      return best;
    };
    const double ts = one_way(small), tl = one_way(large);
    res[1] = std::max(1e-12, (tl - ts) / double(large - small));
    res[0] = std::max(0.0, ts - res[1] * small);
  }
  MPI_Bcast(res, 2, MPI_DOUBLE, 0, comm);
  alpha = res[0];
  beta = res[1];
}

}  // namespace edgenn::dist
