#include "bridge.h"

#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "cuda_device.h"

namespace perceptual {

std::vector<int64_t> readShape(const Napi::Value& value) {
  std::vector<int64_t> shape;
  const auto array = value.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    const double d = array.Get(i).As<Napi::Number>().DoubleValue();
    TORCH_CHECK(d >= 0 && d == static_cast<double>(static_cast<int64_t>(d)), "bad dimension ", d);
    shape.push_back(static_cast<int64_t>(d));
  }
  return shape;
}

Napi::Array writeShape(Napi::Env env, at::IntArrayRef sizes) {
  auto array = Napi::Array::New(env, sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) array.Set(i, Napi::Number::New(env, static_cast<double>(sizes[i])));
  return array;
}

int64_t numelOf(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    // In order, as torch computes a storage size: [2^40, 2^40, 0] overflows
    // before the 0.
    if (d != 0 && n > INT64_MAX / d) throw Error(ErrorCode::Shape, "shape overflows: its size cannot be computed");
    n *= d;
  }
  // Contiguous strides multiply the sizes after each dim, a 0 counting as 1: libtorch 2.x refuses
  // [0, 2^40, 2^40] ("Stride calculation overflowed") where 1.13 did not check. The same answer
  // on every libtorch: refuse it here.
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 1;) {
    const int64_t d = std::max<int64_t>(shape[i], 1);
    if (stride > INT64_MAX / d) throw Error(ErrorCode::Shape, "shape overflows: its strides cannot be computed");
    stride *= d;
  }
  return n;
}

at::ScalarType dtypeFromName(const std::string& name) {
  for (const DtypeEntry& entry : kDtypes) {
    if (name == entry.name) return entry.type;
  }
  throw Error(ErrorCode::Libtorch, "unknown dtype \"" + name + "\"");
}

std::string dtypeName(at::ScalarType type) {
  for (const DtypeEntry& entry : kDtypes) {
    if (entry.type == type) return entry.name;
  }
  return c10::toString(type);
}

std::vector<std::string> dtypeNames() {
  std::vector<std::string> names;
  for (const DtypeEntry& entry : kDtypes) names.emplace_back(entry.name);
  return names;
}

namespace {

at::ScalarType typedArrayScalar(napi_typedarray_type array) {
  for (const DtypeEntry& entry : kDtypes) {
    if (entry.hasArray && entry.array == array) return entry.type;
  }
  throw Error(ErrorCode::Dtype, "unsupported typed array");
}

// The host type of a tensor's dtype: the table's TypedArray, else Float32Array.
const DtypeEntry& hostEntry(at::ScalarType type) {
  for (const DtypeEntry& entry : kDtypes) {
    if (entry.type == type && entry.hasArray) return entry;
  }
  return kDtypes[0];
}

bool standardStrides(const at::Tensor& t) {
  int64_t expected = 1;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    if (t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

}  // namespace

at::Tensor fromTypedArray(const Napi::TypedArray& array, const std::vector<int64_t>& shape, bool owned, bool pinned) {
  const at::ScalarType type = typedArrayScalar(array.TypedArrayType());
  // The one check native code must make itself: never read past the buffer.
  TORCH_CHECK(static_cast<int64_t>(array.ElementLength()) == numelOf(shape), "buffer holds ", array.ElementLength(),
              " elements but the shape needs ", numelOf(shape));
  // napi_get_typedarray_info gives the data pointer of any backing store,
  // SharedArrayBuffer included (Napi::TypedArray::ArrayBuffer() refuses a
  // SharedArrayBuffer).
  void* raw = nullptr;
  NAPI_THROW_IF_FAILED(array.Env(),
                       napi_get_typedarray_info(array.Env(), array, nullptr, nullptr, &raw, nullptr, nullptr),
                       at::Tensor());
  at::Tensor view = at::from_blob(raw, shape, at::TensorOptions().dtype(type));
  if (pinned) {
    at::Tensor staged = at::empty(shape, at::TensorOptions().dtype(type).pinned_memory(true));
    if (view.numel() > 0) std::memcpy(staged.data_ptr(), raw, static_cast<size_t>(view.numel()) * view.element_size());
    return staged;
  }
  return owned ? view.clone() : view;
}

Napi::Value toHostArray(Napi::Env env, const at::Tensor& tensor) {
  const DtypeEntry& entry = hostEntry(tensor.scalar_type());
  const at::Tensor host = tensor.to(at::kCPU, entry.type).contiguous();
  const size_t n = static_cast<size_t>(host.numel());
  const size_t bytes = n * host.element_size();
  auto copy = [&](auto array) {
    if (bytes) std::memcpy(array.Data(), host.data_ptr(), bytes);
    return array;
  };
  switch (entry.array) {
    case napi_int32_array: return copy(Napi::Int32Array::New(env, n));
    case napi_uint8_array: return copy(Napi::Uint8Array::New(env, n));
    case napi_float64_array: return copy(Napi::Float64Array::New(env, n));
    default: return copy(Napi::Float32Array::New(env, n));
  }
}

at::Tensor toCompute(const at::Tensor& x, Layout layout, at::Device device, at::ScalarType dtype, bool channelsLast) {
  TORCH_CHECK(x.dim() == 4, "expected a 4-D tensor, got ", x.dim(), " dimensions");
  const at::Tensor nchw = layout == Layout::NHWC ? x.permute({0, 3, 1, 2}) : x;
  // The CPU's oneDNN path runs channels-last: an NHWC input goes in as it is, with no permute.
  if (layout == Layout::NHWC && device.is_cpu() && (dtype == at::kFloat || dtype == at::kBFloat16) && at::hasMKLDNN()) {
    return nchw.to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
  }
  // Non-blocking: from pinned host memory the upload is queued on the loss's
  // stream.
  if (device.is_cuda() && channelsLast) {
    return nchw.to(device, dtype, true).contiguous(at::MemoryFormat::ChannelsLast);
  }
  at::Tensor out = nchw.to(device, dtype, true).contiguous();
  // A permuted tensor with size-1 dims counts as contiguous with channels-last
  // strides, which sends conv2d to another kernel: give it the strides of a
  // plain NCHW tensor.
  if (!standardStrides(out)) out = out.clone(at::MemoryFormat::Contiguous);
  return out;
}

at::Tensor fromCompute(const at::Tensor& x, Layout layout, const at::Tensor& like, const at::Tensor& mask) {
  at::Tensor laid = layout == Layout::NHWC ? x.permute({0, 2, 3, 1}) : x;
  // On the compute device, in the result's dtype, as the mask was applied to
  // the input.
  if (mask.defined()) laid = applyMask(laid.to(like.scalar_type()), mask);
  if (laid.is_cuda() && like.device().is_cpu()) {
    // Down through pinned memory: a full-speed copy, then one wait for the
    // loss's stream.
    at::Tensor host = at::empty(laid.sizes(), like.options().pinned_memory(true));
    host.copy_(laid, true);
    cuda::synchronize();
    return host;
  }
  return laid.to(like.device(), like.scalar_type()).contiguous();
}

at::Tensor applyMask(const at::Tensor& x, const at::Tensor& mask) {
  const at::ScalarType type = c10::isFloatingType(mask.scalar_type())
                                  ? c10::promoteTypes(x.scalar_type(), mask.scalar_type())
                                  : x.scalar_type();
  at::Tensor product = x.to(type).mul(mask.to(type));
  product.masked_fill_(mask.eq(0), 0);
  return product.to(x.scalar_type());
}

}  // namespace perceptual
