// The one place where libtorch versions differ (Debian's 1.13 and the 2.x
// wheels).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/api/include/torch/version.h>

#include "max_pool3d_cpu.h"
#if TORCH_VERSION_MAJOR < 2
#include "huge_page_allocator.h"  // an at::Allocator as 1.x declares it
#endif

namespace perceptual::compat {

// 2.x made c10::optional an alias of std::optional and later dropped
// c10::nullopt.
#if TORCH_VERSION_MAJOR >= 2
inline constexpr auto kNone = std::nullopt;
#else
inline constexpr auto kNone = c10::nullopt;
#endif

// The grad-input half of a stride-1, padding-1 3x3 convolution: the kernel
// autograd itself would run, with the weight and bias gradients switched off.
// 3x3x3 for a volume.
inline at::Tensor conv3x3BackwardInput(const at::Tensor& gradOutput, const at::Tensor& input,
                                       const at::Tensor& weight) {
  const std::vector<int64_t> ones(static_cast<size_t>(input.dim() - 2), 1), zeros(ones.size(), 0);
  return std::get<0>(at::convolution_backward(gradOutput, input, weight, at::OptionalIntArrayRef(), ones, ones, ones,
                                              false, zeros, 1, {true, false, false}));
}

// A stride-1, padding-1 3x3 oneDNN convolution, with its ReLU when `relu`, and the weight as
// prepareOneDnnWeight keeps it. oneDnnChannelsLast(dims) says whether its activations (and dense
// weights) are channels-last or NC(D)HW; kPrepackedOneDnnWeights says which weights are reordered
// into oneDNN's own layout rather than by oneDNN on every call, and kOneDnnLayoutFollowsInput
// whether that layout is chosen for an input shape (perceptual::OneDnnWeights keeps one per shape).
//
// 2.x: channels-last, and all of them, each for the shape of its input: oneDNN's kernels choose
// their weight blocking by shape (on AVX2 CPUs 8 to 32 output channels, or none), and a weight
// packed for another shape is reordered again, blocked to blocked, on every call.
// mkldnn::_convolution_pointwise takes them with channels-last activations and runs the ReLU as a
// post-op.
//
// 1.13, images: channels-last. Its mkldnn_convolution takes a prepacked weight only with oneDNN's
// blocked activations, reordered in and out around the conv. That pays where the weight dwarfs
// the activations: the wide convs (Cin * Cout >= 256 * 512, the 512-channel blocks of VGG) at the
// sizes a loss sees. The narrower ones keep a dense channels-last weight.
// 1.13, volumes: NCDHW. Its conv copies a channels_last_3d input to NCDHW and its result back,
// but takes an NCDHW input beside a prepacked weight as it is: every volume weight is prepacked.
// Its reorder takes no input shape. The ReLU is always a pass of its own.
#if TORCH_VERSION_MAJOR >= 2
inline constexpr const char* kPrepackedOneDnnWeights = "all";
inline constexpr bool kOneDnnLayoutFollowsInput = true;
inline bool oneDnnChannelsLast(int64_t /*dims*/) { return true; }

inline at::Tensor prepareOneDnnWeight(const at::Tensor& channelsLastWeight, at::IntArrayRef inputShape) {
  static const auto reorder = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow("mkldnn::_reorder_convolution_weight", "")
                                  .typed<at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                    at::IntArrayRef, int64_t, at::OptionalIntArrayRef)>();
  const std::vector<int64_t> ones(static_cast<size_t>(channelsLastWeight.dim() - 2), 1);
  return reorder.call(channelsLastWeight, ones, ones, ones, 1, inputShape);
}

inline at::Tensor prepareOneDnnBias(const at::Tensor& bias, const at::Tensor& /*weight*/) { return bias; }

inline at::Tensor oneDnnConv3x3(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                bool relu) {
  static const auto conv =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_convolution_pointwise", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, at::IntArrayRef,
                            at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view,
                            c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>();
  // The post-op's scalars: none for a ReLU. A shared handle, not a list built per call.
  static const c10::List<std::optional<at::Scalar>> noScalars({std::nullopt});
  const std::vector<int64_t> ones(static_cast<size_t>(x.dim() - 2), 1);
  return conv.call(x, weight, bias, ones, ones, ones, 1, relu ? "relu" : "none", noScalars, "");
}
#else
inline constexpr const char* kPrepackedOneDnnWeights = "wide";
inline constexpr bool kOneDnnLayoutFollowsInput = false;
inline bool oneDnnChannelsLast(int64_t dims) { return dims == 4; }

inline bool prepacksOneDnnWeight(const at::Tensor& weight) {
  return weight.dim() == 5 || weight.size(0) * weight.size(1) >= 256 * 512;
}

inline at::Tensor prepareOneDnnWeight(const at::Tensor& weight, at::IntArrayRef /*inputShape*/) {
  if (!prepacksOneDnnWeight(weight)) return weight;
  const std::vector<int64_t> ones(static_cast<size_t>(weight.dim() - 2), 1);
  const at::Tensor dense = weight.contiguous().to_mkldnn();
  return weight.dim() == 5 ? at::mkldnn_reorder_conv3d_weight(dense, ones, ones, ones, 1)
                           : at::mkldnn_reorder_conv2d_weight(dense, ones, ones, ones, 1);
}

// A prepacked weight's conv takes its bias as a oneDNN tensor too.
inline at::Tensor prepareOneDnnBias(const at::Tensor& bias, const at::Tensor& weight) {
  return prepacksOneDnnWeight(weight) ? bias.to_mkldnn() : bias;
}

inline at::Tensor oneDnnConv3x3(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                bool relu) {
  const std::vector<int64_t> ones(static_cast<size_t>(x.dim() - 2), 1);
  at::Tensor y;
  if (weight.is_mkldnn() && x.dim() == 4) {
    // An NCHW result; the layers after it take any layout.
    y = at::mkldnn_convolution(x.to_mkldnn(), weight, bias, ones, ones, ones, 1).to_dense();
  } else {
    y = at::mkldnn_convolution(x, weight, bias, ones, ones, ones, 1);
  }
  return relu ? y.relu_() : y;
}
#endif

// libtorch 2.x's oneDNN gives wrong bfloat16 3-D convs (zeros or garbage, at 2.13) for an input of
// depth 1 with some channel counts (1 and 3 among them, prepacked weights or not); 1.13's does not.
inline bool oneDnnMisreadsVolume(const at::Tensor& x) {
  return TORCH_VERSION_MAJOR >= 2 && x.dim() == 5 && x.size(2) == 1 && x.scalar_type() == at::kBFloat16;
}

// 1.13's CPU 3-D max pool reads NCDHW volumes at a fraction of the memory's speed, and has no
// bfloat16 kernel: the package's own (max_pool3d_cpu.h) gives the same values and indices.
// It needs at::parallel_for to run in parallel: ATen's OpenMP loop is inlined, so only a build
// with -fopenmp (find-libtorch.js) has it.
#if TORCH_VERSION_MAJOR < 2 && (defined(_OPENMP) || !AT_PARALLEL_OPENMP)
inline constexpr bool kOwnMaxPool3d = true;
#else
inline constexpr bool kOwnMaxPool3d = false;
#endif
inline bool ownMaxPool3d(const at::Tensor& x) {
  return kOwnMaxPool3d && x.dim() == 5 && x.is_cpu() && at::isFloatingType(x.scalar_type());
}

// Whether libtorch's CPU buffers of 2 MiB and more are advised as transparent huge pages:
// PyTorch 2.2+ does it under THP_MEM_ALLOC_ENABLE=1, and 1.13, which predates it, through the
// package's allocator (huge_page_allocator.h) under the same setting. Off by default, as in
// PyTorch: a huge-page fault can stall in the kernel's compaction of fragmented memory.
// `requested`: THP_MEM_ALLOC_ENABLE=1 (ops::hugePagesRequested). Installed on the first call.
inline bool hugePageAllocator(bool requested) {
#if TORCH_VERSION_MAJOR < 2
  static const bool installed = requested && cpu::installHugePageAllocator();
  return installed;
#else
  return requested;
#endif
}

// CPU 3-D average pools have no bfloat16 kernel: they run in float32, which holds every bfloat16
// value exactly, and round back once.
inline bool poolInFloat(const at::Tensor& x) { return x.dim() == 5 && x.is_cpu() && x.scalar_type() == at::kBFloat16; }

// The 2x2 (2x2x2 for a volume) average pool's backward.
inline at::Tensor avgPoolBackward(const at::Tensor& gradOutput, const at::Tensor& input) {
  const std::vector<int64_t> twos(static_cast<size_t>(input.dim() - 2), 2), zeros(twos.size(), 0);
  if (input.dim() == 5) return at::avg_pool3d_backward(gradOutput, input, twos, twos, zeros, false, true, kNone);
  return at::avg_pool2d_backward(gradOutput, input, twos, twos, zeros, false, true, kNone);
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

}  // namespace perceptual::compat
