// The TensorFlow.js adapter's volume and instance-mask forms (lib/tfjs.ts) on tfjs-core's CPU
// backend: NDHWC tf.Tensor5D inputs of a 3-D loss and 3-D segmentation, tfjsInstanceMaskLoss
// with and without weights (a tf.Tensor1D or an array), float32, bool and int32 masks, against
// the package's own results and central differences, in tf.grad and optimizer.minimize, its
// errors, and no leaked tensors.
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ensureGradients } from '../../demo/gradients';
import { instanceMaskLoss, PerceptualLoss, setNumThreads, type InstanceMaskLoss, type PerceptualLossOptions } from '../../lib/index';
import { tfjsInstanceMaskLoss, tfjsPerceptualLoss, tfjsSegmentationLoss } from '../../lib/tfjs';
import { expectCode } from '../helpers/expect-code';
import { randint, randn } from '../helpers/random';
import { maxRelError, toChannelsFirst } from '../helpers/volumes';

const disposables: Array<{ dispose(): void }> = [];
function keep<T extends { dispose(): void }>(x: T): T {
  disposables.push(x);
  return x;
}

/** Runs `body` and checks that it leaves no tensor behind. */
function noLeaks(body: () => void): void {
  const before = tf.memory().numTensors;
  body();
  expect(tf.memory().numTensors).toBe(before);
}

/** The value and the gradient of `f` at `x`, as host data. */
function valueAndGrad(f: (x: tf.Tensor) => tf.Scalar, x: tf.Tensor): [number, Float32Array] {
  return tf.tidy(() => {
    const { value, grads } = tf.valueAndGrads(f)([x]);
    return [value.dataSync()[0], grads[0].dataSync() as Float32Array];
  });
}

/** Central differences at every coordinate, as test/api/tfjs.test.ts bounds them (h = 1e-2, float64 loss). */
function expectFiniteDifferences(at: (data: Float32Array) => number, x: Float32Array, grad: Float32Array): void {
  const h = 1e-2;
  const scale = Math.max(...grad.map(Math.abs));
  expect(scale).toBeGreaterThan(0);
  for (let i = 0; i < x.length; i++) {
    const plus = x.slice();
    const minus = x.slice();
    plus[i] += h;
    minus[i] -= h;
    const [fPlus, fMinus] = [at(plus), at(minus)];
    const step = plus[i] - minus[i];
    const bound = (4 * 2 ** -24 * (Math.abs(fPlus) + Math.abs(fMinus))) / step + 1e-3 * scale;
    expect(Math.abs((fPlus - fMinus) / step - grad[i]), `coordinate ${i}`).toBeLessThanOrEqual(bound);
  }
}

beforeAll(async () => {
  setNumThreads(1);
  await tf.setBackend('cpu');
  tf.enableProdMode();
  ensureGradients();
});
afterAll(() => disposables.forEach((d) => d.dispose()));

describe('volumes: NDHWC tf.Tensor5D', () => {
  const VOLUME = { inChannels: 2, spatialDims: 3, arch: [4, 'M', 8], layers: ['relu1_1', 'relu2_1'], device: 'cpu' } as const satisfies PerceptualLossOptions;
  const shape: [number, number, number, number, number] = [2, 4, 4, 4, 2]; // NDHWC
  const predData = randn(2 * 64 * 2, 1);
  const targetData = randn(predData.length, 2);
  const ncdhw = [2, 2, 4, 4, 4];

  it("tfjsPerceptualLoss of a 3-D loss has the package's value and gradient, permuted from NCDHW", () => {
    const loss = keep(new PerceptualLoss(VOLUME));
    const f = tfjsPerceptualLoss(loss);
    const pred = tf.tensor5d(predData, shape);
    const target = tf.tensor5d(targetData, shape);
    const [value, grad] = valueAndGrad((p) => f(p as tf.Tensor5D, target), pred);
    const own = loss.lossAndGrad({ data: toChannelsFirst(predData, shape), shape: ncdhw }, { data: toChannelsFirst(targetData, shape), shape: ncdhw });
    expect(Math.abs(value - own.loss) / own.loss).toBeLessThan(1e-6);
    expect(maxRelError(toChannelsFirst(grad, shape), own.grad)).toBeLessThan(1e-5);
    tf.dispose([pred, target]);
  });

  it('matches central finite differences at every coordinate (float64 loss)', () => {
    const f = tfjsPerceptualLoss(keep(new PerceptualLoss({ ...VOLUME, arch: [3], layers: ['conv1_1'], styleWeight: 0.5, dtype: 'float64' })));
    const target = tf.tensor5d(targetData, shape);
    const grad = tf.tidy(() => tf.grad((p: tf.Tensor) => f(p as tf.Tensor5D, target))(tf.tensor5d(predData, shape)).dataSync() as Float32Array);
    expectFiniteDifferences((data) => tf.tidy(() => f(tf.tensor5d(data, shape), target).dataSync()[0]), predData, grad);
    target.dispose();
  });

  it('trains a tf.Variable volume in optimizer.minimize, without leaks', () => {
    const f = tfjsPerceptualLoss(keep(new PerceptualLoss(VOLUME)));
    const target = tf.tensor5d(targetData, shape);
    const pred = tf.variable(tf.tensor5d(predData, shape));
    const optimizer = tf.train.sgd(20);
    const values: number[] = [];
    const step = () => {
      const l = optimizer.minimize(() => f(pred, target), true)!;
      values.push(l.dataSync()[0]);
      l.dispose();
    };
    step();
    noLeaks(() => [1, 2, 3, 4].forEach(step));
    for (let i = 1; i < values.length; i++) expect(values[i]).toBeLessThan(values[i - 1]);
    optimizer.dispose();
    tf.dispose([pred, target]);
  });

  it('tfjsSegmentationLoss of a 3-D loss takes logits [N, D, H, W, classes] and int32 labels [N, D, H, W]', () => {
    const classes = 3;
    const loss = keep(new PerceptualLoss({ ...VOLUME, inChannels: classes }));
    const f = tfjsSegmentationLoss(loss);
    const logitsShape: [number, number, number, number, number] = [2, 4, 4, 4, classes];
    const logitsData = randn(2 * 64 * classes, 3);
    const labelData = randint(2 * 64, 0, classes, 4);
    labelData.fill(255, 0, 10);
    const logits = tf.tensor5d(logitsData, logitsShape);
    const labels = tf.tensor4d(labelData, [2, 4, 4, 4], 'int32');
    const [value, grad] = valueAndGrad((x) => f(x as tf.Tensor5D, labels), logits);
    const own = loss.lossAndGradSegmentation({ data: logitsData, shape: logitsShape }, { data: labelData, shape: [2, 4, 4, 4] }, { layout: 'ndhwc' });
    expect(Math.abs(value - own.loss) / own.loss).toBeLessThan(1e-6);
    expect(maxRelError(grad, own.grad)).toBe(0);
    expect(Array.from(grad.subarray(0, 10 * classes), Math.abs)).toEqual(new Array<number>(10 * classes).fill(0));
    tf.dispose([logits, labels]);
  });

  it('refuses a 4-D tensor and names tf.Tensor5D [N, D, H, W, C]', () => {
    const f = tfjsPerceptualLoss(keep(new PerceptualLoss(VOLUME)));
    const flat = tf.zeros<tf.Rank.R4>([2, 4, 4, 2]);
    noLeaks(() => {
      expectCode(() => f(flat, flat), 'ERR_SHAPE', /pred must be 5-D \[N, D, H, W, C\] \(layout 'ndhwc', spatialDims: 3\)/);
      expectCode(() => f({} as tf.Tensor5D, {} as tf.Tensor5D), 'ERR_SHAPE', /^pred must be a tf\.Tensor5D \[N, D, H, W, C\]; got/);
    });
    flat.dispose();
  });
});

describe('tfjsInstanceMaskLoss', () => {
  const NET = { arch: [4, 'M', 8], layers: ['relu1_1', 'relu2_1'], device: 'cpu' } as const;
  const M = 3;
  const shape: [number, number, number, number] = [M, 8, 8, 1]; // NHWC
  const logitsData = randn(M * 64, 5).map((v) => 2 * v);
  const maskData = Float32Array.from(randint(M * 64, 0, 2, 6));
  const weights = [0.5, 2, 1];

  /** The package's own result on the same data, in NHWC. */
  function own(loss: InstanceMaskLoss, w?: number[]) {
    return loss.lossAndGrad({ data: logitsData, shape }, { data: maskData, shape }, { layout: 'nhwc', weights: w });
  }

  it("has the package's value and gradient w.r.t. the logits, with and without weights", () => {
    const loss = keep(instanceMaskLoss(NET));
    const f = tfjsInstanceMaskLoss(loss);
    const logits = tf.tensor4d(logitsData, shape);
    const masks = tf.tensor4d(maskData, shape);
    const w = tf.tensor1d(weights);
    for (const [given, expected] of [
      [undefined, own(loss)],
      [weights, own(loss, weights)],
      [w, own(loss, weights)],
      [Float64Array.from(weights), own(loss, weights)],
    ] as const) {
      const [value, grad] = valueAndGrad((x) => f(x as tf.Tensor4D, masks, given), logits);
      expect(value).toBe(Math.fround(expected.loss));
      expect(maxRelError(grad, expected.grad)).toBe(0);
    }
    expect(own(loss).loss).not.toBeCloseTo(own(loss, weights).loss, 4);
    tf.dispose([logits, masks, w]);
  });

  it('takes float32, bool and int32 masks alike', () => {
    const f = tfjsInstanceMaskLoss(keep(instanceMaskLoss(NET)));
    const logits = tf.tensor4d(logitsData, shape);
    const masks = [tf.tensor4d(maskData, shape), tf.tensor4d(maskData, shape, 'bool'), tf.tensor4d(maskData, shape, 'int32')];
    const values = masks.map((m) => tf.tidy(() => f(logits, m, weights).dataSync()[0]));
    expect(values[1]).toBe(values[0]);
    expect(values[2]).toBe(values[0]);
    tf.dispose([logits, ...masks]);
  });

  it('matches central finite differences at every coordinate (float64 loss, weights)', () => {
    const f = tfjsInstanceMaskLoss(keep(instanceMaskLoss({ arch: [3], layers: ['conv1_1'], styleWeight: 0.5, dtype: 'float64', device: 'cpu' })));
    const masks = tf.tensor4d(maskData, shape);
    const grad = tf.tidy(() => tf.grad((x: tf.Tensor) => f(x as tf.Tensor4D, masks, weights))(tf.tensor4d(logitsData, shape)).dataSync() as Float32Array);
    expectFiniteDifferences((data) => tf.tidy(() => f(tf.tensor4d(data, shape), masks, weights).dataSync()[0]), logitsData, grad);
    masks.dispose();
  });

  it('composes with a tfjs loss: grad(mse + lambda * p) = grad(mse) + lambda * grad(p); weight multiplies both', () => {
    const loss = keep(instanceMaskLoss(NET));
    const f = tfjsInstanceMaskLoss(loss);
    const g = tfjsInstanceMaskLoss(loss, { weight: 0.3 });
    const logits = tf.tensor4d(logitsData, shape);
    const masks = tf.tensor4d(maskData, shape);
    const mse = (x: tf.Tensor) => tf.mean<tf.Scalar>(tf.square(tf.sub(x, masks)));
    const grad = (fn: (x: tf.Tensor) => tf.Scalar) => tf.tidy(() => tf.grad(fn)(logits).dataSync() as Float32Array);
    const total = grad((x) => tf.add(mse(x), tf.mul(0.3, f(x as tf.Tensor4D, masks))));
    const weighted = grad((x) => tf.add(mse(x), g(x as tf.Tensor4D, masks)));
    const perceptual = grad((x) => f(x as tf.Tensor4D, masks));
    const sum = grad(mse).map((v, i) => v + 0.3 * perceptual[i]);
    expect(maxRelError(total, sum)).toBeLessThan(1e-6);
    expect(maxRelError(weighted, sum)).toBeLessThan(1e-6);
    expect(maxRelError(grad(mse), sum)).toBeGreaterThan(1e-3);
    tf.dispose([logits, masks]);
  });

  it('outside a tape computes the loss alone; inside one, loss and gradient in one call; no leaks', () => {
    const loss = keep(instanceMaskLoss(NET));
    const f = tfjsInstanceMaskLoss(loss);
    const logits = tf.variable(tf.tensor4d(logitsData, shape));
    const masks = tf.tensor4d(maskData, shape);
    const lossOnly = vi.spyOn(loss, 'loss');
    const withGrad = vi.spyOn(loss, 'lossAndGrad');
    const optimizer = tf.train.sgd(1);
    optimizer.minimize(() => f(logits, masks, weights)); // creates the optimizer's state once
    noLeaks(() => {
      f(logits, masks, weights).dispose();
      tf.grad((x: tf.Tensor) => f(x as tf.Tensor4D, masks))(logits).dispose();
      optimizer.minimize(() => f(logits, masks, weights));
    });
    expect([lossOnly.mock.calls.length, withGrad.mock.calls.length]).toEqual([1, 3]);
    vi.restoreAllMocks();
    optimizer.dispose();
    tf.dispose([logits, masks]);
  });

  it('takes volumes [M, D, H, W, 1] for a loss with spatialDims 3', () => {
    const loss = keep(instanceMaskLoss({ ...NET, spatialDims: 3 }));
    const f = tfjsInstanceMaskLoss(loss);
    const volume: [number, number, number, number, number] = [2, 4, 4, 4, 1];
    const data = logitsData.subarray(0, 128);
    const m = maskData.subarray(0, 128);
    const logits = tf.tensor5d(data, volume);
    const masks = tf.tensor5d(m, volume);
    const [value, grad] = valueAndGrad((x) => f(x as tf.Tensor5D, masks, [1, 3]), logits);
    const expected = loss.lossAndGrad({ data, shape: volume }, { data: m, shape: volume }, { layout: 'ndhwc', weights: [1, 3] });
    expect(value).toBe(Math.fround(expected.loss));
    expect(maxRelError(grad, expected.grad)).toBe(0);
    tf.dispose([logits, masks]);
  });

  it('rejects bad inputs and options with PerceptualLossError', () => {
    const f = tfjsInstanceMaskLoss(keep(instanceMaskLoss(NET)));
    const logits = tf.tensor4d(logitsData, shape);
    const masks = tf.tensor4d(maskData, shape);
    const ints = tf.zeros<tf.Rank.R4>(shape, 'int32');
    const strings = tf.tensor4d(['a'], [1, 1, 1, 1]);
    const bytes = tf.mul<tf.Tensor4D>(masks, 255);
    noLeaks(() => {
      expectCode(() => f({} as tf.Tensor4D, masks), 'ERR_SHAPE', /^maskLogits must be a tf\.Tensor4D \[M, H, W, 1\]; got/);
      expectCode(() => f(ints, masks), 'ERR_DTYPE', /maskLogits must be a float32/);
      expectCode(() => f(logits, [] as unknown as tf.Tensor4D), 'ERR_SHAPE', /^masks must be a tf\.Tensor4D \[M, H, W, 1\] of 0\/1; got/);
      expectCode(() => f(logits, strings), 'ERR_DTYPE', /masks must be a float32, bool or int32 tf.Tensor; got a string tensor/);
      expectCode(() => f(logits, masks, [1, 2]), 'ERR_OPTIONS', /"weights"/);
      expectCode(() => f(logits, bytes), 'ERR_SHAPE', /is 255/);
    });
    expectCode(() => tfjsInstanceMaskLoss(keep(instanceMaskLoss({ ...NET, reduction: 'none' }))), 'ERR_OPTIONS', /reduction 'mean' or 'sum'/);
    expectCode(() => tfjsInstanceMaskLoss(keep(instanceMaskLoss(NET)), { weight: -2 }), 'ERR_OPTIONS', /"weight"/);
    tf.dispose([logits, masks, ints, strings, bytes]);
  });
});
