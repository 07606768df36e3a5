// Kernel benchmarks: our forward kernels beside XNNPACK and oneDNN on the same layers, in
// one binary, single-threaded, plus the machine's peak single-core FMA rate.
//
// Benchmark names are  family/model/shape/n<batch>/library  (tools/bench_report.py parses
// them); every row has a GFLOPS counter (see Layer::flops for what counts as a FLOP).
// Setup (weight packing, operator creation, indirection buffers) happens before the timed
// loop for every library; the loop times only the run. Time is process CPU time, so
// preemption by other processes on a shared machine is not counted.
//
// Extra flags (before the Google Benchmark ones):
//   --edgenn_batch64=small|all|none  which layers also run at batch 64 (default small:
//                                    inputs up to 32x32)
//   --edgenn_verify=1|0              first check that every library computes the same
//                                    outputs on the selected layers (default 1)
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "edgenn/kernels/conv2d.hpp"
#include "edgenn/kernels/depthwise.hpp"
#include "edgenn/kernels/elementwise.hpp"
#include "edgenn/kernels/fully_connected.hpp"
#include "edgenn/kernels/pooling.hpp"
#include "edgenn/kernels/softmax.hpp"
#include "layers.hpp"
#include "runner.hpp"

#if defined(EDGENN_BENCH_HAVE_XNNPACK)
#include "peers/xnnpack.hpp"
#endif
#if defined(EDGENN_BENCH_HAVE_ONEDNN)
#include <omp.h>

#include "peers/onednn.hpp"
#endif

namespace edgenn_bench {
namespace {

using Arch = edgenn::simd::default_arch;
namespace k = edgenn::kernels;

// Our kernels, called the way the engine's layers call them: weights packed once, a
// workspace sized by the size query, dense NHWC views.
class Ours : public Runner {
 public:
  explicit Ours(const LayerData& d) : d_(d), y_(d.output_size()) {
    const Layer& l = d.layer;
    in_ = edgenn::ConstTensor::dense(d.x.data(), edgenn::Shape{d.batch, l.h, l.w, l.cin});
    switch (l.family) {
      case Family::conv3x3:
      case Family::conv1x1: {
        conv_ = k::Conv2dParams::square(l.k, l.stride, l.pad);
        packed_ = Buffer(std::size_t(k::conv_packed_floats<Arch>(conv_, l.cin, l.cout)));
        pw_ = k::pack_conv_weights<Arch>(conv_, l.cin, l.cout, d.w.data(), d.b.data(), packed_.data());
        const std::size_t bytes = k::conv2d_workspace_bytes(conv_, in_.shape);
        ws_mem_ = Buffer(bytes / sizeof(float) + 1);
        ws_ = edgenn::Workspace(ws_mem_.data(), bytes);
        out_ = edgenn::Tensor::dense(y_.data(), conv_.output_shape(in_.shape, l.cout));
        break;
      }
      case Family::depthwise:
        conv_ = k::Conv2dParams::square(l.k, l.stride, l.pad, l.cin);
        packed_ = Buffer(std::size_t(k::depthwise_packed_floats<Arch>(conv_, l.cin)));
        dw_ = k::pack_depthwise_weights<Arch>(conv_, l.cin, d.w.data(), d.b.data(), packed_.data());
        out_ = edgenn::Tensor::dense(y_.data(), conv_.output_shape(in_.shape, l.cin));
        break;
      case Family::fc:
        packed_ = Buffer(std::size_t(k::fc_packed_floats<Arch>(l.cin, l.cout)));
        pw_ = k::pack_fc_weights<Arch>(l.cin, l.cout, d.w.data(), d.b.data(), packed_.data());
        break;
      case Family::maxpool:
        pool_ = k::Pool2dParams::square(l.k, l.stride, l.pad);
        out_ = edgenn::Tensor::dense(y_.data(), pool_.output_shape(in_.shape));
        break;
      case Family::add:
        in2_ = edgenn::ConstTensor::dense(d.x2.data(), in_.shape);
        out_ = edgenn::Tensor::dense(y_.data(), in_.shape);
        break;
      case Family::gap:
      case Family::softmax: break;
    }
  }

  void run() override {
    const edgenn::Status s = call();
    if (!s.is_ok()) throw std::runtime_error(std::string("edgenn: ") + s.message());
  }
  const float* output() const override { return y_.data(); }

 private:
  edgenn::Status call() {
    const Layer& l = d_.layer;
    switch (l.family) {
      case Family::conv3x3:
      case Family::conv1x1: return k::conv2d<Arch>(conv_, in_, pw_, out_, ws_);
      case Family::depthwise: return k::depthwise_conv2d<Arch>(conv_, in_, dw_, out_, ws_);
      case Family::fc: return k::fully_connected<Arch>(d_.batch, d_.x.data(), l.cin, pw_, y_.data(), l.cout);
      case Family::gap: return k::global_avg_pool<Arch>(in_, y_.data(), l.cin);
      case Family::maxpool: return k::max_pool2d<Arch>(pool_, in_, out_);
      case Family::add: return k::add<Arch>(in_, in2_, out_);
      case Family::softmax: return k::softmax(d_.batch, l.cin, d_.x.data(), l.cin, y_.data(), l.cin);
    }
    return edgenn::Status::ok();
  }

  const LayerData& d_;
  Buffer y_, packed_, ws_mem_;
  edgenn::ConstTensor in_, in2_;
  edgenn::Tensor out_;
  edgenn::Workspace ws_;
  k::Conv2dParams conv_;
  k::Pool2dParams pool_;
  k::PackedWeights pw_;
  k::DepthwiseWeights dw_;
};

struct Library {
  const char* name;
  std::function<std::unique_ptr<Runner>(const LayerData&)> make;
};

std::vector<Library> libraries() {
  std::vector<Library> libs;
  libs.push_back({"ours", [](const LayerData& d) { return std::unique_ptr<Runner>(new Ours(d)); }});
#if defined(EDGENN_BENCH_HAVE_XNNPACK)
  libs.push_back({"xnnpack", [](const LayerData& d) { return std::unique_ptr<Runner>(new xnnpack::Op(d)); }});
#endif
#if defined(EDGENN_BENCH_HAVE_ONEDNN)
  libs.push_back({"onednn", [](const LayerData& d) { return std::unique_ptr<Runner>(new onednn::Op(d)); }});
#endif
  return libs;
}

std::string bench_name(const Layer& l, int batch, const char* lib) {
  return std::string(family_name(l.family)) + "/" + l.model + "/" + l.shape() + "/n" + std::to_string(batch) + "/" +
         lib;
}

void run_layer(benchmark::State& st, const Layer& l, int index, int batch, const Library& lib) {
  std::unique_ptr<LayerData> d;
  std::unique_ptr<Runner> r;
  try {
    d.reset(new LayerData(l, batch));
    r = lib.make(*d);
    r->run();  // first touch of outputs and scratch memory outside the timed loop
    for (auto _ : st) r->run();
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return;
  }
  st.counters["GFLOPS"] = benchmark::Counter(d->flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  // Position in the layer list: random interleaving scrambles the output order.
  st.counters["layer_index"] = index;
  st.SetLabel(r->info());
}

// Peak FMA rate of one core: independent register-resident accumulators (enough to cover
// the FMA latency times the number of FMA pipes), no memory traffic.
void peak_fma(benchmark::State& st) {
  using V = edgenn::simd::Vec<Arch>;
  constexpr int kAcc = V::registers >= 32 ? 16 : 12;
  constexpr int kSteps = 256;
  float seed[3] = {0.9999f, 1e-4f, 0.5f};
  benchmark::DoNotOptimize(seed);  // opaque values: nothing can be folded at compile time
  const V a = V::broadcast(seed[0]), b = V::broadcast(seed[1]);
  V acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = V::broadcast(seed[2] + float(i));
  for (auto _ : st) {
    for (int r = 0; r < kSteps; ++r) {
#pragma GCC unroll 16
      for (int i = 0; i < kAcc; ++i) acc[i] = fma(acc[i], a, b);
    }
  }
  float sink = 0.0f;
  for (int i = 0; i < kAcc; ++i) sink += reduce_add(acc[i]);
  benchmark::DoNotOptimize(sink);
  st.counters["GFLOPS"] =
      benchmark::Counter(2.0 * kAcc * V::size * kSteps * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::string(Arch::name()) + " x" + std::to_string(V::size) + ", " + std::to_string(kAcc) +
              " accumulators");
}

// Google Benchmark's filter semantics: a regex, "-regex" negates, empty or "all" matches all.
bool selected(const std::string& name, const std::string& filter) {
  if (filter.empty() || filter == "all") return true;
  if (filter[0] == '-') return !std::regex_search(name, std::regex(filter.substr(1)));
  return std::regex_search(name, std::regex(filter));
}

// Every peer must compute what we compute, or the comparison means nothing.
bool verify(const std::vector<Layer>& layers, bool batch64_all, const std::string& filter) {
  const std::vector<Library> libs = libraries();
  int checked = 0, failed = 0;
  double worst = 0.0;
  for (const Layer& l : layers) {
    // Batch 2 where batch 64 runs (checks the batch stride too), else batch 1.
    const int batch = run_at_batch64(l, batch64_all) ? 2 : 1;
    bool any = false;
    for (const Library& lib : libs) any = any || selected(bench_name(l, 1, lib.name), filter);
    if (!any) continue;
    try {
      LayerData d(l, batch);
      std::unique_ptr<Runner> ref = libs[0].make(d);
      ref->run();
      for (std::size_t i = 1; i < libs.size(); ++i) {
        std::unique_ptr<Runner> peer = libs[i].make(d);
        peer->run();
        double diff = 0.0, mag = 1e-6;
        for (std::size_t j = 0; j < d.output_size(); ++j) {
          diff = std::fmax(diff, std::fabs(double(ref->output()[j]) - peer->output()[j]));
          mag = std::fmax(mag, std::fabs(double(peer->output()[j])));
        }
        const double err = diff / mag;
        worst = std::fmax(worst, err);
        ++checked;
        if (!(err <= 1e-4)) {
          std::fprintf(stderr, "verify: %s: ours and %s differ (max error %.3g of max |y| %.3g)\n",
                       bench_name(l, batch, libs[i].name).c_str(), libs[i].name, diff, mag);
          ++failed;
        }
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "verify: %s: %s\n", bench_name(l, batch, "*").c_str(), e.what());
      ++failed;
    }
  }
  std::fprintf(stderr, "verify: %d layer/peer pairs checked, %d failed, worst relative difference %.2g\n", checked,
               failed, worst);
  return failed == 0;
}

}  // namespace
}  // namespace edgenn_bench

int main(int argc, char** argv) {
  using namespace edgenn_bench;
#if defined(EDGENN_BENCH_HAVE_ONEDNN)
  // oneDNN threads through OpenMP; OMP_NUM_THREADS=1 (tools/bench.sh) does the same, this
  // also holds when the binary is started by hand.
  omp_set_num_threads(1);
#endif
  std::string batch64 = "small";
  bool do_verify = true;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strncmp(a, "--benchmark_list_tests", 22) == 0) do_verify = false;  // nothing runs
    if (std::strncmp(a, "--edgenn_batch64=", 17) == 0) {
      batch64 = a + 17;
    } else if (std::strncmp(a, "--edgenn_verify=", 16) == 0) {
      do_verify = std::strcmp(a + 16, "0") != 0;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  if (batch64 != "small" && batch64 != "all" && batch64 != "none") {
    std::fprintf(stderr, "--edgenn_batch64 must be small, all or none\n");
    return 2;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;

  using V = edgenn::simd::Vec<Arch>;
  benchmark::AddCustomContext("edgenn_simd", std::string(Arch::name()) + " x" + std::to_string(V::size));
  benchmark::AddCustomContext("edgenn_batch64", batch64);
  std::string peers;
#if defined(EDGENN_BENCH_HAVE_XNNPACK)
  xnnpack::initialize();
  peers += "xnnpack ";
#endif
#if defined(EDGENN_BENCH_HAVE_ONEDNN)
  benchmark::AddCustomContext("onednn", onednn::version());
  benchmark::AddCustomContext("onednn_threads", std::to_string(omp_get_max_threads()));
  peers += "onednn";
#endif
  benchmark::AddCustomContext("peers", peers);

  const std::vector<Layer> layers = all_layers();
  const bool all64 = batch64 == "all";
  if (do_verify && !verify(layers, all64, benchmark::GetBenchmarkFilter())) return 1;

  benchmark::RegisterBenchmark("peak/fma", peak_fma)->MeasureProcessCPUTime();
  const std::vector<Library> libs = libraries();
  for (int i = 0; i < int(layers.size()); ++i) {
    const Layer& l = layers[std::size_t(i)];
    std::vector<int> batches{1};
    if (batch64 != "none" && run_at_batch64(l, all64)) batches.push_back(64);
    for (int n : batches)
      for (const Library& lib : libs)
        benchmark::RegisterBenchmark(bench_name(l, n, lib.name).c_str(),
                                     [l, i, n, lib](benchmark::State& st) { run_layer(st, l, i, n, lib); })
            ->MeasureProcessCPUTime();
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
