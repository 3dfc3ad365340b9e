// Compiled only when PL_WITH_CUDA is defined (a CUDA libtorch).
#include "cuda.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>

namespace gpl::cuda {

std::vector<DeviceInfo> devices() {
  std::vector<DeviceInfo> result;
  if (!at::hasCUDA()) return result;
  const int count = static_cast<int>(at::cuda::getNumGPUs());
  for (int i = 0; i < count; ++i) {
    const cudaDeviceProp* prop = at::cuda::getDeviceProperties(i);
    result.push_back({i, prop->name, prop->major, prop->minor, static_cast<uint64_t>(prop->totalGlobalMem)});
  }
  return result;
}

}  // namespace gpl::cuda
