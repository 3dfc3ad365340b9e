// PerceptualLoss: the typed API over the native loss.
import { deviceInfo, native, type NativeFeature, type NativeLossHandle, type NativeLossResult, type NativeTensorHandle } from './binding';
import { PerceptualLossError } from './errors';
import {
  channelsFirst,
  readImage,
  readInstanceMasks,
  readLabels,
  readMask,
  sameShape,
  type ImageCheck,
  type LabelsLike,
  type MaskLike,
  type MaskOperand,
  type Operand,
  type PerSampleFor,
  type ResultFor,
  type TensorLike,
} from './input';
import { checkFits, hostMemoryBytes } from './memory';
import { stateDictLayout, tapsWithin } from './network';
import {
  resolveLayout,
  resolveOptions,
  validateSeed,
  type Layout,
  type PerceptualLossOptions,
  type Reduction,
  type Resolved,
  type ResolvedOptions,
} from './options';
import { readLossFile, saveLoss, type LoadedFile } from './persistence';
import { PreparedTarget, targetOf } from './prepared-target';
import { Tensor } from './tensor';
import { checkIgnoreIndex, checkInstanceWeights, checkOptionalObject, type InstanceWeights } from './validate';
import './disposable';

export type { MaskLike } from './input';
export { PreparedTarget } from './prepared-target';

export interface CallOptions {
  /** Overrides the loss's `layout` for this call. */
  layout?: Layout;
}

export interface LossCallOptions extends CallOptions {
  /**
   * pred and target are multiplied by the mask before the network (elements under a 0 are set to
   * 0, so NaN or Inf there do no harm), and the gradient by the mask: the exact loss and gradient
   * of loss(mask * pred, mask * target). Not with a prepared target.
   */
  mask?: MaskLike;
}

/** Call options of instance masks. */
export interface InstanceMaskCallOptions extends CallOptions {
  /** One weight per instance (length M), each a finite number >= 0, not all 0. Default: all 1. */
  weights?: InstanceWeights;
}

export interface SegmentationOptions extends CallOptions {
  /** Label value whose pixels are left out of both pred and target. Default 255. */
  ignoreIndex?: number;
}

/** One tap's share of the loss: featureWeight * w * D and styleWeight * w * D(Gram). */
export interface LossTerm {
  name: string;
  feature: number;
  style: number;
}

/**
 * The loss of a call with input P under reduction R: a number for 'mean' and 'sum', one value per
 * sample for 'none' (a host array of pred's type; see `PerSampleFor`). With R unknown (the
 * `Reduction` union), either.
 */
export type LossValue<R extends Reduction = Reduction, P = TensorLike> = R extends 'none' ? PerSampleFor<P> : number;

export interface LossAndGrad<G, L = number | Float32Array | Float64Array> {
  /** A number, or one value per sample (an array of pred's type) with reduction 'none'. */
  loss: L;
  /** d loss / d pred, in pred's shape and layout. */
  grad: G;
  /** Per-tap contributions (summed over samples with reduction 'none'). */
  terms: LossTerm[];
}

export interface Feature<T> {
  name: string;
  shape: number[];
  data: T;
}

// load()'s way into the constructor, keyed by the options object it passes: the options it
// resolved and the file's weights, so that nothing is resolved twice and no weight is drawn only
// to be replaced.
const fromFile = new WeakMap<object, LoadedFile>();

let bfloat16Missing: string | undefined;

/** What bfloat16 on this CPU lacks ('' where it can run), read once. */
function cpuBfloat16Missing(): string {
  bfloat16Missing ??= native().runtimeInfo().cpu.bfloat16Missing;
  return bfloat16Missing;
}

/**
 * The perceptual loss. `R`, its reduction, types the loss values: a `number` for 'mean' (the
 * default) and 'sum', per-sample arrays for 'none'. It is read from the options given to the
 * constructor; a variable that may hold a loss of any reduction is a `PerceptualLoss<Reduction>`.
 */
export class PerceptualLoss<R extends Reduction = 'mean' | 'sum'> {
  readonly #resolved: Resolved;
  #native: NativeLossHandle | undefined;

  constructor(options: PerceptualLossOptions & { reduction?: R }) {
    const loaded = fromFile.get(options);
    const { cudaDeviceCount, cudaBuild } = deviceInfo();
    this.#resolved = loaded?.resolved ?? resolveOptions(options, cudaDeviceCount, cpuBfloat16Missing(), cudaBuild);
    const binding = native();
    this.#native = new binding.NativeLoss(this.#resolved.native, loaded?.weights);
  }

  /** The options in force, with every default filled in. */
  get options(): Readonly<ResolvedOptions> {
    return structuredClone(this.#resolved.options);
  }

  /** The loss: a number, or one value per sample for reduction 'none'. */
  loss<P extends TensorLike>(pred: P, target: TensorLike | PreparedTarget, call?: LossCallOptions): LossValue<R, P> {
    const [p, t, layout, m] = this.#pair(pred, target, call);
    return this.#handle().loss(p.value, p.shape, t.value, t.shape, layout, m?.value, m?.shape) as LossValue<R, P>;
  }

  async lossAsync<P extends TensorLike>(pred: P, target: TensorLike | PreparedTarget, call?: LossCallOptions): Promise<LossValue<R, P>> {
    const [p, t, layout, m] = this.#pair(pred, target, call);
    return (await this.#handle().lossAsync(p.value, p.shape, t.value, t.shape, layout, m?.value, m?.shape)) as LossValue<R, P>;
  }

  lossAndGrad<P extends TensorLike>(pred: P, target: TensorLike | PreparedTarget, call?: LossCallOptions): LossAndGrad<ResultFor<P>, LossValue<R, P>> {
    const [p, t, layout, m] = this.#pair(pred, target, call);
    return this.#result(this.#handle().lossAndGrad(p.value, p.shape, t.value, t.shape, layout, m?.value, m?.shape));
  }

  async lossAndGradAsync<P extends TensorLike>(
    pred: P,
    target: TensorLike | PreparedTarget,
    call?: LossCallOptions,
  ): Promise<LossAndGrad<ResultFor<P>, LossValue<R, P>>> {
    const [p, t, layout, m] = this.#pair(pred, target, call);
    return this.#result(await this.#handle().lossAndGradAsync(p.value, p.shape, t.value, t.shape, layout, m?.value, m?.shape));
  }

  /**
   * Segmentation: pred = softmax(logits) over channels, target = one_hot(labels), both zeroed
   * where labels == ignoreIndex; the gradient is with respect to the logits.
   */
  lossAndGradSegmentation<P extends TensorLike>(
    logits: P,
    labels: LabelsLike,
    options?: SegmentationOptions,
  ): LossAndGrad<ResultFor<P>, LossValue<R, P>> {
    const [l, y, ignoreIndex, layout] = this.#segmentationArgs(logits, labels, options);
    return this.#result(this.#handle().lossAndGradSegmentation(l.value, l.shape, y.value, y.shape, ignoreIndex, layout));
  }

  async lossAndGradSegmentationAsync<P extends TensorLike>(
    logits: P,
    labels: LabelsLike,
    options?: SegmentationOptions,
  ): Promise<LossAndGrad<ResultFor<P>, LossValue<R, P>>> {
    const [l, y, ignoreIndex, layout] = this.#segmentationArgs(logits, labels, options);
    const handle = this.#handle();
    return this.#result(await handle.lossAndGradSegmentationAsync(l.value, l.shape, y.value, y.shape, ignoreIndex, layout));
  }

  /** The features of x at each tap, in `layers` order and in x's layout. */
  features<X extends TensorLike>(x: X, call?: CallOptions): Feature<ResultFor<X>>[] {
    const [operand, layout] = this.#single(x, 'x', call);
    return this.#features(this.#handle().features(operand.value, operand.shape, layout));
  }

  async featuresAsync<X extends TensorLike>(x: X, call?: CallOptions): Promise<Feature<ResultFor<X>>[]> {
    const [operand, layout] = this.#single(x, 'x', call);
    return this.#features(await this.#handle().featuresAsync(operand.value, operand.shape, layout));
  }

  /** Computes the target's features once (a fixed style image, many predictions against one target). */
  prepareTarget(target: TensorLike, call?: CallOptions): PreparedTarget {
    const [operand, layout] = this.#single(target, 'target', call);
    const handle = this.#handle().prepareTarget(operand.value, operand.shape, layout);
    return new PreparedTarget(handle, this, layout);
  }

  /**
   * @internal Instance masks (tasks.ts's InstanceMaskLoss): pred = sigmoid(maskLogits), target =
   * masks, each instance weighted; the gradient is with respect to the logits. The loss alone
   * where `wantGrad` is false.
   */
  instanceMasks(maskLogits: unknown, masks: unknown, call: InstanceMaskCallOptions | undefined, wantGrad: boolean): unknown {
    const [l, m, layout, weights] = this.#instanceArgs(maskLogits, masks, call);
    const raw = this.#handle().instanceMasks(l.value, l.shape, m.value, m.shape, layout, weights, wantGrad);
    return wantGrad ? this.#result(raw as NativeLossResult<Float32Array | Float64Array | NativeTensorHandle>) : raw;
  }

  /** @internal The same, off the JavaScript thread. */
  async instanceMasksAsync(maskLogits: unknown, masks: unknown, call: InstanceMaskCallOptions | undefined, wantGrad: boolean): Promise<unknown> {
    const [l, m, layout, weights] = this.#instanceArgs(maskLogits, masks, call);
    const raw = await this.#handle().instanceMasksAsync(l.value, l.shape, m.value, m.shape, layout, weights, wantGrad);
    return wantGrad ? this.#result(raw as NativeLossResult<Float32Array | Float64Array | NativeTensorHandle>) : raw;
  }

  /** The conv weights and biases, named as in torchvision's `vgg*().features` (2-D) or its Conv3d twin. */
  stateDict(): Record<string, { shape: number[]; data: Float32Array }> {
    const arrays = this.#handle().stateDict();
    return Object.fromEntries(stateDictLayout(this.#resolved.kept, this.#resolved.options.spatialDims).map(({ name, shape }, i) => [name, { shape, data: arrays[i] }]));
  }

  /** Writes the weights and the options to a safetensors file. */
  save(target: string | URL): void {
    saveLoss(target, this.stateDict(), this.#resolved.options);
  }

  /**
   * Loads a file written by save() (or any safetensors file with the right names and shapes).
   * `options` override the ones stored in the file; `inChannels` is needed when the file has none.
   * The reduction is the file's unless `options` give one, so the loss is typed
   * `PerceptualLoss<Reduction>` unless they do.
   */
  static load<R extends Reduction = Reduction>(source: string | URL, options: Partial<PerceptualLossOptions> & { reduction?: R } = {}): PerceptualLoss<R> {
    const { cudaDeviceCount, cudaBuild } = deviceInfo();
    const loaded = readLossFile(source, options, cudaDeviceCount, cpuBfloat16Missing(), cudaBuild);
    fromFile.set(loaded.merged, loaded);
    return new PerceptualLoss(loaded.merged) as PerceptualLoss<R>;
  }

  /** Draws the weights again from `seed`, as the constructor does. */
  reseed(seed: number): void {
    validateSeed(seed);
    this.#handle().reseed(seed);
    this.#resolved.options.seed = seed;
  }

  /** Frees the network; calls still in flight finish normally. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #handle(): NativeLossHandle {
    if (!this.#native) throw new PerceptualLossError('ERR_DISPOSED', 'This PerceptualLoss has been disposed.');
    return this.#native;
  }

  #check(layout: Layout, instances = false): ImageCheck {
    const { inChannels, device, spatialDims } = this.#resolved.options;
    const { modules, options } = this.#resolved;
    const within = (size: number) => tapsWithin(modules, options.layers, size);
    return { layout, spatialDims, inChannels, device, minSize: this.#resolved.minSize, tapsWithin: within, instances };
  }

  #layout(call: CallOptions | undefined): Layout {
    const { layout, spatialDims } = this.#resolved.options;
    checkOptionalObject(call, 'Call options', `{ layout: '${spatialDims === 3 ? 'ndhwc' : 'nhwc'}' }`);
    return resolveLayout(call?.layout, layout, spatialDims);
  }

  #single(x: unknown, role: string, call: CallOptions | undefined, instances = false): [Operand, Layout] {
    this.#handle();
    const layout = this.#layout(call);
    const operand = readImage(x, role, this.#check(layout, instances));
    const { dtype, device } = this.#resolved.options;
    checkFits(this.#resolved.kept, channelsFirst(operand.shape, layout), dtype, device, this.#deviceBytes(), role, operand.shape);
    return [operand, layout];
  }

  /** Memory of the loss's device: the host's RAM, or the CUDA device's. */
  #deviceBytes(): number {
    const { device } = this.#resolved.options;
    if (device === 'cpu') return hostMemoryBytes();
    const index = Number(device.split(':')[1] ?? 0);
    return deviceInfo().cudaDevices[index]?.memoryBytes ?? Number.POSITIVE_INFINITY;
  }

  #pair(pred: unknown, target: unknown, call: LossCallOptions | undefined): [Operand, Operand, Layout, MaskOperand | undefined] {
    const [p, layout] = this.#single(pred, 'pred', call);
    let t: Operand;
    if (target instanceof PreparedTarget) {
      const { handle, owner } = targetOf(target);
      if (handle.disposed) throw new PerceptualLossError('ERR_DISPOSED', 'This prepared target has been disposed.');
      if (owner !== this) {
        throw new PerceptualLossError('ERR_OPTIONS', 'This prepared target was made by another PerceptualLoss.');
      }
      if (target.layout !== layout) {
        throw new PerceptualLossError('ERR_SHAPE', `The target was prepared with layout '${target.layout}' but this call uses '${layout}'.`);
      }
      t = { value: handle, shape: handle.shape, tensor: false };
    } else {
      t = readImage(target, 'target', this.#check(layout));
    }
    sameShape(p.shape, t.shape, 'pred and target must have the same shape');
    const mask = call?.mask;
    if (mask === undefined) return [p, t, layout, undefined];
    if (target instanceof PreparedTarget) {
      throw new PerceptualLossError(
        'ERR_OPTIONS',
        'A mask cannot be applied to a prepared target: its features were computed without the mask. Pass the target itself with the mask.',
      );
    }
    return [p, t, layout, readMask(mask, p.shape, layout, this.#resolved.options.device)];
  }

  #segmentationArgs(logits: unknown, labels: unknown, options: SegmentationOptions | undefined): [Operand, Operand, number, Layout] {
    const [l, layout] = this.#single(logits, 'logits', options);
    const ignored = checkIgnoreIndex(options?.ignoreIndex);
    const y = readLabels(labels, l, this.#check(layout));
    return [l, y, ignored, layout];
  }

  #instanceArgs(maskLogits: unknown, masks: unknown, call: InstanceMaskCallOptions | undefined): [Operand, Operand, Layout, Float64Array | undefined] {
    const [l, layout] = this.#single(maskLogits, 'maskLogits', call, true);
    const m = readInstanceMasks(masks, l, this.#resolved.options.device);
    return [l, m, layout, checkInstanceWeights(call?.weights, l.shape[0])];
  }

  #result<G, L>(raw: NativeLossResult<Float32Array | Float64Array | NativeTensorHandle>): LossAndGrad<G, L> {
    const terms = this.#resolved.options.layers.map((name, i) => ({
      name,
      feature: raw.terms[2 * i],
      style: raw.terms[2 * i + 1],
    }));
    const grad = ArrayBuffer.isView(raw.grad) ? raw.grad : Tensor.wrap(raw.grad);
    return { loss: raw.loss as L, grad: grad as G, terms };
  }

  #features<T>(raw: NativeFeature[]): Feature<T>[] {
    return raw.map((f, i) => ({
      name: this.#resolved.options.layers[i],
      shape: f.shape,
      data: (ArrayBuffer.isView(f.data) ? f.data : Tensor.wrap(f.data)) as T,
    }));
  }
}
