// The layer shapes every library is measured on, shared by our runner and the peers.
//
// Shapes come from the networks we ship or compare against: ResNet-20/32 (CIFAR style) at
// 28x28 (Fashion-MNIST, 1-channel stem) and 32x32 (3-channel stem), our 28x28 MobileNetV2
// x0.5 (tools/train_reference.py preset "mbv2"), and the ImageNet MobileNetV2 and ResNet-18.
// ResNet-20 and ResNet-32 differ only in depth, so they share one set of shapes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgenn_bench {

enum class Family { conv3x3, conv1x1, depthwise, fc, gap, maxpool, add, softmax };

inline const char* family_name(Family f) {
  switch (f) {
    case Family::conv3x3: return "conv3x3";
    case Family::conv1x1: return "conv1x1";
    case Family::depthwise: return "depthwise";
    case Family::fc: return "fc";
    case Family::gap: return "gap";
    case Family::maxpool: return "maxpool";
    case Family::add: return "add";
    case Family::softmax: return "softmax";
  }
  return "?";
}

// One layer at batch 1; `batch` is applied by the runner. Field use per family:
//   conv3x3/conv1x1/depthwise/maxpool: h x w x cin input, k x k window, stride, pad, cout
//   fc: cin -> cout features; gap/add: h x w x cin; softmax: cin classes per row.
struct Layer {
  Family family;
  std::string model;  // e.g. "rn20@28" (ResNet-20/32 at 28x28)
  int h = 1, w = 1, cin = 1, cout = 1;
  int k = 1, stride = 1, pad = 0;

  bool is_conv() const { return family == Family::conv3x3 || family == Family::conv1x1 || family == Family::depthwise; }
  int out_h() const { return (h + 2 * pad - k) / stride + 1; }
  int out_w() const { return (w + 2 * pad - k) / stride + 1; }
  int groups() const { return family == Family::depthwise ? cin : 1; }

  // Short shape tag used in benchmark names, e.g. "28x28x16-32s2".
  std::string shape() const {
    const std::string hwc = std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(cin);
    switch (family) {
      case Family::conv3x3:
      case Family::conv1x1: return hwc + "-" + std::to_string(cout) + "s" + std::to_string(stride);
      case Family::depthwise: return hwc + "s" + std::to_string(stride);
      case Family::maxpool: return hwc + "k" + std::to_string(k) + "s" + std::to_string(stride) + "p" + std::to_string(pad);
      case Family::fc: return std::to_string(cin) + "-" + std::to_string(cout);
      case Family::gap:
      case Family::add: return hwc;
      case Family::softmax: return std::to_string(cin);
    }
    return hwc;
  }

  // Floating-point operations of one batch item. Convolutions and fully connected:
  // 2 * multiply-accumulates. Other ops (no MACs): one per input element and window tap
  // (gap, add, maxpool), 4 per element for softmax (max, exp, sum, scale).
  double flops() const {
    const double oh = out_h(), ow = out_w();
    switch (family) {
      case Family::conv3x3:
      case Family::conv1x1: return 2.0 * oh * ow * cout * cin * k * k;
      case Family::depthwise: return 2.0 * oh * ow * cin * k * k;
      case Family::fc: return 2.0 * cin * cout;
      case Family::gap: return double(h) * w * cin;
      case Family::maxpool: return oh * ow * cin * k * k;
      case Family::add: return double(h) * w * cin;
      case Family::softmax: return 4.0 * cin;
    }
    return 0.0;
  }
};

inline Layer conv(const char* model, int hw, int cin, int cout, int k, int stride) {
  Layer l;
  l.family = k == 1 ? Family::conv1x1 : Family::conv3x3;
  l.model = model;
  l.h = l.w = hw;
  l.cin = cin;
  l.cout = cout;
  l.k = k;
  l.stride = stride;
  l.pad = k / 2;
  return l;
}
inline Layer dw(const char* model, int hw, int c, int stride) {
  Layer l = conv(model, hw, c, c, 3, stride);
  l.family = Family::depthwise;
  return l;
}
inline Layer simple(Family f, const char* model, int h, int w, int c, int cout = 1, int k = 1, int s = 1, int p = 0) {
  Layer l;
  l.family = f;
  l.model = model;
  l.h = h;
  l.w = w;
  l.cin = c;
  l.cout = cout;
  l.k = k;
  l.stride = s;
  l.pad = p;
  return l;
}

// ResNet-20/32 (CIFAR style, widths 16/32/64) at a 28x28 or 32x32 input.
inline void add_resnet_cifar(std::vector<Layer>& v, const char* model, int hw, int in_ch) {
  const int h1 = hw, h2 = hw / 2, h3 = (hw + 3) / 4;  // 28/14/7, 32/16/8
  v.push_back(conv(model, h1, in_ch, 16, 3, 1));    // stem
  v.push_back(conv(model, h1, 16, 16, 3, 1));
  v.push_back(conv(model, h2, 32, 32, 3, 1));
  v.push_back(conv(model, h3, 64, 64, 3, 1));
  v.push_back(conv(model, h1, 16, 32, 3, 2));       // stage transitions
  v.push_back(conv(model, h2, 32, 64, 3, 2));
  v.push_back(conv(model, h1, 16, 32, 1, 2));       // 1x1 stride-2 projection shortcuts
  v.push_back(conv(model, h2, 32, 64, 1, 2));
}

inline std::vector<Layer> all_layers() {
  std::vector<Layer> v;
  add_resnet_cifar(v, "rn20@28", 28, 1);
  add_resnet_cifar(v, "rn20@32", 32, 3);

  // Our MobileNetV2 x0.5 at 28x28 (stem 16, blocks 8/16/16/32/48/80/160, last 640).
  const char* mb = "mbv2x0.5@28";
  v.push_back(conv(mb, 28, 1, 16, 3, 1));
  v.push_back(dw(mb, 28, 16, 1));
  v.push_back(dw(mb, 28, 48, 2));
  v.push_back(dw(mb, 14, 96, 1));
  v.push_back(dw(mb, 14, 96, 2));
  v.push_back(dw(mb, 7, 192, 1));
  v.push_back(dw(mb, 7, 288, 1));
  v.push_back(dw(mb, 7, 480, 1));
  v.push_back(conv(mb, 28, 16, 8, 1, 1));
  v.push_back(conv(mb, 28, 8, 48, 1, 1));
  v.push_back(conv(mb, 14, 48, 16, 1, 1));
  v.push_back(conv(mb, 14, 16, 96, 1, 1));
  v.push_back(conv(mb, 14, 96, 16, 1, 1));
  v.push_back(conv(mb, 7, 96, 32, 1, 1));
  v.push_back(conv(mb, 7, 32, 192, 1, 1));
  v.push_back(conv(mb, 7, 192, 32, 1, 1));
  v.push_back(conv(mb, 7, 288, 48, 1, 1));
  v.push_back(conv(mb, 7, 80, 480, 1, 1));
  v.push_back(conv(mb, 7, 480, 80, 1, 1));
  v.push_back(conv(mb, 7, 160, 640, 1, 1));

  // ImageNet MobileNetV2 (224x224).
  const char* m2 = "mbv2@224";
  v.push_back(conv(m2, 224, 3, 32, 3, 2));
  v.push_back(dw(m2, 112, 32, 1));
  v.push_back(dw(m2, 112, 96, 2));
  v.push_back(dw(m2, 56, 144, 1));
  v.push_back(dw(m2, 56, 144, 2));
  v.push_back(dw(m2, 28, 192, 1));
  v.push_back(dw(m2, 14, 384, 1));
  v.push_back(dw(m2, 14, 576, 2));
  v.push_back(dw(m2, 7, 960, 1));
  v.push_back(conv(m2, 112, 32, 16, 1, 1));
  v.push_back(conv(m2, 56, 24, 144, 1, 1));
  v.push_back(conv(m2, 56, 144, 24, 1, 1));
  v.push_back(conv(m2, 28, 32, 192, 1, 1));
  v.push_back(conv(m2, 28, 192, 32, 1, 1));
  v.push_back(conv(m2, 14, 64, 384, 1, 1));
  v.push_back(conv(m2, 14, 384, 64, 1, 1));
  v.push_back(conv(m2, 7, 160, 960, 1, 1));
  v.push_back(conv(m2, 7, 960, 160, 1, 1));
  v.push_back(conv(m2, 7, 320, 1280, 1, 1));

  // ResNet-18 (224x224 input; layers 1-4 at 56/28/14/7).
  const char* r18 = "rn18@224";
  v.push_back(conv(r18, 56, 64, 64, 3, 1));
  v.push_back(conv(r18, 28, 128, 128, 3, 1));
  v.push_back(conv(r18, 14, 256, 256, 3, 1));
  v.push_back(conv(r18, 7, 512, 512, 3, 1));
  v.push_back(conv(r18, 56, 64, 128, 3, 2));
  v.push_back(conv(r18, 28, 128, 256, 3, 2));
  v.push_back(conv(r18, 14, 256, 512, 3, 2));
  v.push_back(conv(r18, 56, 64, 128, 1, 2));
  v.push_back(conv(r18, 28, 128, 256, 1, 2));
  v.push_back(conv(r18, 14, 256, 512, 1, 2));

  // Heads and glue: classifier, global average pool, max pool, residual add, softmax.
  v.push_back(simple(Family::fc, "rn20@28", 1, 1, 64, 10));
  v.push_back(simple(Family::fc, "mbv2x0.5@28", 1, 1, 640, 10));
  v.push_back(simple(Family::fc, "rn18@224", 1, 1, 512, 1000));
  v.push_back(simple(Family::fc, "mbv2@224", 1, 1, 1280, 1000));
  v.push_back(simple(Family::gap, "rn20@28", 7, 7, 64));
  v.push_back(simple(Family::gap, "mbv2x0.5@28", 7, 7, 640));
  v.push_back(simple(Family::gap, "mbv2@224", 7, 7, 1280));
  v.push_back(simple(Family::maxpool, "rn18@224", 112, 112, 64, 64, 3, 2, 1));
  v.push_back(simple(Family::maxpool, "cnn@28", 28, 28, 32, 32, 2, 2, 0));
  v.push_back(simple(Family::maxpool, "cnn@28", 14, 14, 64, 64, 2, 2, 0));
  v.push_back(simple(Family::add, "rn20@28", 28, 28, 16));
  v.push_back(simple(Family::add, "rn20@28", 7, 7, 64));
  v.push_back(simple(Family::add, "mbv2@224", 56, 56, 24));
  v.push_back(simple(Family::add, "rn18@224", 56, 56, 64));
  v.push_back(simple(Family::softmax, "rn20@28", 1, 1, 10));
  v.push_back(simple(Family::softmax, "imagenet", 1, 1, 1000));
  return v;
}

// Batch 64 only for layers of at most 32x32 input (the ImageNet-size front layers at batch
// 64 take seconds per iteration on this class of machine), unless asked for all.
inline bool run_at_batch64(const Layer& l, bool all) { return all || (l.h <= 32 && l.w <= 32); }

// Deterministic pseudo-random data in [-1, 1) (same inputs and weights for every library).
inline void fill_random(float* p, std::size_t n, std::uint32_t seed) {
  std::uint32_t s = seed * 2654435761u + 12345u;
  for (std::size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    p[i] = float(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
}

}  // namespace edgenn_bench
