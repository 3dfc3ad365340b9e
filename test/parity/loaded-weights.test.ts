// Parity with PyTorch for loaded weights: PerceptualLoss.load of a safetensors file whose biases
// are not 0 (seeded, of the size of the activations) against the PyTorch reference given the same
// state dict (reference/cases.py "stateDict"). The drawn networks of pytorch.test.ts all have zero
// biases, so only these cases compare the bias of every conv, and its gradient, with PyTorch.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, type PerceptualLossOptions, type Reduction } from '../../lib/index';
import { writeSafetensors } from '../../lib/safetensors';
import { randint, randn } from '../helpers/random';
import { relError, runReference, sha256OfFloat32, type RefCase, type RefResult } from '../helpers/reference';

interface Case {
  id: string;
  options: PerceptualLossOptions;
  /** In the layout of the options. */
  shape: [number, number, number, number];
  /** Standard deviation of the random biases. */
  biasStd: number;
  /** A segmentation case: classes = inChannels, with some pixels ignored (255). */
  segmentation?: boolean;
}

const CASES: Case[] = [
  { id: 'bias-vgg19-default', options: { inChannels: 3 }, shape: [2, 3, 32, 32], biasStd: 0.1 },
  { id: 'bias-vgg11-l1-sum-nhwc', options: { inChannels: 3, arch: 'vgg11', criterion: 'l1', reduction: 'sum', layout: 'nhwc' }, shape: [2, 16, 20, 3], biasStd: 0.5 },
  {
    id: 'bias-custom-avg-style-none',
    options: { inChannels: 2, arch: [8, 8, 'M', 16, 'M', 24], pool: 'avg', layers: ['conv1_2', 'pool2', 'relu3_1'], styleWeight: 2, reduction: 'none' },
    shape: [2, 2, 12, 15],
    biasStd: 1,
  },
  { id: 'bias-f64-vgg13-smoothl1', options: { inChannels: 3, arch: 'vgg13', dtype: 'float64', criterion: 'smooth_l1' }, shape: [1, 3, 16, 16], biasStd: 0.1 },
  { id: 'bias-seg-5', options: { inChannels: 5, arch: 'vgg11', layers: ['relu1_1', 'relu2_1', 'relu3_2'] }, shape: [2, 5, 16, 16], biasStd: 0.2, segmentation: true },
];

const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** The case's network as drawn, with every bias replaced by seeded N(0, biasStd) values. */
function biasedState(c: Case, index: number): Record<string, { shape: number[]; data: Float32Array }> {
  const drawn = new PerceptualLoss(c.options);
  const state = Object.fromEntries(
    Object.entries(drawn.stateDict()).map(([name, t], k) => [
      name,
      { shape: t.shape, data: name.endsWith('.bias') ? randn(t.data.length, 7000 + 100 * index + k).map((v) => c.biasStd * v) : t.data },
    ]),
  );
  drawn.dispose();
  return state;
}

function inputsOf(c: Case, index: number) {
  const pred = randn(count(c.shape), 8000 + index);
  const target = randn(count(c.shape), 9000 + index);
  let labels: Int32Array | undefined;
  if (c.segmentation) {
    const [n, , h, w] = c.shape;
    labels = randint(n * h * w, 0, c.options.inChannels, 9500 + index);
    for (const s of randint(20, 0, labels.length, 9600 + index)) labels[s] = 255;
  }
  return { pred, target, labels };
}

/**
 * Within `tolerance` of PyTorch; a float32 result may miss 1e-5 only as pytorch.test.ts allows
 * (its FALLBACK_CAP): below 1e-4, and no farther from PyTorch's float64 answer than PyTorch's own
 * float32 is.
 */
function expectClose(what: string, f64: boolean, actual: ArrayLike<number>, torch: ArrayLike<number>, exact: () => ArrayLike<number>): void {
  const tolerance = f64 ? 1e-10 : 1e-5;
  const error = relError(actual, torch);
  if (f64 || error < tolerance) {
    expect(error, what).toBeLessThan(tolerance);
    return;
  }
  expect(error, `${what} against PyTorch float32 (fallback cap)`).toBeLessThan(1e-4);
  expect(relError(actual, exact()), `${what}: no closer to PyTorch float64 than PyTorch float32 is`).toBeLessThanOrEqual(relError(torch, exact()));
}

describe('loaded weights with non-zero biases, against PyTorch', () => {
  let dir: string;
  let reference: Map<string, RefResult>;
  const states = CASES.map((c, i) => biasedState(c, i));

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-loaded-weights-'));
    const cases: RefCase[] = CASES.flatMap((c, i) => {
      const { pred, target, labels } = inputsOf(c, i);
      const base = {
        options: c.options as RefCase['options'],
        shape: c.shape,
        pred,
        target,
        labels,
        stateDict: states[i],
      };
      const own: RefCase = { ...base, id: c.id, outputs: ['weights', 'loss', 'grad'] };
      const exact: RefCase = { ...base, id: `${c.id}.exact`, options: { ...base.options, dtype: 'float64' }, outputs: ['loss', 'grad'] };
      return c.options.dtype === 'float64' ? [own] : [own, exact];
    });
    reference = await runReference(cases);
  });

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("gives every conv of every case biases far from 0: their root mean square at least half the case's std", () => {
    CASES.forEach((c, i) => {
      const biases = Object.entries(states[i]).filter(([name]) => name.endsWith('.bias'));
      expect(biases.length).toBeGreaterThan(0);
      for (const [name, t] of biases) {
        const rms = Math.sqrt(t.data.reduce((sum, v) => sum + v * v, 0) / t.data.length);
        expect(rms, `${c.id} ${name}`).toBeGreaterThanOrEqual(c.biasStd / 2);
      }
    });
  });

  CASES.forEach((c, index) => {
    const f64 = c.options.dtype === 'float64';

    describe(c.id, () => {
      let loss: PerceptualLoss<Reduction>;
      beforeAll(() => {
        const file = path.join(dir, `${c.id}.safetensors`);
        writeSafetensors(file, Object.entries(states[index]).map(([name, t]) => ({ name, ...t })), { format: 'pt' });
        loss = PerceptualLoss.load(file, c.options);
      });
      afterAll(() => loss.dispose());

      it('loads the file into the loss and the reference alike: the same weights, bit for bit', () => {
        const ref = reference.get(c.id)!;
        const loaded = loss.stateDict();
        expect(Object.keys(loaded)).toEqual(ref.stateDictNames);
        expect(sha256OfFloat32(Object.values(loaded).map((t) => t.data))).toBe(sha256OfFloat32(Object.values(states[index]).map((t) => t.data)));
        expect(ref.weightsSha256).toBe(sha256OfFloat32(Object.values(states[index]).map((t) => t.data)));
      });

      it(`matches PyTorch's loss and gradient within ${f64 ? 1e-10 : 1e-5}`, () => {
        const ref = reference.get(c.id)!;
        const exact = () => reference.get(`${c.id}.exact`)!;
        const { pred, target, labels } = inputsOf(c, index);
        const data = (a: Float32Array) => (f64 ? Float64Array.from(a) : a);
        const result = c.segmentation
          ? loss.lossAndGradSegmentation({ data: data(pred), shape: c.shape }, { data: labels!, shape: [c.shape[0], c.shape[2], c.shape[3]] })
          : loss.lossAndGrad({ data: data(pred), shape: c.shape }, { data: data(target), shape: c.shape });
        if (typeof ref.loss === 'number') {
          expect(typeof result.loss).toBe('number');
          expectClose('loss', f64, [result.loss as number], [ref.loss], () => [exact().loss as number]);
        } else {
          expect(result.loss).toBeInstanceOf(Float32Array);
          expectClose('loss', f64, result.loss as Float32Array, ref.loss!, () => exact().loss as Float64Array);
        }
        expectClose('grad', f64, result.grad, ref.grad!, () => exact().grad!);
      });
    });
  });
});
