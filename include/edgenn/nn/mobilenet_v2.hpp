// MobileNetV2 (Sandler et al. 2018) with a width multiplier, a configurable stem (channels,
// stride) and configurable inverted-residual settings, so 28x28 inputs keep enough
// resolution. Names follow torchvision: features.0 (stem), features.i (blocks),
// features.N (last 1x1 conv), classifier.1 (linear).
#pragma once

#include <array>
#include <vector>

#include "edgenn/nn/classifier.hpp"

namespace edgenn::nn {

struct MobileNetV2Config {
  float width_mult = 1.0f;
  int stem_channels = 32;
  int stem_stride = 1;
  int last_channel = 1280;
  int in_ch = 1;
  int num_classes = 10;
  // (expansion t, channels c, repeats n, first stride s)
  std::vector<std::array<int, 4>> settings = {{1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                              {6, 96, 3, 1}, {6, 160, 3, 1}, {6, 320, 1, 1}};

  Status validate() const {
    EDGENN_CHECK(width_mult > 0 && stem_channels > 0 && last_channel > 0 && in_ch > 0 && num_classes > 0,
                 Error::invalid_argument, "mobilenet_v2: sizes must be positive");
    EDGENN_CHECK(stem_stride == 1 || stem_stride == 2, Error::invalid_argument, "mobilenet_v2: stem stride must be 1 or 2");
    EDGENN_CHECK(!settings.empty(), Error::invalid_argument, "mobilenet_v2: no inverted-residual settings");
    for (const auto& s : settings)
      EDGENN_CHECK(s[0] >= 1 && s[1] > 0 && s[2] > 0 && (s[3] == 1 || s[3] == 2), Error::invalid_argument,
                   "mobilenet_v2: bad inverted-residual setting (t >= 1, c > 0, n > 0, s in {1, 2})");
    return Status::ok();
  }
};

// torchvision's channel rounding: nearest multiple of 8, never below 90% of the target.
inline int make_divisible(float v, int divisor = 8) {
  int nv = std::max(divisor, int(v + divisor / 2.0f) / divisor * divisor);
  if (nv < 0.9f * v) nv += divisor;
  return nv;
}

template <class Arch = simd::default_arch>
Classifier<Arch> build_mobilenet_v2(const MobileNetV2Config& cfg, const std::string& prefix = "") {
  Classifier<Arch> m;
  int cin = make_divisible(cfg.stem_channels * cfg.width_mult);
  const int last = make_divisible(cfg.last_channel * std::max(1.0f, cfg.width_mult));
  m.features.add(make_conv_bn<Arch>(prefix + "features.0.0", prefix + "features.0.1", cfg.in_ch, cin, 3, cfg.stem_stride,
                                    1, Activation::relu6));
  int idx = 1;
  for (const auto& s : cfg.settings) {
    const int cout = make_divisible(s[1] * cfg.width_mult);
    for (int i = 0; i < s[2]; ++i) {
      m.features.add(InvertedResidual<Arch>::make(prefix + "features." + std::to_string(idx++), cin, cout,
                                                  i == 0 ? s[3] : 1, s[0]));
      cin = cout;
    }
  }
  const std::string lastp = prefix + "features." + std::to_string(idx);
  m.features.add(make_conv_bn<Arch>(lastp + ".0", lastp + ".1", cin, last, 1, 1, 1, Activation::relu6));
  m.head.name = prefix + "classifier.1";
  m.head.in_features = last;
  m.head.out_features = cfg.num_classes;
  m.head.allocate();
  return m;
}

}  // namespace edgenn::nn
