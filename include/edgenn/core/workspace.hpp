// Workspace (arena) over caller memory, and the size queries that plan it.
//
// Nothing in the core allocates. A caller asks how many bytes a layer or model needs
// (every kernel and model has a *_workspace_bytes() query), provides that much memory,
// and the run takes aligned slices from it. A Workspace built with `measure()` has no
// memory: it hands out nullptr but records the peak, so planning and running follow
// the same code path.
#pragma once

#include "edgenn/core/config.hpp"
#include "edgenn/core/status.hpp"

namespace edgenn {

// Bytes `count` objects of T occupy when placed at kAlignment.
template <class T>
constexpr std::size_t aligned_bytes(std::size_t count) {
  return (count * sizeof(T) + kAlignment - 1) / kAlignment * kAlignment;
}

class Workspace {
 public:
  struct Mark {
    std::size_t offset;
  };

  constexpr Workspace() = default;
  Workspace(void* memory, std::size_t bytes) : base_(static_cast<unsigned char*>(memory)), capacity_(bytes) {
    // Start at the first aligned address of the caller's block.
    const auto addr = reinterpret_cast<std::uintptr_t>(base_);
    const std::size_t skew = (kAlignment - addr % kAlignment) % kAlignment;
    if (skew > capacity_) {
      capacity_ = 0;
    } else {
      base_ += skew;
      capacity_ -= skew;
    }
  }
  // A workspace that only measures.
  static constexpr Workspace measure() {
    Workspace w;
    w.measuring_ = true;
    return w;
  }

  // Take room for `count` objects of T. Returns nullptr when measuring or when the
  // workspace is exhausted (then `exhausted()` is true and `status()` says so).
  template <class T>
  T* take(std::size_t count) {
    const std::size_t bytes = aligned_bytes<T>(count);
    const std::size_t offset = used_;
    used_ += bytes;
    if (used_ > peak_) peak_ = used_;
    if (measuring_) return nullptr;
    if (used_ > capacity_) {
      exhausted_ = true;
      return nullptr;
    }
    return reinterpret_cast<T*>(base_ + offset);
  }

  Mark mark() const { return Mark{used_}; }
  void release(Mark m) { used_ = m.offset; }

  bool measuring() const { return measuring_; }
  bool exhausted() const { return exhausted_; }
  std::size_t used() const { return used_; }
  std::size_t peak() const { return peak_; }
  std::size_t capacity() const { return capacity_; }
  Status status() const {
    return exhausted_ ? Status(Error::workspace_too_small, "workspace too small: query the size first")
                      : Status::ok();
  }

 private:
  unsigned char* base_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t used_ = 0;
  std::size_t peak_ = 0;
  bool measuring_ = false;
  bool exhausted_ = false;
};

// Scoped release: slices taken inside the scope are returned at its end.
class WorkspaceScope {
 public:
  explicit WorkspaceScope(Workspace& ws) : ws_(ws), mark_(ws.mark()) {}
  ~WorkspaceScope() { ws_.release(mark_); }
  WorkspaceScope(const WorkspaceScope&) = delete;
  WorkspaceScope& operator=(const WorkspaceScope&) = delete;

 private:
  Workspace& ws_;
  Workspace::Mark mark_;
};

}  // namespace edgenn
