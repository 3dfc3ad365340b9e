#include "loss.h"

#include <atomic>
#include <cstring>
#include <memory>

#include "bridge.h"
#include "cuda.h"
#include "env.h"
#include "errors.h"
#include "job.h"
#include "operands.h"
#include "perceptual.h"
#include "step.h"
#include "tensor.h"

namespace perceptual {
namespace {

// ---------------------------------------------------------------- the loss

Napi::Value lossToJs(Napi::Env env, const Config& config, const LossOutput& out, bool withGrad) {
  Napi::Value loss;
  if (config.reduction == Reduction::None) {
    loss = toHostArray(env, ops::to(out.loss, out.lossType));
  } else {
    loss = Napi::Number::New(env, ops::itemDouble(out.loss));
  }
  if (!withGrad) return loss;
  Napi::Object result = Napi::Object::New(env);
  result.Set("loss", loss);
  if (out.hostGrad) {
    result.Set("grad", toHostArray(env, out.grad));
  } else {
    result.Set("grad", NativeTensor::wrap(env, out.grad));
  }
  const Tensor terms = ops::contiguous(out.terms);
  auto termsArray = Napi::Float64Array::New(env, static_cast<size_t>(terms.numel()));
  std::memcpy(termsArray.Data(), ops::dataPtr(terms), termsArray.ByteLength());
  result.Set("terms", termsArray);
  return result;
}

// new NativeLoss(config): `config` is the TS schema's resolved form, its enums
// by name.
std::shared_ptr<Config> readConfig(const Napi::Object& c) {
  auto config = std::make_shared<Config>();
  config->inChannels = c.Get("inChannels").As<Napi::Number>().Int64Value();
  config->spatialDims = c.Has("spatialDims") ? c.Get("spatialDims").As<Napi::Number>().Int64Value() : 2;
  const auto arch = c.Get("arch").As<Napi::Array>();
  for (uint32_t i = 0; i < arch.Length(); ++i) config->arch.push_back(arch.Get(i).As<Napi::Number>().Int64Value());
  const auto modules = c.Get("tapModules").As<Napi::Array>();
  const auto weights = c.Get("tapWeights").As<Napi::Array>();
  for (uint32_t i = 0; i < modules.Length(); ++i) {
    config->taps.push_back(
        {modules.Get(i).As<Napi::Number>().Int64Value(), weights.Get(i).As<Napi::Number>().DoubleValue()});
  }
  const auto name = [&](const char* key) { return c.Get(key).As<Napi::String>().Utf8Value(); };
  config->criterion = fromName(kCriteria, name("criterion"), "criterion");
  config->featureWeight = c.Get("featureWeight").As<Napi::Number>().DoubleValue();
  config->styleWeight = c.Get("styleWeight").As<Napi::Number>().DoubleValue();
  config->reduction = fromName(kReductions, name("reduction"), "reduction");
  config->init = fromName(kInits, name("init"), "init");
  config->initStd = c.Get("initStd").As<Napi::Number>().DoubleValue();
  config->pool = fromName(kPools, name("pool"), "pool");
  config->device = ops::Device::parse(name("device"));
  config->dtype = dtypeFromName(name("dtype"));
  config->checkFinite = c.Get("checkFinite").As<Napi::Boolean>().Value();
  config->cudnnBenchmark = c.Get("cudnnBenchmark").ToBoolean().Value();
  config->channelsLast = c.Get("channelsLast").ToBoolean().Value();
  config->cudaGraphs = c.Get("cudaGraphs").ToBoolean().Value();
  config->targetStream = c.Get("targetStream").ToBoolean().Value();
  config->allowTF32 = c.Has("allowTF32") ? c.Get("allowTF32").ToBoolean().Value() : true;
  cuda::requireDevice(config->device);
  return config;
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
         InstanceMethod<&NativeLoss::instanceMasks>("instanceMasks"),
         InstanceMethod<&NativeLoss::instanceMasksAsync>("instanceMasksAsync"),
         InstanceMethod<&NativeLoss::features>("features"), InstanceMethod<&NativeLoss::featuresAsync>("featuresAsync"),
         InstanceMethod<&NativeLoss::prepareTarget>("prepareTarget"),
         InstanceMethod<&NativeLoss::stateDict>("stateDict"),
         InstanceMethod<&NativeLoss::loadStateDict>("loadStateDict"), InstanceMethod<&NativeLoss::reseed>("reseed"),
         InstanceMethod<&NativeLoss::dispose>("dispose"), InstanceMethod<&NativeLoss::cachedGraphs>("cachedGraphs")});
  }

  // new NativeLoss(config, weights?): `config` is the TS schema's resolved form, its enums by name;
  // `weights`, when given ([weight0, bias0, ...] as Float32Arrays, in conv order), replace the
  // drawn ones (load()).
  explicit NativeLoss(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeLoss>(info) {
    guarded(info.Env(), [&]() -> Napi::Value {
      const auto c = info[0].As<Napi::Object>();
      config_ = readConfig(c);
      cuda_ = std::make_shared<cuda::Context>(*config_);
      auto scope = cuda_->enter();
      if (info.Length() > 1 && info[1].IsArray()) {
        const auto arrays = info[1].As<Napi::Array>();
        PL_CHECK(arrays.Length() % 2 == 0, "expected a weight and a bias per conv");
        std::vector<Tensor> convWeights, convBiases;
        for (uint32_t i = 0; i < arrays.Length(); ++i) {
          const auto array = arrays.Get(i).As<Napi::TypedArray>();
          (i % 2 == 0 ? convWeights : convBiases)
              .push_back(fromTypedArray(array, {static_cast<int64_t>(array.ElementLength())}, true));
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

  std::shared_ptr<cuda::Context> context() const {
    if (!cuda_) throw Error(ErrorCode::Disposed, "this PerceptualLoss has been disposed");
    return cuda_;
  }

  Operand operand(const Napi::Value& value, const Napi::Value& shape, bool owned) const {
    return readOperand(value, shape, owned, config_->device);
  }

  // args: (pred, predShape, target, targetShape, layout, mask?, maskShape?)
  Call readCall(const Napi::CallbackInfo& info, bool owned) {
    Call call{network(),
              config_,
              operand(info[0], info[1], owned),
              operand(info[2], info[3], owned),
              readLayout(info[4]),
              context(),
              readMask(info[5], info[6], owned, config_->device)};
    if (call.target.prepared && call.target.prepared->owner != id()) {
      throw Error(ErrorCode::Options, "this prepared target was made by another PerceptualLoss");
    }
    if (call.target.prepared && call.mask.defined()) {
      throw Error(ErrorCode::Options,
                  "a mask cannot be applied to a prepared "
                  "target: its features are computed");
    }
    return call;
  }

  uint64_t id() const { return id_; }

  Napi::Value runLoss(const Napi::CallbackInfo& info, bool wantGrad, bool async) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Call call = readCall(info, async);
      if (!async) return lossToJs(info.Env(), *call.config, computeLoss(call, wantGrad), wantGrad);
      return queue(info.Env(), [call = std::move(call), wantGrad]() -> Job::Finish {
        auto out = std::make_shared<LossOutput>(computeLoss(call, wantGrad));
        return [out, config = call.config, wantGrad](Napi::Env env) { return lossToJs(env, *config, *out, wantGrad); };
      });
    });
  }

  Napi::Value loss(const Napi::CallbackInfo& info) { return runLoss(info, false, false); }
  Napi::Value lossAsync(const Napi::CallbackInfo& info) { return runLoss(info, false, true); }
  Napi::Value lossAndGrad(const Napi::CallbackInfo& info) { return runLoss(info, true, false); }
  Napi::Value lossAndGradAsync(const Napi::CallbackInfo& info) { return runLoss(info, true, true); }

  // args: (logits, logitsShape, labels, labelsShape, ignoreIndex, layout)
  Napi::Value runSegmentation(const Napi::CallbackInfo& info, bool async) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Call call{network(),           config_,  operand(info[0], info[1], async), operand(info[2], info[3], async),
                readLayout(info[5]), context()};
      const int64_t ignoreIndex = info[4].As<Napi::Number>().Int64Value();
      if (!async) return lossToJs(info.Env(), *call.config, computeSegmentation(call, ignoreIndex), true);
      return queue(info.Env(), [call = std::move(call), ignoreIndex]() -> Job::Finish {
        auto out = std::make_shared<LossOutput>(computeSegmentation(call, ignoreIndex));
        return [out, config = call.config](Napi::Env env) { return lossToJs(env, *config, *out, true); };
      });
    });
  }

  Napi::Value segmentation(const Napi::CallbackInfo& info) { return runSegmentation(info, false); }
  Napi::Value segmentationAsync(const Napi::CallbackInfo& info) { return runSegmentation(info, true); }

  // args: (logits, logitsShape, masks, masksShape, layout, weights?: Float64Array, wantGrad)
  Napi::Value runInstanceMasks(const Napi::CallbackInfo& info, bool async) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Call call{network(),           config_,  operand(info[0], info[1], async), operand(info[2], info[3], async),
                readLayout(info[4]), context()};
      PL_CHECK(!call.target.prepared, "instance masks cannot be a prepared target");
      Tensor weights;
      if (info[5].IsTypedArray()) {
        const auto array = info[5].As<Napi::TypedArray>();
        weights = fromTypedArray(array, {static_cast<int64_t>(array.ElementLength())}, true);
      }
      const bool wantGrad = info[6].ToBoolean().Value();
      if (!async) return lossToJs(info.Env(), *call.config, computeInstanceMasks(call, weights, wantGrad), wantGrad);
      return queue(info.Env(), [call = std::move(call), weights, wantGrad]() -> Job::Finish {
        auto out = std::make_shared<LossOutput>(computeInstanceMasks(call, weights, wantGrad));
        return [out, config = call.config, wantGrad](Napi::Env env) { return lossToJs(env, *config, *out, wantGrad); };
      });
    });
  }

  Napi::Value instanceMasks(const Napi::CallbackInfo& info) { return runInstanceMasks(info, false); }
  Napi::Value instanceMasksAsync(const Napi::CallbackInfo& info) { return runInstanceMasks(info, true); }

  // args: (x, shape, layout) -> [data | Tensor, shape][] per tap
  Napi::Value runFeatures(const Napi::CallbackInfo& info, bool async) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Call call{network(), config_, operand(info[0], info[1], async), {}, readLayout(info[2]), context()};
      auto toJs = [](Napi::Env env, const std::vector<Tensor>& feats, bool host) {
        auto array = Napi::Array::New(env, feats.size());
        for (size_t i = 0; i < feats.size(); ++i) {
          auto entry = Napi::Object::New(env);
          entry.Set("shape", writeShape(env, ops::shapeOf(feats[i])));
          entry.Set("data", host ? toHostArray(env, feats[i]) : NativeTensor::wrap(env, feats[i]));
          array.Set(i, entry);
        }
        return array;
      };
      if (!async) return toJs(info.Env(), computeFeatures(call), call.pred.host);
      return queue(info.Env(), [call = std::move(call), toJs]() -> Job::Finish {
        auto feats = std::make_shared<std::vector<Tensor>>(computeFeatures(call));
        return [feats, toJs, host = call.pred.host](Napi::Env env) -> Napi::Value { return toJs(env, *feats, host); };
      });
    });
  }

  Napi::Value features(const Napi::CallbackInfo& info) { return runFeatures(info, false); }
  Napi::Value featuresAsync(const Napi::CallbackInfo& info) { return runFeatures(info, true); }

  // args: (target, shape, layout)
  Napi::Value prepareTarget(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const auto net = network();
      auto scope = context()->enter();
      Operand operand = this->operand(info[0], info[1], false);
      if (operand.prepared) throw Error(ErrorCode::Shape, "the target is already prepared");
      return NativeTarget::wrap(info.Env(), prepareTargetState(*net, *config_, operand, readLayout(info[2]), id()));
    });
  }

  // -> [weight0, bias0, weight1, bias1, ...] as float32 arrays, in conv order
  Napi::Value stateDict(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const auto net = network();
      auto array = Napi::Array::New(info.Env(), net->masterWeights.size() * 2);
      for (size_t i = 0; i < net->masterWeights.size(); ++i) {
        array.Set(2 * i, toHostArray(info.Env(), net->masterWeights[i]));
        array.Set(2 * i + 1, toHostArray(info.Env(), ops::to(net->biases[i], ops::ScalarType::Float)));
      }
      return array;
    });
  }

  // args: ([weight0, bias0, ...] as Float32Arrays)
  Napi::Value loadStateDict(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const auto net = network();
      const auto arrays = info[0].As<Napi::Array>();
      PL_CHECK(arrays.Length() == net->masterWeights.size() * 2, "expected ", net->masterWeights.size() * 2, " arrays");
      std::vector<Tensor> weights, biases;
      for (size_t i = 0; i < net->masterWeights.size(); ++i) {
        const Tensor& master = net->masterWeights[i];
        weights.push_back(fromTypedArray(arrays.Get(2 * i).As<Napi::TypedArray>(), ops::shapeOf(master), true));
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

}  // namespace

Napi::Function defineLoss(Napi::Env env) { return NativeLoss::define(env); }
Napi::Function defineTarget(Napi::Env env) { return NativeTarget::define(env); }

}  // namespace perceptual
