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
#include "tensor.h"

namespace perceptual {
namespace {

// ---------------------------------------------------------------- the loss

struct LossOutput {
  at::Tensor loss;                       // float64 CPU
  at::Tensor terms;                      // float64 CPU
  at::Tensor grad;                       // like pred: its layout, device and dtype
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

// new NativeLoss(config): `config` is the TS schema's resolved form, its enums
// by name.
std::shared_ptr<Config> readConfig(const Napi::Object& c) {
  auto config = std::make_shared<Config>();
  config->inChannels = c.Get("inChannels").As<Napi::Number>().Int64Value();
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
  config->device = at::Device(name("device"));
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
        TORCH_CHECK(arrays.Length() % 2 == 0, "expected a weight and a bias per conv");
        std::vector<at::Tensor> convWeights, convBiases;
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

  // A call's inputs, captured on the JS thread so an async job owns everything
  // it reads.
  struct Call {
    std::shared_ptr<const Network> net;
    std::shared_ptr<const Config> config;
    Operand pred;
    Operand target;
    Layout layout = Layout::NCHW;
    std::shared_ptr<cuda::Context> cuda;
    at::Tensor mask;  // undefined without one
  };

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

  static LossOutput computeLoss(const Call& call, bool wantGrad) {
    const Config& config = *call.config;
    const Network& net = *call.net;
    auto scope = call.cuda->enter();
    // A mask is applied on the device before anything else: what follows (the
    // finiteness checks, a CUDA graph's inputs) sees only the masked values.
    const at::Tensor mask =
        call.mask.defined() ? call.mask.to(call.mask.options().device(config.device), true) : at::Tensor();
    const auto masked = [&](const at::Tensor& x) {
      return mask.defined() ? applyMask(x.to(x.options().device(config.device), true), mask) : x;
    };
    const at::Tensor predUser = masked(call.pred.tensor);
    // On a CUDA device the finiteness checks are flags read with the loss: no
    // extra synchronization.
    const bool deferred = config.device.is_cuda();
    std::shared_ptr<const TargetFeatures> prepared;
    if (call.target.prepared) prepared = call.target.prepared->current(net, config);
    const at::Tensor targetUser = prepared ? at::Tensor() : masked(call.target.tensor);
    // The target's branch is queued first, so that on its own stream it
    // overlaps pred's.
    auto step = [&](const at::Tensor& predIn, const at::Tensor& targetIn) -> cuda::Step {
      std::vector<at::Tensor> flags;
      auto check = [&](const at::Tensor& x, const char* what) {
        if (!config.checkFinite) return;
        if (deferred) {
          flags.push_back(at::isfinite(x).all());
        } else {
          perceptual::checkFinite(x, what);
        }
      };
      std::shared_ptr<const TargetFeatures> target = prepared;
      if (!target) {
        target = std::make_shared<const TargetFeatures>(call.cuda->onTargetStream(
            [&] {
              const at::Tensor t = toCompute(targetIn, call.layout, config.device, config.dtype, config.channelsLast);
              check(t, "target");
              return perceptual::prepareTarget(net, config, t);
            },
            flags));
      }
      const at::Tensor pred = toCompute(predIn, call.layout, config.device, config.dtype, config.channelsLast);
      check(pred, "pred");
      cuda::Step out;
      out.result = perceptual::lossAndGrad(net, config, pred, *target, wantGrad);
      if (!flags.empty()) out.finite = at::stack(flags);
      return out;
    };
    cuda::Step out;
    if (call.cuda->graphs()) {
      // A graph reads fixed device buffers: the inputs go up first, as they
      // are.
      const at::Tensor pred = predUser.to(predUser.options().device(config.device), true);
      at::Tensor target;
      if (!prepared) target = targetUser.to(targetUser.options().device(config.device), true);
      cuda::GraphKey key;
      key.shape = pred.sizes().vec();
      key.predType = static_cast<int>(pred.scalar_type());
      key.targetType = prepared ? -1 : static_cast<int>(target.scalar_type());
      key.preparedTarget = prepared ? (call.target.prepared->id << 24) ^ prepared->generation : 0;
      key.nhwc = call.layout == Layout::NHWC;
      key.wantGrad = wantGrad;
      out = call.cuda->step(key, net.generation, pred, target, step, {call.net, prepared});
    } else {
      out = step(predUser, targetUser);
    }
    if (out.finite.defined()) {
      const at::Tensor finite = out.finite.to(at::kCPU);
      const std::vector<const char*> names =
          prepared ? std::vector<const char*>{"pred"} : std::vector<const char*>{"target", "pred"};
      for (size_t i = 0; i < names.size() && i < static_cast<size_t>(finite.numel()); ++i) {
        if (!finite[static_cast<int64_t>(i)].item<bool>()) throw nonFiniteError(names[i]);
      }
    }
    return finishLoss(call, std::move(out.result), wantGrad, mask);
  }

  // d loss / d pred = mask * d loss / d (mask * pred).
  static LossOutput finishLoss(const Call& call, LossResult r, bool wantGrad, const at::Tensor& mask = {}) {
    LossOutput out;
    out.loss = r.loss.to(at::kCPU, at::kDouble);
    out.terms = r.terms.to(at::kCPU, at::kDouble);
    out.lossType = call.pred.tensor.scalar_type();
    if (wantGrad) {
      out.hostGrad = call.pred.host;
      out.grad = fromCompute(r.grad, call.layout, call.pred.tensor, mask);
    }
    return out;
  }

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
      auto compute = [](const Call& call, int64_t ignoreIndex) {
        const Config& config = *call.config;
        auto scope = call.cuda->enter();
        const at::Tensor logits = toCompute(call.pred.tensor, call.layout, config.device,
                                            perceptual::segmentationLogitsType(config), config.channelsLast);
        if (config.checkFinite) perceptual::checkFinite(logits, "logits");
        const at::Tensor labels = call.target.tensor.to(config.device, at::kLong);
        TORCH_CHECK(labels.dim() == 3, "labels must be [N, H, W]");
        LossResult r = perceptual::lossAndGradSegmentation(*call.net, config, logits, labels, ignoreIndex, true);
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

  // args: (x, shape, layout) -> [data | Tensor, shape][] per tap
  Napi::Value runFeatures(const Napi::CallbackInfo& info, bool async) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Call call{network(), config_, operand(info[0], info[1], async), {}, readLayout(info[2]), context()};
      auto compute = [](const Call& call) {
        auto scope = call.cuda->enter();
        std::vector<at::Tensor> out;
        const Config& config = *call.config;
        const at::Tensor x = toCompute(call.pred.tensor, call.layout, config.device, config.dtype, config.channelsLast);
        if (config.checkFinite) perceptual::checkFinite(x, "input");
        for (const at::Tensor& f : perceptual::features(*call.net, config, x)) {
          out.push_back(fromCompute(f, call.layout, call.pred.tensor));
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

  // args: (target, shape, layout)
  Napi::Value prepareTarget(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const auto net = network();
      auto scope = context()->enter();
      Operand operand = this->operand(info[0], info[1], false);
      if (operand.prepared) throw Error(ErrorCode::Shape, "the target is already prepared");
      auto state = std::make_shared<PreparedState>();
      state->layout = readLayout(info[2]);
      state->userShape = operand.tensor.sizes().vec();
      // toCompute copies host data (borrowed here) unless it is already NCHW
      // float32 on the device.
      state->input = toCompute(operand.tensor, state->layout, config_->device, config_->dtype, config_->channelsLast);
      if (operand.host && state->input.data_ptr() == operand.tensor.data_ptr()) state->input = state->input.clone();
      if (config_->checkFinite) perceptual::checkFinite(state->input, "target");
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

}  // namespace

Napi::Function defineLoss(Napi::Env env) { return NativeLoss::define(env); }
Napi::Function defineTarget(Napi::Env env) { return NativeTarget::define(env); }

}  // namespace perceptual
