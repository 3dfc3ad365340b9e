// Which CUDA graph a loss step uses: the keying, capture and invalidation
// rules, kept apart from the CUDA calls (native/cuda.cc) so that they are
// tested on machines without a GPU (test/native/graph_cache_test.cc). Plain
// C++17, no libtorch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

namespace perceptual::cuda {

// Everything a captured graph bakes in besides the weights: the input's shape,
// dtypes and layout, which outputs it computes, and which prepared target (0:
// the target is an input).
struct GraphKey {
  std::vector<int64_t> shape;  // pred as given (user layout)
  int predType = 0;
  int targetType = 0;
  uint64_t preparedTarget = 0;  // the prepared target's identity and generation, hashed by the caller
  bool nhwc = false;
  bool wantGrad = false;

  bool operator==(const GraphKey& o) const {
    return shape == o.shape && predType == o.predType && targetType == o.targetType &&
           preparedTarget == o.preparedTarget && nhwc == o.nhwc && wantGrad == o.wantGrad;
  }
  bool operator!=(const GraphKey& o) const { return !(*this == o); }
};

enum class GraphAction {
  Eager,    // run without a graph: a first sighting (which also warms up cuDNN),
            // or a key that failed
  Capture,  // the key repeats: capture it now, then store() the entry
  Replay,   // replay the stored entry
};

// A small LRU of captured graphs, one entry per key. Each graph holds its own
// memory pool, so only `capacity` are kept. A key is captured on its second
// sighting ("a repeated shape"); a new shape evicts the least recently used
// graph when the cache is full. A new network generation (reseed, load) drops
// everything, since the graphs read the old weights' memory.
template <typename Entry>
class GraphCache {
 public:
  explicit GraphCache(size_t capacity = 2, size_t remembered = 16) : capacity_(capacity), remembered_(remembered) {}

  struct Plan {
    GraphAction action;
    std::shared_ptr<Entry> entry;  // for Replay
  };

  Plan plan(const GraphKey& key, uint64_t generation) {
    std::lock_guard<std::mutex> lock(mutex_);
    syncGeneration(generation);
    // A call still running on an older network (reseed() raced it) never sees
    // the new graphs.
    if (generation != generation_) return {GraphAction::Eager, nullptr};
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->key == key) {
        entries_.splice(entries_.begin(), entries_,
                        it);  // most recently used first
        return {GraphAction::Replay, entries_.front().entry};
      }
    }
    if (contains(failed_, key)) return {GraphAction::Eager, nullptr};
    auto seen = std::find(seen_.begin(), seen_.end(), key);
    if (seen == seen_.end()) {
      seen_.push_front(key);
      if (seen_.size() > remembered_) seen_.pop_back();
      return {GraphAction::Eager, nullptr};
    }
    seen_.erase(seen);
    return {GraphAction::Capture, nullptr};
  }

  // Keeps a captured entry, unless the network changed while it was being
  // captured.
  void store(const GraphKey& key, uint64_t generation, std::shared_ptr<Entry> entry) {
    std::lock_guard<std::mutex> lock(mutex_);
    syncGeneration(generation);
    if (generation != generation_) return;
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->key == key) {
        entries_.erase(it);
        break;
      }
    }
    entries_.push_front({key, std::move(entry)});
    while (entries_.size() > capacity_) entries_.pop_back();
  }

  // A capture that failed (an operation that cannot be captured, out of
  // memory): run it eagerly from now on, until the network changes.
  void markFailed(const GraphKey& key, uint64_t generation) {
    std::lock_guard<std::mutex> lock(mutex_);
    syncGeneration(generation);
    if (generation == generation_ && !contains(failed_, key)) failed_.push_back(key);
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.clear();
    seen_.clear();
    failed_.clear();
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return entries_.size();
  }

  std::vector<GraphKey> keys() const {  // most recently used first
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<GraphKey> out;
    for (const auto& e : entries_) out.push_back(e.key);
    return out;
  }

 private:
  struct Slot {
    GraphKey key;
    std::shared_ptr<Entry> entry;
  };

  template <typename C>
  static bool contains(const C& c, const GraphKey& key) {
    return std::find(c.begin(), c.end(), key) != c.end();
  }

  void syncGeneration(uint64_t generation) {
    if (generation == generation_) return;
    // Only a newer network replaces the cache; a late call on an older one
    // changes nothing.
    if (generation < generation_) return;
    generation_ = generation;
    entries_.clear();
    seen_.clear();
    failed_.clear();
  }

  const size_t capacity_;
  const size_t remembered_;
  mutable std::mutex mutex_;
  uint64_t generation_ = 0;
  std::list<Slot> entries_;
  std::list<GraphKey> seen_;
  std::vector<GraphKey> failed_;
};

}  // namespace perceptual::cuda
