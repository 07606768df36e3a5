// Activations that kernels fuse into their epilogue, expressed as a clamp [lo, hi].
#pragma once

#include <limits>

#include "edgenn/core/config.hpp"

namespace edgenn {

enum class Activation : std::uint8_t { none = 0, relu = 1, relu6 = 2 };

inline constexpr const char* activation_name(Activation a) {
  return a == Activation::relu ? "relu" : a == Activation::relu6 ? "relu6" : "none";
}

struct Clamp {
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
};

inline constexpr Clamp activation_clamp(Activation a) {
  switch (a) {
    case Activation::relu: return Clamp{0.0f, std::numeric_limits<float>::infinity()};
    case Activation::relu6: return Clamp{0.0f, 6.0f};
    case Activation::none: break;
  }
  return Clamp{};
}

}  // namespace edgenn
