// The Loss object (NativeLoss) and the prepared targets it makes
// (NativeTarget).
#pragma once

#include <napi.h>

namespace perceptual {

Napi::Function defineLoss(Napi::Env env);
Napi::Function defineTarget(Napi::Env env);

}  // namespace perceptual
