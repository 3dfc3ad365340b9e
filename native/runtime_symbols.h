// What the stable-ABI binary needs that libtorch's stable C shims do not offer, looked up by name
// in the loaded libtorch when first used, each checked before use:
//
// - A seeded CPU generator. The shims only copy or delete a generator a caller hands in (2.13 on),
//   none makes one. at::detail::createCPUGenerator(uint64_t) is exported under one mangled name by
//   every libtorch from 1.13 to 2.14; it returns an at::Generator, a class holding one intrusive
//   pointer, which the Itanium C++ ABI returns through a hidden first argument. The generated shims
//   aoti_torch_cpu_normal_functional and aoti_torch_cpu_uniform take it by handle (a pointer to the
//   at::Generator), so the weights are drawn by the loaded torch's own kernels, on this CPU's code
//   path: bit for bit torch.Generator().manual_seed(seed) of that torch. The generator is released
//   with torch_delete_generator where the torch has it (2.13 on); before that, each network build
//   leaves one generator (about 5 KB) unreleased.
// - The process-wide thread count (at::set_num_threads, at::init_num_threads,
//   at::get_parallel_info): no shim sets it.
// - CUDA's device count (c10::cuda::device_count, in libc10_cuda.so of CUDA builds only); 0 where
//   the symbol is absent, which is what a CPU build means.
// - libtorch's generated AOTI CPU shims for the convs, the conv backward and the max pools
//   (ops_stable.h, detail::cpuShim): C functions past the dispatcher's lookup and boxing. Each is
//   optional; where one is absent the op goes through the dispatcher by name.
#pragma once

#include <dlfcn.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>

#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

#include "enums.h"

namespace perceptual::ops::runtime {

// A symbol of the loaded libtorch (opened RTLD_GLOBAL by the loader), or nullptr.
inline void* symbol(const char* name) { return dlsym(RTLD_DEFAULT, name); }

template <typename Fn>
Fn lookup(const char* name) {
  return reinterpret_cast<Fn>(symbol(name));
}

// The text of the last libtorch exception where the torch gives it (2.13 on), else nullptr.
inline const char* exceptionText() {
  static const auto fn = lookup<const char* (*)()>("torch_exception_get_what_without_backtrace");
  return fn ? fn() : nullptr;
}

class CpuGenerator {
 public:
  static CpuGenerator seeded(uint64_t seed) {
    // at::Generator at::detail::createCPUGenerator(uint64_t), its result through the hidden pointer.
    using Create = void* (*)(void* result, uint64_t seed);
    static const auto create = lookup<Create>("_ZN2at6detail18createCPUGeneratorEm");
    if (!create) {
      throw Error(ErrorCode::Libtorch,
                  "the loaded libtorch exports no at::detail::createCPUGenerator, which the stable-ABI binary needs "
                  "to draw seeded weights; build the addon from source for this libtorch (npm rebuild "
                  "generic-perceptual-loss)");
    }
    // Room for the at::Generator (one pointer), from the global operator new, so that
    // torch_delete_generator may delete it.
    void* storage = ::operator new(sizeof(void*));
    create(storage, seed);
    return CpuGenerator(storage);
  }

  CpuGenerator(CpuGenerator&& other) noexcept : storage_(other.storage_) { other.storage_ = nullptr; }
  CpuGenerator(const CpuGenerator&) = delete;
  CpuGenerator& operator=(const CpuGenerator&) = delete;
  ~CpuGenerator() {
    static const auto release = lookup<AOTITorchError (*)(AtenGeneratorHandle)>("torch_delete_generator");
    if (storage_ && release) release(handle());
  }

  AtenGeneratorHandle handle() const { return reinterpret_cast<AtenGeneratorHandle>(storage_); }

 private:
  explicit CpuGenerator(void* storage) : storage_(storage) {}
  void* storage_;
};

// The generated CPU shims that draw with a given generator (exported by libtorch_cpu since 2.3).
using DrawFn = AOTITorchError (*)(AtenTensorHandle self, double a, double b, AtenGeneratorHandle* generator,
                                  AtenTensorHandle* result);

inline DrawFn required(const char* name) {
  const auto fn = lookup<DrawFn>(name);
  if (!fn) {
    throw Error(ErrorCode::Libtorch, std::string("the loaded libtorch exports no ") + name +
                                         ", which the stable-ABI binary needs to draw seeded weights; build the "
                                         "addon from source for this libtorch (npm rebuild generic-perceptual-loss)");
  }
  return fn;
}
inline DrawFn normalFunctional() {
  static const DrawFn fn = required("aoti_torch_cpu_normal_functional");
  return fn;
}
inline DrawFn uniform() {
  static const DrawFn fn = required("aoti_torch_cpu_uniform");
  return fn;
}

inline void setNumThreads(int n) {
  static const auto fn = lookup<void (*)(int)>("_ZN2at15set_num_threadsEi");
  if (!fn) throw Error(ErrorCode::Libtorch, "the loaded libtorch exports no at::set_num_threads");
  fn(n);
}

inline void initThreadsHere() {
  static const auto fn = lookup<void (*)()>("_ZN2at16init_num_threadsEv");
  if (fn) fn();
}

inline std::string parallelInfo() {
  static const auto fn = lookup<std::string (*)()>("_ZN2at17get_parallel_infoB5cxx11Ev");
  return fn ? fn() : std::string();
}

inline int cudaDeviceCount() {
  static const auto fn = lookup<int8_t (*)()>("_ZN3c104cuda12device_countEv");
  return fn ? static_cast<int>(fn()) : 0;
}

}  // namespace perceptual::ops::runtime
