// The CPU's instruction-set features, read with cpuid at run time (never assumed from the build
// machine): they decide whether bfloat16 may run on the CPU.
#pragma once

#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace perceptual {

struct CpuFeatures {
  std::string vendor;
  bool avx512 = false;      // AVX-512 F, BW, VL and DQ, with the OS saving the ZMM state
  bool avx512Bf16 = false;  // vdpbf16ps and friends
  bool amxBf16 = false;     // AMX tiles with bf16 tile multiplies, with the OS saving the tile state
};

inline CpuFeatures detectCpuFeatures() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0, &a, &b, &c, &d) == 0) return f;
  const unsigned maxLeaf = a;
  char vendor[13] = {};
  reinterpret_cast<unsigned*>(vendor)[0] = b;
  reinterpret_cast<unsigned*>(vendor)[1] = d;
  reinterpret_cast<unsigned*>(vendor)[2] = c;
  f.vendor = vendor;
  if (maxLeaf < 7) return f;
  __get_cpuid(1, &a, &b, &c, &d);
  const bool osxsave = (c >> 27) & 1;
  unsigned long long xcr0 = 0;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  }
  // XMM, YMM, opmask, ZMM_Hi256 and Hi16_ZMM; XTILECFG and XTILEDATA.
  const bool osZmm = (xcr0 & 0xe6) == 0xe6;
  const bool osTiles = (xcr0 & 0x60000) == 0x60000;
  __cpuid_count(7, 0, a, b, c, d);
  const bool f512 = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
  f.avx512 = osZmm && f512 && dq && bw && vl;
  f.amxBf16 = osTiles && ((d >> 22) & 1) && ((d >> 24) & 1);
  const unsigned subleaves = a;
  if (subleaves >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512Bf16 = f.avx512 && ((a >> 5) & 1);
  }
#endif
  return f;
}

inline const CpuFeatures& cpuFeatures() {
  static const CpuFeatures features = detectCpuFeatures();
  return features;
}

// Why bfloat16 cannot run on this CPU; empty when it can. oneDNN's bf16 kernels need AVX-512
// (F, BW, VL, DQ) plus AVX512-BF16 or AMX-BF16; without them they emulate bf16 many times slower.
inline std::string cpuBfloat16Missing() {
  const CpuFeatures& f = cpuFeatures();
#if !(defined(__x86_64__) || defined(__i386__))
  return "an x86-64 CPU with AVX512-BF16 or AMX-BF16";
#else
  if (!f.avx512) return "AVX-512 (F, BW, VL, DQ) with AVX512-BF16 or AMX-BF16; this CPU has no usable AVX-512";
  if (!f.avx512Bf16 && !f.amxBf16) return "AVX512-BF16 or AMX-BF16; this CPU has AVX-512 but neither";
  return "";
#endif
}

}  // namespace perceptual
