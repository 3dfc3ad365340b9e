#include "tensor.h"

#include <atomic>

#include "bridge.h"
#include "cuda.h"
#include "env.h"
#include "errors.h"

namespace perceptual {
namespace {

std::atomic<int64_t> liveTensors{0};

const napi_type_tag kTensorTag = {0x6a1f0c3b2d5e4f71ULL, 0x9b8c7d6e5f4a3b2cULL};

}  // namespace

Napi::Function NativeTensor::define(Napi::Env env) {
  return DefineClass(
      env, "NativeTensor",
      {StaticMethod<&NativeTensor::fromHost>("fromHost"), InstanceAccessor<&NativeTensor::shape>("shape"),
       InstanceAccessor<&NativeTensor::device>("device"), InstanceAccessor<&NativeTensor::dtype>("dtype"),
       InstanceAccessor<&NativeTensor::disposed>("disposed"), InstanceMethod<&NativeTensor::toArray>("toArray"),
       InstanceMethod<&NativeTensor::dispose>("dispose")});
}

NativeTensor::NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
  info.This().As<Napi::Object>().TypeTag(&kTensorTag);
}

Napi::Object NativeTensor::wrap(Napi::Env env, ops::Tensor tensor) {
  Napi::Object object = addonData(env).tensorClass.New({});
  NativeTensor* self = Unwrap(object);
  self->tensor_ = std::move(tensor);
  ++liveTensors;
  return object;
}

NativeTensor* NativeTensor::from(const Napi::Value& value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kTensorTag)) return nullptr;
  return Unwrap(value.As<Napi::Object>());
}

const ops::Tensor& NativeTensor::tensor() const {
  if (!tensor_.defined()) throw Error(ErrorCode::Disposed, "this Tensor has been disposed");
  return tensor_;
}

int64_t NativeTensor::live() { return liveTensors.load(); }

// args: (data, shape, device)
Napi::Value NativeTensor::fromHost(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const auto array = info[0].As<Napi::TypedArray>();
    const ops::Device device = ops::Device::parse(info[2].As<Napi::String>().Utf8Value());
    cuda::requireDevice(device);
    ops::Tensor host = fromTypedArray(array, readShape(info[1]), device.is_cpu(), device.is_cuda());
    // A non-blocking upload on the default stream; every loss's stream waits
    // for that stream first.
    return wrap(info.Env(), device.is_cpu() ? host : ops::toDevice(host, device, true));
  });
}

Napi::Value NativeTensor::shape(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return writeShape(info.Env(), ops::shapeOf(tensor())); });
}

Napi::Value NativeTensor::device(const Napi::CallbackInfo& info) {
  return guarded(info.Env(),
                 [&]() -> Napi::Value { return Napi::String::New(info.Env(), ops::deviceOf(tensor()).str()); });
}

Napi::Value NativeTensor::dtype(const Napi::CallbackInfo& info) {
  return guarded(info.Env(),
                 [&]() -> Napi::Value { return Napi::String::New(info.Env(), dtypeName(tensor().scalar_type())); });
}

Napi::Value NativeTensor::disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !tensor_.defined());
}

Napi::Value NativeTensor::toArray(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return toHostArray(info.Env(), tensor()); });
}

Napi::Value NativeTensor::dispose(const Napi::CallbackInfo& info) {
  release();
  return info.Env().Undefined();
}

void NativeTensor::release() {
  if (tensor_.defined()) --liveTensors;
  tensor_ = ops::Tensor();
}

}  // namespace perceptual
