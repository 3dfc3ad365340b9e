// PerceptualLoss: the typed API over the native loss.
import { fileURLToPath } from 'node:url';
import { deviceInfo, native, type NativeFeature, type NativeLossHandle, type NativeLossResult, type NativeTargetHandle, type NativeTensorHandle } from './binding';
import { PerceptualLossError, show } from './errors';
import { readImage, readLabels, sameShape, type ImageCheck, type LabelsLike, type Operand, type ResultFor, type TensorLike } from './input';
import {
  PERFORMANCE_SWITCHES,
  resolveLayout,
  resolveOptions,
  stateDictLayout,
  validateSeed,
  type Layout,
  type PerceptualLossOptions,
  type Resolved,
  type ResolvedOptions,
} from './options';
import { checkFits, hostMemoryBytes } from './memory';
import { readSafetensors, writeSafetensors, type NamedArray } from './safetensors';
import { Tensor } from './tensor';
import { checkIgnoreIndex, checkObject, checkOptionalObject, elementCount, nchwDims, optionOf } from './validate';

export interface CallOptions {
  /** Overrides the loss's `layout` for this call. */
  layout?: Layout;
}

/**
 * Where the loss looks: 0 = left out, 1 = in (other values weight the element). One value per
 * pixel, [N, H, W] or [N, 1, H, W] ([N, H, W, 1] in 'nhwc'), shared by the channels, or one per
 * element in pred's shape and layout. A typed array alone is read by its length. A Tensor mask
 * is uint8, float32 or float64, on the loss's device.
 */
export type MaskLike =
  | Uint8Array
  | Float32Array
  | Float64Array
  | { data: Uint8Array | Float32Array | Float64Array; shape: readonly number[] }
  | Tensor;

export interface LossCallOptions extends CallOptions {
  /**
   * pred and target are multiplied by the mask before the network (elements under a 0 are set to
   * 0, so NaN or Inf there do no harm), and the gradient by the mask: the exact loss and gradient
   * of loss(mask * pred, mask * target). Not with a prepared target.
   */
  mask?: MaskLike;
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

export interface LossAndGrad<G> {
  /** A number, or one value per sample (an array of pred's type) with reduction 'none'. */
  loss: number | Float32Array | Float64Array;
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

const targets = new WeakMap<PreparedTarget, { handle: NativeTargetHandle; owner: PerceptualLoss }>();

function targetOf(target: PreparedTarget): { handle: NativeTargetHandle; owner: PerceptualLoss } {
  const entry = targets.get(target);
  if (!entry) throw new PerceptualLossError('ERR_SHAPE', 'not a prepared target of this package (make one with loss.prepareTarget()).');
  return entry;
}

/** A target whose features were computed once; pass it as `target` again and again. */
export class PreparedTarget implements Disposable {
  /** @internal */
  constructor(
    handle: NativeTargetHandle,
    owner: PerceptualLoss,
    readonly layout: Layout,
  ) {
    targets.set(this, { handle, owner });
  }

  /** The shape of the target it was prepared from, in its layout. */
  get shape(): number[] {
    return targetOf(this).handle.shape;
  }

  get disposed(): boolean {
    return targetOf(this).handle.disposed;
  }

  dispose(): void {
    targetOf(this).handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

// load()'s way into the constructor: the options it resolved and the file's weights, so that
// nothing is resolved twice and no weight is drawn only to be replaced.
let loading: { resolved: Resolved; weights: Float32Array[] } | undefined;

let bfloat16Missing: string | undefined;

/** What bfloat16 on this CPU lacks ('' where it can run), read once. */
function cpuBfloat16Missing(): string {
  bfloat16Missing ??= native().runtimeInfo().cpu.bfloat16Missing;
  return bfloat16Missing;
}

export class PerceptualLoss implements Disposable {
  readonly #resolved: Resolved;
  #native: NativeLossHandle | undefined;

  constructor(options: PerceptualLossOptions) {
    const loaded = loading;
    loading = undefined;
    this.#resolved = loaded?.resolved ?? resolveOptions(options, deviceInfo().cudaDeviceCount, cpuBfloat16Missing());
    const binding = native();
    this.#native = new binding.NativeLoss(this.#resolved.native, loaded?.weights);
  }

  /** The options in force, with every default filled in. */
  get options(): Readonly<ResolvedOptions> {
    return structuredClone(this.#resolved.options);
  }

  loss(pred: TensorLike, target: TensorLike | PreparedTarget, call?: LossCallOptions): number | Float32Array | Float64Array {
    const [p, t, layout, m] = this.#pair(pred, target, call);
    return this.#handle().loss(p.value, p.shape, t.value, t.shape, layout, m?.value, m?.shape);
  }

  async lossAsync(pred: TensorLike, target: TensorLike | PreparedTarget, call?: LossCallOptions): Promise<number | Float32Array | Float64Array> {
    const [p, t, layout, m] = this.#pair(pred, target, call);
    return this.#handle().lossAsync(p.value, p.shape, t.value, t.shape, layout, m?.value, m?.shape);
  }

  lossAndGrad<P extends TensorLike>(pred: P, target: TensorLike | PreparedTarget, call?: LossCallOptions): LossAndGrad<ResultFor<P>> {
    const [p, t, layout, m] = this.#pair(pred, target, call);
    return this.#result(this.#handle().lossAndGrad(p.value, p.shape, t.value, t.shape, layout, m?.value, m?.shape));
  }

  async lossAndGradAsync<P extends TensorLike>(
    pred: P,
    target: TensorLike | PreparedTarget,
    call?: LossCallOptions,
  ): Promise<LossAndGrad<ResultFor<P>>> {
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
  ): LossAndGrad<ResultFor<P>> {
    const [l, y, ignoreIndex, layout] = this.#segmentationArgs(logits, labels, options);
    return this.#result(this.#handle().lossAndGradSegmentation(l.value, l.shape, y.value, y.shape, ignoreIndex, layout));
  }

  async lossAndGradSegmentationAsync<P extends TensorLike>(
    logits: P,
    labels: LabelsLike,
    options?: SegmentationOptions,
  ): Promise<LossAndGrad<ResultFor<P>>> {
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

  /** The conv weights and biases, named as in torchvision's `vgg*().features`. */
  stateDict(): Record<string, { shape: number[]; data: Float32Array }> {
    const arrays = this.#handle().stateDict();
    return Object.fromEntries(stateDictLayout(this.#resolved.kept).map(({ name, shape }, i) => [name, { shape, data: arrays[i] }]));
  }

  /** Writes the weights and the options to a safetensors file. */
  save(target: string | URL): void {
    const file = filePath(target, 'save');
    const arrays: NamedArray[] = Object.entries(this.stateDict()).map(([name, a]) => ({ name, ...a }));
    // The device and the performance switches belong to the machine, not to the file.
    const portable: Partial<ResolvedOptions> = { ...this.#resolved.options };
    for (const key of ['device', ...PERFORMANCE_SWITCHES.map((s) => s.option)] as const) delete portable[key];
    writeSafetensors(file, arrays, {
      format: 'pt',
      'generic-perceptual-loss': JSON.stringify(portable),
    });
  }

  /**
   * Loads a file written by save() (or any safetensors file with the right names and shapes).
   * `options` override the ones stored in the file; `inChannels` is needed when the file has none.
   */
  static load(source: string | URL, options: Partial<PerceptualLossOptions> = {}): PerceptualLoss {
    const file = filePath(source, 'PerceptualLoss.load');
    checkObject(options, 'PerceptualLoss.load options');
    const { tensors, metadata } = readSafetensors(file);
    let stored: Partial<PerceptualLossOptions> = {};
    const text = metadata['generic-perceptual-loss'];
    if (text !== undefined) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new PerceptualLossError('ERR_FILE', `${file}: the stored options are not valid JSON.`);
      }
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw new PerceptualLossError('ERR_FILE', `${file}: the stored options are not an object.`);
      }
      // Checked by resolveOptions below, as the caller's options are.
      stored = parsed;
    }
    // Other taps than the stored ones keep the stored weights of the taps they share.
    if (Array.isArray(options.layers) && options.layerWeights === undefined && Array.isArray(stored.layers) && Array.isArray(stored.layerWeights)) {
      const byName = new Map(stored.layers.map((name, i) => [name, (stored.layerWeights as number[])[i]]));
      // (The names themselves are checked by resolveOptions below.)
      const layers = options.layers as readonly string[];
      stored.layerWeights = Object.fromEntries(layers.filter((l) => byName.has(l)).map((l) => [l, byName.get(l)!]));
    }
    const merged = { ...stored, ...options } as PerceptualLossOptions;
    let resolved: Resolved;
    try {
      resolved = resolveOptions(merged, deviceInfo().cudaDeviceCount, cpuBfloat16Missing());
    } catch (error) {
      // An invalid option that came from the file makes a bad file; the caller's own stay ERR_OPTIONS.
      const option = optionOf(error);
      if (text !== undefined && option !== undefined && !Object.hasOwn(options, option)) {
        throw new PerceptualLossError('ERR_FILE', `${file}: the stored options are invalid: ${(error as Error).message}`, { cause: error });
      }
      throw error;
    }
    // The file must hold this architecture's tensors before the network is built: a small file
    // cannot make the loader build a network larger than itself.
    loading = { resolved, weights: weightsFor(file, resolved, tensors) };
    try {
      return new PerceptualLoss(merged);
    } finally {
      loading = undefined;
    }
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

  #check(layout: Layout): ImageCheck {
    const { inChannels, device } = this.#resolved.options;
    return { layout, inChannels, device, minSize: this.#resolved.minSize };
  }

  #layout(call: CallOptions | undefined): Layout {
    checkOptionalObject(call, 'Call options', "{ layout: 'nhwc' }");
    return resolveLayout(call?.layout, this.#resolved.options.layout);
  }

  #single(x: unknown, role: string, call: CallOptions | undefined): [Operand, Layout] {
    this.#handle();
    const layout = this.#layout(call);
    const operand = readImage(x, role, this.#check(layout));
    checkFits(this.#resolved.kept, nchwDims(operand.shape, layout), this.#resolved.options.dtype, this.#deviceBytes(), role);
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

  #result<G>(raw: NativeLossResult<Float32Array | Float64Array | NativeTensorHandle>): LossAndGrad<G> {
    const terms = this.#resolved.options.layers.map((name, i) => ({
      name,
      feature: raw.terms[2 * i],
      style: raw.terms[2 * i + 1],
    }));
    const grad = ArrayBuffer.isView(raw.grad) ? raw.grad : Tensor.wrap(raw.grad);
    return { loss: raw.loss, grad: grad as G, terms };
  }

  #features<T>(raw: NativeFeature[]): Feature<T>[] {
    return raw.map((f, i) => ({
      name: this.#resolved.options.layers[i],
      shape: f.shape,
      data: (ArrayBuffer.isView(f.data) ? f.data : Tensor.wrap(f.data)) as T,
    }));
  }

}

function sameShapeOrFileError(file: string, name: string, got: number[], want: number[]): void {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new PerceptualLossError('ERR_FILE', `${file}: ${name} has shape ${show(got)} but the architecture needs ${show(want)}.`);
  }
}

/** A path string, or a file: URL as fs takes it; never a descriptor number or another scheme. */
function filePath(file: unknown, what: string): string {
  if (typeof file === 'string') return file;
  if (file instanceof URL) {
    if (file.protocol !== 'file:') {
      throw new PerceptualLossError('ERR_FILE', `${what} takes a file path or a file: URL; got the ${file.protocol} URL ${file.href}.`);
    }
    return fileURLToPath(file);
  }
  throw new PerceptualLossError('ERR_FILE', `${what} takes a file path (a string); got ${show(file)}.`);
}

/** The file's arrays in conv order, checked against the architecture (names and shapes). */
function weightsFor(file: string, resolved: Resolved, tensors: Map<string, NamedArray>): Float32Array[] {
  const expected = stateDictLayout(resolved.kept);
  const missing = expected.filter(({ name }) => !tensors.has(name)).map(({ name }) => name);
  // Convs past the cut belong to the architecture too (a file saved with deeper taps): skipped.
  const known = new Set(stateDictLayout(resolved.modules).map(({ name }) => name));
  const extra = [...tensors.keys()].filter((name) => !known.has(name));
  if (missing.length > 0 || extra.length > 0) {
    throw new PerceptualLossError(
      'ERR_FILE',
      `${file} does not match the architecture: ` +
        [missing.length ? `missing ${missing.join(', ')}` : '', extra.length ? `unexpected ${extra.join(', ')}` : ''].filter(Boolean).join('; ') +
        '.',
    );
  }
  return expected.map(({ name, shape }) => {
    const got = tensors.get(name)!;
    sameShapeOrFileError(file, name, got.shape, shape);
    return got.data;
  });
}

/** A mask as native code takes it: its data, shaped to broadcast over pred in the call's layout. */
interface MaskOperand {
  value: Uint8Array | Float32Array | Float64Array | NativeTensorHandle;
  shape: number[];
}

const MASK_ARRAYS = [Uint8Array, Float32Array, Float64Array];

function readMask(mask: MaskLike, shape: readonly number[], layout: Layout, device: string): MaskOperand {
  let value: MaskOperand['value'];
  let given: number[] | undefined;
  let length: number;
  if (mask instanceof Tensor) {
    const handle = Tensor.handle(mask);
    if (handle.device !== device) {
      throw new PerceptualLossError('ERR_DEVICE', `mask is on ${handle.device} but the loss runs on ${device}.`);
    }
    if (!['uint8', 'float32', 'float64'].includes(handle.dtype)) {
      throw new PerceptualLossError('ERR_DTYPE', `mask is a ${handle.dtype} Tensor; expected uint8, float32 or float64.`);
    }
    value = handle;
    given = handle.shape;
    length = elementCount(given);
  } else {
    const isArray = MASK_ARRAYS.some((type) => mask instanceof type);
    const data = isArray ? mask : (mask as { data?: unknown } | null)?.data;
    if (!MASK_ARRAYS.some((type) => data instanceof type)) {
      throw new PerceptualLossError(
        'ERR_DTYPE',
        `mask must be a Uint8Array, Float32Array or Float64Array, { data, shape } of one, or a Tensor; got ${show(mask)}.`,
      );
    }
    value = data as Uint8Array | Float32Array | Float64Array;
    length = value.length;
    if (!isArray) {
      const raw = (mask as { shape?: unknown }).shape;
      if (!Array.isArray(raw)) throw new PerceptualLossError('ERR_SHAPE', `mask.shape must be an array; got ${show(raw)}.`);
      // Its entries are checked against the operand's shape below.
      given = [...(raw as number[])];
    }
  }
  const [n, c, h, w] = nchwDims(shape, layout);
  const pixels = n * h * w;
  const elements = pixels * c;
  const full = [...shape];
  const broadcast = layout === 'nhwc' ? [n, h, w, 1] : [n, 1, h, w];
  const perPixel = [[n, h, w], broadcast];
  const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
  if (given !== undefined && !perPixel.some((s) => same(given, s)) && !same(given, full)) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `mask shape ${show(given)} must be [N, H, W] = ${show(perPixel[0])}, ${layout === 'nhwc' ? '[N, H, W, 1]' : '[N, 1, H, W]'} = ${show(broadcast)} or pred's shape ${show(full)}.`,
    );
  }
  if (length === elements && (given === undefined || same(given, full))) return { value, shape: full };
  if (length === pixels) return { value, shape: broadcast };
  throw new PerceptualLossError(
    'ERR_SHAPE',
    `mask holds ${length} values; expected ${pixels} (one per pixel, [N, H, W]) or ${elements} (one per element of pred ${show(full)}).`,
  );
}
