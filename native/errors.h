// Error mapping: every C++ exception becomes a JS PerceptualLossError with a
// stable code.
#pragma once

#include <napi.h>

#include <exception>
#include <string>

#include "enums.h"
#include "ops.h"

namespace perceptual {

struct Failure {
  ErrorCode code;
  std::string message;
};

// What an exception means for the caller: ours keep their code; libtorch's are
// ERR_LIBTORCH, or ERR_OUT_OF_MEMORY when an allocator failed.
Failure describe(const std::exception_ptr& error);

// A PerceptualLossError (the class JS registered with setErrorClass), or a
// plain Error with `code`.
Napi::Value makeError(Napi::Env env, const Failure& failure);

[[noreturn]] void throwFailure(Napi::Env env, const Failure& failure);

// Runs a synchronous entry point; libtorch never runs with autograd recording
// here.
template <typename F>
Napi::Value guarded(Napi::Env env, F&& body) {
  try {
    ops::InferenceGuard inference;
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throwFailure(env, describe(std::current_exception()));
  }
}

}  // namespace perceptual
