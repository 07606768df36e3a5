// Tails: what runs on the head rank after the fused stack (the weight-dominated layers and the
// loss). GapLinearTail: global average pool + linear + softmax cross-entropy, trained with the
// same SGD rule as the fused layers (only the head holds and updates it).
#pragma once

#include <random>
#include <vector>

#include "edgenn/core/tensor.hpp"
#include "edgenn/kernels/loss.hpp"

namespace edgenn::dist {

struct GapLinearTail {
  int channels = 0, classes = 0;
  std::vector<float> w, b, vw, vb;  // [classes][channels], [classes], momentum buffers
  float lr = 0.01f, momentum = 0.0f, weight_decay = 0.0f;

  GapLinearTail(int c, int k, std::uint32_t seed) : channels(c), classes(k), w(std::size_t(c) * k), b(k), vw(w.size()), vb(k) {
    std::mt19937 rng(seed);
    const float bound = 1.0f / std::sqrt(float(c));
    std::uniform_real_distribution<float> u(-bound, bound);
    for (float& v : w) v = u(rng);
    for (float& v : b) v = u(rng);
  }

  // Loss of the batch with integer labels; writes dLoss/dy into dy and updates the tail.
  float step(ConstTensor y, const int* labels, Tensor dy) {
    const int n = y.n(), C = channels, K = classes;
    const double inv = 1.0 / (double(y.h()) * y.w());
    std::vector<float> pooled(std::size_t(n) * C, 0.0f), logits(std::size_t(n) * K), dz(std::size_t(n) * K);
    for (int bi = 0; bi < n; ++bi) {
      std::vector<double> acc(C, 0.0);
      for (int r = 0; r < y.h(); ++r)
        for (int x = 0; x < y.w(); ++x)
          for (int c = 0; c < C; ++c) acc[c] += y.at(bi, r, x, c);
      for (int c = 0; c < C; ++c) pooled[std::size_t(bi) * C + c] = float(acc[c] * inv);
      for (int k = 0; k < K; ++k) {
        float z = b[k];
        for (int c = 0; c < C; ++c) z += w[std::size_t(k) * C + c] * pooled[std::size_t(bi) * C + c];
        logits[std::size_t(bi) * K + k] = z;
      }
    }
    float loss = 0.0f;
    (void)kernels::softmax_cross_entropy(n, K, logits.data(), K, labels, 0.0f, &loss, dz.data(), K);
    std::vector<float> gw(w.size(), 0.0f), gb(b.size(), 0.0f);
    for (int bi = 0; bi < n; ++bi)
      for (int k = 0; k < K; ++k) {
        const float d = dz[std::size_t(bi) * K + k];
        gb[k] += d;
        for (int c = 0; c < C; ++c) gw[std::size_t(k) * C + c] += d * pooled[std::size_t(bi) * C + c];
      }
    for (int bi = 0; bi < n; ++bi)
      for (int c = 0; c < C; ++c) {
        float g = 0.0f;
        for (int k = 0; k < K; ++k) g += w[std::size_t(k) * C + c] * dz[std::size_t(bi) * K + k];
        const float gp = float(g * inv);
        for (int r = 0; r < y.h(); ++r)
          for (int x = 0; x < y.w(); ++x) dy.at(bi, r, x, c) = gp;
      }
    update(w, gw, vw);
    update(b, gb, vb);
    return loss;
  }

 private:
  void update(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& v) const {
    for (std::size_t i = 0; i < p.size(); ++i) {
      v[i] = momentum * v[i] + (g[i] + weight_decay * p[i]);
      p[i] -= lr * v[i];
    }
  }
};

}  // namespace edgenn::dist
