#include "errors.h"

#include <new>

#include "cuda_device.h"
#include "env.h"

namespace perceptual {

Failure describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return {e.code, e.what()};
  } catch (const std::bad_alloc&) {
    return {ErrorCode::OutOfMemory, "out of memory: a native allocation failed"};
  } catch (const std::exception& e) {
    std::string message;
    bool outOfMemory = false;
    if (ops::libtorchError(error, message, outOfMemory)) {
      if (outOfMemory) {
        // Hand the cached blocks back, so that the next (smaller) step fits.
        cuda::emptyCache();
        return {ErrorCode::OutOfMemory, "out of memory: " + message};
      }
      return {ErrorCode::Libtorch, "libtorch: " + message};
    }
    return {ErrorCode::Libtorch, std::string("native error: ") + e.what()};
  } catch (...) {
    return {ErrorCode::Libtorch, "unknown native error"};
  }
}

Napi::Value makeError(Napi::Env env, const Failure& failure) {
  AddonData& data = addonData(env);
  const auto code = Napi::String::New(env, errorCodeName(failure.code));
  const auto message = Napi::String::New(env, failure.message);
  if (!data.errorClass.IsEmpty()) return data.errorClass.New({code, message});
  Napi::Error error = Napi::Error::New(env, failure.message);
  error.Set("code", code);
  return error.Value();
}

void throwFailure(Napi::Env env, const Failure& failure) { throw Napi::Error(env, makeError(env, failure)); }

}  // namespace perceptual
