// Optimizers with PyTorch's update rules (torch.optim.SGD, Adam, AdamW as of 1.13), applied
// to flat parameter slots. Each step is a fixed sequence of float32 operations in PyTorch's
// order (scalars computed in double, as Python does, then rounded to float), so a run
// matches torch.optim to float rounding (tests/test_optim.cpp against tests/golden/optim/).
//
// Weight decay: `coupled` adds wd·p to the gradient (PyTorch SGD/Adam `weight_decay`);
// `decoupled` shrinks the parameter by (1 − lr·wd) before the update (AdamW; for SGD the same
// rule, SGDW). Slots with decay = false (e.g. when a caller exempts BN and biases) skip it.
//
// The optimizers own their state (momentum, Adam moments); the state is exposed by name for
// checkpoints. They allocate when bound to slots, never during step().
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "edgenn/core/status.hpp"

namespace edgenn::train {

// One parameter tensor the optimizer updates: value and gradient of `size` floats.
struct ParamSlot {
  std::string name;
  float* value = nullptr;
  float* grad = nullptr;
  std::size_t size = 0;
  bool decay = true;
};

enum class WeightDecay { coupled, decoupled };

struct SgdConfig {
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;
  WeightDecay decay_mode = WeightDecay::coupled;
};

struct AdamConfig {
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  WeightDecay decay_mode = WeightDecay::coupled;  // decoupled = AdamW
};

// A named float buffer of optimizer state (for checkpoints).
struct StateRef {
  std::string name;
  std::vector<float>* data;
};

class Sgd {
 public:
  Sgd() = default;
  Sgd(std::vector<ParamSlot> slots, SgdConfig cfg) : slots_(std::move(slots)), cfg_(cfg) {
    if (cfg_.momentum != 0.0)
      for (const auto& s : slots_) buf_.emplace_back(s.size, 0.0f);
  }
  const SgdConfig& config() const { return cfg_; }
  const std::vector<ParamSlot>& slots() const { return slots_; }
  std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t s) { steps_ = s; }

  // p ← p − lr·d with d = g (+ wd·p), momentum buffer b ← m·b + (1 − dampening)·d (b = d on
  // the first step), d = b, or d + m·b with Nesterov.
  Status step(double lr) {
    EDGENN_CHECK(!(cfg_.nesterov && (cfg_.momentum <= 0.0 || cfg_.dampening != 0.0)), Error::invalid_argument,
                 "Sgd: Nesterov momentum requires a momentum and zero dampening");
    const float flr = float(lr), wd = float(cfg_.weight_decay), m = float(cfg_.momentum);
    const float damp = float(1.0 - cfg_.dampening), shrink = float(1.0 - lr * cfg_.weight_decay);
    const bool first = steps_ == 0;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const ParamSlot& s = slots_[i];
      float* p = s.value;
      const float* g = s.grad;
      float* b = buf_.empty() ? nullptr : buf_[i].data();
      const bool coupled = s.decay && wd != 0.0f && cfg_.decay_mode == WeightDecay::coupled;
      const bool decoupled = s.decay && wd != 0.0f && cfg_.decay_mode == WeightDecay::decoupled;
      for (std::size_t j = 0; j < s.size; ++j) {
        if (decoupled) p[j] = p[j] * shrink;
        float d = coupled ? std::fma(p[j], wd, g[j]) : g[j];
        if (b) {
          b[j] = first ? d : std::fma(d, damp, b[j] * m);
          d = cfg_.nesterov ? std::fma(b[j], m, d) : b[j];
        }
        p[j] = std::fma(d, -flr, p[j]);
      }
    }
    ++steps_;
    return Status::ok();
  }

  template <class F>
  void visit_state(F&& f) {
    for (std::size_t i = 0; i < buf_.size(); ++i) f(StateRef{slots_[i].name + ".momentum_buffer", &buf_[i]});
  }

 private:
  std::vector<ParamSlot> slots_;
  SgdConfig cfg_;
  std::vector<std::vector<float>> buf_;
  std::int64_t steps_ = 0;
};

class Adam {
 public:
  Adam() = default;
  Adam(std::vector<ParamSlot> slots, AdamConfig cfg) : slots_(std::move(slots)), cfg_(cfg) {
    for (const auto& s : slots_) {
      m_.emplace_back(s.size, 0.0f);
      v_.emplace_back(s.size, 0.0f);
    }
  }
  const AdamConfig& config() const { return cfg_; }
  std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t s) { steps_ = s; }

  // t ← t + 1; g (+ wd·p) or p ← p·(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;
  // p ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + eps).
  Status step(double lr) {
    ++steps_;
    const double t = double(steps_);
    const double bc1 = 1.0 - std::pow(cfg_.beta1, t), bc2_sqrt = std::sqrt(1.0 - std::pow(cfg_.beta2, t));
    const float step_size = float(lr / bc1), fbc2 = float(bc2_sqrt), eps = float(cfg_.eps);
    const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), a1 = float(1.0 - cfg_.beta1),
                a2 = float(1.0 - cfg_.beta2);
    const float wd = float(cfg_.weight_decay), shrink = float(1.0 - lr * cfg_.weight_decay);
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const ParamSlot& s = slots_[i];
      float* p = s.value;
      const float* g = s.grad;
      float* m = m_[i].data();
      float* v = v_[i].data();
      const bool coupled = s.decay && wd != 0.0f && cfg_.decay_mode == WeightDecay::coupled;
      const bool decoupled = s.decay && wd != 0.0f && cfg_.decay_mode == WeightDecay::decoupled;
      for (std::size_t j = 0; j < s.size; ++j) {
        if (decoupled) p[j] = p[j] * shrink;
        const float d = coupled ? std::fma(p[j], wd, g[j]) : g[j];
        m[j] = std::fma(d, a1, m[j] * b1);
        v[j] = std::fma(d * d, a2, v[j] * b2);
        const float denom = std::sqrt(v[j]) / fbc2 + eps;
        p[j] = std::fma(m[j] / denom, -step_size, p[j]);
      }
    }
    return Status::ok();
  }

  template <class F>
  void visit_state(F&& f) {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      f(StateRef{slots_[i].name + ".exp_avg", &m_[i]});
      f(StateRef{slots_[i].name + ".exp_avg_sq", &v_[i]});
    }
  }

 private:
  std::vector<ParamSlot> slots_;
  AdamConfig cfg_;
  std::vector<std::vector<float>> m_, v_;
  std::int64_t steps_ = 0;
};

}  // namespace edgenn::train
