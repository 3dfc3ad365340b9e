// Random valid cases, drawn with the fuzzing's seed (test/helpers/fuzz.ts), agree with PyTorch
// (reference/cases.py): loss and gradient, plain and segmentation, float32 and float64; for images,
// for volumes (spatialDims 3: plain, segmentation with labels [N, D, H, W], voxel masks) and for
// instance masks (weighted and not, images and volumes). One reference process serves every case:
// importing torch is slow.
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { instanceMaskLoss, PerceptualLoss } from '../../lib/index';
import {
  allFinite,
  count,
  dataArb,
  describeTotals,
  extrasArb,
  FUZZ_SEED,
  materialize,
  setupFuzzFile,
  shapeIn,
  targetFor,
  tinyConfigArb,
  tinyVolumeConfigArb,
  type DataSpec,
  type Dtype,
  type TargetRelation,
  type TinyConfig,
} from '../helpers/fuzz';
import { mulberry32 as mulberry } from '../helpers/random';
import { relError, relErrorScalar, runReference, type RefCase, type RefResult } from '../helpers/reference';

setupFuzzFile();

type Group = 'images' | 'volumes' | 'instances';
/** The data of a plain or segmentation case. */
interface DataDraw {
  pred: DataSpec;
  target: DataSpec;
  relation: TargetRelation;
  labelsSeed: number;
  ignoreIndex: number;
}

interface Native {
  group: Group;
  loss: number | Float32Array | Float64Array;
  grad: Float32Array | Float64Array;
  dtype: Dtype;
}

describe('PyTorch (reference/cases.py)', () => {
  const CASES = 40;
  const VOLUME_CASES = 12;
  const INSTANCE_CASES = 8;
  const dataFields = {
    pred: dataArb.filter((d) => d.kind !== 'denormal'),
    target: dataArb.filter((d) => d.kind !== 'denormal'),
    relation: fc.constantFrom<TargetRelation>('independent', 'near', 'same'),
    labelsSeed: fc.nat(),
    ignoreIndex: fc.constantFrom(255, -1, 0),
  };
  const refCaseArb = fc.record({
    config: tinyConfigArb,
    n: fc.integer({ min: 1, max: 2 }),
    extraH: fc.nat(4),
    extraW: fc.nat(4),
    ...dataFields,
    segmentation: fc.boolean(),
  });
  /** Volumes: plain, segmentation or with a voxel mask, a few voxels per axis. */
  const volumeCaseArb = fc.record({
    config: tinyVolumeConfigArb,
    n: fc.integer({ min: 1, max: 2 }),
    extras: extrasArb(3, 2),
    ...dataFields,
    kind: fc.constantFrom('plain', 'segmentation', 'mask'),
    maskSeed: fc.nat(),
  });
  /** Instance masks: M logits of one channel, binary masks, weights (zeros included) or none. */
  const instanceCaseArb = fc.record({
    config: fc.oneof(tinyConfigArb, tinyVolumeConfigArb),
    m: fc.integer({ min: 1, max: 3 }),
    extras: extrasArb(3, 2),
    logits: dataArb.filter((d) => d.kind !== 'denormal').map((d) => ({ ...d, scale: Math.min(d.scale, 1) })),
    masksSeed: fc.nat(),
    weights: fc.option(fc.array(fc.oneof(fc.constant(0), fc.double({ min: 0.1, max: 5, noNaN: true })), { minLength: 3, maxLength: 3 }), { freq: 3 }),
  });

  const natives = new Map<string, Native>();
  const cases: RefCase[] = [];
  let results: Map<string, RefResult>;
  // float64 configurations get Float64Array inputs of the same values, so results stay float64.
  const arr = (cfg: TinyConfig, a: Float32Array) => (cfg.dtype === 'float64' ? Float64Array.from(a) : a);

  /** A plain or segmentation case (a voxel mask with `mask`), run here and queued for the reference. */
  function perceptualCase(group: Group, id: string, cfg: TinyConfig, n: number, spatial: number[], s: DataDraw, kind: string, maskSeed = 0): void {
    const C = cfg.js.inChannels;
    const shape = shapeIn(cfg.layout, n, C, spatial);
    const labelShape = [n, ...spatial];
    // Logits of at most unit scale: a saturated softmax makes its gradient ill-conditioned
    // (both implementations are right only to a few digits there).
    const segmentation = kind === 'segmentation';
    const pred = materialize(segmentation ? { ...s.pred, scale: Math.min(s.pred.scale, 1) } : s.pred, count(shape));
    const target = targetFor(pred, s.relation, s.target);
    using loss = new PerceptualLoss({ ...cfg.options, device: 'cpu' });
    let labels: Int32Array | undefined;
    let mask: Float32Array | undefined;
    if (segmentation) {
      const rand = mulberry(s.labelsSeed);
      labels = Int32Array.from({ length: count(labelShape) }, () => (rand() < 0.2 ? s.ignoreIndex : Math.floor(rand() * C)));
      const r = loss.lossAndGradSegmentation({ data: arr(cfg, pred), shape }, { data: labels, shape: labelShape }, { ignoreIndex: s.ignoreIndex });
      natives.set(id, { group, loss: r.loss, grad: r.grad, dtype: cfg.dtype });
    } else {
      if (kind === 'mask') {
        // One value per voxel: 0, 1 or a weight in between.
        const rand = mulberry(maskSeed);
        mask = Float32Array.from({ length: count(labelShape) }, () => (rand() < 0.3 ? 0 : rand() < 0.5 ? 1 : rand()));
      }
      const r = loss.lossAndGrad({ data: arr(cfg, pred), shape }, { data: arr(cfg, target), shape }, mask ? { mask: { data: mask, shape: labelShape } } : undefined);
      natives.set(id, { group, loss: r.loss, grad: r.grad, dtype: cfg.dtype });
    }
    cases.push({
      id,
      // The user's options: the reference derives the per-tap weights and defaults itself.
      options: cfg.options as RefCase['options'],
      shape,
      pred,
      target,
      labels,
      mask,
      ignoreIndex: segmentation ? s.ignoreIndex : undefined,
      outputs: ['loss', 'grad'] as const,
    });
  }

  beforeAll(async () => {
    fc.sample(refCaseArb, { seed: FUZZ_SEED + 1, numRuns: CASES }).forEach((s, i) =>
      perceptualCase('images', `fuzz-${i}`, s.config, s.n, [s.config.minSize + s.extraH, s.config.minSize + s.extraW], s, s.segmentation ? 'segmentation' : 'plain'),
    );
    fc.sample(volumeCaseArb, { seed: FUZZ_SEED + 2, numRuns: VOLUME_CASES }).forEach((s, i) =>
      perceptualCase('volumes', `volume-${i}`, s.config, s.n, s.extras.map((e) => s.config.minSize + e), s, s.kind, s.maskSeed),
    );
    fc.sample(instanceCaseArb, { seed: FUZZ_SEED + 3, numRuns: INSTANCE_CASES }).forEach((s, i) => {
      const cfg = s.config;
      const { inChannels: _, ...options } = cfg.options;
      const spatial = s.extras.slice(3 - cfg.spatialDims).map((e) => cfg.minSize + e);
      const shape = shapeIn(cfg.layout, s.m, 1, spatial);
      const logits = materialize(s.logits, count(shape));
      const rand = mulberry(s.masksSeed);
      const masks = Float32Array.from({ length: logits.length }, () => (rand() < 0.5 ? 0 : 1));
      // Not all 0: that is refused.
      const drawn = s.weights?.slice(0, s.m);
      const weights = drawn && !drawn.some((w) => w !== 0) ? drawn.map((_, k) => k + 1) : drawn;
      using instances = instanceMaskLoss({ ...options, device: 'cpu' });
      const r = instances.lossAndGrad({ data: arr(cfg, logits), shape }, { data: Uint8Array.from(masks), shape }, weights ? { weights } : undefined);
      const id = `instance-${i}`;
      natives.set(id, { group: 'instances', loss: r.loss, grad: r.grad, dtype: cfg.dtype });
      cases.push({ id, options: { ...cfg.options, inChannels: 1 } as RefCase['options'], shape, pred: logits, target: new Float32Array(0), instance: { masks, weights }, outputs: ['loss', 'grad'] as const });
    });
    results = await runReference(cases);
  }, 300_000);

  /** Each case of `group`: loss and gradient within 1e-5 (float32) / 1e-10 (float64) of PyTorch's. */
  function expectAgreement(group: Group, expected: number): void {
    const ids = [...natives].filter(([, n]) => n.group === group).map(([id]) => id);
    expect(ids).toHaveLength(expected);
    for (const id of ids) {
      const mine = natives.get(id)!;
      const theirs = results.get(id)!;
      const tolerance = mine.dtype === 'float64' ? 1e-10 : 1e-5;
      if (typeof mine.loss === 'number') {
        expect(Number.isFinite(mine.loss)).toBe(true);
        expect(relErrorScalar(mine.loss, theirs.loss as number), `${id} loss`).toBeLessThanOrEqual(tolerance);
      } else {
        expect(relError(mine.loss, theirs.loss as Float64Array), `${id} loss`).toBeLessThanOrEqual(tolerance);
      }
      expect(allFinite(mine.grad)).toBe(true);
      expect(relError(mine.grad, theirs.grad!), `${id} grad`).toBeLessThanOrEqual(tolerance);
    }
  }

  it(`agrees with ${CASES} random valid cases: loss and gradient within 1e-5 (float32) / 1e-10 (float64)`, () => {
    expectAgreement('images', CASES);
  });

  it(`volumes (spatialDims 3): agrees with ${VOLUME_CASES} random valid cases, plain, segmentation and with voxel masks: loss and gradient within 1e-5 (float32) / 1e-10 (float64)`, () => {
    expectAgreement('volumes', VOLUME_CASES);
  });

  it(`instance masks: agrees with ${INSTANCE_CASES} random cases, weighted (zeros included) and not, images and volumes: loss and gradient within 1e-5 (float32) / 1e-10 (float64)`, () => {
    expectAgreement('instances', INSTANCE_CASES);
  });
});

// ================================================================== totals

describeTotals([]);
