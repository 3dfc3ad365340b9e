// The random-weight VGG network and the perceptual loss, written once over the op layer (ops.h).
//
// The network is frozen, so the pred branch needs only d loss / d input: the
// backward pass is written out module by module with the same kernels
// autograd would call, without recording a graph or any weight gradient.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "enums.h"
#include "ops.h"

namespace perceptual {

using ops::Tensor;

struct Tap {
  int64_t module;  // index in the torchvision-style Sequential; features are its
                   // output
  double weight;
};

// Resolved by the TS options schema; native code trusts its values.
struct Config {
  int64_t inChannels = 1;
  int64_t spatialDims = 2;    // 2: [N, C, H, W] images; 3: [N, C, D, H, W] volumes
  std::vector<int64_t> arch;  // conv widths; 0 stands for 'M'
  std::vector<Tap> taps;      // in the user's order
  Criterion criterion = Criterion::L2;
  double featureWeight = 1.0;
  double styleWeight = 0.0;
  Reduction reduction = Reduction::Mean;
  InitKind init = InitKind::KaimingNormal;
  double initStd = 0.0;  // for InitKind::Normal
  PoolKind pool = PoolKind::Max;
  ops::Device device;
  ops::ScalarType dtype = ops::ScalarType::Float;
  bool checkFinite = true;
  // CUDA performance switches (no effect on the CPU); see native/cuda.h.
  bool cudnnBenchmark = false;
  bool channelsLast = false;
  bool cudaGraphs = false;
  bool targetStream = false;
  bool allowTF32 = true;
};

enum class ModuleKind { Conv, ReLU, Pool };

struct Module {
  ModuleKind kind;
  int64_t conv;  // index into Network::weights for convs, -1 otherwise
};

// The weights of the CPU convs that run on oneDNN, in oneDNN's own layout: forward, and for the
// input gradient (flipped in space, in and out swapped). Where the libtorch lets oneDNN pick that
// layout for an input shape (ops::oneDnnLayoutFollowsInput), each conv keeps its weights packed
// for the last kShapes input shapes it met: oneDNN's kernels choose their weight blocking by shape
// (on AVX2 CPUs 8 to 32 output channels, or none), and a weight packed for another shape is
// reordered again, blocked to blocked, on every call (0.1 s for a 512x512 conv there). A new shape
// packs from the float32 weights as drawn, so nothing else is kept. Concurrent calls share it.
class OneDnnWeights {
 public:
  // A training shape and one more (the last, smaller batch; validation) stay packed.
  static constexpr size_t kShapes = 2;

  OneDnnWeights(std::vector<Tensor> masterWeights, ops::ScalarType dtype, bool channelsLast);

  // The weight for conv `conv` of input `x`; for its input gradient, of `gradOutput`.
  Tensor forward(size_t conv, const Tensor& x) const;
  Tensor backward(size_t conv, const Tensor& gradOutput) const;

 private:
  struct Packed {
    ops::Shape inputShape;
    Tensor weight;
  };
  Tensor lookUp(std::list<Packed>& recent, size_t conv, bool backward, const Tensor& input) const;

  std::vector<Tensor> masterWeights_;  // float32, as drawn
  ops::ScalarType dtype_;
  bool channelsLast_;
  mutable std::mutex mutex_;
  mutable std::vector<std::list<Packed>> forward_, backward_;  // per conv, most recent first
};

// Immutable once built: concurrent calls share it, reseed() swaps in a new one.
struct Network {
  std::vector<Module> modules;  // truncated after the deepest tap
  std::vector<int64_t> moduleIndexOfConv;
  std::vector<Tensor> masterWeights;  // float32 CPU, as drawn
  std::vector<Tensor> weights;        // compute dtype, on the device; empty where oneDnn
  std::vector<Tensor> biases;         // dense, as stateDict() gives them
  // CPU float32 and bfloat16: every conv runs on oneDNN, the input gradient as a forward conv
  // with flipped, transposed weights (see perceptual.cc).
  bool oneDnn = false;
  bool oneDnnChannelsLast = false;   // its activations and weights channels-last (ops::oneDnnChannelsLast)
  std::vector<Tensor> oneDnnBiases;  // the biases as the conv beside their weight takes them
  std::shared_ptr<const OneDnnWeights> oneDnnWeights;
  uint64_t seed = 0;
  uint64_t generation = 0;  // bumps on every reseed/load, to invalidate prepared targets
};

std::shared_ptr<const Network> buildNetwork(const Config& config, uint64_t seed, uint64_t generation);

// The same network with given float32 CPU weights and biases (in conv order, any shape holding the
// right number of values) instead of drawn ones: nothing is drawn. `seed` is only recorded.
std::shared_ptr<const Network> buildNetwork(const Config& config, const std::vector<Tensor>& weights,
                                            const std::vector<Tensor>& biases, uint64_t seed, uint64_t generation);

// Replaces the drawn weights by given float32 CPU tensors (in conv order).
std::shared_ptr<const Network> withWeights(const Config& config, const Network& net, const std::vector<Tensor>& weights,
                                           const std::vector<Tensor>& biases, uint64_t generation);

// Features of a prepared target: computed once, reused by every call.
struct TargetFeatures {
  std::vector<Tensor> features;  // per tap, NCHW, compute dtype
  std::vector<Tensor> grams;     // per tap when styleWeight > 0
  uint64_t generation = 0;
};

struct LossResult {
  Tensor loss;   // 0-d, or [N] for Reduction::None; float64 for the caller
  Tensor terms;  // [taps, 2]: weighted feature and style contributions
  Tensor grad;   // NCHW, compute dtype; undefined when not asked for
};

// Every entry point takes NCHW (NCDHW) tensors already in the compute dtype and on the device.
std::vector<Tensor> features(const Network& net, const Config& config, const Tensor& x);

TargetFeatures prepareTarget(const Network& net, const Config& config, const Tensor& target);

// `sampleFactors` (optional, [N] in float32 or float64): each sample's loss weighs this much in the
// result, its per-sample value taken as under 'sum' (Reduction::Sum) or as under 'none' (Mean and
// None). Mean then sums the weighted values (the caller normalises the factors), Sum sums them,
// None gives them per sample. Without factors, Mean averages every element of a tap.
// `target` is let go of before the backward pass: its features are not needed there, and a step's
// peak memory falls by their size unless the caller (a prepared target) keeps them.
LossResult lossAndGrad(const Network& net, const Config& config, const Tensor& pred,
                       std::shared_ptr<const TargetFeatures> target, bool wantGrad,
                       const Tensor& sampleFactors = Tensor());

// The dtype the logits come in: the compute dtype, or float32 under a reduced one.
ops::ScalarType segmentationLogitsType(const Config& config);

// pred = softmax(logits) and target = one_hot(labels), both masked where labels == ignoreIndex;
// the gradient is with respect to the logits (in the logits' dtype).
LossResult lossAndGradSegmentation(const Network& net, const Config& config, const Tensor& logits, const Tensor& labels,
                                   int64_t ignoreIndex, bool wantGrad);

// Instance masks: pred = sigmoid(logits) (in the logits' dtype), target = masks (compute dtype),
// weighted per instance by `sampleFactors` as lossAndGrad takes them; the gradient is with respect
// to the logits.
LossResult lossAndGradInstanceMasks(const Network& net, const Config& config, const Tensor& logits, const Tensor& masks,
                                    const Tensor& sampleFactors, bool wantGrad);

// Which CPU convs (float32, bfloat16) run with weights reordered once into oneDNN's layout: "all"
// (libtorch 2.x and the stable ABI, their ReLU fused), "wide" (1.13: Cin * Cout >= 256 * 512),
// "none" (no oneDNN).
std::string prepackedOneDnnWeights();

// Throws ErrorCode::NonFinite when x holds NaN or Inf.
void checkFinite(const Tensor& x, const char* what);
Error nonFiniteError(const char* what);

}  // namespace perceptual
