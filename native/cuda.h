// The CUDA-only parts, behind one compile-time switch: PL_WITH_CUDA, which the build defines
// when the libtorch it finds has CUDA. Without it these are inline no-ops.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gpl::cuda {

struct DeviceInfo {
  int index;
  std::string name;
  int major;
  int minor;
  uint64_t totalMemory;
};

#if defined(PL_WITH_CUDA)
std::vector<DeviceInfo> devices();
#else
inline std::vector<DeviceInfo> devices() { return {}; }
#endif

}  // namespace gpl::cuda
