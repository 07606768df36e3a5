// Parameters, gradients and packed weights of a fused stack (plan.hpp's Stack), an SGD step
// and a bitwise checksum (replicas compare it to prove they hold identical weights).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "edgenn/dist/plan.hpp"
#include "edgenn/kernels/conv2d.hpp"
#include "edgenn/kernels/conv2d_backward.hpp"
#include "edgenn/kernels/depthwise.hpp"

namespace edgenn::dist {

// Weights in OHWI ([cout][kh][kw][cin/groups]) and bias [cout]; empty for pooling layers.
struct LayerGrads {
  std::vector<float> w, b;
};
using LayerParams = LayerGrads;

struct ModelGrads {
  std::vector<LayerGrads> layers;

  void resize_like(const Stack& s) {
    layers.resize(s.layers.size());
    for (std::size_t l = 0; l < s.layers.size(); ++l) {
      layers[l].w.resize(std::size_t(s.layers[l].weight_count()));
      layers[l].b.resize(s.layers[l].has_weights() ? std::size_t(s.layers[l].cout) : 0);
    }
  }
  void zero() {
    for (auto& l : layers) {
      std::fill(l.w.begin(), l.w.end(), 0.0f);
      std::fill(l.b.begin(), l.b.end(), 0.0f);
    }
  }
  // Every value in one flat vector (layer order, weights then bias), and back.
  std::vector<float> flatten() const {
    std::vector<float> f;
    for (const auto& l : layers) {
      f.insert(f.end(), l.w.begin(), l.w.end());
      f.insert(f.end(), l.b.begin(), l.b.end());
    }
    return f;
  }
  void unflatten(const float* f) {
    for (auto& l : layers) {  // pooling layers have empty vectors (null data(): no memcpy)
      std::copy(f, f + l.w.size(), l.w.begin());
      f += l.w.size();
      std::copy(f, f + l.b.size(), l.b.begin());
      f += l.b.size();
    }
  }
  std::size_t count() const {
    std::size_t n = 0;
    for (const auto& l : layers) n += l.w.size() + l.b.size();
    return n;
  }
  // this += o
  void add(const ModelGrads& o) {
    for (std::size_t l = 0; l < layers.size(); ++l) {
      for (std::size_t i = 0; i < layers[l].w.size(); ++i) layers[l].w[i] += o.layers[l].w[i];
      for (std::size_t i = 0; i < layers[l].b.size(); ++i) layers[l].b[i] += o.layers[l].b[i];
    }
  }
};
using ModelParams = ModelGrads;

// Random weights: uniform in ±sqrt(6 / fan_in) (signs mixed, so ReLU and max-pool paths vary).
inline ModelParams random_params(const Stack& s, std::uint32_t seed) {
  ModelParams p;
  p.resize_like(s);
  std::mt19937 rng(seed);
  for (std::size_t l = 0; l < s.layers.size(); ++l) {
    const LayerDesc& ly = s.layers[l];
    if (!ly.has_weights()) continue;
    const float bound = std::sqrt(6.0f / float(ly.kh * ly.kw * (ly.cin / ly.groups())));
    std::uniform_real_distribution<float> u(-bound, bound), ub(-0.1f, 0.1f);
    for (float& v : p.layers[l].w) v = u(rng);
    for (float& v : p.layers[l].b) v = ub(rng);
  }
  return p;
}

// Forward and input-gradient packings of one layer (the kernels' layouts for this build's Arch).
struct LayerWeights {
  kernels::PackedWeights packed{};
  kernels::ConvInputGradWeights dx_packed{};
  kernels::DepthwiseWeights dw_packed{};
  std::vector<float> mem, dx_mem;
};

class PackedModel {
 public:
  void pack(const Stack& s, const ModelParams& p) {
    layers_.resize(s.layers.size());
    for (std::size_t l = 0; l < s.layers.size(); ++l) {
      const LayerDesc& ly = s.layers[l];
      LayerWeights& w = layers_[l];
      if (!ly.has_weights()) continue;
      const kernels::Conv2dParams cp = ly.conv_params();
      const float* ohwi = p.layers[l].w.data();
      const float* bias = p.layers[l].b.data();
      if (ly.kind == LayerKind::depthwise) {
        w.mem.resize(std::size_t(kernels::depthwise_packed_floats(cp, ly.cin)));
        w.dw_packed = kernels::pack_depthwise_weights(cp, ly.cin, ohwi, bias, w.mem.data());
      } else {
        w.mem.resize(std::size_t(kernels::conv_packed_floats(cp, ly.cin, ly.cout)));
        w.packed = kernels::pack_conv_weights(cp, ly.cin, ly.cout, ohwi, bias, w.mem.data());
        w.dx_mem.resize(std::size_t(kernels::conv_input_grad_packed_floats(cp, ly.cin, ly.cout)));
        w.dx_packed = kernels::pack_conv_input_grad_weights(cp, ly.cin, ly.cout, ohwi, w.dx_mem.data());
      }
    }
  }
  const LayerWeights& layer(int l) const { return layers_[std::size_t(l)]; }

 private:
  std::vector<LayerWeights> layers_;
};

// SGD with momentum and weight decay (PyTorch's torch.optim.SGD update rule):
//   v = momentum * v + (g + decay * w);  w -= lr * v
struct Sgd {
  float lr = 0.01f, momentum = 0.0f, weight_decay = 0.0f;
  ModelGrads velocity;

  void step(ModelParams& p, const ModelGrads& g) {
    if (velocity.layers.size() != p.layers.size()) {
      velocity = g;
      velocity.zero();
    }
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
      update(p.layers[l].w, g.layers[l].w, velocity.layers[l].w);
      update(p.layers[l].b, g.layers[l].b, velocity.layers[l].b);
    }
  }

 private:
  void update(std::vector<float>& w, const std::vector<float>& g, std::vector<float>& v) const {
    for (std::size_t i = 0; i < w.size(); ++i) {
      v[i] = momentum * v[i] + (g[i] + weight_decay * w[i]);
      w[i] -= lr * v[i];
    }
  }
};

// FNV-1a over the bits of every value: equal iff the replicas are bitwise identical.
inline std::uint64_t checksum(const ModelParams& p) {
  std::uint64_t h = 1469598103934665603ull;
  for (const auto& l : p.layers)
    for (const auto* v : {&l.w, &l.b})
      for (float f : *v) {
        std::uint32_t bits;
        std::memcpy(&bits, &f, 4);
        for (int k = 0; k < 4; ++k) {
          h ^= (bits >> (8 * k)) & 0xffu;
          h *= 1099511628211ull;
        }
      }
  return h;
}

}  // namespace edgenn::dist
