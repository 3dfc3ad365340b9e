// Property-based fuzzing of every public method (issue 7), with fast-check under a fixed seed
// (test/helpers/fuzz.ts says how to replay a failure). Random options, shapes, layouts, dtypes,
// lengths, NaN/Inf/denormal values, huge and zero dimensions, disposed and foreign objects,
// ignoreIndex cases and wrong devices go to every method, sync and async:
//   - every invalid case throws (or rejects) a PerceptualLossError with the code of its defect,
//     and the loss that saw it still gives, bit for bit, the result it gave before;
//   - every valid case gives finite results equal to an independent float64 implementation of
//     SPEC.md in JavaScript (test/helpers/js-reference.ts), and bit-identical results through
//     every other path to the same value (Tensor or host array, nchw or transposed nhwc, async or
//     sync, prepared or plain target, Float64Array or Float32Array);
//   - a few dozen random valid cases agree with PyTorch (scripts/reference.py).
// Tiny networks keep 10,000+ cases within seconds.
import * as os from 'node:os';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../lib/binding';
import {
  PerceptualLoss,
  PerceptualLossError,
  PreparedTarget,
  Tensor,
  runtime,
  setNumThreads,
  type ErrorCode,
  type HostTensor,
  type PerceptualLossOptions,
} from '../lib/index';
import {
  allFinite,
  dataArb,
  expectClose,
  expectCloseNorm,
  expectRejectsCode,
  expectSameBits,
  expectThrowsCode,
  FUZZ_SEED,
  fuzzParams,
  materialize,
  RUNS_SCALE,
  targetFor,
  tinyConfigArb,
  type DataSpec,
  type TargetRelation,
  type TinyConfig,
} from './helpers/fuzz';
import * as ref from './helpers/js-reference';
import { mulberry32 as mulberry } from './helpers/random';
import { relError, relErrorScalar, runReference, type RefCase } from './helpers/reference';

type Layout = 'nchw' | 'nhwc';
type Dtype = 'float32' | 'float64';

const CUDA = runtime().devices.filter((d) => d.startsWith('cuda'));
const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Cases run, per property; the last test checks the total. */
const ran = new Map<string, number>();
function counted<A extends unknown[], R>(name: string, body: (...args: A) => R): (...args: A) => R {
  return (...args: A) => {
    ran.set(name, (ran.get(name) ?? 0) + 1);
    return body(...args);
  };
}

/**
 * Tolerances against the float64 reference. float32 compute: float32 accumulation. float64
 * compute: tight, except where a result comes back in a Float32Array (pred's array type), which
 * rounds it to float32 (relative 6e-8; values below the float32 range flush to 0).
 */
interface Tolerance {
  loss: number;
  feature: number;
  grad: number;
  atol: number;
  gradAtol: number;
}
function tolerance(dtype: Dtype, output?: unknown): Tolerance {
  if (dtype === 'float32') return { loss: 2e-4, feature: 1e-4, grad: 2e-3, atol: 1e-30, gradAtol: 1e-36 };
  if (output instanceof Float32Array) return { loss: 3e-7, feature: 3e-7, grad: 3e-7, atol: 1e-37, gradAtol: 1e-37 };
  return { loss: 1e-9, feature: 1e-10, grad: 1e-8, atol: 1e-280, gradAtol: 1e-280 };
}

/**
 * Whether results can be held to the float64 reference. float32 compute cannot hold float32
 * denormal inputs ('denormal', and 'mixed' which has some: activations underflow to 0 where the
 * reference keeps 1e-45 .. 1e-50, and a ReLU then passes no gradient), and a
 * saturated softmax (logits of scale 30) makes segmentation ill-conditioned in any precision:
 * those cases are checked for finiteness and path identity only.
 */
/** Gradients of l1 (sign(a - b)) jump where float32 rounding flips the sign of a - b ~ 0. */
function gradComparable(dtype: Dtype, criterion: string, precise: boolean): boolean {
  return precise && (dtype === 'float64' || criterion !== 'l1');
}

function comparable(dtype: Dtype, data: readonly DataSpec[], logits?: DataSpec): boolean {
  if (logits && logits.scale > 1 && ['randn', 'sparse', 'mixed'].includes(logits.kind)) return false;
  return dtype === 'float64' || data.every((d) => d.kind !== 'denormal' && d.kind !== 'mixed');
}

/** [N, H, W, C] data -> [N, C, H, W] float64, or NCHW data as float64. */
function toNchw64(data: ArrayLike<number>, shape: readonly number[], layout: Layout): ref.JsTensor {
  const f64 = Float64Array.from(data);
  if (layout === 'nchw') return { shape: shape as [number, number, number, number], data: f64 };
  const [n, h, w, c] = shape;
  return { shape: [n, c, h, w], data: ref.transpose(f64, shape, (k) => new Float64Array(k)) };
}

/** NCHW float64 reference values in `layout`. */
function fromNchw(data: Float64Array, nchw: readonly number[], layout: Layout): Float64Array {
  return layout === 'nchw' ? data : ref.transpose(data, nchw, (k) => new Float64Array(k), true);
}

function nchwShape(shape: readonly number[], layout: Layout): [number, number, number, number] {
  const [a, b, c, d] = shape;
  return layout === 'nhwc' ? [a, d, b, c] : [a, b, c, d];
}

function hostOf(x: Tensor | Float32Array | Float64Array): Float32Array | Float64Array {
  return x instanceof Tensor ? (x.toArray() as Float32Array | Float64Array) : x;
}

interface Expectation {
  dtype: Dtype;
  js: ref.JsOptions;
  convs: ref.JsConv[];
  /** false: finiteness only (see comparable()). */
  precise: boolean;
}

/** Checks a loss value (number, or per-sample array) against the reference. */
/**
 * float32 compute rounds each difference a - b to a fraction of |a| + |b|: where features nearly
 * cancel, the error is bounded by the reference's `magnitude`, not by the loss itself.
 */
const FLOAT32_MAGNITUDE = 2e-5;

/** Checks a loss value (number, or per-sample array) against the reference result. */
function expectLoss(actual: unknown, expected: ref.JsResult, dtype: Dtype, what = 'loss', precise = true): void {
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
    const atol = tol.atol + (dtype === 'float32' ? FLOAT32_MAGNITUDE * magnitude[i] : 0);
    expectClose(v, want[i], tol.loss, atol, `${what}[${i}]`);
  });
}

function expectTerms(actual: Array<{ name: string; feature: number; style: number }>, expected: ref.JsResult, e: Expectation): void {
  expect(actual.map((t) => t.name)).toEqual(e.js.layers);
  const tol = tolerance(e.dtype);
  actual.forEach((t, i) => {
    expect(Number.isFinite(t.feature) && Number.isFinite(t.style), 'terms are finite').toBe(true);
    if (!e.precise) return;
    const [mf, ms] = expected.termMagnitudes[i];
    const k = e.dtype === 'float32' ? FLOAT32_MAGNITUDE : 0;
    expectClose(t.feature, expected.terms[i][0], tol.loss, tol.atol + k * mf, `terms[${t.name}].feature`);
    expectClose(t.style, expected.terms[i][1], tol.loss, tol.atol + k * ms, `terms[${t.name}].style`);
  });
}

function expectGrad(grad: ArrayLike<number>, expected: Float64Array, dtype: Dtype, what = 'grad', precise = true, scale = 0): void {
  expect(allFinite(grad), `${what} is finite`).toBe(true);
  if (!precise) return;
  const tol = tolerance(dtype, grad);
  // `scale`: the norm of what cancelled into the gradient (segmentation's softmax).
  expectCloseNorm(grad, expected, tol.grad, tol.gradAtol, what, (dtype === 'float32' ? FLOAT32_MAGNITUDE : 1e-12) * scale);
}

function expectFeatures(actual: Array<{ name: string; shape: number[]; data: unknown }>, x: ref.JsTensor, layout: Layout, e: Expectation): void {
  const expected = ref.features(e.js, e.convs, x);
  expect(actual.map((f) => f.name)).toEqual(e.js.layers);
  actual.forEach((f, i) => {
    const want = expected[i];
    const shape = layout === 'nhwc' ? [want.shape[0], want.shape[2], want.shape[3], want.shape[1]] : want.shape;
    expect(f.shape, `features[${f.name}].shape`).toEqual(shape);
    const data = hostOf(f.data as Tensor | Float32Array);
    expect(allFinite(data), `features[${f.name}] are finite`).toBe(true);
    if (!e.precise) return;
    const tol = tolerance(e.dtype, data);
    expectCloseNorm(data, fromNchw(want.data, want.shape, layout), tol.feature, tol.gradAtol, `features[${f.name}]`);
  });
}

/** Disposes whatever a call handed back (Tensors in results, prepared targets). */
function release(value: unknown): void {
  if (value instanceof Tensor || value instanceof PreparedTarget) value.dispose();
  else if (Array.isArray(value)) value.forEach((f) => release((f as { data?: unknown }).data));
  else if (value && typeof value === 'object' && 'grad' in value) release((value as { grad: unknown }).grad);
}

let liveAtStart = 0;
beforeAll(() => {
  // Tiny tensors: one intra-op thread is fastest and avoids thread hand-offs.
  setNumThreads(1);
  liveAtStart = native().liveTensors();
});

// ================================================================== options

/** A value for one option: absent, valid or invalid (with the code it must give). */
interface OptionDraw {
  key: string;
  value: unknown;
  code?: ErrorCode;
}

const BAD_NUMBERS = [-1, -1e-300, NaN, Infinity, -Infinity, '1', null, true, [], {}, 10n];

function optionDrawArb(key: string, valid: fc.Arbitrary<unknown>, invalid: readonly unknown[], code: ErrorCode = 'ERR_OPTIONS'): fc.Arbitrary<OptionDraw | null> {
  return fc.oneof(
    { arbitrary: fc.constant(null), weight: 6 },
    { arbitrary: valid.map((value) => ({ key, value })), weight: 3 },
    { arbitrary: fc.constantFrom(...invalid).map((value) => ({ key, value, code })), weight: 1 },
  );
}

const VGG_SHALLOW = ['conv1_1', 'relu1_1', 'pool1', 'conv2_1', 'relu2_1'];

const optionsCaseArb = fc.record({
  form: fc.oneof({ arbitrary: fc.constant('object' as const), weight: 30 }, { arbitrary: fc.constantFrom(undefined, null, 3, 'vgg19', [], [{ inChannels: 3 }], () => 3), weight: 1 }),
  inChannels: fc.oneof(
    { arbitrary: fc.integer({ min: 1, max: 4 }).map((value) => ({ value })), weight: 12 },
    { arbitrary: fc.constantFrom(0, -1, 2.5, NaN, Infinity, '3', null, true, 65537, 2 ** 53, [3], undefined).map((value) => ({ value, code: 'ERR_OPTIONS' as ErrorCode })), weight: 1 },
    { arbitrary: fc.constant({ missing: true, code: 'ERR_OPTIONS' as ErrorCode }), weight: 1 },
  ),
  arch: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 1 },
    { arbitrary: fc.constantFrom('vgg11', 'vgg13', 'vgg16', 'vgg19').map((value) => ({ value })), weight: 2 },
    { arbitrary: fc.array(fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constant('M')), { minLength: 1, maxLength: 5 }).filter((a) => a.some((v) => v !== 'M')).map((value) => ({ value })), weight: 6 },
    {
      arbitrary: fc
        .constantFrom('vgg20', 'VGG19', 19, [], ['M'], ['M', 'M'], [0], [1.5], [-1], ['m'], [65537], [2 ** 53], null, {}, [[8]], ['8'], [NaN], [Infinity], [4, 'M', true])
        .map((value) => ({ value, code: 'ERR_OPTIONS' as ErrorCode })),
      weight: 1,
    },
  ),
  layersMode: fc.constantFrom('absent', 'valid', 'valid', 'invalid'),
  layersPick: fc.uniqueArray(fc.nat(40), { minLength: 1, maxLength: 3 }),
  badLayers: fc.constantFrom([], 'relu1_1', ['relu9_9'], ['foo'], [3], ['relu1_1', 'relu1_1'], null, {}, ['RELU1_1'], ['conv0_1'], ['pool0']),
  weightsMode: fc.constantFrom('absent', 'absent', 'array', 'object', 'invalid'),
  weights: fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 5, maxLength: 5 }),
  badWeights: fc.constantFrom('wrongLength', 'negative', 'nan', 'infinite', 'string', 'unknownTap', 'null', 'stringValue'),
  criterion: optionDrawArb('criterion', fc.constantFrom('l1', 'l2', 'smooth_l1'), ['mse', 'L1', 'smoothl1', 1, null, {}]),
  featureWeight: optionDrawArb('featureWeight', fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1e300, noNaN: true })), BAD_NUMBERS),
  styleWeight: optionDrawArb('styleWeight', fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1e300, noNaN: true })), BAD_NUMBERS),
  reduction: optionDrawArb('reduction', fc.constantFrom('mean', 'sum', 'none'), ['avg', 'MEAN', 0, null, ['mean']]),
  init: optionDrawArb(
    'init',
    fc.oneof(
      fc.constantFrom('kaiming_normal', 'kaiming_uniform', 'xavier_normal', 'xavier_uniform'),
      fc.double({ min: 1e-6, max: 1e3, noNaN: true }).map((normal) => ({ normal })),
    ),
    ['he_normal', { normal: 0 }, { normal: -1 }, { normal: NaN }, { normal: Infinity }, { std: 1 }, { normal: 1, mean: 0 }, [], null, 5, { normal: '1' }, {}],
  ),
  seed: optionDrawArb('seed', fc.oneof(fc.nat(1000), fc.maxSafeNat()), [-1, 1.5, NaN, 2 ** 53, '1', null, Infinity, 1e300, {}]),
  pool: optionDrawArb('pool', fc.constantFrom('max', 'avg'), ['min', 'MAX', 1, null]),
  device: fc.oneof(
    { arbitrary: fc.constant(null), weight: 6 },
    { arbitrary: fc.constantFrom('cpu', 'auto').map((value) => ({ key: 'device', value })), weight: 3 },
    // Without a CUDA device these are refused with ERR_DEVICE; with one, cuda:7 is out of range.
    { arbitrary: fc.constantFrom('cuda', 'cuda:0', 'cuda:7').map((value) => ({ key: 'device', value, cuda: true })), weight: 1 },
    { arbitrary: fc.constantFrom('gpu', 'cuda:', 'cuda:-1', 'CPU', 'cuda:0:0', 'cpu:0', 0, false, {}).map((value) => ({ key: 'device', value, code: 'ERR_OPTIONS' as ErrorCode })), weight: 1 },
  ),
  dtype: fc.oneof(
    { arbitrary: fc.constant(null), weight: 6 },
    { arbitrary: fc.constantFrom('float32', 'float64').map((value) => ({ key: 'dtype', value })), weight: 3 },
    { arbitrary: fc.constantFrom('float16', 'bfloat16').map((value) => ({ key: 'dtype', value, half: true })), weight: 1 },
    { arbitrary: fc.constantFrom('float', 'fp32', 32, null, 'Float32').map((value) => ({ key: 'dtype', value, code: 'ERR_OPTIONS' as ErrorCode })), weight: 1 },
  ),
  layout: optionDrawArb('layout', fc.constantFrom('nchw', 'nhwc'), ['NCHW', 'chw', 'nwhc', 1, null]),
  checkFinite: optionDrawArb('checkFinite', fc.boolean(), ['yes', 0, 1, null, 'true']),
  unknown: fc.oneof(
    { arbitrary: fc.constant(null), weight: 12 },
    { arbitrary: fc.constantFrom('criterio', 'lr', 'Layers', 'inchannels', '__proto__', 'constructor', 'toString', 'device ').map((key) => ({ key })), weight: 1 },
  ),
  undefinedKeys: fc.subarray(['arch', 'layers', 'criterion', 'seed', 'dtype', 'layout', 'checkFinite']),
});

type OptionsCase = typeof optionsCaseArb extends fc.Arbitrary<infer T> ? T : never;

/** The conv/'M' list of an arch option, for the names of its taps. */
function archEntries(arch: unknown): ref.ArchEntry[] {
  const cfgs: Record<string, ref.ArchEntry[]> = {
    vgg11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    vgg13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    vgg16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
    vgg19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
  };
  return typeof arch === 'string' ? cfgs[arch] : (arch as ref.ArchEntry[]);
}

/** Builds the options object of a case and what must happen: the codes it may give, or valid. */
function buildOptions(c: OptionsCase): { input: unknown; codes: Set<ErrorCode>; expected?: Record<string, unknown> } {
  if (c.form !== 'object') return { input: c.form, codes: new Set(['ERR_OPTIONS']) };
  const codes = new Set<ErrorCode>();
  const input: Record<string, unknown> = {};
  const set = (key: string, value: unknown) => Object.defineProperty(input, key, { value, enumerable: true, writable: true, configurable: true });

  // inChannels
  if ('missing' in c.inChannels) codes.add('ERR_OPTIONS');
  else {
    set('inChannels', c.inChannels.value);
    if ('code' in c.inChannels && c.inChannels.code) codes.add(c.inChannels.code);
  }
  // arch and layers (the layers of a named VGG stay shallow so that building it is cheap)
  const archDraw = c.arch;
  let archValid = true;
  let entries: ref.ArchEntry[] = archEntries('vgg19');
  if (archDraw !== undefined) {
    set('arch', archDraw.value);
    if ('code' in archDraw) {
      codes.add('ERR_OPTIONS');
      archValid = false;
    } else entries = archEntries(archDraw.value);
  }
  const names = ref.tapNames(entries);
  const named = archDraw === undefined || typeof archDraw.value === 'string';
  const usable = named ? names.filter((n) => VGG_SHALLOW.includes(n)) : names;
  let layers: string[] | undefined;
  let layersMode = c.layersMode;
  if (named && layersMode === 'absent') layersMode = 'valid';
  if (layersMode === 'valid') {
    layers = [...new Set(c.layersPick.map((i) => usable[i % usable.length]))];
    set('layers', layers);
  } else if (layersMode === 'invalid') {
    set('layers', c.badLayers);
    codes.add('ERR_OPTIONS');
  }
  const resolvedLayers = layers ?? defaultLayers(entries);
  // layerWeights
  let layerWeights = resolvedLayers.map(() => 1);
  if (c.weightsMode === 'array') {
    layerWeights = resolvedLayers.map((_, i) => c.weights[i % 5]);
    set('layerWeights', layerWeights);
  } else if (c.weightsMode === 'object') {
    const byName = Object.fromEntries(resolvedLayers.slice(1).map((l, i) => [l, c.weights[i]]));
    set('layerWeights', byName);
    layerWeights = resolvedLayers.map((l) => byName[l] ?? 1);
  } else if (c.weightsMode === 'invalid') {
    const bad: Record<string, unknown> = {
      wrongLength: [...resolvedLayers.map(() => 1), 1],
      negative: resolvedLayers.map((_, i) => (i === 0 ? -1 : 1)),
      nan: resolvedLayers.map((_, i) => (i === resolvedLayers.length - 1 ? NaN : 1)),
      infinite: { [resolvedLayers[0]]: Infinity },
      string: 'equal',
      unknownTap: { relu9_9: 1 },
      null: null,
      stringValue: { [resolvedLayers[0]]: '1' },
    };
    set('layerWeights', bad[c.badWeights]);
    codes.add('ERR_OPTIONS');
  }
  const expected: Record<string, unknown> = {};
  for (const draw of [c.criterion, c.featureWeight, c.styleWeight, c.reduction, c.init, c.seed, c.pool, c.layout, c.checkFinite]) {
    if (draw === null) continue;
    set(draw.key, draw.value);
    if (draw.code) codes.add(draw.code);
    else expected[draw.key] = draw.value;
  }
  // device, then dtype: float16/bfloat16 need CUDA
  let device = CUDA.length > 0 ? 'cuda:0' : 'cpu';
  if (c.device !== null) {
    set('device', c.device.value);
    if ('code' in c.device && c.device.code) codes.add(c.device.code);
    else if ('cuda' in c.device) {
      const index = c.device.value === 'cuda' ? 0 : Number(String(c.device.value).split(':')[1]);
      if (index >= CUDA.length) codes.add('ERR_DEVICE');
      else device = `cuda:${index}`;
    } else device = c.device.value === 'cpu' ? 'cpu' : device;
  }
  if (c.dtype !== null) {
    set('dtype', c.dtype.value);
    if ('code' in c.dtype && c.dtype.code) codes.add(c.dtype.code);
    else if ('half' in c.dtype && device === 'cpu') codes.add('ERR_DTYPE');
    else expected.dtype = c.dtype.value;
  }
  if (c.unknown !== null) {
    set(c.unknown.key, 1);
    codes.add('ERR_OPTIONS');
  }
  // An option given as undefined is an option left out.
  for (const key of c.undefinedKeys) if (!(key in input)) set(key, undefined);
  if (!archValid) return { input, codes };
  return {
    input,
    codes,
    expected: {
      ...expected,
      inChannels: input.inChannels,
      arch: archDraw === undefined ? 'vgg19' : archDraw.value,
      layers: resolvedLayers,
      layerWeights,
      device,
    },
  };
}

/** The last ReLU of each block (SPEC.md's default taps), as a test-side rule. */
function defaultLayers(arch: readonly ref.ArchEntry[]): string[] {
  const names = ref.tapNames(arch);
  const kinds = ref.modulesOf(arch).map((m) => m.kind);
  return names.filter((name, i) => kinds[i] === 'relu' && (kinds[i + 1] === undefined || kinds[i + 1] === 'pool'));
}

const OPTION_DEFAULTS: Record<string, unknown> = {
  criterion: 'l2',
  featureWeight: 1,
  styleWeight: 0,
  reduction: 'mean',
  init: 'kaiming_normal',
  seed: 0,
  pool: 'max',
  dtype: 'float32',
  layout: 'nchw',
  checkFinite: true,
};

describe('new PerceptualLoss(options)', () => {
  it('refuses every invalid options object with the code of its defect and resolves every valid one', () => {
    fc.assert(
      fc.property(
        optionsCaseArb,
        counted('options', (c) => {
          const { input, codes, expected } = buildOptions(c);
          if (codes.size > 0) {
            expectThrowsCode(() => new PerceptualLoss(input as PerceptualLossOptions), [...codes]);
            return;
          }
          const loss = new PerceptualLoss(input as PerceptualLossOptions);
          try {
            const resolved = loss.options as unknown as Record<string, unknown>;
            for (const [key, fallback] of Object.entries(OPTION_DEFAULTS)) {
              const want = key in expected! && expected![key] !== undefined ? expected![key] : fallback;
              expect(resolved[key], `options.${key}`).toEqual(want);
            }
            expect(resolved.inChannels).toBe(expected!.inChannels);
            expect(resolved.arch).toEqual(expected!.arch);
            expect(resolved.layers).toEqual(expected!.layers);
            expect(resolved.layerWeights).toEqual(expected!.layerWeights);
            expect(resolved.device).toBe(expected!.device);
          } finally {
            loss.dispose();
          }
        }),
      ),
      fuzzParams(2500),
    );
  });
});

// ================================================================== inputs at every method

interface PoolEntry {
  options: PerceptualLossOptions;
  js: ref.JsOptions;
  layout: Layout;
  dtype: Dtype;
  minSize: number;
  loss: PerceptualLoss;
  convs: ref.JsConv[];
  /** Fails unless the loss still gives, bit for bit, its first result. */
  expectUnchanged(): void;
}

const POOL_OPTIONS: Array<{ options: PerceptualLossOptions; js: Omit<ref.JsOptions, 'inChannels' | 'arch' | 'layers'> }> = [
  { options: { inChannels: 1, arch: [2] }, js: { layerWeights: [1], criterion: 'l2', featureWeight: 1, styleWeight: 0, reduction: 'mean', pool: 'max' } },
  {
    options: { inChannels: 2, arch: [3, 'M', 2], layers: ['relu2_1'], criterion: 'l1', reduction: 'sum' },
    js: { layerWeights: [1], criterion: 'l1', featureWeight: 1, styleWeight: 0, reduction: 'sum', pool: 'max' },
  },
  {
    options: { inChannels: 3, arch: [2, 'M', 3, 'M', 2], layers: ['conv1_1', 'pool2'], styleWeight: 0.5, criterion: 'smooth_l1', layerWeights: [2, 0.5] },
    js: { layerWeights: [2, 0.5], criterion: 'smooth_l1', featureWeight: 1, styleWeight: 0.5, reduction: 'mean', pool: 'max' },
  },
  {
    options: { inChannels: 2, arch: [2, 'M', 2], reduction: 'none', criterion: 'l1', layout: 'nhwc', featureWeight: 3 },
    js: { layerWeights: [1, 1], criterion: 'l1', featureWeight: 3, styleWeight: 0, reduction: 'none', pool: 'max' },
  },
  {
    options: { inChannels: 3, arch: [4, 'M', 2], dtype: 'float64', reduction: 'sum', pool: 'avg', styleWeight: 1 },
    js: { layerWeights: [1, 1], criterion: 'l2', featureWeight: 1, styleWeight: 1, reduction: 'sum', pool: 'avg' },
  },
  {
    options: { inChannels: 1, arch: ['M', 2, 'M', 2], layers: ['pool2', 'relu2_1'], reduction: 'none', styleWeight: 2, dtype: 'float64' },
    js: { layerWeights: [1, 1], criterion: 'l2', featureWeight: 1, styleWeight: 2, reduction: 'none', pool: 'max' },
  },
];

const pool: PoolEntry[] = [];

function makePoolEntry({ options, js }: (typeof POOL_OPTIONS)[number]): PoolEntry {
  const full: PerceptualLossOptions = { ...options, device: 'cpu' };
  const loss = new PerceptualLoss(full);
  const arch = options.arch as ref.ArchEntry[];
  const layers = (options.layers as string[] | undefined) ?? defaultLayers(arch);
  const layout = options.layout ?? 'nchw';
  const minSize = ref.minSizeOf(arch, layers);
  const c = options.inChannels;
  const shape = layout === 'nhwc' ? [2, minSize + 1, minSize + 2, c] : [2, c, minSize + 1, minSize + 2];
  const probe = { data: materialize({ seed: 5, kind: 'randn', scale: 1 }, count(shape)), shape };
  const probeTarget = { data: materialize({ seed: 6, kind: 'randn', scale: 1 }, count(shape)), shape };
  const first = loss.lossAndGrad(probe, probeTarget);
  return {
    options: full,
    js: { ...js, inChannels: c, arch, layers },
    layout,
    dtype: (options.dtype ?? 'float32') as Dtype,
    minSize,
    loss,
    convs: ref.convsOf(loss.stateDict()),
    expectUnchanged() {
      const now = loss.lossAndGrad(probe, probeTarget);
      if (typeof first.loss === 'number') expect(now.loss).toBe(first.loss);
      else expectSameBits(now.loss as Float32Array, first.loss, 'probe loss');
      expectSameBits(now.grad as Float32Array, first.grad as Float32Array, 'probe grad');
    },
  };
}

const METHODS = [
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
type Method = (typeof METHODS)[number];
const isAsync = (m: Method) => m.endsWith('Async');
const isPair = (m: Method) => m.startsWith('loss') && !m.includes('Segmentation');
const isSeg = (m: Method) => m.includes('Segmentation');

/** Defects of one operand (pred, x or logits; target), with the code each must give. */
const OPERAND_DEFECTS = {
  notTensorLike: 'ERR_SHAPE',
  dataType: 'ERR_DTYPE',
  shapeBad: 'ERR_SHAPE',
  length: 'ERR_SHAPE',
  rank: 'ERR_SHAPE',
  zeroDim: 'ERR_SHAPE',
  channels: 'ERR_SHAPE',
  tooSmall: 'ERR_SHAPE',
  nonFinite: 'ERR_NONFINITE',
  tensorDtype: 'ERR_DTYPE',
  disposedTensor: 'ERR_DISPOSED',
  fakeTensor: 'ERR_SHAPE',
  wrongDevice: 'ERR_DEVICE',
} as const satisfies Record<string, ErrorCode>;

const TARGET_ONLY_DEFECTS = {
  shapeMismatch: 'ERR_SHAPE',
  preparedDisposed: 'ERR_DISPOSED',
  preparedForeign: 'ERR_OPTIONS',
  preparedLayout: 'ERR_SHAPE',
  preparedShape: 'ERR_SHAPE',
} as const satisfies Record<string, ErrorCode>;

const LABEL_DEFECTS = {
  labelsType: 'ERR_DTYPE',
  labelsTensorDtype: 'ERR_DTYPE',
  labelsShape: 'ERR_SHAPE',
  labelsLength: 'ERR_SHAPE',
  labelsRange: 'ERR_SHAPE',
  labelsDisposed: 'ERR_DISPOSED',
  labelsNotObject: 'ERR_SHAPE',
  labelsFake: 'ERR_SHAPE',
  ignoreIndexBad: 'ERR_OPTIONS',
} as const satisfies Record<string, ErrorCode>;

const CALL_DEFECTS = { callNotObject: 'ERR_OPTIONS', callLayoutBad: 'ERR_OPTIONS', lossDisposed: 'ERR_DISPOSED' } as const satisfies Record<string, ErrorCode>;

type Slot = 'pred' | 'target' | 'labels' | 'call';
const DEFECTS: Array<{ kind: string; slot: Slot; code: ErrorCode }> = [
  ...Object.entries(OPERAND_DEFECTS).map(([kind, code]) => ({ kind, slot: 'pred' as Slot, code })),
  ...Object.entries({ ...OPERAND_DEFECTS, ...TARGET_ONLY_DEFECTS }).map(([kind, code]) => ({ kind, slot: 'target' as Slot, code })),
  ...Object.entries(LABEL_DEFECTS).map(([kind, code]) => ({ kind, slot: 'labels' as Slot, code })),
  ...Object.entries(CALL_DEFECTS).map(([kind, code]) => ({ kind, slot: 'call' as Slot, code })),
].filter((d) => d.kind !== 'wrongDevice' || CUDA.length > 0);

function applies(slot: Slot, method: Method): boolean {
  if (slot === 'target') return isPair(method);
  if (slot === 'labels') return isSeg(method);
  return true;
}

const inputCaseArb = fc.record({
  loss: fc.nat(POOL_OPTIONS.length - 1),
  method: fc.constantFrom(...METHODS),
  n: fc.integer({ min: 1, max: 2 }),
  extraH: fc.nat(3),
  extraW: fc.nat(3),
  predForm: fc.constantFrom('host32', 'host64', 'tensor32', 'tensor64'),
  targetForm: fc.constantFrom('host32', 'host64', 'tensor32', 'tensor64', 'prepared'),
  labelsForm: fc.constantFrom('int32', 'uint8', 'tensorInt32', 'tensorUint8'),
  callLayout: fc.constantFrom(undefined, 'nchw' as const, 'nhwc' as const),
  emptyCall: fc.boolean(),
  ignoreIndex: fc.oneof(fc.constant(undefined), fc.constantFrom(255, -1, 0, 1, 2, 2 ** 31 - 1, 2 ** 53 - 1, -(2 ** 53 - 1))),
  ignoredFraction: fc.constantFrom(0, 0.1, 0.5, 1),
  pred: dataArb,
  target: dataArb,
  relation: fc.constantFrom<TargetRelation>('independent', 'independent', 'same', 'near', 'zeros'),
  labelsSeed: fc.nat(),
  defects: fc.uniqueArray(
    fc.record({ defect: fc.nat(DEFECTS.length - 1), variant: fc.nat(50), at: fc.nat(1_000_000) }),
    { maxLength: 2, selector: (d) => d.defect },
  ),
});
type InputCase = typeof inputCaseArb extends fc.Arbitrary<infer T> ? T : never;

/** What a call is made of, before it is made. */
interface Draft {
  data: unknown;
  shape: unknown;
  /** 'host' | 'tensor' | 'prepared' */
  form: string;
  f64: boolean;
  replace?: { value: unknown };
  disposed?: boolean;
  intTensor?: boolean;
  device?: string;
}

const defectStats = new Map<string, number>();
const methodStats = new Map<string, number>();
const outcomeStats = new Map<string, number>();
const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

/** Applies one operand defect to a draft (shape in the call's layout; C at `channelAxis`). */
function applyOperandDefect(
  draft: Draft,
  kind: string,
  variant: number,
  at: number,
  ctx: { channelAxis: number; minSize: number; inChannels: number; layout: Layout; allowHuge: boolean },
): void {
  const pick = <T>(options: readonly T[]) => options[variant % options.length];
  const shape = draft.shape as number[];
  const data = draft.data as Float32Array;
  const isFloat = (v: unknown): v is Float32Array | Float64Array => v instanceof Float32Array || v instanceof Float64Array;
  const hAxis = ctx.layout === 'nhwc' ? 1 : 2;
  switch (kind) {
    case 'notTensorLike':
      draft.replace = { value: pick([null, undefined, 42, 'x', [1, 2], new Float32Array(4), {}, { data }, { shape }, () => 1, true, Symbol('x'), new Map()]) };
      return;
    case 'dataType':
      draft.form = 'host';
      draft.data = pick([
        Int32Array.from(data),
        Uint8Array.from(data),
        new Int16Array(data.length),
        new Uint8ClampedArray(data.length),
        new BigInt64Array(data.length),
        Array.from(data),
        new DataView(new ArrayBuffer(data.length * 4)),
        data.buffer,
        Buffer.from(data.buffer),
        'data',
        null,
        undefined,
        7,
      ]);
      return;
    case 'shapeBad': {
      draft.form = 'host';
      const broken = [...shape];
      broken[at % broken.length] = pick([1.5, -1, NaN, Infinity, '2', null, 2 ** 53, undefined, -Infinity, 1e21]) as number;
      draft.shape = pick([broken, broken, broken, 'abc', { length: 4 }, Int32Array.from(shape), null, undefined, 4, new Set(shape)]);
      return;
    }
    case 'length': {
      draft.form = 'host';
      const delta = pick([-1, 1, -data.length, 7, -3, 1000]);
      const n = Math.max(0, data.length + delta);
      draft.data = draft.f64 ? new Float64Array(n) : new Float32Array(n);
      return;
    }
    case 'rank': {
      if (!isFloat(draft.data)) return;
      const dims = pick([[], [count(shape)], shape.slice(1), [1, ...shape], [...shape, 1], [1, 1, ...shape]]);
      draft.shape = dims;
      draft.data = data.slice(0, count(dims));
      return;
    }
    case 'zeroDim': {
      const dims = [...shape];
      dims[at % 4] = 0;
      // Host arrays may also claim huge dimensions next to the zero: still no elements.
      if (draft.form === 'host' && ctx.allowHuge && variant % 3 === 0) dims[(at + 1) % 4] = pick([2 ** 40, 2 ** 53 - 1, 2 ** 31, 65536]);
      if (dims[(at + 1) % 4] === 0) dims[(at + 1) % 4] = 1;
      draft.shape = dims;
      draft.data = draft.f64 ? new Float64Array(0) : new Float32Array(0);
      return;
    }
    case 'channels': {
      const dims = [...shape];
      dims[ctx.channelAxis] = ctx.inChannels + 1 + (variant % 3);
      draft.shape = dims;
      draft.data = materialize({ seed: at, kind: 'randn', scale: 1 }, count(dims));
      return;
    }
    case 'tooSmall': {
      const dims = [...shape];
      dims[hAxis + (variant % 2)] = 1 + (at % (ctx.minSize - 1));
      draft.shape = dims;
      draft.data = materialize({ seed: at, kind: 'randn', scale: 1 }, count(dims));
      return;
    }
    case 'nonFinite': {
      if (!isFloat(draft.data)) return;
      const poisoned = draft.data.slice();
      const value = pick([NaN, Infinity, -Infinity]);
      const hits = 1 + (variant % 3);
      for (let i = 0; i < hits; i++) poisoned[(at + i * 7919) % poisoned.length] = value;
      draft.data = poisoned;
      return;
    }
    case 'tensorDtype':
      draft.form = 'tensor';
      draft.intTensor = true;
      {
        const source = isFloat(draft.data) ? draft.data : new Float32Array(count(shape) || 0);
        draft.data = variant % 2 ? Int32Array.from(source) : Uint8Array.from(source);
      }
      return;
    case 'disposedTensor':
      draft.form = 'tensor';
      draft.disposed = true;
      return;
    case 'fakeTensor':
      draft.replace = { value: Object.create(Tensor.prototype) };
      return;
    case 'wrongDevice':
      draft.form = 'tensor';
      draft.device = CUDA[variant % CUDA.length];
      return;
  }
  throw new Error(`unknown operand defect ${kind}`);
}

/** Operand defects apply in this order: those that rebuild the data from the shape come first. */
const DEFECT_ORDER = ['rank', 'channels', 'tooSmall', 'shapeMismatch', 'nonFinite', 'zeroDim', 'length', 'shapeBad', 'dataType', 'tensorDtype', 'disposedTensor', 'wrongDevice', 'fakeTensor', 'notTensorLike'];
const inOrder = <D extends { kind: string }>(list: D[]) => [...list].sort((a, b) => DEFECT_ORDER.indexOf(a.kind) - DEFECT_ORDER.indexOf(b.kind));

/** Makes the value of a draft; Tensors go into `owned` to be disposed after the case. */
function realize(draft: Draft, owned: Array<{ dispose(): void }>): unknown {
  if (draft.replace) return draft.replace.value;
  let data = draft.data;
  if (draft.f64 && data instanceof Float32Array) data = Float64Array.from(data);
  if (draft.form === 'tensor') {
    let t: Tensor;
    try {
      t = Tensor.from(data as Float32Array, draft.shape as number[], { device: (draft.device ?? 'cpu') as 'cpu' });
    } catch (error) {
      // Another defect of the same operand (a bad shape or length) cannot be a Tensor: pass it as a host value.
      if (error instanceof PerceptualLossError) return { data, shape: draft.shape };
      throw error;
    }
    owned.push(t);
    if (draft.disposed) t.dispose();
    return t;
  }
  return { data, shape: draft.shape };
}

async function runInputCase(c: InputCase): Promise<void> {
  const entry = pool[c.loss];
  const method = c.method;
  bump(methodStats, method);
  const layout: Layout = c.callLayout ?? entry.layout;
  const C = entry.js.inChannels;
  const H = entry.minSize + c.extraH;
  const W = entry.minSize + c.extraW;
  const shape = layout === 'nhwc' ? [c.n, H, W, C] : [c.n, C, H, W];
  const ctx = { channelAxis: layout === 'nhwc' ? 3 : 1, minSize: entry.minSize, inChannels: C, layout, allowHuge: true };
  const predData = materialize(c.pred, count(shape));
  const targetData = targetFor(predData, c.relation, c.target);
  const owned: Array<{ dispose(): void }> = [];
  const codes = new Set<ErrorCode>();
  const defects = c.defects
    .map((d) => ({ ...DEFECTS[d.defect], variant: d.variant, at: d.at }))
    .filter((d) => applies(d.slot, method) && (d.kind !== 'tooSmall' || entry.minSize > 1));
  for (const d of defects) {
    codes.add(d.code);
    bump(defectStats, `${d.slot}.${d.kind}`);
  }
  try {
    // ---- the loss, and the call options
    let loss = entry.loss;
    const lossDisposed = defects.some((d) => d.kind === 'lossDisposed');
    if (lossDisposed) loss = new PerceptualLoss(entry.options);
    let call: unknown = c.callLayout !== undefined ? { layout: c.callLayout } : c.emptyCall ? {} : undefined;
    const callDefect = defects.find((d) => d.kind === 'callNotObject' || d.kind === 'callLayoutBad');
    if (callDefect?.kind === 'callNotObject') call = ['nhwc', 1, true, null, () => ({ layout: 'nhwc' }), Symbol('call')][callDefect.variant % 6];
    if (callDefect?.kind === 'callLayoutBad') call = { layout: ['NHWC', 'chw', 'hwc', 1, null, ''][callDefect.variant % 6] };

    // ---- pred (x, logits)
    const predDraft: Draft = { data: predData, shape, form: c.predForm.startsWith('tensor') ? 'tensor' : 'host', f64: c.predForm.endsWith('64') };
    const predDefects = inOrder(defects.filter((d) => d.slot === 'pred'));
    const tensorMaking = (list: typeof defects) => list.some((d) => ['tensorDtype', 'disposedTensor', 'wrongDevice'].includes(d.kind));
    for (const d of predDefects) applyOperandDefect(predDraft, d.kind, d.variant, d.at, { ...ctx, allowHuge: !tensorMaking(predDefects) });
    const pred = realize(predDraft, owned);

    // ---- target
    let target: unknown;
    if (isPair(method)) {
      const targetDefects = defects.filter((d) => d.slot === 'target');
      const preparedDefect = targetDefects.find((d) => d.kind.startsWith('prepared'));
      const plainDefects = inOrder(targetDefects.filter((d) => !d.kind.startsWith('prepared')));
      let form = c.targetForm;
      if (preparedDefect) form = 'prepared';
      else if (form === 'prepared' && plainDefects.length > 0) form = 'host32';
      const draft: Draft = { data: targetData, shape, form: form.startsWith('tensor') ? 'tensor' : 'host', f64: form.endsWith('64') };
      for (const d of plainDefects) {
        if (d.kind === 'shapeMismatch') {
          const dims = [...shape];
          dims[(d.at % 2 === 0 ? 0 : layout === 'nhwc' ? 1 : 2) + (d.at % 2 === 0 ? 0 : d.variant % 2)] += 1 + (d.variant % 2);
          draft.shape = dims;
          draft.data = materialize({ seed: d.at, kind: 'randn', scale: 1 }, count(dims));
        } else applyOperandDefect(draft, d.kind, d.variant, d.at, { ...ctx, allowHuge: !tensorMaking(plainDefects) });
      }
      if (form === 'prepared') {
        const host = { data: targetData, shape };
        const callLayout = { layout };
        switch (preparedDefect?.kind) {
          case undefined:
            target = loss.prepareTarget(host, callLayout);
            break;
          case 'preparedDisposed':
            target = loss.prepareTarget(host, callLayout);
            (target as PreparedTarget).dispose();
            break;
          case 'preparedForeign': {
            const other = new PerceptualLoss(entry.options);
            target = other.prepareTarget(host, callLayout);
            owned.push(other);
            break;
          }
          case 'preparedLayout': {
            const otherLayout: Layout = layout === 'nhwc' ? 'nchw' : 'nhwc';
            const [a, b, cc, dd] = shape;
            // The same data read in the other layout: its own shape must then also be valid there.
            const otherShape = layout === 'nhwc' ? [a, dd, b, cc] : [a, cc, dd, b];
            target = loss.prepareTarget({ data: targetData, shape: otherShape }, { layout: otherLayout });
            break;
          }
          case 'preparedShape': {
            const dims = [...shape];
            dims[0] += 1;
            target = loss.prepareTarget({ data: materialize({ seed: preparedDefect.at, kind: 'randn', scale: 1 }, count(dims)), shape: dims }, callLayout);
            break;
          }
        }
        owned.push(target as PreparedTarget);
      } else target = realize(draft, owned);
    }

    // ---- labels and ignoreIndex
    let labels: unknown;
    let segOptions: unknown = call;
    let ignoreIndex = c.ignoreIndex ?? 255;
    let labelValues: Int32Array | undefined;
    if (isSeg(method)) {
      const total = c.n * H * W;
      const rand = mulberry(c.labelsSeed);
      const isUint8 = c.labelsForm.toLowerCase().includes('uint8');
      const storable = isUint8 ? ignoreIndex >= 0 && ignoreIndex <= 255 : ignoreIndex >= -(2 ** 31) && ignoreIndex < 2 ** 31;
      labelValues = Int32Array.from({ length: total }, () => (storable && rand() < c.ignoredFraction ? ignoreIndex : Math.floor(rand() * C)));
      const labelShape = [c.n, H, W];
      const labelDraft = { data: (isUint8 ? Uint8Array.from(labelValues) : labelValues) as unknown, shape: labelShape as unknown, tensor: c.labelsForm.startsWith('tensor') };
      let replaced: { value: unknown } | undefined;
      let disposeLabels = false;
      for (const d of defects.filter((d) => d.slot === 'labels')) {
        const pick = <T>(options: readonly T[]) => options[d.variant % options.length];
        switch (d.kind) {
          case 'labelsType':
            labelDraft.tensor = false;
            labelDraft.data = pick([Float32Array.from(labelValues), Float64Array.from(labelValues), Int16Array.from(labelValues), new Uint16Array(total), new Int8Array(total), new Uint8ClampedArray(total), new BigInt64Array(total), Array.from(labelValues), null]);
            break;
          case 'labelsTensorDtype':
            labelDraft.tensor = true;
            labelDraft.data = d.variant % 2 ? Float32Array.from(labelValues) : Float64Array.from(labelValues);
            break;
          case 'labelsShape': {
            const dims = pick([[c.n, H, W + 1], [c.n + 1, H, W], [c.n, 1, H, W], [c.n * H, W], [c.n, W, H], [c.n, H, W, 1]]);
            if (dims.join() === labelShape.join()) dims.push(1);
            labelDraft.shape = dims;
            labelDraft.data = new Int32Array(count(dims));
            break;
          }
          case 'labelsLength':
            labelDraft.tensor = false;
            labelDraft.data = new Int32Array(Math.max(0, total + pick([-1, 1, 5, -total])));
            break;
          case 'labelsRange': {
            const bad = isUint8 ? C + (d.variant % (200 - C)) : pick([C, C + 1, -1, -7, 2 ** 31 - 2, -(2 ** 31)]);
            if (bad === ignoreIndex) ignoreIndex = bad === -1 ? -2 : -1;
            const values = (labelDraft.data as Int32Array | Uint8Array).slice();
            values[d.at % values.length] = bad;
            labelDraft.data = values;
            break;
          }
          case 'labelsDisposed':
            labelDraft.tensor = true;
            disposeLabels = true;
            break;
          case 'labelsNotObject':
            replaced = { value: pick([null, undefined, 3, 'labels', labelValues, [labelValues]]) };
            break;
          case 'labelsFake':
            replaced = { value: Object.create(Tensor.prototype) };
            break;
          case 'ignoreIndexBad':
            ignoreIndex = pick([1.5, NaN, Infinity, -Infinity, '255', 2 ** 53, -(2 ** 53), true, {}, [255]]) as number;
            break;
        }
      }
      if (replaced) labels = replaced.value;
      else {
        labels = { data: labelDraft.data, shape: labelDraft.shape };
        if (labelDraft.tensor) {
          try {
            const t = Tensor.from(labelDraft.data as Int32Array, labelDraft.shape as number[], { device: 'cpu' });
            owned.push(t);
            if (disposeLabels) t.dispose();
            labels = t;
          } catch (error) {
            // Another defect (a length, a type) that no Tensor can have: the host value carries it.
            if (!(error instanceof PerceptualLossError)) throw error;
          }
        }
      }
      const ignoreGiven = c.ignoreIndex !== undefined || defects.some((d) => d.kind === 'ignoreIndexBad' || d.kind === 'labelsRange');
      if (callDefect) segOptions = call;
      else if (ignoreGiven || call !== undefined) segOptions = { ...(call as object), ...(ignoreGiven ? { ignoreIndex } : {}) };
    }

    // ---- the call
    const invoke = (): unknown => {
      switch (method) {
        case 'loss':
        case 'lossAsync':
        case 'lossAndGrad':
        case 'lossAndGradAsync':
          return (loss[method] as (p: unknown, t: unknown, o: unknown) => unknown)(pred, target, call);
        case 'features':
        case 'featuresAsync':
        case 'prepareTarget':
          return (loss[method] as (x: unknown, o: unknown) => unknown)(pred, call);
        case 'lossAndGradSegmentation':
        case 'lossAndGradSegmentationAsync':
          return (loss[method] as (l: unknown, y: unknown, o: unknown) => unknown)(pred, labels, segOptions);
      }
    };
    if (lossDisposed) loss.dispose();

    if (codes.size > 0) {
      const error = isAsync(method) ? await expectRejectsCode(invoke, [...codes]) : expectThrowsCode(invoke, [...codes]);
      bump(outcomeStats, error.code);
      entry.expectUnchanged();
      return;
    }
    bump(outcomeStats, 'valid');
    const result = isAsync(method) ? await (invoke() as Promise<unknown>) : invoke();
    try {
      const precise = isSeg(method) ? comparable(entry.dtype, [c.pred], c.pred) : comparable(entry.dtype, isPair(method) ? [c.pred, c.target] : [c.pred]);
      const e: Expectation = { dtype: entry.dtype, js: entry.js, convs: entry.convs, precise };
      const nchw = nchwShape(shape, layout);
      const x = toNchw64(predData, shape, layout);
      if (isPair(method)) {
        const expected = ref.lossAndGrad(entry.js, entry.convs, x, toNchw64(targetData, shape, layout));
        if (method === 'loss' || method === 'lossAsync') expectLoss(result, expected, e.dtype, 'loss', precise);
        else {
          const r = result as { loss: unknown; grad: Tensor | Float32Array | Float64Array; terms: Array<{ name: string; feature: number; style: number }> };
          expectLoss(r.loss, expected, e.dtype, 'loss', precise);
          expectTerms(r.terms, expected, e);
          if (predDraft.form === 'tensor') {
            expect(r.grad).toBeInstanceOf(Tensor);
            expect((r.grad as Tensor).shape).toEqual(shape);
            expect((r.grad as Tensor).dtype).toBe(predDraft.f64 ? 'float64' : 'float32');
          } else expect(r.grad).toBeInstanceOf(predDraft.f64 ? Float64Array : Float32Array);
          expectGrad(hostOf(r.grad), fromNchw(expected.grad, nchw, layout), e.dtype, 'grad', gradComparable(e.dtype, entry.js.criterion, precise));
        }
      } else if (method === 'features' || method === 'featuresAsync') {
        expectFeatures(result as Array<{ name: string; shape: number[]; data: unknown }>, x, layout, e);
      } else if (method === 'prepareTarget') {
        const prepared = result as PreparedTarget;
        expect(prepared).toBeInstanceOf(PreparedTarget);
        expect(prepared.shape).toEqual(shape);
        expect(prepared.layout).toBe(layout);
        const other = { data: targetData, shape };
        const plain = loss.loss(other, pred as HostTensor, { layout });
        const viaPrepared = loss.loss(other, prepared, { layout });
        if (typeof plain === 'number') expect(viaPrepared).toBe(plain);
        else expectSameBits(viaPrepared as Float32Array, plain, 'prepared loss');
      } else {
        const expected = ref.segmentation(entry.js, entry.convs, x, labelValues!, ignoreIndex);
        const r = result as { loss: unknown; grad: Tensor | Float32Array | Float64Array; terms: Array<{ name: string; feature: number; style: number }> };
        expectLoss(r.loss, expected, e.dtype, 'loss', precise);
        expectTerms(r.terms, expected, e);
        expectGrad(hostOf(r.grad), fromNchw(expected.grad, nchw, layout), e.dtype, 'grad', gradComparable(e.dtype, entry.js.criterion, precise), expected.gradScale);
      }
    } finally {
      release(result);
    }
  } finally {
    for (const o of owned) o.dispose();
  }
}

describe('inputs at every method, sync and async', () => {
  beforeAll(() => {
    for (const p of POOL_OPTIONS) pool.push(makePoolEntry(p));
  });

  it('gives the code of each defect, or the reference result; the loss stays usable', async () => {
    await fc.assert(fc.asyncProperty(inputCaseArb, counted('inputs', runInputCase)), fuzzParams(4000));
  });

  it('exercised every method, every defect and every error code', () => {
    console.log(`inputs: outcomes ${JSON.stringify(Object.fromEntries(outcomeStats))}`);
    const minimum = Math.max(1, Math.round(10 * RUNS_SCALE));
    for (const m of METHODS) expect(methodStats.get(m) ?? 0, m).toBeGreaterThanOrEqual(minimum);
    for (const d of DEFECTS) expect(defectStats.get(`${d.slot}.${d.kind}`) ?? 0, `${d.slot}.${d.kind}`).toBeGreaterThanOrEqual(Math.min(minimum, 5));
    const codes: string[] = ['valid', 'ERR_OPTIONS', 'ERR_SHAPE', 'ERR_DTYPE', 'ERR_DISPOSED', 'ERR_NONFINITE'];
    if (CUDA.length > 0) codes.push('ERR_DEVICE');
    for (const code of codes) expect(outcomeStats.get(code) ?? 0, code).toBeGreaterThanOrEqual(minimum);
  });
});

// ================================================================== valid cases through every path

const pathCaseArb = fc.record({
  config: tinyConfigArb,
  n: fc.integer({ min: 1, max: 3 }),
  extraH: fc.nat(5),
  extraW: fc.nat(5),
  pred: dataArb,
  target: dataArb,
  relation: fc.constantFrom<TargetRelation>('independent', 'independent', 'same', 'near', 'zeros'),
  paths: fc.record({ tensor: fc.boolean(), otherLayout: fc.boolean(), async: fc.boolean(), prepared: fc.boolean(), host64: fc.boolean(), features: fc.boolean() }),
});

async function runPathCase(c: typeof pathCaseArb extends fc.Arbitrary<infer T> ? T : never): Promise<void> {
  const cfg: TinyConfig = c.config;
  const loss = new PerceptualLoss({ ...cfg.options, device: 'cpu' });
  const owned: Array<{ dispose(): void }> = [loss];
  try {
    const layout = cfg.layout;
    const C = cfg.js.inChannels;
    const [H, W] = [cfg.minSize + c.extraH, cfg.minSize + c.extraW];
    const shape = layout === 'nhwc' ? [c.n, H, W, C] : [c.n, C, H, W];
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
      const other: Layout = layout === 'nhwc' ? 'nchw' : 'nhwc';
      const move = (data: Float32Array) =>
        layout === 'nhwc' ? ref.transpose(data, shape, (k) => new Float32Array(k)) : ref.transpose(data, shape, (k) => new Float32Array(k), true);
      const otherShape = layout === 'nhwc' ? nchw : [nchw[0], nchw[2], nchw[3], nchw[1]];
      const a = loss.lossAndGrad({ data: move(p), shape: otherShape }, { data: move(t), shape: otherShape }, { layout: other });
      sameLoss(a.loss, `layout ${other}`);
      const back = other === 'nhwc' ? ref.transpose(a.grad, otherShape, (k) => new Float32Array(k)) : ref.transpose(a.grad, otherShape, (k) => new Float32Array(k), true);
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
    await fc.assert(fc.asyncProperty(pathCaseArb, counted('paths', runPathCase)), fuzzParams(2500));
  });
});

// ================================================================== segmentation and ignoreIndex

const segCaseArb = fc.record({
  config: tinyConfigArb,
  n: fc.integer({ min: 1, max: 3 }),
  extraH: fc.nat(4),
  extraW: fc.nat(4),
  logits: dataArb,
  labelsSeed: fc.nat(),
  ignoreIndex: fc.oneof(fc.constant(undefined), fc.constantFrom(255, -1, 0, 1, 2, 7, 2 ** 31 - 1, -(2 ** 53 - 1))),
  ignoredFraction: fc.constantFrom(0, 0.05, 0.3, 1),
  labelsForm: fc.constantFrom('int32', 'uint8', 'tensorInt32', 'tensorUint8'),
  logitsTensor: fc.boolean(),
  async: fc.boolean(),
  otherLayout: fc.boolean(),
});

async function runSegCase(c: typeof segCaseArb extends fc.Arbitrary<infer T> ? T : never): Promise<void> {
  const cfg = c.config;
  const loss = new PerceptualLoss({ ...cfg.options, device: 'cpu' });
  const owned: Array<{ dispose(): void }> = [loss];
  try {
    const layout = cfg.layout;
    const C = cfg.js.inChannels;
    const [H, W] = [cfg.minSize + c.extraH, cfg.minSize + c.extraW];
    const shape = layout === 'nhwc' ? [c.n, H, W, C] : [c.n, C, H, W];
    const nchw = nchwShape(shape, layout);
    const z = materialize(c.logits, count(shape));
    const ignoreIndex = c.ignoreIndex ?? 255;
    const uint8 = c.labelsForm.toLowerCase().includes('uint8');
    const storable = uint8 ? ignoreIndex >= 0 && ignoreIndex <= 255 : Math.abs(ignoreIndex) < 2 ** 31;
    const rand = mulberry(c.labelsSeed);
    const values = Int32Array.from({ length: c.n * H * W }, () => (storable && rand() < c.ignoredFraction ? ignoreIndex : Math.floor(rand() * C)));
    const typed = uint8 ? Uint8Array.from(values) : values;
    let labels: unknown = { data: typed, shape: [c.n, H, W] };
    if (c.labelsForm.startsWith('tensor')) {
      const t = Tensor.from(typed, [c.n, H, W], { device: 'cpu' });
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
    const plain = loss.lossAndGradSegmentation({ data: z, shape }, { data: typed, shape: [c.n, H, W] } as never, options);
    if (typeof plain.loss === 'number') expect(r.loss).toBe(plain.loss);
    else expectSameBits(r.loss as Float32Array, plain.loss, 'segmentation loss');
    expectSameBits(grad, plain.grad, 'segmentation grad');
    if (c.otherLayout) {
      const other: Layout = layout === 'nhwc' ? 'nchw' : 'nhwc';
      const otherShape = layout === 'nhwc' ? nchw : [nchw[0], nchw[2], nchw[3], nchw[1]];
      const moved = layout === 'nhwc' ? ref.transpose(z, shape, (k) => new Float32Array(k)) : ref.transpose(z, shape, (k) => new Float32Array(k), true);
      const a = loss.lossAndGradSegmentation({ data: moved, shape: otherShape }, { data: typed, shape: [c.n, H, W] } as never, { ...options, layout: other });
      if (typeof plain.loss === 'number') expect(a.loss).toBe(plain.loss);
      else expectSameBits(a.loss as Float32Array, plain.loss, 'segmentation loss in the other layout');
    }
  } finally {
    for (const o of owned.reverse()) o.dispose();
  }
}

describe('segmentation', () => {
  it('equals the reference for random labels, ignoreIndex values and ignored fractions, through every path', async () => {
    await fc.assert(fc.asyncProperty(segCaseArb, counted('segmentation', runSegCase)), fuzzParams(1000));
  });
});

// ================================================================== checkFinite: false

const nonFiniteCaseArb = fc.record({
  config: tinyConfigArb,
  n: fc.integer({ min: 1, max: 3 }),
  extra: fc.nat(3),
  pred: dataArb,
  target: dataArb,
  poison: fc.constantFrom('pred', 'target'),
  value: fc.constantFrom(NaN, Infinity, -Infinity),
  sample: fc.nat(2),
  at: fc.nat(1_000_000),
  method: fc.constantFrom('lossAndGrad', 'lossAndGradAsync', 'loss', 'features', 'tensor'),
});

async function runNonFiniteCase(c: typeof nonFiniteCaseArb extends fc.Arbitrary<infer T> ? T : never): Promise<void> {
  const cfg = c.config;
  const loss = new PerceptualLoss({ ...cfg.options, device: 'cpu', checkFinite: false });
  const owned: Array<{ dispose(): void }> = [loss];
  try {
    const layout = cfg.layout;
    const C = cfg.js.inChannels;
    const size = cfg.minSize + c.extra;
    const shape = layout === 'nhwc' ? [c.n, size, size, C] : [c.n, C, size, size];
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
    if (c.method === 'loss') result = { loss: loss.loss(pred, target) as number | Float32Array, grad: new Float32Array(0) };
    else if (c.method === 'lossAndGradAsync') result = (await loss.lossAndGradAsync(pred, target)) as typeof result;
    else if (c.method === 'tensor') {
      const tp = Tensor.from(p, shape, { device: 'cpu' });
      const tt = Tensor.from(t, shape, { device: 'cpu' });
      owned.push(tp, tt);
      const a = loss.lossAndGrad(tp, tt);
      owned.push(a.grad);
      result = { loss: a.loss as number | Float32Array, grad: a.grad.toArray() as Float32Array };
    } else result = loss.lossAndGrad(pred, target) as typeof result;

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
    await fc.assert(fc.asyncProperty(nonFiniteCaseArb, counted('nonFinite', runNonFiniteCase)), fuzzParams(500));
    // Not vacuous: most NaN inputs gave a NaN loss.
    const nanLoss = nonFiniteStats.get('nan loss') ?? 0;
    expect(nanLoss).toBeGreaterThan(2 * (nonFiniteStats.get('finite loss') ?? 0));
  });
});

// ================================================================== Tensor

const tensorCaseArb = fc.record({
  type: fc.constantFrom('Float32Array', 'Float64Array', 'Int32Array', 'Uint8Array', 'Buffer', 'Int16Array', 'Uint8ClampedArray', 'BigInt64Array', 'Array', 'DataView', 'null', 'string'),
  dims: fc.array(fc.nat(4), { maxLength: 5 }),
  shapeDefect: fc.constantFrom(null, null, null, 'fraction', 'negative', 'nan', 'string', 'notArray', 'length', 'unsafe'),
  options: fc.constantFrom<unknown>(undefined, {}, { device: 'cpu' }, { device: 'auto' }, { device: 'cuda' }, { device: 'cuda:3' }, { device: 'tpu' }, { device: 5 }, null, 'cpu', 7),
  fill: fc.nat(),
  special: fc.boolean(),
});

describe('Tensor', () => {
  it('Tensor.from validates its arguments; a valid Tensor keeps its bits, and every member refuses it once disposed', () => {
    const valid = ['Float32Array', 'Float64Array', 'Int32Array', 'Uint8Array', 'Buffer'];
    fc.assert(
      fc.property(
        tensorCaseArb,
        counted('tensor', (c) => {
          const codes = new Set<ErrorCode>();
          let shape: unknown = c.dims;
          let length = count(c.dims);
          switch (c.shapeDefect) {
            case 'fraction':
              shape = [...c.dims, 1.5];
              break;
            case 'negative':
              shape = [...c.dims, -1];
              break;
            case 'nan':
              shape = [...c.dims, NaN];
              break;
            case 'string':
              shape = [...c.dims.map(String), '1'];
              break;
            case 'notArray':
              shape = Int32Array.from(c.dims);
              break;
            case 'unsafe':
              shape = [...c.dims, 2 ** 53];
              break;
            case 'length':
              length += 1 + (c.fill % 3);
              break;
          }
          if (c.shapeDefect !== null) codes.add('ERR_SHAPE');
          const rand = mulberry(c.fill);
          const values = Array.from({ length }, (_, i) => (c.special && i % 3 === 0 ? [NaN, Infinity, -0, 1e-45][i % 4] : Math.floor(rand() * 200) - 50 + rand()));
          const make: Record<string, () => unknown> = {
            Float32Array: () => Float32Array.from(values),
            Float64Array: () => Float64Array.from(values),
            Int32Array: () => Int32Array.from(values.map((v) => (Number.isFinite(v) ? Math.trunc(v) : 0))),
            Uint8Array: () => Uint8Array.from(values.map((v) => (Number.isFinite(v) ? Math.abs(Math.trunc(v)) % 256 : 0))),
            Buffer: () => Buffer.from(values.map((v) => (Number.isFinite(v) ? Math.abs(Math.trunc(v)) % 256 : 0))),
            Int16Array: () => new Int16Array(length),
            Uint8ClampedArray: () => new Uint8ClampedArray(length),
            BigInt64Array: () => new BigInt64Array(length),
            Array: () => values,
            DataView: () => new DataView(new ArrayBuffer(length * 4)),
            null: () => null,
            string: () => 'data',
          };
          const data = make[c.type]();
          if (!valid.includes(c.type)) codes.add('ERR_DTYPE');
          const o = c.options as { device?: unknown } | null | undefined;
          if (o === null || (o !== undefined && typeof o !== 'object')) codes.add('ERR_OPTIONS');
          else if (o?.device !== undefined && !['cpu', 'auto', 'cuda', 'cuda:3'].includes(o.device as string)) codes.add('ERR_OPTIONS');
          else if (o?.device === 'cuda' && CUDA.length === 0) codes.add('ERR_DEVICE');
          else if (o?.device === 'cuda:3' && CUDA.length <= 3) codes.add('ERR_DEVICE');
          if (codes.size > 0) {
            expectThrowsCode(() => Tensor.from(data as Float32Array, shape as number[], c.options as {}), [...codes]);
            return;
          }
          const live = native().liveTensors();
          const t = Tensor.from(data as Float32Array, shape as number[], c.options as {});
          expect(native().liveTensors()).toBe(live + 1);
          const typeName = c.type === 'Buffer' ? 'Uint8Array' : c.type;
          expect(t.shape).toEqual(c.dims);
          const dtypes: Record<string, string> = { Float32Array: 'float32', Float64Array: 'float64', Int32Array: 'int32', Uint8Array: 'uint8' };
          expect(t.dtype).toBe(dtypes[typeName]);
          expect(t.device).toBe(o?.device === 'cpu' || CUDA.length === 0 ? 'cpu' : 'cuda:0');
          const back = t.toArray();
          expect(back.constructor.name).toBe(typeName);
          expectSameBits(back, c.type === 'Buffer' ? new Uint8Array(data as Buffer) : (data as Float32Array), 'toArray()');
          // The copy is the Tensor's own: changing the source changes nothing.
          if ((data as Float32Array).length > 0) {
            (data as Float32Array)[0] = 7;
            expect(t.toArray()[0]).toBe(back[0]);
          }
          expect(t.disposed).toBe(false);
          if (c.fill % 2) t.dispose();
          else t[Symbol.dispose]();
          expect(native().liveTensors()).toBe(live);
          expect(t.disposed).toBe(true);
          for (const member of [() => t.shape, () => t.dtype, () => t.device, () => t.toArray()]) expectThrowsCode(member, ['ERR_DISPOSED']);
          t.dispose();
          expect(native().liveTensors()).toBe(live);
        }),
      ),
      fuzzParams(600),
    );
  });
});

// ================================================================== the other methods

const otherCaseArb = fc.record({
  config: tinyConfigArb,
  op: fc.constantFrom('reseed', 'setNumThreads', 'load', 'disposed'),
  seed: fc.oneof(fc.nat(1000), fc.maxSafeNat(), fc.constantFrom<unknown>(-1, 1.5, NaN, 2 ** 53, '1', null, undefined, Infinity, {}, 1n)),
  threads: fc.constantFrom<unknown>(1, 0, -1, 1.5, 1025, NaN, '2', null, undefined, Infinity, 2 ** 53),
  loadOptions: fc.constantFrom<unknown>(null, 5, 'vgg19', true, { inChannels: 0 }, { arch: 'vgg20' }, { criterion: 'mse' }, { bogus: 1 }),
  member: fc.constantFrom('stateDict', 'save', 'reseed', 'prepareTarget', 'options'),
});

describe('other methods', () => {
  it('reseed, setNumThreads, load options and a disposed loss: PerceptualLossError with the right code, or the documented result', () => {
    fc.assert(
      fc.property(
        otherCaseArb,
        counted('other', (c) => {
          const loss = new PerceptualLoss({ ...c.config.options, device: 'cpu' });
          try {
            const before = loss.stateDict();
            const unchanged = () => {
              const now = loss.stateDict();
              for (const [name, value] of Object.entries(before)) expectSameBits(now[name].data, value.data, name);
            };
            switch (c.op) {
              case 'reseed': {
                const valid = typeof c.seed === 'number' && Number.isSafeInteger(c.seed) && c.seed >= 0;
                if (!valid) {
                  expectThrowsCode(() => loss.reseed(c.seed as number), ['ERR_OPTIONS']);
                  unchanged();
                  expect(loss.options.seed).toBe(c.config.options.seed);
                  return;
                }
                loss.reseed(c.seed as number);
                expect(loss.options.seed).toBe(c.seed);
                const fresh = new PerceptualLoss({ ...c.config.options, device: 'cpu', seed: c.seed as number });
                const want = fresh.stateDict();
                fresh.dispose();
                for (const [name, value] of Object.entries(loss.stateDict())) expectSameBits(value.data, want[name].data, name);
                return;
              }
              case 'setNumThreads': {
                if (c.threads === 1) {
                  setNumThreads(1);
                  expect(runtime().numThreads).toBe(1);
                } else expectThrowsCode(() => setNumThreads(c.threads as number), ['ERR_OPTIONS']);
                return;
              }
              case 'load': {
                // Invalid load options are refused before the file is read (it does not exist).
                expectThrowsCode(() => PerceptualLoss.load('/nonexistent/never.safetensors', c.loadOptions as {}), c.loadOptions !== null && typeof c.loadOptions === 'object' ? ['ERR_FILE', 'ERR_OPTIONS'] : ['ERR_OPTIONS']);
                return;
              }
              case 'disposed': {
                loss.dispose();
                const calls: Record<string, () => unknown> = {
                  stateDict: () => loss.stateDict(),
                  save: () => loss.save(`${os.tmpdir()}/gpl-fuzz-never-written.safetensors`),
                  reseed: () => loss.reseed(1),
                  prepareTarget: () => loss.prepareTarget({ data: new Float32Array(64), shape: [1, c.config.js.inChannels, 8, 8] }),
                };
                if (c.member === 'options') {
                  // The options stay readable after dispose(): they describe what the loss was.
                  expect(loss.options.inChannels).toBe(c.config.js.inChannels);
                  return;
                }
                expectThrowsCode(calls[c.member], ['ERR_DISPOSED']);
                return;
              }
            }
          } finally {
            loss.dispose();
          }
        }),
      ),
      fuzzParams(400),
    );
  });
});

// ================================================================== resource exhaustion

describe('resource exhaustion', () => {
  // A loss whose first conv has 65536 channels: a modest input needs more memory than the
  // machine has. The side is chosen so that the conv output alone is twice the RAM: even an
  // allocation that slipped past the estimate could not succeed.
  const WIDE: PerceptualLossOptions = { inChannels: 1, arch: [65536], device: 'cpu' };
  const side = Math.ceil(Math.sqrt((2 * os.totalmem()) / (65536 * 4))) + 1;
  let wide: PerceptualLoss;
  let probe: number;
  const tiny = { data: Float32Array.from([0.5, -1, 2, 0.25]), shape: [1, 1, 2, 2] };
  beforeAll(() => {
    wide = new PerceptualLoss(WIDE);
    probe = wide.loss(tiny, { data: new Float32Array(4), shape: [1, 1, 2, 2] }) as number;
    expect(Number.isFinite(probe)).toBe(true);
  });
  afterAll(() => wide?.dispose());

  const caseArb = fc.record({
    method: fc.constantFrom(...METHODS),
    n: fc.integer({ min: 1, max: 2 }),
    h: fc.integer({ min: side, max: side + 200 }),
    w: fc.integer({ min: side, max: side + 200 }),
    resident: fc.boolean(),
    nhwc: fc.boolean(),
  });

  it('refuses a step whose buffers exceed memory with ERR_OUT_OF_MEMORY before allocating, host or resident; the loss and the process stay usable', async () => {
    const rssBefore = process.memoryUsage().rss;
    await fc.assert(
      fc.asyncProperty(
        caseArb,
        counted('memory', async (c) => {
          const shape = c.nhwc ? [c.n, c.h, c.w, 1] : [c.n, 1, c.h, c.w];
          const data = new Float32Array(count(shape));
          const owned: Tensor[] = [];
          const x = c.resident ? Tensor.from(data, shape, { device: 'cpu' }) : { data, shape };
          if (x instanceof Tensor) owned.push(x);
          const call = { layout: c.nhwc ? ('nhwc' as const) : ('nchw' as const) };
          const labels = { data: new Int32Array(c.n * c.h * c.w), shape: [c.n, c.h, c.w] };
          const invoke = () => {
            switch (c.method) {
              case 'features':
              case 'featuresAsync':
              case 'prepareTarget':
                return wide[c.method](x as HostTensor, call);
              case 'lossAndGradSegmentation':
              case 'lossAndGradSegmentationAsync':
                return wide[c.method](x as HostTensor, labels, call);
              default:
                return wide[c.method](x as HostTensor, x as HostTensor, call);
            }
          };
          try {
            const error = isAsync(c.method) ? await expectRejectsCode(invoke, ['ERR_OUT_OF_MEMORY']) : expectThrowsCode(invoke, ['ERR_OUT_OF_MEMORY']);
            expect(error.message).toMatch(/GiB/);
            expect(wide.loss(tiny, { data: new Float32Array(4), shape: [1, 1, 2, 2] })).toBe(probe);
          } finally {
            owned.forEach((t) => t.dispose());
          }
        }),
      ),
      fuzzParams(200),
    );
    // Nothing of the refused steps was allocated: the inputs themselves are a few MB each.
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 * 2 ** 20);
  });
});

// ================================================================== zero differences

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

// ================================================================== PyTorch

describe('PyTorch (scripts/reference.py)', () => {
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
        natives.set(id, { loss: r.loss as number | Float32Array, grad: r.grad, dtype: cfg.dtype });
      } else {
        const r = loss.lossAndGrad({ data: arr(pred), shape }, { data: arr(target), shape });
        natives.set(id, { loss: r.loss as number | Float32Array, grad: r.grad, dtype: cfg.dtype });
      }
      const options = loss.options;
      loss.dispose();
      return {
        id,
        options: options as RefCase['options'],
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


// ================================================================== foreign objects and odd values

describe('foreign objects and odd values', () => {
  const options: PerceptualLossOptions = { inChannels: 2, arch: [3, 'M', 2], device: 'cpu' };
  const shape = [2, 2, 4, 4];
  const pred = { data: materialize({ seed: 11, kind: 'randn', scale: 1 }, count(shape)), shape };
  const target = { data: materialize({ seed: 12, kind: 'randn', scale: 1 }, count(shape)), shape };

  it('an object made from PreparedTarget.prototype is refused as a target with ERR_SHAPE', () => {
    const loss = new PerceptualLoss(options);
    const fake = Object.create(PreparedTarget.prototype) as PreparedTarget;
    expectThrowsCode(() => loss.loss(pred, fake), ['ERR_SHAPE']);
    loss.dispose();
  });

  it('every member of an object made from Tensor.prototype or PreparedTarget.prototype throws ERR_SHAPE', () => {
    const tensor = Object.create(Tensor.prototype) as Tensor;
    const prepared = Object.create(PreparedTarget.prototype) as PreparedTarget;
    const members: Array<[string, () => unknown]> = [
      ['Tensor#shape', () => tensor.shape],
      ['Tensor#dtype', () => tensor.dtype],
      ['Tensor#device', () => tensor.device],
      ['Tensor#toArray', () => tensor.toArray()],
      ['Tensor#disposed', () => tensor.disposed],
      ['Tensor#dispose', () => tensor.dispose()],
      ['PreparedTarget#shape', () => prepared.shape],
      ['PreparedTarget#disposed', () => prepared.disposed],
      ['PreparedTarget#dispose', () => prepared.dispose()],
    ];
    const failures = members.flatMap(([name, member]) => {
      try {
        member();
        return [`${name}: no error`];
      } catch (error) {
        return error instanceof PerceptualLossError && error.code === 'ERR_SHAPE' ? [] : [`${name}: ${String(error)}`];
      }
    });
    expect(failures).toEqual([]);
  });

  it('reads a Float32Array over a SharedArrayBuffer like any Float32Array, sync and async', async () => {
    const loss = new PerceptualLoss(options);
    const shared = new Float32Array(new SharedArrayBuffer(pred.data.byteLength));
    shared.set(pred.data);
    const expected = loss.lossAndGrad(pred, target);
    const viaShared = loss.lossAndGrad({ data: shared, shape }, target);
    expect(viaShared.loss).toBe(expected.loss);
    expectSameBits(viaShared.grad, expected.grad, 'grad');
    expect(await loss.lossAsync({ data: shared, shape }, target)).toBe(expected.loss);
    const t = Tensor.from(shared, shape);
    expectSameBits(t.toArray(), pred.data, 'Tensor.from(shared)');
    t.dispose();
    loss.dispose();
  });

  it('Tensor.from takes an empty shape with huge other dimensions as torch.empty does: accepted, or ERR_SHAPE where the size calculation overflows', () => {
    for (const dims of [[0, 2 ** 40, 2 ** 40], [3, 0, 2 ** 53 - 1]]) {
      const t = Tensor.from(new Float32Array(0), dims);
      expect(t.shape).toEqual(dims);
      expect(t.toArray()).toEqual(new Float32Array(0));
      t.dispose();
    }
    // torch.empty(2**40, 2**40, 0): "Storage size calculation overflowed".
    expectThrowsCode(() => Tensor.from(new Float32Array(0), [2 ** 40, 2 ** 40, 0]), ['ERR_SHAPE']);
  });

  it('gives the same loss, bit for bit, for nhwc data and the same data in nchw, with one channel and one sample (style on)', () => {
    const loss = new PerceptualLoss({ inChannels: 1, arch: [3, 4, 2], layers: ['conv1_1'], styleWeight: 0.5, criterion: 'l1', device: 'cpu' });
    for (const [h, w] of [[5, 4], [2, 1]]) {
      const data = Float32Array.from({ length: h * w }, (_, i) => Math.sin(i * 1.7));
      const zero = new Float32Array(data.length);
      // With N = C = 1 the NCHW and NHWC orders hold the same bytes.
      const nchw = loss.lossAndGrad({ data, shape: [1, 1, h, w] }, { data: zero, shape: [1, 1, h, w] });
      const nhwc = loss.lossAndGrad({ data, shape: [1, h, w, 1] }, { data: zero, shape: [1, h, w, 1] }, { layout: 'nhwc' });
      expect(nhwc.loss, `${h}x${w}`).toBe(nchw.loss);
      expectSameBits(nhwc.grad, nchw.grad, `grad ${h}x${w}`);
    }
    loss.dispose();
  });

  it('refuses device: null like every other option given null (ERR_OPTIONS), in the constructor and in Tensor.from', () => {
    expectThrowsCode(() => new PerceptualLoss({ inChannels: 1, device: null as never }), ['ERR_OPTIONS']);
    expectThrowsCode(() => Tensor.from(new Float32Array(1), [1], { device: null as never }), ['ERR_OPTIONS']);
  });
});

// ================================================================== totals

describe('totals', () => {
  it('left no native tensor alive', () => {
    for (const entry of pool) entry.loss.dispose();
    expect(native().liveTensors()).toBe(liveAtStart);
  });

  it('ran at least 10,000 generated cases', () => {
    const total = [...ran.values()].reduce((a, b) => a + b, 0);
    console.log(`fuzz: ${total} cases (${[...ran].map(([k, v]) => `${k} ${v}`).join(', ')}); seed ${FUZZ_SEED}`);
    expect(total).toBeGreaterThanOrEqual(Math.round(10_000 * RUNS_SCALE));
  });
});
