#include "bridge.h"

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
    PL_CHECK(d >= 0 && d == static_cast<double>(static_cast<int64_t>(d)), "bad dimension ", d);
    shape.push_back(static_cast<int64_t>(d));
  }
  return shape;
}

Napi::Array writeShape(Napi::Env env, const ops::Shape& sizes) {
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

ops::ScalarType dtypeFromName(const std::string& name) {
  for (const DtypeEntry& entry : kDtypes) {
    if (name == entry.name) return entry.type;
  }
  throw Error(ErrorCode::Libtorch, "unknown dtype \"" + name + "\"");
}

std::string dtypeName(ops::ScalarType type) {
  for (const DtypeEntry& entry : kDtypes) {
    if (entry.type == type) return entry.name;
  }
  return ops::typeName(type);
}

std::vector<std::string> dtypeNames() {
  std::vector<std::string> names;
  for (const DtypeEntry& entry : kDtypes) names.emplace_back(entry.name);
  return names;
}

namespace {

ops::ScalarType typedArrayScalar(napi_typedarray_type array) {
  for (const DtypeEntry& entry : kDtypes) {
    if (entry.hasArray && entry.array == array) return entry.type;
  }
  throw Error(ErrorCode::Dtype, "unsupported typed array");
}

// The host type of a tensor's dtype: the table's TypedArray, else Float32Array.
const DtypeEntry& hostEntry(ops::ScalarType type) {
  for (const DtypeEntry& entry : kDtypes) {
    if (entry.type == type && entry.hasArray) return entry;
  }
  return kDtypes[0];
}

bool standardStrides(const ops::Tensor& t) {
  int64_t expected = 1;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    if (t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

}  // namespace

ops::Tensor fromTypedArray(const Napi::TypedArray& array, const std::vector<int64_t>& shape, bool owned, bool pinned) {
  const ops::ScalarType type = typedArrayScalar(array.TypedArrayType());
  // The one check native code must make itself: never read past the buffer.
  PL_CHECK(static_cast<int64_t>(array.ElementLength()) == numelOf(shape), "buffer holds ", array.ElementLength(),
           " elements but the shape needs ", numelOf(shape));
  // napi_get_typedarray_info gives the data pointer of any backing store,
  // SharedArrayBuffer included (Napi::TypedArray::ArrayBuffer() refuses a
  // SharedArrayBuffer).
  void* raw = nullptr;
  NAPI_THROW_IF_FAILED(array.Env(),
                       napi_get_typedarray_info(array.Env(), array, nullptr, nullptr, &raw, nullptr, nullptr),
                       ops::Tensor());
  ops::Tensor view = ops::fromBlob(raw, shape, type);
  if (pinned) {
    ops::Tensor staged = ops::emptyPinned(shape, type);
    if (view.numel() > 0) {
      std::memcpy(ops::dataPtr(staged), raw, static_cast<size_t>(view.numel()) * view.element_size());
    }
    return staged;
  }
  return owned ? ops::clone(view) : view;
}

Napi::Value toHostArray(Napi::Env env, const ops::Tensor& tensor) {
  const DtypeEntry& entry = hostEntry(tensor.scalar_type());
  const ops::Tensor host = ops::contiguous(ops::to(tensor, ops::kCpu, entry.type));
  const size_t n = static_cast<size_t>(host.numel());
  const size_t bytes = n * host.element_size();
  auto copy = [&](auto array) {
    if (bytes) std::memcpy(array.Data(), ops::dataPtr(host), bytes);
    return array;
  };
  switch (entry.array) {
    case napi_int32_array: return copy(Napi::Int32Array::New(env, n));
    case napi_uint8_array: return copy(Napi::Uint8Array::New(env, n));
    case napi_float64_array: return copy(Napi::Float64Array::New(env, n));
    default: return copy(Napi::Float32Array::New(env, n));
  }
}

namespace {

// [N, *spatial, C] to [N, C, *spatial], or back.
ops::Shape channelsFirstOrder(int64_t dims) {
  ops::Shape order{0, dims - 1};
  for (int64_t d = 1; d + 1 < dims; ++d) order.push_back(d);
  return order;
}
ops::Shape channelsLastOrder(int64_t dims) {
  ops::Shape order{0};
  for (int64_t d = 2; d < dims; ++d) order.push_back(d);
  order.push_back(1);
  return order;
}

}  // namespace

ops::Tensor toCompute(const ops::Tensor& x, Layout layout, ops::Device device, ops::ScalarType dtype,
                      bool channelsLast) {
  PL_CHECK(x.dim() == 4 || x.dim() == 5, "expected a 4-D or 5-D tensor, got ", x.dim(), " dimensions");
  const ops::Tensor nchw = layout == Layout::NHWC ? ops::permute(x, channelsFirstOrder(x.dim())) : x;
  // The CPU's oneDNN path runs channels-last: an NHWC input goes in as it is, with no permute.
  if (layout == Layout::NHWC && device.is_cpu() &&
      (dtype == ops::ScalarType::Float || dtype == ops::ScalarType::BFloat16) && ops::hasOneDnn()) {
    return ops::contiguous(ops::to(nchw, dtype), true);
  }
  // Non-blocking: from pinned host memory the upload is queued on the loss's
  // stream.
  if (device.is_cuda() && channelsLast) return ops::contiguous(ops::to(nchw, device, dtype, true), true);
  ops::Tensor out = ops::contiguous(ops::to(nchw, device, dtype, true));
  // A permuted tensor with size-1 dims counts as contiguous with channels-last
  // strides, which sends conv2d to another kernel: give it the strides of a
  // plain NCHW tensor.
  if (!standardStrides(out)) out = ops::clone(out);
  return out;
}

ops::Tensor fromCompute(const ops::Tensor& x, Layout layout, const ops::Tensor& like, const ops::Tensor& mask) {
  ops::Tensor laid = layout == Layout::NHWC ? ops::permute(x, channelsLastOrder(x.dim())) : x;
  // On the compute device, in the result's dtype, as the mask was applied to
  // the input.
  if (mask.defined()) laid = applyMask(ops::to(laid, like.scalar_type()), mask);
  if (laid.is_cuda() && like.is_cpu()) {
    // Down through pinned memory: a full-speed copy, then one wait for the
    // loss's stream.
    ops::Tensor host = ops::emptyPinned(ops::shapeOf(laid), like.scalar_type());
    ops::copyInto(host, laid, true);
    cuda::synchronize();
    return host;
  }
  return ops::contiguous(ops::to(laid, ops::deviceOf(like), like.scalar_type()));
}

ops::Tensor applyMask(const ops::Tensor& x, const ops::Tensor& mask) {
  const ops::ScalarType type =
      ops::isFloating(mask.scalar_type()) ? ops::promote(x.scalar_type(), mask.scalar_type()) : x.scalar_type();
  ops::Tensor product = ops::mul(ops::to(x, type), ops::to(mask, type));
  ops::maskedFillInPlace(product, ops::eq(mask, 0), 0);
  return ops::to(product, x.scalar_type());
}

}  // namespace perceptual
