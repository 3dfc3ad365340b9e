// Thin, typed helpers for the paper's tasks: segmentation (logits and labels), depth (1-channel
// maps with a valid mask) and any dense C-channel output. Each builds a PerceptualLoss with the
// right `inChannels` and computes { loss, grad } with respect to the prediction.
import { PerceptualLossError, show } from './errors';
import type { HostTensor, LabelsLike, ResultFor, TensorLike } from './input';
import { PerceptualLoss, PreparedTarget, type CallOptions, type LossAndGrad, type SegmentationOptions } from './loss';
import type { Layout, PerceptualLossOptions } from './options';
import { Tensor } from './tensor';
import { checkIgnoreIndex, checkObject, checkOptionalObject, hostTensor, nchwDims, positiveInteger } from './validate';

/** The perceptual loss options, less `inChannels`, which the task fixes. */
export type TaskLossOptions = Omit<PerceptualLossOptions, 'inChannels'>;

function checkTaskOptions(options: unknown, what: string): asserts options is Record<string, unknown> {
  checkObject(options, `${what} options`);
  if ('inChannels' in options) {
    throw new PerceptualLossError('ERR_OPTIONS', `${what}: "inChannels" is set by the task; use ${what === 'segmentationLoss' ? '"classes"' : '"channels"'} instead.`);
  }
}

// ---------------------------------------------------------------------------------------------
// Segmentation

export interface SegmentationLossOptions extends TaskLossOptions {
  /** Number of classes: the channels of the logits. */
  classes: number;
  /** Label value left out of both the softmax and the one-hot target. Default 255. */
  ignoreIndex?: number;
}

/**
 * Segmentation: pred = softmax(logits) over channels, target = one_hot(labels), both zeroed where
 * labels == ignoreIndex; the gradient is with respect to the logits.
 */
export class SegmentationLoss implements Disposable {
  readonly classes: number;
  readonly ignoreIndex: number;

  constructor(
    /** The underlying loss (inChannels = classes), for its other methods and options. */
    readonly perceptual: PerceptualLoss,
    ignoreIndex: number,
  ) {
    this.classes = perceptual.options.inChannels;
    this.ignoreIndex = ignoreIndex;
  }

  /** logits [N, classes, H, W] (or NHWC with `layout: 'nhwc'`) and integer labels [N, H, W]. */
  lossAndGrad<P extends TensorLike>(logits: P, labels: LabelsLike, call?: CallOptions): LossAndGrad<ResultFor<P>> {
    return this.perceptual.lossAndGradSegmentation(logits, labels, withIgnoreIndex(call, this.ignoreIndex));
  }

  /** The same, off the JavaScript thread. */
  async lossAndGradAsync<P extends TensorLike>(logits: P, labels: LabelsLike, call?: CallOptions): Promise<LossAndGrad<ResultFor<P>>> {
    return this.perceptual.lossAndGradSegmentationAsync(logits, labels, withIgnoreIndex(call, this.ignoreIndex));
  }

  dispose(): void {
    this.perceptual.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function withIgnoreIndex(call: CallOptions | undefined, ignoreIndex: number): SegmentationOptions {
  checkOptionalObject(call, 'Call options', "{ layout: 'nhwc' }");
  return { ...call, ignoreIndex };
}

/**
 * A perceptual loss for segmentation logits with `classes` channels.
 *
 * ```ts
 * using seg = segmentationLoss({ classes: 19, arch: 'vgg11', ignoreIndex: 255 });
 * const { loss, grad } = seg.lossAndGrad(logits, labels); // grad: d loss / d logits
 * ```
 */
export function segmentationLoss(options: SegmentationLossOptions): SegmentationLoss {
  checkTaskOptions(options, 'segmentationLoss');
  const { classes, ignoreIndex, ...rest } = options;
  positiveInteger('classes', classes);
  const ignored = checkIgnoreIndex(ignoreIndex);
  return new SegmentationLoss(new PerceptualLoss({ ...rest, inChannels: classes }), ignored);
}

// ---------------------------------------------------------------------------------------------
// Dense outputs (depth, normals, flow, ...) with an optional mask

/**
 * Where the loss looks: 0 = invalid, 1 = valid (other values weight the pixel). Either one value
 * per pixel, [N, H, W], shared by the channels, or one per element, in pred's shape and layout.
 * A typed array alone is read by its length.
 */
export type MaskLike = Uint8Array | Float32Array | Float64Array | { data: Uint8Array | Float32Array | Float64Array; shape: readonly number[] };

export interface DenseCallOptions extends CallOptions {
  mask?: MaskLike;
}

export interface DenseLossOptions extends TaskLossOptions {
  /** Channels of the prediction: 1 for depth, 3 for normals, 2 for flow, ... */
  channels: number;
}

type FloatArray = Float32Array | Float64Array;

/** Which element of pred each mask value covers. */
interface MaskPlan {
  values: ArrayLike<number>;
  /** Per pixel: the mask index of element i; per element: i itself. */
  index: (i: number) => number;
}

/**
 * A perceptual loss for C-channel maps, with an optional mask. Masked-out elements are set to 0
 * in both pred and target before the loss (so NaN or Inf there, as in depth maps with missing
 * values, do no harm), and the gradient is multiplied by the mask: the exact gradient of
 * loss(mask * pred, mask * target).
 */
export class DenseLoss implements Disposable {
  readonly channels: number;

  constructor(
    /** The underlying loss (inChannels = channels), for its other methods and options. */
    readonly perceptual: PerceptualLoss,
  ) {
    this.channels = perceptual.options.inChannels;
  }

  /** The loss alone. */
  loss(pred: TensorLike, target: TensorLike | PreparedTarget, call?: DenseCallOptions): number | FloatArray {
    const [mask, rest] = splitMask(call);
    if (mask === undefined) return this.perceptual.loss(pred, target, rest);
    const [p, t] = this.#masked(pred, target, mask, rest);
    return this.perceptual.loss(p, t, rest);
  }

  /** The loss and d loss / d pred (zero where the mask is 0). */
  lossAndGrad<P extends TensorLike>(pred: P, target: TensorLike | PreparedTarget, call?: DenseCallOptions): LossAndGrad<ResultFor<P>> {
    const [mask, rest] = splitMask(call);
    if (mask === undefined) return this.perceptual.lossAndGrad(pred, target, rest) as LossAndGrad<ResultFor<P>>;
    const [p, t, plan] = this.#masked(pred, target, mask, rest);
    const result = this.perceptual.lossAndGrad(p, t, rest);
    applyMask(result.grad as FloatArray, plan);
    return result as LossAndGrad<ResultFor<P>>;
  }

  /** The same, off the JavaScript thread (the masking itself runs on it). */
  async lossAndGradAsync<P extends TensorLike>(
    pred: P,
    target: TensorLike | PreparedTarget,
    call?: DenseCallOptions,
  ): Promise<LossAndGrad<ResultFor<P>>> {
    const [mask, rest] = splitMask(call);
    if (mask === undefined) return (await this.perceptual.lossAndGradAsync(pred, target, rest)) as LossAndGrad<ResultFor<P>>;
    const [p, t, plan] = this.#masked(pred, target, mask, rest);
    const result = await this.perceptual.lossAndGradAsync(p, t, rest);
    applyMask(result.grad as FloatArray, plan);
    return result as LossAndGrad<ResultFor<P>>;
  }

  dispose(): void {
    this.perceptual.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #masked(pred: unknown, target: unknown, mask: MaskLike, call: CallOptions): [HostTensor, HostTensor, MaskPlan] {
    if (pred instanceof Tensor || target instanceof Tensor || target instanceof PreparedTarget) {
      throw new PerceptualLossError(
        'ERR_OPTIONS',
        'A mask needs pred and target as host arrays { data, shape }: copy Tensors with toArray(), or apply the mask on the device yourself.',
      );
    }
    const p = hostTensor<FloatArray>(pred, 'pred', [Float32Array, Float64Array]);
    const t = hostTensor<FloatArray>(target, 'target', [Float32Array, Float64Array]);
    const layout: Layout = call.layout ?? this.perceptual.options.layout;
    const plan = maskPlan(mask, p.shape, layout);
    return [{ data: masked(p.data, plan), shape: p.shape }, { data: masked(t.data, plan), shape: t.shape }, plan];
  }
}

function splitMask(call: DenseCallOptions | undefined): [MaskLike | undefined, CallOptions] {
  checkOptionalObject(call, 'Call options', '{ mask }');
  const { mask, ...rest } = call ?? {};
  return [mask, rest];
}

function maskPlan(mask: MaskLike, shape: readonly number[], layout: Layout): MaskPlan {
  const isArray = mask instanceof Uint8Array || mask instanceof Float32Array || mask instanceof Float64Array;
  const data = isArray ? mask : (mask as { data?: unknown }).data;
  if (!(data instanceof Uint8Array || data instanceof Float32Array || data instanceof Float64Array)) {
    throw new PerceptualLossError('ERR_DTYPE', `mask must be a Uint8Array, Float32Array or Float64Array, or { data, shape } of one; got ${show(mask)}.`);
  }
  if (shape.length !== 4) {
    throw new PerceptualLossError('ERR_SHAPE', `pred must be 4-D to be masked; got shape ${show(shape)}.`);
  }
  const [n, c, h, w] = nchwDims(shape, layout);
  const pixels = n * h * w;
  const elements = pixels * c;
  const given = isArray ? undefined : [...(mask as { shape: readonly number[] }).shape];
  const perPixelShape = [n, h, w];
  const fullShape = [...shape];
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
  if (given !== undefined && !same(given, perPixelShape) && !same(given, fullShape)) {
    throw new PerceptualLossError('ERR_SHAPE', `mask shape ${show(given)} must be [N, H, W] = ${show(perPixelShape)} or pred's shape ${show(fullShape)}.`);
  }
  if (data.length === elements && (given === undefined || same(given, fullShape))) return { values: data, index: (i) => i };
  if (data.length === pixels) {
    // NCHW: element (b, k, y, x) is at ((b*C + k)*H + y)*W + x; its pixel is (b*H + y)*W + x.
    // NHWC: element i's pixel is floor(i / C).
    const plane = h * w;
    const index = layout === 'nhwc' ? (i: number) => Math.floor(i / c) : (i: number) => Math.floor(i / (c * plane)) * plane + (i % plane);
    return { values: data, index };
  }
  throw new PerceptualLossError(
    'ERR_SHAPE',
    `mask holds ${data.length} values; expected ${pixels} (one per pixel, [N, H, W]) or ${elements} (one per element of pred ${show(fullShape)}).`,
  );
}

function masked<A extends FloatArray>(data: A, plan: MaskPlan): A {
  const out = new (data.constructor as new (n: number) => A)(data.length);
  for (let i = 0; i < data.length; i++) {
    const m = plan.values[plan.index(i)];
    // 0 * NaN is NaN: invalid elements are set to 0, not multiplied.
    out[i] = m === 0 ? 0 : data[i] * m;
  }
  return out;
}

function applyMask(grad: FloatArray, plan: MaskPlan): void {
  for (let i = 0; i < grad.length; i++) {
    const m = plan.values[plan.index(i)];
    grad[i] = m === 0 ? 0 : grad[i] * m; // +0, not -0, where masked out
  }
}

/**
 * A perceptual loss for dense C-channel maps (surface normals, optical flow, images, ...).
 *
 * ```ts
 * using normals = denseLoss({ channels: 3 });
 * const { loss, grad } = normals.lossAndGrad(pred, target, { mask }); // mask: [N, H, W]
 * ```
 */
export function denseLoss(options: DenseLossOptions): DenseLoss {
  checkTaskOptions(options, 'denseLoss');
  const { channels, ...rest } = options;
  positiveInteger('channels', channels);
  return new DenseLoss(new PerceptualLoss({ ...rest, inChannels: channels }));
}

/**
 * A perceptual loss for 1-channel depth maps [N, 1, H, W] (or [N, H, W, 1]), with an optional
 * valid mask; see `depthValidMask`.
 *
 * ```ts
 * using depth = depthLoss({ arch: 'vgg11' });
 * const { loss, grad } = depth.lossAndGrad(pred, target, { mask: depthValidMask(target) });
 * ```
 */
export function depthLoss(options: TaskLossOptions = {}): DenseLoss {
  checkTaskOptions(options, 'depthLoss');
  return new DenseLoss(new PerceptualLoss({ ...options, inChannels: 1 }));
}

/**
 * The usual valid-depth mask: 1 where the target is finite and in (min, max], else 0. With the
 * default min 0, missing values stored as 0 (sparse LiDAR, Kinect holes) are invalid.
 */
export function depthValidMask(target: { data: FloatArray }, range: { min?: number; max?: number } = {}): Uint8Array {
  const { min = 0, max = Infinity } = range;
  const data = target.data;
  const mask = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) mask[i] = Number.isFinite(data[i]) && data[i] > min && data[i] <= max ? 1 : 0;
  return mask;
}
