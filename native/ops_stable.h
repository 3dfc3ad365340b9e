// The op layer over libtorch's stable C ABI: every op is reached by name through
// torch_call_dispatcher, tensors are torch::stable::Tensor handles, and nothing here includes
// an ATen or c10 C++ header beyond what torch/headeronly and torch/csrc/stable pull in. Built
// with TORCH_TARGET_VERSION (the build sets 2.10), the one binary loads on every torch from the
// target on, CPU and CUDA builds alike.
//
// Three things the shims lack are looked up at run time in the loaded libtorch, checked before
// use, and described where they are used (runtime_symbols.h): a seeded CPU generator, the
// thread-count setters, and CUDA's device count.
#pragma once

#include <torch/csrc/inductor/aoti_torch/generated/c_shim_aten.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/stableivalue_conversions.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "runtime_symbols.h"

namespace perceptual::ops {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using torch::headeronly::MemoryFormat;

inline constexpr const char* kBackend = "stable";

// A failure inside libtorch, with its text where the loaded torch gives it (2.13 on).
struct LibtorchFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void failed(const char* what) {
  const char* text = runtime::exceptionText();
  throw LibtorchFailure(std::string(what) + (text && *text ? ": " + std::string(text) : " failed"));
}

namespace detail {

template <typename T>
StableIValue box(const T& value) {
  return torch::stable::detail::from(value);
}

// Calls op.overload with `args` boxed on a stack large enough for its `outputs`; returns the stack.
template <size_t Outputs, typename... Args>
std::array<StableIValue, (sizeof...(Args) > Outputs ? sizeof...(Args) : Outputs)> dispatch(const char* op,
                                                                                           const char* overload,
                                                                                           const Args&... args) {
  std::array<StableIValue, (sizeof...(Args) > Outputs ? sizeof...(Args) : Outputs)> stack{box(args)...};
  if (torch_call_dispatcher(op, overload, stack.data(), TORCH_ABI_VERSION) != AOTI_TORCH_SUCCESS) failed(op);
  return stack;
}

template <typename... Args>
Tensor call(const char* op, const char* overload, const Args&... args) {
  return torch::stable::detail::to<Tensor>(dispatch<1>(op, overload, args...)[0]);
}

// In-place ops hand back a new reference to their first argument: released here.
template <typename... Args>
void callInPlace(const char* op, const char* overload, const Args&... args) {
  (void)torch::stable::detail::to<Tensor>(dispatch<1>(op, overload, args...)[0]);
}

// libtorch's generated AOTI shims for CPU ops (aoti_torch_cpu_*): C functions that call the CPU
// kernel without the dispatcher's lookup by name and boxing of every argument, which costs a
// small step a few per cent (~100 calls, most of them convs). They are not among the stable
// shims, so each is looked up at run time, and the op goes by name where the torch lacks it.
// PL_STABLE_ABI_SHIMS=0 (checked by lib/loader.ts) sends them all by name, as such a torch would:
// test/parity/stable-abi-shims.test.ts holds the two routes to the same bits.
template <typename Fn>
Fn cpuShim(const char* name) {
  static const bool byNameOnly = [] {
    const char* setting = std::getenv("PL_STABLE_ABI_SHIMS");
    return setting && std::strcmp(setting, "0") == 0;
  }();
  return byNameOnly ? nullptr : runtime::lookup<Fn>(name);
}
// A shim's per-axis lists (stride, padding, dilation, kernel) for up to three spatial dims.
inline constexpr int64_t kOnes[3] = {1, 1, 1}, kZeros[3] = {0, 0, 0}, kTwos[3] = {2, 2, 2};
// Takes over a shim's output handle.
inline Tensor owned(AtenTensorHandle handle) { return Tensor(handle); }
inline void release(AtenTensorHandle handle) {
  if (handle) aoti_torch_delete_tensor_object(handle);
}

using Ints = std::vector<int64_t>;
// `value` once per spatial dim of an [N, C, *spatial] tensor: the kernel, stride and padding lists.
inline Ints perAxis(const Tensor& x, int64_t value) { return Ints(static_cast<size_t>(x.dim() - 2), value); }

// The dispatcher's stable stack cannot carry a Scalar argument (torch 2.13: "Not yet supported
// conversion from StableIValue to IValue for schema type: Scalar"), so scalars go as 0-d CPU
// tensors to the .Tensor overloads. ATen's kernels read any one-element CPU operand as a scalar
// in their compute type; the 0-d tensor is float64 for a float64 operand and float32 otherwise
// (the compute type of float32, float16 and bfloat16), so it neither promotes a 0-d float32
// operand to float64 nor rounds the value through float16: the Scalar overloads' values.
inline Tensor scalar(double value, ScalarType operand) {
  AtenTensorHandle handle = nullptr;
  const int64_t none = 0;
  int32_t dtype = operand == ScalarType::Float || operand == ScalarType::Half || operand == ScalarType::BFloat16
                      ? aoti_torch_dtype_float32()
                      : aoti_torch_dtype_float64();
  int32_t device = aoti_torch_device_type_cpu();
  if (aoti_torch_aten_full(&none, 0, value, &dtype, nullptr, &device, 0, nullptr, &handle) != AOTI_TORCH_SUCCESS) {
    failed("aten::full");
  }
  return Tensor(handle);
}

// self - alpha * other, through the generated shim that takes alpha as a double.
inline Tensor subtract(const Tensor& a, const Tensor& b, double alpha) {
  AtenTensorHandle out = nullptr;
  if (aoti_torch_aten_subtract_Tensor(a.get(), b.get(), alpha, &out) != AOTI_TORCH_SUCCESS) failed("aten::subtract");
  return Tensor(out);
}

}  // namespace detail

inline torch::stable::Device toStable(const Device& d) {
  return d.cuda ? torch::stable::Device(torch::headeronly::DeviceType::CUDA, static_cast<int8_t>(d.ordinal()))
                : torch::stable::Device(torch::headeronly::DeviceType::CPU);
}
inline Device deviceOf(const Tensor& t) { return t.is_cuda() ? Device{true, t.get_device_index()} : Device{}; }
// Channels-last for a 4-D or a 5-D (volume) tensor.
inline MemoryFormat format(bool channelsLast, int64_t dims) {
  if (!channelsLast) return MemoryFormat::Contiguous;
  return dims == 5 ? MemoryFormat::ChannelsLast3d : MemoryFormat::ChannelsLast;
}
inline Shape shapeOf(const Tensor& t) {
  const auto s = t.sizes();
  return Shape(s.begin(), s.end());
}
inline Shape stridesOf(const Tensor& t) {
  const auto s = t.strides();
  return Shape(s.begin(), s.end());
}

// ---------------------------------------------------------------- making and moving tensors

inline Tensor empty(const Shape& shape, ScalarType type, const Device& device, bool channelsLast = false) {
  return detail::call("aten::empty", "memory_format", shape, std::optional<ScalarType>(type),
                      std::optional<torch::headeronly::Layout>(), std::optional(toStable(device)),
                      std::optional<bool>(), std::optional(format(channelsLast, static_cast<int64_t>(shape.size()))));
}
inline Tensor emptyPinned(const Shape& shape, ScalarType type) {
  return detail::call("aten::empty", "memory_format", shape, std::optional<ScalarType>(type),
                      std::optional<torch::headeronly::Layout>(), std::optional<torch::stable::Device>(),
                      std::optional<bool>(true), std::optional<MemoryFormat>());
}
inline Tensor zeros(const Shape& shape, ScalarType type, const Device& device) {
  return detail::call("aten::zeros", "", shape, std::optional<ScalarType>(type),
                      std::optional<torch::headeronly::Layout>(), std::optional(toStable(device)),
                      std::optional<bool>());
}
inline Tensor zerosLike(const Tensor& t) {
  return detail::call("aten::zeros_like", "", t, std::optional<ScalarType>(),
                      std::optional<torch::headeronly::Layout>(), std::optional<torch::stable::Device>(),
                      std::optional<bool>(), std::optional<MemoryFormat>());
}
// A CPU tensor over `data`, borrowed: it lives as long as the caller keeps `data`.
inline Tensor fromBlob(void* data, const Shape& shape, ScalarType type) {
  Shape strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * std::max<int64_t>(shape[i], 1);
  return torch::stable::from_blob(data, shape, strides, toStable(kCpu), type);
}
// Copies are synchronous here: with no stream of its own, a result is complete when it returns.
// A tensor already of that dtype and device is returned itself, as aten::to returns it, without
// the dispatcher's round trip (a step makes dozens of such calls).
inline Tensor to(const Tensor& t, ScalarType type) {
  if (t.scalar_type() == type) return t;
  return detail::call("aten::to", "dtype", t, type, false, false, std::optional<MemoryFormat>());
}
inline Tensor to(const Tensor& t, const Device& device, ScalarType type, bool /*nonBlocking*/ = false) {
  if (t.scalar_type() == type && deviceOf(t) == device) return t;
  return detail::call("aten::to", "device", t, toStable(device), type, false, false, std::optional<MemoryFormat>());
}
inline Tensor toDevice(const Tensor& t, const Device& device, bool /*nonBlocking*/ = false) {
  return to(t, device, t.scalar_type());
}
namespace detail {
// Whether `t` has exactly the strides that aten::empty gives its sizes in that layout (channels-
// last: C innermost, then the spatial dims from the last): then it is contiguous in that layout,
// and the dispatcher need not be asked. Other strides (zero sizes among them) are left to ATen.
inline bool hasLayoutStrides(const Tensor& t, bool channelsLast) {
  const auto sizes = t.sizes();
  const auto strides = t.strides();
  const int64_t dims = t.dim();
  if (channelsLast && dims != 4 && dims != 5) return false;
  std::vector<int64_t> order;  // innermost first
  if (channelsLast) {
    order.push_back(1);
    for (int64_t d = dims - 1; d >= 2; --d) order.push_back(d);
    order.push_back(0);
  } else {
    for (int64_t d = dims - 1; d >= 0; --d) order.push_back(d);
  }
  int64_t expected = 1;
  for (int64_t d : order) {
    if (sizes[d] == 0 || strides[d] != expected) return false;
    expected *= sizes[d];
  }
  return true;
}
}  // namespace detail

inline bool isContiguous(const Tensor& t, bool channelsLast = false) {
  if (detail::hasLayoutStrides(t, channelsLast)) return true;
  return torch::stable::detail::to<bool>(
      detail::dispatch<1>("aten::is_contiguous", "memory_format", t, format(channelsLast, t.dim()))[0]);
}
// aten::contiguous returns the tensor itself where it is contiguous already.
inline Tensor contiguous(const Tensor& t, bool channelsLast = false) {
  if (detail::hasLayoutStrides(t, channelsLast)) return t;
  return detail::call("aten::contiguous", "", t, format(channelsLast, t.dim()));
}
inline Tensor clone(const Tensor& t, bool channelsLast = false) {
  return detail::call("aten::clone", "", t, std::optional(format(channelsLast, t.dim())));
}
inline void copyInto(Tensor& dst, const Tensor& src, bool /*nonBlocking*/ = false) {
  detail::callInPlace("aten::copy_", "", dst, src, false);
}
inline void* dataPtr(const Tensor& t) { return t.mutable_data_ptr(); }

// ---------------------------------------------------------------- views

inline Tensor reshape(const Tensor& t, const Shape& shape) { return detail::call("aten::reshape", "", t, shape); }
inline Tensor permute(const Tensor& t, const Shape& dims) { return detail::call("aten::permute", "", t, dims); }
inline Tensor flip(const Tensor& t, const Shape& dims) { return detail::call("aten::flip", "", t, dims); }
inline Tensor transpose(const Tensor& t, int64_t a, int64_t b) {
  return detail::call("aten::transpose", "int", t, a, b);
}
inline Tensor unsqueeze(const Tensor& t, int64_t dim) { return detail::call("aten::unsqueeze", "", t, dim); }
inline Tensor select(const Tensor& t, int64_t dim, int64_t index) {
  return detail::call("aten::select", "int", t, dim, index);
}

// ---------------------------------------------------------------- arithmetic and reductions

// a + b as a - (-1) * b: ATen's kernel computes a + 1 * b, exactly a + b.
inline Tensor add(const Tensor& a, const Tensor& b) { return detail::subtract(a, b, -1.0); }
inline Tensor sub(const Tensor& a, const Tensor& b) { return detail::subtract(a, b, 1.0); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return detail::call("aten::mul", "Tensor", a, b); }
inline Tensor mul(const Tensor& a, double s) {
  return detail::call("aten::mul", "Tensor", a, detail::scalar(s, a.scalar_type()));
}
// No in-place add without a Scalar alpha: the sum takes a's place.
inline void addInPlace(Tensor& a, const Tensor& b) { a = add(a, b); }
inline void mulInPlace(Tensor& a, double s) {
  detail::callInPlace("aten::mul_", "Tensor", a, detail::scalar(s, a.scalar_type()));
}
inline void mulInPlace(Tensor& a, const Tensor& b) { detail::callInPlace("aten::mul_", "Tensor", a, b); }
inline void divInPlace(Tensor& a, double s) {
  detail::callInPlace("aten::div_", "Tensor", a, detail::scalar(s, a.scalar_type()));
}
inline void signInPlace(Tensor& a) { detail::callInPlace("aten::sign_", "", a); }
inline void clampInPlace(Tensor& a, double lo, double hi) {
  detail::callInPlace("aten::clamp_", "Tensor", a, std::optional<Tensor>(detail::scalar(lo, a.scalar_type())),
                      std::optional<Tensor>(detail::scalar(hi, a.scalar_type())));
}
inline Tensor sum(const Tensor& t) { return detail::call("aten::sum", "", t, std::optional<ScalarType>()); }
inline Tensor sum(const Tensor& t, int64_t dim, bool keepdim) {
  return detail::call("aten::sum", "dim_IntList", t, std::optional<Shape>(Shape{dim}), keepdim,
                      std::optional<ScalarType>());
}
inline Tensor mean(const Tensor& t, int64_t dim) {
  return detail::call("aten::mean", "dim", t, std::optional<Shape>(Shape{dim}), false, std::optional<ScalarType>());
}
inline Tensor bmm(const Tensor& a, const Tensor& b) { return detail::call("aten::bmm", "", a, b); }
inline Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0) {
  return detail::call("aten::stack", "", tensors, dim);
}
inline Tensor softmax(const Tensor& t, int64_t dim) {
  return detail::call("aten::softmax", "int", t, dim, std::optional<ScalarType>());
}
inline Tensor sigmoid(const Tensor& t) { return detail::call("aten::sigmoid", "", t); }
inline Tensor oneHot(const Tensor& labels, int64_t classes) {
  return detail::call("aten::one_hot", "", labels, classes);
}

// ---------------------------------------------------------------- comparisons and masks

inline Tensor eq(const Tensor& t, double v) {
  return detail::call("aten::eq", "Tensor", t, detail::scalar(v, t.scalar_type()));
}
inline Tensor ne(const Tensor& t, double v) {
  return detail::call("aten::ne", "Tensor", t, detail::scalar(v, t.scalar_type()));
}
inline Tensor lt(const Tensor& t, double v) {
  return detail::call("aten::lt", "Tensor", t, detail::scalar(v, t.scalar_type()));
}
inline Tensor ge(const Tensor& t, double v) {
  return detail::call("aten::ge", "Tensor", t, detail::scalar(v, t.scalar_type()));
}
inline Tensor logicalAnd(const Tensor& a, const Tensor& b) { return detail::call("aten::logical_and", "", a, b); }
inline Tensor logicalOr(const Tensor& a, const Tensor& b) { return detail::call("aten::logical_or", "", a, b); }
inline Tensor logicalNot(const Tensor& a) { return detail::call("aten::logical_not", "", a); }
inline Tensor maskedFill(const Tensor& t, const Tensor& mask, double v) {
  return detail::call("aten::masked_fill", "Tensor", t, mask, detail::scalar(v, t.scalar_type()));
}
inline void maskedFillInPlace(Tensor& t, const Tensor& mask, double v) {
  detail::callInPlace("aten::masked_fill_", "Tensor", t, mask, detail::scalar(v, t.scalar_type()));
}
inline Tensor maskedSelect(const Tensor& t, const Tensor& mask) {
  return detail::call("aten::masked_select", "", t, mask);
}
inline Tensor any(const Tensor& t) { return detail::call("aten::any", "", t); }
inline Tensor allFinite(const Tensor& t) {
  return detail::call("aten::all", "", detail::call("aten::isfinite", "", t));
}

// One element, read on the host (aten::item gives a Scalar, which the stable stack cannot carry).
inline double itemDouble(const Tensor& t) {
  const Tensor host = to(t, kCpu, ScalarType::Double);
  double value = 0;
  std::memcpy(&value, host.const_data_ptr(), sizeof value);
  return value;
}
inline bool itemBool(const Tensor& t) { return itemDouble(t) != 0; }
inline int64_t itemInt(const Tensor& t) {
  const Tensor host = to(t, kCpu, ScalarType::Long);
  int64_t value = 0;
  std::memcpy(&value, host.const_data_ptr(), sizeof value);
  return value;
}

inline bool isFloating(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half || t == ScalarType::BFloat16;
}
// torch.promote_types for the pairs the package meets (a floating input and a floating mask).
inline ScalarType promote(ScalarType a, ScalarType b) {
  if (a == b) return a;
  if (a == ScalarType::Double || b == ScalarType::Double) return ScalarType::Double;
  return ScalarType::Float;
}
inline std::string typeName(ScalarType t) { return torch::headeronly::toString(t); }

// ---------------------------------------------------------------- the network's ops

// The network's ops take [N, C, H, W] images and [N, C, D, H, W] volumes alike.

inline Tensor conv(const Tensor& x, const Tensor& w, const Tensor& b) {
  const detail::Ints ones = detail::perAxis(x, 1);
  return detail::call("aten::convolution", "", x, w, std::optional<Tensor>(b), ones, ones, ones, false,
                      detail::perAxis(x, 0), static_cast<int64_t>(1));
}
inline Tensor convBackwardInput(const Tensor& gradOutput, const Tensor& input, const Tensor& weight) {
  using Backward =
      AOTITorchError (*)(AtenTensorHandle, AtenTensorHandle, AtenTensorHandle, const int64_t**, int64_t, const int64_t*,
                         int64_t, const int64_t*, int64_t, const int64_t*, int64_t, int32_t, const int64_t*, int64_t,
                         int64_t, const int32_t*, int64_t, AtenTensorHandle*, AtenTensorHandle*, AtenTensorHandle*);
  static const auto backward = detail::cpuShim<Backward>("aoti_torch_cpu_convolution_backward");
  const int64_t axes = input.dim() - 2;
  if (backward && input.is_cpu() && axes <= 3) {
    using detail::kOnes, detail::kZeros;
    const int32_t mask[3] = {1, 0, 0};
    AtenTensorHandle gradInput = nullptr, gradWeight = nullptr, gradBias = nullptr;
    if (backward(gradOutput.get(), input.get(), weight.get(), nullptr, 0, kOnes, axes, kOnes, axes, kOnes, axes, 0,
                 kZeros, axes, 1, mask, 3, &gradInput, &gradWeight, &gradBias) != AOTI_TORCH_SUCCESS) {
      failed("aten::convolution_backward");
    }
    detail::release(gradWeight);
    detail::release(gradBias);
    return detail::owned(gradInput);
  }
  // bool[3] crosses as a header-only array (a std::vector<bool> has no data()).
  const std::array<bool, 3> mask{true, false, false};
  const detail::Ints ones = detail::perAxis(input, 1);
  auto stack = detail::dispatch<3>("aten::convolution_backward", "", gradOutput, input, weight, std::optional<Shape>(),
                                   ones, ones, ones, false, detail::perAxis(input, 0), static_cast<int64_t>(1),
                                   torch::headeronly::HeaderOnlyArrayRef<bool>(mask.data(), mask.size()));
  Tensor gradInput = torch::stable::detail::to<Tensor>(stack[0]);
  (void)torch::stable::detail::to<Tensor>(stack[1]);
  (void)torch::stable::detail::to<Tensor>(stack[2]);
  return gradInput;
}
inline Tensor relu(const Tensor& x) { return detail::call("aten::relu", "", x); }
inline Tensor reluInPlace(Tensor& x) {
  detail::callInPlace("aten::relu_", "", x);
  return x;
}
namespace detail {
// Whether `t`'s elements fill its storage from its data pointer without gaps or overlaps, in any
// order of dimensions (contiguous, channels-last, ...): then two such tensors of equal sizes and
// strides can be walked as flat arrays, element i of one beside element i of the other.
inline bool isDense(const Tensor& t) {
  const auto sizes = t.sizes();
  const auto strides = t.strides();
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size), the size-1 dims left out
  for (size_t i = 0; i < sizes.size(); i++) {
    if (sizes[i] != 1) dims.emplace_back(strides[i], sizes[i]);
  }
  std::sort(dims.begin(), dims.end());
  int64_t expected = 1;
  for (const auto& [stride, size] : dims) {
    if (stride != expected) return false;
    expected *= size;
  }
  return true;
}
inline bool sameDenseLayout(const Tensor& a, const Tensor& b) {
  return a.sizes().equals(b.sizes()) && a.strides().equals(b.strides()) && isDense(a);
}
// threshold_backward's selection, element by element: 0 where `zeroes(output)`, written as a
// select so that it vectorizes.
template <typename T, typename Zeroes>
void zeroWhere(Tensor& grad, const Tensor& output, Zeroes zeroes) {
  T* __restrict g = static_cast<T*>(grad.mutable_data_ptr());
  const T* __restrict out = static_cast<const T*>(output.const_data_ptr());
  // ATen's grain for elementwise kernels (at::internal::GRAIN_SIZE).
  torch::stable::parallel_for(0, grad.numel(), 32768, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) g[i] = zeroes(out[i]) ? T{} : g[i];
  });
}
}  // namespace detail

// threshold_backward(g, out, 0) takes a Scalar, which the stable stack cannot carry. On the CPU
// the selection is a loop of its own over both buffers, on libtorch's intra-op threads: through
// the dispatcher it took two passes (aten::le into a fresh bool tensor, then masked_fill_'s
// scalar loop) and 10% of a bfloat16 step. Elsewhere (CUDA, layouts that differ) it is that
// le + masked_fill_.
inline void reluBackwardInPlace(Tensor& grad, const Tensor& output) {
  if (grad.is_cpu() && output.is_cpu() && grad.scalar_type() == output.scalar_type() &&
      detail::sameDenseLayout(grad, output)) {
    // 0 where the output is <= 0; a NaN output keeps its gradient.
    switch (grad.scalar_type()) {
      case ScalarType::Float: return detail::zeroWhere<float>(grad, output, [](float v) { return v <= 0; });
      case ScalarType::Double: return detail::zeroWhere<double>(grad, output, [](double v) { return v <= 0; });
      case ScalarType::BFloat16:
        // On the bits: <= 0 is the sign bit set or +0 (as an int16, <= 0), a NaN (a magnitude
        // above infinity's 0x7f80) excepted.
        return detail::zeroWhere<uint16_t>(
            grad, output, [](uint16_t bits) { return static_cast<int16_t>(bits) <= 0 && (bits & 0x7fff) <= 0x7f80; });
      default: break;
    }
  }
  const Tensor zero = detail::scalar(0.0, output.scalar_type());
  detail::callInPlace("aten::masked_fill_", "Tensor", grad, detail::call("aten::le", "Tensor", output, zero),
                      detail::scalar(0.0, grad.scalar_type()));
}
// 2x2 (2x2x2) pools, stride 2.
inline std::pair<Tensor, Tensor> maxPool(const Tensor& x) {
  using Pool = AOTITorchError (*)(AtenTensorHandle, const int64_t*, int64_t, const int64_t*, int64_t, const int64_t*,
                                  int64_t, const int64_t*, int64_t, int32_t, AtenTensorHandle*, AtenTensorHandle*);
  static const auto pool2d = detail::cpuShim<Pool>("aoti_torch_cpu_max_pool2d_with_indices");
  static const auto pool3d = detail::cpuShim<Pool>("aoti_torch_cpu_max_pool3d_with_indices");
  const bool volume = x.dim() == 5;
  const char* op = volume ? "aten::max_pool3d_with_indices" : "aten::max_pool2d_with_indices";
  const auto pool = volume ? pool3d : pool2d;
  if (pool && x.is_cpu()) {
    using detail::kOnes, detail::kTwos, detail::kZeros;
    const int64_t axes = x.dim() - 2;
    AtenTensorHandle pooled = nullptr, indices = nullptr;
    if (pool(x.get(), kTwos, axes, kTwos, axes, kZeros, axes, kOnes, axes, 0, &pooled, &indices) !=
        AOTI_TORCH_SUCCESS) {
      failed(op);
    }
    Tensor out = detail::owned(pooled);
    return {out, detail::owned(indices)};
  }
  const detail::Ints twos = detail::perAxis(x, 2);
  auto stack = detail::dispatch<2>(op, "", x, twos, twos, detail::perAxis(x, 0), detail::perAxis(x, 1), false);
  Tensor pooled = torch::stable::detail::to<Tensor>(stack[0]);
  return {pooled, torch::stable::detail::to<Tensor>(stack[1])};
}
inline Tensor maxPoolBackward(const Tensor& gradOutput, const Tensor& input, const Tensor& indices) {
  using Backward = AOTITorchError (*)(AtenTensorHandle, AtenTensorHandle, const int64_t*, int64_t, const int64_t*,
                                      int64_t, const int64_t*, int64_t, const int64_t*, int64_t, int32_t,
                                      AtenTensorHandle, AtenTensorHandle*);
  static const auto backward2d = detail::cpuShim<Backward>("aoti_torch_cpu_max_pool2d_with_indices_backward");
  static const auto backward3d = detail::cpuShim<Backward>("aoti_torch_cpu_max_pool3d_with_indices_backward");
  const bool volume = input.dim() == 5;
  const char* op = volume ? "aten::max_pool3d_with_indices_backward" : "aten::max_pool2d_with_indices_backward";
  const auto backward = volume ? backward3d : backward2d;
  if (backward && input.is_cpu()) {
    using detail::kOnes, detail::kTwos, detail::kZeros;
    const int64_t axes = input.dim() - 2;
    AtenTensorHandle gradInput = nullptr;
    if (backward(gradOutput.get(), input.get(), kTwos, axes, kTwos, axes, kZeros, axes, kOnes, axes, 0, indices.get(),
                 &gradInput) != AOTI_TORCH_SUCCESS) {
      failed(op);
    }
    return detail::owned(gradInput);
  }
  const detail::Ints twos = detail::perAxis(input, 2);
  return detail::call(op, "", gradOutput, input, twos, twos, detail::perAxis(input, 0), detail::perAxis(input, 1),
                      false, indices);
}
// The CPU's 3-D average pool has no bfloat16 kernel (2.13): it runs in float32, which holds every
// bfloat16 value exactly, and rounds back once.
inline bool avgPoolInFloat(const Tensor& x) {
  return x.dim() == 5 && x.is_cpu() && x.scalar_type() == ScalarType::BFloat16;
}
inline Tensor avgPool(const Tensor& x) {
  if (avgPoolInFloat(x)) return to(avgPool(to(x, ScalarType::Float)), ScalarType::BFloat16);
  const detail::Ints twos = detail::perAxis(x, 2);
  return detail::call(x.dim() == 5 ? "aten::avg_pool3d" : "aten::avg_pool2d", "", x, twos, twos, detail::perAxis(x, 0),
                      false, true, std::optional<int64_t>());
}
inline Tensor avgPoolBackward(const Tensor& gradOutput, const Tensor& input) {
  if (avgPoolInFloat(input)) {
    return to(avgPoolBackward(to(gradOutput, ScalarType::Float), to(input, ScalarType::Float)), ScalarType::BFloat16);
  }
  const detail::Ints twos = detail::perAxis(input, 2);
  return detail::call(input.dim() == 5 ? "aten::avg_pool3d_backward" : "aten::avg_pool2d_backward", "", gradOutput,
                      input, twos, twos, detail::perAxis(input, 0), false, true, std::optional<int64_t>());
}
inline Tensor mseLoss(const Tensor& a, const Tensor& b, Reduce r) {
  return detail::call("aten::mse_loss", "", a, b, static_cast<int64_t>(r));
}
inline Tensor l1Loss(const Tensor& a, const Tensor& b, Reduce r) {
  return detail::call("aten::l1_loss", "", a, b, static_cast<int64_t>(r));
}
inline Tensor smoothL1Loss(const Tensor& a, const Tensor& b, Reduce r) {
  return detail::call("aten::smooth_l1_loss", "", a, b, static_cast<int64_t>(r), 1.0);
}

// ---------------------------------------------------------------- oneDNN on the CPU

// mkldnn::_reorder_convolution_weight and mkldnn::_convolution_pointwise, reached by name as the
// 2.x exact build reaches them: weights reordered for their input's shape (compat.h says why),
// the ReLU a post-op.
inline bool oneDnnLayoutFollowsInput() { return true; }
inline Tensor prepareOneDnnWeight(const Tensor& channelsLastWeight, const Shape& inputShape) {
  const detail::Ints ones = detail::perAxis(channelsLastWeight, 1);
  return detail::call("mkldnn::_reorder_convolution_weight", "", channelsLastWeight, ones, ones, ones,
                      static_cast<int64_t>(1), std::optional<Shape>(inputShape));
}
inline Tensor prepareOneDnnBias(const Tensor& bias, const Tensor& /*weight*/) { return bias; }
inline Tensor oneDnnConv(const Tensor& x, const Tensor& w, const Tensor& bias, bool relu) {
  // Through its AOTI shim (see detail::cpuShim), by name where the torch lacks it.
  using Pointwise = AOTITorchError (*)(AtenTensorHandle, AtenTensorHandle, AtenTensorHandle*, const int64_t*, int64_t,
                                       const int64_t*, int64_t, const int64_t*, int64_t, int64_t, const char*,
                                       const double**, int64_t, const char**, AtenTensorHandle*);
  static const auto pointwise = detail::cpuShim<Pointwise>("aoti_torch_cpu_mkldnn__convolution_pointwise");
  const int64_t axes = x.dim() - 2;
  if (pointwise && axes <= 3) {
    using detail::kOnes;
    AtenTensorHandle biasHandle = bias.defined() ? bias.get() : nullptr;
    const double* noScalar[1] = {nullptr};  // the post-op's scalars: one None, as the exact build
    const char* noAlgorithm = "";
    AtenTensorHandle out = nullptr;
    if (pointwise(x.get(), w.get(), bias.defined() ? &biasHandle : nullptr, kOnes, axes, kOnes, axes, kOnes, axes, 1,
                  relu ? "relu" : "none", noScalar, 1, &noAlgorithm, &out) != AOTI_TORCH_SUCCESS) {
      failed("mkldnn::_convolution_pointwise");
    }
    return detail::owned(out);
  }
  static const std::vector<std::optional<double>> noScalars{std::nullopt};
  const detail::Ints ones = detail::perAxis(x, 1);
  return detail::call("mkldnn::_convolution_pointwise", "", x, w,
                      bias.defined() ? std::optional<Tensor>(bias) : std::optional<Tensor>(), ones, ones, ones,
                      static_cast<int64_t>(1), std::string(relu ? "relu" : "none"), noScalars,
                      std::optional<std::string>(std::string()));
}
// Whether the loaded libtorch has oneDNN's ops: one tiny reorder, tried once.
inline bool hasOneDnn() {
  static const bool has = [] {
    try {
      (void)prepareOneDnnWeight(contiguous(zeros({1, 1, 3, 3}, ScalarType::Float, kCpu), true), {1, 1, 3, 3});
      return true;
    } catch (const LibtorchFailure&) {
      return false;
    }
  }();
  return has;
}
inline const char* prepackedOneDnnWeights() { return "all"; }
inline bool oneDnnChannelsLast(int64_t /*dims*/) { return true; }
// oneDNN's bfloat16 3-D convs are wrong (zeros or garbage, torch 2.13) for an input of depth 1 with
// some channel counts (1 and 3 among them): the caller computes those in float32.
inline bool oneDnnMisreadsVolume(const Tensor& x) {
  return x.dim() == 5 && x.size(2) == 1 && x.scalar_type() == ScalarType::BFloat16;
}

// ---------------------------------------------------------------- random weights

// torch.Generator().manual_seed(seed) on the CPU, drawn by the loaded torch's own kernels, so the
// weights are those of that torch on this CPU bit for bit (see runtime_symbols.h).
class CpuGenerator {
 public:
  explicit CpuGenerator(uint64_t seed) : generator_(runtime::CpuGenerator::seeded(seed)) {}
  void normal(Tensor& t, double mean, double std) {
    AtenGeneratorHandle handle = generator_.handle();
    AtenTensorHandle out = nullptr;
    if (runtime::normalFunctional()(t.get(), mean, std, &handle, &out) != AOTI_TORCH_SUCCESS) {
      failed("aten::normal_functional");
    }
    t = Tensor(out);
  }
  void uniform(Tensor& t, double from, double to) {
    AtenGeneratorHandle handle = generator_.handle();
    AtenTensorHandle out = nullptr;
    if (runtime::uniform()(t.get(), from, to, &handle, &out) != AOTI_TORCH_SUCCESS) failed("aten::uniform");
    t = Tensor(out);
  }

 private:
  runtime::CpuGenerator generator_;
};

// ---------------------------------------------------------------- the runtime

// Whether libtorch's large CPU buffers are advised as transparent huge pages: every torch this
// binary loads on (>= 2.10) does it itself under THP_MEM_ALLOC_ENABLE=1.
inline bool hugePageAllocator() { return hugePagesRequested(); }
inline void setNumThreads(int n) { runtime::setNumThreads(n); }
inline int numThreads() { return static_cast<int>(torch::stable::get_num_threads()); }
inline std::string parallelInfo() { return runtime::parallelInfo(); }
inline void initThreadsHere() { runtime::initThreadsHere(); }

// The stable ABI has no inference mode: grad mode off is the nearest (nothing here requires a
// gradient, so autograd records nothing either way; off, it does not even look).
class InferenceGuard {
 public:
  InferenceGuard() : previous_(aoti_torch_grad_mode_is_enabled()) { aoti_torch_grad_mode_set_enabled(false); }
  ~InferenceGuard() { aoti_torch_grad_mode_set_enabled(previous_); }
  InferenceGuard(const InferenceGuard&) = delete;
  InferenceGuard& operator=(const InferenceGuard&) = delete;

 private:
  bool previous_;
};

inline bool hasCuda() { return runtime::cudaDeviceCount() > 0; }
inline int cudaDeviceCount() { return runtime::cudaDeviceCount(); }
// The loaded torch's version is discovery's to tell (lib/libtorch.ts); this binary knows its target.
inline std::string torchVersion() { return ""; }

inline bool libtorchError(const std::exception_ptr& error, std::string& message, bool& outOfMemory) {
  try {
    std::rethrow_exception(error);
  } catch (const LibtorchFailure& e) {
    message = e.what();
    outOfMemory = message.find("out of memory") != std::string::npos ||
                  message.find("can't allocate memory") != std::string::npos;
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace perceptual::ops
