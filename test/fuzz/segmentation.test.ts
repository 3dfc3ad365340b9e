// Property-based fuzzing of the segmentation loss (test/helpers/fuzz.ts says how to replay a
// failure): random logits, labels, ignoreIndex values and ignored fractions, as host arrays or
// Tensors, sync or async, in either layout, equal the JavaScript reference and agree bit for bit;
// for images (labels [N, H, W]) and volumes (labels [N, D, H, W]).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, type HostTensor } from '../../lib/index';
import {
  comparable,
  count,
  counted,
  dataArb,
  describeTotals,
  expectGrad,
  extrasArb,
  expectLoss,
  expectSameBits,
  expectTerms,
  fromNchw,
  FUZZ_RUNS,
  fuzzParams,
  gradComparable,
  hostOf,
  materialize,
  nchwShape,
  otherLayout,
  setupFuzzFile,
  shapeIn,
  tinyConfigArb,
  tinyVolumeConfigArb,
  toNchw64,
  toOtherLayout,
  type Expectation,
} from '../helpers/fuzz';
import * as ref from '../helpers/js-reference';
import { mulberry32 as mulberry } from '../helpers/random';

setupFuzzFile();

const segFields = {
  logits: dataArb,
  labelsSeed: fc.nat(),
  ignoreIndex: fc.oneof(fc.constant(undefined), fc.constantFrom(255, -1, 0, 1, 2, 7, 2 ** 31 - 1, -(2 ** 53 - 1))),
  ignoredFraction: fc.constantFrom(0, 0.05, 0.3, 1),
  labelsForm: fc.constantFrom('int32', 'uint8', 'tensorInt32', 'tensorUint8'),
  logitsTensor: fc.boolean(),
  async: fc.boolean(),
  otherLayout: fc.boolean(),
};

const segCaseArb = fc
  .record({ config: tinyConfigArb, n: fc.integer({ min: 1, max: 3 }), extraH: fc.nat(4), extraW: fc.nat(4), ...segFields })
  .map(({ extraH, extraW, ...c }) => ({ ...c, extras: [extraH, extraW] }));

/** Volumes: logits [N, C, D, H, W] or [N, D, H, W, C], labels [N, D, H, W]. */
const volumeSegCaseArb = fc.record({ config: tinyVolumeConfigArb, n: fc.integer({ min: 1, max: 2 }), extras: extrasArb(3, 3), ...segFields });

async function runSegCase(c: typeof volumeSegCaseArb extends fc.Arbitrary<infer T> ? T : never): Promise<void> {
  const cfg = c.config;
  const loss = new PerceptualLoss({ ...cfg.options, device: 'cpu' });
  const owned: Array<{ dispose(): void }> = [loss];
  try {
    const layout = cfg.layout;
    const C = cfg.js.inChannels;
    const spatial = c.extras.map((e) => cfg.minSize + e);
    const shape = shapeIn(layout, c.n, C, spatial);
    const labelShape = [c.n, ...spatial];
    const nchw = nchwShape(shape, layout);
    const z = materialize(c.logits, count(shape));
    const ignoreIndex = c.ignoreIndex ?? 255;
    const uint8 = c.labelsForm.toLowerCase().includes('uint8');
    const storable = uint8 ? ignoreIndex >= 0 && ignoreIndex <= 255 : Math.abs(ignoreIndex) < 2 ** 31;
    const rand = mulberry(c.labelsSeed);
    const values = Int32Array.from({ length: count(labelShape) }, () => (storable && rand() < c.ignoredFraction ? ignoreIndex : Math.floor(rand() * C)));
    const typed = uint8 ? Uint8Array.from(values) : values;
    let labels: unknown = { data: typed, shape: labelShape };
    if (c.labelsForm.startsWith('tensor')) {
      const t = Tensor.from(typed, labelShape, { device: 'cpu' });
      owned.push(t);
      labels = t;
    }
    let logits: unknown = { data: z, shape };
    if (c.logitsTensor) {
      const t = Tensor.from(z, shape, { device: 'cpu' });
      owned.push(t);
      logits = t;
    }
    const options = c.ignoreIndex === undefined ? undefined : { ignoreIndex: c.ignoreIndex };
    const r = (c.async
      ? await loss.lossAndGradSegmentationAsync(logits as HostTensor, labels as HostTensor & { data: Int32Array }, options)
      : loss.lossAndGradSegmentation(logits as HostTensor, labels as HostTensor & { data: Int32Array }, options)) as unknown as {
      loss: number | Float32Array;
      grad: Float32Array | Tensor;
      terms: Array<{ name: string; feature: number; style: number }>;
    };
    if (r.grad instanceof Tensor) owned.push(r.grad);
    const grad = hostOf(r.grad);
    const expected = ref.segmentation(cfg.js, ref.convsOf(loss.stateDict()), toNchw64(z, shape, layout), values, ignoreIndex);
    const precise = comparable(cfg.dtype, [c.logits], c.logits);
    const e: Expectation = { dtype: cfg.dtype, js: cfg.js, convs: [], precise };
    expectLoss(r.loss, expected, cfg.dtype, 'loss', precise);
    expectTerms(r.terms, expected, e);
    expectGrad(grad, fromNchw(expected.grad, nchw, layout), cfg.dtype, 'grad', gradComparable(cfg.dtype, cfg.js.criterion, precise), expected.gradScale);
    if (c.ignoredFraction === 1 && storable) {
      // Everything ignored: pred and target are both zero, so is the gradient.
      expect(Array.from(grad).every((v) => v === 0)).toBe(true);
    }
    // The same call, sync and host, and in the other layout, is bit-identical.
    const plain = loss.lossAndGradSegmentation({ data: z, shape }, { data: typed, shape: labelShape }, options);
    if (typeof plain.loss === 'number') expect(r.loss).toBe(plain.loss);
    else expectSameBits(r.loss as Float32Array, plain.loss, 'segmentation loss');
    expectSameBits(grad, plain.grad, 'segmentation grad');
    if (c.otherLayout) {
      const other = otherLayout(layout);
      const [moved, otherShape] = toOtherLayout(z, shape, layout);
      const a = loss.lossAndGradSegmentation({ data: moved, shape: otherShape }, { data: typed, shape: labelShape }, { ...options, layout: other });
      if (typeof plain.loss === 'number') expect(a.loss).toBe(plain.loss);
      else expectSameBits(a.loss as Float32Array, plain.loss, 'segmentation loss in the other layout');
    }
  } finally {
    for (const o of owned.reverse()) o.dispose();
  }
}

describe('segmentation', () => {
  it('equals the reference for random labels, ignoreIndex values and ignored fractions, through every path', async () => {
    await fc.assert(fc.asyncProperty(segCaseArb, counted('segmentation', runSegCase)), fuzzParams(FUZZ_RUNS.segmentation));
  });

  it('volumes (spatialDims 3, labels [N, D, H, W]): equal the reference for random labels, ignoreIndex values and ignored fractions, through every path', async () => {
    await fc.assert(fc.asyncProperty(volumeSegCaseArb, counted('segmentationVolume', runSegCase)), fuzzParams(FUZZ_RUNS.segmentationVolume));
  });
});

// ================================================================== totals

describeTotals(['segmentation', 'segmentationVolume']);
