// `generic-perceptual-loss/tfjs`: the loss as a differentiable TensorFlow.js op.
//
// tfjs-core is an optional peer dependency: only its types are imported here, and the module
// itself is required when a loss function is made, so the rest of the package works without it.
import type * as tf from '@tensorflow/tfjs-core';
import { PerceptualLossError, show, withArticle } from './errors';
import type { CallOptions, PerceptualLoss } from './loss';
import type { Reduction } from './options';
import type { InstanceMaskLoss } from './tasks';
import { checkIgnoreIndex, checkOptionalObject, nonNegative, type InstanceWeights } from './validate';

export interface TfjsLossOptions {
  /**
   * Multiplies the loss and its gradient; default 1. `ce + lambda * perceptual` can be written
   * with `weight: lambda` or with `tf.add(ce, tf.mul(lambda, perceptual))`, to the same effect.
   */
  weight?: number;
}

export interface TfjsSegmentationOptions extends TfjsLossOptions {
  /** Label value whose pixels are left out of both the softmax and the one-hot target. Default 255. */
  ignoreIndex?: number;
}

/**
 * pred and target NHWC [N, H, W, C], float32, or for a loss with spatialDims: 3, NDHWC
 * [N, D, H, W, C] (as tf.conv3d takes them); returns the loss as a scalar.
 */
export interface TfjsPerceptualLossFn {
  (pred: tf.Tensor4D, target: tf.Tensor4D): tf.Scalar;
  (pred: tf.Tensor5D, target: tf.Tensor5D): tf.Scalar;
}

/**
 * logits NHWC [N, H, W, classes], float32, and int32 class ids [N, H, W]; for volumes NDHWC
 * [N, D, H, W, classes] and [N, D, H, W]. Returns a scalar.
 */
export interface TfjsSegmentationLossFn {
  (logits: tf.Tensor4D, labels: tf.Tensor3D): tf.Scalar;
  (logits: tf.Tensor5D, labels: tf.Tensor4D): tf.Scalar;
}

/** Instance weights for the TensorFlow.js form: a tf.Tensor1D of length M, or as the package takes them. */
export type TfjsInstanceWeights = tf.Tensor1D | InstanceWeights;

/**
 * Mask logits NHWC [M, H, W, 1], float32, one mask per instance, and the binary masks of the same
 * shape (float32, bool or int32 0/1); for volumes [M, D, H, W, 1]. `weights`, if given, weight
 * the instances. Returns a scalar.
 */
export interface TfjsInstanceMaskLossFn {
  (maskLogits: tf.Tensor4D, masks: tf.Tensor4D, weights?: TfjsInstanceWeights): tf.Scalar;
  (maskLogits: tf.Tensor5D, masks: tf.Tensor5D, weights?: TfjsInstanceWeights): tf.Scalar;
}

type Tf = typeof tf;

/** tfjs types customGrad's function as variadic (Tensor | GradSaveFunc)[]; ours name their arguments. */
type CustomGradientFunc = Parameters<Tf['customGrad']>[0];

/** The channels-last layout of the loss's spatialDims: TensorFlow.js's NHWC, or NDHWC for volumes. */
function tfLayout(loss: PerceptualLoss<Reduction>): CallOptions {
  return { layout: loss.options.spatialDims === 3 ? 'ndhwc' : 'nhwc' };
}

/** How messages name a tf input of the loss: its rank and axes. */
function tfShape(loss: PerceptualLoss<Reduction>, channel = 'C', batch = 'N'): string {
  return loss.options.spatialDims === 3 ? `tf.Tensor5D [${batch}, D, H, W, ${channel}]` : `tf.Tensor4D [${batch}, H, W, ${channel}]`;
}

function loadTf(): Tf {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- an optional peer dependency, loaded on first use
    return require('@tensorflow/tfjs-core') as Tf;
  } catch (cause) {
    // No PerceptualLossError code fits a missing optional dependency; keep Node's own code.
    const error = new Error(
      'generic-perceptual-loss/tfjs needs @tensorflow/tfjs-core (an optional peer dependency): ' +
        'npm install @tensorflow/tfjs-core (or @tensorflow/tfjs, or @tensorflow/tfjs-node).',
      { cause },
    );
    (error as Error & { code: string }).code = 'MODULE_NOT_FOUND';
    throw error;
  }
}

function checkWeight(options: TfjsLossOptions | undefined): number {
  checkOptionalObject(options, 'TensorFlow.js loss options');
  return nonNegative('weight', options?.weight, 1);
}

/** The tfjs op must return one number per call: per-sample losses have no place in a Scalar. */
function checkReduction(loss: PerceptualLoss<Reduction>): void {
  const { reduction } = loss.options;
  if (reduction === 'none') {
    throw new PerceptualLossError(
      'ERR_OPTIONS',
      "The TensorFlow.js adapter returns a scalar: build the loss with reduction 'mean' or 'sum', not 'none'.",
    );
  }
}

function checkFloat(tfc: Tf, x: unknown, role: string, shape: string): asserts x is tf.Tensor {
  if (!(x instanceof tfc.Tensor)) {
    throw new PerceptualLossError('ERR_SHAPE', `${role} must be a ${shape}; got ${show(x)}.`);
  }
  if (x.dtype !== 'float32') {
    throw new PerceptualLossError('ERR_DTYPE', `${role} must be a float32 tf.Tensor; got ${withArticle(x.dtype)} tensor.`);
  }
}

/**
 * Whether a gradient tape is recording (inside tf.grad, tf.variableGrads, optimizer.minimize).
 * Without one, the forward pass computes the loss alone and skips the backward pass. Reads the
 * engine's state; if a future tfjs moves it, the gradient is always computed (never wrong).
 */
function recording(tfc: Tf): boolean {
  const state = (tfc.engine() as unknown as { state?: { gradientDepth?: unknown } }).state;
  return typeof state?.gradientDepth === 'number' ? state.gradientDepth > 0 : true;
}

/** The scalar loss, computed by `run`, and its gradient saved for the backward pass. */
function forward(
  tfc: Tf,
  shape: number[],
  weight: number,
  save: tf.GradSaveFunc,
  run: (withGrad: boolean) => { loss: number; grad?: Float32Array },
): tf.Scalar {
  const withGrad = recording(tfc);
  const { loss, grad } = run(withGrad);
  if (withGrad && grad !== undefined) {
    // Scaled once here rather than on every backward pass. `save` keeps a copy until the tape is
    // done with it; the forward's tidy disposes this one.
    if (weight !== 1) for (let i = 0; i < grad.length; i++) grad[i] *= weight;
    save([tfc.tensor(grad, shape, 'float32')]);
  }
  return tfc.scalar(weight * loss);
}

/** `dy * grad`, or a clear error where the forward pass saw no tape. */
function backward(tfc: Tf, dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor {
  if (saved.length === 0) {
    throw new PerceptualLossError('ERR_OPTIONS', 'No gradient was recorded in the forward pass of the perceptual loss.');
  }
  return tfc.mul(dy, saved[0]);
}

/**
 * The perceptual loss as a TensorFlow.js function of NHWC tensors (NDHWC for a loss with
 * spatialDims: 3), differentiable with respect to `pred` (tf.grad, tf.variableGrads,
 * optimizer.minimize), and composable with tfjs' own losses:
 *
 * ```ts
 * const perceptual = tfjsPerceptualLoss(new PerceptualLoss({ inChannels: 3 }));
 * optimizer.minimize(() => tf.add(tf.losses.meanSquaredError(y, net(x)), tf.mul(0.1, perceptual(net(x), y))));
 * ```
 *
 * The loss and its gradient are computed together in the forward pass, synchronously, on the
 * loss's device; the gradient is kept until the backward pass. `target` receives a zero gradient.
 */
export function tfjsPerceptualLoss(loss: PerceptualLoss<Reduction>, options?: TfjsLossOptions): TfjsPerceptualLossFn {
  const tfc = loadTf();
  const weight = checkWeight(options);
  checkReduction(loss);
  const call = tfLayout(loss);
  const op = tfc.customGrad(((pred: tf.Tensor, target: tf.Tensor, save: tf.GradSaveFunc) => {
    const value = forward(tfc, pred.shape, weight, save, (withGrad) => {
      const p = { data: pred.dataSync() as Float32Array, shape: pred.shape };
      const t = { data: target.dataSync() as Float32Array, shape: target.shape };
      if (!withGrad) return { loss: loss.loss(p, t, call) as number };
      const result = loss.lossAndGrad(p, t, call);
      return { loss: result.loss as number, grad: result.grad };
    });
    return {
      value,
      gradFunc: (dy: tf.Scalar, saved: tf.Tensor[]) => [backward(tfc, dy, saved), tfc.zerosLike(target)],
    };
  }) as unknown as CustomGradientFunc);
  return (pred: tf.Tensor, target: tf.Tensor) => {
    checkFloat(tfc, pred, 'pred', tfShape(loss));
    checkFloat(tfc, target, 'target', tfShape(loss));
    return op(pred, target) as tf.Scalar;
  };
}

/**
 * Segmentation: softmax(logits) against one_hot(labels), both zeroed where labels == ignoreIndex
 * (`PerceptualLoss.lossAndGradSegmentation`), as a TensorFlow.js function differentiable with
 * respect to the logits. Build the loss with `inChannels` = the number of classes.
 *
 * ```ts
 * const perceptual = tfjsSegmentationLoss(new PerceptualLoss({ inChannels: classes }), { ignoreIndex: 255 });
 * const total = tf.add(tf.losses.softmaxCrossEntropy(tf.oneHot(labels, classes), logits), tf.mul(lambda, perceptual(logits, labels)));
 * ```
 */
export function tfjsSegmentationLoss(loss: PerceptualLoss<Reduction>, options?: TfjsSegmentationOptions): TfjsSegmentationLossFn {
  const tfc = loadTf();
  const weight = checkWeight(options);
  checkReduction(loss);
  const call = { ...tfLayout(loss), ignoreIndex: checkIgnoreIndex(options?.ignoreIndex) };
  const labelShape = loss.options.spatialDims === 3 ? 'tf.Tensor4D [N, D, H, W]' : 'tf.Tensor3D [N, H, W]';
  return (logits: tf.Tensor, labels: tf.Tensor) => {
    checkFloat(tfc, logits, 'logits', tfShape(loss, 'classes'));
    if (!(labels instanceof tfc.Tensor)) {
      throw new PerceptualLossError('ERR_SHAPE', `labels must be an int32 ${labelShape}; got ${show(labels)}.`);
    }
    if (labels.dtype !== 'int32') {
      throw new PerceptualLossError(
        'ERR_DTYPE',
        `labels must be an int32 tf.Tensor of class ids; got ${withArticle(labels.dtype)} tensor (use tf.cast(labels, 'int32')).`,
      );
    }
    // The labels are not an input of the op: class ids have no gradient.
    const op = tfc.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
      const value = forward(tfc, x.shape, weight, save, () => {
        const l = { data: x.dataSync() as Float32Array, shape: x.shape };
        const y = { data: labels.dataSync() as Int32Array, shape: labels.shape };
        // There is no loss-only call for segmentation: the gradient comes with the loss.
        const result = loss.lossAndGradSegmentation(l, y, call);
        return { loss: result.loss as number, grad: result.grad };
      });
      return { value, gradFunc: (dy: tf.Scalar, saved: tf.Tensor[]) => backward(tfc, dy, saved) };
    }) as unknown as CustomGradientFunc);
    return op(logits) as tf.Scalar;
  };
}

/** Mask data as the package takes it: float32 as it is, bool as bytes, int32 as float32. */
function maskData(tfc: Tf, masks: unknown, role: string, shape: string): { data: Float32Array | Uint8Array; shape: number[] } {
  if (!(masks instanceof tfc.Tensor)) {
    throw new PerceptualLossError('ERR_SHAPE', `${role} must be a ${shape} of 0/1; got ${show(masks)}.`);
  }
  const t = masks as tf.Tensor;
  if (t.dtype === 'float32' || t.dtype === 'bool') return { data: t.dataSync() as Float32Array | Uint8Array, shape: t.shape };
  if (t.dtype === 'int32') return { data: Float32Array.from(t.dataSync() as Int32Array), shape: t.shape };
  throw new PerceptualLossError('ERR_DTYPE', `${role} must be a float32, bool or int32 tf.Tensor; got ${withArticle(t.dtype)} tensor.`);
}

/** Instance weights: a tf.Tensor1D read to the host, or a list as the package takes it. */
function weightData(tfc: Tf, weights: unknown): unknown {
  return weights instanceof tfc.Tensor ? weights.dataSync() : weights;
}

/**
 * Instance masks: sigmoid(maskLogits) against the binary masks, one per instance
 * (`instanceMaskLoss`), as a TensorFlow.js function differentiable with respect to the mask
 * logits, NHWC [M, H, W, 1] ([M, D, H, W, 1] for spatialDims: 3).
 *
 * ```ts
 * const perceptual = tfjsInstanceMaskLoss(instanceMaskLoss({ arch: 'vgg11' }));
 * const total = tf.add(tf.losses.sigmoidCrossEntropy(masks, maskLogits), tf.mul(lambda, perceptual(maskLogits, masks, weights)));
 * ```
 */
export function tfjsInstanceMaskLoss(loss: InstanceMaskLoss<Reduction>, options?: TfjsLossOptions): TfjsInstanceMaskLossFn {
  const tfc = loadTf();
  const weight = checkWeight(options);
  const { perceptual } = loss;
  checkReduction(perceptual);
  const call = tfLayout(perceptual);
  const shape = tfShape(perceptual, '1', 'M');
  return (maskLogits: tf.Tensor, masks: tf.Tensor, weights?: TfjsInstanceWeights) => {
    checkFloat(tfc, maskLogits, 'maskLogits', shape);
    const m = maskData(tfc, masks, 'masks', shape);
    const w = weightData(tfc, weights) as InstanceWeights | undefined;
    // The masks and the weights are not inputs of the op: they get no gradient.
    const op = tfc.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
      const value = forward(tfc, x.shape, weight, save, (withGrad) => {
        const l = { data: x.dataSync() as Float32Array, shape: x.shape };
        if (!withGrad) return { loss: loss.loss(l, m, { ...call, weights: w }) as number };
        const result = loss.lossAndGrad(l, m, { ...call, weights: w });
        return { loss: result.loss as number, grad: result.grad };
      });
      return { value, gradFunc: (dy: tf.Scalar, saved: tf.Tensor[]) => backward(tfc, dy, saved) };
    }) as unknown as CustomGradientFunc);
    return op(maskLogits) as tf.Scalar;
  };
}
