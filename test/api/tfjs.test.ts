// The TensorFlow.js adapter (lib/tfjs.ts) on tfjs-core's CPU backend: its gradient against
// finite differences and against the package's own (NCHW) gradient, inside tf.grad,
// tf.variableGrads and optimizer.minimize, composed with tfjs' own losses, the segmentation
// variant, errors, and no leaked tensors.
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ensureGradients } from '../../demo/gradients';
import { PerceptualLoss, setNumThreads, type PerceptualLossOptions } from '../../lib/index';
import { expectCode } from '../helpers/expect-code';
import { tfjsPerceptualLoss, tfjsSegmentationLoss } from '../../lib/tfjs';
import { randint, randn } from '../helpers/random';

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
 * A smooth loss for the finite-difference checks: one tap at the first conv, before any ReLU,
 * with the Gram term, makes the loss a polynomial of pred (of its softmax for segmentation), with
 * no ReLU, max-pool or L1 kink for a step to cross, so every coordinate can be held to the bound.
 * (Kinks are the package's business: test/parity/gradcheck.test.ts checks them in float64, and the other
 * tests here check that the adapter hands over the package's gradient on a network with ReLUs.)
 */
const SMOOTH: Partial<PerceptualLossOptions> = { arch: [6], layers: ['conv1_1'], styleWeight: 0.5, dtype: 'float64' };

/**
 * Central differences at every coordinate, h = 1e-2, and the worst coordinate bounded:
 *   |numeric_i - grad_i| <= 4 * 2^-24 * (|f(x+)| + |f(x-)|) / (x+ - x-)  +  1e-3 * max|grad|.
 * The first term is the rounding of the two loss values, which come back as float32 scalars; the
 * step is the one taken, x+ and x- being rounded to float32 too. The second allows the truncation
 * error, O(h^2) times the third derivative.
 */
function expectFiniteDifferences(at: (data: Float32Array) => number, x: Float32Array, grad: Float32Array): void {
  const h = 1e-2;
  const scale = Math.max(...grad.map(Math.abs));
  expect(scale).toBeGreaterThan(0);
  let worst = { index: -1, excess: -Infinity, error: 0, bound: 0 };
  for (let i = 0; i < x.length; i++) {
    const plus = x.slice();
    const minus = x.slice();
    plus[i] += h;
    minus[i] -= h;
    const [fPlus, fMinus] = [at(plus), at(minus)];
    const step = plus[i] - minus[i];
    const error = Math.abs((fPlus - fMinus) / step - grad[i]);
    const bound = (4 * 2 ** -24 * (Math.abs(fPlus) + Math.abs(fMinus))) / step + 1e-3 * scale;
    if (error - bound > worst.excess) worst = { index: i, excess: error - bound, error, bound };
  }
  expect(worst.error, `worst coordinate ${worst.index}: error ${worst.error} against a bound of ${worst.bound}`).toBeLessThanOrEqual(worst.bound);
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
    expect(value).toBeCloseTo(own.loss, 6);
    expect(maxRelError(grad, toNhwc(own.grad, nchw))).toBeLessThan(1e-5);
    tf.dispose([pred, target]);
  });

  it('matches central finite differences at every coordinate (float64 loss, float32 tensors)', () => {
    const f = tfjsPerceptualLoss(make(SMOOTH));
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
    const { value, grads } = tf.variableGrads(() => f(pred, target));
    expect(maxRelError(grads.pred.dataSync(), fromGrad)).toBe(0);
    tf.dispose([value, grads]);

    const optimizer = tf.train.sgd(50);
    const values: number[] = [];
    for (let step = 0; step < 5; step++) {
      const l = optimizer.minimize(() => f(pred, target), true)!;
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

  it('outside a gradient tape computes the loss alone; inside one, the loss and gradient in one call', () => {
    const loss = make();
    const f = tfjsPerceptualLoss(loss);
    const pred = tf.tensor4d(predData, SHAPE);
    const target = tf.tensor4d(targetData, SHAPE);
    const lossOnly = vi.spyOn(loss, 'loss');
    const withGrad = vi.spyOn(loss, 'lossAndGrad');
    const value = tf.tidy(() => f(pred, target).dataSync()[0]);
    expect([lossOnly.mock.calls.length, withGrad.mock.calls.length]).toEqual([1, 0]);
    tf.tidy(() => tf.grad((p: tf.Tensor) => f(p as tf.Tensor4D, target))(pred));
    expect([lossOnly.mock.calls.length, withGrad.mock.calls.length]).toEqual([1, 1]);
    // Both paths give the same value.
    expect(value).toBe(Math.fround((withGrad.mock.results[0].value as { loss: number }).loss));
    vi.restoreAllMocks();
    tf.dispose([pred, target]);
  });

  it('weight multiplies the loss value and its gradient', () => {
    const loss = make();
    const plain = tfjsPerceptualLoss(loss);
    const weighted = tfjsPerceptualLoss(loss, { weight: 0.3 });
    const pred = tf.tensor4d(predData, SHAPE);
    const target = tf.tensor4d(targetData, SHAPE);
    const run = (fn: typeof plain) =>
      tf.tidy(() => {
        const { value, grads } = tf.valueAndGrads((p: tf.Tensor) => fn(p as tf.Tensor4D, target))([pred]);
        return [value.dataSync()[0], grads[0].dataSync() as Float32Array] as const;
      });
    const [v1, g1] = run(plain);
    const [v3, g3] = run(weighted);
    expect(v1).toBeGreaterThan(0);
    expect(v3).toBe(Math.fround(0.3 * (loss.loss({ data: toNchw(predData, SHAPE), shape: [2, 2, 8, 8] }, { data: toNchw(targetData, SHAPE), shape: [2, 2, 8, 8] }))));
    expect(v3 / v1).toBeCloseTo(0.3, 6);
    expect(maxRelError(g3, g1.map((g) => 0.3 * g))).toBeLessThan(1e-6);
    // Forward only (no tape) is weighted too.
    expect(tf.tidy(() => weighted(pred, target).dataSync()[0])).toBe(v3);
    tf.dispose([pred, target]);
  });

  it("works with reduction 'sum': the package's summed loss and its gradient", () => {
    const loss = make({ reduction: 'sum' });
    const f = tfjsPerceptualLoss(loss);
    const pred = tf.tensor4d(predData, SHAPE);
    const target = tf.tensor4d(targetData, SHAPE);
    const [value, grad] = tf.tidy(() => {
      const { value, grads } = tf.valueAndGrads((p: tf.Tensor) => f(p as tf.Tensor4D, target))([pred]);
      return [value.dataSync()[0], grads[0].dataSync() as Float32Array] as const;
    });
    const own = loss.lossAndGrad({ data: predData, shape: SHAPE }, { data: targetData, shape: SHAPE }, { layout: 'nhwc' });
    expect(value).toBe(Math.fround(own.loss));
    expect(maxRelError(grad, own.grad)).toBe(0);
    // A sum over the elements of each tap, not a mean: far larger than the 'mean' loss.
    const mean = make().loss({ data: predData, shape: SHAPE }, { data: targetData, shape: SHAPE }, { layout: 'nhwc' });
    expect(value).toBeGreaterThan(100 * mean);
    tf.dispose([pred, target]);
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
    optimizer.minimize(() => f(pred, target)); // creates the optimizer's state once
    noLeaks(() => {
      f(pred, target).dispose();
      tf.grad((p: tf.Tensor) => f(p as tf.Tensor4D, target))(pred).dispose();
      const { value, grads } = tf.variableGrads(() => f(pred, target));
      tf.dispose([value, grads]);
      optimizer.minimize(() => f(pred, target));
    });
    optimizer.dispose();
    tf.dispose([pred, target]);
  });

  it('rejects bad inputs and options with PerceptualLossError', () => {
    const loss = make();
    const f = tfjsPerceptualLoss(loss);
    const good = tf.zeros<tf.Rank.R4>(SHAPE);
    const ints = tf.zeros<tf.Rank.R4>(SHAPE, 'int32');
    const threeChannels = tf.zeros<tf.Rank.R4>([2, 8, 8, 3]);
    noLeaks(() => {
      expectCode(() => f(ints, good), 'ERR_DTYPE', /pred must be a float32/);
      expectCode(() => f(good, {} as tf.Tensor4D), 'ERR_SHAPE', /target must be a tf.Tensor4D/);
      expectCode(() => f(threeChannels, threeChannels), 'ERR_SHAPE', /3 channels .*\[N, H, W, C\].*inChannels: 2/);
    });
    expectCode(() => tfjsPerceptualLoss(loss, { weight: -1 }), 'ERR_OPTIONS', /^Invalid option "weight": got -1; allowed: a finite number >= 0\.$/);
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
    expect(value).toBeCloseTo(own.loss, 6);
    expect(maxRelError(grad, own.grad)).toBe(0);
    // Ignored pixels get no gradient.
    for (let p = 10; p < 20; p++) for (let c = 0; c < classes; c++) expect(Math.abs(grad[p * classes + c])).toBe(0);
    tf.dispose([logits, labels]);
  });

  it('matches central finite differences at every coordinate (float64 loss)', () => {
    const f = tfjsSegmentationLoss(make({ inChannels: classes, ...SMOOTH }));
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
    const objective = () => tf.add<tf.Scalar>(tf.losses.softmaxCrossEntropy(onehot, logits), tf.mul(1, f(logits as tf.Tensor4D, labels)));
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
    const logits = tf.zeros<tf.Rank.R4>(shape);
    const labels = tf.zeros<tf.Rank.R3>([2, 8, 8]);
    expect(() => f(logits, labels)).toThrow(/int32 tf.Tensor of class ids; got a float32 tensor/);
    expect(() => tfjsSegmentationLoss(make({ inChannels: classes }), { ignoreIndex: 0.5 })).toThrow(/^Invalid option "ignoreIndex": got 0\.5; allowed: an integer\.$/);
    tf.dispose([logits, labels]);
  });
});
