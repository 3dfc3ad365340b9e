// Node-API layer: the tensor bridge, the loss object, async jobs on the libuv
// pool, and the mapping of every C++ exception to a JS PerceptualLossError.
#include <napi.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <mutex>

#include "compat.h"
#include "cpu_features.h"
#include "cuda.h"
#include "perceptual.h"

namespace gpl {
namespace {

// ---------------------------------------------------------------- errors

struct Failure {
  ErrorCode code;
  std::string message;
};

Failure describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return {e.code, e.what()};
  } catch (const c10::Error& e) {
    if (compat::isOutOfMemory(e)) {
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

// Per-environment state: the addon is context-aware (worker_threads).
struct AddonData {
  Napi::FunctionReference errorClass;
  Napi::FunctionReference tensorClass;
  Napi::FunctionReference targetClass;
};

AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

Napi::Value makeError(Napi::Env env, const Failure& failure) {
  AddonData& data = addonData(env);
  const auto code = Napi::String::New(env, errorCodeName(failure.code));
  const auto message = Napi::String::New(env, failure.message);
  if (!data.errorClass.IsEmpty()) return data.errorClass.New({code, message});
  Napi::Error error = Napi::Error::New(env, failure.message);
  error.Set("code", code);
  return error.Value();
}

[[noreturn]] void throwFailure(Napi::Env env, const Failure& failure) {
  throw Napi::Error(env, makeError(env, failure));
}

// Runs a synchronous entry point; libtorch never runs with autograd recording here.
template <typename F>
Napi::Value guarded(Napi::Env env, F&& body) {
  try {
    c10::InferenceMode inference;
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throwFailure(env, describe(std::current_exception()));
  }
}

// An async job: `run` on a libuv worker, `finish` back on the JS thread.
class Job : public Napi::AsyncWorker {
 public:
  using Finish = std::function<Napi::Value(Napi::Env)>;

  Job(Napi::Env env, std::function<Finish()> run)
      : Napi::AsyncWorker(env, "generic-perceptual-loss"), deferred_(Napi::Promise::Deferred::New(env)),
        run_(std::move(run)) {}

  Napi::Promise promise() const { return deferred_.Promise(); }

  // While a worker_thread is terminated, its environment can no longer run JavaScript: the
  // HandleScope that node-addon-api opens here throws, out of a C callback (std::terminate). No one
  // is left to resolve the promise for, so the result is dropped.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    try {
      Napi::AsyncWorker::OnWorkComplete(env, status);  // resolves or rejects, then deletes this
    } catch (...) {
      delete this;
    }
  }

  void Execute() override {
    try {
      c10::InferenceMode inference;
      at::init_num_threads();  // pick up setNumThreads() on this pool thread
      finish_ = run_();
    } catch (...) {
      failure_ = describe(std::current_exception());
      failed_ = true;
    }
    run_ = nullptr;  // drop captured tensors on the worker, not later
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (failed_) {
      deferred_.Reject(makeError(env, failure_));
      return;
    }
    try {
      c10::InferenceMode inference;
      deferred_.Resolve(finish_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (...) {
      deferred_.Reject(makeError(env, describe(std::current_exception())));
    }
    finish_ = nullptr;
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<Finish()> run_;
  Finish finish_;
  Failure failure_{ErrorCode::Libtorch, ""};
  bool failed_ = false;
};

Napi::Promise queue(Napi::Env env, std::function<Job::Finish()> run) {
  auto* job = new Job(env, std::move(run));
  Napi::Promise promise = job->promise();
  job->Queue();
  return promise;
}

// ---------------------------------------------------------------- tensor bridge

std::vector<int64_t> readShape(const Napi::Value& value) {
  std::vector<int64_t> shape;
  const auto array = value.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    const double d = array.Get(i).As<Napi::Number>().DoubleValue();
    TORCH_CHECK(d >= 0 && d == static_cast<double>(static_cast<int64_t>(d)), "bad dimension ", d);
    shape.push_back(static_cast<int64_t>(d));
  }
  return shape;
}

Napi::Array writeShape(Napi::Env env, at::IntArrayRef sizes) {
  auto array = Napi::Array::New(env, sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) array.Set(i, Napi::Number::New(env, static_cast<double>(sizes[i])));
  return array;
}

int64_t numelOf(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    // In order, as torch computes a storage size: [2^40, 2^40, 0] overflows before the 0.
    if (d != 0 && n > INT64_MAX / d) throw Error(ErrorCode::Shape, "shape overflows: its size cannot be computed");
    n *= d;
  }
  return n;
}

at::ScalarType typedArrayScalar(napi_typedarray_type type) {
  switch (type) {
    case napi_float32_array: return at::kFloat;
    case napi_float64_array: return at::kDouble;
    case napi_int32_array: return at::kInt;
    case napi_uint8_array: return at::kByte;
    case napi_int16_array: return at::kShort;
    case napi_int8_array: return at::kChar;
    default: throw Error(ErrorCode::Dtype, "unsupported typed array");
  }
}

// A host TypedArray as a tensor. `owned` copies it, so the caller may change its
// buffer as soon as the call returns (async jobs); otherwise it is borrowed. `pinned` copies it
// into page-locked memory, from which a CUDA upload is a non-blocking copy on the current stream.
at::Tensor fromTypedArray(const Napi::TypedArray& array, const std::vector<int64_t>& shape, bool owned,
                          bool pinned = false) {
  const at::ScalarType type = typedArrayScalar(array.TypedArrayType());
  // The one check native code must make itself: never read past the buffer.
  TORCH_CHECK(static_cast<int64_t>(array.ElementLength()) == numelOf(shape), "buffer holds ",
              array.ElementLength(), " elements but the shape needs ", numelOf(shape));
  // napi_get_typedarray_info gives the data pointer of any backing store, SharedArrayBuffer included
  // (Napi::TypedArray::ArrayBuffer() refuses a SharedArrayBuffer).
  void* raw = nullptr;
  NAPI_THROW_IF_FAILED(array.Env(), napi_get_typedarray_info(array.Env(), array, nullptr, nullptr, &raw, nullptr, nullptr), at::Tensor());
  auto* data = static_cast<uint8_t*>(raw);
  at::Tensor view = at::from_blob(data, shape, at::TensorOptions().dtype(type));
  if (pinned) {
    at::Tensor staged = at::empty(shape, at::TensorOptions().dtype(type).pinned_memory(true));
    if (view.numel() > 0) std::memcpy(staged.data_ptr(), data, static_cast<size_t>(view.numel()) * view.element_size());
    return staged;
  }
  return owned ? view.clone() : view;
}

std::atomic<int64_t> liveTensors{0};

const napi_type_tag kTensorTag = {0x6a1f0c3b2d5e4f71ULL, 0x9b8c7d6e5f4a3b2cULL};
const napi_type_tag kTargetTag = {0x1c2d3e4f5a6b7c8dULL, 0x8d7c6b5a4f3e2d1cULL};

class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "NativeTensor",
                       {StaticMethod<&NativeTensor::fromHost>("fromHost"),
                        InstanceAccessor<&NativeTensor::shape>("shape"),
                        InstanceAccessor<&NativeTensor::device>("device"),
                        InstanceAccessor<&NativeTensor::dtype>("dtype"),
                        InstanceAccessor<&NativeTensor::disposed>("disposed"),
                        InstanceMethod<&NativeTensor::toArray>("toArray"),
                        InstanceMethod<&NativeTensor::dispose>("dispose")});
  }

  explicit NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
    info.This().As<Napi::Object>().TypeTag(&kTensorTag);
  }
  ~NativeTensor() override { release(); }

  static Napi::Object wrap(Napi::Env env, at::Tensor tensor) {
    Napi::Object object = addonData(env).tensorClass.New({});
    NativeTensor* self = Unwrap(object);
    self->tensor_ = std::move(tensor);
    ++liveTensors;
    return object;
  }

  // nullptr when `value` is not one of ours.
  static NativeTensor* from(const Napi::Value& value) {
    if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kTensorTag)) return nullptr;
    return Unwrap(value.As<Napi::Object>());
  }

  const at::Tensor& tensor() const {
    if (!tensor_.defined()) throw Error(ErrorCode::Disposed, "this Tensor has been disposed");
    return tensor_;
  }

 private:
  static Napi::Value fromHost(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const auto array = info[0].As<Napi::TypedArray>();
      const at::Device device(info[2].As<Napi::String>().Utf8Value());
      cuda::requireDevice(device);
      at::Tensor host = fromTypedArray(array, readShape(info[1]), device.is_cpu(), device.is_cuda());
      // A non-blocking upload on the default stream; every loss's stream waits for that stream first.
      return wrap(info.Env(), device.is_cpu() ? host : host.to(host.options().device(device), true));
    });
  }

  Napi::Value shape(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value { return writeShape(info.Env(), tensor().sizes()); });
  }
  Napi::Value device(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      return Napi::String::New(info.Env(), tensor().device().str());
    });
  }
  Napi::Value dtype(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      switch (tensor().scalar_type()) {
        case at::kFloat: return Napi::String::New(info.Env(), "float32");
        case at::kDouble: return Napi::String::New(info.Env(), "float64");
        case at::kHalf: return Napi::String::New(info.Env(), "float16");
        case at::kBFloat16: return Napi::String::New(info.Env(), "bfloat16");
        case at::kInt: return Napi::String::New(info.Env(), "int32");
        case at::kLong: return Napi::String::New(info.Env(), "int64");
        case at::kByte: return Napi::String::New(info.Env(), "uint8");
        default: return Napi::String::New(info.Env(), c10::toString(tensor().scalar_type()));
      }
    });
  }
  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !tensor_.defined()); }

  Napi::Value toArray(const Napi::CallbackInfo& info);

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    release();
    return info.Env().Undefined();
  }

  void release() {
    if (tensor_.defined()) --liveTensors;
    tensor_.reset();
  }

  at::Tensor tensor_;
};

// Copies a tensor to a new JS array of its type: Int32Array, Uint8Array, Float64Array, and
// Float32Array for every other type.
Napi::Value toHostArray(Napi::Env env, const at::Tensor& tensor) {
  const at::ScalarType type = tensor.scalar_type();
  const bool kept = type == at::kInt || type == at::kByte || type == at::kDouble;
  const at::ScalarType hostType = kept ? type : at::kFloat;
  const at::Tensor host = tensor.to(at::kCPU, hostType).contiguous();
  const size_t n = static_cast<size_t>(host.numel());
  const size_t bytes = n * host.element_size();
  auto copy = [&](auto array) {
    if (bytes) std::memcpy(array.Data(), host.data_ptr(), bytes);
    return array;
  };
  if (hostType == at::kInt) return copy(Napi::Int32Array::New(env, n));
  if (hostType == at::kByte) return copy(Napi::Uint8Array::New(env, n));
  if (hostType == at::kDouble) return copy(Napi::Float64Array::New(env, n));
  return copy(Napi::Float32Array::New(env, n));
}

Napi::Value NativeTensor::toArray(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return toHostArray(info.Env(), tensor()); });
}

// ---------------------------------------------------------------- prepared targets

uint64_t nextId() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}

struct PreparedState {
  const uint64_t id = nextId();  // never reused, unlike an address: part of a CUDA graph's key
  at::Tensor input;  // NCHW, compute dtype, on the device: kept to redo the features after reseed()
  std::vector<int64_t> userShape;
  bool nhwc = false;
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
    return DefineClass(env, "NativeTarget",
                       {InstanceAccessor<&NativeTarget::shape>("shape"),
                        InstanceAccessor<&NativeTarget::disposed>("disposed"),
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
Operand readOperand(const Napi::Value& value, const Napi::Value& shape, bool owned, const at::Device& device) {
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

bool standardStrides(const at::Tensor& t) {
  int64_t expected = 1;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    if (t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

at::Tensor toCompute(const at::Tensor& x, bool nhwc, const Config& config, at::ScalarType dtype) {
  TORCH_CHECK(x.dim() == 4, "expected a 4-D tensor, got ", x.dim(), " dimensions");
  const at::Tensor nchw = nhwc ? x.permute({0, 3, 1, 2}) : x;
  // The CPU's oneDNN path runs channels-last: an NHWC input goes in as it is, with no permute.
  if (nhwc && config.device.is_cpu() && (dtype == at::kFloat || dtype == at::kBFloat16) && at::hasMKLDNN()) {
    return nchw.to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
  }
  // Non-blocking: from pinned host memory the upload is queued on the loss's stream.
  if (config.device.is_cuda() && config.channelsLast) {
    return nchw.to(config.device, dtype, true).contiguous(at::MemoryFormat::ChannelsLast);
  }
  at::Tensor out = nchw.to(config.device, dtype, true).contiguous();
  // A permuted tensor with size-1 dims counts as contiguous with channels-last strides, which
  // sends conv2d to another kernel: give it the strides of a plain NCHW tensor.
  if (!standardStrides(out)) out = out.clone(at::MemoryFormat::Contiguous);
  return out;
}

at::Tensor toCompute(const at::Tensor& x, bool nhwc, const Config& config) {
  return toCompute(x, nhwc, config, config.dtype);
}

// Results go back like the input they derive from: its layout, device and dtype.
at::Tensor fromCompute(const at::Tensor& x, bool nhwc, const at::Tensor& like) {
  const at::Tensor laid = nhwc ? x.permute({0, 2, 3, 1}) : x;
  if (x.is_cuda() && like.device().is_cpu()) {
    // Down through pinned memory: a full-speed copy, then one wait for the loss's stream.
    at::Tensor host = at::empty(laid.sizes(), like.options().pinned_memory(true));
    host.copy_(laid, true);
    cuda::synchronize();
    return host;
  }
  return laid.to(like.device(), like.scalar_type()).contiguous();
}

// ---------------------------------------------------------------- the loss

struct LossOutput {
  at::Tensor loss;   // float64 CPU
  at::Tensor terms;  // float64 CPU
  at::Tensor grad;   // like pred: its layout, device and dtype
  at::ScalarType lossType = at::kFloat;  // per-sample losses come back in pred's dtype
  bool hostGrad = false;
};

Napi::Value lossToJs(Napi::Env env, const Config& config, const LossOutput& out, bool withGrad) {
  Napi::Value loss;
  if (config.reduction == Reduction::None) {
    loss = toHostArray(env, out.loss.to(out.lossType));
  } else {
    loss = Napi::Number::New(env, out.loss.item<double>());
  }
  if (!withGrad) return loss;
  Napi::Object result = Napi::Object::New(env);
  result.Set("loss", loss);
  if (out.hostGrad) {
    result.Set("grad", toHostArray(env, out.grad));
  } else {
    result.Set("grad", NativeTensor::wrap(env, out.grad));
  }
  const at::Tensor terms = out.terms.contiguous();
  auto termsArray = Napi::Float64Array::New(env, static_cast<size_t>(terms.numel()));
  std::memcpy(termsArray.Data(), terms.data_ptr<double>(), termsArray.ByteLength());
  result.Set("terms", termsArray);
  return result;
}

class NativeLoss : public Napi::ObjectWrap<NativeLoss> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(
        env, "NativeLoss",
        {InstanceMethod<&NativeLoss::loss>("loss"), InstanceMethod<&NativeLoss::lossAsync>("lossAsync"),
         InstanceMethod<&NativeLoss::lossAndGrad>("lossAndGrad"),
         InstanceMethod<&NativeLoss::lossAndGradAsync>("lossAndGradAsync"),
         InstanceMethod<&NativeLoss::segmentation>("lossAndGradSegmentation"),
         InstanceMethod<&NativeLoss::segmentationAsync>("lossAndGradSegmentationAsync"),
         InstanceMethod<&NativeLoss::features>("features"),
         InstanceMethod<&NativeLoss::featuresAsync>("featuresAsync"),
         InstanceMethod<&NativeLoss::prepareTarget>("prepareTarget"),
         InstanceMethod<&NativeLoss::stateDict>("stateDict"),
         InstanceMethod<&NativeLoss::loadStateDict>("loadStateDict"),
         InstanceMethod<&NativeLoss::reseed>("reseed"), InstanceMethod<&NativeLoss::dispose>("dispose"),
         InstanceMethod<&NativeLoss::cachedGraphs>("cachedGraphs")});
  }

  // new NativeLoss(config, weights?): `config` is the TS schema's resolved form; `weights`, when
  // given ([weight0, bias0, ...] as Float32Arrays, in conv order), replace the drawn ones (load()).
  explicit NativeLoss(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeLoss>(info) {
    guarded(info.Env(), [&]() -> Napi::Value {
      const auto c = info[0].As<Napi::Object>();
      auto config = std::make_shared<Config>();
      config->inChannels = c.Get("inChannels").As<Napi::Number>().Int64Value();
      const auto arch = c.Get("arch").As<Napi::Array>();
      for (uint32_t i = 0; i < arch.Length(); ++i) config->arch.push_back(arch.Get(i).As<Napi::Number>().Int64Value());
      const auto modules = c.Get("tapModules").As<Napi::Array>();
      const auto weights = c.Get("tapWeights").As<Napi::Array>();
      for (uint32_t i = 0; i < modules.Length(); ++i) {
        config->taps.push_back({modules.Get(i).As<Napi::Number>().Int64Value(),
                                weights.Get(i).As<Napi::Number>().DoubleValue()});
      }
      config->criterion = static_cast<Criterion>(c.Get("criterion").As<Napi::Number>().Int32Value());
      config->featureWeight = c.Get("featureWeight").As<Napi::Number>().DoubleValue();
      config->styleWeight = c.Get("styleWeight").As<Napi::Number>().DoubleValue();
      config->reduction = static_cast<Reduction>(c.Get("reduction").As<Napi::Number>().Int32Value());
      config->init = static_cast<InitKind>(c.Get("init").As<Napi::Number>().Int32Value());
      config->initStd = c.Get("initStd").As<Napi::Number>().DoubleValue();
      config->pool = static_cast<PoolKind>(c.Get("pool").As<Napi::Number>().Int32Value());
      config->device = at::Device(c.Get("device").As<Napi::String>().Utf8Value());
      const std::string dtype = c.Get("dtype").As<Napi::String>().Utf8Value();
      config->dtype = dtype == "float64"   ? at::kDouble
                      : dtype == "float16" ? at::kHalf
                      : dtype == "bfloat16" ? at::kBFloat16
                                            : at::kFloat;
      config->checkFinite = c.Get("checkFinite").As<Napi::Boolean>().Value();
      config->cudnnBenchmark = c.Get("cudnnBenchmark").ToBoolean().Value();
      config->channelsLast = c.Get("channelsLast").ToBoolean().Value();
      config->cudaGraphs = c.Get("cudaGraphs").ToBoolean().Value();
      config->targetStream = c.Get("targetStream").ToBoolean().Value();
      config->allowTF32 = c.Has("allowTF32") ? c.Get("allowTF32").ToBoolean().Value() : true;
      cuda::requireDevice(config->device);
      cuda_ = std::make_shared<cuda::Context>(*config);
      config_ = config;
      auto scope = cuda_->enter();
      if (info.Length() > 1 && info[1].IsArray()) {
        const auto arrays = info[1].As<Napi::Array>();
        TORCH_CHECK(arrays.Length() % 2 == 0, "expected a weight and a bias per conv");
        std::vector<at::Tensor> convWeights, convBiases;
        for (uint32_t i = 0; i < arrays.Length(); ++i) {
          const auto array = arrays.Get(i).As<Napi::TypedArray>();
          (i % 2 == 0 ? convWeights : convBiases).push_back(fromTypedArray(array, {static_cast<int64_t>(array.ElementLength())}, true));
        }
        net_ = buildNetwork(*config_, convWeights, convBiases, seedFrom(c.Get("seed")), nextGeneration());
      } else {
        net_ = buildNetwork(*config_, seedFrom(c.Get("seed")), nextGeneration());
      }
      return info.Env().Undefined();
    });
  }

 private:
  static uint64_t seedFrom(const Napi::Value& value) {
    return static_cast<uint64_t>(value.As<Napi::Number>().Int64Value());
  }
  static uint64_t nextGeneration() {
    static std::atomic<uint64_t> counter{0};
    return ++counter;
  }

  std::shared_ptr<const Network> network() const {
    if (!net_) throw Error(ErrorCode::Disposed, "this PerceptualLoss has been disposed");
    return net_;
  }

  // A call's inputs, captured on the JS thread so an async job owns everything it reads.
  struct Call {
    std::shared_ptr<const Network> net;
    std::shared_ptr<const Config> config;
    Operand pred;
    Operand target;
    bool nhwc = false;
    std::shared_ptr<cuda::Context> cuda;
  };

  std::shared_ptr<cuda::Context> context() const {
    if (!cuda_) throw Error(ErrorCode::Disposed, "this PerceptualLoss has been disposed");
    return cuda_;
  }

  Operand operand(const Napi::Value& value, const Napi::Value& shape, bool owned) const {
    return readOperand(value, shape, owned, config_->device);
  }

  // args: (pred, predShape, target, targetShape, nhwc)
  Call readCall(const Napi::CallbackInfo& info, bool owned) {
    Call call{network(), config_, operand(info[0], info[1], owned), operand(info[2], info[3], owned),
              info[4].As<Napi::Boolean>().Value(), context()};
    if (call.target.prepared && call.target.prepared->owner != id()) {
      throw Error(ErrorCode::Options, "this prepared target was made by another PerceptualLoss");
    }
    return call;
  }

  uint64_t id() const { return id_; }

  static LossOutput computeLoss(const Call& call, bool wantGrad) {
    const Config& config = *call.config;
    const Network& net = *call.net;
    auto scope = call.cuda->enter();
    // On a CUDA device the finiteness checks are flags read with the loss: no extra synchronization.
    const bool deferred = config.device.is_cuda();
    std::shared_ptr<const TargetFeatures> prepared;
    if (call.target.prepared) prepared = call.target.prepared->current(net, config);
    // The target's branch is queued first, so that on its own stream it overlaps pred's.
    auto step = [&](const at::Tensor& predIn, const at::Tensor& targetIn) -> cuda::Step {
      std::vector<at::Tensor> flags;
      auto check = [&](const at::Tensor& x, const char* what) {
        if (!config.checkFinite) return;
        if (deferred) {
          flags.push_back(at::isfinite(x).all());
        } else {
          gpl::checkFinite(x, what);
        }
      };
      std::shared_ptr<const TargetFeatures> target = prepared;
      if (!target) {
        target = std::make_shared<const TargetFeatures>(call.cuda->onTargetStream(
            [&] {
              const at::Tensor t = toCompute(targetIn, call.nhwc, config);
              check(t, "target");
              return gpl::prepareTarget(net, config, t);
            },
            flags));
      }
      const at::Tensor pred = toCompute(predIn, call.nhwc, config);
      check(pred, "pred");
      cuda::Step out;
      out.result = gpl::lossAndGrad(net, config, pred, *target, wantGrad);
      if (!flags.empty()) out.finite = at::stack(flags);
      return out;
    };
    cuda::Step out;
    if (call.cuda->graphs()) {
      // A graph reads fixed device buffers: the inputs go up first, as they are.
      const at::Tensor pred = call.pred.tensor.to(call.pred.tensor.options().device(config.device), true);
      at::Tensor target;
      if (!prepared) target = call.target.tensor.to(call.target.tensor.options().device(config.device), true);
      cuda::GraphKey key;
      key.shape = pred.sizes().vec();
      key.predType = static_cast<int>(pred.scalar_type());
      key.targetType = prepared ? -1 : static_cast<int>(target.scalar_type());
      key.preparedTarget = prepared ? (call.target.prepared->id << 24) ^ prepared->generation : 0;
      key.nhwc = call.nhwc;
      key.wantGrad = wantGrad;
      out = call.cuda->step(key, net.generation, pred, target, step, {call.net, prepared});
    } else {
      out = step(call.pred.tensor, call.target.tensor);
    }
    if (out.finite.defined()) {
      const at::Tensor finite = out.finite.to(at::kCPU);
      const std::vector<const char*> names = prepared ? std::vector<const char*>{"pred"} : std::vector<const char*>{"target", "pred"};
      for (size_t i = 0; i < names.size() && i < static_cast<size_t>(finite.numel()); ++i) {
        if (!finite[static_cast<int64_t>(i)].item<bool>()) throw nonFiniteError(names[i]);
      }
    }
    return finishLoss(call, std::move(out.result), wantGrad);
  }

  static LossOutput finishLoss(const Call& call, LossResult r, bool wantGrad) {
    LossOutput out;
    out.loss = r.loss.to(at::kCPU, at::kDouble);
    out.terms = r.terms.to(at::kCPU, at::kDouble);
    out.lossType = call.pred.tensor.scalar_type();
    if (wantGrad) {
      out.hostGrad = call.pred.host;
      out.grad = fromCompute(r.grad, call.nhwc, call.pred.tensor);
    }
    return out;
  }

  Napi::Value runLoss(const Napi::CallbackInfo& info, bool wantGrad, bool async) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Call call = readCall(info, async);
      if (!async) return lossToJs(info.Env(), *call.config, computeLoss(call, wantGrad), wantGrad);
      return queue(info.Env(), [call = std::move(call), wantGrad]() -> Job::Finish {
        auto out = std::make_shared<LossOutput>(computeLoss(call, wantGrad));
        return [out, config = call.config, wantGrad](Napi::Env env) {
          return lossToJs(env, *config, *out, wantGrad);
        };
      });
    });
  }

  Napi::Value loss(const Napi::CallbackInfo& info) { return runLoss(info, false, false); }
  Napi::Value lossAsync(const Napi::CallbackInfo& info) { return runLoss(info, false, true); }
  Napi::Value lossAndGrad(const Napi::CallbackInfo& info) { return runLoss(info, true, false); }
  Napi::Value lossAndGradAsync(const Napi::CallbackInfo& info) { return runLoss(info, true, true); }

  // args: (logits, logitsShape, labels, labelsShape, ignoreIndex, nhwc)
  Napi::Value runSegmentation(const Napi::CallbackInfo& info, bool async) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Call call{network(), config_, operand(info[0], info[1], async), operand(info[2], info[3], async),
                info[5].As<Napi::Boolean>().Value(), context()};
      const int64_t ignoreIndex = info[4].As<Napi::Number>().Int64Value();
      auto compute = [](const Call& call, int64_t ignoreIndex) {
        const Config& config = *call.config;
        auto scope = call.cuda->enter();
        const at::Tensor logits = toCompute(call.pred.tensor, call.nhwc, config, gpl::segmentationLogitsType(config));
        if (config.checkFinite) gpl::checkFinite(logits, "logits");
        const at::Tensor labels = call.target.tensor.to(config.device, at::kLong);
        TORCH_CHECK(labels.dim() == 3, "labels must be [N, H, W]");
        LossResult r = gpl::lossAndGradSegmentation(*call.net, config, logits, labels, ignoreIndex, true);
        return finishLoss(call, std::move(r), true);
      };
      if (!async) return lossToJs(info.Env(), *call.config, compute(call, ignoreIndex), true);
      return queue(info.Env(), [call = std::move(call), ignoreIndex, compute]() -> Job::Finish {
        auto out = std::make_shared<LossOutput>(compute(call, ignoreIndex));
        return [out, config = call.config](Napi::Env env) { return lossToJs(env, *config, *out, true); };
      });
    });
  }

  Napi::Value segmentation(const Napi::CallbackInfo& info) { return runSegmentation(info, false); }
  Napi::Value segmentationAsync(const Napi::CallbackInfo& info) { return runSegmentation(info, true); }

  // args: (x, shape, nhwc) -> [data | Tensor, shape][] per tap
  Napi::Value runFeatures(const Napi::CallbackInfo& info, bool async) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Call call{network(), config_, operand(info[0], info[1], async), {}, info[2].As<Napi::Boolean>().Value(), context()};
      auto compute = [](const Call& call) {
        auto scope = call.cuda->enter();
        std::vector<at::Tensor> out;
        const at::Tensor x = toCompute(call.pred.tensor, call.nhwc, *call.config);
        if (call.config->checkFinite) gpl::checkFinite(x, "input");
        for (const at::Tensor& f : gpl::features(*call.net, *call.config, x)) {
          out.push_back(fromCompute(f, call.nhwc, call.pred.tensor));
        }
        return out;
      };
      auto toJs = [](Napi::Env env, const std::vector<at::Tensor>& feats, bool host) {
        auto array = Napi::Array::New(env, feats.size());
        for (size_t i = 0; i < feats.size(); ++i) {
          auto entry = Napi::Object::New(env);
          entry.Set("shape", writeShape(env, feats[i].sizes()));
          entry.Set("data", host ? toHostArray(env, feats[i]) : NativeTensor::wrap(env, feats[i]));
          array.Set(i, entry);
        }
        return array;
      };
      if (!async) return toJs(info.Env(), compute(call), call.pred.host);
      return queue(info.Env(), [call = std::move(call), compute, toJs]() -> Job::Finish {
        auto feats = std::make_shared<std::vector<at::Tensor>>(compute(call));
        return [feats, toJs, host = call.pred.host](Napi::Env env) -> Napi::Value { return toJs(env, *feats, host); };
      });
    });
  }

  Napi::Value features(const Napi::CallbackInfo& info) { return runFeatures(info, false); }
  Napi::Value featuresAsync(const Napi::CallbackInfo& info) { return runFeatures(info, true); }

  // args: (target, shape, nhwc)
  Napi::Value prepareTarget(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const auto net = network();
      auto scope = context()->enter();
      Operand operand = this->operand(info[0], info[1], false);
      if (operand.prepared) throw Error(ErrorCode::Shape, "the target is already prepared");
      auto state = std::make_shared<PreparedState>();
      state->nhwc = info[2].As<Napi::Boolean>().Value();
      state->userShape = operand.tensor.sizes().vec();
      // toCompute copies host data (borrowed here) unless it is already NCHW float32 on the device.
      state->input = toCompute(operand.tensor, state->nhwc, *config_);
      if (operand.host && state->input.data_ptr() == operand.tensor.data_ptr()) state->input = state->input.clone();
      if (config_->checkFinite) gpl::checkFinite(state->input, "target");
      state->owner = id();
      state->current(*net, *config_);
      return NativeTarget::wrap(info.Env(), state);
    });
  }

  // -> [weight0, bias0, weight1, bias1, ...] as float32 arrays, in conv order
  Napi::Value stateDict(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const auto net = network();
      auto array = Napi::Array::New(info.Env(), net->masterWeights.size() * 2);
      for (size_t i = 0; i < net->masterWeights.size(); ++i) {
        array.Set(2 * i, toHostArray(info.Env(), net->masterWeights[i]));
        array.Set(2 * i + 1, toHostArray(info.Env(), net->biases[i].to(at::kFloat)));
      }
      return array;
    });
  }

  // args: ([weight0, bias0, ...] as Float32Arrays)
  Napi::Value loadStateDict(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const auto net = network();
      const auto arrays = info[0].As<Napi::Array>();
      TORCH_CHECK(arrays.Length() == net->masterWeights.size() * 2, "expected ", net->masterWeights.size() * 2,
                  " arrays");
      std::vector<at::Tensor> weights, biases;
      for (size_t i = 0; i < net->masterWeights.size(); ++i) {
        const at::Tensor& master = net->masterWeights[i];
        weights.push_back(fromTypedArray(arrays.Get(2 * i).As<Napi::TypedArray>(), master.sizes().vec(), true));
        biases.push_back(fromTypedArray(arrays.Get(2 * i + 1).As<Napi::TypedArray>(), {master.size(0)}, true));
      }
      auto scope = context()->enter();
      net_ = withWeights(*config_, *net, weights, biases, nextGeneration());
      return info.Env().Undefined();
    });
  }

  Napi::Value reseed(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      network();
      auto scope = context()->enter();
      net_ = buildNetwork(*config_, seedFrom(info[0]), nextGeneration());
      return info.Env().Undefined();
    });
  }

  // In-flight jobs hold their own references, so they finish normally.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    net_.reset();
    cuda_.reset();  // its streams and captured graphs
    return info.Env().Undefined();
  }

  // -> the number of CUDA graphs this loss holds (0 on the CPU); for the tests.
  Napi::Value cachedGraphs(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), static_cast<double>(context()->cachedGraphs()));
    });
  }

  const uint64_t id_ = nextGeneration();  // unique, unlike an address that may be reused
  std::shared_ptr<const Config> config_;
  std::shared_ptr<const Network> net_;
  std::shared_ptr<cuda::Context> cuda_;
};

// ---------------------------------------------------------------- module

Napi::Value setErrorClass(const Napi::CallbackInfo& info) {
  addonData(info.Env()).errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value setNumThreads(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    at::set_num_threads(info[0].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
  });
}

Napi::Value runtimeInfo(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    auto result = Napi::Object::New(env);
    result.Set("torchVersion", std::to_string(compat::kTorchMajor) + "." + std::to_string(compat::kTorchMinor) + "." +
                                   std::to_string(compat::kTorchPatch));
    result.Set("cuda", at::hasCUDA());
    result.Set("cudaDeviceCount", static_cast<double>(at::hasCUDA() ? at::getNumGPUs() : 0));
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
    result.Set("mkldnn", at::hasMKLDNN());
    const CpuFeatures& cpu = cpuFeatures();
    auto cpuInfo = Napi::Object::New(env);
    cpuInfo.Set("vendor", cpu.vendor);
    cpuInfo.Set("avx512", cpu.avx512);
    cpuInfo.Set("avx512Bf16", cpu.avx512Bf16);
    cpuInfo.Set("amxBf16", cpu.amxBf16);
    // What bfloat16 on the CPU lacks here, or "" where it can run.
    cpuInfo.Set("bfloat16Missing", at::hasMKLDNN() ? cpuBfloat16Missing() : "a libtorch built with oneDNN (MKLDNN)");
    result.Set("cpu", cpuInfo);
    result.Set("numThreads", at::get_num_threads());
    result.Set("parallelInfo", at::get_parallel_info());
    return result;
  });
}

// CUDA memory figures of device `index`, for the GPU suite: { allocated, reserved, peakAllocated, peakReserved }.
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

// (fraction, index): caps the caching allocator, so the suite can provoke an out-of-memory error.
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
  return Napi::Number::New(info.Env(), static_cast<double>(liveTensors.load()));
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData(data);
  data->tensorClass = Napi::Persistent(NativeTensor::define(env));
  data->targetClass = Napi::Persistent(NativeTarget::define(env));
  exports.Set("NativeTensor", data->tensorClass.Value());
  exports.Set("NativeTarget", data->targetClass.Value());
  exports.Set("NativeLoss", NativeLoss::define(env));
  exports.Set("setErrorClass", Napi::Function::New<setErrorClass>(env));
  exports.Set("setNumThreads", Napi::Function::New<setNumThreads>(env));
  exports.Set("runtimeInfo", Napi::Function::New<runtimeInfo>(env));
  exports.Set("liveTensors", Napi::Function::New<liveTensorCount>(env));
  exports.Set("cudaMemory", Napi::Function::New<cudaMemory>(env));
  exports.Set("cudaResetPeakMemory", Napi::Function::New<cudaResetPeakMemory>(env));
  exports.Set("cudaSetMemoryFraction", Napi::Function::New<cudaSetMemoryFraction>(env));
  exports.Set("cudaEmptyCache", Napi::Function::New<cudaEmptyCache>(env));
  return exports;
}

}  // namespace
}  // namespace gpl

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return gpl::init(env, exports); }

NODE_API_MODULE(generic_perceptual_loss, InitAddon)
