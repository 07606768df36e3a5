// A small fixed thread pool for host builds (Linux): parallel_for over task indices,
// blocking until all are done. The calling thread takes part, so a pool of N threads
// starts N - 1 workers. Kernels never create threads; callers split work (batch items,
// output rows) across tasks.
//
// A training step calls parallel_for a few hundred times, so hand-offs must be cheap:
// workers and the caller spin briefly (kSpin) on atomics before they sleep on a condition
// variable, like OpenMP runtimes do; a pool that is idle for longer costs no CPU.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace edgenn::runtime {

class ThreadPool {
 public:
  explicit ThreadPool(int threads = 1) : size_(threads < 1 ? 1 : threads) {
    for (int i = 1; i < size_; ++i) workers_.emplace_back([this, i] { loop(i); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Run fn(task) for task in [0, tasks); task t runs on thread t % size(). Returns when all
  // tasks are done. Deterministic assignment keeps results reproducible. Not reentrant.
  void parallel_for(int tasks, const std::function<void(int)>& fn) {
    if (size_ == 1 || tasks <= 1) {
      for (int t = 0; t < tasks; ++t) fn(t);
      return;
    }
    job_ = &fn;
    tasks_ = tasks;
    pending_.store(size_ - 1, std::memory_order_relaxed);
    {
      // Under the lock: a worker between its predicate check and its wait cannot miss it.
      std::lock_guard<std::mutex> lk(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (int t = 0; t < tasks; t += size_) fn(t);
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lk(mu_);
      done_.wait(lk, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    job_ = nullptr;
  }

 private:
  // Long enough to bridge the serial work between two parallel regions of a training step
  // (BN statistics, weight packing, gradient reductions): at 50 us a worker often slept and
  // paid a wake-up there (bench_train, two threads, ResNet-20 batch 32: 500 us is 9-14%
  // faster). libgomp spins longer by default (GOMP_SPINCOUNT 300,000 iterations).
  static constexpr std::chrono::microseconds kSpin{500};

  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    asm volatile("yield");
#endif
  }
  // Spin up to kSpin until done() holds; returns done().
  template <class Done>
  static bool spin_until(Done&& done) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0;; ++i) {
      if (done()) return true;
      cpu_relax();
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return done();
    }
  }

  void loop(int index) {
    std::uint64_t seen = 0;
    for (;;) {
      auto ready = [&] {
        return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
      };
      if (!spin_until(ready)) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, ready);
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      const std::function<void(int)>* job = job_;
      const int tasks = tasks_;
      for (int t = index; t < tasks; t += size_) (*job)(t);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mu_);  // the caller may be between its check and its wait
        done_.notify_one();
      }
    }
  }

  int size_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_;
  const std::function<void(int)>* job_ = nullptr;  // written before generation_ is bumped
  int tasks_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace edgenn::runtime
