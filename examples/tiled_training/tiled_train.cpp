// tiled_train: train the front of a CNN split into spatial tiles across MPI ranks (one tile
// per rank), forward and backward, with the result of single-device training.
//
//   mpirun -np 4 tiled_train --workload fmnist --size 112 --tiles 2x2 --group auto --steps 20
//   mpirun -np 4 tiled_train --workload yolo --size 608 --tiles 2x2 --group fused --bwd-group layer
//   tiled_train --single --workload fmnist --size 112 --steps 20      (single-device baseline)
//
// Every step prints the loss (head rank), the step time and its parts, and the halo volume;
// --json writes the run's measurements. docs/tiled_training.md explains the output.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "edgenn/dist.hpp"
#include "edgenn/io/idx.hpp"

using namespace edgenn;
using namespace edgenn::dist;

namespace {

long peak_rss_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  return 0;
}

// Batches: Fashion-MNIST upsampled (nearest) and normalised, or synthetic inputs.
struct Data {
  io::ImageSet set;
  bool real = false;
  int size = 0, channels = 1;
  std::mt19937 rng{12345};

  void batch(int step, int n, std::vector<float>& x, std::vector<int>& labels) {
    x.assign(std::size_t(n) * size * size * channels, 0.0f);
    labels.assign(n, 0);
    if (!real) {
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      for (float& v : x) v = u(rng);
      return;
    }
    const int scale = size / set.height;
    for (int b = 0; b < n; ++b) {
      const int idx = (step * n + b) % set.count;
      const unsigned char* img = set.image(idx);
      labels[b] = set.labels[std::size_t(idx)];
      for (int r = 0; r < size; ++r)
        for (int c = 0; c < size; ++c)
          x[(std::size_t(b) * size + r) * size + c] =
              (img[(r / scale) * set.width + c / scale] / 255.0f - 0.2860f) / 0.3530f;
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  CLI::App app{"Tiled distributed training of a CNN front across MPI ranks"};
  std::string workload = "fmnist", tiles, group = "auto", bwd_group, json, data_dir = "/usr/share/datasets/fashion-mnist";
  int img = 112, steps = 10, batch = 4, check_every = 5, reps = 3, cores = int(std::thread::hardware_concurrency());
  float lr = 0.05f, momentum = 0.9f, decay = 5e-4f;
  double mem_limit_mb = 0;
  bool single = false, quiet = false;
  app.add_option("--workload", workload, "fmnist (Fashion-MNIST classifier front) or yolo (YOLOv2 first 16 layers)")
      ->check(CLI::IsMember({"fmnist", "yolo"}));
  app.add_option("--size", img, "input size (fmnist: multiple of 28, >= 112; yolo: multiple of 16)");
  app.add_option("--tiles", tiles, "tile grid RxC (default: from the number of ranks)");
  app.add_option("--group", group, "forward grouping: auto, fused, layer, or group start layers 0,3,5");
  app.add_option("--bwd-group", bwd_group, "backward grouping (default: like --group)");
  app.add_option("--steps", steps, "training steps");
  app.add_option("--batch", batch, "batch size");
  app.add_option("--lr", lr, "SGD learning rate");
  app.add_option("--momentum", momentum, "SGD momentum");
  app.add_option("--weight-decay", decay, "SGD weight decay");
  app.add_option("--check-every", check_every, "compare the replicas' weight checksums every N steps");
  app.add_option("--memory-limit-mb", mem_limit_mb, "per-device limit for --group auto (0: none)");
  app.add_option("--profile-reps", reps, "cost-model profiling repetitions per layer");
  app.add_option("--cores", cores, "cores of this machine (ranks beyond it share cores in the cost model)");
  app.add_option("--data", data_dir, "Fashion-MNIST directory (IDX files)");
  app.add_option("--json", json, "write the measurements to this file (head rank)");
  app.add_flag("--single", single, "single-device training of the same network (no tiles; 1 rank)");
  app.add_flag("--quiet", quiet, "print only the summary");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = rank == 0 ? app.exit(e) : 0;
    MPI_Finalize();
    return rc;
  }
  if (workload == "yolo" && app.count("--lr") == 0) lr = 1e-4f;  // the synthetic loss is linear: keep steps small
  auto die = [&](const std::string& msg) {
    if (rank == 0) std::fprintf(stderr, "tiled_train: %s\n", msg.c_str());
    MPI_Finalize();
    std::exit(1);
  };

  const Stack st = workload == "yolo" ? yolov2_front(img) : fmnist_front(img);
  if (!st.validate().is_ok()) die(st.validate().message());
  const int L = st.depth();
  if (single && size != 1) die("--single runs on one rank");
  int gr = 1, gc = size;
  if (!tiles.empty()) {
    if (std::sscanf(tiles.c_str(), "%dx%d", &gr, &gc) != 2) die("--tiles must look like 2x2");
  } else {
    for (int r = 1; r * r <= size; ++r)
      if (size % r == 0) gr = r, gc = size / r;
  }
  if (!single && gr * gc != size) die("the tile grid must have one tile per rank (" + std::to_string(size) + ")");

  Data data;
  data.size = img;
  data.channels = st.in_c;
  if (workload == "fmnist") {
    auto set = io::load_fashion_mnist(data_dir, io::Split::train);
    if (!set) die(set.error());
    data.set = std::move(*set);
    data.real = true;
    if (img % data.set.height != 0) die("--size must be a multiple of 28 for fmnist");
  }

  // Cost model: per-layer rates profiled on the head and shared (every rank must choose the
  // same grouping), links by ping-pong on the real transport.
  CostModel cm;
  {
    std::vector<double> rates(std::size_t(3 * L), 0.0);
    if (rank == 0) {
      if (!profile_layers(st, batch, reps, cm).is_ok()) die("profiling failed");
      for (int l = 0; l < L; ++l) {
        rates[3 * l] = cm.layers[l].fwd;
        rates[3 * l + 1] = cm.layers[l].dw;
        rates[3 * l + 2] = cm.layers[l].dx;
      }
    }
    MPI_Bcast(rates.data(), 3 * L, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    cm.layers.resize(L);
    for (int l = 0; l < L; ++l) cm.layers[l] = LayerRates{rates[3 * l], rates[3 * l + 1], rates[3 * l + 2]};
    mpi_ping_pong(MPI_COMM_WORLD, cm.alpha, cm.beta, 10, 8, 1 << 18);
    cm.oversubscription = size > cores ? double(size) / cores : 1.0;
  }
  Grouping fg, bg;
  Prediction pred;
  if (!single) {
    const std::string bspec = bwd_group.empty() ? group : bwd_group;
    AutoGrouping ag;
    if (group == "auto" || bspec == "auto") {
      const Status s = auto_grouping(st, gr, gc, cm, batch, mem_limit_mb * 1e6, ag);
      if (!s.is_ok()) die(s.message());
    }
    if (group == "auto") fg = ag.fwd;
    else if (!parse_grouping(group, L, fg)) die("bad --group");
    if (bspec == "auto") bg = ag.bwd;
    else if (!parse_grouping(bspec, L, bg)) die("bad --bwd-group");
  }
  Plan plan;
  if (!single) {
    const Status s = make_plan(st, gr, gc, fg, bg, plan);
    if (!s.is_ok()) die(s.message());
    pred = predict(plan, cm, batch);
  }
  auto list = [](const Grouping& g) {
    std::string s;
    for (int v : g) s += (s.empty() ? "" : ",") + std::to_string(v);
    return s;
  };
  if (rank == 0) {
    std::printf("tiled_train: %s %dx%d, %d layers fused, batch %d, %s\n", workload.c_str(), img, img, L, batch,
                single ? "single device" : (std::to_string(gr) + "x" + std::to_string(gc) + " tiles on " +
                                            std::to_string(size) + " ranks").c_str());
    if (!single)
      std::printf("  groups: forward {%s}  backward {%s}; predicted step %.4f s (compute %.4f, halo %.4f, "
                  "boundary %.4f, allreduce %.4f); link alpha %.1f us, beta %.3f GB/s\n",
                  list(fg).c_str(), list(bg).c_str(), pred.total_s, pred.fwd_s + pred.bwd_s, pred.halo_s,
                  pred.boundary_s, pred.allreduce_s, cm.alpha * 1e6, 1e-9 / cm.beta);
    if (!single) {  // the same cost model on the two extreme groupings
      Plan pf, pl;
      if (make_plan(st, gr, gc, fully_fused(L), fully_fused(L), pf).is_ok() &&
          make_plan(st, gr, gc, layer_wise(L), layer_wise(L), pl).is_ok())
        std::printf("  predicted: this grouping %.4f s, fully fused %.4f s, layer-wise %.4f s\n", pred.total_s,
                    predict(pf, cm, batch).total_s, predict(pl, cm, batch).total_s);
    }
  }

  Sgd sgd;
  sgd.lr = lr;
  sgd.momentum = momentum;
  sgd.weight_decay = decay;
  const int classes = 10, out_c = st.map_c(L);
  GapLinearTail tail(out_c, classes, 77);
  tail.lr = lr;
  tail.momentum = momentum;
  tail.weight_decay = decay;
  std::vector<float> G;  // yolo: synthetic gradient at the fused boundary, as in the seed
  {
    std::mt19937 grng(99);
    std::uniform_real_distribution<float> u(-1e-3f, 1e-3f);
    G.resize(std::size_t(batch) * st.map_h(L) * st.map_w(L) * out_c);
    for (float& v : G) v = u(grng);
  }
  std::vector<float> x;
  std::vector<int> labels;
  auto loss_fn = [&](ConstTensor y, Tensor dy) -> float {
    if (data.real) return tail.step(y, labels.data(), dy);
    double l = 0;
    std::size_t i = 0;
    for (int b = 0; b < y.n(); ++b)
      for (int r = 0; r < y.h(); ++r)
        for (int c = 0; c < y.w(); ++c)
          for (int ch = 0; ch < y.c(); ++ch, ++i) {
            dy.at(b, r, c, ch) = G[i];
            l += double(G[i]) * y.at(b, r, c, ch);
          }
    return float(l);
  };

  ModelParams params = random_params(st, 2024);
  std::unique_ptr<MpiTrainer> trainer;
  if (!single) {
    trainer = std::make_unique<MpiTrainer>(MPI_COMM_WORLD, plan, params, sgd);
    trainer->check_every = check_every;
  }
  StepStats sum;
  double sum_time = 0;
  int timed = 0;
  std::vector<float> losses;
  std::size_t single_peak = 0;
  for (int s = 0; s < steps; ++s) {
    data.batch(s, batch, x, labels);
    const ConstTensor input = ConstTensor::dense(x.data(), Shape{batch, img, img, st.in_c});
    float loss = 0;
    StepStats stats;
    if (single) {
      const double t0 = MPI_Wtime();
      PackedModel pm;
      pm.pack(st, params);
      StepResult r;
      if (!reference_step(st, pm, input, loss_fn, r).is_ok()) die("single-device step failed");
      sgd.step(params, r.grads);
      loss = r.loss;
      stats.total_s = MPI_Wtime() - t0;
      stats.compute_s = stats.total_s;
      single_peak = std::max(single_peak, r.peak_bytes);
      stats.peak_bytes = r.peak_bytes;
    } else {
      loss = trainer->step(input, loss_fn);
      stats = trainer->last_stats();
    }
    double step_max = 0;
    MPI_Allreduce(&stats.total_s, &step_max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    long halo_all = 0;
    MPI_Allreduce(&stats.halo_bytes_sent, &halo_all, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    stats.halo_bytes_sent = halo_all;
    if (s > 0 || steps == 1) {  // the first step warms caches and allocators
      sum.add(stats);
      sum_time += step_max;
      ++timed;
    }
    losses.push_back(loss);
    if (rank == 0 && !quiet)
      std::printf("step %3d/%d  loss %.6f  time %.4f s (compute %.4f, halo %.4f, boundary %.4f, allreduce %.4f)  "
                  "halo %.2f MB\n",
                  s + 1, steps, loss, step_max, stats.compute_s, stats.halo_s, stats.boundary_s, stats.allreduce_s,
                  halo_all / 1e6);
    std::fflush(stdout);
  }
  std::uint64_t csum = single ? checksum(params) : trainer->verify_replicas();
  std::size_t peak = sum.peak_bytes, peak_max = 0;
  MPI_Allreduce(&peak, &peak_max, 1, MPI_UNSIGNED_LONG, MPI_MAX, MPI_COMM_WORLD);
  long rss = peak_rss_kb(), rss_max = 0;
  MPI_Allreduce(&rss, &rss_max, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
  const double mean = timed ? sum_time / timed : 0;
  if (rank == 0) {
    std::printf("summary: mean step %.4f s over %d steps; per-rank activation+halo peak %.2f MB; peak RSS %.1f MB; "
                "halo traffic %.3f MB/step; boundary %.3f MB/step; allreduce %.3f MB/step per rank; "
                "weights checksum %016llx\n",
                mean, timed, peak_max / 1e6, rss_max / 1e3, timed ? sum.halo_bytes_sent / 1e6 / timed : 0.0,
                timed ? sum.boundary_bytes / 1e6 / timed : 0.0, timed ? sum.allreduce_bytes / 1e6 / timed : 0.0,
                (unsigned long long)csum);
    if (!single)
      std::printf("cost model: predicted %.4f s, measured %.4f s (error %+.1f%%)\n", pred.total_s, mean,
                  mean > 0 ? 100.0 * (pred.total_s - mean) / mean : 0.0);
    if (!json.empty()) {
      std::FILE* f = std::fopen(json.c_str(), "w");
      if (f) {
        std::fprintf(f,
                     "{\"workload\":\"%s\",\"size\":%d,\"batch\":%d,\"ranks\":%d,\"single\":%s,\"grid\":\"%dx%d\","
                     "\"fwd_groups\":\"%s\",\"bwd_groups\":\"%s\",\"step_s\":%.6f,\"predicted_s\":%.6f,"
                     "\"compute_s\":%.6f,\"halo_s\":%.6f,\"boundary_s\":%.6f,\"allreduce_s\":%.6f,"
                     "\"peak_bytes\":%zu,\"peak_rss_kb\":%ld,\"halo_bytes_per_step\":%.0f,"
                     "\"boundary_bytes_per_step\":%.0f,\"allreduce_bytes_per_step\":%.0f,\"losses\":[",
                     workload.c_str(), img, batch, size, single ? "true" : "false", gr, gc, list(fg).c_str(),
                     list(bg).c_str(), mean, pred.total_s, timed ? sum.compute_s / timed : 0,
                     timed ? sum.halo_s / timed : 0, timed ? sum.boundary_s / timed : 0,
                     timed ? sum.allreduce_s / timed : 0, peak_max, rss_max,
                     timed ? double(sum.halo_bytes_sent) / timed : 0, timed ? double(sum.boundary_bytes) / timed : 0,
                     timed ? double(sum.allreduce_bytes) / timed : 0);
        for (std::size_t i = 0; i < losses.size(); ++i) std::fprintf(f, "%s%.9g", i ? "," : "", losses[i]);
        std::fprintf(f, "]}\n");
        std::fclose(f);
      }
    }
  }
  MPI_Finalize();
  return 0;
}
