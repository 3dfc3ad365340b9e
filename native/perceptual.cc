#include "perceptual.h"

#include <ATen/CPUGeneratorImpl.h>

#include <array>
#include <cmath>

#include "compat.h"

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
  TORCH_CHECK(last >= 0, "a perceptual loss needs at least one tap");
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
  TORCH_CHECK(static_cast<int64_t>(net.modules.size()) > last, "tap module ", last, " lies beyond the architecture");
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

void drawWeight(at::Tensor& w, const Config& config, at::Generator& gen) {
  const double fanIn = static_cast<double>(w.size(1) * 9);
  const double fanOut = static_cast<double>(w.size(0) * 9);
  switch (config.init) {
    case InitKind::KaimingNormal: w.normal_(0.0, std::sqrt(2.0 / fanIn), gen); break;
    case InitKind::KaimingUniform: {
      const double bound = std::sqrt(6.0 / fanIn);
      w.uniform_(-bound, bound, gen);
      break;
    }
    case InitKind::XavierNormal: w.normal_(0.0, std::sqrt(2.0 / (fanIn + fanOut)), gen); break;
    case InitKind::XavierUniform: {
      const double bound = std::sqrt(6.0 / (fanIn + fanOut));
      w.uniform_(-bound, bound, gen);
      break;
    }
    case InitKind::Normal: w.normal_(0.0, config.initStd, gen); break;
  }
}

// `biases`: given ones (any shape holding Cout values), or none for zeros.
void placeOnDevice(const Config& config, Network& net, const std::vector<at::Tensor>& biases = {}) {
  net.weights.clear();
  net.biases.clear();
  net.oneDnnBiases.clear();
  net.backwardWeights.clear();
  net.oneDnn =
      config.device.is_cpu() && (config.dtype == at::kFloat || config.dtype == at::kBFloat16) && at::hasMKLDNN();
  // Channels-last weights with channels-last inputs select cuDNN's NHWC kernels. On oneDNN,
  // channels-last activations are read and written in place, where NCHW ones are reordered to a
  // blocked layout and back around every conv; channels-last weights spare a copy per call.
  const auto format = (config.device.is_cuda() && config.channelsLast) || net.oneDnn ? at::MemoryFormat::ChannelsLast
                                                                                     : at::MemoryFormat::Contiguous;
  const auto options = at::TensorOptions().device(config.device).dtype(config.dtype);
  for (size_t i = 0; i < net.masterWeights.size(); ++i) {
    const at::Tensor& master = net.masterWeights[i];
    const at::Tensor weight = master.to(config.device, config.dtype).contiguous(format);
    net.biases.push_back(biases.empty() ? at::zeros({master.size(0)}, options)
                                        : biases[i].reshape({-1}).to(config.device, config.dtype).contiguous());
    if (!net.oneDnn) {
      net.weights.push_back(weight);
      continue;
    }
    // Reordered once here rather than by oneDNN on every call (where the libtorch allows it).
    net.weights.push_back(compat::prepareOneDnnWeight(weight));
    net.oneDnnBiases.push_back(compat::prepareOneDnnBias(net.biases.back(), net.weights.back()));
    // For stride 1 and padding 1, d input = conv(d output, W flipped in space, in/out swapped).
    net.backwardWeights.push_back(compat::prepareOneDnnWeight(weight.flip({2, 3}).transpose(0, 1).contiguous(format)));
  }
}

// ATen routes small CPU batches to its im2col + BLAS convolution (with the reference BLAS on
// Debian, many times slower than oneDNN); call oneDNN directly for every float32 and bfloat16 CPU
// conv.
at::Tensor convForward(const Network& net, size_t c, const at::Tensor& x, bool relu) {
  if (net.oneDnn) return compat::oneDnnConv3x3(x, net.weights[c], net.oneDnnBiases[c], relu);
  return at::conv2d(x, net.weights[c], net.biases[c], {1, 1}, {1, 1});
}

at::Tensor convBackwardInput(const Network& net, size_t c, const at::Tensor& gradOutput, const at::Tensor& input) {
  if (net.oneDnn) return compat::oneDnnConv3x3(gradOutput, net.backwardWeights[c], compat::kNone, false);
  return compat::conv3x3BackwardInput(gradOutput, input, net.weights[c]);
}

bool isReducedFloat(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// Gram matrix F F^T / (C*H*W) per sample.
at::Tensor gram(const at::Tensor& f) {
  const int64_t n = f.size(0), c = f.size(1), hw = f.size(2) * f.size(3);
  const at::Tensor flat = f.reshape({n, c, hw});
  return at::bmm(flat, flat.transpose(1, 2)).div_(static_cast<double>(c * hw));
}

// The criterion's value under the configured reduction: a 0-d tensor, or [N]
// for 'none'.
at::Tensor distance(const Config& config, const at::Tensor& a, const at::Tensor& b) {
  const bool none = config.reduction == Reduction::None;
  const int64_t reduction =
      none ? at::Reduction::None : (config.reduction == Reduction::Sum ? at::Reduction::Sum : at::Reduction::Mean);
  at::Tensor d;
  switch (config.criterion) {
    case Criterion::L2: d = at::mse_loss(a, b, reduction); break;
    case Criterion::L1: d = at::l1_loss(a, b, reduction); break;
    case Criterion::SmoothL1: d = at::smooth_l1_loss(a, b, reduction, 1.0); break;
  }
  return none ? d.reshape({d.size(0), -1}).mean(1) : d;
}

// d distance / d a, scaled by `scale` (the tap's weight times the term's
// weight).
at::Tensor distanceGrad(const Config& config, const at::Tensor& a, const at::Tensor& b, double scale) {
  const int64_t numel = a.numel();
  double perElement = scale;
  if (config.reduction == Reduction::Mean) perElement /= static_cast<double>(numel);
  if (config.reduction == Reduction::None) perElement /= static_cast<double>(numel / a.size(0));
  at::Tensor diff = a - b;
  switch (config.criterion) {
    case Criterion::L2: return diff.mul_(2.0 * perElement);
    case Criterion::L1: return diff.sign_().mul_(perElement);
    // smooth_l1 with beta 1: d inside [-1, 1], its sign outside.
    case Criterion::SmoothL1: return diff.clamp_(-1.0, 1.0).mul_(perElement);
  }
  return diff;
}

// What the backward pass needs of one module's forward.
struct Saved {
  at::Tensor input;
  at::Tensor output;
  at::Tensor indices;  // max pool
};

struct Forward {
  std::vector<at::Tensor> taps;  // in config.taps order
  std::vector<Saved> saved;      // per module, when a backward follows
};

// Size-1 dims let NCHW and channels-last strides both count as channels-last contiguous, and
// oneDNN and the reductions pick their kernels (and so their summation order) from the strides:
// every input gets the strides at::empty would give, so one value never depends on its layout.
at::Tensor canonicalChannelsLast(const at::Tensor& x) {
  const auto s = x.sizes();
  const std::array<int64_t, 4> canonical{s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]};
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast) && x.strides() == at::IntArrayRef(canonical)) return x;
  return at::empty(s, x.options().memory_format(at::MemoryFormat::ChannelsLast)).copy_(x);
}

Forward runForward(const Network& net, const Config& config, const at::Tensor& x, bool forBackward) {
  const size_t count = net.modules.size();
  std::vector<bool> tapped(count, false);
  for (const Tap& tap : config.taps) tapped[static_cast<size_t>(tap.module)] = true;

  std::vector<at::Tensor> outputs(count);
  Forward fwd;
  if (forBackward) fwd.saved.resize(count);
  // oneDNN runs channels-last end to end (pools and their backward included); an NHWC input is
  // already laid out so.
  at::Tensor h = net.oneDnn ? canonicalChannelsLast(x) : x;
  bool reluDone = false;  // the conv before this module ran its ReLU
  for (size_t i = 0; i < count; ++i) {
    const Module& m = net.modules[i];
    at::Tensor out;
    switch (m.kind) {
      case ModuleKind::Conv: {
        const auto c = static_cast<size_t>(m.conv);
        // oneDNN runs the ReLU inside the conv, unless the conv is a tap and its pre-activation
        // values are wanted. Its ReLU maps NaN to 0 where ATen's keeps it, so only inputs checked
        // finite take it (a NaN could then come only from overflowing float32's range).
        reluDone = net.oneDnn && config.checkFinite && !tapped[i] && i + 1 < count &&
                   net.modules[i + 1].kind == ModuleKind::ReLU;
        out = convForward(net, c, h, reluDone);
        if (forBackward) fwd.saved[i].input = h;
        break;
      }
      case ModuleKind::ReLU:
        // In place unless the conv before it is a tap and must keep its
        // pre-activation values.
        out = reluDone ? h : tapped[i - 1] ? at::relu(h) : at::relu_(h);
        reluDone = false;
        if (forBackward) fwd.saved[i].output = out;
        break;
      case ModuleKind::Pool:
        if (config.pool == PoolKind::Max) {
          auto [pooled, indices] = at::max_pool2d_with_indices(h, {2, 2}, {2, 2});
          out = pooled;
          if (forBackward) fwd.saved[i].indices = indices;
        } else {
          out = at::avg_pool2d(h, {2, 2}, {2, 2});
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

at::Tensor runBackward(const Network& net, const Config& config, Forward& fwd, std::vector<at::Tensor>& tapGrads) {
  const size_t count = net.modules.size();
  // Gradients arriving at each module's output from the taps.
  std::vector<at::Tensor> incoming(count);
  for (size_t t = 0; t < config.taps.size(); ++t) {
    auto& slot = incoming[static_cast<size_t>(config.taps[t].module)];
    slot = slot.defined() ? slot.add_(tapGrads[t]) : tapGrads[t];
  }
  tapGrads.clear();

  at::Tensor g;
  for (size_t k = count; k-- > 0;) {
    if (incoming[k].defined()) g = g.defined() ? g.add_(incoming[k]) : incoming[k];
    incoming[k].reset();
    const Module& m = net.modules[k];
    Saved& s = fwd.saved[k];
    switch (m.kind) {
      case ModuleKind::Conv: g = convBackwardInput(net, static_cast<size_t>(m.conv), g, s.input); break;
      case ModuleKind::ReLU: g = at::threshold_backward(g, s.output, 0); break;
      case ModuleKind::Pool:
        g = config.pool == PoolKind::Max
                ? at::max_pool2d_with_indices_backward(g, s.input, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false, s.indices)
                : compat::avgPool2x2Backward(g, s.input);
        break;
    }
    s = Saved{};  // free activations as soon as they are used
  }
  return g;
}

// Accumulates the loss, the per-tap terms and (optionally) d loss / d features.
LossResult reduceTaps(const Config& config, const std::vector<at::Tensor>& predTaps, const TargetFeatures& target,
                      bool wantGrad, std::vector<at::Tensor>& tapGrads) {
  const at::ScalarType accType = isReducedFloat(config.dtype) ? at::kFloat : config.dtype;
  const size_t taps = config.taps.size();
  std::vector<at::Tensor> termValues;
  at::Tensor loss;
  for (size_t t = 0; t < taps; ++t) {
    const double w = config.taps[t].weight;
    const at::Tensor a = predTaps[t].to(accType);
    const at::Tensor b = target.features[t].to(accType);
    const double featureScale = config.featureWeight * w;
    at::Tensor feature = distance(config, a, b).mul(featureScale);
    at::Tensor style = at::zeros_like(feature);
    at::Tensor grad;
    if (wantGrad) grad = distanceGrad(config, a, b, featureScale);
    if (config.styleWeight > 0) {
      const double styleScale = config.styleWeight * w;
      const at::Tensor gp = gram(a);
      const at::Tensor& gt = target.grams[t];
      style = distance(config, gp, gt.to(accType)).mul(styleScale);
      if (wantGrad) {
        // G = F F^T / k  =>  dL/dF = (dL/dG + dL/dG^T) F / k.
        const at::Tensor dG = distanceGrad(config, gp, gt.to(accType), styleScale);
        const int64_t n = a.size(0), c = a.size(1), hw = a.size(2) * a.size(3);
        const at::Tensor flat = a.reshape({n, c, hw});
        at::Tensor dF = at::bmm(dG + dG.transpose(1, 2), flat).div_(static_cast<double>(c * hw));
        grad.add_(dF.reshape(a.sizes()));
      }
    }
    at::Tensor total = feature + style;
    loss = loss.defined() ? loss.add_(total) : total;
    termValues.push_back(at::stack({feature.sum(), style.sum()}));
    if (wantGrad) tapGrads.push_back(grad.to(config.dtype));
  }
  LossResult result;
  result.loss = loss;
  result.terms = at::stack(termValues);
  return result;
}

}  // namespace

at::ScalarType segmentationLogitsType(const Config& config) {
  return isReducedFloat(config.dtype) ? at::kFloat : config.dtype;
}

std::shared_ptr<const Network> buildNetwork(const Config& config, uint64_t seed, uint64_t generation) {
  auto net = std::make_shared<Network>();
  layOutModules(config, *net);
  const std::vector<int64_t> widths = convWidths(config, net->moduleIndexOfConv.size());
  // A dedicated generator, so the weights never depend on (or disturb)
  // libtorch's global RNG.
  at::Generator gen = at::detail::createCPUGenerator(seed);
  int64_t in = config.inChannels;
  for (int64_t out : widths) {
    at::Tensor w = at::empty({out, in, 3, 3}, at::TensorOptions().dtype(at::kFloat));
    drawWeight(w, config, gen);
    net->masterWeights.push_back(w);
    in = out;
  }
  placeOnDevice(config, *net);
  net->seed = seed;
  net->generation = generation;
  return net;
}

std::shared_ptr<const Network> buildNetwork(const Config& config, const std::vector<at::Tensor>& weights,
                                            const std::vector<at::Tensor>& biases, uint64_t seed, uint64_t generation) {
  auto net = std::make_shared<Network>();
  layOutModules(config, *net);
  const std::vector<int64_t> widths = convWidths(config, net->moduleIndexOfConv.size());
  TORCH_CHECK(weights.size() == widths.size() && biases.size() == widths.size(), "expected ", widths.size(),
              " conv weights and biases, got ", weights.size(), " and ", biases.size());
  int64_t in = config.inChannels;
  for (size_t i = 0; i < widths.size(); ++i) {
    const int64_t out = widths[i];
    TORCH_CHECK(weights[i].numel() == out * in * 9 && biases[i].numel() == out, "conv ", i, " needs ", out * in * 9,
                " weights and ", out, " biases");
    net->masterWeights.push_back(weights[i].to(at::kFloat).reshape({out, in, 3, 3}).contiguous());
    in = out;
  }
  placeOnDevice(config, *net, biases);
  net->seed = seed;
  net->generation = generation;
  return net;
}

std::shared_ptr<const Network> withWeights(const Config& config, const Network& base,
                                           const std::vector<at::Tensor>& weights,
                                           const std::vector<at::Tensor>& biases, uint64_t generation) {
  TORCH_CHECK(weights.size() == base.masterWeights.size() && biases.size() == weights.size(), "expected ",
              base.masterWeights.size(), " conv weights and biases, got ", weights.size());
  auto net = std::make_shared<Network>(base);
  for (size_t i = 0; i < weights.size(); ++i) {
    TORCH_CHECK(weights[i].sizes() == base.masterWeights[i].sizes(), "conv ", i, " weight shape mismatch");
    TORCH_CHECK(biases[i].dim() == 1 && biases[i].size(0) == base.masterWeights[i].size(0), "conv ", i,
                " bias shape mismatch");
    net->masterWeights[i] = weights[i].to(at::kFloat).contiguous();
  }
  placeOnDevice(config, *net, biases);
  net->generation = generation;
  return net;
}

std::string prepackedOneDnnWeights() { return at::hasMKLDNN() ? compat::kPrepackedOneDnnWeights : "none"; }

Error nonFiniteError(const char* what) {
  return Error(ErrorCode::NonFinite, std::string(what) +
                                         " contains NaN or Inf values (set "
                                         "checkFinite: false to let them propagate)");
}

void checkFinite(const at::Tensor& x, const char* what) {
  if (!at::isfinite(x).all().item<bool>()) throw nonFiniteError(what);
}

std::vector<at::Tensor> features(const Network& net, const Config& config, const at::Tensor& x) {
  return runForward(net, config, x, false).taps;
}

TargetFeatures prepareTarget(const Network& net, const Config& config, const at::Tensor& target) {
  TargetFeatures prepared;
  prepared.features = runForward(net, config, target, false).taps;
  if (config.styleWeight > 0) {
    const at::ScalarType accType = isReducedFloat(config.dtype) ? at::kFloat : config.dtype;
    for (const at::Tensor& f : prepared.features) prepared.grams.push_back(gram(f.to(accType)));
  }
  prepared.generation = net.generation;
  return prepared;
}

LossResult lossAndGrad(const Network& net, const Config& config, const at::Tensor& pred, const TargetFeatures& target,
                       bool wantGrad) {
  Forward fwd = runForward(net, config, pred, wantGrad);
  std::vector<at::Tensor> tapGrads;
  LossResult result = reduceTaps(config, fwd.taps, target, wantGrad, tapGrads);
  fwd.taps.clear();
  if (wantGrad) result.grad = runBackward(net, config, fwd, tapGrads);
  return result;
}

LossResult lossAndGradSegmentation(const Network& net, const Config& config, const at::Tensor& logits,
                                   const at::Tensor& labels, int64_t ignoreIndex, bool wantGrad) {
  const int64_t classes = logits.size(1);
  const at::Tensor valid = labels.ne(ignoreIndex);
  const at::Tensor outOfRange = at::logical_and(at::logical_or(labels.lt(0), labels.ge(classes)), valid);
  if (outOfRange.any().item<bool>()) {
    const int64_t bad = labels.masked_select(outOfRange).flatten()[0].item<int64_t>();
    throw Error(ErrorCode::Shape, "labels must be class ids in [0, " + std::to_string(classes) + ") or ignoreIndex (" +
                                      std::to_string(ignoreIndex) + "); found " + std::to_string(bad));
  }
  // The softmax and its backward run in the logits' dtype (float32 under a reduced compute dtype);
  // only the network sees the compute dtype.
  const at::Tensor mask = valid.unsqueeze(1).to(logits.scalar_type());
  const at::Tensor probs = at::softmax(logits, 1);
  const at::Tensor pred = (probs * mask).to(config.dtype);
  const at::Tensor target =
      at::one_hot(labels.masked_fill(valid.logical_not(), 0), classes).permute({0, 3, 1, 2}).to(config.dtype) *
      mask.to(config.dtype);
  LossResult result =
      lossAndGrad(net, config, pred.contiguous(), prepareTarget(net, config, target.contiguous()), wantGrad);
  if (wantGrad) {
    // Through the mask, then the softmax: dL/dz = p * (g - sum_c g p).
    const at::Tensor g = result.grad.to(logits.scalar_type()).mul_(mask);
    result.grad = probs * (g - (g * probs).sum(1, true));
  }
  return result;
}

}  // namespace perceptual
