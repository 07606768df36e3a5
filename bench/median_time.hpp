// Median wall time of a call, shared by the model and training benchmarks (their Python
// peers use tools/pyref/timing.py, the same procedure).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

namespace edgenn_bench {

// Median seconds per call of fn over repeated calls for at least min_time seconds and at
// least 5 calls, after `warmup` untimed calls.
template <class F>
double median_seconds(F&& fn, double min_time, int warmup) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  const auto start = Clock::now();
  do {
    const auto t0 = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  } while (std::chrono::duration<double>(Clock::now() - start).count() < min_time || t.size() < 5);
  std::nth_element(t.begin(), t.begin() + std::ptrdiff_t(t.size() / 2), t.end());
  return t[t.size() / 2];
}

}  // namespace edgenn_bench
