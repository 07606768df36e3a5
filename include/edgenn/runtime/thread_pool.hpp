// A small fixed thread pool for host builds (Linux): parallel_for over task indices,
// blocking until all are done. The calling thread takes part, so a pool of N threads
// starts N - 1 workers. Kernels never create threads; callers split work (batch items,
// output rows) across tasks.
#pragma once

#include <condition_variable>
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
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Run fn(task) for task in [0, tasks); task t runs on thread t % size(). Returns when all
  // tasks are done. Deterministic assignment keeps results reproducible.
  void parallel_for(int tasks, const std::function<void(int)>& fn) {
    if (size_ == 1 || tasks <= 1) {
      for (int t = 0; t < tasks; ++t) fn(t);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &fn;
      tasks_ = tasks;
      pending_ = size_ - 1;
      ++generation_;
    }
    cv_.notify_all();
    for (int t = 0; t < tasks; t += size_) fn(t);
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(int index) {
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      int tasks;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
        tasks = tasks_;
      }
      for (int t = index; t < tasks; t += size_) (*job)(t);
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  int size_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_;
  const std::function<void(int)>* job_ = nullptr;
  int tasks_ = 0;
  int pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace edgenn::runtime
