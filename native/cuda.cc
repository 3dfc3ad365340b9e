// Compiled only when PL_WITH_CUDA is defined (a CUDA libtorch). Uses c10's CUDA
// layer, ATen's CUDAGraph and the CUDA runtime API alone:
// ATen/cuda/CUDAContext.h would pull in the cuBLAS and cuSPARSE headers.
#include "cuda.h"

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/csrc/api/include/torch/version.h>

#include <mutex>
#include <optional>

#include "compat.h"

namespace perceptual::cuda {

namespace alloc = c10::cuda::CUDACachingAllocator;

std::vector<DeviceInfo> devices() {
  std::vector<DeviceInfo> result;
  const int count = static_cast<int>(c10::cuda::device_count());
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    C10_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
    result.push_back({i, prop.name, prop.major, prop.minor, static_cast<uint64_t>(prop.totalGlobalMem)});
  }
  return result;
}

namespace {

constexpr size_t kAggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);

c10::DeviceIndex deviceIndex(int index) {
  requireDevice(ops::Device{true, index});
  return static_cast<c10::DeviceIndex>(index);
}

// `waiter` waits for the work queued on `signaller` so far; nothing blocks the
// host.
void streamWaits(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& signaller) {
  if (waiter == signaller) return;
  cudaEvent_t event = nullptr;
  C10_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  C10_CUDA_CHECK(cudaEventRecord(event, signaller.stream()));
  C10_CUDA_CHECK(cudaStreamWaitEvent(waiter.stream(), event, 0));
  C10_CUDA_CHECK(cudaEventDestroy(event));  // released once the wait is satisfied
}

// A tensor made on one stream and used on another: the caching allocator must
// not hand its memory out again until `stream`'s work on it is done.
void usedOn(const at::Tensor& t, const c10::cuda::CUDAStream& stream) {
  if (t.defined() && t.is_cuda()) alloc::recordStream(t.storage().data_ptr(), stream);
}

Step cloneStep(const Step& s) {
  Step out;
  out.result.loss = s.result.loss.clone();
  out.result.terms = s.result.terms.clone();
  if (s.result.grad.defined()) out.result.grad = s.result.grad.clone();
  if (s.finite.defined()) out.finite = s.finite.clone();
  return out;
}

// A captured step: its static input and output buffers, replayed under one
// lock.
struct GraphEntry {
  std::mutex mutex;
  at::cuda::CUDAGraph graph;
  at::Tensor pred;
  at::Tensor target;
  Step out;
  KeepAlive keep;
};

}  // namespace

MemoryStats memoryStats(int index) {
  const auto stats = alloc::getDeviceStats(deviceIndex(index));
  MemoryStats out;
  out.allocated = stats.allocated_bytes[kAggregate].current;
  out.peakAllocated = stats.allocated_bytes[kAggregate].peak;
  out.reserved = stats.reserved_bytes[kAggregate].current;
  out.peakReserved = stats.reserved_bytes[kAggregate].peak;
  return out;
}

void resetPeakMemory(int index) { alloc::resetPeakStats(deviceIndex(index)); }

void setMemoryFraction(double fraction, int index) {
  TORCH_CHECK(fraction > 0 && fraction <= 1, "the memory fraction must be in (0, 1], got ", fraction);
  alloc::setMemoryFraction(fraction, deviceIndex(index));
}

void emptyCache() {
  if (at::hasCUDA()) alloc::emptyCache();
}

void synchronize() {
  if (at::hasCUDA()) c10::cuda::getCurrentCUDAStream().synchronize();
}

struct Context::Impl {
  Impl(const Config& config, c10::DeviceIndex index)
      : config(config),
        index(index),
        stream(c10::cuda::getStreamFromPool(false, index)),
        targetStream(config.targetStream ? std::optional(c10::cuda::getStreamFromPool(false, index)) : std::nullopt) {}

  const Config config;
  const c10::DeviceIndex index;
  const c10::cuda::CUDAStream stream;
  const std::optional<c10::cuda::CUDAStream> targetStream;
  GraphCache<GraphEntry> cache;
};

Context::Context(const Config& config) {
  if (!config.device.is_cuda()) return;
  requireDevice(config.device);
  const auto index = static_cast<c10::DeviceIndex>(config.device.ordinal());
  c10::cuda::CUDAGuard guard(index);
  impl_ = std::make_unique<Impl>(config, index);
}

Context::~Context() = default;

bool Context::graphs() const { return impl_ && impl_->config.cudaGraphs; }

size_t Context::cachedGraphs() const { return impl_ ? impl_->cache.size() : 0; }

std::shared_ptr<void> Context::enter() const {
  if (!impl_) return nullptr;
  struct Scope {
    explicit Scope(const c10::cuda::CUDAStream& stream) : device(stream.device_index()), current(stream) {}
    ~Scope() {
      try {
        streamWaits(c10::cuda::getDefaultCUDAStream(current.current_stream().device_index()), current.current_stream());
      } catch (const std::exception& e) {
        TORCH_WARN(
            "generic-perceptual-loss: could not order the default "
            "stream after the loss's: ",
            e.what());
      }
    }
    c10::cuda::CUDAGuard device;
    c10::cuda::CUDAStreamGuard current;
  };
  auto scope = std::make_shared<Scope>(impl_->stream);
  // Process-wide settings in ATen: applied for every call of this loss.
  at::globalContext().setBenchmarkCuDNN(impl_->config.cudnnBenchmark);
  at::globalContext().setAllowTF32CuDNN(impl_->config.allowTF32);
  streamWaits(impl_->stream, c10::cuda::getDefaultCUDAStream(impl_->index));
  return scope;
}

TargetFeatures Context::onTargetStream(const std::function<TargetFeatures()>& fn,
                                       const std::vector<at::Tensor>& alsoUsed) const {
  if (!impl_ || !impl_->targetStream) return fn();
  const c10::cuda::CUDAStream main = c10::cuda::getCurrentCUDAStream(impl_->index);
  // Inside a graph capture the branch stays on the capturing stream.
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(main.stream(), &capturing));
  if (capturing != cudaStreamCaptureStatusNone) return fn();
  const c10::cuda::CUDAStream side = *impl_->targetStream;
  streamWaits(side,
              main);  // the target's upload and the user's tensors are ready
  TargetFeatures features;
  {
    c10::cuda::CUDAStreamGuard guard(side);
    features = fn();
  }
  streamWaits(main, side);
  for (const at::Tensor& f : features.features) usedOn(f, main);
  for (const at::Tensor& g : features.grams) usedOn(g, main);
  for (const at::Tensor& t : alsoUsed) usedOn(t, main);
  return features;
}

Step Context::step(const GraphKey& key, uint64_t generation, const at::Tensor& pred, const at::Tensor& target,
                   const StepFn& fn, KeepAlive keep) {
  if (!graphs()) return fn(pred, target);
  auto plan = impl_->cache.plan(key, generation);
  if (plan.action == GraphAction::Eager) return fn(pred, target);

  if (plan.action == GraphAction::Replay) {
    GraphEntry& entry = *plan.entry;
    std::lock_guard<std::mutex> lock(entry.mutex);
    entry.pred.copy_(pred, true);
    if (target.defined()) entry.target.copy_(target, true);
    entry.graph.replay();
    return cloneStep(entry.out);
  }

  // Capture: the static inputs start as copies of this call's, so the replay
  // below computes it.
  auto entry = std::make_shared<GraphEntry>();
  std::lock_guard<std::mutex> lock(entry->mutex);
  entry->pred = pred.clone();
  if (target.defined()) entry->target = target.clone();
  entry->keep = std::move(keep);
  try {
    compat::captureBegin(entry->graph, cudaStreamCaptureModeThreadLocal);
    try {
      entry->out = fn(entry->pred, entry->target);
    } catch (...) {
      // End the capture whatever happened, or the stream stays in capture mode.
      try {
        entry->graph.capture_end();
      } catch (...) {
      }
      throw;
    }
    entry->graph.capture_end();
  } catch (const std::exception& e) {
    // Something in the step cannot be captured, or the capture ran out of
    // memory: this key runs eagerly from now on, and this call too (which
    // reports a real out-of-memory error itself).
    impl_->cache.markFailed(key, generation);
    TORCH_WARN(
        "generic-perceptual-loss: a CUDA graph capture failed, running "
        "this shape without graphs: ",
        e.what());
    emptyCache();
    return fn(pred, target);
  }
  entry->graph.replay();
  Step out = cloneStep(entry->out);
  impl_->cache.store(key, generation, entry);
  return out;
}

}  // namespace perceptual::cuda
