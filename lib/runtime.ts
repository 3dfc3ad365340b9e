// What was loaded, and the process-wide CPU thread count.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadBinding, native } from './binding';
import { PerceptualLossError, show } from './errors';
import { waitPolicy, type OpenMPInfo } from './openmp';

/**
 * Where a libtorch was found. Declared here, not imported from lib/libtorch.ts, so that the
 * published types (index.d.ts reaches this file) stay clear of the discovery module and its Node
 * types; runtime() assigns discovery's value to it, so the compiler fails if discovery adds one.
 */
export type LibtorchSource = 'LIBTORCH' | 'python' | 'bundled' | 'system';

export interface RuntimeInfo {
  libtorch: {
    version: string;
    /** The folder of the libtorch_cpu library this process loaded. */
    path: string | undefined;
    /** Whether this libtorch, and the binary, are built for CUDA (whether or not a GPU is usable). */
    cuda: boolean;
    /** Whether a CUDA GPU is usable: a CUDA build, a driver and at least one device. */
    gpu: boolean;
    /** The prebuild flavour of this libtorch, e.g. `torch2.14-cu130-cxx11` (absent when unknown). */
    flavour: string | undefined;
    cxx11Abi: boolean;
    /**
     * Where this libtorch was found: `'LIBTORCH'`, `'python'` (python3's torch), `'bundled'` (the
     * runtime package @generic-perceptual-loss/libtorch-linux-x64) or `'system'`.
     */
    source: LibtorchSource;
  };
  /** The native binary in use. */
  binary: string;
  /** Why the loader chose it. */
  binaryReason: string;
  /** 'cpu' and each 'cuda:N'. */
  devices: string[];
  /**
   * The CPU's features, read with cpuid at run time. `bfloat16`: dtype 'bfloat16' runs on the CPU
   * (AVX512-BF16 or AMX-BF16); otherwise `bfloat16Missing` says what is missing.
   * `prepackedWeights`: which float32 and bfloat16 CPU convs use weights reordered once into
   * oneDNN's layout: 'all' (libtorch 2.x, with their ReLU fused; packed per input shape, the last
   * two kept), 'wide' (1.13: every volume
   * conv, and the image convs with Cin * Cout >= 256 * 512; oneDNN reorders the others' on every
   * call), 'none' (no oneDNN). `hugePages`: whether libtorch's CPU buffers of 2 MiB and more are
   * advised as transparent huge pages (THP_MEM_ALLOC_ENABLE=1: libtorch's own on 2.x, the
   * package's allocator on 1.13).
   */
  cpu: {
    vendor: string;
    avx512: boolean;
    avx512Bf16: boolean;
    amxBf16: boolean;
    bfloat16: boolean;
    bfloat16Missing: string;
    prepackedWeights: 'all' | 'wide' | 'none';
    hugePages: boolean;
  };
  numThreads: number;
  /** OpenMP's wait policy in force: PASSIVE, set by the package, unless the user chose (lib/openmp.ts). */
  openmp: OpenMPInfo;
}

function loadedLibtorchDir(): string | undefined {
  try {
    const maps = fs.readFileSync('/proc/self/maps', 'utf8');
    const line = maps.split('\n').find((l) => /\/libtorch_cpu\.so/.test(l));
    return line ? path.dirname(line.slice(line.indexOf('/'))) : undefined;
  } catch {
    return undefined;
  }
}

export function runtime(): RuntimeInfo {
  const { binding, file, choice } = loadBinding();
  const info = binding.runtimeInfo();
  const cudaDevices = Array.from({ length: info.cudaDeviceCount }, (_, i) => `cuda:${i}`);
  return {
    libtorch: {
      version: info.torchVersion,
      path: loadedLibtorchDir(),
      cuda: info.cudaBuild,
      gpu: info.cudaBuild && info.cudaDeviceCount > 0,
      flavour: choice.libtorch.flavour,
      cxx11Abi: info.cxx11Abi,
      source: choice.libtorch.source,
    },
    binary: file,
    binaryReason: choice.reason,
    devices: ['cpu', ...cudaDevices],
    cpu: { ...info.cpu, bfloat16: info.cpu.bfloat16Missing === '' },
    numThreads: info.numThreads,
    openmp: waitPolicy(),
  };
}

/** Threads for CPU work (intra-op parallelism). Default: os.availableParallelism(). */
export function setNumThreads(n: number): void {
  if (!Number.isSafeInteger(n) || n < 1 || n > 1024) {
    throw new PerceptualLossError('ERR_OPTIONS', `setNumThreads: got ${show(n)}; allowed: an integer from 1 to 1024.`);
  }
  native().setNumThreads(n);
}
