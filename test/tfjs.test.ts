// The TensorFlow.js adapter (lib/tfjs.ts) on tfjs-core's CPU backend: its gradient against
// finite differences and against the package's own (NCHW) gradient, inside tf.grad,
// tf.variableGrads and optimizer.minimize, composed with tfjs' own losses, the segmentation
// variant, errors, and no leaked tensors.
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureGradients } from '../demo/gradients';
import { PerceptualLoss, PerceptualLossError, setNumThreads, type PerceptualLossOptions } from '../lib/index';
import { expectCode } from './helpers/expect-code';
import { tfjsPerceptualLoss, tfjsSegmentationLoss } from '../lib/tfjs';
import { randint, randn } from './helpers/random';

const TINY: PerceptualLossOptions = { inChannels: 2, arch: [4, 'M', 8], layers: ['relu1_1', 'relu2_1'], device: 'cpu' };
const SHAPE: [number, number, number, number] = [2, 8, 8, 2]; // NHWC

const losses: PerceptualLoss[] = [];
function make(options: Partial<PerceptualLossOptions> = {}): PerceptualLoss {
  const loss = new PerceptualLoss({ ...TINY, ...options });
  losses.push(loss);
  return loss;
}

/** NHWC data -> NCHW data. */
function toNchw(data: Float32Array, [n, h, w, c]: readonly number[]): Float32Array {
  const out = new Float32Array(data.length);
  for (let b = 0; b < n; b++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let k = 0; k < c; k++) out[((b * c + k) * h + y) * w + x] = data[((b * h + y) * w + x) * c + k];
  return out;
}

/** NCHW data -> NHWC data. */
function toNhwc(data: Float32Array, [n, c, h, w]: readonly number[]): Float32Array {
  const out = new Float32Array(data.length);
  for (let b = 0; b < n; b++)
    for (let k = 0; k < c; k++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) out[((b * h + y) * w + x) * c + k] = data[((b * c + k) * h + y) * w + x];
  return out;
}

function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

/**
 * Central differences at every coordinate, h = 3e-3, relative to the gradient's largest entry.
 * The network is piecewise smooth: a ReLU or max-pool kink inside [x - h, x + h] spoils a few
 * coordinates (and the float32 loss value limits the rest to ~1e-4), so the check is on the
 * median and on 95% of the coordinates rather than on the worst one.
 */
function expectFiniteDifferences(at: (data: Float32Array) => number, x: Float32Array, grad: Float32Array): void {
  const h = 3e-3;
  const scale = Math.max(...grad.map(Math.abs));
  const errors = Array.from(x, (_, i) => {
    const plus = x.slice();
    const minus = x.slice();
    plus[i] += h;
    minus[i] -= h;
    return Math.abs((at(plus) - at(minus)) / (2 * h) - grad[i]) / scale;
  }).sort((a, b) => a - b);
  expect(errors[Math.floor(errors.length / 2)]).toBeLessThan(1e-3);
  expect(errors[Math.floor(0.95 * errors.length)]).toBeLessThan(1e-2);
}

/** Runs `body` and checks that it leaves no tensor behind. */
function noLeaks(body: () => void): void {
  const before = tf.memory().numTensors;
  body();
  expect(tf.memory().numTensors).toBe(before);
}

beforeAll(async () => {
  // Tiny networks: one intra-op thread avoids OpenMP hand-offs that dominate at this size.
  setNumThreads(1);
  await tf.setBackend('cpu');
  tf.enableProdMode(); // quiets tfjs' "install tfjs-node" banner
  ensureGradients(); // tfjs-core's CommonJS build registers no gradients (see demo/gradients.ts)
});
afterAll(() => losses.forEach((l) => l.dispose()));

describe('tfjsPerceptualLoss', () => {
  const predData = randn(SHAPE.reduce((a, b) => a * b), 1);
  const targetData = randn(predData.length, 2);

  it('has the package gradient, permuted from NCHW to NHWC', () => {
    const loss = make();
    const f = tfjsPerceptualLoss(loss);
    const pred = tf.tensor4d(predData, SHAPE);
    const target = tf.tensor4d(targetData, SHAPE);
    const [value, grad] = tf.tidy(() => {
      const { value, grads } = tf.valueAndGrads((p: tf.Tensor) => f(p as tf.Tensor4D, target))([pred]);
      return [value.dataSync()[0], grads[0].dataSync() as Float32Array];
    });
    const nchw = [SHAPE[0], SHAPE[3], SHAPE[1], SHAPE[2]];
    const own = loss.lossAndGrad({ data: toNchw(predData, SHAPE), shape: nchw }, { data: toNchw(targetData, SHAPE), shape: nchw });
    expect(value).toBeCloseTo(own.loss as number, 6);
    expect(maxRelError(grad, toNhwc(own.grad as Float32Array, nchw))).toBeLessThan(1e-5);
    tf.dispose([pred, target]);
  });

  it('matches central finite differences (float64 loss, float32 tensors)', () => {
    const f = tfjsPerceptualLoss(make({ dtype: 'float64' }));
    const target = tf.tensor4d(targetData, SHAPE);
    const pred = tf.tensor4d(predData, SHAPE);
    const grad = tf.tidy(() => tf.grad((p: tf.Tensor) => f(p as tf.Tensor4D, target))(pred).dataSync() as Float32Array);
    const at = (data: Float32Array) => tf.tidy(() => f(tf.tensor4d(data, SHAPE), target).dataSync()[0]);
    expectFiniteDifferences(at, predData, grad);
    tf.dispose([pred, target]);
  });

  it('works in tf.grad, tf.variableGrads and optimizer.minimize', () => {
    const loss = make();
    const f = tfjsPerceptualLoss(loss);
    const target = tf.tensor4d(targetData, SHAPE);
    const start = tf.tensor4d(predData, SHAPE);
    const fromGrad = tf.tidy(() => tf.grad((p: tf.Tensor) => f(p as tf.Tensor4D, target))(start).dataSync() as Float32Array);

    const pred = tf.variable(start, true, 'pred');
    const { value, grads } = tf.variableGrads(() => f(pred as tf.Tensor4D, target));
    expect(maxRelError(grads.pred.dataSync(), fromGrad)).toBe(0);
    tf.dispose([value, grads]);

    const optimizer = tf.train.sgd(50);
    const values: number[] = [];
    for (let step = 0; step < 5; step++) {
      const l = optimizer.minimize(() => f(pred as tf.Tensor4D, target), true)!;
      values.push(l.dataSync()[0]);
      l.dispose();
    }
    for (let i = 1; i < values.length; i++) expect(values[i]).toBeLessThan(values[i - 1]);
    expect(values[4]).toBeLessThan(0.8 * values[0]);
    optimizer.dispose();
    tf.dispose([pred, start, target]);
  });

  it('composes with tf.losses.softmaxCrossEntropy: grad(ce + lambda * p) = grad(ce) + lambda * grad(p)', () => {
    const classes = 2;
    const f = tfjsPerceptualLoss(make());
    const g = tfjsPerceptualLoss(make(), { weight: 0.3 });
    const logits = tf.tensor4d(predData, SHAPE);
    const target = tf.tensor4d(targetData, SHAPE);
    const labels = tf.oneHot(tf.tensor3d(randint(2 * 8 * 8, 0, classes, 4), [2, 8, 8], 'int32'), classes);
    const ce = (x: tf.Tensor) => tf.losses.softmaxCrossEntropy(labels, x);
    const grad = (fn: (x: tf.Tensor) => tf.Tensor) => tf.tidy(() => tf.grad(fn as (x: tf.Tensor) => tf.Scalar)(logits).dataSync() as Float32Array);
    const total = grad((x) => tf.add(ce(x), tf.mul(0.3, f(x as tf.Tensor4D, target))));
    const weighted = grad((x) => tf.add(ce(x), g(x as tf.Tensor4D, target)));
    const ceGrad = grad(ce);
    const pGrad = grad((x) => f(x as tf.Tensor4D, target));
    const sum = ceGrad.map((v, i) => v + 0.3 * pGrad[i]);
    expect(maxRelError(total, sum)).toBeLessThan(1e-6);
    expect(maxRelError(weighted, sum)).toBeLessThan(1e-6);
    expect(maxRelError(ceGrad, sum)).toBeGreaterThan(1e-3); // the perceptual term does contribute
    tf.dispose([logits, target, labels]);
  });

  it('gives the target a zero gradient', () => {
    const f = tfjsPerceptualLoss(make());
    const pred = tf.tensor4d(predData, SHAPE);
    const target = tf.tensor4d(targetData, SHAPE);
    const dTarget = tf.tidy(() => tf.grads((p: tf.Tensor, t: tf.Tensor) => f(p as tf.Tensor4D, t as tf.Tensor4D))([pred, target])[1].dataSync());
    expect(dTarget.every((v) => v === 0)).toBe(true);
    tf.dispose([pred, target]);
  });

  it('leaks no tensors: forward only, tf.grad, variableGrads and minimize', () => {
    const f = tfjsPerceptualLoss(make());
    const target = tf.tensor4d(targetData, SHAPE);
    const pred = tf.variable(tf.tensor4d(predData, SHAPE));
    const optimizer = tf.train.sgd(1);
    optimizer.minimize(() => f(pred as tf.Tensor4D, target)); // creates the optimizer's state once
    noLeaks(() => {
      f(pred as tf.Tensor4D, target).dispose();
      tf.grad((p: tf.Tensor) => f(p as tf.Tensor4D, target))(pred).dispose();
      const { value, grads } = tf.variableGrads(() => f(pred as tf.Tensor4D, target));
      tf.dispose([value, grads]);
      optimizer.minimize(() => f(pred as tf.Tensor4D, target));
    });
    optimizer.dispose();
    tf.dispose([pred, target]);
  });

  it('rejects bad inputs and options with PerceptualLossError', () => {
    const loss = make();
    const f = tfjsPerceptualLoss(loss);
    const good = tf.zeros(SHAPE) as tf.Tensor4D;
    const ints = tf.zeros(SHAPE, 'int32') as tf.Tensor4D;
    const threeChannels = tf.zeros([2, 8, 8, 3]) as tf.Tensor4D;
    noLeaks(() => {
      expectCode(() => f(ints, good), 'ERR_DTYPE', /pred must be a float32/);
      expectCode(() => f(good, {} as tf.Tensor4D), 'ERR_SHAPE', /target must be a tf.Tensor4D/);
      expectCode(() => f(threeChannels, threeChannels), 'ERR_SHAPE', /3 channels .*\[N, H, W, C\].*inChannels: 2/);
    });
    expectCode(() => tfjsPerceptualLoss(loss, { weight: -1 }), 'ERR_OPTIONS', /"weight"/);
    expectCode(() => tfjsPerceptualLoss(make({ reduction: 'none' })), 'ERR_OPTIONS', /reduction 'mean' or 'sum'/);
    tf.dispose([good, ints, threeChannels]);
  });
});

describe('tfjsSegmentationLoss', () => {
  const classes = 3;
  const shape: [number, number, number, number] = [2, 8, 8, classes];
  const logitsData = randn(2 * 8 * 8 * classes, 5);
  const labelData = randint(2 * 8 * 8, 0, classes, 6);
  labelData.fill(255, 10, 20); // some ignored pixels

  it('has the package gradient w.r.t. the logits, with ignored pixels', () => {
    const loss = make({ inChannels: classes });
    const f = tfjsSegmentationLoss(loss, { ignoreIndex: 255 });
    const logits = tf.tensor4d(logitsData, shape);
    const labels = tf.tensor3d(labelData, [2, 8, 8], 'int32');
    const [value, grad] = tf.tidy(() => {
      const { value, grads } = tf.valueAndGrads((x: tf.Tensor) => f(x as tf.Tensor4D, labels))([logits]);
      return [value.dataSync()[0], grads[0].dataSync() as Float32Array];
    });
    const own = loss.lossAndGradSegmentation(
      { data: logitsData, shape },
      { data: labelData, shape: [2, 8, 8] },
      { layout: 'nhwc', ignoreIndex: 255 },
    );
    expect(value).toBeCloseTo(own.loss as number, 6);
    expect(maxRelError(grad, own.grad as Float32Array)).toBe(0);
    // Ignored pixels get no gradient.
    for (let p = 10; p < 20; p++) for (let c = 0; c < classes; c++) expect(Math.abs(grad[p * classes + c])).toBe(0);
    tf.dispose([logits, labels]);
  });

  it('matches central finite differences (float64 loss)', () => {
    const f = tfjsSegmentationLoss(make({ inChannels: classes, dtype: 'float64' }));
    const labels = tf.tensor3d(labelData, [2, 8, 8], 'int32');
    const grad = tf.tidy(() => tf.grad((x: tf.Tensor) => f(x as tf.Tensor4D, labels))(tf.tensor4d(logitsData, shape)).dataSync() as Float32Array);
    const at = (data: Float32Array) => tf.tidy(() => f(tf.tensor4d(data, shape), labels).dataSync()[0]);
    expectFiniteDifferences(at, logitsData, grad);
    labels.dispose();
  });

  it('trains logits in optimizer.minimize with softmaxCrossEntropy, without leaks', () => {
    const f = tfjsSegmentationLoss(make({ inChannels: classes }));
    const logits = tf.variable(tf.tensor4d(logitsData, shape));
    const clean = labelData.map((v) => (v === 255 ? 0 : v));
    const labels = tf.tensor3d(clean, [2, 8, 8], 'int32');
    const onehot = tf.oneHot(labels, classes);
    const optimizer = tf.train.adam(0.1);
    const objective = () => tf.add(tf.losses.softmaxCrossEntropy(onehot, logits), tf.mul(1, f(logits as tf.Tensor4D, labels))) as tf.Scalar;
    const first = optimizer.minimize(objective, true)!;
    const values = [first.dataSync()[0]];
    first.dispose();
    noLeaks(() => {
      for (let step = 0; step < 10; step++) {
        const l = optimizer.minimize(objective, true)!;
        values.push(l.dataSync()[0]);
        l.dispose();
      }
    });
    expect(values[10]).toBeLessThan(0.5 * values[0]);
    optimizer.dispose();
    tf.dispose([logits, labels, onehot]);
  });

  it('rejects non-int32 labels', () => {
    const f = tfjsSegmentationLoss(make({ inChannels: classes }));
    const logits = tf.zeros(shape) as tf.Tensor4D;
    const labels = tf.zeros([2, 8, 8]) as tf.Tensor3D;
    expect(() => f(logits, labels)).toThrow(/int32 tf.Tensor of class ids; got a float32 tensor/);
    expect(() => tfjsSegmentationLoss(make({ inChannels: classes }), { ignoreIndex: 0.5 })).toThrow(/ignoreIndex/);
    tf.dispose([logits, labels]);
  });
});
