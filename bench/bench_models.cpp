// Whole-model latency and throughput of shipped weights files in the engine: batch 1 and
// batch 64, 1 and 2 threads. JSON lines on stdout, one per (model, path, batch, threads);
// tools/bench_models.py runs this beside the PyTorch peer and writes the table.
//
//   bench_models --threads 1,2 --batch 1,64 --min-time 1 weights/*.safetensors
//
// Threads split a batch across workers (runtime::BatchClassifier); there is no intra-op
// parallelism, so batch 1 runs on one thread whatever --threads says (reported as such).
// MEANet files give two paths: "main" (easy inputs) and "main+extension" (hard inputs).
#include <algorithm>
#include <chrono>

#include "median_time.hpp"
#include <cstdio>
#include <random>
#include <sstream>

#include "edgenn/io.hpp"
#include "edgenn/runtime/batch_inference.hpp"

using namespace edgenn;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) v.push_back(std::atoi(t.c_str()));
  return v;
}

template <class F>
double median_seconds(F&& fn, double min_time) { return edgenn_bench::median_seconds(fn, min_time, 3); }

void emit(const std::string& model, const std::string& path, int batch, int threads, int threads_used, double s,
          std::int64_t macs) {
  std::printf("{\"engine\":\"edgenn\",\"model\":\"%s\",\"path\":\"%s\",\"batch\":%d,\"threads\":%d,\"threads_used\":%d,"
              "\"ms_per_batch\":%.6f,\"images_per_s\":%.3f,\"gflops\":%.3f}\n",
              model.c_str(), path.c_str(), batch, threads, threads_used, 1e3 * s, batch / s, 2e-9 * double(macs) * batch / s);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> threads = {1, 2}, batches = {1, 64};
  double min_time = 1.0;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = parse_list(argv[++i]);
    else if (a == "--batch" && i + 1 < argc) batches = parse_list(argv[++i]);
    else if (a == "--min-time" && i + 1 < argc) min_time = std::atof(argv[++i]);
    else if (a.rfind("--", 0) == 0) return std::fprintf(stderr, "bench_models: unknown option %s\n", a.c_str()), 2;
    else files.push_back(a);
  }
  if (files.empty()) return std::fprintf(stderr, "usage: bench_models [--threads 1,2] [--batch 1,64] [--min-time S] FILES\n"), 2;

  std::mt19937 rng(1);
  for (const auto& f : files) {
    auto m = io::load_model(f);
    if (!m) return std::fprintf(stderr, "bench_models: %s\n", m.error().c_str()), 1;
    const std::string name = f.substr(f.find_last_of('/') + 1);
    const io::InputSpec& in = m->info.input;
    const int maxb = *std::max_element(batches.begin(), batches.end());
    std::vector<unsigned char> px(std::size_t(maxb) * in.height * in.width * in.channels);
    for (auto& p : px) p = static_cast<unsigned char>(rng() & 255);
    if (m->classifier) {
      for (int t : threads)
        for (int b : batches) {
          // Chunks of ceil(b / t) images: each thread takes one chunk.
          const int chunk = std::max(1, (b + t - 1) / t);
          runtime::BatchClassifier<> runner(*m->classifier, in, t, chunk);
          std::vector<float> logits(std::size_t(b) * std::size_t(runner.num_classes()));
          const double s = median_seconds([&] { (void)runner.run(px.data(), b, logits.data()); }, min_time);
          emit(name, "full", b, t, std::min(t, (b + chunk - 1) / chunk), s, m->classifier->macs(in.shape(1)));
        }
    } else if (m->meanet) {
      // The two MEANet paths, single-threaded (the edge runs one input at a time).
      auto& net = *m->meanet;
      for (int b : batches) {
        const Shape s = in.shape(b), cs = net.concat_shape(s);
        std::vector<float> x(std::size_t(s.size())), cat(std::size_t(cs.size())), logits(std::size_t(b) * 10),
            ext(std::size_t(b) * std::size_t(net.num_hard()));
        std::vector<unsigned char> mem(net.workspace_bytes(s) + kAlignment);
        auto run_main = [&] {
          Workspace ws(mem.data(), mem.size());
          (void)nn::normalize_pixels(px.data(), in.mean.data(), in.std.data(), Tensor::dense(x.data(), s));
          (void)net.run_main(ConstTensor::dense(x.data(), s), Tensor::dense(cat.data(), cs), logits.data(), net.num_classes(), ws);
        };
        const double sm = median_seconds(run_main, min_time);
        emit(name, "main", b, 1, 1, sm, net.main_macs(in.shape(1)));
        const double se = median_seconds(
            [&] {
              run_main();
              Workspace ws(mem.data(), mem.size());
              (void)net.run_extension(ConstTensor::dense(x.data(), s), Tensor::dense(cat.data(), cs), ext.data(), net.num_hard(), ws);
            },
            min_time);
        emit(name, "main+extension", b, 1, 1, se, net.main_macs(in.shape(1)) + net.extension_macs(in.shape(1)));
      }
    }
  }
  return 0;
}
