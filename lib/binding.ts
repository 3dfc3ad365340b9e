// The native addon's interface, loaded once (lib/loader.ts chooses the binary) and wired to
// PerceptualLossError.
import * as os from 'node:os';
import { PerceptualLossError } from './errors';
import { loadNative, type Loaded } from './loader';
import { setWaitPolicy } from './openmp';
import type { Device, Layout, NativeConfig } from './options';

export interface NativeTensorHandle {
  readonly shape: number[];
  /** Named as resolveDevice() names devices. */
  readonly device: Device;
  readonly dtype: string;
  readonly disposed: boolean;
  toArray(): Float32Array | Float64Array | Int32Array | Uint8Array;
  dispose(): void;
}

export interface NativeTargetHandle {
  readonly shape: number[];
  readonly disposed: boolean;
  dispose(): void;
}

type HostArray = Float32Array | Float64Array;
type Operand = HostArray | Int32Array | Uint8Array | NativeTensorHandle | NativeTargetHandle;

export interface NativeLossResult<G> {
  loss: number | HostArray;
  grad: G;
  /** [taps * 2]: weighted feature and style contributions per tap. */
  terms: Float64Array;
}

export type NativeFeature = { shape: number[]; data: HostArray | NativeTensorHandle };

/** A mask with the shape it takes in the call's layout; undefined without one. */
type Mask = Float32Array | Float64Array | Uint8Array | NativeTensorHandle | undefined;

export interface NativeLossHandle {
  loss(pred: Operand, predShape: number[], target: Operand, targetShape: number[], layout: Layout, mask?: Mask, maskShape?: number[]): number | HostArray;
  lossAsync(pred: Operand, predShape: number[], target: Operand, targetShape: number[], layout: Layout, mask?: Mask, maskShape?: number[]): Promise<number | HostArray>;
  lossAndGrad(pred: Operand, predShape: number[], target: Operand, targetShape: number[], layout: Layout, mask?: Mask, maskShape?: number[]): NativeLossResult<HostArray | NativeTensorHandle>;
  lossAndGradAsync(pred: Operand, predShape: number[], target: Operand, targetShape: number[], layout: Layout, mask?: Mask, maskShape?: number[]): Promise<NativeLossResult<HostArray | NativeTensorHandle>>;
  lossAndGradSegmentation(logits: Operand, logitsShape: number[], labels: Operand, labelsShape: number[], ignoreIndex: number, layout: Layout): NativeLossResult<HostArray | NativeTensorHandle>;
  lossAndGradSegmentationAsync(logits: Operand, logitsShape: number[], labels: Operand, labelsShape: number[], ignoreIndex: number, layout: Layout): Promise<NativeLossResult<HostArray | NativeTensorHandle>>;
  /**
   * Instance masks: pred = sigmoid(logits), target = masks (uint8 or float), each instance i
   * weighted by weights[i] (all 1 when undefined); the gradient is with respect to the logits.
   * Returns what lossAndGrad returns, or what loss returns when `wantGrad` is false.
   */
  instanceMasks(
    logits: Operand,
    logitsShape: number[],
    masks: Operand,
    masksShape: number[],
    layout: Layout,
    weights: Float64Array | undefined,
    wantGrad: boolean,
  ): NativeLossResult<HostArray | NativeTensorHandle> | number | HostArray;
  instanceMasksAsync(
    logits: Operand,
    logitsShape: number[],
    masks: Operand,
    masksShape: number[],
    layout: Layout,
    weights: Float64Array | undefined,
    wantGrad: boolean,
  ): Promise<NativeLossResult<HostArray | NativeTensorHandle> | number | HostArray>;
  features(x: Operand, shape: number[], layout: Layout): NativeFeature[];
  featuresAsync(x: Operand, shape: number[], layout: Layout): Promise<NativeFeature[]>;
  prepareTarget(target: Operand, shape: number[], layout: Layout): NativeTargetHandle;
  stateDict(): Float32Array[];
  loadStateDict(arrays: Float32Array[]): void;
  reseed(seed: number): void;
  dispose(): void;
  /** CUDA graphs held (0 on the CPU). */
  cachedGraphs(): number;
}

/** A CUDA device's caching-allocator figures, in bytes. */
export interface CudaMemory {
  allocated: number;
  reserved: number;
  peakAllocated: number;
  peakReserved: number;
}

/** The names each enum crosses the boundary by, from native's own tables. */
export interface NativeEnumTables {
  criterion: string[];
  reduction: string[];
  pool: string[];
  init: string[];
  layout: string[];
  dtype: string[];
  errorCode: string[];
}

export interface NativeRuntime {
  torchVersion: string;
  cuda: boolean;
  cudaDeviceCount: number;
  cudaBuild: boolean;
  cudaDevices: Array<{ index: number; name: string; computeCapability: string; memoryBytes: number }>;
  cxx11Abi: boolean;
  mkldnn: boolean;
  /** Read with cpuid at run time. bfloat16Missing: what bfloat16 on the CPU lacks, '' where it runs. */
  cpu: { vendor: string; avx512: boolean; avx512Bf16: boolean; amxBf16: boolean; bfloat16Missing: string; prepackedWeights: 'all' | 'wide' | 'none'; hugePages: boolean };
  numThreads: number;
  parallelInfo: string;
}

export interface NativeBinding {
  /** With `weights` ([weight0, bias0, ...] in conv order) the network takes them and draws none. */
  NativeLoss: new (config: NativeConfig, weights?: Float32Array[]) => NativeLossHandle;
  NativeTensor: { fromHost(data: HostArray | Int32Array | Uint8Array, shape: number[], device: string): NativeTensorHandle };
  setErrorClass(cls: typeof PerceptualLossError): void;
  setNumThreads(n: number): void;
  runtimeInfo(): NativeRuntime;
  liveTensors(): number;
  // ERR_DEVICE without a usable CUDA device; for the GPU suite and the tests.
  cudaMemory(index: number): CudaMemory;
  cudaResetPeakMemory(index: number): void;
  cudaSetMemoryFraction(fraction: number, index: number): void;
  cudaEmptyCache(): void;
  enumTables(): NativeEnumTables;
}

let loaded: (Loaded<NativeBinding> & { file: string }) | undefined;

/** Loads the native addon once per process (and per worker thread). */
export function loadBinding(): Loaded<NativeBinding> & { file: string } {
  if (loaded) return loaded;
  // Before any libtorch library (and its OpenMP) is opened: OpenMP reads its settings as it loads.
  setWaitPolicy();
  const result = loadNative<NativeBinding>();
  const { binding, choice } = result;
  // The stable-ABI binary serves every torch from 2.10 on and cannot name the one loaded: discovery does.
  const runtimeInfo = binding.runtimeInfo.bind(binding);
  binding.runtimeInfo = () => {
    const info = runtimeInfo();
    return info.torchVersion ? info : { ...info, torchVersion: choice.libtorch.version ?? 'unknown' };
  };
  binding.setErrorClass(PerceptualLossError);
  binding.setNumThreads(os.availableParallelism());
  loaded = { ...result, file: choice.file };
  if (choice.libtorch.cuda && deviceInfo().cudaDeviceCount === 0) {
    process.emitWarning(
      `generic-perceptual-loss: the CUDA libtorch in ${choice.libtorch.libraryDir} sees no usable GPU; computing on the CPU.`,
      { code: 'PL_NO_GPU' },
    );
  }
  return loaded;
}

export function native(): NativeBinding {
  return loadBinding().binding;
}

export type DeviceInfo = Pick<NativeRuntime, 'cudaDeviceCount' | 'cudaDevices' | 'cudaBuild'>;

let devices: DeviceInfo | undefined;

/**
 * The CUDA devices the loaded libtorch sees, read once: their number and memory do not change
 * while the process runs, and reading them queries every device.
 */
export function deviceInfo(): DeviceInfo {
  if (devices === undefined) {
    const { cudaDeviceCount, cudaDevices, cudaBuild } = native().runtimeInfo();
    devices = { cudaDeviceCount, cudaDevices, cudaBuild };
  }
  return devices;
}
