// What every library's runner gets (the same inputs and canonical weights) and provides
// (run() in the timed loop, the output for the cross-check). Setup happens in the
// runner's constructor, outside the timed loop, for every library alike.
#pragma once

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "layers.hpp"

namespace edgenn_bench {

// 64-byte aligned float buffer (what a real caller would hand every library).
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) : n_(n) {
    const std::size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    p_.reset(static_cast<float*>(std::aligned_alloc(64, bytes > 0 ? bytes : 64)));
    if (!p_) throw std::bad_alloc();
    std::memset(p_.get(), 0, bytes);
  }
  float* data() const { return p_.get(); }
  std::size_t size() const { return n_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> p_;
  std::size_t n_ = 0;
};

// Inputs of one layer at one batch size. Weights are in the canonical layouts:
// convolutions OHWI ([cout][kh][kw][cin / groups]), fully connected [out][in].
struct LayerData {
  Layer layer;
  int batch = 1;
  Buffer x, x2;  // x2: second operand of add
  Buffer w, b;

  LayerData(const Layer& l, int n) : layer(l), batch(n) {
    x = Buffer(input_size());
    fill_random(x.data(), x.size(), 1);
    if (l.family == Family::add) {
      x2 = Buffer(input_size());
      fill_random(x2.data(), x2.size(), 2);
    }
    if (l.is_conv() || l.family == Family::fc) {
      const std::size_t nw = std::size_t(l.cout) * l.k * l.k * (l.cin / l.groups());
      w = Buffer(nw);
      fill_random(w.data(), nw, 3);
      // Scale like He initialisation so outputs stay O(1) (keeps the cross-check meaningful).
      const float s = 1.0f / float(l.k * l.k * (l.cin / l.groups()));
      for (std::size_t i = 0; i < nw; ++i) w.data()[i] *= s;
      b = Buffer(std::size_t(l.cout));
      fill_random(b.data(), b.size(), 4);
    }
  }
  std::size_t input_size() const {
    const Layer& l = layer;
    if (l.family == Family::fc || l.family == Family::softmax) return std::size_t(batch) * l.cin;
    return std::size_t(batch) * l.h * l.w * l.cin;
  }
  std::size_t output_size() const {
    const Layer& l = layer;
    switch (l.family) {
      case Family::conv3x3:
      case Family::conv1x1:
      case Family::depthwise: return std::size_t(batch) * l.out_h() * l.out_w() * l.cout;
      case Family::maxpool: return std::size_t(batch) * l.out_h() * l.out_w() * l.cin;
      case Family::fc: return std::size_t(batch) * l.cout;
      case Family::gap: return std::size_t(batch) * l.cin;
      case Family::add: return input_size();
      case Family::softmax: return std::size_t(batch) * l.cin;
    }
    return 0;
  }
  double flops() const { return layer.flops() * batch; }
};

class Runner {
 public:
  virtual ~Runner() = default;
  virtual void run() = 0;
  virtual const float* output() const = 0;
  // Which implementation the library picked (for the report), if it says.
  virtual std::string info() const { return {}; }
};

// Layer families a library does not provide.
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace edgenn_bench
