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
  toArray(): Float32Array | Float64Array | Int32Array;
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

export interface NativeLossHandle {
  loss(pred: Operand, predShape: number[], target: Operand, targetShape: number[], nhwc: boolean): number | HostArray;
  lossAsync(pred: Operand, predShape: number[], target: Operand, targetShape: number[], nhwc: boolean): Promise<number | HostArray>;
  lossAndGrad(pred: Operand, predShape: number[], target: Operand, targetShape: number[], nhwc: boolean): NativeLossResult<HostArray | NativeTensorHandle>;
  lossAndGradAsync(pred: Operand, predShape: number[], target: Operand, targetShape: number[], nhwc: boolean): Promise<NativeLossResult<HostArray | NativeTensorHandle>>;
  lossAndGradSegmentation(logits: Operand, logitsShape: number[], labels: Operand, labelsShape: number[], ignoreIndex: number, nhwc: boolean): NativeLossResult<HostArray | NativeTensorHandle>;
  lossAndGradSegmentationAsync(logits: Operand, logitsShape: number[], labels: Operand, labelsShape: number[], ignoreIndex: number, nhwc: boolean): Promise<NativeLossResult<HostArray | NativeTensorHandle>>;
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
  NativeTensor: { fromHost(data: HostArray | Int32Array | Uint8Array, shape: number[], device: string): NativeTensorHandle };
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
