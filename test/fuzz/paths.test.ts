// Property-based fuzzing of valid cases (test/helpers/fuzz.ts says how to replay a failure): random
// tiny configurations and inputs give results equal to an independent float64 implementation of
// docs/api.md in JavaScript (test/helpers/js-reference.ts), and bit-identical results through every
// other path to the same value: Tensor or host array, nchw or transposed nhwc, async or sync,
// prepared or plain target, Float64Array or Float32Array; for images and for volumes (5-D inputs,
// spatialDims: 3). Gradients where pred equals the target or the features are zero close the file.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, type PerceptualLossOptions } from '../../lib/index';
import {
  comparable,
  count,
  counted,
  dataArb,
  describeTotals,
  extrasArb,
  expectFeatures,
  expectGrad,
  expectLoss,
  expectSameBits,
  expectTerms,
  fromNchw,
  FUZZ_RUNS,
  fuzzParams,
  gradComparable,
  materialize,
  nchwShape,
  otherLayout,
  setupFuzzFile,
  shapeIn,
  targetFor,
  tinyConfigArb,
  tinyVolumeConfigArb,
  toNchw64,
  toOtherLayout,
  type Expectation,
  type TargetRelation,
  type TinyConfig,
} from '../helpers/fuzz';
import * as ref from '../helpers/js-reference';

setupFuzzFile();

const relationArb = fc.constantFrom<TargetRelation>('independent', 'independent', 'same', 'near', 'zeros');
const pathsArb = fc.record({ tensor: fc.boolean(), otherLayout: fc.boolean(), async: fc.boolean(), prepared: fc.boolean(), host64: fc.boolean(), features: fc.boolean() });

const pathCaseArb = fc
  .record({
    config: tinyConfigArb,
    n: fc.integer({ min: 1, max: 3 }),
    extraH: fc.nat(5),
    extraW: fc.nat(5),
    pred: dataArb,
    target: dataArb,
    relation: relationArb,
    paths: pathsArb,
  })
  .map(({ extraH, extraW, ...c }) => ({ ...c, extras: [extraH, extraW] }));

/** Volumes: [N, C, D, H, W] or [N, D, H, W, C], a few voxels per axis. */
const volumePathCaseArb = fc.record({
  config: tinyVolumeConfigArb,
  n: fc.integer({ min: 1, max: 2 }),
  extras: extrasArb(3, 3),
  pred: dataArb,
  target: dataArb,
  relation: relationArb,
  paths: pathsArb,
});

async function runPathCase(c: typeof volumePathCaseArb extends fc.Arbitrary<infer T> ? T : never): Promise<void> {
  const cfg: TinyConfig = c.config;
  const loss = new PerceptualLoss({ ...cfg.options, device: 'cpu' });
  const owned: Array<{ dispose(): void }> = [loss];
  try {
    const layout = cfg.layout;
    const C = cfg.js.inChannels;
    const shape = shapeIn(layout, c.n, C, c.extras.map((e) => cfg.minSize + e));
    const nchw = nchwShape(shape, layout);
    const p = materialize(c.pred, count(shape));
    const t = targetFor(p, c.relation, c.target);
    const pred = { data: p, shape };
    const target = { data: t, shape };
    const precise = comparable(cfg.dtype, [c.pred, c.target]);
    const e: Expectation = { dtype: cfg.dtype, js: cfg.js, convs: ref.convsOf(loss.stateDict()), precise };

    // The reference.
    const r = loss.lossAndGrad(pred, target);
    const expected = ref.lossAndGrad(cfg.js, e.convs, toNchw64(p, shape, layout), toNchw64(t, shape, layout));
    expectLoss(r.loss, expected, cfg.dtype, 'loss', precise);
    expectTerms(r.terms, expected, e);
    expect(r.grad).toBeInstanceOf(Float32Array);
    expectGrad(r.grad, fromNchw(expected.grad, nchw, layout), cfg.dtype, 'grad', gradComparable(cfg.dtype, cfg.js.criterion, precise));

    const sameLoss = (actual: unknown, what: string) => {
      if (typeof r.loss === 'number') expect(actual, what).toBe(r.loss);
      else expectSameBits(actual as Float32Array, r.loss, what);
    };
    // loss() is the loss of lossAndGrad().
    sameLoss(loss.loss(pred, target), 'loss()');

    if (c.paths.async) {
      const a = await loss.lossAndGradAsync(pred, target);
      sameLoss(a.loss, 'lossAndGradAsync().loss');
      expectSameBits(a.grad, r.grad, 'lossAndGradAsync().grad');
      expect(a.terms).toEqual(r.terms);
      sameLoss(await loss.lossAsync(pred, target), 'lossAsync()');
    }
    if (c.paths.tensor) {
      const tp = Tensor.from(p, shape, { device: 'cpu' });
      const tt = Tensor.from(t, shape, { device: 'cpu' });
      owned.push(tp, tt);
      const a = loss.lossAndGrad(tp, tt);
      owned.push(a.grad);
      sameLoss(a.loss, 'Tensor loss');
      expect(a.grad.shape).toEqual(shape);
      expectSameBits(a.grad.toArray(), r.grad, 'Tensor grad');
      sameLoss(loss.loss(tp, target), 'Tensor pred, host target');
      sameLoss(loss.loss(pred, tt), 'host pred, Tensor target');
    }
    if (c.paths.prepared) {
      const prepared = loss.prepareTarget(target);
      owned.push(prepared);
      const a = loss.lossAndGrad(pred, prepared);
      sameLoss(a.loss, 'prepared target loss');
      expectSameBits(a.grad, r.grad, 'prepared target grad');
      if (c.paths.async) sameLoss(await loss.lossAsync(pred, prepared), 'prepared target lossAsync');
    }
    if (c.paths.otherLayout) {
      // The same values transposed and read with the other layout, per call.
      const other = otherLayout(layout);
      const [movedP, otherShape] = toOtherLayout(p, shape, layout);
      const [movedT] = toOtherLayout(t, shape, layout);
      const a = loss.lossAndGrad({ data: movedP, shape: otherShape }, { data: movedT, shape: otherShape }, { layout: other });
      sameLoss(a.loss, `layout ${other}`);
      const [back] = toOtherLayout(a.grad, otherShape, other);
      expectSameBits(back, r.grad, `grad in layout ${other}, transposed back`);
    }
    if (c.paths.host64) {
      // Float64Array inputs of the same (float32) values: the same loss, results as float64 arrays;
      // rounded to float32 they are the results of the Float32Array inputs.
      const a = loss.lossAndGrad({ data: Float64Array.from(p), shape }, { data: Float64Array.from(t), shape });
      expect(a.grad).toBeInstanceOf(Float64Array);
      if (typeof r.loss === 'number') expect(a.loss).toBe(r.loss);
      else {
        expect(a.loss).toBeInstanceOf(Float64Array);
        expectSameBits(Float32Array.from(a.loss as Float64Array), r.loss, 'float64 per-sample loss, rounded');
      }
      expectSameBits(Float32Array.from(a.grad), r.grad, 'float64 grad, rounded');
      if (cfg.dtype === 'float64') expectGrad(a.grad, fromNchw(expected.grad, nchw, layout), 'float64', 'float64 grad');
    }
    if (c.paths.features) {
      const f = loss.features(pred);
      expectFeatures(f, toNchw64(p, shape, layout), layout, e);
      const tp = Tensor.from(p, shape, { device: 'cpu' });
      owned.push(tp);
      const viaTensor = loss.features(tp);
      const viaAsync = await loss.featuresAsync(pred);
      viaTensor.forEach((g, i) => {
        owned.push(g.data);
        expect(g.shape).toEqual(f[i].shape);
        expectSameBits(g.data.toArray(), f[i].data, `features[${g.name}] of a Tensor`);
        expectSameBits(viaAsync[i].data, f[i].data, `featuresAsync[${g.name}]`);
      });
    }
  } finally {
    for (const o of owned.reverse()) o.dispose();
  }
}

describe('valid cases', () => {
  it('equal the JavaScript reference and agree bit for bit across Tensor/host, layouts, async/sync, prepared/plain, float64/float32 arrays', async () => {
    await fc.assert(fc.asyncProperty(pathCaseArb, counted('paths', runPathCase)), fuzzParams(FUZZ_RUNS.paths));
  });

  it("volumes (spatialDims 3): equal the JavaScript reference and agree bit for bit across Tensor/host, 'ncdhw'/'ndhwc', async/sync, prepared/plain, float64/float32 arrays", async () => {
    await fc.assert(fc.asyncProperty(volumePathCaseArb, counted('pathsVolume', runPathCase)), fuzzParams(FUZZ_RUNS.pathsVolume));
  });
});

describe('gradients at zero difference', () => {
  const shape = [2, 2, 6, 6];
  const x = { data: materialize({ seed: 3, kind: 'randn', scale: 1 }, count(shape)), shape };
  const zero = { data: new Float32Array(count(shape)), shape };
  const configs = (['l1', 'l2', 'smooth_l1'] as const).flatMap((criterion) =>
    (['mean', 'sum', 'none'] as const).flatMap((reduction) => (['float32', 'float64'] as const).map((dtype) => ({ criterion, reduction, dtype }))),
  );
  const base: PerceptualLossOptions = { inChannels: 2, arch: [3, 'M', 4], layers: ['conv1_1', 'relu1_1', 'pool1', 'relu2_1'], styleWeight: 1, device: 'cpu' };

  it.each(configs)('pred == target gives loss 0 and an all-zero gradient ($criterion, $reduction, $dtype, style on)', ({ criterion, reduction, dtype }) => {
    const loss = new PerceptualLoss({ ...base, criterion, reduction, dtype });
    const r = loss.lossAndGrad(x, { data: x.data.slice(), shape });
    const values = typeof r.loss === 'number' ? [r.loss] : Array.from(r.loss);
    expect(values.every((v) => v === 0)).toBe(true);
    expect(r.grad.length).toBe(x.data.length);
    expect(Array.from(r.grad).every((v) => v === 0)).toBe(true);
    loss.dispose();
  });

  it.each(configs)('the Gram term at zero features (all-zero pred, all-zero target) is 0 with an all-zero gradient ($criterion, $reduction, $dtype)', ({ criterion, reduction, dtype }) => {
    const loss = new PerceptualLoss({ ...base, criterion, reduction, dtype, featureWeight: 0, styleWeight: 5 });
    const r = loss.lossAndGrad(zero, zero);
    const values = typeof r.loss === 'number' ? [r.loss] : Array.from(r.loss);
    expect(values.every((v) => v === 0)).toBe(true);
    expect(Array.from(r.grad).every((v) => v === 0)).toBe(true);
    loss.dispose();
  });

  it.each(configs)('an all-zero pred against a non-zero target gives a finite gradient equal to the reference ($criterion, $reduction, $dtype)', ({ criterion, reduction, dtype }) => {
    const loss = new PerceptualLoss({ ...base, criterion, reduction, dtype });
    const r = loss.lossAndGrad(zero, x);
    const js: ref.JsOptions = { inChannels: 2, arch: [3, 'M', 4], layers: base.layers as string[], layerWeights: [1, 1, 1, 1], criterion, featureWeight: 1, styleWeight: 1, reduction, pool: 'max' };
    const expected = ref.lossAndGrad(js, ref.convsOf(loss.stateDict()), toNchw64(zero.data, shape, 'nchw'), toNchw64(x.data, shape, 'nchw'));
    expectLoss(r.loss, expected, dtype);
    expectGrad(r.grad, expected.grad, dtype, 'grad', gradComparable(dtype, criterion, true));
    loss.dispose();
  });
});

// ================================================================== totals

describeTotals(['paths', 'pathsVolume']);
