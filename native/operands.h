// What a loss call reads from JS: its operands (host TypedArrays, Tensors, prepared targets), the
// optional mask and the layout; and the prepared-target object (NativeTarget). Included by loss.cc
// alone.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "bridge.h"
#include "enums.h"
#include "env.h"
#include "errors.h"
#include "perceptual.h"
#include "tensor.h"

namespace perceptual {

inline const napi_type_tag kTargetTag = {0x1c2d3e4f5a6b7c8dULL, 0x8d7c6b5a4f3e2d1cULL};

// ---------------------------------------------------------------- prepared targets

inline uint64_t nextId() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}

struct PreparedState {
  const uint64_t id = nextId();  // never reused, unlike an address: part of a CUDA graph's key
  at::Tensor input;              // NCHW, compute dtype, on the device: kept to redo the
                                 // features after reseed()
  std::vector<int64_t> userShape;
  Layout layout = Layout::NCHW;
  uint64_t owner = 0;
  std::mutex mutex;
  std::shared_ptr<const TargetFeatures> features;

  std::shared_ptr<const TargetFeatures> current(const Network& net, const Config& config) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!features || features->generation != net.generation) {
      features = std::make_shared<const TargetFeatures>(prepareTarget(net, config, input));
    }
    return features;
  }
};

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

// One tensor-like argument, resolved on the JS thread.
struct Operand {
  at::Tensor tensor;  // in the user's layout, dtype and device
  bool host = false;  // came from a TypedArray: results go back as TypedArrays
  std::shared_ptr<PreparedState> prepared;
};

// `device` is the loss's: host data for a CUDA loss is staged in pinned memory.
inline Operand readOperand(const Napi::Value& value, const Napi::Value& shape, bool owned, const at::Device& device) {
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
inline at::Tensor readMask(const Napi::Value& value, const Napi::Value& shape, bool owned, const at::Device& device) {
  if (value.IsUndefined() || value.IsNull()) return {};
  Operand operand = readOperand(value, shape, owned, device);
  if (operand.prepared) throw Error(ErrorCode::Shape, "a mask cannot be a prepared target");
  return operand.tensor.reshape(readShape(shape));
}

inline Layout readLayout(const Napi::Value& value) {
  return fromName(kLayouts, value.As<Napi::String>().Utf8Value(), "layout");
}

}  // namespace perceptual
