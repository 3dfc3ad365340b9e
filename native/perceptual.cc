#include "perceptual.h"

#include <array>
#include <cmath>

namespace perceptual {
namespace {

int64_t deepestTap(const Config& config) {
  int64_t deepest = -1;
  for (const Tap& tap : config.taps) deepest = std::max(deepest, tap.module);
  return deepest;
}

// The torchvision-style Sequential (conv, relu, ..., pool), cut after the
// deepest tap.
void layOutModules(const Config& config, Network& net) {
  const int64_t last = deepestTap(config);
  PL_CHECK(last >= 0, "a perceptual loss needs at least one tap");
  for (int64_t width : config.arch) {
    if (static_cast<int64_t>(net.modules.size()) > last) break;
    if (width == 0) {
      net.modules.push_back({ModuleKind::Pool, -1});
      continue;
    }
    const auto conv = static_cast<int64_t>(net.moduleIndexOfConv.size());
    net.moduleIndexOfConv.push_back(static_cast<int64_t>(net.modules.size()));
    net.modules.push_back({ModuleKind::Conv, conv});
    net.modules.push_back({ModuleKind::ReLU, -1});
  }
  PL_CHECK(static_cast<int64_t>(net.modules.size()) > last, "tap module ", last, " lies beyond the architecture");
  net.modules.resize(static_cast<size_t>(last + 1));
}

std::vector<int64_t> convWidths(const Config& config, size_t count) {
  std::vector<int64_t> widths;
  for (int64_t width : config.arch) {
    if (widths.size() == count) break;
    if (width != 0) widths.push_back(width);
  }
  return widths;
}

// [Cout, Cin, 3, 3] or, for volumes, [Cout, Cin, 3, 3, 3].
ops::Shape kernelShape(const Config& config, int64_t out, int64_t in) {
  ops::Shape shape{out, in};
  shape.resize(static_cast<size_t>(2 + config.spatialDims), 3);
  return shape;
}

// The spatial dims of an [N, C, *spatial] tensor: {2, 3} or {2, 3, 4}.
ops::Shape spatialAxes(const Tensor& t) {
  ops::Shape axes;
  for (int64_t d = 2; d < t.dim(); ++d) axes.push_back(d);
  return axes;
}

void drawWeight(Tensor& w, const Config& config, ops::CpuGenerator& gen) {
  // fan_in = Cin * 9 (27 for a 3x3x3 kernel), fan_out = Cout * 9 (27): torch's own fans.
  const double kernel = static_cast<double>(w.numel() / (w.size(0) * w.size(1)));
  const double fanIn = static_cast<double>(w.size(1)) * kernel;
  const double fanOut = static_cast<double>(w.size(0)) * kernel;
  switch (config.init) {
    case InitKind::KaimingNormal: gen.normal(w, 0.0, std::sqrt(2.0 / fanIn)); break;
    case InitKind::KaimingUniform: {
      const double bound = std::sqrt(6.0 / fanIn);
      gen.uniform(w, -bound, bound);
      break;
    }
    case InitKind::XavierNormal: gen.normal(w, 0.0, std::sqrt(2.0 / (fanIn + fanOut))); break;
    case InitKind::XavierUniform: {
      const double bound = std::sqrt(6.0 / (fanIn + fanOut));
      gen.uniform(w, -bound, bound);
      break;
    }
    case InitKind::Normal: gen.normal(w, 0.0, config.initStd); break;
  }
}

// The dense weight a oneDNN conv packs: in the compute dtype and the activations' layout; for the
// input gradient, flipped in space with in and out swapped (for stride 1 and padding 1,
// d input = conv(d output, that weight)).
Tensor oneDnnDenseWeight(const Tensor& master, ops::ScalarType dtype, bool channelsLast, bool backward) {
  const Tensor weight = ops::to(master, ops::kCpu, dtype);
  if (!backward) return ops::contiguous(weight, channelsLast);
  return ops::contiguous(ops::transpose(ops::flip(weight, spatialAxes(weight)), 0, 1), channelsLast);
}

// `biases`: given ones (any shape holding Cout values), or none for zeros.
void placeOnDevice(const Config& config, Network& net, const std::vector<Tensor>& biases = {}) {
  net.weights.clear();
  net.biases.clear();
  net.oneDnnBiases.clear();
  net.oneDnn = config.device.is_cpu() &&
               (config.dtype == ops::ScalarType::Float || config.dtype == ops::ScalarType::BFloat16) &&
               ops::hasOneDnn();
  // Channels-last weights with channels-last inputs select cuDNN's NHWC kernels. On oneDNN,
  // channels-last activations are read and written in place, where NCHW ones are reordered to a
  // blocked layout and back around every conv; channels-last weights spare a copy per call.
  // Not where the libtorch's own conv copies channels-last inputs (1.13's volumes; compat.h).
  net.oneDnnChannelsLast = net.oneDnn && ops::oneDnnChannelsLast(2 + config.spatialDims);
  const bool channelsLast = (config.device.is_cuda() && config.channelsLast) || net.oneDnnChannelsLast;
  net.oneDnnWeights =
      net.oneDnn ? std::make_shared<const OneDnnWeights>(net.masterWeights, config.dtype, channelsLast) : nullptr;
  for (size_t i = 0; i < net.masterWeights.size(); ++i) {
    const Tensor& master = net.masterWeights[i];
    net.biases.push_back(biases.empty()
                             ? ops::zeros({master.size(0)}, config.dtype, config.device)
                             : ops::contiguous(ops::to(ops::reshape(biases[i], {-1}), config.device, config.dtype)));
    if (net.oneDnn) {
      net.oneDnnBiases.push_back(
          ops::prepareOneDnnBias(net.biases.back(), oneDnnDenseWeight(master, config.dtype, channelsLast, false)));
    } else {
      net.weights.push_back(ops::contiguous(ops::to(master, config.device, config.dtype), channelsLast));
    }
  }
}

// ATen routes small CPU batches to its im2col + BLAS convolution (with the reference BLAS on
// Debian, many times slower than oneDNN); call oneDNN directly for every float32 and bfloat16 CPU
// conv.
// The convs oneDNN gets wrong (ops::oneDnnMisreadsVolume) run in float32 on the drawn weights
// and round back once: the bfloat16 kernels accumulate in float32 too.
Tensor floatConv(const Tensor& x, const Tensor& weight, const Tensor& bias, bool relu) {
  Tensor y = ops::to(ops::conv(ops::to(x, ops::ScalarType::Float), weight, bias), x.scalar_type());
  return relu ? ops::reluInPlace(y) : y;
}

Tensor convForward(const Network& net, size_t c, const Tensor& x, bool relu) {
  if (net.oneDnn && ops::oneDnnMisreadsVolume(x)) {
    return floatConv(x, net.masterWeights[c], ops::to(net.biases[c], ops::ScalarType::Float), relu);
  }
  if (net.oneDnn) return ops::oneDnnConv(x, net.oneDnnWeights->forward(c, x), net.oneDnnBiases[c], relu);
  return ops::conv(x, net.weights[c], net.biases[c]);
}

Tensor convBackwardInput(const Network& net, size_t c, const Tensor& gradOutput, const Tensor& input) {
  if (net.oneDnn && ops::oneDnnMisreadsVolume(gradOutput)) {
    const Tensor& master = net.masterWeights[c];
    const Tensor flipped = ops::contiguous(ops::transpose(ops::flip(master, spatialAxes(master)), 0, 1));
    return floatConv(gradOutput, flipped, ops::zeros({master.size(1)}, ops::ScalarType::Float, ops::kCpu), false);
  }
  if (net.oneDnn) return ops::oneDnnConv(gradOutput, net.oneDnnWeights->backward(c, gradOutput), Tensor(), false);
  return ops::convBackwardInput(gradOutput, input, net.weights[c]);
}

bool isReducedFloat(ops::ScalarType t) { return t == ops::ScalarType::Half || t == ops::ScalarType::BFloat16; }

ops::ScalarType accumulationType(const Config& config) {
  return isReducedFloat(config.dtype) ? ops::ScalarType::Float : config.dtype;
}

// Gram matrix F F^T / (C*H*W) per sample (C*D*H*W for a volume).
Tensor gram(const Tensor& f) {
  const int64_t n = f.size(0), c = f.size(1);
  const Tensor flat = ops::reshape(f, {n, c, -1});
  Tensor g = ops::bmm(flat, ops::transpose(flat, 1, 2));
  ops::divInPlace(g, static_cast<double>(f.numel() / n));
  return g;
}

// [N] factors shaped to scale the samples of an [N, ...] tensor like `like`.
Tensor perSample(const Tensor& factors, const Tensor& like) {
  ops::Shape shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = like.size(0);
  return ops::reshape(ops::to(factors, like.scalar_type()), shape);
}

// The criterion's value under the configured reduction: a 0-d tensor, or [N]
// for 'none'. With sample factors (see lossAndGrad), each sample's value is weighted first.
Tensor distance(const Config& config, const Tensor& a, const Tensor& b, const Tensor& factors) {
  const bool none = config.reduction == Reduction::None;
  const bool perSampleValues = none || factors.defined();
  const ops::Reduce reduce =
      perSampleValues ? ops::Reduce::None : (config.reduction == Reduction::Sum ? ops::Reduce::Sum : ops::Reduce::Mean);
  Tensor d;
  switch (config.criterion) {
    case Criterion::L2: d = ops::mseLoss(a, b, reduce); break;
    case Criterion::L1: d = ops::l1Loss(a, b, reduce); break;
    case Criterion::SmoothL1: d = ops::smoothL1Loss(a, b, reduce); break;
  }
  if (!perSampleValues) return d;
  const Tensor rows = ops::reshape(d, {d.size(0), -1});
  const Tensor values = config.reduction == Reduction::Sum ? ops::sum(rows, 1, false) : ops::mean(rows, 1);
  if (!factors.defined()) return values;
  const Tensor weighted = ops::mul(values, ops::to(factors, values.scalar_type()));
  return none ? weighted : ops::sum(weighted);
}

// d distance / d a, scaled by `scale` (the tap's weight times the term's
// weight).
Tensor distanceGrad(const Config& config, const Tensor& a, const Tensor& b, double scale, const Tensor& factors) {
  const int64_t numel = a.numel();
  double perElement = scale;
  // Per-sample values are sums (Sum) or means over a sample's elements (Mean and None); without
  // factors, Mean is the mean over every element.
  if (config.reduction == Reduction::Mean && !factors.defined()) perElement /= static_cast<double>(numel);
  if (config.reduction == Reduction::None || (config.reduction == Reduction::Mean && factors.defined())) {
    perElement /= static_cast<double>(numel / a.size(0));
  }
  Tensor diff = ops::sub(a, b);
  switch (config.criterion) {
    case Criterion::L2: ops::mulInPlace(diff, 2.0 * perElement); break;
    case Criterion::L1:
      ops::signInPlace(diff);
      ops::mulInPlace(diff, perElement);
      break;
    // smooth_l1 with beta 1: d inside [-1, 1], its sign outside.
    case Criterion::SmoothL1:
      ops::clampInPlace(diff, -1.0, 1.0);
      ops::mulInPlace(diff, perElement);
      break;
  }
  // After the criterion's own derivative: sign and clamp see the differences, not their weights.
  if (factors.defined()) ops::mulInPlace(diff, perSample(factors, diff));
  return diff;
}

// What the backward pass needs of one module's forward.
struct Saved {
  Tensor input;
  Tensor output;
  Tensor indices;  // max pool
};

struct Forward {
  std::vector<Tensor> taps;  // in config.taps order
  std::vector<Saved> saved;  // per module, when a backward follows
};

// Size-1 dims let NCHW and channels-last strides both count as contiguous in either format, and
// oneDNN and the reductions pick their kernels (and so their summation order) from the strides:
// every input gets the strides a fresh tensor of the network's layout would have, so one value
// never depends on the input's layout.
Tensor canonicalLayout(const Tensor& x, bool channelsLast) {
  const ops::Shape s = ops::shapeOf(x);
  // Channels-last: [N, C, *spatial] with C innermost, then the last spatial dim outward.
  ops::Shape canonical(s.size());
  int64_t stride = 1;
  if (channelsLast) {
    canonical[1] = 1;
    stride = s[1];
  }
  for (size_t d = s.size(); d-- > 2;) {
    canonical[d] = stride;
    stride *= s[d];
  }
  if (!channelsLast) {
    canonical[1] = stride;
    stride *= s[1];
  }
  canonical[0] = stride;
  if (ops::isContiguous(x, channelsLast) && ops::stridesOf(x) == canonical) return x;
  Tensor out = ops::empty(s, x.scalar_type(), ops::deviceOf(x), channelsLast);
  ops::copyInto(out, x);
  return out;
}

Forward runForward(const Network& net, const Config& config, const Tensor& x, bool forBackward) {
  const size_t count = net.modules.size();
  std::vector<bool> tapped(count, false);
  for (const Tap& tap : config.taps) tapped[static_cast<size_t>(tap.module)] = true;

  std::vector<Tensor> outputs(count);
  Forward fwd;
  if (forBackward) fwd.saved.resize(count);
  // oneDNN runs channels-last end to end (pools and their backward included) where the libtorch
  // allows it (ops::oneDnnChannelsLast); an NHWC input is already laid out so.
  Tensor h = net.oneDnn ? canonicalLayout(x, net.oneDnnChannelsLast) : x;
  bool reluDone = false;  // the conv before this module ran its ReLU
  for (size_t i = 0; i < count; ++i) {
    const Module& m = net.modules[i];
    Tensor out;
    switch (m.kind) {
      case ModuleKind::Conv: {
        const auto c = static_cast<size_t>(m.conv);
        // oneDNN runs the ReLU inside the conv, unless the conv is a tap and its pre-activation
        // values are wanted. Its ReLU maps NaN to 0 where ATen's keeps it, so only inputs checked
        // finite take it (a NaN could then come only from overflowing float32's range).
        reluDone = net.oneDnn && config.checkFinite && !tapped[i] && i + 1 < count &&
                   net.modules[i + 1].kind == ModuleKind::ReLU;
        out = convForward(net, c, h, reluDone);
        // oneDNN's input gradient is a forward conv of the output gradient alone: keeping the
        // input would hold a pool's output (or the input copy) to the end of the backward pass.
        if (forBackward && !net.oneDnn) fwd.saved[i].input = h;
        break;
      }
      case ModuleKind::ReLU:
        // In place unless the conv before it is a tap and must keep its
        // pre-activation values.
        out = reluDone ? h : tapped[i - 1] ? ops::relu(h) : ops::reluInPlace(h);
        reluDone = false;
        if (forBackward) fwd.saved[i].output = out;
        break;
      case ModuleKind::Pool:
        if (config.pool == PoolKind::Max) {
          auto [pooled, indices] = ops::maxPool(h);
          out = pooled;
          if (forBackward) fwd.saved[i].indices = indices;
        } else {
          out = ops::avgPool(h);
        }
        if (forBackward) fwd.saved[i].input = h;
        break;
    }
    if (tapped[i]) outputs[i] = out;
    h = out;
  }
  for (const Tap& tap : config.taps) fwd.taps.push_back(outputs[static_cast<size_t>(tap.module)]);
  return fwd;
}

// a += b, or a = b where a is still undefined.
void accumulate(Tensor& a, const Tensor& b) {
  if (a.defined()) {
    ops::addInPlace(a, b);
  } else {
    a = b;
  }
}

Tensor runBackward(const Network& net, const Config& config, Forward& fwd, std::vector<Tensor>& tapGrads) {
  const size_t count = net.modules.size();
  // Gradients arriving at each module's output from the taps.
  std::vector<Tensor> incoming(count);
  for (size_t t = 0; t < config.taps.size(); ++t) {
    accumulate(incoming[static_cast<size_t>(config.taps[t].module)], tapGrads[t]);
  }
  tapGrads.clear();

  Tensor g;
  for (size_t k = count; k-- > 0;) {
    if (incoming[k].defined()) accumulate(g, incoming[k]);
    incoming[k] = Tensor();
    const Module& m = net.modules[k];
    Saved& s = fwd.saved[k];
    switch (m.kind) {
      case ModuleKind::Conv: g = convBackwardInput(net, static_cast<size_t>(m.conv), g, s.input); break;
      // In place: g is this pass's own (a tap's gradient, a sum, or the module after's result).
      case ModuleKind::ReLU: ops::reluBackwardInPlace(g, s.output); break;
      case ModuleKind::Pool:
        g = config.pool == PoolKind::Max ? ops::maxPoolBackward(g, s.input, s.indices)
                                         : ops::avgPoolBackward(g, s.input);
        break;
    }
    s = Saved{};  // free activations as soon as they are used
  }
  return g;
}

// x * scale; x itself for a scale of 1 (a product that would change nothing: the default
// weights), one op fewer per tap.
Tensor scaled(const Tensor& x, double scale) { return scale == 1 ? x : ops::mul(x, scale); }

// The sum of a term's values: a 0-d term (reduction 'mean' or 'sum') is its own sum.
Tensor total(const Tensor& term) { return term.dim() == 0 ? term : ops::sum(term); }

// sum = sum + term, out of place: the first term is kept as the sum itself and is also a tap's
// term, so it must not be added to in place.
void addTo(Tensor& sum, const Tensor& term) { sum = sum.defined() ? ops::add(sum, term) : term; }

// Accumulates the loss, the per-tap terms and (optionally) d loss / d features.
LossResult reduceTaps(const Config& config, const std::vector<Tensor>& predTaps, const TargetFeatures& target,
                      bool wantGrad, const Tensor& factors, std::vector<Tensor>& tapGrads) {
  const ops::ScalarType accType = accumulationType(config);
  const size_t taps = config.taps.size();
  const bool withStyle = config.styleWeight > 0;
  std::vector<Tensor> featureTerms, styleTerms;
  Tensor loss;
  for (size_t t = 0; t < taps; ++t) {
    const double w = config.taps[t].weight;
    const Tensor a = ops::to(predTaps[t], accType);
    const Tensor b = ops::to(target.features[t], accType);
    const double featureScale = config.featureWeight * w;
    const Tensor feature = scaled(distance(config, a, b, factors), featureScale);
    featureTerms.push_back(total(feature));
    Tensor grad;
    if (wantGrad) grad = distanceGrad(config, a, b, featureScale, factors);
    if (withStyle) {
      const double styleScale = config.styleWeight * w;
      const Tensor gp = gram(a);
      const Tensor gt = ops::to(target.grams[t], accType);
      const Tensor style = scaled(distance(config, gp, gt, factors), styleScale);
      styleTerms.push_back(total(style));
      addTo(loss, ops::add(feature, style));
      if (wantGrad) {
        // G = F F^T / k  =>  dL/dF = (dL/dG + dL/dG^T) F / k.
        const Tensor dG = distanceGrad(config, gp, gt, styleScale, factors);
        const int64_t n = a.size(0), c = a.size(1);
        const Tensor flat = ops::reshape(a, {n, c, -1});
        Tensor dF = ops::bmm(ops::add(dG, ops::transpose(dG, 1, 2)), flat);
        ops::divInPlace(dF, static_cast<double>(a.numel() / n));
        ops::addInPlace(grad, ops::reshape(dF, ops::shapeOf(a)));
      }
    } else {
      addTo(loss, feature);
    }
    if (wantGrad) tapGrads.push_back(ops::to(grad, config.dtype));
  }
  LossResult result;
  result.loss = loss;
  // [taps, 2]: each tap's feature and style term.
  const Tensor features = ops::stack(featureTerms);
  result.terms = ops::stack({features, withStyle ? ops::stack(styleTerms) : ops::zerosLike(features)}, 1);
  return result;
}

}  // namespace

OneDnnWeights::OneDnnWeights(std::vector<Tensor> masterWeights, ops::ScalarType dtype, bool channelsLast)
    : masterWeights_(std::move(masterWeights)),
      dtype_(dtype),
      channelsLast_(channelsLast),
      forward_(masterWeights_.size()),
      backward_(masterWeights_.size()) {}

Tensor OneDnnWeights::forward(size_t conv, const Tensor& x) const { return lookUp(forward_[conv], conv, false, x); }

Tensor OneDnnWeights::backward(size_t conv, const Tensor& gradOutput) const {
  return lookUp(backward_[conv], conv, true, gradOutput);
}

Tensor OneDnnWeights::lookUp(std::list<Packed>& recent, size_t conv, bool backward, const Tensor& input) const {
  // One packing serves every shape where the libtorch's layout ignores it.
  const ops::Shape shape = ops::oneDnnLayoutFollowsInput() ? ops::shapeOf(input) : ops::Shape();
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = recent.begin(); it != recent.end(); ++it) {
    if (it->inputShape != shape) continue;
    recent.splice(recent.begin(), recent, it);
    return it->weight;
  }
  const Tensor dense = oneDnnDenseWeight(masterWeights_[conv], dtype_, channelsLast_, backward);
  recent.push_front({shape, ops::prepareOneDnnWeight(dense, ops::shapeOf(input))});
  if (recent.size() > kShapes) recent.pop_back();
  return recent.front().weight;
}

ops::ScalarType segmentationLogitsType(const Config& config) { return accumulationType(config); }

std::shared_ptr<const Network> buildNetwork(const Config& config, uint64_t seed, uint64_t generation) {
  auto net = std::make_shared<Network>();
  layOutModules(config, *net);
  const std::vector<int64_t> widths = convWidths(config, net->moduleIndexOfConv.size());
  // A dedicated generator, so the weights never depend on (or disturb)
  // libtorch's global RNG.
  ops::CpuGenerator gen(seed);
  int64_t in = config.inChannels;
  for (int64_t out : widths) {
    Tensor w = ops::empty(kernelShape(config, out, in), ops::ScalarType::Float, ops::kCpu);
    drawWeight(w, config, gen);
    net->masterWeights.push_back(w);
    in = out;
  }
  placeOnDevice(config, *net);
  net->seed = seed;
  net->generation = generation;
  return net;
}

std::shared_ptr<const Network> buildNetwork(const Config& config, const std::vector<Tensor>& weights,
                                            const std::vector<Tensor>& biases, uint64_t seed, uint64_t generation) {
  auto net = std::make_shared<Network>();
  layOutModules(config, *net);
  const std::vector<int64_t> widths = convWidths(config, net->moduleIndexOfConv.size());
  PL_CHECK(weights.size() == widths.size() && biases.size() == widths.size(), "expected ", widths.size(),
           " conv weights and biases, got ", weights.size(), " and ", biases.size());
  int64_t in = config.inChannels;
  for (size_t i = 0; i < widths.size(); ++i) {
    const int64_t out = widths[i];
    const ops::Shape shape = kernelShape(config, out, in);
    const int64_t count = out * in * (config.spatialDims == 3 ? 27 : 9);
    PL_CHECK(weights[i].numel() == count && biases[i].numel() == out, "conv ", i, " needs ", count, " weights and ",
             out, " biases");
    net->masterWeights.push_back(ops::contiguous(ops::reshape(ops::to(weights[i], ops::ScalarType::Float), shape)));
    in = out;
  }
  placeOnDevice(config, *net, biases);
  net->seed = seed;
  net->generation = generation;
  return net;
}

std::shared_ptr<const Network> withWeights(const Config& config, const Network& base,
                                           const std::vector<Tensor>& weights, const std::vector<Tensor>& biases,
                                           uint64_t generation) {
  PL_CHECK(weights.size() == base.masterWeights.size() && biases.size() == weights.size(), "expected ",
           base.masterWeights.size(), " conv weights and biases, got ", weights.size());
  auto net = std::make_shared<Network>(base);
  for (size_t i = 0; i < weights.size(); ++i) {
    PL_CHECK(ops::shapeOf(weights[i]) == ops::shapeOf(base.masterWeights[i]), "conv ", i, " weight shape mismatch");
    PL_CHECK(biases[i].dim() == 1 && biases[i].size(0) == base.masterWeights[i].size(0), "conv ", i,
             " bias shape mismatch");
    net->masterWeights[i] = ops::contiguous(ops::to(weights[i], ops::ScalarType::Float));
  }
  placeOnDevice(config, *net, biases);
  net->generation = generation;
  return net;
}

std::string prepackedOneDnnWeights() { return ops::hasOneDnn() ? ops::prepackedOneDnnWeights() : "none"; }

Error nonFiniteError(const char* what) {
  return Error(ErrorCode::NonFinite, std::string(what) +
                                         " contains NaN or Inf values (set "
                                         "checkFinite: false to let them propagate)");
}

void checkFinite(const Tensor& x, const char* what) {
  if (!ops::itemBool(ops::allFinite(x))) throw nonFiniteError(what);
}

std::vector<Tensor> features(const Network& net, const Config& config, const Tensor& x) {
  return runForward(net, config, x, false).taps;
}

TargetFeatures prepareTarget(const Network& net, const Config& config, const Tensor& target) {
  TargetFeatures prepared;
  prepared.features = runForward(net, config, target, false).taps;
  if (config.styleWeight > 0) {
    const ops::ScalarType accType = accumulationType(config);
    for (const Tensor& f : prepared.features) prepared.grams.push_back(gram(ops::to(f, accType)));
  }
  prepared.generation = net.generation;
  return prepared;
}

LossResult lossAndGrad(const Network& net, const Config& config, const Tensor& pred,
                       std::shared_ptr<const TargetFeatures> target, bool wantGrad, const Tensor& sampleFactors) {
  Forward fwd = runForward(net, config, pred, wantGrad);
  std::vector<Tensor> tapGrads;
  LossResult result = reduceTaps(config, fwd.taps, *target, wantGrad, sampleFactors, tapGrads);
  fwd.taps.clear();
  target.reset();
  if (wantGrad) result.grad = runBackward(net, config, fwd, tapGrads);
  return result;
}

LossResult lossAndGradSegmentation(const Network& net, const Config& config, const Tensor& logits, const Tensor& labels,
                                   int64_t ignoreIndex, bool wantGrad) {
  const int64_t classes = logits.size(1);
  const Tensor valid = ops::ne(labels, static_cast<double>(ignoreIndex));
  const Tensor outOfRange =
      ops::logicalAnd(ops::logicalOr(ops::lt(labels, 0), ops::ge(labels, static_cast<double>(classes))), valid);
  if (ops::itemBool(ops::any(outOfRange))) {
    const int64_t bad = ops::itemInt(ops::select(ops::maskedSelect(labels, outOfRange), 0, 0));
    throw Error(ErrorCode::Shape, "labels must be class ids in [0, " + std::to_string(classes) + ") or ignoreIndex (" +
                                      std::to_string(ignoreIndex) + "); found " + std::to_string(bad));
  }
  // The softmax and its backward run in the logits' dtype (float32 under a reduced compute dtype);
  // only the network sees the compute dtype.
  const Tensor mask = ops::to(ops::unsqueeze(valid, 1), logits.scalar_type());
  const Tensor probs = ops::softmax(logits, 1);
  const Tensor pred = ops::to(ops::mul(probs, mask), config.dtype);
  const Tensor oneHot = ops::oneHot(ops::maskedFill(labels, ops::logicalNot(valid), 0), classes);
  // one_hot puts the classes last: [N, *spatial, C] to [N, C, *spatial].
  ops::Shape classesFirst{0, oneHot.dim() - 1};
  for (int64_t d = 1; d + 1 < oneHot.dim(); ++d) classesFirst.push_back(d);
  const Tensor target =
      ops::mul(ops::to(ops::permute(oneHot, classesFirst), config.dtype), ops::to(mask, config.dtype));
  LossResult result = lossAndGrad(
      net, config, ops::contiguous(pred),
      std::make_shared<const TargetFeatures>(prepareTarget(net, config, ops::contiguous(target))), wantGrad);
  if (wantGrad) {
    // Through the mask, then the softmax: dL/dz = p * (g - sum_c g p).
    Tensor g = ops::to(result.grad, logits.scalar_type());
    ops::mulInPlace(g, mask);
    result.grad = ops::mul(probs, ops::sub(g, ops::sum(ops::mul(g, probs), 1, true)));
  }
  return result;
}

LossResult lossAndGradInstanceMasks(const Network& net, const Config& config, const Tensor& logits, const Tensor& masks,
                                    const Tensor& sampleFactors, bool wantGrad) {
  // As the segmentation's softmax: the sigmoid and its backward run in the logits' dtype.
  const Tensor probs = ops::sigmoid(logits);
  LossResult result =
      lossAndGrad(net, config, ops::contiguous(ops::to(probs, config.dtype)),
                  std::make_shared<const TargetFeatures>(prepareTarget(net, config, masks)), wantGrad, sampleFactors);
  if (wantGrad) {
    // d sigmoid(z) / dz = p (1 - p) = p - p^2.
    const Tensor g = ops::to(result.grad, logits.scalar_type());
    result.grad = ops::mul(g, ops::sub(probs, ops::mul(probs, probs)));
  }
  return result;
}

}  // namespace perceptual
