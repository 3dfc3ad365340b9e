// Shared pieces of the property-based tests: the fast-check settings (a fixed seed, replayable
// failures), seeded input data, small valid loss configurations and the checks of one error.
import fc from 'fast-check';
import { expect } from 'vitest';
import { PerceptualLossError, type ErrorCode, type PerceptualLossOptions } from '../../lib/index';
import { minSizeOf, tapNames, type ArchEntry, type JsOptions } from './js-reference';
import { mulberry32 } from './random';

/**
 * fast-check settings. A failure prints its seed and path; rerun exactly that case with
 *   GPL_FUZZ_SEED=<seed> GPL_FUZZ_PATH=<path> npx vitest run <file> -t '<test name>'
 * GPL_FUZZ_RUNS_SCALE multiplies every run count (e.g. 10 for a long local run, 0.2 under ASan).
 */
export const FUZZ_SEED = Number(process.env.GPL_FUZZ_SEED ?? 20261126);
export const RUNS_SCALE = Number(process.env.GPL_FUZZ_RUNS_SCALE ?? 1);
const REPLAY_PATH = process.env.GPL_FUZZ_PATH;

export function fuzzParams(runs: number): { seed: number; numRuns: number; path?: string; endOnFailure?: boolean } {
  const numRuns = Math.max(1, Math.round(runs * RUNS_SCALE));
  return REPLAY_PATH ? { seed: FUZZ_SEED, numRuns, path: REPLAY_PATH, endOnFailure: true } : { seed: FUZZ_SEED, numRuns };
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

/** A tiny custom arch: 1 to 4 channels per conv, at most 2 pools, at least one conv. */
export const tinyArchArb: fc.Arbitrary<ArchEntry[]> = fc
  .array(fc.oneof({ arbitrary: fc.integer({ min: 1, max: 4 }), weight: 3 }, { arbitrary: fc.constant('M' as const), weight: 1 }), {
    minLength: 1,
    maxLength: 5,
  })
  .filter((a) => a.some((v) => v !== 'M') && a.filter((v) => v === 'M').length <= 2);

export interface TinyConfig {
  options: PerceptualLossOptions;
  /** The options as this test resolves them (independently of lib/options.ts). */
  js: JsOptions;
  dtype: 'float32' | 'float64';
  layout: 'nchw' | 'nhwc';
  minSize: number;
}

export const tinyConfigArb: fc.Arbitrary<TinyConfig> = fc
  .tuple(tinyArchArb, fc.integer({ min: 1, max: 3 }))
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
      layout: fc.constantFrom('nchw' as const, 'nhwc' as const, undefined),
    });
  })
  .map((c) => {
    const options: PerceptualLossOptions = { inChannels: c.inChannels, arch: c.arch, layers: c.layers, criterion: c.criterion, reduction: c.reduction, seed: c.seed, dtype: c.dtype };
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
    return { options, js, dtype: c.dtype, layout: c.layout ?? 'nchw', minSize: minSizeOf(c.arch, c.layers) };
  });

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
    throw new Error(`expected a PerceptualLossError with code ${codes.join(' or ')}; got ${thrown === undefined ? 'no error' : String((thrown as Error)?.stack ?? thrown)}`);
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
