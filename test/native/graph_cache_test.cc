// The CUDA graph cache's rules (native/graph_cache.h), without CUDA: built and run by
// test/native/cuda.test.ts. Prints one line per check and exits non-zero on the first failure.
#include "../../native/graph_cache.h"

#include <cstdio>
#include <cstdlib>
#include <string>

using perceptual::cuda::GraphAction;
using perceptual::cuda::GraphCache;
using perceptual::cuda::GraphKey;

namespace {

int checks = 0;

void check(bool ok, const std::string& what) {
  ++checks;
  std::printf("%s %s\n", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) std::exit(1);
}

const char* name(GraphAction a) {
  switch (a) {
    case GraphAction::Eager: return "eager";
    case GraphAction::Capture: return "capture";
    case GraphAction::Replay: return "replay";
  }
  return "?";
}

GraphKey key(std::vector<int64_t> shape, bool wantGrad = true) {
  GraphKey k;
  k.shape = std::move(shape);
  k.wantGrad = wantGrad;
  return k;
}

struct Entry {
  int id;
};

void expectAction(GraphCache<Entry>& cache, const GraphKey& k, uint64_t gen, GraphAction want, const std::string& what) {
  const auto plan = cache.plan(k, gen);
  check(plan.action == want, what + ": " + name(plan.action) + ", expected " + name(want));
  if (want == GraphAction::Replay) check(plan.entry != nullptr, what + ": replay hands back the entry");
}

}  // namespace

int main() {
  const GraphKey a = key({16, 3, 256, 256});
  const GraphKey b = key({8, 3, 256, 256});
  const GraphKey c = key({4, 3, 256, 256});

  {
    GraphCache<Entry> cache;
    expectAction(cache, a, 1, GraphAction::Eager, "a first sighting runs eagerly");
    expectAction(cache, a, 1, GraphAction::Capture, "a repeated shape is captured");
    cache.store(a, 1, std::make_shared<Entry>(Entry{7}));
    auto plan = cache.plan(a, 1);
    check(plan.action == GraphAction::Replay && plan.entry->id == 7, "the stored graph replays");
    expectAction(cache, b, 1, GraphAction::Eager, "a new shape runs eagerly first");
    expectAction(cache, a, 1, GraphAction::Replay, "the old shape still replays after one new call");
    expectAction(cache, b, 1, GraphAction::Capture, "the new shape, repeated, is captured");
    cache.store(b, 1, std::make_shared<Entry>(Entry{8}));
    check(cache.size() == 2, "two graphs are kept");
  }

  {
    GraphCache<Entry> cache(2);
    for (const GraphKey& k : {a, b}) {
      cache.plan(k, 1);
      cache.plan(k, 1);
      cache.store(k, 1, std::make_shared<Entry>(Entry{0}));
    }
    cache.plan(a, 1);  // a is now the most recently used
    cache.plan(c, 1);
    expectAction(cache, c, 1, GraphAction::Capture, "a third shape is captured");
    cache.store(c, 1, std::make_shared<Entry>(Entry{3}));
    check(cache.size() == 2, "capacity 2 keeps two graphs");
    const auto keys = cache.keys();
    check(keys[0] == c && keys[1] == a, "the least recently used graph (b) was evicted");
    expectAction(cache, b, 1, GraphAction::Eager, "an evicted shape starts over: eager");
    expectAction(cache, b, 1, GraphAction::Capture, "an evicted shape, repeated, is recaptured");
  }

  {
    GraphCache<Entry> cache(1);
    cache.plan(a, 1);
    cache.plan(a, 1);
    cache.store(a, 1, std::make_shared<Entry>(Entry{1}));
    cache.plan(b, 1);
    cache.plan(b, 1);
    cache.store(b, 1, std::make_shared<Entry>(Entry{2}));
    check(cache.size() == 1 && cache.keys()[0] == b, "capacity 1: a shape change replaces the graph");
  }

  {
    GraphCache<Entry> cache;
    cache.plan(a, 1);
    cache.plan(a, 1);
    cache.store(a, 1, std::make_shared<Entry>(Entry{1}));
    expectAction(cache, a, 2, GraphAction::Eager, "a new network generation (reseed) drops every graph");
    check(cache.size() == 0, "nothing is kept across generations");
    expectAction(cache, a, 2, GraphAction::Capture, "the shape is recaptured for the new weights");
    expectAction(cache, a, 1, GraphAction::Eager, "a call on the old network never replays the new graphs");
    cache.store(a, 1, std::make_shared<Entry>(Entry{9}));
    check(cache.size() == 0, "a graph captured on the old network is not stored");
    cache.store(a, 2, std::make_shared<Entry>(Entry{5}));
    expectAction(cache, a, 1, GraphAction::Eager, "an old-generation call after the store is still eager");
    expectAction(cache, a, 2, GraphAction::Replay, "the new generation replays its own graph");
  }

  {
    GraphCache<Entry> cache;
    cache.plan(a, 1);
    cache.plan(a, 1);
    cache.markFailed(a, 1);
    expectAction(cache, a, 1, GraphAction::Eager, "a failed capture runs eagerly from then on");
    expectAction(cache, a, 1, GraphAction::Eager, "and is not retried");
    expectAction(cache, a, 2, GraphAction::Eager, "a new generation forgets the failure: first sighting");
    expectAction(cache, a, 2, GraphAction::Capture, "then captures again");
  }

  {
    GraphCache<Entry> cache;
    GraphKey grad = key({2, 3, 64, 64}, true);
    GraphKey value = key({2, 3, 64, 64}, false);
    GraphKey nhwc = grad;
    nhwc.nhwc = true;
    GraphKey prepared = grad;
    prepared.preparedTarget = 42;
    GraphKey half = grad;
    half.predType = 5;
    cache.plan(grad, 1);
    cache.plan(grad, 1);
    cache.store(grad, 1, std::make_shared<Entry>(Entry{1}));
    for (const auto& [k, what] : std::vector<std::pair<GraphKey, std::string>>{
             {value, "loss alone"}, {nhwc, "another layout"}, {prepared, "a prepared target"}, {half, "another dtype"}}) {
      expectAction(cache, k, 1, GraphAction::Eager, what + " is a different graph");
    }
    expectAction(cache, grad, 1, GraphAction::Replay, "the original key still replays");
  }

  {
    GraphCache<Entry> cache(2, 2);
    cache.plan(a, 1);
    cache.plan(b, 1);
    cache.plan(c, 1);  // remembers the last 2 first sightings only
    expectAction(cache, a, 1, GraphAction::Eager, "a sighting pushed out of the bounded memory counts as new");
    expectAction(cache, c, 1, GraphAction::Capture, "a remembered sighting is captured");
  }

  {
    GraphCache<Entry> cache;
    cache.plan(a, 1);
    cache.plan(a, 1);
    cache.store(a, 1, std::make_shared<Entry>(Entry{1}));
    cache.clear();
    expectAction(cache, a, 1, GraphAction::Eager, "clear() forgets graphs and sightings");
  }

  std::printf("graph cache: %d checks passed\n", checks);
  return 0;
}
