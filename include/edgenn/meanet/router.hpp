// MEANet's router: after the main block, decide whether an input exits there (easy),
// goes on to the adaptive + extension blocks (hard), or is sent to the cloud (complex).
// Spec: shared/specs/meanet.md §4 and §8.
//
//   hard rule      argmax_in_hard: the main block's top class is a hard class (the spec's
//                  CIFAR rule), or hard_mass: the main block's probability mass on the hard
//                  classes is at least a threshold (default H/C; easy iff mass < threshold)
//   cloud rule     entropy > T (strict), in nats or normalised by log(#classes), checked
//                  before the extension (main block's entropy; a complex input skips the
//                  extension) or after it (entropy of the edge's own answer), or off
//
// Pure functions over logits: no allocation, usable on a microcontroller.
#pragma once

#include <cmath>
#include <limits>

#include "edgenn/kernels/softmax.hpp"

namespace edgenn::meanet {

enum class Exit : std::uint8_t { main = 0, extension = 1, cloud = 2 };
enum class HardRule : std::uint8_t { argmax_in_hard = 0, hard_mass = 1 };
enum class CloudCheck : std::uint8_t { off = 0, before_extension = 1, after_extension = 2 };
enum class EntropyUnit : std::uint8_t { nats = 0, normalized = 1 };

inline constexpr const char* exit_name(Exit e) {
  return e == Exit::main ? "main" : e == Exit::extension ? "extension" : "cloud";
}

struct RouterConfig {
  HardRule hard_rule = HardRule::argmax_in_hard;
  float hard_mass_threshold = -1.0f;  // < 0: H / C
  CloudCheck cloud = CloudCheck::before_extension;
  EntropyUnit unit = EntropyUnit::nats;
  float entropy_threshold = std::numeric_limits<float>::infinity();  // cloud iff entropy > threshold

  float mass_threshold(int num_hard, int num_classes) const {
    return hard_mass_threshold >= 0.0f ? hard_mass_threshold : float(num_hard) / float(num_classes);
  }
};

// What the router reads off a softmax: top class, its probability, entropy (both units).
struct Signals {
  int top = 0;             // arg max (for the extension: index into the hard-class table)
  float confidence = 0.0f; // probability of the top class
  float entropy = 0.0f;    // nats
  float entropy_normalized = 0.0f;
  float hard_mass = 0.0f;  // main block only: sum of the hard classes' probabilities

  float entropy_in(EntropyUnit u) const { return u == EntropyUnit::nats ? entropy : entropy_normalized; }
};

// Softmax of `n` logits into `probs` (n floats of scratch) and the signals derived from it.
// hard_index (main block only, may be null): class -> hard index or -1.
inline Signals softmax_signals(const float* logits, int n, float* probs, const int* hard_index = nullptr) {
  Signals s;
  (void)kernels::softmax(1, n, logits, n, probs, n);
  for (int i = 1; i < n; ++i)
    if (probs[i] > probs[s.top]) s.top = i;
  s.confidence = probs[s.top];
  s.entropy = kernels::entropy(probs, n);
  s.entropy_normalized = n > 1 ? s.entropy / std::log(float(n)) : 0.0f;
  if (hard_index)
    for (int i = 0; i < n; ++i)
      if (hard_index[i] >= 0) s.hard_mass += probs[i];
  return s;
}

enum class Step : std::uint8_t { exit_main, run_extension, send_to_cloud, exit_extension };

inline bool is_hard(const RouterConfig& cfg, const Signals& main, const int* hard_index, int num_hard, int num_classes) {
  if (cfg.hard_rule == HardRule::hard_mass) return main.hard_mass >= cfg.mass_threshold(num_hard, num_classes);
  return hard_index[main.top] >= 0;
}

inline bool too_uncertain(const RouterConfig& cfg, const Signals& s) {
  return s.entropy_in(cfg.unit) > cfg.entropy_threshold;
}

// Decision after the main block.
inline Step route_after_main(const RouterConfig& cfg, const Signals& main, const int* hard_index, int num_hard,
                             int num_classes) {
  if (cfg.cloud == CloudCheck::before_extension && too_uncertain(cfg, main)) return Step::send_to_cloud;
  if (is_hard(cfg, main, hard_index, num_hard, num_classes)) return Step::run_extension;
  if (cfg.cloud == CloudCheck::after_extension && too_uncertain(cfg, main)) return Step::send_to_cloud;
  return Step::exit_main;
}

// Decision after the extension (only reached on the hard path).
inline Step route_after_extension(const RouterConfig& cfg, const Signals& ext) {
  if (cfg.cloud == CloudCheck::after_extension && too_uncertain(cfg, ext)) return Step::send_to_cloud;
  return Step::exit_extension;
}

}  // namespace edgenn::meanet
