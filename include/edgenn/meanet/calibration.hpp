// Threshold calibration of the cloud rule on the validation split (never the test set),
// and the accounting shared with the demo report: given what the main block, the extension
// and the cloud model answer for each input, every threshold T gives an operating point
// (exit fractions, accuracy, MACs, estimated energy); a sweep over all distinct entropies
// gives the whole trade-off curve, and a target picks one point.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "edgenn/meanet/energy.hpp"
#include "edgenn/meanet/router.hpp"

namespace edgenn::meanet {

// Everything the router can see about one input, plus the answers of every path.
struct Observation {
  int label = -1;
  Signals main;        // main block softmax signals (top = class)
  bool hard = false;   // routed to the extension by the hard rule (independent of T)
  int ext_class = -1;  // extension's answer mapped back to the original class (hard inputs)
  Signals ext;         // extension softmax signals (hard inputs)
  int cloud_class = -1;
};

struct Costs {
  PathCosts paths;
  std::int64_t request_bytes = 0;  // bytes sent to the cloud per input
  std::int64_t cloud_macs = 0;     // the cloud model per input (for the "cloud for every input" line)
  EnergyModel energy;

  double main_joules() const {
    return energy.compute_joules(paths.main_macs, paths.main_traffic.weight_words, paths.main_traffic.act_words);
  }
  double extension_joules() const {
    return energy.compute_joules(paths.extension_macs, paths.extension_traffic.weight_words,
                                 paths.extension_traffic.act_words);
  }
  double transmit_joules() const { return energy.transmit_joules(request_bytes); }
};

struct OperatingPoint {
  float threshold = std::numeric_limits<float>::infinity();
  int count = 0;
  int exits[3] = {0, 0, 0};    // main, extension, cloud
  int correct[3] = {0, 0, 0};  // per exit
  double edge_macs = 0;        // mean per input
  double energy_joules = 0;    // mean per input (estimate)

  double fraction(Exit e) const { return count ? double(exits[int(e)]) / count : 0.0; }
  double accuracy() const { return count ? double(correct[0] + correct[1] + correct[2]) / count : 0.0; }
  double exit_accuracy(Exit e) const { return exits[int(e)] ? double(correct[int(e)]) / exits[int(e)] : 0.0; }
};

// Which exit one observation takes under `cfg`, whether the extension ran, and the answer.
struct Outcome {
  Exit exit = Exit::main;
  bool extension_ran = false;
  int answer = -1;
};

inline Outcome simulate(const RouterConfig& cfg, const Observation& o) {
  Outcome r;
  const bool uncertain_main = too_uncertain(cfg, o.main);
  if (cfg.cloud == CloudCheck::before_extension && uncertain_main) return Outcome{Exit::cloud, false, o.cloud_class};
  if (o.hard) {
    if (cfg.cloud == CloudCheck::after_extension && too_uncertain(cfg, o.ext))
      return Outcome{Exit::cloud, true, o.cloud_class};
    return Outcome{Exit::extension, true, o.ext_class};
  }
  if (cfg.cloud == CloudCheck::after_extension && uncertain_main) return Outcome{Exit::cloud, false, o.cloud_class};
  r.answer = o.main.top;
  return r;
}

inline OperatingPoint evaluate(const RouterConfig& cfg, const std::vector<Observation>& obs, const Costs& costs) {
  OperatingPoint p;
  p.threshold = cfg.entropy_threshold;
  double macs = 0, joules = 0;
  for (const auto& o : obs) {
    const Outcome r = simulate(cfg, o);
    ++p.count;
    ++p.exits[int(r.exit)];
    p.correct[int(r.exit)] += r.answer == o.label;
    macs += double(costs.paths.main_macs) + (r.extension_ran ? double(costs.paths.extension_macs) : 0.0);
    joules += costs.main_joules() + (r.extension_ran ? costs.extension_joules() : 0.0) +
              (r.exit == Exit::cloud ? costs.transmit_joules() : 0.0);
  }
  if (p.count) {
    p.edge_macs = macs / p.count;
    p.energy_joules = joules / p.count;
  }
  return p;
}

// Every distinct operating point: thresholds at the distinct entropies the cloud rule
// compares, plus +infinity (never the cloud). Points come sorted by falling cloud fraction.
inline std::vector<OperatingPoint> sweep(RouterConfig cfg, const std::vector<Observation>& obs, const Costs& costs,
                                         int max_points = 400) {
  std::vector<float> cands;
  for (const auto& o : obs) {
    cands.push_back(o.main.entropy_in(cfg.unit));
    if (o.hard && cfg.cloud == CloudCheck::after_extension) cands.push_back(o.ext.entropy_in(cfg.unit));
  }
  std::sort(cands.begin(), cands.end());
  cands.erase(std::unique(cands.begin(), cands.end()), cands.end());
  // Keep at most max_points thresholds, evenly spread over the sorted values.
  std::vector<float> ts;
  const std::size_t n = cands.size();
  const std::size_t step = n > std::size_t(max_points) ? (n + std::size_t(max_points) - 1) / std::size_t(max_points) : 1;
  ts.push_back(-std::numeric_limits<float>::infinity());  // everything uncertain: all to the cloud
  for (std::size_t i = 0; i < n; i += step) ts.push_back(cands[i]);
  if (n) ts.push_back(cands.back());
  ts.push_back(std::numeric_limits<float>::infinity());
  ts.erase(std::unique(ts.begin(), ts.end()), ts.end());
  std::vector<OperatingPoint> pts;
  for (float t : ts) {
    cfg.entropy_threshold = t;
    pts.push_back(evaluate(cfg, obs, costs));
  }
  return pts;
}

struct Target {
  enum Kind { cloud_fraction, accuracy } kind = accuracy;
  double value = 0;              // the fraction, or the accuracy to reach
  double max_cloud_fraction = 1; // cap when targeting accuracy
};

struct Choice {
  OperatingPoint point;
  bool target_met = false;
};

// cloud_fraction: the most accurate point sending at most `value` of the inputs.
// accuracy: the point with the fewest cloud inputs reaching `value` (within the cap);
// otherwise the most accurate point within the cap, flagged as missing the target.
inline Choice choose(const std::vector<OperatingPoint>& pts, const Target& target) {
  Choice best;
  bool found = false;
  auto better_acc = [](const OperatingPoint& a, const OperatingPoint& b) {
    return a.accuracy() > b.accuracy() || (a.accuracy() == b.accuracy() && a.fraction(Exit::cloud) < b.fraction(Exit::cloud));
  };
  const double cap = target.kind == Target::cloud_fraction ? target.value : target.max_cloud_fraction;
  if (target.kind == Target::accuracy) {
    for (const auto& p : pts)
      if (p.fraction(Exit::cloud) <= cap && p.accuracy() >= target.value &&
          (!found || p.fraction(Exit::cloud) < best.point.fraction(Exit::cloud) ||
           (p.fraction(Exit::cloud) == best.point.fraction(Exit::cloud) && p.accuracy() > best.point.accuracy()))) {
        best.point = p;
        found = true;
      }
    if (found) {
      best.target_met = true;
      return best;
    }
  }
  for (const auto& p : pts)
    if (p.fraction(Exit::cloud) <= cap && (!found || better_acc(p, best.point))) {
      best.point = p;
      found = true;
    }
  best.target_met = found && target.kind == Target::cloud_fraction;
  return best;
}

}  // namespace edgenn::meanet
