// Shipped weights against PyTorch: every tests/parity/*.safetensors (made by
// tools/make_parity.py from the reference checkpoint) names a weights file; the engine
// must reproduce PyTorch's logits on its images to 1e-4 of the logit scale.
//
// EDGENN_PARITY_IMAGES (a compile definition, 0 = all): the builds that run 20-30x slower
// (sanitizers, qemu) check the first images of each file only; the kernels are the same for
// every image, and the native build and the parity stage (full test set) check all of them.
#include <algorithm>
#include <filesystem>

#include "edgenn/io.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_parity {

using namespace edgenn;

#ifndef EDGENN_PARITY_IMAGES
#define EDGENN_PARITY_IMAGES 0
#endif

namespace {

std::string parity_dir() {
  const char* d = std::getenv("EDGENN_PARITY_DIR");
  return d ? d : std::string(EDGENN_SOURCE_DIR) + "/tests/parity";
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

template <class Arch>
void check_parity(const std::string& path) {
  auto st = io::SafeTensors::load(path);
  REQUIRE_MESSAGE(st.ok(), st.error());
  const std::string weights = std::filesystem::path(st->metadata().at("weights")).is_absolute()
                                  ? st->metadata().at("weights")
                                  : std::string(EDGENN_SOURCE_DIR) + "/" + st->metadata().at("weights");
  INFO("parity file ", path, " weights ", weights, " arch ", Arch::name(), " images ", EDGENN_PARITY_IMAGES);
  auto model = io::load_model<Arch>(weights);
  REQUIRE_MESSAGE(model.ok(), model.error());
  const auto& images_info = *st->find("images");
  const int stored = int(images_info.shape[0]);
  const int n = EDGENN_PARITY_IMAGES > 0 ? std::min(stored, EDGENN_PARITY_IMAGES) : stored;
  const std::size_t image_bytes = std::size_t(images_info.end - images_info.begin) / std::size_t(stored);
  const std::vector<unsigned char> pixels(st->bytes(images_info), st->bytes(images_info) + image_bytes * std::size_t(n));
  const auto first = [n, stored](std::vector<float> v) {  // the logits of the first n images
    v.resize(v.size() / std::size_t(stored) * std::size_t(n));
    return v;
  };
  const auto expected = first(*st->f32("logits"));
  const io::InputSpec& in = model->info.input;
  const Shape is = in.shape(n);
  std::vector<float> x(std::size_t(is.size()));
  REQUIRE(nn::normalize_pixels(pixels.data(), in.mean.data(), in.std.data(), Tensor::dense(x.data(), is)).is_ok());
  const int C = int(model->info.classes.size());
  std::vector<float> logits(std::size_t(n) * C);
  if (model->classifier) {
    std::vector<unsigned char> mem(model->classifier->workspace_bytes(is) + kAlignment);
    Workspace ws(mem.data(), mem.size());
    REQUIRE(model->classifier->forward(ConstTensor::dense(x.data(), is), logits.data(), C, ws).is_ok());
  } else {
    auto& m = *model->meanet;
    const Shape cs = m.concat_shape(is);
    std::vector<float> concat(std::size_t(cs.size()));
    std::vector<float> ext(std::size_t(n) * m.num_hard());
    std::vector<unsigned char> mem(m.workspace_bytes(is) + kAlignment);
    Workspace ws(mem.data(), mem.size());
    REQUIRE(m.run_main(ConstTensor::dense(x.data(), is), Tensor::dense(concat.data(), cs), logits.data(), C, ws).is_ok());
    REQUIRE(m.run_extension(ConstTensor::dense(x.data(), is), Tensor::dense(concat.data(), cs), ext.data(), m.num_hard(), ws)
                .is_ok());
    const auto ext_expected = first(*st->f32("ext_logits"));
    const double scale = std::max(1.0, max_abs(ext_expected));
    std::string where;
    CHECK_MESSAGE(test::close(ext, ext_expected, {}, 0.0, 1e-4 * scale, &where), "extension logits: ", where);
  }
  const double scale = std::max(1.0, max_abs(expected));
  std::string where;
  CHECK_MESSAGE(test::close(logits, expected, {}, 0.0, 1e-4 * scale, &where), "logits: ", where);
}

}  // namespace

TEST_CASE_TEMPLATE("shipped weights reproduce the PyTorch logits", Arch, EDGENN_TEST_ARCHS) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(parity_dir()))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  REQUIRE_MESSAGE(!files.empty(), "no parity files in ", parity_dir());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) check_parity<Arch>(f);
}

}  // namespace test_parity
