// Training buffers on large (2 MB) pages where the OS offers them.
//
// A training step streams tens of MB of activations, and the Winograd transforms read and
// write 36 strided streams at once: with 4 KB pages those touch more pages than the TLB
// holds. Linux backs a region with transparent huge pages when asked (madvise) and its
// setting allows it ("always" or "madvise", the default of many distributions). Most of a
// step's buffers are smaller than a large page (a 28x28x16 map of 32 images is 1.6 MB), so
// they are packed into shared regions aligned to large pages and advised as a whole.
// Elsewhere (not Linux, or under AddressSanitizer, which must see every buffer), and for
// small buffers, this is the plain allocator. Where the large page is not 2 MB (aarch64
// kernels with 64 KB pages: 512 MB) the regions stay on small pages; results are the same.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

// AddressSanitizer: GCC defines __SANITIZE_ADDRESS__, Clang only has the feature test.
#if defined(__SANITIZE_ADDRESS__)
#define EDGENN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EDGENN_ASAN 1
#endif
#endif

#if defined(__linux__) && defined(MADV_HUGEPAGE) && !defined(EDGENN_ASAN)
#define EDGENN_LARGE_PAGE_POOL 1
#else
#define EDGENN_LARGE_PAGE_POOL 0
#endif

namespace edgenn::train {

inline constexpr std::size_t kLargePageBytes = std::size_t(2) << 20;

#if EDGENN_LARGE_PAGE_POOL
namespace detail {

// Regions of large pages (256 MB of address space, or one buffer's size rounded up to large
// pages; only what is touched is resident), each a first-fit arena over its free ranges; a
// region goes back to the system once nothing in it is in use. Few large regions: the last,
// partly used large page of each is resident in full. Process-wide and locked: buffers are
// made rarely (when a shape first appears), never on a step's hot path.
class LargePagePool {
 public:
  static constexpr std::size_t kRegionBytes = std::size_t(256) << 20;
  static constexpr std::size_t kGranule = 64;  // every buffer starts on a cache line

  static LargePagePool& instance() {
    static LargePagePool* pool = new LargePagePool;  // never destroyed: static buffers may outlive it
    return *pool;
  }

  // nullptr if the system has no memory for a new region.
  void* allocate(std::size_t bytes) {
    bytes = round_up(bytes, kGranule);
    std::lock_guard<std::mutex> lock(m_);
    for (Region& r : regions_)
      if (void* p = r.take(bytes)) return p;
    Region r;
    r.size = std::max(kRegionBytes, round_up(bytes, kLargePageBytes));
    void* base = nullptr;
    if (posix_memalign(&base, kLargePageBytes, r.size) != 0) return nullptr;
    (void)madvise(base, r.size, MADV_HUGEPAGE);  // advice only: small pages without THP
    r.base = static_cast<unsigned char*>(base);
    r.free.emplace(0, r.size);
    regions_.push_back(std::move(r));
    return regions_.back().take(bytes);
  }
  // false if p is not from this pool.
  bool deallocate(void* p, std::size_t bytes) {
    bytes = round_up(bytes, kGranule);
    std::lock_guard<std::mutex> lock(m_);
    for (std::size_t i = 0; i < regions_.size(); ++i) {
      Region& r = regions_[i];
      const auto* q = static_cast<unsigned char*>(p);
      if (q < r.base || q >= r.base + r.size) continue;
      r.give(std::size_t(q - r.base), bytes);
      if (r.used == 0) {
        std::free(r.base);
        regions_.erase(regions_.begin() + std::ptrdiff_t(i));
      }
      return true;
    }
    return false;
  }
  std::size_t regions() {
    std::lock_guard<std::mutex> lock(m_);
    return regions_.size();
  }

 private:
  static std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

  struct Region {
    unsigned char* base = nullptr;
    std::size_t size = 0, used = 0;
    std::map<std::size_t, std::size_t> free;  // offset -> length, disjoint and not adjacent

    void* take(std::size_t bytes) {
      for (auto it = free.begin(); it != free.end(); ++it) {
        if (it->second < bytes) continue;
        const std::size_t off = it->first, len = it->second;
        free.erase(it);
        if (len > bytes) free.emplace(off + bytes, len - bytes);
        used += bytes;
        return base + off;
      }
      return nullptr;
    }
    void give(std::size_t off, std::size_t bytes) {
      used -= bytes;
      auto next = free.lower_bound(off);
      if (next != free.begin()) {  // merge with the range before
        auto prev = std::prev(next);
        if (prev->first + prev->second == off) {
          off = prev->first;
          bytes += prev->second;
          free.erase(prev);
        }
      }
      if (next != free.end() && off + bytes == next->first) {  // and with the one after
        bytes += next->second;
        free.erase(next);
      }
      free.emplace(off, bytes);
      // The free range's pages go back to the system (a buffer that grew leaves its old place
      // behind; it is no longer resident, as with the plain allocator). A large page the range
      // shares with a live buffer is split for that.
      static const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));  // the range must hold whole pages
      const std::size_t lo = round_up(off, page), hi = (off + bytes) / page * page;
      if (hi > lo) (void)madvise(base + lo, hi - lo, MADV_DONTNEED);
    }
  };

  std::mutex m_;
  std::vector<Region> regions_;
};

}  // namespace detail
#endif  // EDGENN_LARGE_PAGE_POOL

template <class T>
struct LargePageAllocator {
  using value_type = T;
  // The last large page of a region is resident in full however little of it is used (up to
  // 2 MB more than the buffers), so a small training run (MEANet stage C at batch 8 or less,
  // whose maps are below this) keeps to the plain allocator.
  static constexpr std::size_t kPooledMinBytes = std::size_t(256) << 10;

  LargePageAllocator() = default;
  template <class U>
  constexpr LargePageAllocator(const LargePageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
#if EDGENN_LARGE_PAGE_POOL
    if (n <= std::size_t(-1) / sizeof(T) && n * sizeof(T) >= kPooledMinBytes)
      if (void* p = detail::LargePagePool::instance().allocate(n * sizeof(T))) return static_cast<T*>(p);
#endif
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
#if EDGENN_LARGE_PAGE_POOL
    if (n * sizeof(T) >= kPooledMinBytes && detail::LargePagePool::instance().deallocate(p, n * sizeof(T))) return;
#endif
    std::allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const LargePageAllocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const LargePageAllocator<U>&) const noexcept {
    return false;
  }
};

// A training buffer (activations, saved BN inputs, gradients of maps, workspaces).
template <class T>
using LargeVector = std::vector<T, LargePageAllocator<T>>;

}  // namespace edgenn::train
