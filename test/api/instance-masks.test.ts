// Instance masks (docs/api.md, "Instance masks"): instanceMaskLoss against PerceptualLoss on
// sigmoid(maskLogits) computed here, with and without per-instance weights under each reduction,
// the gradient through the sigmoid's p(1 - p), byte and float masks, both layouts, Tensors,
// async calls and volumes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  instanceMaskLoss,
  PerceptualLoss,
  setNumThreads,
  Tensor,
  type HostTensor,
  type InstanceMaskLoss,
  type PerceptualLossOptions,
  type Reduction,
} from '../../lib/index';
import { randint, randn } from '../helpers/random';
import { instance, maxRelError, sigmoid } from '../helpers/volumes';

/** The network of these tests, less inChannels (instance masks have 1 channel). */
const NET = { arch: [4, 'M', 8], layers: ['relu1_1', 'pool1', 'relu2_1'], device: 'cpu' } as const;
const M = 3;
const SHAPE = [M, 1, 16, 16];
const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Logits in float64 (scaled so that the sigmoid is not flat) and 0/1 masks of the same shape. */
function data(shape: number[], seed: number): { logits: HostTensor<Float64Array>; masks: { data: Uint8Array; shape: number[] }; floatMasks: HostTensor<Float64Array> } {
  const logits = { data: Float64Array.from(randn(count(shape), seed), (v) => 2 * v), shape };
  const bytes = Uint8Array.from(randint(count(shape), 0, 2, seed + 1));
  return { logits, masks: { data: bytes, shape }, floatMasks: { data: Float64Array.from(bytes), shape } };
}

const disposables: Array<{ dispose(): void }> = [];
function keep<T extends { dispose(): void }>(x: T): T {
  disposables.push(x);
  return x;
}

beforeAll(() => {
  // Tiny inputs: one intra-op thread avoids thread hand-offs that are slow on a busy machine.
  setNumThreads(1);
});
afterAll(() => disposables.forEach((d) => d.dispose()));

/** The instance loss and the PerceptualLoss it must agree with, in float64. */
function pair<R extends Reduction>(reduction: R, options: Partial<PerceptualLossOptions> = {}): [InstanceMaskLoss<R>, PerceptualLoss<R>] {
  const own = { ...NET, dtype: 'float64', ...options, reduction } as const;
  return [keep(instanceMaskLoss<R>(own)), keep(new PerceptualLoss<R>({ ...own, inChannels: 1 }))];
}

/** d loss / d logits from d loss / d p, through p = sigmoid(logits). */
const throughSigmoid = (gradP: ArrayLike<number>, p: Float64Array) => Float64Array.from(p, (v, i) => gradP[i] * v * (1 - v));

describe('without weights: PerceptualLoss on sigmoid(maskLogits)', () => {
  const { logits, masks, floatMasks } = data(SHAPE, 1);
  const p = { data: sigmoid(logits.data), shape: SHAPE };

  it.each(['mean', 'sum'] as const)("reduction '%s': the loss and the gradient through p(1 - p)", (reduction) => {
    const [instances, plain] = pair(reduction);
    const expected = plain.lossAndGrad(p, floatMasks);
    const got = instances.lossAndGrad(logits, masks);
    expect(Math.abs(got.loss - expected.loss) / expected.loss).toBeLessThan(1e-12);
    expect(Math.abs(instances.loss(logits, masks) - expected.loss) / expected.loss).toBeLessThan(1e-12);
    expect(got.grad).toBeInstanceOf(Float64Array);
    expect(got.grad).toHaveLength(count(SHAPE));
    expect(maxRelError(got.grad, throughSigmoid(expected.grad, p.data))).toBeLessThan(1e-10);
  });

  it("reduction 'none': one value per instance", () => {
    const [instances, plain] = pair('none');
    const expected = plain.loss(p, floatMasks);
    const values = instances.loss(logits, masks);
    expect(values).toBeInstanceOf(Float64Array);
    expect(values).toHaveLength(M);
    expect(maxRelError(values, expected)).toBeLessThan(1e-12);
  });

  it('with the Gram term and l1, too', () => {
    const [instances, plain] = pair('mean', { styleWeight: 3, criterion: 'l1' });
    const expected = plain.lossAndGrad(p, floatMasks);
    const got = instances.lossAndGrad(logits, masks);
    expect(Math.abs(got.loss - expected.loss) / expected.loss).toBeLessThan(1e-12);
    expect(maxRelError(got.grad, throughSigmoid(expected.grad, p.data))).toBeLessThan(1e-10);
  });

  it('in float32: the sigmoid in float32, a Float32Array gradient close to the float64 one', () => {
    const instances = keep(instanceMaskLoss(NET));
    const plain = keep(new PerceptualLoss({ ...NET, inChannels: 1 }));
    const logits32 = { data: Float32Array.from(logits.data), shape: SHAPE };
    const p32 = { data: Float32Array.from(sigmoid(logits32.data)), shape: SHAPE };
    const expected = plain.lossAndGrad(p32, { data: Float32Array.from(masks.data), shape: SHAPE });
    const got = instances.lossAndGrad(logits32, masks);
    expect(got.grad).toBeInstanceOf(Float32Array);
    expect(Math.abs(got.loss - expected.loss) / expected.loss).toBeLessThan(1e-5);
    expect(maxRelError(got.grad, throughSigmoid(expected.grad, Float64Array.from(p32.data)))).toBeLessThan(1e-4);
  });

  it('terms: one per tap, adding up to the loss', () => {
    const [instances] = pair('mean', { styleWeight: 1 });
    const { loss, terms } = instances.lossAndGrad(logits, masks);
    expect(terms.map((t) => t.name)).toEqual(['relu1_1', 'pool1', 'relu2_1']);
    expect(Math.abs(terms.reduce((s, t) => s + t.feature + t.style, 0) - loss) / loss).toBeLessThan(1e-10);
  });
});

describe('with weights', () => {
  const { logits, masks, floatMasks } = data(SHAPE, 2);
  const p = { data: sigmoid(logits.data), shape: SHAPE };
  const weights = [0.5, 2, 0];
  const size = count(SHAPE) / M;

  /** Instance i's loss under `reduction` and d loss_i / d p_i, from a PerceptualLoss on that instance alone. */
  function perInstance(plain: PerceptualLoss<'none'> | PerceptualLoss<'sum'>, i: number): { value: number; grad: Float64Array } {
    const { loss, grad } = plain.lossAndGrad(instance(p, i), instance(floatMasks, i));
    return { value: typeof loss === 'number' ? loss : loss[0], grad };
  }

  /** The expected gradient: instance i's gradient scaled by `scale[i]`, through the sigmoid. */
  function expectedGrad(parts: Array<{ grad: Float64Array }>, scale: number[]): Float64Array {
    const gradP = new Float64Array(count(SHAPE));
    parts.forEach((part, i) => part.grad.forEach((g, j) => (gradP[i * size + j] = scale[i] * g)));
    return throughSigmoid(gradP, p.data);
  }

  it("'mean' gives sum_i w_i t_i / sum_i w_i, t_i each instance's loss under 'none'", () => {
    const [instances] = pair('mean');
    const [, none] = pair('none');
    const parts = [0, 1, 2].map((i) => perInstance(none, i));
    const total = weights.reduce((a, b) => a + b);
    const expected = parts.reduce((s, part, i) => s + weights[i] * part.value, 0) / total;
    const got = instances.lossAndGrad(logits, masks, { weights });
    expect(Math.abs(got.loss - expected) / expected).toBeLessThan(1e-12);
    expect(Math.abs(instances.loss(logits, masks, { weights }) - expected) / expected).toBeLessThan(1e-12);
    expect(maxRelError(got.grad, expectedGrad(parts, weights.map((w) => w / total)))).toBeLessThan(1e-10);
    // The unweighted loss differs: the weights act.
    expect(Math.abs(instances.loss(logits, masks) - expected) / expected).toBeGreaterThan(1e-3);
  });

  it("'sum' gives sum_i w_i s_i, s_i each instance's loss under 'sum'", () => {
    const [instances, sum] = pair('sum');
    const parts = [0, 1, 2].map((i) => perInstance(sum, i));
    const expected = parts.reduce((s, part, i) => s + weights[i] * part.value, 0);
    const got = instances.lossAndGrad(logits, masks, { weights });
    expect(Math.abs(got.loss - expected) / expected).toBeLessThan(1e-12);
    expect(maxRelError(got.grad, expectedGrad(parts, weights))).toBeLessThan(1e-10);
  });

  it("'none' gives the M values w_i t_i, and the gradient of their sum", () => {
    const [instances, none] = pair('none');
    const parts = [0, 1, 2].map((i) => perInstance(none, i));
    const got = instances.lossAndGrad(logits, masks, { weights });
    expect(got.loss).toHaveLength(M);
    expect(maxRelError(got.loss, parts.map((part, i) => weights[i] * part.value))).toBeLessThan(1e-12);
    expect(got.loss[2]).toBe(0);
    expect(maxRelError(got.grad, expectedGrad(parts, weights))).toBeLessThan(1e-10);
  });

  it('an instance of weight 0 gets no gradient; the others do', () => {
    const [instances] = pair('mean');
    const { grad } = instances.lossAndGrad(logits, masks, { weights });
    expect(Array.from(grad.subarray(2 * size), Math.abs)).toEqual(new Array<number>(size).fill(0));
    expect(grad.subarray(0, size).some((g) => g !== 0)).toBe(true);
    expect(grad.subarray(size, 2 * size).some((g) => g !== 0)).toBe(true);
  });

  it('takes an array, a Float64Array or a Float32Array; all-1 weights are no weights', () => {
    const [instances] = pair('mean');
    const expected = instances.loss(logits, masks, { weights: [0.25, 4, 1] });
    expect(instances.loss(logits, masks, { weights: Float64Array.from([0.25, 4, 1]) })).toBe(expected);
    expect(instances.loss(logits, masks, { weights: Float32Array.from([0.25, 4, 1]) })).toBe(expected);
    expect(Math.abs(instances.loss(logits, masks, { weights: [1, 1, 1] }) - instances.loss(logits, masks)) / expected).toBeLessThan(1e-14);
  });

  it("scaling every weight leaves 'mean' unchanged", () => {
    const [instances] = pair('mean');
    const a = instances.loss(logits, masks, { weights: [1, 2, 3] });
    const b = instances.loss(logits, masks, { weights: [10, 20, 30] });
    expect(Math.abs(a - b) / a).toBeLessThan(1e-12);
  });
});

describe('inputs', () => {
  const { logits, masks, floatMasks } = data(SHAPE, 3);

  it('uint8, float32 and float64 masks give the same loss and gradient', () => {
    const [instances] = pair('mean');
    const expected = instances.lossAndGrad(logits, masks);
    for (const m of [floatMasks, { data: Float32Array.from(masks.data), shape: SHAPE }]) {
      const got = instances.lossAndGrad(logits, m);
      expect(got.loss).toBe(expected.loss);
      expect(got.grad).toEqual(expected.grad);
    }
  });

  it("layout 'nhwc' takes [M, H, W, 1]: the same data, the same loss and gradient", () => {
    const [instances] = pair('mean');
    const nhwc = [M, 16, 16, 1];
    const expected = instances.lossAndGrad(logits, masks);
    const got = instances.lossAndGrad({ data: logits.data, shape: nhwc }, { data: masks.data, shape: nhwc }, { layout: 'nhwc' });
    expect(Math.abs(got.loss - expected.loss) / expected.loss).toBeLessThan(1e-12);
    expect(maxRelError(got.grad, expected.grad)).toBeLessThan(1e-10);
    const fromOption = keep(instanceMaskLoss({ ...NET, dtype: 'float64', layout: 'nhwc' }));
    expect(Math.abs(fromOption.loss({ data: logits.data, shape: nhwc }, { data: masks.data, shape: nhwc }) - expected.loss) / expected.loss).toBeLessThan(1e-12);
  });

  it('takes Tensors: a uint8 or float Tensor of masks, a Tensor gradient on the logits device', () => {
    const [instances] = pair('mean');
    const expected = instances.lossAndGrad(logits, masks, { weights: [1, 2, 3] });
    using l = Tensor.from(logits.data, SHAPE, { device: 'cpu' });
    using m = Tensor.from(masks.data, SHAPE, { device: 'cpu' });
    using mf = Tensor.from(floatMasks.data, SHAPE, { device: 'cpu' });
    const got = instances.lossAndGrad(l, m, { weights: [1, 2, 3] });
    using grad = got.grad;
    expect(got.loss).toBe(expected.loss);
    expect(grad.shape).toEqual(SHAPE);
    expect(grad.dtype).toBe('float64');
    expect(grad.toArray()).toEqual(expected.grad);
    expect(instances.loss(l, mf, { weights: [1, 2, 3] })).toBe(expected.loss);
    // A host logits array with Tensor masks, and the other way round.
    expect(instances.loss(logits, m, { weights: [1, 2, 3] })).toBe(expected.loss);
    expect(instances.loss(l, masks, { weights: [1, 2, 3] })).toBe(expected.loss);
  });

  it('lossAsync and lossAndGradAsync give what the synchronous calls give', async () => {
    const [instances] = pair('sum');
    const call = { weights: [3, 1, 2] };
    const sync = instances.lossAndGrad(logits, masks, call);
    const pending = instances.lossAndGradAsync(logits, masks, call);
    expect(pending).toBeInstanceOf(Promise);
    const [both, value] = await Promise.all([pending, instances.lossAsync(logits, masks, call)]);
    expect(both.loss).toBe(sync.loss);
    expect(both.grad).toEqual(sync.grad);
    expect(value).toBe(sync.loss);
  });
});

describe('the helper', () => {
  it('builds a 1-channel PerceptualLoss with every other option as given, available as .perceptual', () => {
    const instances = keep(instanceMaskLoss({ ...NET, reduction: 'sum', criterion: 'smooth_l1', seed: 7 }));
    expect(instances.perceptual.options).toMatchObject({ inChannels: 1, reduction: 'sum', criterion: 'smooth_l1', seed: 7, arch: [4, 'M', 8] });
    expect(keep(instanceMaskLoss()).perceptual.options).toMatchObject({ inChannels: 1, arch: 'vgg19', spatialDims: 2 });
  });

  it('dispose() and `using` free the underlying loss', () => {
    const { logits, masks } = data(SHAPE, 4);
    let escaped: InstanceMaskLoss;
    {
      using instances = instanceMaskLoss(NET);
      escaped = instances;
      expect(instances.loss(logits, masks)).toBeGreaterThan(0);
    }
    expect(() => escaped.loss(logits, masks)).toThrow(/^This PerceptualLoss has been disposed\.$/);
  });
});

describe('volumes', () => {
  const shape = [2, 1, 8, 8, 8];
  const { logits, masks, floatMasks } = data(shape, 5);
  const p = { data: sigmoid(logits.data), shape };

  it('spatialDims 3 takes [M, 1, D, H, W]: PerceptualLoss on sigmoid(maskLogits), the gradient through p(1 - p)', () => {
    const [instances, plain] = pair('mean', { spatialDims: 3 });
    expect(instances.perceptual.options.spatialDims).toBe(3);
    const expected = plain.lossAndGrad(p, floatMasks);
    const got = instances.lossAndGrad(logits, masks);
    expect(Math.abs(got.loss - expected.loss) / expected.loss).toBeLessThan(1e-12);
    expect(maxRelError(got.grad, throughSigmoid(expected.grad, p.data))).toBeLessThan(1e-10);
  });

  it("with weights, and in 'ndhwc' [M, D, H, W, 1]", () => {
    const [instances] = pair('none', { spatialDims: 3 });
    const [, plain] = pair('none', { spatialDims: 3 });
    const t = plain.loss(p, floatMasks);
    const last = [2, 8, 8, 8, 1];
    const got = instances.loss({ data: logits.data, shape: last }, { data: masks.data, shape: last }, { layout: 'ndhwc', weights: [2, 0.5] });
    expect(maxRelError(got, [2 * t[0], 0.5 * t[1]])).toBeLessThan(1e-12);
  });
});
