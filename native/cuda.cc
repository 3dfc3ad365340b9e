// Compiled only when PL_WITH_CUDA is defined (a CUDA libtorch). Uses c10's CUDA layer and the
// CUDA runtime API alone: ATen/cuda/CUDAContext.h would pull in cuBLAS and cuSPARSE headers.
#include "cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>

namespace gpl::cuda {

std::vector<DeviceInfo> devices() {
  std::vector<DeviceInfo> result;
  const int count = static_cast<int>(c10::cuda::device_count());
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    C10_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
    result.push_back({i, prop.name, prop.major, prop.minor, static_cast<uint64_t>(prop.totalGlobalMem)});
  }
  return result;
}

}  // namespace gpl::cuda
