// The tensor bridge: shapes, the dtype table, host TypedArrays <-> at::Tensor,
// the user's layout
// <-> the compute layout (NCHW in the compute dtype, on the device), and masks.
#pragma once

#include <ATen/core/Tensor.h>
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "enums.h"

namespace perceptual {

std::vector<int64_t> readShape(const Napi::Value& value);
Napi::Array writeShape(Napi::Env env, at::IntArrayRef sizes);
int64_t numelOf(const std::vector<int64_t>& shape);

// The one dtype table, read both ways: a name, its scalar type, and the
// TypedArray that holds it on the host (float16, bfloat16 and int64 have none
// and come back as Float32Array).
struct DtypeEntry {
  const char* name;
  at::ScalarType type;
  napi_typedarray_type array;
  bool hasArray;
};

inline constexpr DtypeEntry kDtypes[] = {
    {"float32", at::kFloat, napi_float32_array, true}, {"float64", at::kDouble, napi_float64_array, true},
    {"float16", at::kHalf, napi_float32_array, false}, {"bfloat16", at::kBFloat16, napi_float32_array, false},
    {"int32", at::kInt, napi_int32_array, true},       {"int64", at::kLong, napi_float32_array, false},
    {"uint8", at::kByte, napi_uint8_array, true},
};

at::ScalarType dtypeFromName(const std::string& name);
// c10's own name for a type outside the table.
std::string dtypeName(at::ScalarType type);
std::vector<std::string> dtypeNames();

// A host TypedArray as a tensor. `owned` copies it, so the caller may change
// its buffer as soon as the call returns (async jobs); otherwise it is
// borrowed. `pinned` copies it into page-locked memory, from which a CUDA
// upload is a non-blocking copy on the current stream.
at::Tensor fromTypedArray(const Napi::TypedArray& array, const std::vector<int64_t>& shape, bool owned,
                          bool pinned = false);

// Copies a tensor to a new TypedArray of its dtype's host type.
Napi::Value toHostArray(Napi::Env env, const at::Tensor& tensor);

// The user's [N, C, H, W] or [N, H, W, C] as a standard-strided NCHW tensor in
// `dtype` on `device`; on a CUDA device with `channelsLast`, in the
// channels-last memory format.
at::Tensor toCompute(const at::Tensor& x, Layout layout, at::Device device, at::ScalarType dtype,
                     bool channelsLast = false);

// Results go back like the input they derive from: its layout, device and
// dtype; multiplied by `mask` (in that layout, on the compute device) when one
// is given.
at::Tensor fromCompute(const at::Tensor& x, Layout layout, const at::Tensor& like, const at::Tensor& mask = {});

// x * mask (broadcast), in x's dtype and computed in the wider of the two:
// elements where the mask is 0 are set to 0, not multiplied, so NaN or Inf
// there do no harm.
at::Tensor applyMask(const at::Tensor& x, const at::Tensor& mask);

}  // namespace perceptual
