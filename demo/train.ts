// One arm of a comparison: train a network from the seeded initial weights on the seeded batches
// of one task, with the pixel loss alone (lambda 0) or the pixel loss + lambda * perceptual loss,
// and score it on the held-out set. A run is a function of its spec alone, wherever it runs.
import * as tf from '@tensorflow/tfjs-core';
import { depthLoss, depthValidMask, PerceptualLoss, type DenseLoss, type DeviceSpec } from 'generic-perceptual-loss';
import { tfjsSegmentationLoss } from 'generic-perceptual-loss/tfjs';
import { substream } from '../tools/random';
import type { TaskName } from './args';
import { CHANNELS, CLASSES, STREAM, testSet, trainingBatch, type Batch } from './data';
import { DEPTH_SCALE, DEPTH_STREAM, depthTestSet, depthTrainingBatch, type DepthBatch } from './depth-data';
import { scoreDepth } from './depth-metrics';
import { score } from './metrics';
import { createSegNet, type SegNet } from './model';

/** The perceptual network's layout and taps; random weights seeded by the run's seed. */
export interface PerceptualSpec {
  arch: Array<number | 'M'>;
  layers: string[];
}

export interface RunSpec {
  task: TaskName;
  /** The arm's name in tables and plots. */
  name: string;
  seed: number;
  steps: number;
  size: number;
  batch: number;
  /** Adam's learning rate, after a short warm-up (see `learningRate`). */
  learningRate: number;
  /** Channels at full resolution of the network. */
  width: number;
  testImages: number;
  /** Held-out scores every this many steps (and at the end). */
  evalEvery: number;
  /** Weight of the perceptual term; 0 = the pixel loss alone. */
  lambda: number;
  perceptual: PerceptualSpec | null;
  device: DeviceSpec;
  /** Keep the held-out predictions (for the sample pictures). */
  keepPredictions: boolean;
}

/** Held-out scores by name: mIoU, pixelAccuracy, boundaryF1 (seg); absRel, rmse, delta1, edgeF1 (depth). */
export type Metrics = Record<string, number>;

export interface EvalPoint {
  step: number;
  metrics: Metrics;
}

export interface RunResult {
  spec: RunSpec;
  /** Per training step: the objective, its pixel-loss part and its perceptual part (unweighted). */
  curve: { loss: number[]; pixel: number[]; perceptual: number[] | null };
  evals: EvalPoint[];
  final: Metrics;
  /** Segmentation: IoU and boundary F1 per class. */
  perClass?: { iou: number[]; boundaryF1: number[] };
  /** Held-out predictions: class ids (seg) or depth in metres (depth). */
  predictions?: Int32Array | Float32Array;
  /** The perceptual loss's resolved options (null for the pixel loss alone). */
  perceptualOptions: unknown;
  parameterCount: number;
  /** Training time, held-out evaluations excluded. */
  seconds: number;
}

/**
 * The learning rate of step `step` (1-based) of `steps`: a linear warm-up over the first 5% of the
 * steps, then constant. Full-size Adam steps from the random initial weights overshoot (the loss
 * jumps) and can leave ReLUs dead for the rest of the run.
 */
export function learningRate(peak: number, step: number, steps: number): number {
  const warmup = Math.max(1, Math.round(0.05 * steps));
  return step < warmup ? (peak * step) / warmup : peak;
}

/** tfjs' Adam reads its (protected) learning rate at every step; the schedule sets it before each. */
function setLearningRate(optimizer: tf.AdamOptimizer, rate: number): void {
  (optimizer as unknown as { learningRate: number }).learningRate = rate;
}

/** Images in [0, 1] -> network input, centred on 0. */
function input(images: Float32Array, n: number, size: number): tf.Tensor4D {
  return tf.tidy(() => tf.sub(tf.tensor4d(images, [n, size, size, CHANNELS]), 0.5));
}

/** The network's outputs on a whole set, a batch at a time, without a gradient tape. */
function predictAll(forward: (x: tf.Tensor4D) => tf.Tensor, images: Float32Array, n: number, size: number, batch: number, out: Int32Array | Float32Array): void {
  const plane = size * size;
  for (let i = 0; i < n; i += batch) {
    const m = Math.min(batch, n - i);
    tf.tidy(() => {
      const x = input(images.subarray(i * plane * CHANNELS, (i + m) * plane * CHANNELS), m, size);
      out.set(forward(x).dataSync(), i * plane);
    });
  }
}

/**
 * The perceptual loss of a depth prediction [N, H, W, 1] against a target with holes, as a tfjs
 * op: `DenseLoss.lossAndGrad` with the valid mask computes the loss and its gradient together in
 * the forward pass; the backward pass scales that gradient.
 */
function depthPerceptual(loss: DenseLoss): (pred: tf.Tensor4D, target: Float32Array, mask: Uint8Array) => tf.Scalar {
  return (pred, target, mask) => {
    const op = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
      const shape = x.shape;
      const result = loss.lossAndGrad({ data: x.dataSync() as Float32Array, shape }, { data: target, shape }, { mask, layout: 'nhwc' });
      save([tf.tensor(result.grad, shape)]);
      return { value: tf.scalar(result.loss), gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, saved[0]) };
    }) as unknown as Parameters<typeof tf.customGrad>[0]);
    return op(pred) as tf.Scalar;
  };
}

/** The depth net's output is depth / DEPTH_SCALE; starting from mid-range saves the first steps. */
const DEPTH_OFFSET = 0.5;

interface Task {
  classes: number;
  /** The objective's parts for one batch: the pixel loss and the unweighted perceptual loss. */
  step(step: number, forward: (x: tf.Tensor4D) => tf.Tensor4D): { pixel: tf.Scalar; perceptual: tf.Scalar | null };
  /** Held-out predictions of the current weights, and their scores. */
  evaluate(forward: (x: tf.Tensor4D) => tf.Tensor4D): { predictions: Int32Array | Float32Array; metrics: Metrics; perClass?: RunResult['perClass'] };
  perceptualOptions: unknown;
  dispose(): void;
}

function segmentationTask(spec: RunSpec): Task {
  const { seed, batch, size } = spec;
  const test: Batch = testSet(seed, spec.testImages, size);
  const loss = spec.perceptual ? new PerceptualLoss({ inChannels: CLASSES, ...spec.perceptual, seed, device: spec.device }) : null;
  const perceptual = loss ? tfjsSegmentationLoss(loss) : null;
  return {
    classes: CLASSES,
    step(step, forward) {
      const data = trainingBatch(seed, step, batch, size);
      const x = input(data.images, batch, size);
      const labels = tf.tensor3d(data.labels, [batch, size, size], 'int32');
      const logits = forward(x);
      const pixel = tf.losses.softmaxCrossEntropy<tf.Tensor, tf.Scalar>(tf.oneHot(labels, CLASSES), logits);
      return { pixel, perceptual: perceptual ? perceptual(logits, labels) : null };
    },
    evaluate(forward) {
      const predictions = new Int32Array(test.n * size * size);
      predictAll((x) => tf.argMax(forward(x), 3), test.images, test.n, size, batch, predictions);
      const s = score(predictions, test.labels, test.n, size, CLASSES);
      return { predictions, metrics: { miou: s.miou, pixelAccuracy: s.pixelAccuracy, boundaryF1: s.boundaryF1 }, perClass: s.perClass };
    },
    perceptualOptions: loss?.options ?? null,
    dispose: () => loss?.dispose(),
  };
}

function depthTask(spec: RunSpec): Task {
  const { seed, batch, size } = spec;
  const test: DepthBatch = depthTestSet(seed, spec.testImages, size);
  const testValid = depthValidMask({ data: test.depth });
  const loss = spec.perceptual ? depthLoss({ ...spec.perceptual, seed, device: spec.device }) : null;
  const perceptual = loss ? depthPerceptual(loss) : null;
  return {
    classes: 1,
    step(step, forward) {
      const data = depthTrainingBatch(seed, step, batch, size);
      const valid = depthValidMask({ data: data.depth });
      const scaled = data.depth.map((d) => d / DEPTH_SCALE);
      const shape: [number, number, number, number] = [batch, size, size, 1];
      const x = input(data.images, batch, size);
      const target = tf.tensor4d(scaled, shape);
      const mask = tf.tensor4d(Float32Array.from(valid), shape);
      const pred = forward(x);
      // Masked L1: the mean absolute error over the pixels with a measurement.
      const pixel = tf.div<tf.Scalar>(tf.sum(tf.mul(tf.abs(tf.sub(pred, target)), mask)), tf.maximum(tf.sum(mask), 1));
      return { pixel, perceptual: perceptual ? perceptual(pred, scaled, valid) : null };
    },
    evaluate(forward) {
      const predictions = new Float32Array(test.n * size * size);
      predictAll((x) => tf.mul(forward(x), DEPTH_SCALE), test.images, test.n, size, batch, predictions);
      return { predictions, metrics: { ...scoreDepth(predictions, test.depth, testValid, test.n, size) } };
    },
    perceptualOptions: loss?.perceptual.options ?? null,
    dispose: () => loss?.dispose(),
  };
}

/** Trains one arm; `onStep` hears of each step's objective (for a progress bar). */
export function trainRun(spec: RunSpec, onStep: (step: number, loss: number) => void = () => {}): RunResult {
  const { seed, steps } = spec;
  const task = spec.task === 'seg' ? segmentationTask(spec) : depthTask(spec);
  const usesPerceptual = spec.lambda > 0 && spec.perceptual !== null;
  // Same initial weights in every arm of a task: drawn from the seed's own stream.
  const net: SegNet = createSegNet(
    { inChannels: CHANNELS, classes: task.classes, width: spec.width },
    substream(seed, spec.task === 'seg' ? STREAM.init : DEPTH_STREAM.init),
  );
  const forward = spec.task === 'seg' ? (x: tf.Tensor4D) => net.forward(x) : (x: tf.Tensor4D) => tf.add<tf.Tensor4D>(net.forward(x), DEPTH_OFFSET);
  const optimizer = tf.train.adam(spec.learningRate);
  const curve = { loss: [] as number[], pixel: [] as number[], perceptual: usesPerceptual ? ([] as number[]) : null };
  const evals: EvalPoint[] = [];
  let evalSeconds = 0;
  let last: ReturnType<Task['evaluate']> | null = null;
  const evaluate = (step: number) => {
    const t = performance.now();
    last = task.evaluate(forward);
    evals.push({ step, metrics: last.metrics });
    evalSeconds += (performance.now() - t) / 1000;
  };

  const start = performance.now();
  evaluate(0);
  for (let step = 1; step <= steps; step++) {
    setLearningRate(optimizer, learningRate(spec.learningRate, step, steps));
    tf.tidy(() => {
      const loss = optimizer.minimize((): tf.Scalar => {
        const parts = task.step(step, forward);
        curve.pixel.push(parts.pixel.dataSync()[0]);
        if (!usesPerceptual || !parts.perceptual) return parts.pixel;
        curve.perceptual!.push(parts.perceptual.dataSync()[0]);
        return tf.add<tf.Scalar>(parts.pixel, tf.mul(spec.lambda, parts.perceptual));
      }, true)!;
      curve.loss.push(loss.dataSync()[0]);
    });
    if (step % spec.evalEvery === 0 || step === steps) evaluate(step);
    onStep(step, curve.loss[step - 1]);
  }
  // Training time alone: the held-out evaluations are left out.
  const seconds = (performance.now() - start) / 1000 - evalSeconds;
  const final = last!;
  const result: RunResult = {
    spec,
    curve,
    evals,
    final: final.metrics,
    perClass: final.perClass,
    predictions: spec.keepPredictions ? final.predictions : undefined,
    perceptualOptions: task.perceptualOptions,
    parameterCount: net.parameterCount,
    seconds,
  };
  optimizer.dispose();
  net.dispose();
  task.dispose();
  return result;
}
