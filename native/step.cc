#include "step.h"

#include "bridge.h"

namespace perceptual {
namespace {

// d loss / d pred = mask * d loss / d (mask * pred).
LossOutput finishLoss(const Call& call, LossResult r, bool wantGrad, const Tensor& mask = Tensor()) {
  LossOutput out;
  out.loss = ops::to(r.loss, ops::kCpu, ops::ScalarType::Double);
  out.terms = ops::to(r.terms, ops::kCpu, ops::ScalarType::Double);
  out.lossType = call.pred.tensor.scalar_type();
  if (wantGrad) {
    out.hostGrad = call.pred.host;
    out.grad = fromCompute(r.grad, call.layout, call.pred.tensor, mask);
  }
  return out;
}

}  // namespace

LossOutput computeLoss(const Call& call, bool wantGrad) {
  const Config& config = *call.config;
  const Network& net = *call.net;
  auto scope = call.cuda->enter();
  // A mask is applied on the device before anything else: what follows (the
  // finiteness checks, a CUDA graph's inputs) sees only the masked values.
  const Tensor mask = call.mask.defined() ? ops::toDevice(call.mask, config.device, true) : Tensor();
  const auto masked = [&](const Tensor& x) {
    return mask.defined() ? applyMask(ops::toDevice(x, config.device, true), mask) : x;
  };
  const Tensor predUser = masked(call.pred.tensor);
  // On a CUDA device the finiteness checks are flags read with the loss: no
  // extra synchronization.
  const bool deferred = config.device.is_cuda();
  std::shared_ptr<const TargetFeatures> prepared;
  if (call.target.prepared) prepared = call.target.prepared->current(net, config);
  const Tensor targetUser = prepared ? Tensor() : masked(call.target.tensor);
  // The target's branch is queued first, so that on its own stream it
  // overlaps pred's.
  auto step = [&](const Tensor& predIn, const Tensor& targetIn) -> cuda::Step {
    std::vector<Tensor> flags;
    auto check = [&](const Tensor& x, const char* what) {
      if (!config.checkFinite) return;
      if (deferred) {
        flags.push_back(ops::allFinite(x));
      } else {
        perceptual::checkFinite(x, what);
      }
    };
    std::shared_ptr<const TargetFeatures> target = prepared;
    if (!target) {
      target = std::make_shared<const TargetFeatures>(call.cuda->onTargetStream(
          [&] {
            const Tensor t = toCompute(targetIn, call.layout, config.device, config.dtype, config.channelsLast);
            check(t, "target");
            return perceptual::prepareTarget(net, config, t);
          },
          flags));
    }
    const Tensor pred = toCompute(predIn, call.layout, config.device, config.dtype, config.channelsLast);
    check(pred, "pred");
    cuda::Step out;
    out.result = perceptual::lossAndGrad(net, config, pred, std::move(target), wantGrad);
    if (!flags.empty()) out.finite = ops::stack(flags);
    return out;
  };
  cuda::Step out;
  if (call.cuda->graphs()) {
    // A graph reads fixed device buffers: the inputs go up first, as they
    // are.
    const Tensor pred = ops::toDevice(predUser, config.device, true);
    Tensor target;
    if (!prepared) target = ops::toDevice(targetUser, config.device, true);
    cuda::GraphKey key;
    key.shape = ops::shapeOf(pred);
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
    const Tensor finite = ops::to(out.finite, ops::kCpu, ops::ScalarType::Bool);
    const std::vector<const char*> names =
        prepared ? std::vector<const char*>{"pred"} : std::vector<const char*>{"target", "pred"};
    for (size_t i = 0; i < names.size() && i < static_cast<size_t>(finite.numel()); ++i) {
      if (!ops::itemBool(ops::select(finite, 0, static_cast<int64_t>(i)))) throw nonFiniteError(names[i]);
    }
  }
  return finishLoss(call, std::move(out.result), wantGrad, mask);
}

LossOutput computeSegmentation(const Call& call, int64_t ignoreIndex) {
  const Config& config = *call.config;
  auto scope = call.cuda->enter();
  const Tensor logits = toCompute(call.pred.tensor, call.layout, config.device,
                                  perceptual::segmentationLogitsType(config), config.channelsLast);
  if (config.checkFinite) perceptual::checkFinite(logits, "logits");
  const Tensor labels = ops::to(call.target.tensor, config.device, ops::ScalarType::Long);
  PL_CHECK(labels.dim() == config.spatialDims + 1, "labels must be [N, *spatial] with ", config.spatialDims,
           " spatial dims");
  LossResult r = perceptual::lossAndGradSegmentation(*call.net, config, logits, labels, ignoreIndex, true);
  return finishLoss(call, std::move(r), true);
}

LossOutput computeInstanceMasks(const Call& call, const Tensor& weights, bool wantGrad) {
  const Config& config = *call.config;
  auto scope = call.cuda->enter();
  const Tensor logits = toCompute(call.pred.tensor, call.layout, config.device,
                                  perceptual::segmentationLogitsType(config), config.channelsLast);
  if (config.checkFinite) perceptual::checkFinite(logits, "maskLogits");
  const Tensor masks = toCompute(call.target.tensor, call.layout, config.device, config.dtype, config.channelsLast);
  PL_CHECK(ops::shapeOf(masks) == ops::shapeOf(logits), "masks must have the shape of the mask logits");
  if (config.checkFinite) perceptual::checkFinite(masks, "masks");
  Tensor factors;
  if (weights.defined()) {
    PL_CHECK(weights.dim() == 1 && weights.size(0) == logits.size(0), "expected one weight per instance");
    // 'mean' is the weighted mean of the instances' losses: the factors sum to 1.
    factors = ops::to(weights, config.device, ops::ScalarType::Double);
    if (config.reduction == Reduction::Mean) ops::divInPlace(factors, ops::itemDouble(ops::sum(factors)));
  }
  LossResult r = perceptual::lossAndGradInstanceMasks(*call.net, config, logits, masks, factors, wantGrad);
  return finishLoss(call, std::move(r), wantGrad);
}

std::vector<Tensor> computeFeatures(const Call& call) {
  auto scope = call.cuda->enter();
  std::vector<Tensor> out;
  const Config& config = *call.config;
  const Tensor x = toCompute(call.pred.tensor, call.layout, config.device, config.dtype, config.channelsLast);
  if (config.checkFinite) perceptual::checkFinite(x, "input");
  for (const Tensor& f : perceptual::features(*call.net, config, x)) {
    out.push_back(fromCompute(f, call.layout, call.pred.tensor));
  }
  return out;
}

std::shared_ptr<PreparedState> prepareTargetState(const Network& net, const Config& config, const Operand& operand,
                                                  Layout layout, uint64_t owner) {
  auto state = std::make_shared<PreparedState>();
  state->layout = layout;
  state->userShape = ops::shapeOf(operand.tensor);
  // toCompute copies host data (borrowed here) unless it is already NCHW
  // float32 on the device.
  state->input = toCompute(operand.tensor, layout, config.device, config.dtype, config.channelsLast);
  if (operand.host && ops::dataPtr(state->input) == ops::dataPtr(operand.tensor)) {
    state->input = ops::clone(state->input);
  }
  if (config.checkFinite) perceptual::checkFinite(state->input, "target");
  state->owner = owner;
  state->current(net, config);
  return state;
}

}  // namespace perceptual
