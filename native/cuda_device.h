// The CUDA device functions that need no ATen types: device info, allocator
// figures, the cache and stream synchronization. Behind the same switch as
// cuda.h (PL_WITH_CUDA); without it they are no-ops, or ERR_DEVICE where a
// caller asks for a figure. Standard C++ only, so the Node-API-only translation
// units (errors.cc, addon.cc) include it without ATen.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "enums.h"

namespace perceptual::cuda {

struct DeviceInfo {
  int index;
  std::string name;
  int major;
  int minor;
  uint64_t totalMemory;
};

// The device's caching-allocator figures, in bytes.
struct MemoryStats {
  int64_t allocated = 0;
  int64_t reserved = 0;
  int64_t peakAllocated = 0;
  int64_t peakReserved = 0;
};

#if defined(PL_WITH_CUDA)

std::vector<DeviceInfo> devices();
MemoryStats memoryStats(int index);
void resetPeakMemory(int index);
void setMemoryFraction(double fraction, int index);
// Returns the cached blocks to the driver: after an out-of-memory error, so the
// next step can fit.
void emptyCache();
// Waits for the current CUDA stream: where a result is handed to JavaScript.
void synchronize();

#else

inline std::vector<DeviceInfo> devices() { return {}; }
inline MemoryStats memoryStats(int) { throw Error(ErrorCode::Device, "this build has no CUDA support"); }
inline void resetPeakMemory(int) { throw Error(ErrorCode::Device, "this build has no CUDA support"); }
inline void setMemoryFraction(double, int) { throw Error(ErrorCode::Device, "this build has no CUDA support"); }
inline void emptyCache() {}
inline void synchronize() {}

#endif

}  // namespace perceptual::cuda
