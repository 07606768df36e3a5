// Estimated edge energy per input (spec: shared/specs/meanet.md §5.3). ESTIMATES from a
// documented model, not measurements:
//
//   E_edge = E(main) + [hard] (E(adaptive) + E(extension)) + [cloud] E_tx(bytes)
//   E(block) = MACs * e_mac + weight words * e_weight + activation words * e_act
//   E_tx(S bits) = (alpha_up * R + beta) * S / R   (+ RRC promotion and tail, if enabled)
//
// with Horowitz (ISSCC 2014, 45 nm) energies per operation and the LTE uplink power model of
// Huang et al. (MobiSys 2012). Every constant lives in one config file
// (tools/energy_model.json) and is documented in docs/energy_model.md.
#pragma once

#include <cstdint>

#include "edgenn/nn/meanet.hpp"

namespace edgenn::meanet {

struct EnergyModel {
  double mac_pj = 4.6;             // fp32 multiply-accumulate
  double weight_word_pj = 640.0;   // one 32-bit weight word read (weights stream from DRAM / flash)
  double act_word_pj = 5.0;        // one 32-bit activation word read or written (on-chip SRAM)
  double uplink_mbps = 6.0;        // LTE median uplink throughput
  double alpha_up_mw_per_mbps = 438.39;
  double beta_mw = 1288.04;
  bool include_promotion_and_tail = false;
  double promotion_ms = 260.0, promotion_mw = 1200.0;
  double tail_ms = 11600.0, tail_mw = 1060.0;

  double compute_joules(std::int64_t macs, std::int64_t weight_words, std::int64_t act_words) const {
    return (double(macs) * mac_pj + double(weight_words) * weight_word_pj + double(act_words) * act_word_pj) * 1e-12;
  }
  // Uplink transfer of `bytes`; the downlink reply (a few logits) is neglected.
  double transmit_joules(std::int64_t bytes) const {
    const double bits = double(bytes) * 8.0;
    const double seconds = bits / (uplink_mbps * 1e6);
    double j = (alpha_up_mw_per_mbps * uplink_mbps + beta_mw) * 1e-3 * seconds;
    if (include_promotion_and_tail) j += (promotion_ms * promotion_mw + tail_ms * tail_mw) * 1e-6;
    return j;
  }
};

// Memory traffic of a network on one input: every layer reads its weights once and its
// input activations once and writes its output once (an idealised, fusion-free schedule).
struct Traffic {
  std::int64_t weight_words = 0;
  std::int64_t act_words = 0;
  Traffic& operator+=(const Traffic& o) {
    weight_words += o.weight_words;
    act_words += o.act_words;
    return *this;
  }
};

template <class Arch>
Traffic network_traffic(nn::Network<Arch>& net, Shape in) {
  Traffic t;
  // visit_layers walks layers in execution order but blocks branch (shortcuts), so shapes
  // are recomputed per block instead.
  for (auto& b : net.blocks) {
    std::visit(
        [&](auto& blk) {
          Shape x = in;
          auto add_conv = [&](const auto& c, Shape s) {
            const Shape o = c.output_shape(s);
            t.weight_words += std::int64_t(c.weight.size()) + c.cout;
            t.act_words += s.size() + o.size();
          };
          using T = std::decay_t<decltype(blk)>;
          if constexpr (std::is_same_v<T, nn::ConvBN<Arch>>) {
            add_conv(blk, x);
          } else if constexpr (std::is_same_v<T, nn::BasicBlock<Arch>>) {
            add_conv(blk.conv1, x);
            add_conv(blk.conv2, blk.conv1.output_shape(x));
            if (blk.downsample) add_conv(*blk.downsample, x);
            t.act_words += blk.output_shape(x).size();  // residual read
          } else {
            Shape e = x;
            if (blk.expand) {
              add_conv(*blk.expand, x);
              e = blk.expand->output_shape(x);
            }
            add_conv(blk.depthwise, e);
            add_conv(blk.project, blk.depthwise.output_shape(e));
            if (blk.residual) t.act_words += x.size();
          }
          in = blk.output_shape(x);
        },
        b);
  }
  return t;
}

template <class Arch>
Traffic head_traffic(const nn::PoolLinear<Arch>& head, Shape in) {
  return Traffic{std::int64_t(head.weight.size() + head.bias.size()), in.size() + head.out_features};
}

// Per-input cost of each MEANet path (batch 1).
struct PathCosts {
  std::int64_t main_macs = 0, extension_macs = 0;
  Traffic main_traffic, extension_traffic;
};

template <class Arch>
PathCosts path_costs(nn::MEANet<Arch>& m, Shape input) {
  PathCosts c;
  c.main_macs = m.main_macs(input);
  c.extension_macs = m.extension_macs(input);
  c.main_traffic = network_traffic(m.main.features, input);
  c.main_traffic += head_traffic(m.main.head, m.main.feature_shape(input));
  c.extension_traffic = network_traffic(m.adaptive, input);
  c.extension_traffic += network_traffic(m.extension, m.concat_shape(input));
  c.extension_traffic += head_traffic(m.extension_head, m.extension.output_shape(m.concat_shape(input)));
  return c;
}

template <class Arch>
Traffic classifier_traffic(nn::Classifier<Arch>& m, Shape input) {
  Traffic t = network_traffic(m.features, input);
  t += head_traffic(m.head, m.feature_shape(input));
  return t;
}

}  // namespace edgenn::meanet
