// What a loss call reads from JS: its operands (host TypedArrays, Tensors, prepared targets), the
// optional mask and the layout; and the prepared-target object (NativeTarget). Included by loss.cc
// alone.
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "bridge.h"
#include "enums.h"
#include "env.h"
#include "errors.h"
#include "perceptual.h"
#include "step.h"
#include "tensor.h"

namespace perceptual {

inline const napi_type_tag kTargetTag = {0x1c2d3e4f5a6b7c8dULL, 0x8d7c6b5a4f3e2d1cULL};

// ---------------------------------------------------------------- prepared targets

class NativeTarget : public Napi::ObjectWrap<NativeTarget> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(
        env, "NativeTarget",
        {InstanceAccessor<&NativeTarget::shape>("shape"), InstanceAccessor<&NativeTarget::disposed>("disposed"),
         InstanceMethod<&NativeTarget::dispose>("dispose")});
  }

  explicit NativeTarget(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTarget>(info) {
    info.This().As<Napi::Object>().TypeTag(&kTargetTag);
  }

  static Napi::Object wrap(Napi::Env env, std::shared_ptr<PreparedState> state) {
    Napi::Object object = addonData(env).targetClass.New({});
    Unwrap(object)->state_ = std::move(state);
    return object;
  }

  static NativeTarget* from(const Napi::Value& value) {
    if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kTargetTag)) return nullptr;
    return Unwrap(value.As<Napi::Object>());
  }

  std::shared_ptr<PreparedState> state() const {
    if (!state_) throw Error(ErrorCode::Disposed, "this prepared target has been disposed");
    return state_;
  }

 private:
  Napi::Value shape(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value { return writeShape(info.Env(), state()->userShape); });
  }
  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !state_); }
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    state_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<PreparedState> state_;
};

// ---------------------------------------------------------------- operands

// `device` is the loss's: host data for a CUDA loss is staged in pinned memory.
inline Operand readOperand(const Napi::Value& value, const Napi::Value& shape, bool owned, const ops::Device& device) {
  Operand operand;
  if (NativeTensor* t = NativeTensor::from(value)) {
    operand.tensor = t->tensor();
  } else if (NativeTarget* p = NativeTarget::from(value)) {
    operand.prepared = p->state();
  } else if (value.IsTypedArray()) {
    operand.tensor = fromTypedArray(value.As<Napi::TypedArray>(), readShape(shape), owned, device.is_cuda());
    operand.host = true;
  } else {
    throw Error(ErrorCode::Shape, "expected a Tensor, a prepared target or a TypedArray");
  }
  return operand;
}

// An optional mask: undefined, or a Tensor or TypedArray with the shape it
// takes in the call's layout (broadcast over the channels when it has one value
// per pixel).
inline Tensor readMask(const Napi::Value& value, const Napi::Value& shape, bool owned, const ops::Device& device) {
  if (value.IsUndefined() || value.IsNull()) return Tensor();
  Operand operand = readOperand(value, shape, owned, device);
  if (operand.prepared) throw Error(ErrorCode::Shape, "a mask cannot be a prepared target");
  return ops::reshape(operand.tensor, readShape(shape));
}

inline Layout readLayout(const Napi::Value& value) {
  return fromName(kLayouts, value.As<Napi::String>().Utf8Value(), "layout");
}

}  // namespace perceptual
