// libtorch's CPU allocator, with buffers of 2 MiB and more aligned to 2 MiB and advised as
// transparent huge pages: what PyTorch 2.2+ does under THP_MEM_ALLOC_ENABLE=1, for the libtorch
// that predates it (compat.h says when). A step's large activations are fresh allocations each
// time, and with 4 KiB pages their first touch costs a page fault per page.
#pragma once

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace perceptual::cpu {

class HugePageAllocator final : public at::Allocator {
 public:
  static constexpr size_t kHugePage = size_t(2) << 20;

  at::DataPtr allocate(size_t n) const override {
    if (n < kHugePage) {
      void* data = c10::alloc_cpu(n);
      return {data, data, &c10::free_cpu, at::Device(at::kCPU)};
    }
    void* data = nullptr;
    if (posix_memalign(&data, kHugePage, n) != 0) throw std::bad_alloc();
    // Advice only: where the kernel has THP off, the pages stay 4 KiB.
    madvise(data, n, MADV_HUGEPAGE);
    return {data, data, &c10::free_cpu, at::Device(at::kCPU)};
  }

  // c10::free_cpu is free(): right for both kinds of buffer.
  at::DeleterFnPtr raw_deleter() const override { return &c10::free_cpu; }
};

// Makes it libtorch's CPU allocator, once per process; whether it is.
inline bool installHugePageAllocator() {
  static HugePageAllocator allocator;
  static const bool installed = [] {
    // Above the default allocator's priority (0), which registers at load.
    c10::SetCPUAllocator(&allocator, 1);
    return true;
  }();
  return installed;
}

}  // namespace perceptual::cpu
