// Helpers shared by the tiled-training tests: random stacks, groupings and comparisons.
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "edgenn/dist/plan.hpp"
#include "edgenn/dist/reference.hpp"

namespace edgenn::dist::testing {

inline float max_abs(const std::vector<float>& a) {
  float m = 0.0f;
  for (float v : a) m = std::max(m, std::fabs(v));
  return m;
}
// max |a - b| / max |b| (0 when both are 0).
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 1e30;
  double d = 0.0, m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, double(std::fabs(a[i] - b[i])));
    m = std::max(m, double(std::fabs(b[i])));
  }
  return m == 0.0 ? d : d / m;
}

// A random stack with the shapes the tests must cover: strides 1 and 2, 1x1, 3x3, 5x5,
// dilation 2, depthwise, max pools (2x2/2 and 3x3/2 padded), odd map sizes.
inline Stack random_stack(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Stack s;
  s.in_h = pick(9, 27) | 1;
  s.in_w = pick(9, 27);
  s.in_c = pick(1, 4);
  const int depth = pick(2, 5);
  int c = s.in_c, h = s.in_h, w = s.in_w;
  const Activation acts[] = {Activation::relu, Activation::relu, Activation::none, Activation::relu6};
  for (int l = 0; l < depth; ++l) {
    LayerDesc ly;
    const int kind = pick(0, 9);
    if (kind <= 5) {
      const int ks[] = {1, 3, 3, 5};
      const int k = ks[pick(0, 3)];
      const int st = pick(0, 2) == 0 ? 2 : 1;
      const int d = (k == 3 && pick(0, 4) == 0) ? 2 : 1;
      const int p = pick(0, 3) == 0 ? 0 : d * (k - 1) / 2;
      ly = LayerDesc::conv(c, pick(1, 6), k, st, p, acts[pick(0, 3)], d);
    } else if (kind <= 7) {
      ly = LayerDesc::depthwise(c, 3, pick(1, 2), 1, acts[pick(0, 3)]);
    } else {
      ly = pick(0, 1) ? LayerDesc::maxpool(c, 2, 2, 0) : LayerDesc::maxpool(c, 3, 2, 1);
    }
    if (ly.out_h(h) < 2 || ly.out_w(w) < 2) break;
    h = ly.out_h(h);
    w = ly.out_w(w);
    c = ly.cout;
    s.layers.push_back(ly);
  }
  if (s.layers.empty()) s.layers.push_back(LayerDesc::conv(s.in_c, 3, 3, 1, 1, Activation::relu));
  return s;
}

inline Grouping random_grouping(std::mt19937& rng, int depth) {
  Grouping g{0};
  for (int l = 1; l < depth; ++l)
    if (std::uniform_int_distribution<int>(0, 1)(rng)) g.push_back(l);
  return g;
}

inline std::vector<float> random_values(std::mt19937& rng, std::size_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// loss = sum(G * y): dy = G (a fixed random tensor, signs mixed).
inline LossFn linear_loss(const std::vector<float>& G) {
  return [&G](ConstTensor y, Tensor dy) {
    double l = 0.0;
    std::size_t i = 0;
    for (int b = 0; b < y.n(); ++b)
      for (int r = 0; r < y.h(); ++r)
        for (int x = 0; x < y.w(); ++x)
          for (int ch = 0; ch < y.c(); ++ch, ++i) {
            dy.at(b, r, x, ch) = G[i];
            l += double(G[i]) * y.at(b, r, x, ch);
          }
    return float(l);
  };
}

inline std::string describe(const Stack& s) {
  std::string d = std::to_string(s.in_h) + "x" + std::to_string(s.in_w) + "x" + std::to_string(s.in_c) + ":";
  for (const LayerDesc& l : s.layers) {
    d += l.kind == LayerKind::maxpool ? " pool" : l.kind == LayerKind::depthwise ? " dw" : " conv";
    d += std::to_string(l.kh) + "s" + std::to_string(l.sh) + "p" + std::to_string(l.pt) + "d" + std::to_string(l.dh) +
         "c" + std::to_string(l.cout) + activation_name(l.act);
  }
  return d;
}

}  // namespace edgenn::dist::testing
