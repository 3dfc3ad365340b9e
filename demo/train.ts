// One arm of a comparison: train a network from the seeded initial weights on the seeded batches
// of one task, with the pixel loss alone (lambda 0) or the pixel loss + lambda * perceptual loss,
// and score it on the held-out set. A run is a function of its spec alone, wherever it runs.
import * as tf from '@tensorflow/tfjs-core';
import { denseLoss, depthLoss, depthValidMask, instanceMaskLoss, PerceptualLoss, type DenseLoss, type DeviceSpec, type InstanceMaskLoss } from 'generic-perceptual-loss';
import { tfjsSegmentationLoss } from 'generic-perceptual-loss/tfjs';
import { substream } from '../tools/random';
import type { TaskName } from './args';
import { CHANNELS, CLASSES, STREAM, testSet, trainingBatch, type Batch } from './data';
import { DEPTH_SCALE, DEPTH_STREAM, depthTestSet, depthTrainingBatch, type DepthBatch } from './depth-data';
import { scoreDepth } from './depth-metrics';
import { INSTANCE_CHANNELS, INSTANCE_STREAM, instanceTestSet, instanceTrainingBatch } from './instance-data';
import { scoreInstances } from './instance-metrics';
import { score } from './metrics';
import { createSegNet } from './model';
import { createVesselNet } from './model3d';
import { VESSEL_STREAM, vesselTestSet, vesselTrainingBatch, type VolumeShape } from './vessel-data';
import { scoreVessels, skeletons } from './vessel-metrics';

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
  /** Image side (seg, depth, instances). */
  size: number;
  /** [D, H, W] of the volumes (vessels only). */
  volume?: VolumeShape;
  /** Images, volumes or instance masks per step. */
  batch: number;
  /** Adam's learning rate, after a short warm-up (see `learningRate`). */
  learningRate: number;
  /** Channels at full resolution of the network. */
  width: number;
  /** Held-out images (volumes for vessels). */
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

/**
 * Held-out scores by name: miou, pixelAccuracy, boundaryF1 (seg); absRel, rmse, delta1, edgeF1
 * (depth); dice, clDice, skeletonRecall, betti0Error (vessels); maskIoU, boundaryF1 (instances).
 */
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
  /**
   * Held-out predictions: class ids (seg), depth in metres (depth), vessel probabilities per voxel
   * (vessels), mask probabilities per instance (instances).
   */
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

/**
 * The network's outputs on a whole set, a batch at a time, without a gradient tape: `x(i, m)` is
 * the input of samples i..i+m, `forward` maps it to `perSample` values per sample.
 */
function predictAll(n: number, batch: number, perSample: number, x: (i: number, m: number) => tf.Tensor, forward: (x: tf.Tensor) => tf.Tensor, out: Int32Array | Float32Array): void {
  for (let i = 0; i < n; i += batch) {
    const m = Math.min(batch, n - i);
    tf.tidy(() => {
      out.set(forward(x(i, m)).dataSync(), i * perSample);
    });
  }
}

/**
 * A loss computed with its gradient on the host (the perceptual losses) as a tfjs op: `compute`
 * gets the op's input values and returns the loss and d loss / d input; the backward pass scales
 * that gradient.
 */
function hostLoss(compute: (values: Float32Array, shape: number[]) => { loss: number; grad: Float32Array }): (x: tf.Tensor) => tf.Scalar {
  const op = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
    const result = compute(x.dataSync() as Float32Array, x.shape);
    save([tf.tensor(result.grad, x.shape)]);
    return { value: tf.scalar(result.loss), gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, saved[0]) };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return (x) => op(x) as tf.Scalar;
}

/**
 * The perceptual loss of a depth prediction [N, H, W, 1] against a target with holes, as a tfjs
 * op: `DenseLoss.lossAndGrad` with the valid mask computes the loss and its gradient together in
 * the forward pass; the backward pass scales that gradient.
 */
function depthPerceptual(loss: DenseLoss): (pred: tf.Tensor4D, target: Float32Array, mask: Uint8Array) => tf.Scalar {
  return (pred, target, mask) =>
    hostLoss((data, shape) => {
      const result = loss.lossAndGrad({ data, shape }, { data: target, shape }, { mask, layout: 'nhwc' });
      return { loss: result.loss, grad: result.grad };
    })(pred);
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

/**
 * Binary cross-entropy of logits against 0/1 targets, the mean over elements, as one op:
 * max(z, 0) - z y + log(1 + exp(-|z|)), whose gradient is (sigmoid(z) - y) / count.
 */
function binaryCrossEntropy(logits: tf.Tensor, target: Uint8Array): tf.Scalar {
  return hostLoss((z) => {
    const grad = new Float32Array(z.length);
    let sum = 0;
    for (let i = 0; i < z.length; i++) {
      sum += Math.max(z[i], 0) - z[i] * target[i] + Math.log1p(Math.exp(-Math.abs(z[i])));
      grad[i] = (sigmoid(z[i]) - target[i]) / z.length;
    }
    return { loss: sum / z.length, grad };
  })(logits);
}

/**
 * The 3-D perceptual loss of vessel probabilities sigmoid(logits) [N, D, H, W, 1] against the 0/1
 * labels, as a tfjs op on the logits: `DenseLoss.lossAndGrad` (spatialDims 3, layout 'ndhwc') on
 * the probabilities, its gradient taken through the sigmoid here.
 */
function vesselPerceptual(loss: DenseLoss): (logits: tf.Tensor, labels: Float32Array) => tf.Scalar {
  return (logits, labels) =>
    hostLoss((z, shape) => {
      const p = z.map(sigmoid);
      const result = loss.lossAndGrad({ data: p, shape }, { data: labels, shape }, { layout: 'ndhwc' });
      const grad = result.grad.map((g, i) => g * p[i] * (1 - p[i]));
      return { loss: result.loss, grad };
    })(logits);
}

/** `instanceMaskLoss` on mask logits [M, H, W, 1] against the 0/1 masks, as a tfjs op on the logits. */
function instancePerceptual(loss: InstanceMaskLoss): (logits: tf.Tensor, masks: Uint8Array) => tf.Scalar {
  return (logits, masks) =>
    hostLoss((data, shape) => {
      const result = loss.lossAndGrad({ data, shape }, { data: masks, shape });
      return { loss: result.loss, grad: result.grad };
    })(logits);
}

/** The depth net's output is depth / DEPTH_SCALE; starting from mid-range saves the first steps. */
const DEPTH_OFFSET = 0.5;
/** Vessel volumes' background lies near 0.1 and vessels near 0.5: centred before the network. */
const VESSEL_CENTRE = 0.2;

/** A task's network, as the training loop sees it. */
interface Net {
  readonly variables: tf.Variable[];
  readonly parameterCount: number;
  dispose(): void;
}

interface Task {
  net: Net;
  /** The objective's parts for one batch: the pixel loss and the unweighted perceptual loss. */
  step(step: number): { pixel: tf.Scalar; perceptual: tf.Scalar | null };
  /** Held-out predictions of the current weights, and their scores. */
  evaluate(): { predictions: Int32Array | Float32Array; metrics: Metrics; perClass?: RunResult['perClass'] };
  perceptualOptions: unknown;
  dispose(): void;
}

function segmentationTask(spec: RunSpec): Task {
  const { seed, batch, size } = spec;
  const test: Batch = testSet(seed, spec.testImages, size);
  const loss = spec.perceptual ? new PerceptualLoss({ inChannels: CLASSES, ...spec.perceptual, seed, device: spec.device }) : null;
  const perceptual = loss ? tfjsSegmentationLoss(loss) : null;
  // Same initial weights in every arm of a task: drawn from the seed's own stream.
  const net = createSegNet({ inChannels: CHANNELS, classes: CLASSES, width: spec.width }, substream(seed, STREAM.init));
  const plane = size * size;
  return {
    net,
    step(step) {
      const data = trainingBatch(seed, step, batch, size);
      const x = input(data.images, batch, size);
      const labels = tf.tensor3d(data.labels, [batch, size, size], 'int32');
      const logits = net.forward(x);
      const pixel = tf.losses.softmaxCrossEntropy<tf.Tensor, tf.Scalar>(tf.oneHot(labels, CLASSES), logits);
      return { pixel, perceptual: perceptual ? perceptual(logits, labels) : null };
    },
    evaluate() {
      const predictions = new Int32Array(test.n * plane);
      const x = (i: number, m: number) => input(test.images.subarray(i * plane * CHANNELS, (i + m) * plane * CHANNELS), m, size);
      predictAll(test.n, batch, plane, x, (t) => tf.argMax(net.forward(t as tf.Tensor4D), 3), predictions);
      const s = score(predictions, test.labels, test.n, size, CLASSES);
      return { predictions, metrics: { miou: s.miou, pixelAccuracy: s.pixelAccuracy, boundaryF1: s.boundaryF1 }, perClass: s.perClass };
    },
    perceptualOptions: loss?.options ?? null,
    dispose: () => {
      net.dispose();
      loss?.dispose();
    },
  };
}

function depthTask(spec: RunSpec): Task {
  const { seed, batch, size } = spec;
  const test: DepthBatch = depthTestSet(seed, spec.testImages, size);
  const testValid = depthValidMask({ data: test.depth });
  const loss = spec.perceptual ? depthLoss({ ...spec.perceptual, seed, device: spec.device }) : null;
  const perceptual = loss ? depthPerceptual(loss) : null;
  const net = createSegNet({ inChannels: CHANNELS, classes: 1, width: spec.width }, substream(seed, DEPTH_STREAM.init));
  const forward = (x: tf.Tensor4D) => tf.add<tf.Tensor4D>(net.forward(x), DEPTH_OFFSET);
  const plane = size * size;
  return {
    net,
    step(step) {
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
    evaluate() {
      const predictions = new Float32Array(test.n * plane);
      const x = (i: number, m: number) => input(test.images.subarray(i * plane * CHANNELS, (i + m) * plane * CHANNELS), m, size);
      predictAll(test.n, batch, plane, x, (t) => tf.mul(forward(t as tf.Tensor4D), DEPTH_SCALE), predictions);
      return { predictions, metrics: { ...scoreDepth(predictions, test.depth, testValid, test.n, size) } };
    },
    perceptualOptions: loss?.perceptual.options ?? null,
    dispose: () => {
      net.dispose();
      loss?.dispose();
    },
  };
}

/** Vessels: a 3-D network on [N, D, H, W, 1] volumes, BCE against the vessel labels. */
function vesselTask(spec: RunSpec): Task {
  const { seed, batch } = spec;
  const shape = spec.volume!;
  const voxels = shape[0] * shape[1] * shape[2];
  const test = vesselTestSet(seed, spec.testImages, shape);
  // The truth's skeletons do not change during a run: computed once for clDice.
  const truthSkeletons = skeletons(test.labels, test.n, shape);
  const loss = spec.perceptual ? denseLoss({ channels: 1, spatialDims: 3, ...spec.perceptual, seed, device: spec.device }) : null;
  const perceptual = loss ? vesselPerceptual(loss) : null;
  const net = createVesselNet({ inChannels: 1, width: spec.width }, substream(seed, VESSEL_STREAM.init));
  const volumes = (data: Float32Array, n: number) => tf.tidy(() => tf.sub<tf.Tensor5D>(tf.tensor5d(data, [n, ...shape, 1]), VESSEL_CENTRE));
  return {
    net,
    step(step) {
      const data = vesselTrainingBatch(seed, step, batch, shape);
      const logits = net.forward(volumes(data.volumes, batch));
      const pixel = binaryCrossEntropy(logits, data.labels);
      return { pixel, perceptual: perceptual ? perceptual(logits, Float32Array.from(data.labels)) : null };
    },
    evaluate() {
      const predictions = new Float32Array(test.n * voxels);
      const x = (i: number, m: number) => volumes(test.volumes.subarray(i * voxels, (i + m) * voxels), m);
      predictAll(test.n, batch, voxels, x, (t) => tf.sigmoid(net.forward(t as tf.Tensor5D)), predictions);
      const masks = Uint8Array.from(predictions, (p) => (p > 0.5 ? 1 : 0));
      return { predictions, metrics: { ...scoreVessels(masks, test.labels, test.n, shape, truthSkeletons) } };
    },
    perceptualOptions: loss?.perceptual.options ?? null,
    dispose: () => {
      net.dispose();
      loss?.dispose();
    },
  };
}

/** Instances: the 2-D network on [image, seed spot], one mask per instance, BCE against the mask. */
function instanceTask(spec: RunSpec): Task {
  const { seed, batch, size } = spec;
  const plane = size * size;
  const test = instanceTestSet(seed, spec.testImages, size);
  const loss = spec.perceptual ? instanceMaskLoss({ ...spec.perceptual, seed, device: spec.device, layout: 'nhwc' }) : null;
  const perceptual = loss ? instancePerceptual(loss) : null;
  const net = createSegNet({ inChannels: INSTANCE_CHANNELS, classes: 1, width: spec.width }, substream(seed, INSTANCE_STREAM.init));
  const inputs = (data: Float32Array, m: number) => tf.tensor4d(data, [m, size, size, INSTANCE_CHANNELS]);
  return {
    net,
    step(step) {
      const data = instanceTrainingBatch(seed, step, batch, size);
      const logits = net.forward(inputs(data.inputs, data.m));
      const pixel = binaryCrossEntropy(logits, data.masks);
      return { pixel, perceptual: perceptual ? perceptual(logits, data.masks) : null };
    },
    evaluate() {
      const predictions = new Float32Array(test.m * plane);
      const x = (i: number, m: number) => inputs(test.inputs.subarray(i * plane * INSTANCE_CHANNELS, (i + m) * plane * INSTANCE_CHANNELS), m);
      // Larger batches than training: no gradient tape, fewer calls.
      predictAll(test.m, 4 * batch, plane, x, (t) => tf.sigmoid(net.forward(t as tf.Tensor4D)), predictions);
      const masks = Uint8Array.from(predictions, (p) => (p > 0.5 ? 1 : 0));
      return { predictions, metrics: { ...scoreInstances(masks, test.masks, test.m, size) } };
    },
    perceptualOptions: loss?.perceptual.options ?? null,
    dispose: () => {
      net.dispose();
      loss?.dispose();
    },
  };
}

const TASK_BUILDERS: Record<TaskName, (spec: RunSpec) => Task> = { seg: segmentationTask, depth: depthTask, vessels: vesselTask, instances: instanceTask };

/** Trains one arm; `onStep` hears of each step's objective (for a progress bar). */
export function trainRun(spec: RunSpec, onStep: (step: number, loss: number) => void = () => {}): RunResult {
  const { steps } = spec;
  const task = TASK_BUILDERS[spec.task](spec);
  const usesPerceptual = spec.lambda > 0 && spec.perceptual !== null;
  const optimizer = tf.train.adam(spec.learningRate);
  const curve = { loss: [] as number[], pixel: [] as number[], perceptual: usesPerceptual ? ([] as number[]) : null };
  const evals: EvalPoint[] = [];
  let evalSeconds = 0;
  let last: ReturnType<Task['evaluate']> | null = null;
  const evaluate = (step: number) => {
    const t = performance.now();
    last = task.evaluate();
    evals.push({ step, metrics: last.metrics });
    evalSeconds += (performance.now() - t) / 1000;
  };

  const start = performance.now();
  evaluate(0);
  for (let step = 1; step <= steps; step++) {
    setLearningRate(optimizer, learningRate(spec.learningRate, step, steps));
    tf.tidy(() => {
      const loss = optimizer.minimize((): tf.Scalar => {
        const parts = task.step(step);
        curve.pixel.push(parts.pixel.dataSync()[0]);
        if (!usesPerceptual || !parts.perceptual) return parts.pixel;
        curve.perceptual!.push(parts.perceptual.dataSync()[0]);
        return tf.add<tf.Scalar>(parts.pixel, tf.mul(spec.lambda, parts.perceptual));
      }, true, task.net.variables)!;
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
    parameterCount: task.net.parameterCount,
    seconds,
  };
  optimizer.dispose();
  task.dispose();
  return result;
}
