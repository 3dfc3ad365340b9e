// The one place where libtorch versions differ (Debian's 1.13 and the 2.x
// wheels).
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/api/include/torch/version.h>

namespace gpl::compat {

// 2.x made c10::optional an alias of std::optional and later dropped
// c10::nullopt.
#if TORCH_VERSION_MAJOR >= 2
inline constexpr auto kNone = std::nullopt;
#else
inline constexpr auto kNone = c10::nullopt;
#endif

// The grad-input half of a stride-1, padding-1 3x3 convolution: the kernel
// autograd itself would run, with the weight and bias gradients switched off.
inline at::Tensor conv3x3BackwardInput(const at::Tensor& gradOutput, const at::Tensor& input,
                                       const at::Tensor& weight) {
  return std::get<0>(at::convolution_backward(gradOutput, input, weight, at::OptionalIntArrayRef(), {1, 1}, {1, 1},
                                              {1, 1}, false, {0, 0}, 1, {true, false, false}));
}

inline at::Tensor avgPool2x2Backward(const at::Tensor& gradOutput, const at::Tensor& input) {
  return at::avg_pool2d_backward(gradOutput, input, {2, 2}, {2, 2}, {0, 0}, false, true, kNone);
}

// Starts a CUDA graph capture (Graph: at::cuda::CUDAGraph; `threadLocal`: the
// CUDA runtime's cudaStreamCaptureModeThreadLocal). 2.x captures
// thread-locally, so other threads (other losses, the user's own work) may go
// on launching meanwhile; 1.13 has only the global mode. A template, so that
// this header needs no CUDA headers.
template <typename Graph, typename Mode>
void captureBegin(Graph& graph, Mode threadLocal) {
#if TORCH_VERSION_MAJOR >= 2
  graph.capture_begin({0, 0}, threadLocal);
#else
  (void)threadLocal;
  graph.capture_begin();
#endif
}

}  // namespace gpl::compat
