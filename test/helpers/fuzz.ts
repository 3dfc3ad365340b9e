// Shared pieces of the property-based tests (test/fuzz/*.test.ts, and the file and concurrency
// suites): the fast-check settings (a fixed seed, replayable failures, the run count of each
// property), each fuzz file's set-up and closing totals, seeded input data, small valid loss
// configurations, the checks of one error, and the checks of results against the JavaScript
// reference (test/helpers/js-reference.ts).
import { inspect } from 'node:util';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../lib/binding';
import { PerceptualLossError, PreparedTarget, Tensor, runtime, setNumThreads, type ErrorCode, type PerceptualLossOptions } from '../../lib/index';
import * as ref from './js-reference';
import { minSizeOf, tapNames, type ArchEntry, type JsOptions } from './js-reference';
import { mulberry32 } from './random';

/**
 * fast-check settings. A failure prints its seed and path; rerun exactly that case with
 *   PL_FUZZ_SEED=<seed> PL_FUZZ_PATH=<path> npx vitest run <file> -t '<test name>'
 * PL_FUZZ_RUNS_SCALE multiplies every run count (e.g. 10 for a long local run, 0.2 under ASan).
 */
export const FUZZ_SEED = Number(process.env.PL_FUZZ_SEED ?? 20261126);
export const RUNS_SCALE = Number(process.env.PL_FUZZ_RUNS_SCALE ?? 1);
const REPLAY_PATH = process.env.PL_FUZZ_PATH;

/**
 * fast-check runs of each property, before RUNS_SCALE: 15,950 generated cases over the
 * test/fuzz/*.test.ts files (11,850 of images, 4,100 of volumes and instance masks). Each file checks that its properties ran all of theirs.
 */
export const FUZZ_RUNS = {
  options: 2500,
  inputs: 4000,
  paths: 2500,
  segmentation: 1000,
  nonFinite: 500,
  tensor: 600,
  methods: 400,
  memory: 200,
  bfloat16: 150,
  // Volumes (spatialDims: 3, 5-D inputs) and instance masks.
  inputsVolume: 2500,
  pathsVolume: 400,
  segmentationVolume: 250,
  nonFiniteVolume: 150,
  methodsVolume: 100,
  memoryVolume: 60,
  bfloat16Volume: 40,
  instanceMasks: 600,
} as const;
export type FuzzProperty = keyof typeof FUZZ_RUNS;

export function fuzzParams(runs: number): { seed: number; numRuns: number; path?: string; endOnFailure?: boolean } {
  const numRuns = Math.max(1, Math.round(runs * RUNS_SCALE));
  return REPLAY_PATH ? { seed: FUZZ_SEED, numRuns, path: REPLAY_PATH, endOnFailure: true } : { seed: FUZZ_SEED, numRuns };
}

/** Counts a key in a statistics map. */
export const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

/** Cases run, per property; the file's totals check them. */
const ran = new Map<FuzzProperty, number>();
export function counted<A extends unknown[], R>(name: FuzzProperty, body: (...args: A) => R): (...args: A) => R {
  return (...args: A) => {
    ran.set(name, (ran.get(name) ?? 0) + 1);
    return body(...args);
  };
}

let liveAtStart = 0;

/** The file-level set-up of a fuzz file: one intra-op thread, and the live native tensors at the start. */
export function setupFuzzFile(): void {
  beforeAll(() => {
    // Tiny tensors: one intra-op thread is fastest and avoids thread hand-offs.
    setNumThreads(1);
    liveAtStart = native().liveTensors();
  });
}

/**
 * The closing checks of a fuzz file: no native tensor left alive (after `cleanup`), and every
 * property named ran all its cases.
 */
export function describeTotals(properties: readonly FuzzProperty[], cleanup?: () => void): void {
  describe('totals', () => {
    it('left no native tensor alive', () => {
      cleanup?.();
      expect(native().liveTensors()).toBe(liveAtStart);
    });

    if (properties.length === 0) return;
    // A replay runs one recorded path, not the full count.
    it.skipIf(REPLAY_PATH !== undefined)(`ran every generated case of ${properties.join(', ')} (not when PL_FUZZ_PATH replays one)`, () => {
      console.log(`fuzz: ${properties.map((p) => `${p} ${ran.get(p) ?? 0}`).join(', ')}; seed ${FUZZ_SEED}`);
      for (const p of properties) expect(ran.get(p) ?? 0, p).toBe(fuzzParams(FUZZ_RUNS[p]).numRuns);
    });
  });
}

// ------------------------------------------------------------------ data

export type DataKind = 'randn' | 'zeros' | 'denormal' | 'sparse' | 'ints' | 'mixed';

/** Input values are drawn from a seed, so a case is small to print and to shrink. */
export interface DataSpec {
  seed: number;
  kind: DataKind;
  scale: number;
}

export const dataArb: fc.Arbitrary<DataSpec> = fc.record({
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  kind: fc.constantFrom<DataKind>('randn', 'randn', 'zeros', 'denormal', 'sparse', 'ints', 'mixed'),
  scale: fc.constantFrom(1e-3, 1, 30),
});

/** Finite float32 values: normal, zero and -0, float32 denormals, small integers. */
export function materialize(spec: DataSpec, length: number): Float32Array {
  const rand = mulberry32(spec.seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    switch (spec.kind) {
      case 'randn':
        out[i] = normal() * spec.scale;
        break;
      case 'zeros':
        out[i] = rand() < 0.5 ? 0 : -0;
        break;
      case 'denormal':
        // Float32 denormals lie below 1.18e-38.
        out[i] = normal() * 1e-39;
        break;
      case 'sparse':
        out[i] = rand() < 0.1 ? normal() * spec.scale : 0;
        break;
      case 'ints':
        out[i] = Math.floor(rand() * 7) - 3;
        break;
      case 'mixed': {
        const r = rand();
        out[i] = r < 0.4 ? normal() * spec.scale : r < 0.55 ? 1.4e-45 * Math.floor(rand() * 1000) : r < 0.7 ? 0 : r < 0.8 ? -0 : Math.round(normal() * 3);
        break;
      }
    }
  }
  return out;
}

export type TargetRelation = 'independent' | 'same' | 'near' | 'zeros';

/** A target for `pred`: independent data, pred itself, pred plus a small change, or zeros. */
export function targetFor(pred: Float32Array, relation: TargetRelation, spec: DataSpec): Float32Array {
  switch (relation) {
    case 'independent':
      return materialize(spec, pred.length);
    case 'same':
      return pred.slice();
    case 'near': {
      const noise = materialize({ ...spec, kind: 'randn', scale: 1 }, pred.length);
      return pred.map((v, i) => v + 0.1 * (Math.abs(v) + spec.scale) * noise[i]);
    }
    case 'zeros':
      return new Float32Array(pred.length);
  }
}

// ------------------------------------------------------------------ small valid configurations

/** A tiny custom arch: 1 to `width` channels per conv, at most 2 pools, at least one conv. */
function tinyArchOf(width: number, maxLength: number): fc.Arbitrary<ArchEntry[]> {
  return fc
    .array(fc.oneof({ arbitrary: fc.integer({ min: 1, max: width }), weight: 3 }, { arbitrary: fc.constant('M' as const), weight: 1 }), {
      minLength: 1,
      maxLength,
    })
    .filter((a) => a.some((v) => v !== 'M') && a.filter((v) => v === 'M').length <= 2);
}

export const tinyArchArb: fc.Arbitrary<ArchEntry[]> = tinyArchOf(4, 5);

export interface TinyConfig {
  options: PerceptualLossOptions;
  /** The options as this test resolves them (independently of lib/options.ts). */
  js: JsOptions;
  dtype: 'float32' | 'float64';
  /** 2: images [N, C, H, W]; 3: volumes [N, C, D, H, W]. */
  spatialDims: 2 | 3;
  layout: Layout;
  /** The smallest size of each spatial axis. */
  minSize: number;
}

/**
 * Small valid configurations of images (2) or volumes (3): volumes take at most 2 input channels,
 * 3 per conv and 4 modules, so that a few voxels per axis keep the reference fast.
 */
function tinyConfigOf(spatialDims: 2 | 3): fc.Arbitrary<TinyConfig> {
  const volume = spatialDims === 3;
  const layouts = volume ? (['ncdhw', 'ndhwc'] as const) : (['nchw', 'nhwc'] as const);
  return fc
    .tuple(volume ? tinyArchOf(3, 4) : tinyArchArb, fc.integer({ min: 1, max: volume ? 2 : 3 }))
    .chain(([arch, inChannels]) => {
      const names = tapNames(arch);
      return fc.record({
        arch: fc.constant(arch),
        inChannels: fc.constant(inChannels),
        layers: fc.uniqueArray(fc.constantFrom(...names), { minLength: 1, maxLength: Math.min(3, names.length) }),
        // Weights are 0, 1 or of ordinary size: denormal weights round to 0 in float32 and would turn
        // Inf * weight into NaN, a float32 effect the float64 reference does not model.
        weights: fc.array(fc.oneof(fc.constant(1), fc.constant(0), fc.double({ min: 1e-3, max: 5, noNaN: true })), { minLength: 3, maxLength: 3 }),
        weightMode: fc.constantFrom('omit', 'array', 'object'),
        criterion: fc.constantFrom('l1' as const, 'l2' as const, 'smooth_l1' as const),
        reduction: fc.constantFrom('mean' as const, 'sum' as const, 'none' as const),
        pool: fc.constantFrom('max' as const, 'avg' as const, undefined),
        featureWeight: fc.oneof(fc.constant(undefined), fc.constant(0), fc.double({ min: 1e-3, max: 10, noNaN: true })),
        styleWeight: fc.oneof(fc.constant(undefined), fc.constant(0), fc.double({ min: 1e-3, max: 10, noNaN: true })),
        init: fc.oneof(
          fc.constantFrom('kaiming_normal' as const, 'kaiming_uniform' as const, 'xavier_normal' as const, 'xavier_uniform' as const, undefined),
          fc.double({ min: 1e-3, max: 2, noNaN: true }).map((normal) => ({ normal })),
        ),
        seed: fc.oneof(fc.nat(1000), fc.maxSafeNat()),
        dtype: fc.constantFrom('float32' as const, 'float64' as const),
        layout: fc.constantFrom<Layout | undefined>(...layouts, undefined),
      });
    })
    .map((c) => {
      const options: PerceptualLossOptions = { inChannels: c.inChannels, arch: c.arch, layers: c.layers, criterion: c.criterion, reduction: c.reduction, seed: c.seed, dtype: c.dtype };
      if (volume) options.spatialDims = 3;
      let layerWeights = c.layers.map(() => 1);
      if (c.weightMode === 'array') {
        layerWeights = c.layers.map((_, i) => c.weights[i]);
        options.layerWeights = layerWeights;
      } else if (c.weightMode === 'object') {
        // Every tap but the second by name; the second keeps its weight of 1.
        const byName = Object.fromEntries(c.layers.map((l, i) => [l, c.weights[i]] as const).filter((_, i) => i !== 1));
        options.layerWeights = byName;
        layerWeights = c.layers.map((l) => byName[l] ?? 1);
      }
      if (c.pool !== undefined) options.pool = c.pool;
      if (c.featureWeight !== undefined) options.featureWeight = c.featureWeight;
      if (c.styleWeight !== undefined) options.styleWeight = c.styleWeight;
      if (c.init !== undefined) options.init = c.init;
      if (c.layout !== undefined) options.layout = c.layout;
      const js: JsOptions = {
        inChannels: c.inChannels,
        arch: c.arch,
        layers: c.layers,
        layerWeights,
        criterion: c.criterion,
        featureWeight: c.featureWeight ?? 1,
        styleWeight: c.styleWeight ?? 0,
        reduction: c.reduction,
        pool: c.pool ?? 'max',
      };
      return { options, js, dtype: c.dtype, spatialDims, layout: c.layout ?? layouts[0], minSize: minSizeOf(c.arch, c.layers) };
    });
}

export const tinyConfigArb: fc.Arbitrary<TinyConfig> = tinyConfigOf(2);
/** The same for volumes: spatialDims 3, layouts 'ncdhw' and 'ndhwc'. */
export const tinyVolumeConfigArb: fc.Arbitrary<TinyConfig> = tinyConfigOf(3);

/** The extra size of each spatial axis beyond the minimum, up to `max`: [H, W] or [D, H, W]. */
export const extrasArb = (spatialDims: 2 | 3, max: number) => fc.array(fc.nat(max), { minLength: spatialDims, maxLength: spatialDims });

/** An input's shape in `layout`: [N, C, ...spatial] or [N, ...spatial, C]. */
export function shapeIn(layout: Layout, n: number, c: number, spatial: readonly number[]): number[] {
  return channelsLast(layout) ? [n, ...spatial, c] : [n, c, ...spatial];
}

// ------------------------------------------------------------------ errors

/** Runs `fn` and checks it throws a PerceptualLossError whose code is one of `codes`. */
export function expectThrowsCode(fn: () => unknown, codes: readonly ErrorCode[]): PerceptualLossError {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  if (!(thrown instanceof PerceptualLossError)) {
    throw new Error(`expected a PerceptualLossError with code ${codes.join(' or ')}; got ${thrown === undefined ? 'no error' : thrown instanceof Error ? (thrown.stack ?? thrown.message) : inspect(thrown)}`);
  }
  expect(codes, thrown.message).toContain(thrown.code);
  expect(thrown.message.length).toBeGreaterThan(10);
  return thrown;
}

/** An async method must return a Promise that rejects (never throw) with one of `codes`. */
export async function expectRejectsCode(fn: () => unknown, codes: readonly ErrorCode[]): Promise<PerceptualLossError> {
  let promise: unknown;
  try {
    promise = fn();
  } catch (error) {
    throw new Error(`an async method threw synchronously instead of rejecting: ${String((error as Error)?.stack ?? error)}`);
  }
  if (!(promise instanceof Promise)) throw new Error(`an async method returned ${String(promise)}, not a Promise`);
  let reason: unknown;
  let rejected = false;
  try {
    await promise;
  } catch (error) {
    rejected = true;
    reason = error;
  }
  if (!rejected) throw new Error(`expected a rejection with ${codes.join(' or ')}; the Promise resolved`);
  return expectThrowsCode(() => {
    throw reason;
  }, codes);
}

// ------------------------------------------------------------------ comparisons

/** |a - b| <= rtol |b| + atol, elementwise over scalars or arrays (NaN only matches NaN). */
export function expectClose(actual: number | ArrayLike<number>, expected: number | ArrayLike<number>, rtol: number, atol: number, what: string): void {
  const a = typeof actual === 'number' ? [actual] : Array.from(actual);
  const b = typeof expected === 'number' ? [expected] : Array.from(expected);
  expect(a.length, `${what}: length`).toBe(b.length);
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(b[i]) || Number.isNaN(a[i])) {
      expect(Number.isNaN(a[i]), `${what}[${i}]: ${a[i]} vs ${b[i]}`).toBe(Number.isNaN(b[i]));
      continue;
    }
    const ok = Math.abs(a[i] - b[i]) <= rtol * Math.abs(b[i]) + atol;
    if (!ok) expect.fail(`${what}[${i}]: ${a[i]} differs from the reference ${b[i]} by more than ${rtol} (relative) + ${atol}`);
  }
}

/** ||a - b||_2 <= rtol ||b||_2 + atol sqrt(n) + normAtol. */
export function expectCloseNorm(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atol: number, what: string, normAtol = 0): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    diff += d * d;
    norm += expected[i] * expected[i];
  }
  const ok = Math.sqrt(diff) <= rtol * Math.sqrt(norm) + atol * Math.sqrt(expected.length) + normAtol;
  if (!ok) expect.fail(`${what}: relative difference ${Math.sqrt(diff) / Math.sqrt(norm)} from the reference exceeds ${rtol}`);
}

/** Bit-identical typed arrays (NaN payloads and -0 included). */
export function expectSameBits(actual: ArrayBufferView, expected: ArrayBufferView, what: string): void {
  expect(actual.constructor.name, what).toBe(expected.constructor.name);
  const a = new Uint8Array(actual.buffer, actual.byteOffset, actual.byteLength);
  const b = new Uint8Array(expected.buffer, expected.byteOffset, expected.byteLength);
  expect(a.length, `${what}: byte length`).toBe(b.length);
  if (!Buffer.from(a).equals(Buffer.from(b))) expect.fail(`${what}: the bits differ`);
}

export const allFinite = (values: number | ArrayLike<number>): boolean =>
  typeof values === 'number' ? Number.isFinite(values) : Array.from(values).every(Number.isFinite);

// ------------------------------------------------------------------ results against the JavaScript reference

/** The layouts of images ('nchw', 'nhwc') and volumes ('ncdhw', 'ndhwc'). */
export type Layout = 'nchw' | 'nhwc' | 'ncdhw' | 'ndhwc';
export type Dtype = 'float32' | 'float64';

/** Whether the channels are the last axis. */
export const channelsLast = (layout: Layout) => layout === 'nhwc' || layout === 'ndhwc';
/** The other layout of the same dimensionality. */
export const otherLayout = (layout: Layout): Layout => ({ nchw: 'nhwc', nhwc: 'nchw', ncdhw: 'ndhwc', ndhwc: 'ncdhw' }) [layout] as Layout;

export const CUDA = runtime().devices.filter((d) => d.startsWith('cuda'));
export const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Tolerances against the float64 reference. float32 compute: float32 accumulation. float64
 * compute: tight, except where a result comes back in a Float32Array (pred's array type), which
 * rounds it to float32 (relative 6e-8; values below the float32 range flush to 0).
 */
export interface Tolerance {
  loss: number;
  feature: number;
  grad: number;
  atol: number;
  gradAtol: number;
}
export function tolerance(dtype: Dtype, output?: unknown): Tolerance {
  if (dtype === 'float32') return { loss: 2e-4, feature: 1e-4, grad: 2e-3, atol: 1e-30, gradAtol: 1e-36 };
  if (output instanceof Float32Array) return { loss: 3e-7, feature: 3e-7, grad: 3e-7, atol: 1e-37, gradAtol: 1e-37 };
  return { loss: 1e-9, feature: 1e-10, grad: 1e-8, atol: 1e-280, gradAtol: 1e-280 };
}

/** Gradients of l1 (sign(a - b)) jump where float32 rounding flips the sign of a - b ~ 0. */
export function gradComparable(dtype: Dtype, criterion: string, precise: boolean): boolean {
  return precise && (dtype === 'float64' || criterion !== 'l1');
}

/**
 * Whether results can be held to the float64 reference. float32 compute cannot hold float32
 * denormal inputs ('denormal', and 'mixed' which has some: activations underflow to 0 where the
 * reference keeps 1e-45 .. 1e-50, and a ReLU then passes no gradient), and a
 * saturated softmax (logits of scale 30) makes segmentation ill-conditioned in any precision:
 * those cases are checked for finiteness and path identity only.
 */
export function comparable(dtype: Dtype, data: readonly DataSpec[], logits?: DataSpec): boolean {
  if (logits && logits.scale > 1 && ['randn', 'sparse', 'mixed'].includes(logits.kind)) return false;
  return dtype === 'float64' || data.every((d) => d.kind !== 'denormal' && d.kind !== 'mixed');
}

/** Data in `layout` -> channels first ([N, C, H, W] or [N, C, D, H, W]) float64. */
export function toNchw64(data: ArrayLike<number>, shape: readonly number[], layout: Layout): ref.JsTensor {
  const f64 = Float64Array.from(data);
  if (!channelsLast(layout)) return { shape: [...shape], data: f64 };
  return { shape: nchwShape(shape, layout), data: ref.transpose(f64, shape, (k) => new Float64Array(k)) };
}

/** Channels-first float64 reference values in `layout`. */
export function fromNchw(data: Float64Array, nchw: readonly number[], layout: Layout): Float64Array {
  return channelsLast(layout) ? ref.transpose(data, nchw, (k) => new Float64Array(k), true) : data;
}

/** A shape in `layout`, channels first. */
export function nchwShape(shape: readonly number[], layout: Layout): number[] {
  return channelsLast(layout) ? [shape[0], shape[shape.length - 1], ...shape.slice(1, -1)] : [...shape];
}

/** A channels-first shape in `layout`. */
export function layoutShape(nchw: readonly number[], layout: Layout): number[] {
  return channelsLast(layout) ? [nchw[0], ...nchw.slice(2), nchw[1]] : [...nchw];
}

/** The same values moved from `layout` to the other layout of their rank: [data, shape]. */
export function toOtherLayout<A extends Float32Array | Float64Array>(data: A, shape: readonly number[], layout: Layout): [A, number[]] {
  const make = (k: number) => new (data.constructor as new (k: number) => A)(k);
  const nchw = nchwShape(shape, layout);
  if (channelsLast(layout)) return [ref.transpose(data, shape, make), nchw];
  return [ref.transpose(data, shape, make, true), layoutShape(nchw, otherLayout(layout))];
}

export function hostOf(x: Tensor | Float32Array | Float64Array): Float32Array | Float64Array {
  return x instanceof Tensor ? (x.toArray() as Float32Array | Float64Array) : x;
}

export interface Expectation {
  dtype: Dtype;
  js: ref.JsOptions;
  convs: ref.JsConv[];
  /** false: finiteness only (see comparable()). */
  precise: boolean;
}

/**
 * float32 compute rounds each difference a - b to a fraction of |a| + |b|: where features nearly
 * cancel, the error is bounded by the reference's `magnitude`, not by the loss itself.
 */
export const FLOAT32_MAGNITUDE = 2e-5;
/**
 * The same for float64 compute: where pred's and target's features nearly cancel (a masked target
 * rounded to float32 against an unrounded pred), the loss is a rounding residue of the magnitude.
 */
export const FLOAT64_MAGNITUDE = 1e-13;

/** Checks a loss value (number, or per-sample array) against the reference result. */
export function expectLoss(actual: unknown, expected: ref.JsResult, dtype: Dtype, what = 'loss', precise = true): void {
  const tol = tolerance(dtype, actual);
  const want = typeof expected.loss === 'number' ? [expected.loss] : expected.loss;
  const magnitude = typeof expected.magnitude === 'number' ? [expected.magnitude] : expected.magnitude;
  if (Array.isArray(expected.loss)) {
    expect(ArrayBuffer.isView(actual), `${what} is a typed array for reduction 'none'`).toBe(true);
  } else expect(typeof actual, what).toBe('number');
  const got = typeof actual === 'number' ? [actual] : Array.from(actual as Float32Array);
  expect(allFinite(got), `${what} is finite`).toBe(true);
  if (!precise) return;
  got.forEach((v, i) => {
    const atol = tol.atol + (dtype === 'float32' ? FLOAT32_MAGNITUDE : FLOAT64_MAGNITUDE) * magnitude[i];
    expectClose(v, want[i], tol.loss, atol, `${what}[${i}]`);
  });
}

export function expectTerms(actual: Array<{ name: string; feature: number; style: number }>, expected: ref.JsResult, e: Expectation): void {
  expect(actual.map((t) => t.name)).toEqual(e.js.layers);
  const tol = tolerance(e.dtype);
  actual.forEach((t, i) => {
    expect(Number.isFinite(t.feature) && Number.isFinite(t.style), 'terms are finite').toBe(true);
    if (!e.precise) return;
    const [mf, ms] = expected.termMagnitudes[i];
    const k = e.dtype === 'float32' ? FLOAT32_MAGNITUDE : FLOAT64_MAGNITUDE;
    expectClose(t.feature, expected.terms[i][0], tol.loss, tol.atol + k * mf, `terms[${t.name}].feature`);
    expectClose(t.style, expected.terms[i][1], tol.loss, tol.atol + k * ms, `terms[${t.name}].style`);
  });
}

export function expectGrad(grad: ArrayLike<number>, expected: Float64Array, dtype: Dtype, what = 'grad', precise = true, scale = 0): void {
  expect(allFinite(grad), `${what} is finite`).toBe(true);
  if (!precise) return;
  const tol = tolerance(dtype, grad);
  // `scale`: the norm of what cancelled into the gradient (segmentation's softmax).
  expectCloseNorm(grad, expected, tol.grad, tol.gradAtol, what, (dtype === 'float32' ? FLOAT32_MAGNITUDE : 1e-12) * scale);
}

export function expectFeatures(actual: Array<{ name: string; shape: number[]; data: unknown }>, x: ref.JsTensor, layout: Layout, e: Expectation): void {
  const expected = ref.features(e.js, e.convs, x);
  expect(actual.map((f) => f.name)).toEqual(e.js.layers);
  actual.forEach((f, i) => {
    const want = expected[i];
    const shape = layoutShape(want.shape, layout);
    expect(f.shape, `features[${f.name}].shape`).toEqual(shape);
    const data = hostOf(f.data as Tensor | Float32Array);
    expect(allFinite(data), `features[${f.name}] are finite`).toBe(true);
    if (!e.precise) return;
    const tol = tolerance(e.dtype, data);
    expectCloseNorm(data, fromNchw(want.data, want.shape, layout), tol.feature, tol.gradAtol, `features[${f.name}]`);
  });
}

/** Disposes whatever a call handed back (Tensors in results, prepared targets). */
export function release(value: unknown): void {
  if (value instanceof Tensor || value instanceof PreparedTarget) value.dispose();
  else if (Array.isArray(value)) value.forEach((f) => release((f as { data?: unknown }).data));
  else if (value && typeof value === 'object' && 'grad' in value) release(value.grad);
}

/** The last ReLU of each block (the default taps of docs/api.md), as a test-side rule. */
export function defaultLayers(arch: readonly ref.ArchEntry[]): string[] {
  const names = ref.tapNames(arch);
  const kinds = ref.modulesOf(arch).map((m) => m.kind);
  return names.filter((name, i) => kinds[i] === 'relu' && (kinds[i + 1] === undefined || kinds[i + 1] === 'pool'));
}

/** Every method that takes an input tensor, sync and async. */
export const METHODS = [
  'loss',
  'lossAsync',
  'lossAndGrad',
  'lossAndGradAsync',
  'features',
  'featuresAsync',
  'prepareTarget',
  'lossAndGradSegmentation',
  'lossAndGradSegmentationAsync',
] as const;
export type Method = (typeof METHODS)[number];
export const isAsync = (m: Method) => m.endsWith('Async');
