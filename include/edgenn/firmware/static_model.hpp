// Compile-time models for firmware: every shape, every buffer size and the whole arena are
// constants of the model's type, and the weights are used in place from flash.
//
// A model is a composition of templates over *layer descriptions* — structs with the layer's
// hyperparameters and its pre-packed weights, written by tools/emit_header.py:
//
//   struct main_conv1 {
//     static constexpr int cin = 1, cout = 16, kernel = 3, stride = 1;
//     static constexpr edgenn::Activation activation = edgenn::Activation::relu;
//     alignas(16) static constexpr float packed[] = {...};  // pack_conv_weights<scalar> layout
//   };
//   using Main = Chain<Arch, Conv<Arch, 28, 28, main_conv1>, BasicBlock<Arch, 28, 28, ...>, ...>;
//
// Each layer checks at compile time that its input matches the previous layer's output and
// that the emitted weight array has exactly the size the kernel's packed layout needs.
// `arena_bytes` is the exact workspace the run takes (same slices, same order as the
// runtime nn:: classes, which plan the same memory with a measuring Workspace); firmware
// static_asserts it against the board's SRAM budget.
//
// The kernels are the engine's own (kernels::conv2d, global_avg_pool, fully_connected) on the
// backend `Arch` (simd::scalar on Cortex-M). No heap, no exceptions, no RTTI, no statics with
// constructors: everything here is constexpr data plus functions over caller memory.
#pragma once

#include <tuple>
#include <type_traits>

#include "edgenn/core/status.hpp"
#include "edgenn/core/tensor.hpp"
#include "edgenn/core/workspace.hpp"
#include "edgenn/kernels/conv2d.hpp"
#include "edgenn/kernels/fully_connected.hpp"
#include "edgenn/kernels/pooling.hpp"
#include "edgenn/meanet/router.hpp"

namespace edgenn::firmware {

constexpr std::size_t max_of(std::size_t a, std::size_t b) { return a > b ? a : b; }

// Bytes of `floats` activations as the Workspace hands them out (aligned slices).
constexpr std::size_t activation_bytes(index_t floats) { return aligned_bytes<float>(std::size_t(floats)); }

// A convolution (+ folded BN) + activation over an H x W input; L describes the layer.
template <class Arch, int H, int W, class L>
struct Conv {
  static constexpr int cin = L::cin, cout = L::cout;
  static constexpr kernels::Conv2dParams params =
      kernels::Conv2dParams::square(L::kernel, L::stride, L::kernel / 2, 1, L::activation);
  static constexpr Shape in_shape{1, H, W, L::cin};
  static constexpr Shape out_shape = params.output_shape(in_shape, L::cout);
  static constexpr kernels::PackedWeights layout = kernels::conv_packed_layout<Arch>(params, L::cin, L::cout);
  static constexpr std::size_t weight_floats = sizeof(L::packed) / sizeof(float);
  static_assert(params.validate(in_shape, L::cout).is_ok(), "firmware::Conv: invalid convolution for this input");
  static_assert(weight_floats == std::size_t(layout.total_floats()),
                "firmware::Conv: the emitted weights do not have the packed layout of this backend");
  static constexpr std::size_t workspace_bytes = kernels::conv2d_workspace_bytes(params, in_shape);
  static constexpr std::int64_t macs = std::int64_t(out_shape.pixels()) * L::cout * L::kernel * L::kernel * L::cin;
  static constexpr std::size_t flash_bytes = sizeof(L::packed);

  static Status forward(ConstTensor in, Tensor out, Workspace& ws, const ConstTensor* residual = nullptr) {
    kernels::PackedWeights pw = layout;
    pw.data = L::packed;
    return kernels::conv2d<Arch>(params, in, pw, out, ws, residual);
  }
};

// No layer (a BasicBlock without projection shortcut).
struct None {};

// ResNet BasicBlock: conv3x3-BN-ReLU, conv3x3-BN, + shortcut (identity or 1x1 conv-BN), ReLU.
// Same slices and order as nn::BasicBlock::forward.
template <class Arch, int H, int W, class L1, class L2, class LDown = None>
struct BasicBlock {
  using C1 = Conv<Arch, H, W, L1>;
  using C2 = Conv<Arch, C1::out_shape.h, C1::out_shape.w, L2>;
  static constexpr bool has_down = !std::is_same_v<LDown, None>;
  using DownLayer = LDown;
  static constexpr Shape in_shape = C1::in_shape;
  static constexpr Shape out_shape = C2::out_shape;
  static_assert(L2::activation == Activation::relu, "firmware::BasicBlock: the second conv carries the post-add ReLU");
  static_assert(has_down || (L1::stride == 1 && L1::cin == L2::cout),
                "firmware::BasicBlock: a block that changes shape needs a projection shortcut");

  template <class D, bool = has_down>
  struct Down {
    using type = Conv<Arch, H, W, D>;
    static constexpr std::size_t ws = type::workspace_bytes;
    static constexpr std::int64_t macs = type::macs;
    static constexpr std::size_t flash = type::flash_bytes;
  };
  template <class D>
  struct Down<D, false> {
    static constexpr std::size_t ws = 0;
    static constexpr std::int64_t macs = 0;
    static constexpr std::size_t flash = 0;
  };

  static constexpr std::size_t workspace_bytes =
      activation_bytes(C1::out_shape.size()) +
      max_of(max_of(C1::workspace_bytes, C2::workspace_bytes), Down<LDown>::ws);
  static constexpr std::int64_t macs = C1::macs + C2::macs + Down<LDown>::macs;
  static constexpr std::size_t flash_bytes = C1::flash_bytes + C2::flash_bytes + Down<LDown>::flash;

  static Status forward(ConstTensor in, Tensor out, Workspace& ws) {
    WorkspaceScope scope(ws);
    float* mid = ws.take<float>(std::size_t(C1::out_shape.size()));
    EDGENN_TRY(ws.status());
    const Tensor m = Tensor::dense(mid, C1::out_shape);
    EDGENN_TRY(C1::forward(in, m, ws));
    if constexpr (has_down) {
      // out = shortcut(in), then out = relu(conv2(mid) + out) in place.
      EDGENN_TRY(Down<LDown>::type::forward(in, out, ws));
      const ConstTensor acc = out;
      EDGENN_TRY(C2::forward(m, out, ws, &acc));
    } else {
      EDGENN_TRY(C2::forward(m, out, ws, &in));
    }
    return ws.status();
  }
};

namespace detail {
template <class... B>
struct ChainInfo;
template <class B>
struct ChainInfo<B> {
  static constexpr Shape out_shape = B::out_shape;
  static constexpr index_t largest_inner = 0;  // the last block writes to the caller's output
  static constexpr std::size_t block_ws = B::workspace_bytes;
  static constexpr std::int64_t macs = B::macs;
  static constexpr std::size_t flash = B::flash_bytes;
};
template <class B, class Next, class... Rest>
struct ChainInfo<B, Next, Rest...> {
  static_assert(B::out_shape == Next::in_shape, "firmware::Chain: a block's output does not match the next input");
  using Tail = ChainInfo<Next, Rest...>;
  static constexpr Shape out_shape = Tail::out_shape;
  static constexpr index_t largest_inner = B::out_shape.size() > Tail::largest_inner ? B::out_shape.size()
                                                                                     : Tail::largest_inner;
  static constexpr std::size_t block_ws = max_of(B::workspace_bytes, Tail::block_ws);
  static constexpr std::int64_t macs = B::macs + Tail::macs;
  static constexpr std::size_t flash = B::flash_bytes + Tail::flash;
};

template <int C>
struct HardTable {
  int v[C];
};
template <class Meta, int C, int H>
constexpr HardTable<C> hard_table() {
  HardTable<C> t{};
  for (int c = 0; c < C; ++c) {
    t.v[c] = -1;
    for (int h = 0; h < H; ++h)
      if (Meta::hard_classes[h] == c) t.v[c] = h;
  }
  return t;
}
}  // namespace detail

// Blocks run one after the other through two ping-pong buffers, each as large as the largest
// intermediate activation (the plan of nn::Network).
template <class Arch, class... Blocks>
struct Chain {
  static_assert(sizeof...(Blocks) > 0, "firmware::Chain: no blocks");
  using Info = detail::ChainInfo<Blocks...>;
  static constexpr std::size_t count = sizeof...(Blocks);
  template <std::size_t I>
  using block = std::tuple_element_t<I, std::tuple<Blocks...>>;
  static constexpr Shape in_shape = std::tuple_element_t<0, std::tuple<Blocks...>>::in_shape;
  static constexpr Shape out_shape = Info::out_shape;
  static constexpr std::size_t buffers = count > 2 ? 2 : count - 1;
  static constexpr std::size_t workspace_bytes = buffers * activation_bytes(Info::largest_inner) + Info::block_ws;
  static constexpr std::int64_t macs = Info::macs;
  static constexpr std::size_t flash_bytes = Info::flash;

  static Status forward(ConstTensor in, Tensor out, Workspace& ws) {
    EDGENN_CHECK(in.shape == in_shape && out.shape == out_shape, Error::shape_mismatch,
                 "firmware::Chain: input or output view has the wrong shape");
    WorkspaceScope scope(ws);
    float* buf[2] = {nullptr, nullptr};
    if (buffers > 0) buf[0] = ws.take<float>(std::size_t(Info::largest_inner));
    if (buffers > 1) buf[1] = ws.take<float>(std::size_t(Info::largest_inner));
    EDGENN_TRY(ws.status());
    ConstTensor x = in;
    std::size_t i = 0;
    Status st;
    // Fold over the blocks in order; stop at the first error.
    (void)((st = step<Blocks>(x, out, buf, i++, ws), st.is_ok()) && ...);
    EDGENN_TRY(st);
    return ws.status();
  }

 private:
  template <class B>
  static Status step(ConstTensor& x, Tensor out, float* const (&buf)[2], std::size_t i, Workspace& ws) {
    const Tensor y = i + 1 == count ? out : Tensor::dense(buf[i % 2], B::out_shape);
    EDGENN_TRY(B::forward(x, y, ws));
    x = y;
    return Status::ok();
  }
};

// Global average pooling + fully connected layer (PyTorch [out][in] weights, pre-packed).
template <class Arch, class Features, class L>
struct PoolLinear {
  static constexpr Shape in_shape = Features::out_shape;
  static constexpr int in_features = L::in_features, out_features = L::out_features;
  static_assert(in_shape.c == L::in_features, "firmware::PoolLinear: feature channels differ from the layer");
  static constexpr kernels::PackedWeights layout = kernels::packed_layout<Arch>(L::in_features, L::out_features, 1);
  static_assert(sizeof(L::packed) / sizeof(float) == std::size_t(layout.total_floats()),
                "firmware::PoolLinear: the emitted weights do not have the packed layout of this backend");
  static constexpr std::size_t workspace_bytes = activation_bytes(L::in_features);
  static constexpr std::int64_t macs = std::int64_t(L::in_features) * L::out_features;
  static constexpr std::size_t flash_bytes = sizeof(L::packed);

  static Status forward(ConstTensor in, float* logits, Workspace& ws) {
    WorkspaceScope scope(ws);
    float* pooled = ws.take<float>(std::size_t(L::in_features));
    EDGENN_TRY(ws.status());
    EDGENN_TRY(kernels::global_avg_pool<Arch>(in, pooled, L::in_features));
    kernels::PackedWeights pw = layout;
    pw.data = L::packed;
    return kernels::fully_connected<Arch>(1, pooled, L::in_features, pw, logits, L::out_features);
  }
};

// MEANet's edge network with its router, for one image at a time.
//   Meta: input (height, width, channels, mean[], stdv[]), num_classes, hard_classes[],
//         router (meanet::RouterConfig).
// Arena layout: [input x][concat = main features | adaptive features][run workspace].
template <class Arch, class Meta, class Main, class MainHead, class Adaptive, class Extension, class ExtHead>
struct StaticMEANet {
  static constexpr int num_classes = MainHead::out_features;
  static constexpr int num_hard = ExtHead::out_features;
  static constexpr Shape in_shape = Main::in_shape;
  static constexpr Shape concat_shape{1, Main::out_shape.h, Main::out_shape.w,
                                      Main::out_shape.c + Adaptive::out_shape.c};
  static_assert(Meta::num_classes == num_classes && int(sizeof(Meta::hard_classes) / sizeof(int)) == num_hard,
                "firmware::StaticMEANet: class tables differ from the heads");
  static_assert(Adaptive::in_shape == in_shape,
                "firmware::StaticMEANet: adaptive block input differs from the main block's");
  static_assert(Adaptive::out_shape.h == Main::out_shape.h && Adaptive::out_shape.w == Main::out_shape.w,
                "firmware::StaticMEANet: main and adaptive features differ in spatial size");
  static_assert(Extension::in_shape == concat_shape, "firmware::StaticMEANet: extension input is not the concat");
  static_assert(Meta::in_height == in_shape.h && Meta::in_width == in_shape.w && Meta::in_channels == in_shape.c,
                "firmware::StaticMEANet: input metadata differs from the first layer");

  static constexpr std::size_t main_workspace_bytes = max_of(Main::workspace_bytes, MainHead::workspace_bytes);
  static constexpr std::size_t extension_workspace_bytes =
      max_of(Adaptive::workspace_bytes, activation_bytes(Extension::out_shape.size()) +
                                            max_of(Extension::workspace_bytes, ExtHead::workspace_bytes));
  static constexpr std::size_t input_bytes = activation_bytes(in_shape.size());
  static constexpr std::size_t concat_bytes = activation_bytes(concat_shape.size());
  // Everything one classification needs besides a few scalars on the stack.
  static constexpr std::size_t arena_bytes =
      input_bytes + concat_bytes + max_of(main_workspace_bytes, extension_workspace_bytes);
  static constexpr std::size_t flash_bytes =
      Main::flash_bytes + MainHead::flash_bytes + Adaptive::flash_bytes + Extension::flash_bytes + ExtHead::flash_bytes;
  static constexpr std::int64_t main_macs = Main::macs + MainHead::macs;
  static constexpr std::int64_t extension_macs = Adaptive::macs + Extension::macs + ExtHead::macs;

  struct Decision {
    meanet::Exit exit = meanet::Exit::main;
    int cls = -1;  // the edge's answer (for a cloud exit: what it would fall back to)
    bool extension_ran = false;
    meanet::Signals main, ext;
    float logits[num_classes];   // main block
    float ext_logits[num_hard];  // extension (valid when extension_ran)
  };

  // Class -> index into the hard-class table, or -1 (what the router reads).
  static constexpr detail::HardTable<num_classes> hard_table = detail::hard_table<Meta, num_classes, num_hard>();

  // Stages of the run (the router can stop after run_main).
  static Status run_main(ConstTensor x, Tensor concat, float* logits, Workspace& ws) {
    WorkspaceScope scope(ws);
    const Tensor feat = concat.channels(0, Main::out_shape.c);
    EDGENN_TRY(Main::forward(x, feat, ws));
    return MainHead::forward(feat, logits, ws);
  }
  static Status run_extension(ConstTensor x, Tensor concat, float* ext_logits, Workspace& ws) {
    WorkspaceScope scope(ws);
    EDGENN_TRY(Adaptive::forward(x, concat.channels(Main::out_shape.c, Adaptive::out_shape.c), ws));
    float* e = ws.take<float>(std::size_t(Extension::out_shape.size()));
    EDGENN_TRY(ws.status());
    const Tensor ef = Tensor::dense(e, Extension::out_shape);
    EDGENN_TRY(Extension::forward(concat, ef, ws));
    return ExtHead::forward(ef, ext_logits, ws);
  }

  // Classify one image (HWC bytes) with the router, the way meanet::EdgeRuntime does when
  // no cloud is reachable: a complex input exits as `cloud` and carries the edge's own answer.
  // `arena` must hold arena_bytes (kAlignment-aligned); `peak` (optional) receives the bytes
  // of the arena the run used.
  static Status classify(const unsigned char* pixels, void* arena, std::size_t bytes, Decision& d,
                         std::size_t* peak = nullptr) {
    EDGENN_CHECK(bytes >= arena_bytes && reinterpret_cast<std::uintptr_t>(arena) % kAlignment == 0,
                 Error::workspace_too_small, "firmware::StaticMEANet: arena smaller than arena_bytes or misaligned");
    Workspace ws(arena, bytes);
    float* xp = ws.take<float>(std::size_t(in_shape.size()));
    float* cp = ws.take<float>(std::size_t(concat_shape.size()));
    EDGENN_TRY(ws.status());
    const Tensor x = Tensor::dense(xp, in_shape);
    const Tensor cat = Tensor::dense(cp, concat_shape);
    for (index_t i = 0; i < in_shape.size(); ++i) {
      const int ch = int(i % in_shape.c);
      xp[i] = (float(pixels[i]) / 255.0f - Meta::mean[ch]) / Meta::stdv[ch];
    }
    float probs[num_classes > num_hard ? num_classes : num_hard];
    d = Decision{};
    EDGENN_TRY(run_main(x, cat, d.logits, ws));
    d.main = meanet::softmax_signals(d.logits, num_classes, probs, hard_table.v);
    const bool hard = meanet::is_hard(Meta::router, d.main, hard_table.v, num_hard, num_classes);
    meanet::Step step = meanet::route_after_main(Meta::router, d.main, hard_table.v, num_hard, num_classes);
    if (step == meanet::Step::run_extension || (step == meanet::Step::send_to_cloud && hard)) {
      EDGENN_TRY(run_extension(x, cat, d.ext_logits, ws));
      d.extension_ran = true;
      d.ext = meanet::softmax_signals(d.ext_logits, num_hard, probs);
      if (step == meanet::Step::run_extension) step = meanet::route_after_extension(Meta::router, d.ext);
    }
    d.exit = step == meanet::Step::send_to_cloud    ? meanet::Exit::cloud
             : step == meanet::Step::exit_extension ? meanet::Exit::extension
                                                    : meanet::Exit::main;
    d.cls = d.extension_ran ? Meta::hard_classes[d.ext.top] : d.main.top;
    if (peak) *peak = ws.peak();
    return ws.status();
  }
};

}  // namespace edgenn::firmware
