// Threads for a training step (host builds): the batch of a step is split into one
// contiguous range of items per thread, and each kernel of the step runs on every range at
// once, each thread with its own workspace. What the backward sums over the batch (weight
// gradients, batch-norm statistics and their gradients) is computed per range and added in
// range order, so a run is deterministic for a given thread count (and with one thread it
// is exactly the serial step).
//
// The layers of train/layers.hpp take a Parallel* (null = serial) and call for_ranges around
// their kernels; nothing else changes for them. Kernels stay pure: they never create threads.
#pragma once

#include <memory>
#include <vector>

#include "edgenn/core/tensor.hpp"
#include "edgenn/core/workspace.hpp"
#include "edgenn/runtime/thread_pool.hpp"
#include "edgenn/train/large_pages.hpp"

namespace edgenn::train {

class Parallel {
 public:
  explicit Parallel(int threads) : pool_(threads < 1 ? 1 : threads) {
    ws_mem_.resize(std::size_t(pool_.size()));
    scratch_.resize(std::size_t(pool_.size()));
    status_.resize(std::size_t(pool_.size()));
  }

  int threads() const { return pool_.size(); }

  // Ranges a batch of n items is split into: min(threads, n), sizes differing by at most one.
  int ranges(int n) const { return n < threads() ? (n < 1 ? 1 : n) : threads(); }
  static int range_begin(int n, int ranges, int r) { return int(index_t(n) * r / ranges); }

  // Every thread's workspace holds at least `bytes` (the largest a layer of the step needs).
  void reserve_workspace(std::size_t bytes) {
    for (auto& m : ws_mem_)
      if (m.size() < bytes + kAlignment) m.assign(bytes + kAlignment, 0);
  }

  // A buffer of range r for at least `count` objects of T (float or double: partial sums of
  // the ranges). Valid until the next call for range r with a larger size.
  template <class T>
  T* scratch(int r, std::size_t count) {
    static_assert(alignof(T) <= alignof(double), "scratch holds float or double");
    auto& v = scratch_[std::size_t(r)];
    const std::size_t words = (count * sizeof(T) + sizeof(double) - 1) / sizeof(double);
    if (v.size() < words) v.resize(words);
    return reinterpret_cast<T*>(v.data());
  }
  // Bytes held beside the parameters: workspaces and partial-sum buffers of every thread.
  std::size_t memory_bytes() const {
    std::size_t b = 0;
    for (const auto& m : ws_mem_) b += m.size();
    for (const auto& v : scratch_) b += v.size() * sizeof(double);
    return b;
  }

  // fn(r, b0, b1, ws) for the ranges of n batch items, range r on thread r; returns the
  // first range's error, if any, after all ranges ran.
  // Not reentrant: fn must not call for_ranges.
  template <class F>
  Status for_ranges(int n, F&& fn) {
    const int R = ranges(n);
    pool_.parallel_for(R, [&](int r) {
      auto& m = ws_mem_[std::size_t(r)];
      Workspace ws(m.data(), m.size());
      status_[std::size_t(r)] = fn(r, range_begin(n, R, r), range_begin(n, R, r + 1), ws);
    });
    for (int r = 0; r < R; ++r) EDGENN_TRY(status_[std::size_t(r)]);
    return Status::ok();
  }

 private:
  runtime::ThreadPool pool_;
  std::vector<LargeVector<unsigned char>> ws_mem_;
  std::vector<std::vector<double>> scratch_;
  std::vector<Status> status_;
};

// Runs fn(b0, b1, ws) over the ranges of `par` (null: once over [0, n) with `ws`).
template <class F>
Status for_batch_ranges(Parallel* par, int n, Workspace& ws, F&& fn) {
  if (!par || par->ranges(n) == 1) return fn(0, n, ws);
  return par->for_ranges(n, [&](int, int b0, int b1, Workspace& w) { return fn(b0, b1, w); });
}

// Batch items [b0, b1) of a view.
template <class T>
TensorView<T> items(TensorView<T> v, int b0, int b1) {
  return v.items(b0, b1 - b0);
}

}  // namespace edgenn::train
