// Property-based fuzzing of dtype 'bfloat16' on the CPU (test/helpers/fuzz.ts says how to replay a
// failure): every method, sync and async, host arrays and Tensors, prepared targets, segmentation
// and both layouts, against the same loss in float32; for images and for volumes (spatialDims: 3). Where the CPU lacks AVX512-BF16 and AMX-BF16,
// every method's loss is refused at construction with ERR_DTYPE instead.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, runtime, type PerceptualLossOptions } from '../../lib/index';
import {
  count,
  counted,
  dataArb,
  describeTotals,
  expectSameBits,
  extrasArb,
  expectThrowsCode,
  FUZZ_RUNS,
  fuzzParams,
  hostOf,
  toNchw64,
  isAsync,
  materialize,
  METHODS,
  release,
  setupFuzzFile,
  shapeIn,
  tinyConfigArb,
  tinyVolumeConfigArb,
  type Layout,
  type Method,
  type TinyConfig,
} from '../helpers/fuzz';
import * as ref from '../helpers/js-reference';
import { mulberry32 } from '../helpers/random';

setupFuzzFile();

const BF16 = runtime().cpu.bfloat16;
/** bf16 keeps 8 bits of mantissa; these tiny networks lose a few more through their layers. */
const LOSS_RTOL = 2e-2;
const FEATURE_RTOL = 2e-2;
/** ||g_bf16 - g_f32|| / ||g_f32||: far looser, as PyTorch's own bf16 autocast is (see test/parity/bfloat16.test.ts). */
const GRAD_RTOL = 0.25;

const caseFields = {
  method: fc.constantFrom<Method>(...METHODS),
  batch: fc.integer({ min: 1, max: 2 }),
};
const dataFields = {
  pred: dataArb.map((d) => ({ ...d, kind: 'randn' as const })),
  target: dataArb.map((d) => ({ ...d, kind: 'randn' as const })),
  tensors: fc.boolean(),
  labelSeed: fc.nat(),
};

const caseArb = fc
  .record({ config: tinyConfigArb, ...caseFields, extraH: fc.integer({ min: 0, max: 5 }), extraW: fc.integer({ min: 0, max: 5 }), ...dataFields })
  .map(({ extraH, extraW, ...c }) => ({ ...c, extras: [extraH, extraW] }));

/** Volumes: [N, C, D, H, W] or [N, D, H, W, C], a few voxels per axis. */
const volumeCaseArb = fc.record({ config: tinyVolumeConfigArb, ...caseFields, extras: extrasArb(3, 3), ...dataFields });

type Case = typeof volumeCaseArb extends fc.Arbitrary<infer T> ? T : never;

const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((sum, v) => sum + v * v, 0));

function relNorm(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < b.length; i++) {
    diff += (a[i] - b[i]) ** 2;
    norm += b[i] ** 2;
  }
  return norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
}

const values = (v: unknown) => (typeof v === 'number' ? [v] : Array.from(v as Float32Array));

/**
 * |a - b| <= LOSS_RTOL (|b| + magnitude): bf16 rounds each feature to 8 bits, so where pred's and
 * target's features nearly cancel, the error scales with the features, not with their difference.
 * `magnitude`: the JS reference's magnitude (D(|a| + |b|, 0)) of a network with |weights| on |inputs|,
 * so that cancellation inside the convs counts too.
 */
function expectLossClose(actual: unknown, expected: unknown, magnitude: unknown): void {
  const [a, b, m] = [values(actual), values(expected), values(magnitude)];
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) {
    expect(Number.isFinite(a[i]), `loss[${i}] finite`).toBe(true);
    expect(Math.abs(a[i] - b[i]), `loss[${i}]: ${a[i]} vs float32 ${b[i]}`).toBeLessThanOrEqual(LOSS_RTOL * (Math.abs(b[i]) + m[i]) + 1e-30);
  }
}

/** ||a - b|| <= GRAD_RTOL (||b|| + extra): `extra` for what rounding scales with beyond b itself. */
function expectGradClose(actual: Float32Array, expected: Float32Array, criterion: string, extra = 0): void {
  expect(actual).toBeInstanceOf(Float32Array);
  expect(actual.length).toBe(expected.length);
  expect(actual.every(Number.isFinite), 'grad finite').toBe(true);
  // l1's gradient is sign(a - b): it flips wherever rounding flips a - b ~ 0, in any reduced precision.
  if (criterion === 'l1') return;
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < expected.length; i++) {
    diff += (actual[i] - expected[i]) ** 2;
    norm += expected[i] ** 2;
  }
  const bound = GRAD_RTOL * (Math.sqrt(norm) + extra) + 1e-30;
  expect(Math.sqrt(diff), `grad: relative difference ${Math.sqrt(diff / norm)} from float32`).toBeLessThanOrEqual(bound);
}

/**
 * What bf16 rounding errors scale with, from the float64 JS reference: the loss magnitude and the
 * gradient norm of the network with |weights| on |inputs|, and for segmentation the norm of
 * d loss / d softmax output (d loss / d logits = p (g - sum_c g p) can cancel far below it).
 */
function scalesOf(f32: PerceptualLoss, method: Method, x: Inputs, config: { js: ref.JsOptions; layout: Layout }): { magnitude: unknown; gradScale: number } {
  const convs = ref.convsOf(f32.stateDict());
  const absConvs = convs.map((cv) => ({ weight: Array.from(cv.weight, Math.abs), bias: Array.from(cv.bias, Math.abs) }));
  const abs = (d: Float32Array) => toNchw64(Float32Array.from(d, Math.abs), x.shape, config.layout);
  if (method.startsWith('lossAndGradSegmentation')) {
    const logits = toNchw64(x.pred, x.shape, config.layout);
    const magnitude = ref.segmentation(config.js, absConvs, logits, x.labels, 255).magnitude;
    return { magnitude, gradScale: ref.segmentation(config.js, convs, logits, x.labels, 255).gradScale ?? 0 };
  }
  // The backward pass cancels as the forward does: its rounding scales with the |weights| network's gradient.
  const zeros = toNchw64(new Float32Array(x.pred.length), x.shape, config.layout);
  const gradScale = norm(ref.lossAndGrad(config.js, absConvs, abs(x.pred), zeros).grad) + norm(ref.lossAndGrad(config.js, absConvs, abs(x.target), zeros).grad);
  return { magnitude: ref.lossAndGrad(config.js, absConvs, abs(x.pred), abs(x.target)).magnitude, gradScale };
}

interface Inputs {
  shape: number[];
  pred: Float32Array;
  target: Float32Array;
  labels: Int32Array;
  labelShape: number[];
}

function inputsOf(c: Case): Inputs {
  const { js, layout, minSize } = c.config;
  // Segmentation logits of scale 1: a near-uniform softmax (scale 1e-3) makes d loss / d logits a
  // difference of nearly equal terms, and a saturated one (scale 30) is ill-conditioned in any
  // precision; neither can be held to a relative bound in bf16.
  if (c.method.startsWith('lossAndGradSegmentation')) c = { ...c, pred: { ...c.pred, scale: 1 } };
  const spatial = c.extras.map((e) => minSize + e);
  const channels = js.inChannels;
  const shape = shapeIn(layout, c.batch, channels, spatial);
  const labelShape = [c.batch, ...spatial];
  const rand = mulberry32(c.labelSeed);
  const labels = Int32Array.from({ length: count(labelShape) }, () => (rand() < 0.1 ? 255 : Math.floor(rand() * channels)));
  return { shape, pred: materialize(c.pred, count(shape)), target: materialize(c.target, count(shape)), labels, labelShape };
}

/** One call of `method` on `loss`; results as host values (Tensors read back and released). */
async function call(loss: PerceptualLoss, method: Method, x: Inputs, tensors: boolean): Promise<{ value: unknown; grad?: Float32Array; features?: Float32Array[] }> {
  const resident: Tensor[] = [];
  const operand = (data: Float32Array, shape: number[]) => {
    if (!tensors) return { data, shape };
    const t = Tensor.from(data, shape);
    resident.push(t);
    return t;
  };
  const p = operand(x.pred, x.shape);
  const t = operand(x.target, x.shape);
  const labels = { data: x.labels, shape: x.labelShape };
  try {
    const run = async (): Promise<unknown> => {
      switch (method) {
        case 'loss': return loss.loss(p, t);
        case 'lossAsync': return loss.lossAsync(p, t);
        case 'lossAndGrad': return loss.lossAndGrad(p, t);
        case 'lossAndGradAsync': return loss.lossAndGradAsync(p, t);
        case 'features': return loss.features(p);
        case 'featuresAsync': return loss.featuresAsync(p);
        case 'prepareTarget': {
          using prepared = loss.prepareTarget(t);
          return loss.lossAndGrad(p, prepared);
        }
        case 'lossAndGradSegmentation': return loss.lossAndGradSegmentation(p, labels);
        case 'lossAndGradSegmentationAsync': return loss.lossAndGradSegmentationAsync(p, labels);
      }
    };
    const out = await run();
    if (Array.isArray(out)) {
      const features = out.map((f: { data: Tensor | Float32Array }) => hostOf(f.data) as Float32Array);
      release(out);
      return { value: null, features };
    }
    if (out && typeof out === 'object' && 'grad' in out) {
      const r = out as { loss: unknown; grad: Tensor | Float32Array };
      if (tensors) expect((r.grad as Tensor).dtype).toBe('float32');
      const grad = hostOf(r.grad) as Float32Array;
      release(out);
      return { value: r.loss, grad };
    }
    return { value: out };
  } finally {
    for (const r of resident) r.dispose();
  }
}

/** One case: the bfloat16 loss against the same loss in float32, and against its own twin call. */
async function runCase(c: Case): Promise<void> {
  const options: PerceptualLossOptions = { ...c.config.options, device: 'cpu' };
  const x = inputsOf(c);
  using bf = new PerceptualLoss({ ...options, dtype: 'bfloat16' });
  using f32 = new PerceptualLoss({ ...options, dtype: 'float32' });
  expect(bf.options.dtype).toBe('bfloat16');
  const got = await call(bf, c.method, x, c.tensors);
  const want = await call(f32, c.method, x, c.tensors);
  // The async twin (or the sync one) gives the same bits; a prepared target, those of the plain call.
  const twin = (c.method === 'prepareTarget' ? 'lossAndGrad' : isAsync(c.method) ? c.method.slice(0, -'Async'.length) : `${c.method}Async`) as Method;
  const again = await call(bf, twin, x, c.tensors);
  if (want.features) {
    expect(got.features!.length).toBe(want.features.length);
    // Rounding inside the convs scales with the features of |weights| on |inputs|.
    const absConvs = ref.convsOf(f32.stateDict()).map((cv) => ({ weight: Array.from(cv.weight, Math.abs), bias: Array.from(cv.bias, Math.abs) }));
    const scales = ref.features(c.config.js, absConvs, toNchw64(Float32Array.from(x.pred, Math.abs), x.shape, c.config.layout)).map((f) => norm(f.data));
    got.features!.forEach((f, i) => {
      expect(f).toBeInstanceOf(Float32Array);
      const bound = FEATURE_RTOL * (norm(want.features![i]) + scales[i]) + 1e-30;
      expect(relNorm(f, want.features![i]) * norm(want.features![i]), `features[${i}]: relative difference ${relNorm(f, want.features![i])}`).toBeLessThanOrEqual(bound);
      expectSameBits(again.features![i], f, `features[${i}] of ${twin}`);
    });
    return;
  }
  const { magnitude, gradScale } = scalesOf(f32, c.method, x, c.config);
  expectLossClose(got.value, want.value, magnitude);
  if (want.grad) expectGradClose(got.grad!, want.grad, c.config.js.criterion, gradScale);
  if (typeof got.value === 'number') expect(again.value).toBe(got.value);
  else expectSameBits(again.value as Float32Array, got.value as Float32Array, `loss of ${twin}`);
  if (got.grad) expectSameBits(again.grad!, got.grad, `grad of ${twin}`);
}

/** Where the CPU lacks bfloat16: the loss is refused at construction, naming what is missing. */
function runRefusal(c: { config: TinyConfig }): void {
  const e = expectThrowsCode(() => new PerceptualLoss({ ...c.config.options, device: 'cpu', dtype: 'bfloat16' }), ['ERR_DTYPE']);
  expect(e.message).toContain(runtime().cpu.bfloat16Missing);
}

describe.skipIf(!BF16)('bfloat16 on this CPU (one with AVX512-BF16 or AMX-BF16)', () => {
  it('every method, sync and async, host arrays and Tensors, prepared targets, segmentation, both layouts: close to float32', async () => {
    await fc.assert(fc.asyncProperty(caseArb, counted('bfloat16', runCase)), fuzzParams(FUZZ_RUNS.bfloat16));
  }, 600_000);

  it("volumes (spatialDims 3): every method, sync and async, host arrays and Tensors, prepared targets, segmentation, 'ncdhw' and 'ndhwc': close to float32", async () => {
    await fc.assert(fc.asyncProperty(volumeCaseArb, counted('bfloat16Volume', runCase)), fuzzParams(FUZZ_RUNS.bfloat16Volume));
  }, 600_000);
});

describe.skipIf(BF16)('bfloat16 where this CPU lacks it', () => {
  it('every configuration is refused at construction with ERR_DTYPE', () => {
    fc.assert(fc.property(caseArb, counted('bfloat16', runRefusal)), fuzzParams(FUZZ_RUNS.bfloat16));
  });

  it('every volume configuration (spatialDims 3) is refused at construction with ERR_DTYPE', () => {
    fc.assert(fc.property(volumeCaseArb, counted('bfloat16Volume', runRefusal)), fuzzParams(FUZZ_RUNS.bfloat16Volume));
  });
});

describeTotals(['bfloat16', 'bfloat16Volume']);
