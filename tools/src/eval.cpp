// edgenn-eval: run a weights file over a Fashion-MNIST split and report accuracy;
// optionally write the logits (for tools/parity_check.py).
//
//   edgenn-eval --model weights/resnet20_main.safetensors --split test [--logits out.safetensors]
#include <chrono>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "edgenn/io.hpp"
#include "edgenn/runtime/batch_inference.hpp"

using namespace edgenn;

int main(int argc, char** argv) {
  CLI::App app{"Evaluate an edgenn weights file on Fashion-MNIST"};
  std::string model_path, data_dir = "/usr/share/datasets/fashion-mnist", split_name = "test", logits_path;
  int threads = 1, batch = 64, limit = 0;
  app.add_option("--model", model_path, "weights file (.safetensors)")->required();
  app.add_option("--data", data_dir, "directory with the Fashion-MNIST IDX(.gz) files");
  app.add_option("--split", split_name, "train, val, trainval or test");
  app.add_option("--logits", logits_path, "write the logits (and MEANet extension logits) to this .safetensors file");
  app.add_option("--threads", threads, "worker threads")->check(CLI::Range(1, 256));
  app.add_option("--batch", batch, "images per forward pass")->check(CLI::Range(1, 4096));
  app.add_option("--limit", limit, "only the first N images (0 = all)")->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  auto split = io::parse_split(split_name);
  if (!split) return std::fprintf(stderr, "edgenn-eval: %s\n", split.error().c_str()), 2;
  auto data = io::load_fashion_mnist(data_dir, *split);
  if (!data) return std::fprintf(stderr, "edgenn-eval: %s\n", data.error().c_str()), 1;
  if (limit > 0 && limit < data->count) {
    std::vector<int> keep(static_cast<std::size_t>(limit));
    for (int i = 0; i < limit; ++i) keep[std::size_t(i)] = i;
    *data = io::subset(*data, keep);
  }
  auto model = io::load_model(model_path);
  if (!model) return std::fprintf(stderr, "edgenn-eval: %s\n", model.error().c_str()), 1;
  const io::InputSpec& in = model->info.input;
  if (data->height != in.height || data->width != in.width || in.channels != 1)
    return std::fprintf(stderr, "edgenn-eval: data is %dx%d, the model expects %dx%dx%d\n", data->height, data->width,
                        in.height, in.width, in.channels),
           1;
  const int n = data->count, C = int(model->info.classes.size());
  std::vector<float> logits(std::size_t(n) * C), ext;
  const auto t0 = std::chrono::steady_clock::now();
  if (model->classifier) {
    runtime::BatchClassifier<> runner(*model->classifier, in, threads, batch);
    if (Status st = runner.run(data->pixels.data(), n, logits.data()); !st)
      return std::fprintf(stderr, "edgenn-eval: %s\n", st.message()), 1;
  } else {
    // MEANet: main logits and extension logits for every image (no routing here).
    auto& m = *model->meanet;
    ext.resize(std::size_t(n) * m.num_hard());
    const Shape is = in.shape(batch), cs = m.concat_shape(is);
    std::vector<float> x(std::size_t(is.size())), cat(std::size_t(cs.size()));
    std::vector<unsigned char> mem(m.workspace_bytes(is) + kAlignment);
    for (int b0 = 0; b0 < n; b0 += batch) {
      const int nb = std::min(batch, n - b0);
      const Shape s = in.shape(nb), c = m.concat_shape(s);
      Workspace ws(mem.data(), mem.size());
      Status st = nn::normalize_pixels(data->image(b0), in.mean.data(), in.std.data(), Tensor::dense(x.data(), s));
      if (st) st = m.run_main(ConstTensor::dense(x.data(), s), Tensor::dense(cat.data(), c), logits.data() + std::size_t(b0) * C, C, ws);
      if (st)
        st = m.run_extension(ConstTensor::dense(x.data(), s), Tensor::dense(cat.data(), c),
                             ext.data() + std::size_t(b0) * m.num_hard(), m.num_hard(), ws);
      if (!st) return std::fprintf(stderr, "edgenn-eval: %s\n", st.message()), 1;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int correct = 0;
  for (int i = 0; i < n; ++i) {
    const float* row = logits.data() + std::size_t(i) * C;
    correct += int(std::max_element(row, row + C) - row) == data->labels[std::size_t(i)];
  }
  std::printf("%s on %s (%d images): top-1 accuracy %.4f  (%.1f ms, %.0f images/s, %d thread%s)\n",
              model_path.c_str(), split_name.c_str(), n, double(correct) / n, secs * 1e3, n / secs, threads,
              threads > 1 ? "s" : "");
  if (!logits_path.empty()) {
    std::vector<io::TensorData> t{io::TensorData::from_f32("logits", {n, C}, logits.data())};
    if (!ext.empty()) t.push_back(io::TensorData::from_f32("ext_logits", {n, std::int64_t(ext.size() / std::size_t(n))}, ext.data()));
    if (auto ok = io::save_safetensors(logits_path, t, {{"model", model_path}, {"split", split_name}}); !ok)
      return std::fprintf(stderr, "edgenn-eval: %s\n", ok.error().c_str()), 1;
  }
  return 0;
}
