// A loss call's step, between the tensors the Node-API layer read and the ones it hands back:
// masks, layouts, finiteness checks, CUDA streams and graphs, around the algorithm of
// perceptual.cc. No Node-API here: loss.cc reads the arguments and writes the results.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda.h"
#include "enums.h"
#include "ops.h"
#include "perceptual.h"

namespace perceptual {

inline uint64_t nextId() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}

// A prepared target: its input, kept to redo the features after reseed(), and the features.
struct PreparedState {
  const uint64_t id = nextId();  // never reused, unlike an address: part of a CUDA graph's key
  Tensor input;                  // NCHW, compute dtype, on the device
  std::vector<int64_t> userShape;
  Layout layout = Layout::NCHW;
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

// One tensor-like argument, resolved on the JS thread.
struct Operand {
  Tensor tensor;      // in the user's layout, dtype and device
  bool host = false;  // came from a TypedArray: results go back as TypedArrays
  std::shared_ptr<PreparedState> prepared;
};

// A call's inputs, captured on the JS thread so an async job owns everything it reads.
struct Call {
  std::shared_ptr<const Network> net;
  std::shared_ptr<const Config> config;
  Operand pred;
  Operand target;
  Layout layout = Layout::NCHW;
  std::shared_ptr<cuda::Context> cuda;
  Tensor mask;  // undefined without one
};

struct LossOutput {
  Tensor loss;                                        // float64 CPU
  Tensor terms;                                       // float64 CPU
  Tensor grad;                                        // like pred: its layout, device and dtype
  ops::ScalarType lossType = ops::ScalarType::Float;  // per-sample losses come back in pred's dtype
  bool hostGrad = false;
};

LossOutput computeLoss(const Call& call, bool wantGrad);

// call.pred: the logits; call.target: the labels [N, H, W] ([N, D, H, W] for volumes).
LossOutput computeSegmentation(const Call& call, int64_t ignoreIndex);

// call.pred: the mask logits [M, 1, *spatial]; call.target: the masks. `weights` (optional, [M]
// float64 CPU, checked by the TS schema) weigh the instances.
LossOutput computeInstanceMasks(const Call& call, const Tensor& weights, bool wantGrad);

// The features of call.pred at each tap, like call.pred (layout, device, dtype).
std::vector<Tensor> computeFeatures(const Call& call);

// A prepared target of `operand` (not itself prepared) for the loss `owner`.
std::shared_ptr<PreparedState> prepareTargetState(const Network& net, const Config& config, const Operand& operand,
                                                  Layout layout, uint64_t owner);

}  // namespace perceptual
