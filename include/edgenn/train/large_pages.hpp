// Training buffers on large (2 MB) pages where the OS offers them.
//
// A training step streams tens of MB of activations, and the Winograd transforms read and
// write 36 strided streams at once: with 4 KB pages those touch more pages than the TLB
// holds. Linux backs a region with transparent huge pages when asked (madvise) and its
// setting allows it ("always" or "madvise", the default of many distributions); elsewhere,
// or below one large page, this is the plain allocator.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace edgenn::train {

inline constexpr std::size_t kLargePageBytes = std::size_t(2) << 20;

template <class T>
struct LargePageAllocator {
  using value_type = T;
  LargePageAllocator() = default;
  template <class U>
  constexpr LargePageAllocator(const LargePageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= kLargePageBytes) {
      // Aligned to a large page, so every whole large page of the buffer can be one; the
      // size is not rounded up (the tail stays on small pages and is not resident unused).
      void* p = nullptr;
      if (posix_memalign(&p, kLargePageBytes, bytes) != 0) throw std::bad_alloc();
      // Advice only: without transparent huge pages the buffer is on small pages.
      (void)madvise(p, bytes / kLargePageBytes * kLargePageBytes, MADV_HUGEPAGE);
      return static_cast<T*>(p);
    }
#endif
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n * sizeof(T) >= kLargePageBytes) {
      std::free(p);
      return;
    }
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
