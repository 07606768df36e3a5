// Network: a chain of blocks (ConvBN, BasicBlock, InvertedResidual) mapping one NHWC
// tensor to another, with a ping-pong activation plan in the caller's workspace.
//
// workspace_bytes(input shape) runs the same code as forward() on a measuring workspace,
// so the number a device owner plans with is the number forward() uses.
#pragma once

#include <variant>
#include <vector>

#include "edgenn/nn/blocks.hpp"

namespace edgenn::nn {

template <class Arch = simd::default_arch>
using Block = std::variant<ConvBN<Arch>, BasicBlock<Arch>, InvertedResidual<Arch>>;

template <class Arch = simd::default_arch>
struct Network {
  std::vector<Block<Arch>> blocks;

  template <class B>
  void add(B block) {
    blocks.emplace_back(std::move(block));
  }

  // Visit every ConvBN layer, in order.
  template <class F>
  void visit_layers(F&& f) {
    for (auto& b : blocks)
      std::visit(
          [&](auto& blk) {
            using T = std::decay_t<decltype(blk)>;
            if constexpr (std::is_same_v<T, ConvBN<Arch>>) {
              f(blk);
            } else {
              blk.visit_layers(f);
            }
          },
          b);
  }

  Shape output_shape(Shape in) const {
    for (const auto& b : blocks) in = std::visit([&](const auto& blk) { return blk.output_shape(in); }, b);
    return in;
  }
  std::int64_t macs(Shape in) const {
    std::int64_t total = 0;
    for (const auto& b : blocks) {
      total += std::visit([&](const auto& blk) { return blk.macs(in); }, b);
      in = std::visit([&](const auto& blk) { return blk.output_shape(in); }, b);
    }
    return total;
  }

  Status prepare() {
    Status st;
    visit_layers([&](ConvBN<Arch>& c) {
      if (st.is_ok()) st = c.prepare();
    });
    return st;
  }

  // out must have output_shape(in.shape); it may be a strided view (e.g. a channel slice).
  Status forward(ConstTensor in, Tensor out, Workspace& ws) const {
    EDGENN_CHECK(!blocks.empty(), Error::invalid_argument, "Network: no blocks");
    EDGENN_CHECK(out.shape == output_shape(in.shape), Error::shape_mismatch,
                 "Network: output view does not match the network's output shape");
    WorkspaceScope scope(ws);
    // Two buffers, each as large as the largest intermediate activation.
    std::size_t largest = 0;
    Shape s = in.shape;
    for (std::size_t i = 0; i + 1 < blocks.size(); ++i) {
      s = std::visit([&](const auto& blk) { return blk.output_shape(s); }, blocks[i]);
      largest = std::max(largest, std::size_t(s.size()));
    }
    float* buf[2] = {nullptr, nullptr};
    if (blocks.size() > 1) {
      buf[0] = ws.take<float>(largest);
      buf[1] = blocks.size() > 2 ? ws.take<float>(largest) : nullptr;
      EDGENN_TRY(ws.status());
    }
    ConstTensor x = in;
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const Shape os = std::visit([&](const auto& blk) { return blk.output_shape(x.shape); }, blocks[i]);
      const Tensor y = i + 1 == blocks.size() ? out : Tensor::dense(buf[i % 2], os);
      EDGENN_TRY(std::visit([&](const auto& blk) { return blk.forward(x, y, ws); }, blocks[i]));
      x = y;
    }
    return ws.status();
  }

  std::size_t workspace_bytes(Shape in) const {
    Workspace m = Workspace::measure();
    (void)forward(ConstTensor(nullptr, in, 0, 0, 0), Tensor(nullptr, output_shape(in), 0, 0, 0), m);
    return m.peak();
  }
};

}  // namespace edgenn::nn
