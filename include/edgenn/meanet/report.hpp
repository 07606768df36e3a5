// Aggregation of a MEANet run into the demo report: accuracy of each system, exit
// fractions and per-exit accuracy, MACs, bytes, latency percentiles per exit and the
// estimated energy against the two baselines. Host side (JSON).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgenn/meanet/edge_runtime.hpp"

namespace edgenn::meanet {

struct RunRecord {
  int label = -1;
  EdgeDecision d;
};

inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = q * double(v.size() - 1);
  const std::size_t i = std::size_t(pos);
  const double f = pos - double(i);
  return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

inline nlohmann::json latency_stats(const std::vector<double>& ms) {
  return {{"count", ms.size()},
          {"p50_ms", percentile(ms, 0.50)},
          {"p95_ms", percentile(ms, 0.95)},
          {"p99_ms", percentile(ms, 0.99)},
          {"mean_ms", ms.empty() ? 0.0 : [&] {
             double s = 0;
             for (double x : ms) s += x;
             return s / double(ms.size());
           }()}};
}

// Summary of the live run (one record per input, in input order).
inline nlohmann::json summarize_run(const std::vector<RunRecord>& recs) {
  int n = int(recs.size()), correct = 0, fallbacks = 0, ext_ran = 0;
  int exits[3] = {0, 0, 0}, exit_correct[3] = {0, 0, 0};
  double macs = 0, joules = 0;
  std::int64_t bytes = 0;
  std::vector<double> lat[3], all;
  for (const auto& r : recs) {
    const int e = int(r.d.exit);
    ++exits[e];
    const bool ok = r.d.cls == r.label;
    exit_correct[e] += ok;
    correct += ok;
    fallbacks += r.d.fallback;
    ext_ran += r.d.extension_ran;
    macs += double(r.d.edge_macs);
    joules += r.d.energy_joules;
    bytes += r.d.bytes_sent;
    lat[e].push_back(r.d.latency_ms);
    all.push_back(r.d.latency_ms);
  }
  nlohmann::json ex;
  for (int e = 0; e < 3; ++e)
    ex[exit_name(Exit(e))] = {{"count", exits[e]},
                              {"fraction", n ? double(exits[e]) / n : 0.0},
                              {"accuracy", exits[e] ? double(exit_correct[e]) / exits[e] : 0.0},
                              {"latency", latency_stats(lat[e])}};
  return {{"inputs", n},
          {"accuracy", n ? double(correct) / n : 0.0},
          {"exits", ex},
          {"cloud_fallbacks", fallbacks},
          {"extension_runs", ext_ran},
          {"edge_macs_per_input", n ? macs / n : 0.0},
          {"bytes_sent_total", bytes},
          {"bytes_sent_per_input", n ? double(bytes) / n : 0.0},
          {"energy_joules_per_input", n ? joules / n : 0.0},
          {"latency_all", latency_stats(all)}};
}

inline nlohmann::json point_json(const OperatingPoint& p) {
  return {{"threshold", std::isfinite(p.threshold) ? nlohmann::json(p.threshold) : nlohmann::json(nullptr)},
          {"accuracy", p.accuracy()},
          {"fraction_main", p.fraction(Exit::main)},
          {"fraction_extension", p.fraction(Exit::extension)},
          {"fraction_cloud", p.fraction(Exit::cloud)},
          {"edge_macs_per_input", p.edge_macs},
          {"energy_joules_per_input", p.energy_joules}};
}

}  // namespace edgenn::meanet
