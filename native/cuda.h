// The CUDA-only parts of a loss (its streams and graphs), behind one
// compile-time switch: PL_WITH_CUDA, which the build defines when the libtorch
// it finds has CUDA. Without it everything here is an inline no-op (or, for
// requireDevice, the CPU-only answer), so the rest of the addon is written
// once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda_device.h"
#include "graph_cache.h"
#include "ops.h"
#include "perceptual.h"

namespace perceptual::cuda {

// Throws ERR_DEVICE unless `device` can be used here: a CUDA device needs a
// libtorch with CUDA, a usable GPU, and an index below the device count.
inline void requireDevice(const ops::Device& device) {
  if (!device.is_cuda()) return;
  if (!ops::hasCuda()) {
    throw Error(ErrorCode::Device, "device '" + device.str() +
                                       "' needs CUDA, but the loaded libtorch has no CUDA support "
                                       "or sees no usable GPU; "
                                       "use device: 'cpu' or 'auto'");
  }
  const int count = ops::cudaDeviceCount();
  const int index = device.ordinal();
  if (index < 0 || index >= count) {
    throw Error(ErrorCode::Device, "device '" + device.str() + "' is out of range: " + std::to_string(count) +
                                       " CUDA device(s), cuda:0 to cuda:" + std::to_string(count - 1));
  }
}

// One loss step: the result and, when the inputs are checked on the device, a
// 0-d bool tensor that is true when every input was finite. It is read once the
// step is over, with the loss value, so the check costs no extra
// synchronization.
struct Step {
  LossResult result;
  ops::Tensor finite;
};

// Computes a step from the pred and target tensors as the user gave them
// (already on the device).
using StepFn = std::function<Step(const ops::Tensor& pred, const ops::Tensor& target)>;

// What a captured graph must keep alive: the network's weights, a prepared
// target's features.
using KeepAlive = std::vector<std::shared_ptr<const void>>;

#if defined(PL_WITH_CUDA)

// A loss's CUDA state: its streams and its graph cache. Inert for a CPU loss.
class Context {
 public:
  explicit Context(const Config& config);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // While the returned handle lives: the loss's device and stream are current,
  // its cuDNN switches are applied, and its stream has waited for the work
  // already queued on the device's default stream (uploads by Tensor.from, the
  // user's own tensors). When it goes, the default stream waits for the loss's,
  // so Tensors handed back are safe to use anywhere.
  std::shared_ptr<void> enter() const;

  // Computes a target's features on the target stream when `targetStream` is on
  // (the current stream then waits for them), else on the current stream.
  // `alsoUsed` are further tensors fn made there that the current stream goes
  // on to use.
  TargetFeatures onTargetStream(const std::function<TargetFeatures()>& fn,
                                const std::vector<ops::Tensor>& alsoUsed) const;

  // A step through a CUDA graph when `cudaGraphs` is on and the key repeats;
  // else fn(pred, target). A graph's results are copied out of its static
  // buffers before they are handed back.
  Step step(const GraphKey& key, uint64_t generation, const ops::Tensor& pred, const ops::Tensor& target,
            const StepFn& fn, KeepAlive keep);

  // Whether step() may use graphs (a CUDA loss with `cudaGraphs` on).
  bool graphs() const;
  size_t cachedGraphs() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

#else

// Without ATen's CUDA layer (a CPU-only build, or the stable-ABI binary on any torch): work goes
// on the current stream. A CUDA device there is the stable-ABI binary's, which reaches CUDA
// kernels through the dispatcher but no graph capture, no stream of its own and none of ATen's
// process-wide cuDNN switches: asking for them is refused, not ignored.
class Context {
 public:
  explicit Context(const Config& config) {
    if (!config.device.is_cuda()) return;
    const char* asked = config.cudaGraphs       ? "cudaGraphs: true"
                        : config.targetStream   ? "targetStream: true"
                        : config.cudnnBenchmark ? "cudnnBenchmark: true"
                        : !config.allowTF32     ? "allowTF32: false"
                                                : nullptr;
    if (asked) {
      throw Error(ErrorCode::Options,
                  std::string(asked) +
                      " needs a build of the addon for this exact libtorch: the stable-ABI binary in use (one "
                      "binary for every torch from 2.10 on) has no CUDA graph capture, no CUDA streams of its own "
                      "and no access to ATen's cuDNN settings. Leave the option at its default, or build for this "
                      "torch: npm rebuild generic-perceptual-loss (needs CMake and a C++ compiler)");
    }
  }
  std::shared_ptr<void> enter() const { return nullptr; }
  TargetFeatures onTargetStream(const std::function<TargetFeatures()>& fn, const std::vector<ops::Tensor>&) const {
    return fn();
  }
  Step step(const GraphKey&, uint64_t, const ops::Tensor& pred, const ops::Tensor& target, const StepFn& fn,
            const KeepAlive&) {
    return fn(pred, target);
  }
  bool graphs() const { return false; }
  size_t cachedGraphs() const { return 0; }
};

#endif

}  // namespace perceptual::cuda
