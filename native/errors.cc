#include "errors.h"

#include <c10/util/Exception.h>

#include <new>

#include "cuda_device.h"
#include "env.h"

namespace perceptual {
namespace {

bool isOutOfMemory(const c10::Error& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  // The CPU allocator reports exhaustion as a plain c10::Error.
  const std::string msg = e.what_without_backtrace();
  return msg.find("can't allocate memory") != std::string::npos || msg.find("out of memory") != std::string::npos;
}

}  // namespace

Failure describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return {e.code, e.what()};
  } catch (const c10::Error& e) {
    if (isOutOfMemory(e)) {
      // Hand the cached blocks back, so that the next (smaller) step fits.
      cuda::emptyCache();
      return {ErrorCode::OutOfMemory, std::string("out of memory: ") + e.what_without_backtrace()};
    }
    return {ErrorCode::Libtorch, std::string("libtorch: ") + e.what_without_backtrace()};
  } catch (const std::bad_alloc&) {
    return {ErrorCode::OutOfMemory, "out of memory: a native allocation failed"};
  } catch (const std::exception& e) {
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
