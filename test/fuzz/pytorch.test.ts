// Random valid cases, drawn with the fuzzing's seed (test/helpers/fuzz.ts), agree with PyTorch
// (reference/cases.py): loss and gradient, plain and segmentation, float32 and float64.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PerceptualLoss } from '../../lib/index';
import {
  allFinite,
  count,
  dataArb,
  describeTotals,
  FUZZ_SEED,
  materialize,
  setupFuzzFile,
  targetFor,
  tinyConfigArb,
  type Dtype,
  type TargetRelation,
} from '../helpers/fuzz';
import { mulberry32 as mulberry } from '../helpers/random';
import { relError, relErrorScalar, runReference, type RefCase } from '../helpers/reference';

setupFuzzFile();

describe('PyTorch (reference/cases.py)', () => {
  const CASES = 40;
  const refCaseArb = fc.record({
    config: tinyConfigArb,
    n: fc.integer({ min: 1, max: 2 }),
    extraH: fc.nat(4),
    extraW: fc.nat(4),
    pred: dataArb.filter((d) => d.kind !== 'denormal'),
    target: dataArb.filter((d) => d.kind !== 'denormal'),
    relation: fc.constantFrom<TargetRelation>('independent', 'near', 'same'),
    segmentation: fc.boolean(),
    labelsSeed: fc.nat(),
    ignoreIndex: fc.constantFrom(255, -1, 0),
  });

  it(`agrees with ${CASES} random valid cases: loss and gradient within 1e-5 (float32) / 1e-10 (float64)`, async () => {
    const samples = fc.sample(refCaseArb, { seed: FUZZ_SEED + 1, numRuns: CASES });
    const natives = new Map<string, { loss: number | Float32Array | Float64Array; grad: Float32Array | Float64Array; dtype: Dtype }>();
    const cases: RefCase[] = samples.map((s, i) => {
      const cfg = s.config;
      const layout = cfg.layout;
      const C = cfg.js.inChannels;
      const [H, W] = [cfg.minSize + s.extraH, cfg.minSize + s.extraW];
      const shape = layout === 'nhwc' ? [s.n, H, W, C] : [s.n, C, H, W];
      // Logits of at most unit scale: a saturated softmax makes its gradient ill-conditioned
      // (both implementations are right only to a few digits there).
      const pred = materialize(s.segmentation ? { ...s.pred, scale: Math.min(s.pred.scale, 1) } : s.pred, count(shape));
      const target = targetFor(pred, s.relation, s.target);
      const loss = new PerceptualLoss({ ...cfg.options, device: 'cpu' });
      const id = `fuzz-${i}`;
      // float64 configurations get Float64Array inputs of the same values, so results stay float64.
      const arr = (a: Float32Array) => (cfg.dtype === 'float64' ? Float64Array.from(a) : a);
      let labels: Int32Array | undefined;
      if (s.segmentation) {
        const rand = mulberry(s.labelsSeed);
        labels = Int32Array.from({ length: s.n * H * W }, () => (rand() < 0.2 ? s.ignoreIndex : Math.floor(rand() * C)));
        const r = loss.lossAndGradSegmentation({ data: arr(pred), shape }, { data: labels, shape: [s.n, H, W] }, { ignoreIndex: s.ignoreIndex });
        natives.set(id, { loss: r.loss, grad: r.grad, dtype: cfg.dtype });
      } else {
        const r = loss.lossAndGrad({ data: arr(pred), shape }, { data: arr(target), shape });
        natives.set(id, { loss: r.loss, grad: r.grad, dtype: cfg.dtype });
      }
      loss.dispose();
      return {
        id,
        // The user's options: the reference derives the per-tap weights and defaults itself.
        options: cfg.options as RefCase['options'],
        shape,
        pred,
        target,
        labels,
        ignoreIndex: s.segmentation ? s.ignoreIndex : undefined,
        outputs: ['loss', 'grad'] as const,
      };
    });
    const results = await runReference(cases);
    for (const c of cases) {
      const mine = natives.get(c.id)!;
      const theirs = results.get(c.id)!;
      const tolerance = mine.dtype === 'float64' ? 1e-10 : 1e-5;
      if (typeof mine.loss === 'number') {
        expect(Number.isFinite(mine.loss)).toBe(true);
        expect(relErrorScalar(mine.loss, theirs.loss as number), `${c.id} loss`).toBeLessThanOrEqual(tolerance);
      } else {
        expect(relError(mine.loss, theirs.loss as Float64Array), `${c.id} loss`).toBeLessThanOrEqual(tolerance);
      }
      expect(allFinite(mine.grad)).toBe(true);
      expect(relError(mine.grad, theirs.grad!), `${c.id} grad`).toBeLessThanOrEqual(tolerance);
    }
  }, 300_000);
});

// ================================================================== totals

describeTotals([]);
