// Helpers of the suites that read safetensors files: PyTorch golden vectors (tests/golden/),
// parity files and checkpoints.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "edgenn/edgenn.hpp"
#include "edgenn/io/safetensors.hpp"

namespace edgenn::test {

// The .safetensors files of tests/<subdir>, sorted.
inline std::vector<std::string> golden_files(const std::string& subdir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(std::string(EDGENN_SOURCE_DIR) + "/tests/" + subdir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

inline Activation parse_act(const std::string& s) {
  return s == "relu" ? Activation::relu : s == "relu6" ? Activation::relu6 : Activation::none;
}

inline Shape shape4(const io::TensorInfo& t) {
  return Shape{int(t.shape[0]), int(t.shape[1]), int(t.shape[2]), int(t.shape[3])};
}

// A float32 tensor of the file; the test stops if it is missing or of another type.
inline std::vector<float> read_f32(const io::SafeTensors& st, const std::string& name) {
  auto r = st.f32(name);
  REQUIRE_MESSAGE(r.ok(), name, ": ", r.error());
  return *r;
}

// Largest |a - b| relative to max(1, |b|).
inline double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::fabs(double(a[i]) - b[i]) / std::max(1.0, std::fabs(double(b[i]))));
  return m;
}

}  // namespace edgenn::test
