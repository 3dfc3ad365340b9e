// The one place where libtorch versions differ (Debian's 1.13 and the 2.x wheels).
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/api/include/torch/version.h>

#if defined(PL_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace gpl::compat {

constexpr int kTorchMajor = TORCH_VERSION_MAJOR;
constexpr int kTorchMinor = TORCH_VERSION_MINOR;
constexpr int kTorchPatch = TORCH_VERSION_PATCH;

// 2.x made c10::optional an alias of std::optional and later dropped c10::nullopt.
#if TORCH_VERSION_MAJOR >= 2
inline constexpr auto kNone = std::nullopt;
#else
inline constexpr auto kNone = c10::nullopt;
#endif

// The grad-input half of a stride-1, padding-1 3x3 convolution: the kernel
// autograd itself would run, with the weight and bias gradients switched off.
inline at::Tensor conv3x3BackwardInput(const at::Tensor& gradOutput, const at::Tensor& input,
                                       const at::Tensor& weight) {
  return std::get<0>(at::convolution_backward(gradOutput, input, weight, at::OptionalIntArrayRef(),
                                              {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1,
                                              {true, false, false}));
}

inline at::Tensor avgPool2x2Backward(const at::Tensor& gradOutput, const at::Tensor& input) {
  return at::avg_pool2d_backward(gradOutput, input, {2, 2}, {2, 2}, {0, 0}, false, true, kNone);
}

inline bool isOutOfMemory(const c10::Error& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  // The CPU allocator reports exhaustion as a plain c10::Error.
  const std::string msg = e.what_without_backtrace();
  return msg.find("can't allocate memory") != std::string::npos ||
         msg.find("out of memory") != std::string::npos;
}

}  // namespace gpl::compat
