// The Loss object (NativeLoss) and the prepared targets it makes
// (NativeTarget).
#pragma once

#include <napi.h>

namespace gpl {

Napi::Function defineLoss(Napi::Env env);
Napi::Function defineTarget(Napi::Env env);

}  // namespace gpl
