// The Tensor object: a tensor resident on its device, wrapped for JS.
#pragma once

#include <napi.h>

#include <cstdint>

#include "ops.h"

namespace perceptual {

class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function define(Napi::Env env);

  explicit NativeTensor(const Napi::CallbackInfo& info);
  ~NativeTensor() override { release(); }

  static Napi::Object wrap(Napi::Env env, ops::Tensor tensor);

  // nullptr when `value` is not one of ours.
  static NativeTensor* from(const Napi::Value& value);

  // Throws ERR_DISPOSED after dispose().
  const ops::Tensor& tensor() const;

  // Tensors alive in this process, for the leak tests.
  static int64_t live();

 private:
  static Napi::Value fromHost(const Napi::CallbackInfo& info);
  Napi::Value shape(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);
  Napi::Value toArray(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);
  void release();

  ops::Tensor tensor_;
};

}  // namespace perceptual
