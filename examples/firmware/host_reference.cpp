// The firmware example's model on the host: the same weights file loaded by the Linux-side
// loader (io::load_model -> nn::MEANet, the host's SIMD backend), the same router, the same
// Fashion-MNIST test images, printed in the firmware's line format so the two outputs can
// be compared line by line (examples/firmware/compare.py: same exits and classes, logits
// within 1e-4).
//
//   firmware_host_reference --model weights/meanet_mcu.safetensors --first 0 --count 40
//
// Every decision is also cross-checked against meanet::EdgeRuntime (edge only, no cloud),
// the runtime the edge programs use, and (when built with the generated model.hpp) against
// the firmware's compile-time model compiled for the host: same exit and class, logits within
// 1e-4, and a run that uses exactly Model::arena_bytes.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <vector>

#include "edgenn/io.hpp"
#include "edgenn/meanet/config_json.hpp"
#include "edgenn/meanet/edge_runtime.hpp"
#if defined(EDGENN_WITH_STATIC_MODEL)
#include "model.hpp"  // tools/emit_header.py output (examples/CMakeLists.txt)
#endif

using namespace edgenn;

static void print_floats(const char* tag, const float* v, int n) {
  std::printf(" %s", tag);
  for (int i = 0; i < n; ++i) std::printf(" %.6f", double(v[i]));
}

int main(int argc, char** argv) {
  CLI::App app{"Host reference for the firmware example (same model, same images, same output format)"};
  std::string model_path, data_dir = "/usr/share/datasets/fashion-mnist";
  int first = 0, count = 40;
  app.add_option("--model", model_path, "MEANet weights file with router thresholds")->required();
  app.add_option("--data", data_dir, "Fashion-MNIST directory");
  app.add_option("--first", first, "first test image")->check(CLI::NonNegativeNumber);
  app.add_option("--count", count, "number of test images")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  auto loaded = io::load_model(model_path);
  if (!loaded) return std::fprintf(stderr, "error: %s\n", loaded.error().c_str()), 1;
  if (!loaded->meanet) return std::fprintf(stderr, "error: %s is not a MEANet\n", model_path.c_str()), 1;
  if (loaded->info.router.is_null())
    return std::fprintf(stderr, "error: %s has no router thresholds (edgenn.router)\n", model_path.c_str()), 1;
  auto router = meanet::router_from_json(loaded->info.router, model_path);
  if (!router) return std::fprintf(stderr, "error: %s\n", router.error().c_str()), 1;
  auto data = io::load_fashion_mnist(data_dir, io::Split::test);
  if (!data) return std::fprintf(stderr, "error: %s\n", data.error().c_str()), 1;
  if (first + count > data->count)
    return std::fprintf(stderr, "error: images [%d, %d) are not in the test set\n", first, first + count), 1;

  const nn::MEANet<>& m = *loaded->meanet;
  const io::InputSpec& in = loaded->info.input;
  const Shape s = in.shape(1), cs = m.concat_shape(s);
  std::vector<float> x(std::size_t(s.size())), cat(std::size_t(cs.size()));
  std::vector<float> logits(std::size_t(m.num_classes())), ext(std::size_t(m.num_hard())),
      probs(16 + std::size_t(m.num_classes()));
  std::vector<unsigned char> mem(m.workspace_bytes(s) + kAlignment);
  meanet::EdgeRuntime<> runtime(m, in, *router, meanet::Costs{});

  int mismatches = 0;
#if defined(EDGENN_WITH_STATIC_MODEL)
  using Static = edgenn_model::Model;
  alignas(kAlignment) static unsigned char arena[Static::arena_bytes];
  if (Static::num_classes != m.num_classes() || Static::num_hard != m.num_hard())
    return std::fprintf(stderr, "error: the compiled-in model.hpp is not the model of %s\n", model_path.c_str()), 1;
#endif
  for (int i = 0; i < count; ++i) {
    const int idx = first + i;
    const unsigned char* pixels = data->image(idx);
    Workspace ws(mem.data(), mem.size());
    const Tensor xt = Tensor::dense(x.data(), s), ct = Tensor::dense(cat.data(), cs);
    Status st = nn::normalize_pixels(pixels, in.mean.data(), in.std.data(), xt);
    if (st) st = m.run_main(xt, ct, logits.data(), m.num_classes(), ws);
    if (!st) return std::fprintf(stderr, "error: image %d: %s\n", idx, st.message()), 1;
    const meanet::Signals ms =
        meanet::softmax_signals(logits.data(), m.num_classes(), probs.data(), m.hard_index.data());
    const bool hard = meanet::is_hard(*router, ms, m.hard_index.data(), m.num_hard(), m.num_classes());
    meanet::Step step = meanet::route_after_main(*router, ms, m.hard_index.data(), m.num_hard(), m.num_classes());
    bool ext_ran = false;
    meanet::Signals es;
    if (step == meanet::Step::run_extension || (step == meanet::Step::send_to_cloud && hard)) {
      if (Status e = m.run_extension(xt, ct, ext.data(), m.num_hard(), ws); !e)
        return std::fprintf(stderr, "error: image %d: %s\n", idx, e.message()), 1;
      ext_ran = true;
      es = meanet::softmax_signals(ext.data(), m.num_hard(), probs.data());
      if (step == meanet::Step::run_extension) step = meanet::route_after_extension(*router, es);
    }
    const meanet::Exit exit = step == meanet::Step::send_to_cloud    ? meanet::Exit::cloud
                              : step == meanet::Step::exit_extension ? meanet::Exit::extension
                                                                     : meanet::Exit::main;
    const int cls = ext_ran ? m.hard_classes[std::size_t(es.top)] : ms.top;

    auto d = runtime.classify(pixels, nullptr);
    if (!d) return std::fprintf(stderr, "error: image %d: %s\n", idx, d.error().c_str()), 1;
    if (d->exit != exit || d->cls != cls) {
      std::fprintf(stderr, "image %d: EdgeRuntime says exit %s class %d, this program exit %s class %d\n", idx,
                   meanet::exit_name(d->exit), d->cls, meanet::exit_name(exit), cls);
      ++mismatches;
    }
#if defined(EDGENN_WITH_STATIC_MODEL)
    {
      Static::Decision sd;
      std::size_t used = 0;
      if (Status e = Static::classify(pixels, arena, sizeof arena, sd, &used); !e)
        return std::fprintf(stderr, "error: image %d: static model: %s\n", idx, e.message()), 1;
      bool same = sd.exit == exit && sd.cls == cls && sd.extension_ran == ext_ran && used == Static::arena_bytes;
      for (int c = 0; c < m.num_classes(); ++c)
        same = same && std::fabs(sd.logits[c] - logits[std::size_t(c)]) <= 1e-4f;
      for (int h = 0; ext_ran && h < m.num_hard(); ++h)
        same = same && std::fabs(sd.ext_logits[h] - ext[std::size_t(h)]) <= 1e-4f;
      if (!same) {
        std::fprintf(stderr,
                     "image %d: the compile-time model (host build) differs: exit %s class %d, arena used %zu of %zu\n",
                     idx, meanet::exit_name(sd.exit), sd.cls, used, Static::arena_bytes);
        ++mismatches;
      }
    }
#endif
    std::printf("image %d index %d label %d exit %s class %d ticks 0", i, idx, int(data->labels[std::size_t(idx)]),
                meanet::exit_name(exit), cls);
    print_floats("main", logits.data(), m.num_classes());
    if (ext_ran) print_floats("ext", ext.data(), m.num_hard());
    std::printf("\n");
  }
  std::printf("status %s\n", mismatches == 0 ? "ok" : "FAILED");
  return mismatches == 0 ? 0 : 1;
}
