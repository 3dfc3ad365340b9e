// Property-based fuzzing of checkFinite: false (test/helpers/fuzz.ts says how to replay a failure):
// NaN and Inf in pred or target propagate to the loss and the gradient as PyTorch's rules say
// (test/helpers/js-reference.ts), per sample, through every path; in images and in volumes.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor } from '../../lib/index';
import {
  allFinite,
  bump,
  comparable,
  count,
  counted,
  dataArb,
  describeTotals,
  expectClose,
  expectCloseNorm,
  extrasArb,
  FLOAT32_MAGNITUDE,
  fromNchw,
  FUZZ_RUNS,
  fuzzParams,
  gradComparable,
  materialize,
  nchwShape,
  setupFuzzFile,
  shapeIn,
  tinyConfigArb,
  tinyVolumeConfigArb,
  tolerance,
  toNchw64,
} from '../helpers/fuzz';
import * as ref from '../helpers/js-reference';

setupFuzzFile();

const nonFiniteFields = {
  pred: dataArb,
  target: dataArb,
  poison: fc.constantFrom('pred', 'target'),
  value: fc.constantFrom(NaN, Infinity, -Infinity),
  sample: fc.nat(2),
  at: fc.nat(1_000_000),
  method: fc.constantFrom('lossAndGrad', 'lossAndGradAsync', 'loss', 'features', 'tensor'),
};

const nonFiniteCaseArb = fc
  .record({ config: tinyConfigArb, n: fc.integer({ min: 1, max: 3 }), extra: fc.nat(3), ...nonFiniteFields })
  .map(({ extra, ...c }) => ({ ...c, extras: [extra, extra] }));

/** Volumes: a NaN or Inf voxel in [N, C, D, H, W] or [N, D, H, W, C]. */
const volumeNonFiniteCaseArb = fc.record({ config: tinyVolumeConfigArb, n: fc.integer({ min: 1, max: 3 }), extras: extrasArb(3, 2), ...nonFiniteFields });

async function runNonFiniteCase(c: typeof volumeNonFiniteCaseArb extends fc.Arbitrary<infer T> ? T : never): Promise<void> {
  const cfg = c.config;
  const loss = new PerceptualLoss({ ...cfg.options, device: 'cpu', checkFinite: false });
  const owned: Array<{ dispose(): void }> = [loss];
  try {
    const layout = cfg.layout;
    const C = cfg.js.inChannels;
    const shape = shapeIn(layout, c.n, C, c.extras.map((e) => cfg.minSize + e));
    const nchw = nchwShape(shape, layout);
    const p = materialize(c.pred, count(shape));
    const t = materialize(c.target, count(shape));
    const per = count(shape) / c.n;
    const sample = c.sample % c.n;
    const poisoned = c.poison === 'pred' ? p : t;
    poisoned[sample * per + (c.at % per)] = c.value;
    const pred = { data: p, shape };
    const target = { data: t, shape };
    const convs = ref.convsOf(loss.stateDict());
    const expected = ref.lossAndGrad(cfg.js, convs, toNchw64(p, shape, layout), toNchw64(t, shape, layout));
    const nan = Number.isNaN(c.value);
    const active = cfg.js.featureWeight > 0 || cfg.js.styleWeight > 0;
    // Underflow (float32 denormal inputs) can turn Inf * tiny into NaN where the reference keeps Inf.
    const precise = comparable(cfg.dtype, [c.pred, c.target]);

    if (c.method === 'features') {
      if (c.poison !== 'pred') return;
      // NaN reaches every tap (PyTorch's ReLU and max pool propagate it).
      const f = loss.features(pred);
      const want = ref.features(cfg.js, convs, toNchw64(p, shape, layout));
      f.forEach((g, i) => {
        const w = fromNchw(want[i].data, want[i].shape, layout);
        if (precise) expect(Array.from(g.data).map(Number.isNaN), `NaN positions of features[${g.name}]`).toEqual(Array.from(w).map(Number.isNaN));
      });
      return;
    }
    let result: { loss: number | Float32Array; grad: Float32Array | Float64Array };
    if (c.method === 'loss') result = { loss: loss.loss(pred, target), grad: new Float32Array(0) };
    else if (c.method === 'lossAndGradAsync') result = (await loss.lossAndGradAsync(pred, target));
    else if (c.method === 'tensor') {
      const tp = Tensor.from(p, shape, { device: 'cpu' });
      const tt = Tensor.from(t, shape, { device: 'cpu' });
      owned.push(tp, tt);
      const a = loss.lossAndGrad(tp, tt);
      owned.push(a.grad);
      result = { loss: a.loss, grad: a.grad.toArray() };
    } else result = loss.lossAndGrad(pred, target);

    // The loss: NaN where the reference (PyTorch's rules) gives NaN; other samples are untouched.
    const losses = typeof result.loss === 'number' ? [result.loss] : Array.from(result.loss);
    const want = typeof expected.loss === 'number' ? [expected.loss] : expected.loss;
    // (A NaN in a row or column that a 2x2 pool drops does not reach the loss, in PyTorch either.)
    if (nan && active) bump(nonFiniteStats, Number.isNaN(losses[typeof result.loss === 'number' ? 0 : sample]) ? 'nan loss' : 'finite loss');
    losses.forEach((v, i) => {
      if (!precise) return;
      if (Number.isNaN(want[i])) expect(Number.isNaN(v), `loss[${i}] is NaN like the reference`).toBe(true);
      else if (!Number.isFinite(want[i])) expect(v, `loss[${i}]`).toBe(want[i]);
      else {
        const magnitude = typeof expected.magnitude === 'number' ? expected.magnitude : expected.magnitude[i];
        const tol = tolerance(cfg.dtype, result.loss);
        expectClose(v, want[i], tol.loss, tol.atol + (cfg.dtype === 'float32' ? FLOAT32_MAGNITUDE * magnitude : 0), `loss[${i}]`);
      }
    });
    if (c.method === 'loss') return;
    // The gradient of every sample that holds no non-finite value is finite and equals the reference.
    const g = fromNchw(expected.grad, nchw, layout);
    for (let s = 0; s < c.n; s++) {
      if (s === sample) continue;
      const part = result.grad.subarray(s * per, (s + 1) * per);
      expect(allFinite(part), `grad of clean sample ${s} is finite`).toBe(true);
      if (!gradComparable(cfg.dtype, cfg.js.criterion, precise)) continue;
      const tol = tolerance(cfg.dtype, result.grad);
      expectCloseNorm(part, g.subarray(s * per, (s + 1) * per), tol.grad, tol.gradAtol, `grad of clean sample ${s}`);
    }
    // The poisoned sample: non-finite exactly where the reference is.
    if (!precise) return;
    const mine = Array.from(result.grad.subarray(sample * per, (sample + 1) * per)).map((v) => Number.isFinite(v));
    const theirs = Array.from(g.subarray(sample * per, (sample + 1) * per)).map((v) => Number.isFinite(v));
    expect(mine, 'finite positions of the poisoned sample').toEqual(theirs);
  } finally {
    for (const o of owned.reverse()) o.dispose();
  }
}

const nonFiniteStats = new Map<string, number>();

describe('checkFinite: false', () => {
  it('lets NaN and Inf propagate as PyTorch does, per sample, through every path', async () => {
    await fc.assert(fc.asyncProperty(nonFiniteCaseArb, counted('nonFinite', runNonFiniteCase)), fuzzParams(FUZZ_RUNS.nonFinite));
    // Not vacuous: most NaN inputs gave a NaN loss.
    const nanLoss = nonFiniteStats.get('nan loss') ?? 0;
    expect(nanLoss).toBeGreaterThan(2 * (nonFiniteStats.get('finite loss') ?? 0));
  });

  it('volumes (spatialDims 3): lets NaN and Inf propagate as PyTorch does, per volume, through every path', async () => {
    nonFiniteStats.clear();
    await fc.assert(fc.asyncProperty(volumeNonFiniteCaseArb, counted('nonFiniteVolume', runNonFiniteCase)), fuzzParams(FUZZ_RUNS.nonFiniteVolume));
    const nanLoss = nonFiniteStats.get('nan loss') ?? 0;
    expect(nanLoss).toBeGreaterThan(2 * (nonFiniteStats.get('finite loss') ?? 0));
  });
});

// ================================================================== totals

describeTotals(['nonFinite', 'nonFiniteVolume']);
