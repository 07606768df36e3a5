// Training-step throughput and memory in the engine: the main ResNet trained end to end and
// MEANet's stage C (adaptive + extension blocks on cached main-block features), the steps
// edgenn-train runs (train/steps.hpp) followed by the SGD update. JSON lines on stdout;
// tools/bench_train.py runs this beside PyTorch and writes the table.
//
//   bench_train --workload resnet,stage_c --batch 32,64,128 --threads 1,2 --min-time 2
//   bench_train --workload stage_c --batch 8 --threads 1 --memory     (one configuration)
//
// Speed rows: median seconds per step (forward, loss, backward, SGD with momentum and weight
// decay) on random images and labels; parameter values do not change the speed. Memory rows
// (--memory, meant to run in a fresh process per configuration): the growth of the process's
// resident set from just before the training objects are made to the peak over a few steps
// (Linux VmHWM, reset through /proc/self/clear_refs), i.e. gradients, optimizer state,
// activations kept for the backward, workspaces; and the engine's own count of the same
// ("planned": activations and gradient buffers, workspaces, parameter gradients, momentum). The stage-C feature cache is the data set's (like the
// images), made before the baseline; its size per sample is reported.
#include <algorithm>
#include <chrono>

#include "median_time.hpp"
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "edgenn/nn/meanet.hpp"
#include "edgenn/nn/resnet.hpp"
#include "edgenn/train/optim.hpp"
#include "edgenn/train/steps.hpp"

using namespace edgenn;
using Arch = simd::default_arch;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) v.push_back(t);
  return v;
}
std::vector<int> ints(const std::string& s) {
  std::vector<int> v;
  for (const auto& t : split(s)) v.push_back(std::atoi(t.c_str()));
  return v;
}

// kB of a /proc/self/status field (VmRSS, VmHWM).
long status_kb(const char* field) {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + std::strlen(field) + 1);
  return -1;
}
// Resets the peak resident set to the current one (Linux >= 4.0).
bool reset_peak() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  return bool(f);
}

template <class F>
double median_seconds(F&& fn, double min_time) { return edgenn_bench::median_seconds(fn, min_time, 2); }

void init_normal(std::vector<float>& v, double sd, std::mt19937_64& rng) {
  std::normal_distribution<double> nd(0.0, sd);
  for (auto& x : v) x = float(nd(rng));
}
template <class Net>
void init_convs(Net& n, std::mt19937_64& rng) {
  n.visit_layers([&](nn::ConvBN<Arch>& l) { init_normal(l.weight, std::sqrt(2.0 / l.k_per_out()), rng); });
}

struct Config {
  std::string workload;
  int batch = 0, threads = 1;
  double min_time = 2.0;
  bool memory = false;
};

void fail(const Status& st) {
  std::fprintf(stderr, "bench_train: %s\n", st.message());
  std::exit(1);
}

// One configuration: speed or memory row.
void run(const Config& c) {
  std::mt19937_64 rng(7);
  const Shape image{1, 28, 28, 1};
  const int B = c.batch;
  std::vector<float> x(std::size_t(B) * 28 * 28);
  init_normal(x, 1.0, rng);
  std::vector<int> samples(static_cast<std::size_t>(B)), labels(static_cast<std::size_t>(B));
  for (int i = 0; i < B; ++i) samples[std::size_t(i)] = i;
  const ConstTensor xv = ConstTensor::dense(x.data(), Shape{B, 28, 28, 1});

  nn::ResNetCifarConfig rc;  // ResNet-20, width 16: the main block
  nn::Classifier<Arch> resnet;
  nn::MEANet<Arch> meanet;
  std::vector<float> feats;
  long base_kb = 0;
  const bool stage_c = c.workload == "stage_c";
  if (!stage_c) {
    resnet = nn::build_resnet_cifar<Arch>(rc);
    init_convs(resnet.features, rng);
    init_normal(resnet.head.weight, 0.1, rng);
    for (auto& l : labels) l = int(rng() % 10);
  } else {
    nn::MEANetConfig mc;  // the shipped MEANet's blocks (tools/train_reference.py `meanet`)
    mc.main = rc;
    mc.hard_classes = {6, 0, 2, 3, 4};
    meanet = nn::build_meanet<Arch>(mc);
    init_convs(meanet.adaptive, rng);
    init_convs(meanet.extension, rng);
    init_normal(meanet.extension_head.weight, 0.1, rng);
    feats.resize(std::size_t(meanet.main_feature_shape(image).size()) * B);
    init_normal(feats, 1.0, rng);
    for (auto& f : feats) f = std::max(f, 0.0f);  // post-ReLU features
    for (auto& l : labels) l = int(rng() % 5);
  }
  if (c.memory) {
    if (!reset_peak()) std::fprintf(stderr, "bench_train: cannot reset VmHWM; peak includes start-up\n");
    base_kb = status_kb("VmRSS:");
  }
  train::ClassifierStep<Arch> rs;
  train::StageCStep<Arch> cs;
  std::vector<train::ParamSlot> slots;
  if (!stage_c) {
    if (Status st = rs.bind(resnet, image, B, c.threads); !st) fail(st);
    rs.visit_slots([&](const train::ParamSlot& s) { slots.push_back(s); });
  } else {
    if (Status st = cs.bind(meanet, image, B, feats.data(), c.threads); !st) fail(st);
    cs.visit_slots([&](const train::ParamSlot& s) { slots.push_back(s); });
  }
  train::Sgd opt(slots, train::SgdConfig{0.9, 0.0, false, 5e-4, train::WeightDecay::coupled});
  auto step = [&] {
    float loss = 0;
    int correct = 0;
    const Status st = stage_c ? cs.run(xv, samples.data(), labels.data(), &loss, &correct)
                              : rs.run(xv, labels.data(), &loss, &correct);
    if (!st) fail(st);
    if (Status s2 = opt.step(0.01); !s2) fail(s2);
  };
  std::size_t param_floats = 0;
  for (const auto& s : slots) param_floats += s.size;
  const index_t act = stage_c ? cs.activation_floats() : rs.activation_floats();
  const std::size_t wsb = stage_c ? cs.workspace_bytes() : rs.workspace_bytes();
  if (c.memory) {
    for (int i = 0; i < 3; ++i) step();
    const long peak_kb = status_kb("VmHWM:");
    std::printf("{\"engine\":\"edgenn\",\"workload\":\"%s\",\"batch\":%d,\"threads\":%d,\"peak_delta_mb\":%.3f,"
                "\"planned_mb\":%.3f,\"activation_mb\":%.3f,\"workspace_mb\":%.3f,\"trainable_params\":%zu,"
                "\"feature_cache_bytes_per_sample\":%zu}\n",
                c.workload.c_str(), B, c.threads, (peak_kb - base_kb) / 1024.0,
                (double(act) * 4 + double(wsb) + 2.0 * 4 * double(param_floats)) / 1048576.0,
                double(act) * 4 / 1048576.0, double(wsb) / 1048576.0, param_floats,
                stage_c ? feats.size() / std::size_t(B) * sizeof(float) : std::size_t(0));
  } else {
    const double s = median_seconds(step, c.min_time);
    std::printf("{\"engine\":\"edgenn\",\"workload\":\"%s\",\"batch\":%d,\"threads\":%d,\"ms_per_step\":%.4f,"
                "\"images_per_s\":%.2f}\n",
                c.workload.c_str(), B, c.threads, 1e3 * s, B / s);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> workloads = {"resnet", "stage_c"};
  std::vector<int> batches = {32, 64, 128}, threads = {1, 2};
  Config base;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_train: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--workload") workloads = split(value());
    else if (a == "--batch") batches = ints(value());
    else if (a == "--threads") threads = ints(value());
    else if (a == "--min-time") base.min_time = std::atof(value().c_str());
    else if (a == "--memory") base.memory = true;
    else {
      std::fprintf(stderr,
                   "usage: bench_train [--workload resnet,stage_c] [--batch 32,64,128] [--threads 1,2] [--min-time S] "
                   "[--memory]\n");
      return 2;
    }
  }
  for (const auto& w : workloads)
    if (w != "resnet" && w != "stage_c") return std::fprintf(stderr, "bench_train: unknown workload %s\n", w.c_str()), 2;
  for (int b : batches)
    if (b < 1) return std::fprintf(stderr, "bench_train: batch must be positive\n"), 2;
  for (const auto& w : workloads)
    for (int t : threads)
      for (int b : batches) {
        Config c = base;
        c.workload = w;
        c.batch = b;
        c.threads = t;
        run(c);
      }
  return 0;
}
