// The module's entry: init, and the functions of the runtime (threads, build
// and device info, the enum tables). The wrapped classes live in tensor.cc and
// loss.cc, the tensor bridge in bridge.cc, async jobs in job.cc and the mapping
// of C++ exceptions to PerceptualLossError in errors.cc.
#include <napi.h>

#include <string>
#include <vector>

#include "bridge.h"
#include "cpu_features.h"
#include "cuda_device.h"
#include "enums.h"
#include "env.h"
#include "errors.h"
#include "loss.h"
#include "ops.h"
#include "perceptual.h"
#include "tensor.h"

namespace perceptual {
namespace {

Napi::Value setErrorClass(const Napi::CallbackInfo& info) {
  addonData(info.Env()).errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value setNumThreads(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    ops::setNumThreads(info[0].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
  });
}

Napi::Value runtimeInfo(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    auto result = Napi::Object::New(env);
    result.Set("torchVersion", ops::torchVersion());
    result.Set("cuda", ops::hasCuda());
    result.Set("cudaDeviceCount", static_cast<double>(ops::cudaDeviceCount()));
    result.Set("cudaBuild",
#if defined(PL_WITH_CUDA)
               true
#else
               false
#endif
    );
    const std::vector<cuda::DeviceInfo> devices = cuda::devices();
    auto cudaDevices = Napi::Array::New(env, devices.size());
    for (size_t i = 0; i < devices.size(); ++i) {
      auto d = Napi::Object::New(env);
      d.Set("index", devices[i].index);
      d.Set("name", devices[i].name);
      d.Set("computeCapability", std::to_string(devices[i].major) + "." + std::to_string(devices[i].minor));
      d.Set("memoryBytes", static_cast<double>(devices[i].totalMemory));
      cudaDevices.Set(i, d);
    }
    result.Set("cudaDevices", cudaDevices);
    result.Set("cxx11Abi", static_cast<bool>(_GLIBCXX_USE_CXX11_ABI));
    result.Set("mkldnn", ops::hasOneDnn());
    const CpuFeatures& cpu = cpuFeatures();
    auto cpuInfo = Napi::Object::New(env);
    cpuInfo.Set("vendor", cpu.vendor);
    cpuInfo.Set("avx512", cpu.avx512);
    cpuInfo.Set("avx512Bf16", cpu.avx512Bf16);
    cpuInfo.Set("amxBf16", cpu.amxBf16);
    // What bfloat16 on the CPU lacks here, or "" where it can run.
    cpuInfo.Set("bfloat16Missing", ops::hasOneDnn() ? cpuBfloat16Missing() : "a libtorch built with oneDNN (MKLDNN)");
    cpuInfo.Set("prepackedWeights", prepackedOneDnnWeights());
    cpuInfo.Set("hugePages", ops::hugePageAllocator());
    result.Set("cpu", cpuInfo);
    result.Set("numThreads", ops::numThreads());
    result.Set("parallelInfo", ops::parallelInfo());
    return result;
  });
}

// CUDA memory figures of device `index`, for the GPU suite: { allocated,
// reserved, peakAllocated, peakReserved }.
Napi::Value cudaMemory(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const cuda::MemoryStats m = cuda::memoryStats(info[0].As<Napi::Number>().Int32Value());
    auto result = Napi::Object::New(info.Env());
    result.Set("allocated", static_cast<double>(m.allocated));
    result.Set("reserved", static_cast<double>(m.reserved));
    result.Set("peakAllocated", static_cast<double>(m.peakAllocated));
    result.Set("peakReserved", static_cast<double>(m.peakReserved));
    return result;
  });
}

Napi::Value cudaResetPeakMemory(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    cuda::resetPeakMemory(info[0].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
  });
}

// (fraction, index): caps the caching allocator, so the suite can provoke an
// out-of-memory error.
Napi::Value cudaSetMemoryFraction(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    cuda::setMemoryFraction(info[0].As<Napi::Number>().DoubleValue(), info[1].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
  });
}

Napi::Value cudaEmptyCache(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    cuda::emptyCache();
    return info.Env().Undefined();
  });
}

Napi::Value liveTensorCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(NativeTensor::live()));
}

Napi::Array toJs(Napi::Env env, const std::vector<std::string>& names) {
  auto array = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) array.Set(i, Napi::String::New(env, names[i]));
  return array;
}

// The names each enum crosses the boundary by, for the test that holds them
// equal to the TS schema.
Napi::Value enumTables(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto tables = Napi::Object::New(env);
  tables.Set("criterion", toJs(env, namesOf(kCriteria)));
  tables.Set("reduction", toJs(env, namesOf(kReductions)));
  tables.Set("pool", toJs(env, namesOf(kPools)));
  tables.Set("init", toJs(env, namesOf(kInits)));
  tables.Set("layout", toJs(env, namesOf(kLayouts)));
  tables.Set("dtype", toJs(env, dtypeNames()));
  tables.Set("errorCode", toJs(env, namesOf(kErrorCodes)));
  return tables;
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  ops::hugePageAllocator();
  auto* data = new AddonData();
  env.SetInstanceData(data);
  data->tensorClass = Napi::Persistent(NativeTensor::define(env));
  data->targetClass = Napi::Persistent(defineTarget(env));
  exports.Set("NativeTensor", data->tensorClass.Value());
  exports.Set("NativeTarget", data->targetClass.Value());
  exports.Set("NativeLoss", defineLoss(env));
  exports.Set("setErrorClass", Napi::Function::New<setErrorClass>(env));
  exports.Set("setNumThreads", Napi::Function::New<setNumThreads>(env));
  exports.Set("runtimeInfo", Napi::Function::New<runtimeInfo>(env));
  exports.Set("liveTensors", Napi::Function::New<liveTensorCount>(env));
  exports.Set("cudaMemory", Napi::Function::New<cudaMemory>(env));
  exports.Set("cudaResetPeakMemory", Napi::Function::New<cudaResetPeakMemory>(env));
  exports.Set("cudaSetMemoryFraction", Napi::Function::New<cudaSetMemoryFraction>(env));
  exports.Set("cudaEmptyCache", Napi::Function::New<cudaEmptyCache>(env));
  exports.Set("enumTables", Napi::Function::New<enumTables>(env));
  return exports;
}

}  // namespace
}  // namespace perceptual

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return perceptual::init(env, exports); }

NODE_API_MODULE(generic_perceptual_loss, InitAddon)
