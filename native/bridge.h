// The tensor bridge: shapes, the dtype table, host TypedArrays <-> tensors,
// the user's layout
// <-> the compute layout (NCHW in the compute dtype, on the device), and masks.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "enums.h"
#include "ops.h"

namespace perceptual {

std::vector<int64_t> readShape(const Napi::Value& value);
Napi::Array writeShape(Napi::Env env, const ops::Shape& sizes);
int64_t numelOf(const std::vector<int64_t>& shape);

// The one dtype table, read both ways: a name, its scalar type, and the
// TypedArray that holds it on the host (float16, bfloat16 and int64 have none
// and come back as Float32Array).
struct DtypeEntry {
  const char* name;
  ops::ScalarType type;
  napi_typedarray_type array;
  bool hasArray;
};

inline constexpr DtypeEntry kDtypes[] = {
    {"float32", ops::ScalarType::Float, napi_float32_array, true},
    {"float64", ops::ScalarType::Double, napi_float64_array, true},
    {"float16", ops::ScalarType::Half, napi_float32_array, false},
    {"bfloat16", ops::ScalarType::BFloat16, napi_float32_array, false},
    {"int32", ops::ScalarType::Int, napi_int32_array, true},
    {"int64", ops::ScalarType::Long, napi_float32_array, false},
    {"uint8", ops::ScalarType::Byte, napi_uint8_array, true},
};

ops::ScalarType dtypeFromName(const std::string& name);
// c10's own name for a type outside the table.
std::string dtypeName(ops::ScalarType type);
std::vector<std::string> dtypeNames();

// A host TypedArray as a tensor. `owned` copies it, so the caller may change
// its buffer as soon as the call returns (async jobs); otherwise it is
// borrowed. `pinned` copies it into page-locked memory, from which a CUDA
// upload is a non-blocking copy on the current stream.
ops::Tensor fromTypedArray(const Napi::TypedArray& array, const std::vector<int64_t>& shape, bool owned,
                           bool pinned = false);

// Copies a tensor to a new TypedArray of its dtype's host type.
Napi::Value toHostArray(Napi::Env env, const ops::Tensor& tensor);

// The user's [N, C, H, W] or [N, H, W, C] as a standard-strided NCHW tensor in
// `dtype` on `device`; on a CUDA device with `channelsLast`, in the
// channels-last memory format.
ops::Tensor toCompute(const ops::Tensor& x, Layout layout, ops::Device device, ops::ScalarType dtype,
                      bool channelsLast = false);

// Results go back like the input they derive from: its layout, device and
// dtype; multiplied by `mask` (in that layout, on the compute device) when one
// is given.
ops::Tensor fromCompute(const ops::Tensor& x, Layout layout, const ops::Tensor& like,
                        const ops::Tensor& mask = ops::Tensor());

// x * mask (broadcast), in x's dtype and computed in the wider of the two:
// elements where the mask is 0 are set to 0, not multiplied, so NaN or Inf
// there do no harm.
ops::Tensor applyMask(const ops::Tensor& x, const ops::Tensor& mask);

}  // namespace perceptual
