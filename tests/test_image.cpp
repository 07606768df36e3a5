// Image files into model inputs: the shipped sample PNGs decode to exactly the Fashion-MNIST
// test pixels, resizing and colour conversion of the 4x-upscaled inverted RGB "photo" give
// them back, JPEG stays close, and unreadable files fail with the file's name.
#include <filesystem>

#include "edgenn/image.hpp"
#include "edgenn/io.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_image {

using namespace edgenn;

namespace {

const std::string kSamples = std::string(EDGENN_SOURCE_DIR) + "/examples/classify_images/samples/";

// The first 100 Fashion-MNIST test images as committed in a parity file (uint8 [100][28][28]):
// no data set package and no zlib needed (cross builds have neither).
const std::vector<unsigned char>& test_pixels() {
  static const std::vector<unsigned char> px = [] {
    auto st = io::SafeTensors::load(std::string(EDGENN_SOURCE_DIR) + "/tests/parity/resnet20_main.safetensors");
    REQUIRE_MESSAGE(st.ok(), st.error());
    const auto* info = st->find("images");
    REQUIRE(info != nullptr);
    REQUIRE(info->end - info->begin == 100 * 784);
    return std::vector<unsigned char>(st->bytes(*info), st->bytes(*info) + (info->end - info->begin));
  }();
  return px;
}
const unsigned char* test_image(int index) {
  REQUIRE(index >= 0);
  REQUIRE(index < 100);
  return test_pixels().data() + std::size_t(index) * 784;
}

int index_of(const std::string& name) {
  const auto p = name.find_first_of("0123456789");
  return std::atoi(name.c_str() + p);
}

}  // namespace

TEST_CASE("sample PNGs decode to the test-set pixels exactly, the inverted 112x112 RGB photo too") {
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(kSamples)) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() != ".png") continue;
    const bool photo = name.rfind("photo_inverted_", 0) == 0;
    auto px = image::load_image(e.path().string(), {28, 28, 1, photo});
    REQUIRE_MESSAGE(px.ok(), px.error());
    const unsigned char* want = test_image(index_of(name));
    INFO(name);
    CHECK(std::equal(px->begin(), px->end(), want));
    ++checked;
  }
  CHECK(checked == 21);
}

TEST_CASE("JPEG samples are within JPEG error of the pixels") {
  for (const auto& e : std::filesystem::directory_iterator(kSamples)) {
    if (e.path().extension() != ".jpg") continue;
    auto px = image::load_image(e.path().string());
    REQUIRE_MESSAGE(px.ok(), px.error());
    const unsigned char* want = test_image(index_of(e.path().filename().string()));
    double mad = 0;
    for (int i = 0; i < 784; ++i) mad += std::abs(int((*px)[std::size_t(i)]) - int(want[i]));
    CHECK(mad / 784 < 4.0);
  }
}

TEST_CASE("resampling: area average down, bilinear up, identity at the same size") {
  std::vector<float> src = {0, 4, 8, 12}, dst;  // 2x2
  image::resample(src, 2, 2, dst, 1, 1);
  CHECK(dst[0] == doctest::Approx(6));
  image::resample(src, 2, 2, dst, 2, 2);
  CHECK(dst == src);
  image::resample(src, 2, 2, dst, 4, 4);
  CHECK(dst[0] == doctest::Approx(0));                      // corner stays
  CHECK(dst[15] == doctest::Approx(12));
  // (1,1) sits at source (0.25, 0.25): 0.75*(0.75*0 + 0.25*4) + 0.25*(0.75*8 + 0.25*12) = 3.
  CHECK(dst[5] == doctest::Approx(3));
}

TEST_CASE("unreadable and corrupt files fail naming the file") {
  auto missing = image::load_image(kSamples + "nope.png");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().find("nope.png") != std::string::npos);
  const std::string bad = (std::filesystem::temp_directory_path() / "edgenn_corrupt.png").string();
  const char junk[] = "\x89PNG\r\n\x1a\n garbage";
  REQUIRE(io::write_file_atomic(bad, junk, sizeof junk).ok());
  auto corrupt = image::load_image(bad);
  REQUIRE_FALSE(corrupt.ok());
  CHECK(corrupt.error().find("edgenn_corrupt.png") != std::string::npos);
  std::filesystem::remove(bad);
  CHECK_FALSE(image::load_image(kSamples + "0002_Trouser.png", {28, 28, 2, false}).ok());
}

}  // namespace test_image
