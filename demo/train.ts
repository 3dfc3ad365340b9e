// One arm of the comparison: train the network from the seeded initial weights on the seeded
// batches, with cross-entropy alone (lambda 0) or cross-entropy + lambda * perceptual loss.
import * as tf from '@tensorflow/tfjs-core';
import cliProgress from 'cli-progress';
import { tfjsSegmentationLoss, type TfjsSegmentationLossFn } from 'generic-perceptual-loss/tfjs';
import type { PerceptualLoss } from 'generic-perceptual-loss';
import { CHANNELS, CLASSES, STREAM, trainingBatch, type Batch } from './data';
import { score, type Scores } from './metrics';
import { createSegNet, type SegNet } from './model';
import { substream } from '../scripts/random';

export interface TrainConfig {
  seed: number;
  steps: number;
  size: number;
  batch: number;
  /** Adam's learning rate, after a short warm-up (see `learningRate`). */
  learningRate: number;
  width: number;
  /** Held-out scores every this many steps (and at the end). */
  evalEvery: number;
}

export interface Arm {
  name: string;
  /** Weight of the perceptual term; 0 = cross-entropy alone. */
  lambda: number;
}

export interface EvalPoint {
  step: number;
  miou: number;
  pixelAccuracy: number;
  boundaryF1: number;
}

export interface ArmResult extends Arm {
  /** Per training step: the objective, its cross-entropy part and its perceptual part (unweighted). */
  curve: { loss: number[]; ce: number[]; perceptual: number[] | null };
  evals: EvalPoint[];
  final: Scores;
  /** Predicted labels of the held-out set at the end. */
  predictions: Int32Array;
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

/** Label maps of the whole set, a batch at a time, without a gradient tape. */
export function predict(net: SegNet, set: Batch, batch: number): Int32Array {
  const plane = set.size * set.size;
  const out = new Int32Array(set.n * plane);
  for (let i = 0; i < set.n; i += batch) {
    const m = Math.min(batch, set.n - i);
    tf.tidy(() => {
      const x = input(set.images.subarray(i * plane * CHANNELS, (i + m) * plane * CHANNELS), m, set.size);
      out.set(tf.argMax(net.forward(x), 3).dataSync() as Int32Array, i * plane);
    });
  }
  return out;
}

export function trainArm(
  arm: Arm,
  config: TrainConfig,
  test: Batch,
  perceptual: PerceptualLoss,
  /** Arm names are padded to this width so the progress bars line up. */
  nameWidth = arm.name.length,
): ArmResult {
  const { seed, steps, size, batch } = config;
  // Same initial weights in every arm: drawn from the seed's own stream.
  const net = createSegNet({ inChannels: CHANNELS, classes: CLASSES, width: config.width }, substream(seed, STREAM.init));
  const optimizer = tf.train.adam(config.learningRate);
  const segmentation: TfjsSegmentationLossFn | null = arm.lambda > 0 ? tfjsSegmentationLoss(perceptual) : null;
  const curve = { loss: [] as number[], ce: [] as number[], perceptual: segmentation ? ([] as number[]) : null };
  const evals: EvalPoint[] = [];
  let evalSeconds = 0;
  const evaluate = (step: number) => {
    const t = performance.now();
    const s = score(predict(net, test, batch), test.labels, test.n, size, CLASSES);
    evals.push({ step, miou: s.miou, pixelAccuracy: s.pixelAccuracy, boundaryF1: s.boundaryF1 });
    evalSeconds += (performance.now() - t) / 1000;
  };

  // A SingleBar redraws from update() itself: the loop below never yields to the event loop,
  // which a MultiBar's timer would need. Without a terminal it prints nothing.
  const bar = new cliProgress.SingleBar(
    { format: '{arm} |{bar}| {value}/{total} steps | loss {loss} | {speed} steps/s | {duration_formatted}', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(steps, 0, { arm: arm.name.padEnd(nameWidth), loss: '-', speed: '-' });
  const start = performance.now();
  evaluate(0);
  for (let step = 1; step <= steps; step++) {
    const data = trainingBatch(seed, step, batch, size);
    setLearningRate(optimizer, learningRate(config.learningRate, step, steps));
    tf.tidy(() => {
      const x = input(data.images, batch, size);
      const labels = tf.tensor3d(data.labels, [batch, size, size], 'int32');
      const onehot = tf.oneHot(labels, CLASSES);
      const loss = optimizer.minimize((): tf.Scalar => {
        const logits = net.forward(x);
        const ce = tf.losses.softmaxCrossEntropy(onehot, logits) as tf.Scalar;
        curve.ce.push(ce.dataSync()[0]);
        if (!segmentation) return ce;
        const p = segmentation(logits, labels);
        curve.perceptual!.push(p.dataSync()[0]);
        return tf.add(ce, tf.mul(arm.lambda, p)) as tf.Scalar;
      }, true)!;
      curve.loss.push(loss.dataSync()[0]);
    });
    if (step % config.evalEvery === 0 || step === steps) evaluate(step);
    const training = (performance.now() - start) / 1000 - evalSeconds;
    bar.update(step, { loss: curve.loss[step - 1].toFixed(4), speed: (step / training).toFixed(2) });
  }
  bar.stop();
  // Training time alone: the held-out evaluations are left out.
  const seconds = (performance.now() - start) / 1000 - evalSeconds;
  const predictions = predict(net, test, batch);
  const final = score(predictions, test.labels, test.n, size, CLASSES);
  const parameterCount = net.parameterCount;
  optimizer.dispose();
  net.dispose();
  return { ...arm, curve, evals, final, predictions, parameterCount, seconds };
}
