// Per-environment state: the addon is context-aware (worker_threads), so every
// reference to a JS value lives here, one instance per environment.
#pragma once

#include <napi.h>

namespace perceptual {

struct AddonData {
  Napi::FunctionReference errorClass;
  Napi::FunctionReference tensorClass;
  Napi::FunctionReference targetClass;
};

inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace perceptual
