// The training step's 3x3 stride-1 convolutions, direct kernels vs Winograd F(4x4, 3x3), per
// pass (forward, input gradient, weight gradient; weight packing included, as the training
// layer repacks every step), median time, one thread, alternating per configuration. The
// layer threshold of train::ConvBNTrain (Winograd in every pass from 16 channels) comes from
// this table (docs/training_kernels.md).
//
//   bench_conv_algorithms [--min-time S]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "edgenn/kernels.hpp"
#include "median_time.hpp"

using namespace edgenn;
using namespace edgenn::kernels;
using Arch = simd::default_arch;

int main(int argc, char** argv) {
  double min_time = 0.5;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--min-time") == 0 && i + 1 < argc) {
      min_time = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_conv_algorithms [--min-time S]\n");
      return 2;
    }
  }
  struct Layer {
    int n, hw, cin, cout;
  };
  // ResNet-20's stages and MEANet's extension block (128-channel concat in), batch 32 and 128.
  const Layer layers[] = {{32, 28, 16, 16}, {32, 14, 32, 32}, {32, 7, 64, 64},  {32, 7, 128, 64},
                          {128, 28, 16, 16}, {128, 14, 32, 32}, {128, 7, 64, 64}, {128, 7, 128, 64}};
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-1, 1);
  std::printf("%-18s %8s %8s %8s | %8s %8s %8s | %6s %6s %6s\n", "layer (NxHxWxC->C)", "fwd ms", "dX ms", "dW ms",
              "wfwd ms", "wdX ms", "wdW ms", "fwd x", "dX x", "dW x");
  for (const Layer& l : layers) {
    const Shape in{l.n, l.hw, l.hw, l.cin}, out{l.n, l.hw, l.hw, l.cout};
    const Conv2dParams p = Conv2dParams::square(3, 1, 1);
    std::vector<float> x(std::size_t(in.size())), y(std::size_t(out.size())), dy(y.size()), dx(x.size());
    std::vector<float> w(std::size_t(l.cout) * 9 * l.cin), dw(w.size()), zero_bias(std::size_t(l.cout), 0.0f);
    for (auto* v : {&x, &dy, &w})
      for (auto& e : *v) e = u(gen);
    std::vector<float> packed(std::size_t(conv_packed_floats<Arch>(p, l.cin, l.cout)));
    std::vector<float> packed_dx(std::size_t(conv_input_grad_packed_floats<Arch>(p, l.cin, l.cout)));
    std::vector<float> wino(std::size_t(std::max(winograd_packed_floats<Arch>(l.cin, l.cout),
                                                 winograd_packed_floats<Arch>(l.cout, l.cin))));
    std::vector<float> scratch(std::size_t(winograd_pack_scratch_floats(l.cin, l.cout)));
    std::vector<unsigned char> mem(std::size_t(64) << 20);
    Workspace ws(mem.data(), mem.size());
    const ConstTensor X = ConstTensor::dense(x.data(), in), DY = ConstTensor::dense(dy.data(), out);
    const Tensor Y = Tensor::dense(y.data(), out), DX = Tensor::dense(dx.data(), in);
    bool ok = true;
    auto check = [&](Status s) { ok = ok && s.is_ok(); };
    auto time = [&](auto&& f) { return 1e3 * edgenn_bench::median_seconds(f, min_time, 2); };
    const double df = time([&] {
      const PackedWeights pw = pack_conv_weights<Arch>(p, l.cin, l.cout, w.data(), zero_bias.data(), packed.data());
      check(conv2d<Arch>(p, X, pw, Y, ws));
    });
    const double wf = time([&] {
      const PackedWeights pw =
          pack_winograd_weights<Arch>(l.cin, l.cout, w.data(), WinogradPass::forward, scratch.data(), wino.data());
      check(winograd_conv3x3<Arch>(X, pw, Y, ws, false));
    });
    const double di = time([&] {
      const auto gw = pack_conv_input_grad_weights<Arch>(p, l.cin, l.cout, w.data(), packed_dx.data());
      check(conv2d_backward_input<Arch>(p, DY, gw, DX, ws, false));
    });
    const double wi = time([&] {
      const PackedWeights pw =
          pack_winograd_weights<Arch>(l.cin, l.cout, w.data(), WinogradPass::input_grad, nullptr, wino.data());
      check(winograd_conv3x3<Arch>(DY, pw, DX, ws, false));
    });
    const double dwd = time([&] { check(conv2d_backward_weights<Arch>(p, X, DY, dw.data(), nullptr, ws)); });
    const double dww = time([&] { check(winograd_weight_grad<Arch>(X, DY, dw.data(), nullptr, ws)); });
    if (!ok) {
      std::fprintf(stderr, "bench_conv_algorithms: a kernel failed\n");
      return 1;
    }
    char name[64];
    std::snprintf(name, sizeof name, "%dx%dx%dx%d->%d", l.n, l.hw, l.hw, l.cin, l.cout);
    std::printf("%-18s %8.3f %8.3f %8.3f | %8.3f %8.3f %8.3f | %5.2fx %5.2fx %5.2fx\n", name, df, di, dwd, wf, wi, dww,
                df / wf, di / wi, dwd / dww);
  }
  return 0;
}
