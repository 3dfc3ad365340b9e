// The op layer: every tensor operation the algorithm (perceptual.cc), the step (step.cc) and the
// Node-API layer need, as free functions over ops::Tensor. Two implementations, chosen at build
// time: ATen called directly (ops_aten.h: the exact-flavour builds, libtorch 1.13 and 2.x), and
// libtorch's stable C ABI (ops_stable.h: one binary for every torch >= its target version).
// Everything above this layer is written once.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace perceptual::ops {

using Shape = std::vector<int64_t>;

// A device as the package names it ("cpu", "cuda:N"); each backend converts it to its own.
struct Device {
  bool cuda = false;
  int index = -1;  // -1: "cuda" with no index, the current device (0 here)

  bool is_cpu() const { return !cuda; }
  bool is_cuda() const { return cuda; }
  int ordinal() const { return index < 0 ? 0 : index; }
  std::string str() const { return !cuda ? "cpu" : index < 0 ? "cuda" : "cuda:" + std::to_string(index); }
  bool operator==(const Device& other) const { return cuda == other.cuda && (!cuda || ordinal() == other.ordinal()); }
  bool operator!=(const Device& other) const { return !(*this == other); }

  // "cpu", "cuda" or "cuda:N" (the TS schema has checked it).
  static Device parse(const std::string& name) {
    if (name.rfind("cuda", 0) != 0) return {};
    return {true, name.size() > 5 ? std::stoi(name.substr(5)) : -1};
  }
};

inline const Device kCpu{};

// THP_MEM_ALLOC_ENABLE=1, PyTorch's switch for libtorch's large CPU buffers on transparent huge
// pages (2.2 on); each op layer says whether it is in force (hugePageAllocator).
inline bool hugePagesRequested() {
  const char* setting = std::getenv("THP_MEM_ALLOC_ENABLE");
  return setting && std::strcmp(setting, "1") == 0;
}

// How a loss's criterion reduces its elements (at::Reduction's values).
enum class Reduce : int64_t { None = 0, Mean = 1, Sum = 2 };

}  // namespace perceptual::ops

#if defined(PL_STABLE_ABI)
#include "ops_stable.h"
#else
#include "ops_aten.h"
#endif
