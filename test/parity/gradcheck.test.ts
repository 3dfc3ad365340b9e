// The analytic gradient (lossAndGrad) against central finite differences, in float64, over every
// criterion, style on and off, each reduction, max and avg pooling, NHWC and segmentation.
//
// For each case ~20 seeded random coordinates i are checked:
//   numeric_i = (f(x + h e_i) - f(x - h e_i)) / 2h,  h = 1e-6
//   |analytic_i - numeric_i| <= 1e-6 * max(|analytic_i|, |numeric_i|) + floor
// where floor = 10 * eps * |f(x)| / h is the rounding error of the difference quotient itself
// (f is computed in float64 with eps = 2^-52). The truncation error, O(h^2), is far below it.
// Inputs are drawn from randn, so no checked coordinate sits within h of a ReLU, max-pool or
// L1 kink.
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, setNumThreads, type Criterion, type PerceptualLossOptions, type Reduction } from '../../lib/index';
import { randint, randn } from '../helpers/random';

const H = 1e-6;
const REL = 1e-6;
const COORDINATES = 20;

/** A tiny network tapped at a conv (pre-activation), a ReLU and a pool, with unequal weights. */
const BASE: PerceptualLossOptions = {
  inChannels: 2,
  arch: [4, 'M', 6],
  layers: ['conv1_1', 'relu1_1', 'pool1', 'conv2_1', 'relu2_1'],
  layerWeights: [0.5, 1, 2, 0.25, 1.5],
  dtype: 'float64',
};

interface Case {
  id: string;
  options: Partial<PerceptualLossOptions>;
  /** In the layout of the options. */
  shape: number[];
  /** Segmentation: classes = inChannels; `ignored` pixels carry ignoreIndex 255. */
  ignored?: number;
}

const NCHW = [2, 2, 8, 8];
const NHWC = [2, 8, 8, 2];

const CASES: Case[] = [];
for (const criterion of ['l1', 'l2', 'smooth_l1'] as Criterion[]) {
  for (const styleWeight of [0, 0.7]) {
    for (const reduction of ['mean', 'sum', 'none'] as Reduction[]) {
      CASES.push({ id: `${criterion} style=${styleWeight} ${reduction} max`, options: { criterion, styleWeight, reduction }, shape: NCHW });
    }
  }
}
CASES.push(
  { id: 'l2 style avg pool', options: { pool: 'avg', styleWeight: 0.7 }, shape: NCHW },
  { id: 'l1 none avg pool', options: { pool: 'avg', criterion: 'l1', reduction: 'none' }, shape: NCHW },
  { id: 'smooth_l1 style sum avg pool', options: { pool: 'avg', criterion: 'smooth_l1', styleWeight: 2, reduction: 'sum' }, shape: NCHW },
  { id: 'style only (featureWeight 0)', options: { featureWeight: 0, styleWeight: 1 }, shape: NCHW },
  { id: 'nhwc l2 style', options: { layout: 'nhwc', styleWeight: 0.7 }, shape: NHWC },
  { id: 'nhwc smooth_l1 none avg', options: { layout: 'nhwc', criterion: 'smooth_l1', reduction: 'none', pool: 'avg' }, shape: NHWC },
  { id: 'odd size 9x7 max', options: { styleWeight: 0.3, criterion: 'l1' }, shape: [1, 2, 9, 7] },
  { id: 'odd size 7x9 avg', options: { pool: 'avg', styleWeight: 0.3, criterion: 'smooth_l1' }, shape: [1, 2, 7, 9] },
  { id: 'segmentation l2 mean', options: { inChannels: 3 }, shape: [2, 3, 8, 8], ignored: 12 },
  { id: 'segmentation l1 style none', options: { inChannels: 3, criterion: 'l1', styleWeight: 0.7, reduction: 'none' }, shape: [2, 3, 8, 8], ignored: 12 },
  { id: 'segmentation smooth_l1 sum avg', options: { inChannels: 3, criterion: 'smooth_l1', reduction: 'sum', pool: 'avg' }, shape: [2, 3, 8, 8], ignored: 12 },
  { id: 'segmentation nhwc style', options: { inChannels: 3, layout: 'nhwc', styleWeight: 0.7 }, shape: [2, 8, 8, 3], ignored: 12 },
);

const total = (v: number | Float32Array | Float64Array) => (typeof v === 'number' ? v : Array.from(v).reduce((a, b) => a + b, 0));

/** Distinct coordinates, seeded. */
function coordinates(n: number, seed: number): number[] {
  const picked = new Set<number>();
  for (let s = seed; picked.size < Math.min(COORDINATES, n); s++) for (const i of randint(COORDINATES, 0, n, s)) if (picked.size < COORDINATES) picked.add(i);
  return [...picked];
}

interface Mismatch {
  index: number;
  analytic: number;
  numeric: number;
}

/** The coordinates where analytic and numeric gradients disagree beyond tolerance. */
function check(f: (x: Float64Array) => number, x: Float64Array, grad: Float64Array, indices: number[]): Mismatch[] {
  const floor = (10 * Number.EPSILON * Math.abs(f(x))) / H;
  const bad: Mismatch[] = [];
  for (const index of indices) {
    const plus = x.slice();
    plus[index] += H;
    const minus = x.slice();
    minus[index] -= H;
    const numeric = (f(plus) - f(minus)) / (2 * H);
    const analytic = grad[index];
    if (!(Math.abs(analytic - numeric) <= REL * Math.max(Math.abs(analytic), Math.abs(numeric)) + floor)) bad.push({ index, analytic, numeric });
  }
  return bad;
}

// Tiny tensors: one intra-op thread avoids thread hand-offs, which on a busy 2-core CI machine
// made this file ~50x slower (thread count does not change the values checked here).
beforeAll(() => setNumThreads(1));

describe('gradient = central finite differences (float64, h = 1e-6)', () => {
  CASES.forEach((c, n) => {
    it(c.id, () => {
      const loss = new PerceptualLoss({ ...BASE, ...c.options });
      const size = c.shape.reduce((a, b) => a * b, 1);
      const x = Float64Array.from(randn(size, 500 + n));
      const shape = c.shape;

      let f: (v: Float64Array) => number;
      let grad: Float64Array;
      let indices = coordinates(size, 700 + n);
      if (c.ignored === undefined) {
        const target = { data: Float64Array.from(randn(size, 600 + n)), shape };
        f = (v) => total(loss.loss({ data: v, shape }, target));
        const result = loss.lossAndGrad({ data: x, shape }, target);
        expect(total(result.loss)).toBe(f(x));
        grad = result.grad;
      } else {
        const nhwc = c.options.layout === 'nhwc';
        const classes = nhwc ? shape[3] : shape[1];
        const [batch, h, w] = nhwc ? shape.slice(0, 3) : [shape[0], shape[2], shape[3]];
        const pixels = batch * h * w;
        const labels = randint(pixels, 0, classes, 800 + n);
        const ignored = coordinates(pixels, 900 + n).slice(0, c.ignored);
        for (const p of ignored) labels[p] = 255;
        const y = { data: labels, shape: [batch, h, w] };
        f = (v) => total(loss.lossAndGradSegmentation({ data: v, shape }, y).loss);
        grad = loss.lossAndGradSegmentation({ data: x, shape }, y).grad;
        // The logits of an ignored pixel do not touch the loss: their gradient is exactly 0.
        const logitIndex = (p: number, k: number) => {
          const [b, rest] = [Math.floor(p / (h * w)), p % (h * w)];
          return nhwc ? p * classes + k : (b * classes + k) * h * w + rest;
        };
        const ignoredLogits = ignored.flatMap((p) => Array.from({ length: classes }, (_, k) => logitIndex(p, k)));
        expect(ignoredLogits.map((i) => Math.abs(grad[i]))).toEqual(ignoredLogits.map(() => 0));
        indices = [...indices, ...ignoredLogits.slice(0, 3)];
      }
      expect(grad).toBeInstanceOf(Float64Array);
      expect(grad.length).toBe(size);
      expect(grad.some((g) => g !== 0)).toBe(true);
      expect(check(f, x, grad, indices)).toEqual([]);
    });
  });
});
