// Dynamic batching policy of the cloud server (docs/protocol.md section 8), as pure logic
// over a FIFO of requests so it is testable without sockets or threads:
// a batch is due when the queue holds max_batch images, or when the oldest request has
// waited max_wait, or when the server is flushing (shutting down); it takes whole requests
// in arrival order up to max_batch images (at least one request, however large).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

namespace edgenn::net {

template <class Item>
class DynamicBatcher {
 public:
  using Clock = std::chrono::steady_clock;

  struct Queued {
    Item item;
    int images;
    Clock::time_point arrival;
  };

  DynamicBatcher(int max_batch, Clock::duration max_wait)
      : max_batch_(max_batch < 1 ? 1 : max_batch), max_wait_(max_wait) {}

  int max_batch() const { return max_batch_; }
  Clock::duration max_wait() const { return max_wait_; }
  bool empty() const { return queue_.empty(); }
  std::size_t queued_requests() const { return queue_.size(); }
  std::uint64_t queued_images() const { return images_; }

  void push(Item item, int images, Clock::time_point arrival) {
    images_ += std::uint64_t(images);
    queue_.push_back(Queued{std::move(item), images, arrival});
  }

  // A batch should be dispatched now (given a free worker).
  bool due(Clock::time_point now, bool flush) const {
    if (queue_.empty()) return false;
    return flush || images_ >= std::uint64_t(max_batch_) || now >= deadline();
  }

  // When the oldest request's wait runs out (meaningful only when not empty).
  Clock::time_point deadline() const { return queue_.front().arrival + max_wait_; }

  // The next batch: whole requests in arrival order while they fit in max_batch images;
  // always at least one request (a request larger than max_batch forms its own batch).
  std::vector<Queued> take() {
    std::vector<Queued> batch;
    std::uint64_t images = 0;
    while (!queue_.empty()) {
      const int n = queue_.front().images;
      if (!batch.empty() && images + std::uint64_t(n) > std::uint64_t(max_batch_)) break;
      images += std::uint64_t(n);
      images_ -= std::uint64_t(n);
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    return batch;
  }

 private:
  int max_batch_;
  Clock::duration max_wait_;
  std::deque<Queued> queue_;
  std::uint64_t images_ = 0;
};

}  // namespace edgenn::net
