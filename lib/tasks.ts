// Thin, typed helpers for the paper's tasks: segmentation (logits and labels), depth (1-channel
// maps with a valid mask), any dense C-channel output, and instance masks (mask logits and binary
// masks, one per instance). Each builds a PerceptualLoss with the right `inChannels`, in 2-D or
// (with spatialDims: 3) on volumes, and computes { loss, grad } with respect to the prediction.
import { PerceptualLossError } from './errors';
import type { InstanceMasksLike, LabelsLike, ResultFor, TensorLike } from './input';
import {
  PerceptualLoss,
  PreparedTarget,
  type CallOptions,
  type InstanceMaskCallOptions,
  type LossAndGrad,
  type LossCallOptions,
  type LossValue,
  type MaskLike,
  type SegmentationOptions,
} from './loss';
import type { PerceptualLossOptions, Reduction } from './options';
import { checkIgnoreIndex, checkObject, checkOptionalObject, positiveInteger } from './validate';
import './disposable';

/** The perceptual loss options, less `inChannels`, which the task fixes. */
export type TaskLossOptions = Omit<PerceptualLossOptions, 'inChannels'>;

/** What to use instead of inChannels, by helper. */
const INSTEAD: Record<string, string> = {
  segmentationLoss: 'use "classes" instead',
  denseLoss: 'use "channels" instead',
  depthLoss: 'use "channels" instead',
  instanceMaskLoss: 'instance masks have 1 channel, one mask per instance: leave it out',
};

function checkTaskOptions(options: unknown, what: string): asserts options is Record<string, unknown> {
  checkObject(options, `${what} options`);
  if ('inChannels' in options) {
    throw new PerceptualLossError('ERR_OPTIONS', `${what}: "inChannels" is set by the task; ${INSTEAD[what]}.`);
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
export class SegmentationLoss<R extends Reduction = 'mean' | 'sum'> {
  readonly classes: number;
  readonly ignoreIndex: number;

  constructor(
    /** The underlying loss (inChannels = classes), for its other methods and options. */
    readonly perceptual: PerceptualLoss<R>,
    ignoreIndex: number,
  ) {
    this.classes = perceptual.options.inChannels;
    this.ignoreIndex = ignoreIndex;
  }

  /**
   * logits [N, classes, H, W] (or NHWC with `layout: 'nhwc'`) and integer labels [N, H, W]; for
   * volumes, logits [N, classes, D, H, W] (or NDHWC) and labels [N, D, H, W].
   */
  lossAndGrad<P extends TensorLike>(logits: P, labels: LabelsLike, call?: CallOptions): LossAndGrad<ResultFor<P>, LossValue<R, P>> {
    return this.perceptual.lossAndGradSegmentation(logits, labels, withIgnoreIndex(call, this.ignoreIndex));
  }

  /** The same, off the JavaScript thread. */
  async lossAndGradAsync<P extends TensorLike>(logits: P, labels: LabelsLike, call?: CallOptions): Promise<LossAndGrad<ResultFor<P>, LossValue<R, P>>> {
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
export function segmentationLoss<R extends Reduction = 'mean' | 'sum'>(options: SegmentationLossOptions & { reduction?: R }): SegmentationLoss<R> {
  checkTaskOptions(options, 'segmentationLoss');
  const { classes, ignoreIndex, ...rest } = options;
  positiveInteger('classes', classes);
  const ignored = checkIgnoreIndex(ignoreIndex);
  return new SegmentationLoss(new PerceptualLoss<R>({ ...rest, inChannels: classes }), ignored);
}

// ---------------------------------------------------------------------------------------------
// Dense outputs (depth, normals, flow, ...) with an optional mask

export type { MaskLike };

/** Call options of a dense loss: the layout, and an optional mask (see `MaskLike`). */
export type DenseCallOptions = LossCallOptions;

export interface DenseLossOptions extends TaskLossOptions {
  /** Channels of the prediction: 1 for depth or a scalar volume (CT, MR), 3 for normals, 2 for flow, ... */
  channels: number;
}

type FloatArray = Float32Array | Float64Array;

/**
 * A perceptual loss for C-channel maps, with an optional mask. Masked-out elements are set to 0
 * in both pred and target before the loss (so NaN or Inf there, as in depth maps with missing
 * values, do no harm), and the gradient is multiplied by the mask: the exact gradient of
 * loss(mask * pred, mask * target). pred, target and the mask may be host arrays or Tensors; the
 * masking runs on the loss's device.
 */
export class DenseLoss<R extends Reduction = 'mean' | 'sum'> {
  readonly channels: number;

  constructor(
    /** The underlying loss (inChannels = channels), for its other methods and options. */
    readonly perceptual: PerceptualLoss<R>,
  ) {
    this.channels = perceptual.options.inChannels;
  }

  /** The loss alone. */
  loss<P extends TensorLike>(pred: P, target: TensorLike | PreparedTarget, call?: DenseCallOptions): LossValue<R, P> {
    return this.perceptual.loss(pred, target, checkCall(call));
  }

  /** The loss and d loss / d pred (zero where the mask is 0). */
  lossAndGrad<P extends TensorLike>(pred: P, target: TensorLike | PreparedTarget, call?: DenseCallOptions): LossAndGrad<ResultFor<P>, LossValue<R, P>> {
    return this.perceptual.lossAndGrad(pred, target, checkCall(call));
  }

  /** The same, off the JavaScript thread. */
  async lossAndGradAsync<P extends TensorLike>(
    pred: P,
    target: TensorLike | PreparedTarget,
    call?: DenseCallOptions,
  ): Promise<LossAndGrad<ResultFor<P>, LossValue<R, P>>> {
    return (await this.perceptual.lossAndGradAsync(pred, target, checkCall(call)));
  }

  dispose(): void {
    this.perceptual.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function checkCall(call: DenseCallOptions | undefined): DenseCallOptions | undefined {
  checkOptionalObject(call, 'Call options', '{ mask }');
  return call;
}

/**
 * A perceptual loss for dense C-channel maps (surface normals, optical flow, images, ...), or
 * volumes with `spatialDims: 3` (CT, MR, microscopy stacks: [N, C, D, H, W]).
 *
 * ```ts
 * using normals = denseLoss({ channels: 3 });
 * const { loss, grad } = normals.lossAndGrad(pred, target, { mask }); // mask: [N, H, W]
 * using ct = denseLoss({ channels: 1, spatialDims: 3 }); // pred, target: [N, 1, D, H, W]
 * ```
 */
export function denseLoss<R extends Reduction = 'mean' | 'sum'>(options: DenseLossOptions & { reduction?: R }): DenseLoss<R> {
  checkTaskOptions(options, 'denseLoss');
  const { channels, ...rest } = options;
  positiveInteger('channels', channels);
  return new DenseLoss(new PerceptualLoss<R>({ ...rest, inChannels: channels }));
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
export function depthLoss<R extends Reduction = 'mean' | 'sum'>(options: TaskLossOptions & { reduction?: R } = {}): DenseLoss<R> {
  checkTaskOptions(options, 'depthLoss');
  return new DenseLoss(new PerceptualLoss<R>({ ...options, inChannels: 1 }));
}

/**
 * The usual valid-depth mask: 1 where the target is finite and in (min, max], else 0. With the
 * default min 0, missing values stored as 0 (sparse LiDAR, Kinect holes) are invalid. `target` is
 * a host value `{ data, shape }` (the shape is not needed: the mask has one value per element).
 */
export function depthValidMask(target: { readonly data: FloatArray; readonly shape?: readonly number[] }, range: { min?: number; max?: number } = {}): Uint8Array {
  const { min = 0, max = Infinity } = range;
  const data = target.data;
  const mask = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) mask[i] = Number.isFinite(data[i]) && data[i] > min && data[i] <= max ? 1 : 0;
  return mask;
}

// ---------------------------------------------------------------------------------------------
// Instance masks

/** The perceptual loss options, less `inChannels`: instance masks have one channel. */
export type InstanceMaskLossOptions = TaskLossOptions;

export type { InstanceMaskCallOptions, InstanceMasksLike };

/**
 * Instance masks, the paper's third task: pred = sigmoid(maskLogits), target = masks, through a
 * network that takes 1 channel; the gradient is with respect to the mask logits. maskLogits and
 * masks are [M, 1, H, W], one mask per instance ([M, H, W, 1] with layout 'nhwc'; [M, 1, D, H, W]
 * or [M, D, H, W, 1] with spatialDims: 3). `weights` (length M, each >= 0, not all 0) weight the
 * instances: with t_i instance i's loss under reduction 'none', 'mean' gives
 * sum_i w_i t_i / sum_i w_i, 'sum' gives sum_i w_i s_i (s_i its loss under 'sum'), 'none' the M
 * values w_i t_i. Without weights the loss equals PerceptualLoss's on sigmoid(maskLogits).
 */
export class InstanceMaskLoss<R extends Reduction = 'mean' | 'sum'> {
  constructor(
    /** The underlying loss (inChannels = 1), for its other methods and options. */
    readonly perceptual: PerceptualLoss<R>,
  ) {}

  /** The loss alone. */
  loss<P extends TensorLike>(maskLogits: P, masks: InstanceMasksLike, call?: InstanceMaskCallOptions): LossValue<R, P> {
    return this.perceptual.instanceMasks(maskLogits, masks, checkInstanceCall(call), false) as LossValue<R, P>;
  }

  /** The same, off the JavaScript thread. */
  async lossAsync<P extends TensorLike>(maskLogits: P, masks: InstanceMasksLike, call?: InstanceMaskCallOptions): Promise<LossValue<R, P>> {
    return (await this.perceptual.instanceMasksAsync(maskLogits, masks, checkInstanceCall(call), false)) as LossValue<R, P>;
  }

  /** The loss and d loss / d maskLogits, in the logits' shape and layout. */
  lossAndGrad<P extends TensorLike>(maskLogits: P, masks: InstanceMasksLike, call?: InstanceMaskCallOptions): LossAndGrad<ResultFor<P>, LossValue<R, P>> {
    return this.perceptual.instanceMasks(maskLogits, masks, checkInstanceCall(call), true) as LossAndGrad<ResultFor<P>, LossValue<R, P>>;
  }

  /** The same, off the JavaScript thread. */
  async lossAndGradAsync<P extends TensorLike>(
    maskLogits: P,
    masks: InstanceMasksLike,
    call?: InstanceMaskCallOptions,
  ): Promise<LossAndGrad<ResultFor<P>, LossValue<R, P>>> {
    return (await this.perceptual.instanceMasksAsync(maskLogits, masks, checkInstanceCall(call), true)) as LossAndGrad<ResultFor<P>, LossValue<R, P>>;
  }

  dispose(): void {
    this.perceptual.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function checkInstanceCall(call: InstanceMaskCallOptions | undefined): InstanceMaskCallOptions | undefined {
  checkOptionalObject(call, 'Call options', '{ weights }');
  return call;
}

/**
 * A perceptual loss for predicted instance masks (the paper's third task).
 *
 * ```ts
 * using masks = instanceMaskLoss({ arch: 'vgg11' });
 * const { loss, grad } = masks.lossAndGrad(maskLogits, groundTruth, { weights }); // grad: d loss / d maskLogits
 * ```
 */
export function instanceMaskLoss<R extends Reduction = 'mean' | 'sum'>(options: InstanceMaskLossOptions & { reduction?: R } = {}): InstanceMaskLoss<R> {
  checkTaskOptions(options, 'instanceMaskLoss');
  return new InstanceMaskLoss(new PerceptualLoss<R>({ ...options, inChannels: 1 }));
}
