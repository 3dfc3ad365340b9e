// The op layer over ATen, called directly: inline, so the exact-flavour builds pay nothing for
// the layer. Version differences between libtorch 1.13 and 2.x stay in compat.h.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/api/include/torch/version.h>

#include <exception>
#include <string>
#include <utility>

#include "compat.h"

namespace perceptual::ops {

using Tensor = at::Tensor;
using ScalarType = at::ScalarType;

inline constexpr const char* kBackend = "aten";

inline at::Device toAten(const Device& d) {
  return d.cuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(d.index)) : at::Device(at::kCPU);
}
inline Device deviceOf(const Tensor& t) {
  return t.is_cuda() ? Device{true, static_cast<int>(t.get_device())} : Device{};
}
// Channels-last for a 4-D or a 5-D (volume) tensor.
inline at::MemoryFormat format(bool channelsLast, int64_t dims) {
  if (!channelsLast) return at::MemoryFormat::Contiguous;
  return dims == 5 ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::ChannelsLast;
}
// `value` once per spatial dim of an [N, C, *spatial] tensor: the kernel, stride and padding lists.
inline std::vector<int64_t> perAxis(const Tensor& x, int64_t value) {
  return std::vector<int64_t>(static_cast<size_t>(x.dim() - 2), value);
}

// ---------------------------------------------------------------- making and moving tensors

inline Tensor empty(const Shape& shape, ScalarType type, const Device& device, bool channelsLast = false) {
  return at::empty(shape, at::TensorOptions()
                              .dtype(type)
                              .device(toAten(device))
                              .memory_format(format(channelsLast, static_cast<int64_t>(shape.size()))));
}
inline Tensor emptyPinned(const Shape& shape, ScalarType type) {
  return at::empty(shape, at::TensorOptions().dtype(type).pinned_memory(true));
}
inline Tensor zeros(const Shape& shape, ScalarType type, const Device& device) {
  return at::zeros(shape, at::TensorOptions().dtype(type).device(toAten(device)));
}
inline Tensor zerosLike(const Tensor& t) { return at::zeros_like(t); }
// A CPU tensor over `data`, borrowed: it lives as long as the caller keeps `data`.
inline Tensor fromBlob(void* data, const Shape& shape, ScalarType type) {
  return at::from_blob(data, shape, at::TensorOptions().dtype(type));
}
inline Tensor to(const Tensor& t, ScalarType type) { return t.to(type); }
inline Tensor to(const Tensor& t, const Device& device, ScalarType type, bool nonBlocking = false) {
  return t.to(toAten(device), type, nonBlocking);
}
inline Tensor toDevice(const Tensor& t, const Device& device, bool nonBlocking = false) {
  return t.to(toAten(device), t.scalar_type(), nonBlocking);
}
inline Tensor contiguous(const Tensor& t, bool channelsLast = false) {
  return t.contiguous(format(channelsLast, t.dim()));
}
inline bool isContiguous(const Tensor& t, bool channelsLast = false) {
  return t.is_contiguous(format(channelsLast, t.dim()));
}
inline Tensor clone(const Tensor& t, bool channelsLast = false) { return t.clone(format(channelsLast, t.dim())); }
inline void copyInto(Tensor& dst, const Tensor& src, bool nonBlocking = false) { dst.copy_(src, nonBlocking); }
inline void* dataPtr(const Tensor& t) { return t.data_ptr(); }
inline Shape shapeOf(const Tensor& t) { return t.sizes().vec(); }
inline Shape stridesOf(const Tensor& t) { return t.strides().vec(); }

// ---------------------------------------------------------------- views

inline Tensor reshape(const Tensor& t, const Shape& shape) { return t.reshape(shape); }
inline Tensor permute(const Tensor& t, const Shape& dims) { return t.permute(dims); }
inline Tensor flip(const Tensor& t, const Shape& dims) { return t.flip(dims); }
inline Tensor transpose(const Tensor& t, int64_t a, int64_t b) { return t.transpose(a, b); }
inline Tensor unsqueeze(const Tensor& t, int64_t dim) { return t.unsqueeze(dim); }
inline Tensor select(const Tensor& t, int64_t dim, int64_t index) { return t.select(dim, index); }

// ---------------------------------------------------------------- arithmetic and reductions

inline Tensor add(const Tensor& a, const Tensor& b) { return a + b; }
inline Tensor sub(const Tensor& a, const Tensor& b) { return a - b; }
inline Tensor mul(const Tensor& a, const Tensor& b) { return a * b; }
inline Tensor mul(const Tensor& a, double s) { return a.mul(s); }
inline void addInPlace(Tensor& a, const Tensor& b) { a.add_(b); }
inline void mulInPlace(Tensor& a, double s) { a.mul_(s); }
inline void mulInPlace(Tensor& a, const Tensor& b) { a.mul_(b); }
inline void divInPlace(Tensor& a, double s) { a.div_(s); }
inline void signInPlace(Tensor& a) { a.sign_(); }
inline void clampInPlace(Tensor& a, double lo, double hi) { a.clamp_(lo, hi); }
inline Tensor sum(const Tensor& t) { return t.sum(); }
inline Tensor sum(const Tensor& t, int64_t dim, bool keepdim) { return t.sum(dim, keepdim); }
inline Tensor mean(const Tensor& t, int64_t dim) { return t.mean(dim); }
inline Tensor bmm(const Tensor& a, const Tensor& b) { return at::bmm(a, b); }
inline Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0) { return at::stack(tensors, dim); }
inline Tensor softmax(const Tensor& t, int64_t dim) { return at::softmax(t, dim); }
inline Tensor sigmoid(const Tensor& t) { return at::sigmoid(t); }
inline Tensor oneHot(const Tensor& labels, int64_t classes) { return at::one_hot(labels, classes); }

// ---------------------------------------------------------------- comparisons and masks

inline Tensor eq(const Tensor& t, double v) { return t.eq(v); }
inline Tensor ne(const Tensor& t, double v) { return t.ne(v); }
inline Tensor lt(const Tensor& t, double v) { return t.lt(v); }
inline Tensor ge(const Tensor& t, double v) { return t.ge(v); }
inline Tensor logicalAnd(const Tensor& a, const Tensor& b) { return at::logical_and(a, b); }
inline Tensor logicalOr(const Tensor& a, const Tensor& b) { return at::logical_or(a, b); }
inline Tensor logicalNot(const Tensor& a) { return a.logical_not(); }
inline Tensor maskedFill(const Tensor& t, const Tensor& mask, double v) { return t.masked_fill(mask, v); }
inline void maskedFillInPlace(Tensor& t, const Tensor& mask, double v) { t.masked_fill_(mask, v); }
inline Tensor maskedSelect(const Tensor& t, const Tensor& mask) { return t.masked_select(mask); }
// 0-d bool tensors, left on the device until read.
inline Tensor any(const Tensor& t) { return t.any(); }
inline Tensor allFinite(const Tensor& t) { return at::isfinite(t).all(); }
// One element, read on the host.
inline bool itemBool(const Tensor& t) { return t.item<bool>(); }
inline int64_t itemInt(const Tensor& t) { return t.item<int64_t>(); }
inline double itemDouble(const Tensor& t) { return t.item<double>(); }

inline bool isFloating(ScalarType t) { return c10::isFloatingType(t); }
inline ScalarType promote(ScalarType a, ScalarType b) { return c10::promoteTypes(a, b); }
inline std::string typeName(ScalarType t) { return c10::toString(t); }

// ---------------------------------------------------------------- the network's ops

// The network's ops take [N, C, H, W] images and [N, C, D, H, W] volumes alike.

// 3x3 (3x3x3) convolution, stride 1, padding 1, with bias.
inline Tensor conv(const Tensor& x, const Tensor& w, const Tensor& b) {
  const auto ones = perAxis(x, 1);
  return at::convolution(x, w, b, ones, ones, ones, false, perAxis(x, 0), 1);
}
inline Tensor convBackwardInput(const Tensor& gradOutput, const Tensor& input, const Tensor& weight) {
  return compat::conv3x3BackwardInput(gradOutput, input, weight);
}
inline Tensor relu(const Tensor& x) { return at::relu(x); }
inline Tensor reluInPlace(Tensor& x) { return at::relu_(x); }
// The gradient through a ReLU, written over `grad` (0 where output <= 0): no new buffer of an
// activation's size.
inline void reluBackwardInPlace(Tensor& grad, const Tensor& output) {
  at::threshold_backward_out(grad, grad, output, 0);
}
// 2x2 (2x2x2) pools, stride 2.
inline std::pair<Tensor, Tensor> maxPool(const Tensor& x) {
  if (compat::ownMaxPool3d(x)) return cpu::maxPool2x2x2(x);
  const auto twos = perAxis(x, 2);
  auto [pooled, indices] =
      x.dim() == 5 ? at::max_pool3d_with_indices(x, twos, twos) : at::max_pool2d_with_indices(x, twos, twos);
  return {pooled, indices};
}
inline Tensor maxPoolBackward(const Tensor& gradOutput, const Tensor& input, const Tensor& indices) {
  if (compat::ownMaxPool3d(input)) return cpu::maxPool2x2x2Backward(gradOutput, input, indices);
  const auto twos = perAxis(input, 2), zeros = perAxis(input, 0), ones = perAxis(input, 1);
  return input.dim() == 5
             ? at::max_pool3d_with_indices_backward(gradOutput, input, twos, twos, zeros, ones, false, indices)
             : at::max_pool2d_with_indices_backward(gradOutput, input, twos, twos, zeros, ones, false, indices);
}
inline Tensor avgPool(const Tensor& x) {
  if (compat::poolInFloat(x)) return avgPool(x.to(at::kFloat)).to(x.scalar_type());
  const auto twos = perAxis(x, 2);
  return x.dim() == 5 ? at::avg_pool3d(x, twos, twos) : at::avg_pool2d(x, twos, twos);
}
inline Tensor avgPoolBackward(const Tensor& gradOutput, const Tensor& input) {
  if (compat::poolInFloat(input)) {
    return compat::avgPoolBackward(gradOutput.to(at::kFloat), input.to(at::kFloat)).to(input.scalar_type());
  }
  return compat::avgPoolBackward(gradOutput, input);
}
inline Tensor mseLoss(const Tensor& a, const Tensor& b, Reduce r) {
  return at::mse_loss(a, b, static_cast<int64_t>(r));
}
inline Tensor l1Loss(const Tensor& a, const Tensor& b, Reduce r) { return at::l1_loss(a, b, static_cast<int64_t>(r)); }
inline Tensor smoothL1Loss(const Tensor& a, const Tensor& b, Reduce r) {
  return at::smooth_l1_loss(a, b, static_cast<int64_t>(r), 1.0);
}

// ---------------------------------------------------------------- oneDNN on the CPU

inline bool hasOneDnn() { return at::hasMKLDNN(); }
// Whether oneDNN's conv of `x` must not be trusted (compat.h says when); the caller computes it in float32.
inline bool oneDnnMisreadsVolume(const Tensor& x) { return compat::oneDnnMisreadsVolume(x); }
inline const char* prepackedOneDnnWeights() { return compat::kPrepackedOneDnnWeights; }
inline bool oneDnnChannelsLast(int64_t dims) { return compat::oneDnnChannelsLast(dims); }
inline bool oneDnnLayoutFollowsInput() { return compat::kOneDnnLayoutFollowsInput; }
// `weight`: dense, channels-last where oneDnnChannelsLast; `inputShape`: the conv's input.
inline Tensor prepareOneDnnWeight(const Tensor& weight, const Shape& inputShape) {
  return compat::prepareOneDnnWeight(weight, inputShape);
}
// The bias beside a dense `weight` once prepared.
inline Tensor prepareOneDnnBias(const Tensor& bias, const Tensor& weight) {
  return compat::prepareOneDnnBias(bias, weight);
}
// `bias` may be undefined (the backward convs have none).
inline Tensor oneDnnConv(const Tensor& x, const Tensor& w, const Tensor& bias, bool relu) {
  return bias.defined() ? compat::oneDnnConv3x3(x, w, bias, relu) : compat::oneDnnConv3x3(x, w, compat::kNone, relu);
}

// ---------------------------------------------------------------- random weights

// torch.Generator().manual_seed(seed) on the CPU: PyTorch's own generator and kernels.
class CpuGenerator {
 public:
  explicit CpuGenerator(uint64_t seed) : gen_(at::detail::createCPUGenerator(seed)) {}
  void normal(Tensor& t, double mean, double std) { t.normal_(mean, std, gen_); }
  void uniform(Tensor& t, double from, double to) { t.uniform_(from, to, gen_); }

 private:
  at::Generator gen_;
};

// ---------------------------------------------------------------- the runtime

// Whether libtorch's large CPU buffers are advised as transparent huge pages (compat.h); the
// addon calls it once at load, before any tensor exists.
inline bool hugePageAllocator() { return compat::hugePageAllocator(hugePagesRequested()); }
inline void setNumThreads(int n) { at::set_num_threads(n); }
inline int numThreads() { return at::get_num_threads(); }
inline std::string parallelInfo() { return at::get_parallel_info(); }
// A libuv pool thread picks up setNumThreads() once it calls this.
inline void initThreadsHere() { at::init_num_threads(); }

// No autograd bookkeeping while it lives.
using InferenceGuard = c10::InferenceMode;

inline bool hasCuda() { return at::hasCUDA(); }
inline int cudaDeviceCount() { return at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0; }
// The libtorch this binary was built against (the exact builds load only that one).
inline std::string torchVersion() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

// Whether `error` is one of libtorch's (c10::Error), and if so what it says and whether an
// allocator ran out of memory.
inline bool libtorchError(const std::exception_ptr& error, std::string& message, bool& outOfMemory) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    message = e.what_without_backtrace();
    // The CPU allocator reports exhaustion as a plain c10::Error.
    outOfMemory = dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr ||
                  message.find("can't allocate memory") != std::string::npos ||
                  message.find("out of memory") != std::string::npos;
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace perceptual::ops
