// Loads the native addon once per process (and per worker thread) and wires its errors to
// PerceptualLossError. The build this loads is `npm run build:native`'s, in build/Release.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PerceptualLossError } from './errors';
import type { NativeConfig } from './options';

export interface NativeTensorHandle {
  readonly shape: number[];
  readonly device: string;
  readonly dtype: string;
  readonly disposed: boolean;
  toArray(): Float32Array | Int32Array;
  dispose(): void;
}

export interface NativeTargetHandle {
  readonly shape: number[];
  readonly disposed: boolean;
  dispose(): void;
}

type Operand = Float32Array | Int32Array | Uint8Array | NativeTensorHandle | NativeTargetHandle;

export interface NativeLossResult<G> {
  loss: number | Float32Array;
  grad: G;
  /** [taps * 2]: weighted feature and style contributions per tap. */
  terms: Float64Array;
}

export type NativeFeature = { shape: number[]; data: Float32Array | NativeTensorHandle };

export interface NativeLossHandle {
  loss(pred: Operand, predShape: number[], target: Operand, targetShape: number[], nhwc: boolean): number | Float32Array;
  lossAsync(pred: Operand, predShape: number[], target: Operand, targetShape: number[], nhwc: boolean): Promise<number | Float32Array>;
  lossAndGrad(pred: Operand, predShape: number[], target: Operand, targetShape: number[], nhwc: boolean): NativeLossResult<Float32Array | NativeTensorHandle>;
  lossAndGradAsync(pred: Operand, predShape: number[], target: Operand, targetShape: number[], nhwc: boolean): Promise<NativeLossResult<Float32Array | NativeTensorHandle>>;
  lossAndGradSegmentation(logits: Operand, logitsShape: number[], labels: Operand, labelsShape: number[], ignoreIndex: number, nhwc: boolean): NativeLossResult<Float32Array | NativeTensorHandle>;
  lossAndGradSegmentationAsync(logits: Operand, logitsShape: number[], labels: Operand, labelsShape: number[], ignoreIndex: number, nhwc: boolean): Promise<NativeLossResult<Float32Array | NativeTensorHandle>>;
  features(x: Operand, shape: number[], nhwc: boolean): NativeFeature[];
  featuresAsync(x: Operand, shape: number[], nhwc: boolean): Promise<NativeFeature[]>;
  prepareTarget(target: Operand, shape: number[], nhwc: boolean): NativeTargetHandle;
  stateDict(): Float32Array[];
  loadStateDict(arrays: Float32Array[]): void;
  reseed(seed: number): void;
  dispose(): void;
}

export interface NativeRuntime {
  torchVersion: string;
  cuda: boolean;
  cudaDeviceCount: number;
  cudaBuild: boolean;
  cxx11Abi: boolean;
  mkldnn: boolean;
  numThreads: number;
  parallelInfo: string;
}

export interface NativeBinding {
  NativeLoss: new (config: NativeConfig) => NativeLossHandle;
  NativeTensor: { fromHost(data: Float32Array | Int32Array | Uint8Array, shape: number[], device: string): NativeTensorHandle };
  setErrorClass(cls: typeof PerceptualLossError): void;
  setNumThreads(n: number): void;
  runtimeInfo(): NativeRuntime;
  liveTensors(): number;
}

export const packageRoot = path.resolve(__dirname, '..');
export const ADDON_NAME = 'generic_perceptual_loss.node';

let loaded: { binding: NativeBinding; file: string } | undefined;

export function loadBinding(): { binding: NativeBinding; file: string } {
  if (loaded) return loaded;
  const file = path.join(packageRoot, 'build', 'Release', ADDON_NAME);
  if (!fs.existsSync(file)) {
    throw new PerceptualLossError(
      'ERR_LIBTORCH',
      `The native addon is not built: ${file} is missing. Run \`npm run setup\` (or \`npm run build:native\` ` +
        'once libtorch is installed: `apt-get install libtorch-dev`).',
    );
  }
  let binding: NativeBinding;
  try {
    binding = require(file) as NativeBinding;
  } catch (error) {
    throw new PerceptualLossError(
      'ERR_LIBTORCH',
      `The native addon ${file} failed to load: ${(error as Error).message}. ` +
        'Check that the libtorch it was built against is still installed (`node scripts/find-libtorch.js`), ' +
        'or rebuild it with `npm run build:native`.',
      { cause: error },
    );
  }
  binding.setErrorClass(PerceptualLossError);
  binding.setNumThreads(os.availableParallelism());
  loaded = { binding, file };
  return loaded;
}

export function native(): NativeBinding {
  return loadBinding().binding;
}
