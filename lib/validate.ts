// The argument checks that the API shares, in the spirit of sharp's is.js. Each one throws a
// PerceptualLossError whose message names the argument, the value given and what is allowed.
import { PerceptualLossError, show, withArticle } from './errors';

// The option each invalidOption error names: load tells the file's options from the caller's by it.
const failedOption = new WeakMap<PerceptualLossError, string>();

/** ERR_OPTIONS: `Invalid option "name": got value; allowed: ...`. */
export function invalidOption(option: string, value: unknown, allowed: string): never {
  const error = new PerceptualLossError('ERR_OPTIONS', `Invalid option "${option}": got ${show(value)}; allowed: ${allowed}.`);
  failedOption.set(error, option.split('.')[0]);
  throw error;
}

/** The top-level option that an invalidOption error names, if `error` is one. */
export function optionOf(error: unknown): string | undefined {
  return error instanceof PerceptualLossError ? failedOption.get(error) : undefined;
}

/** `'a' | 'b' | 'c'`, for the allowed part of a message. */
export const oneOf = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(' | ');

/** An options argument: a plain object, not null and not an array. */
export function checkObject(value: unknown, what: string, example?: string): asserts value is object {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    const such = example === undefined ? '' : ` such as ${example}`;
    throw new PerceptualLossError('ERR_OPTIONS', `${what} must be an object${such}; got ${show(value)}.`);
  }
}

/** The same, where leaving the argument out is allowed. */
export function checkOptionalObject(value: unknown, what: string, example?: string): asserts value is object | undefined {
  if (value !== undefined) checkObject(value, what, example);
}

/** One of `allowed`, or `fallback` when left out. */
export function pick<T extends string>(option: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !allowed.includes(value as T)) invalidOption(option, value, oneOf(allowed));
  return value as T;
}

/** A finite number >= 0, or `fallback` when left out. */
export function nonNegative(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) invalidOption(option, value, 'a finite number >= 0');
  return value;
}

/** A required integer >= 1. */
export function positiveInteger(option: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) invalidOption(option, value, 'an integer >= 1 (required)');
  return value;
}

/** The label value that segmentation leaves out when none is given. */
export const DEFAULT_IGNORE_INDEX = 255;

/** The label value whose pixels segmentation leaves out: any integer, 255 when left out. */
export function checkIgnoreIndex(value: unknown): number {
  if (value === undefined) return DEFAULT_IGNORE_INDEX;
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) invalidOption('ignoreIndex', value, 'an integer');
  return value;
}

/** A shape: an array of integers >= 0 (ERR_SHAPE otherwise). */
export function checkShape(shape: unknown, what: string): number[] {
  const dims: unknown[] | undefined = Array.isArray(shape) ? shape : undefined;
  if (!dims?.every(isDim)) {
    throw new PerceptualLossError('ERR_SHAPE', `${what} shape must be an array of integers >= 0; got ${show(shape)}.`);
  }
  return [...dims];
}

const isDim = (d: unknown): d is number => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0;

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

type ArrayType = new (n: number) => ArrayBufferView;

/**
 * For 8-bit pixels where floats are needed: image decoders (sharp's raw output, a canvas's
 * getImageData) give interleaved bytes, H x W x C.
 */
function imageBytesHint(data: unknown, types: readonly ArrayType[]): string {
  if (!types.includes(Float32Array) || !(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) return '';
  return (
    ' Image decoders (sharp, canvas) give interleaved 8-bit pixels, [H, W, C]: convert them to floats, for example' +
    " Float32Array.from(bytes, (v) => v / 255), and pass shape [N, H, W, C] with layout: 'nhwc'."
  );
}

/**
 * A host tensor `{ data, shape }`: `data` one of `types` (ERR_DTYPE otherwise), holding exactly
 * the elements that `shape` needs (ERR_SHAPE otherwise).
 */
export function hostTensor<A extends ArrayBufferView>(x: unknown, role: string, types: readonly ArrayType[]): { data: A; shape: number[] } {
  if (x === null || typeof x !== 'object' || !('data' in x) || !('shape' in x)) {
    throw new PerceptualLossError('ERR_SHAPE', `${role} must be a Tensor or { data, shape }; got ${show(x)}.`);
  }
  const { data, shape } = x;
  if (!types.some((t) => data instanceof t)) {
    const names = types.map((t) => t.name).join(' or ');
    throw new PerceptualLossError('ERR_DTYPE', `${role}.data must be ${withArticle(names)}; got ${show(data)}.${imageBytesHint(data, types)}`);
  }
  const dims = checkShape(shape, role);
  const length = (data as ArrayLike<number>).length;
  if (elementCount(dims) !== length) {
    throw new PerceptualLossError('ERR_SHAPE', `${role}.data holds ${length} elements but shape ${show(dims)} needs ${elementCount(dims)}.`);
  }
  return { data: data as A, shape: dims };
}

/** One weight per instance: an array, a Float64Array or a Float32Array. */
export type InstanceWeights = readonly number[] | Float64Array | Float32Array;

/**
 * Instance weights for `count` instances: `count` finite numbers >= 0, not all 0, as a
 * Float64Array for native code; undefined when left out (every weight 1).
 */
export function checkInstanceWeights(value: unknown, count: number): Float64Array | undefined {
  if (value === undefined) return undefined;
  const allowed = `${count} finite number${count === 1 ? '' : 's'} >= 0, one per instance (M = ${count}), not all 0, as an array, a Float64Array or a Float32Array`;
  const isList = Array.isArray(value) || value instanceof Float64Array || value instanceof Float32Array;
  if (!isList) invalidOption('weights', value, allowed);
  const list = value as ArrayLike<unknown>;
  if (list.length !== count) invalidOption('weights', value, `${allowed}; got ${list.length}`);
  const weights = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const w = list[i];
    if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) invalidOption(`weights[${i}]`, w, 'a finite number >= 0');
    weights[i] = w;
  }
  if (weights.every((w) => w === 0)) invalidOption('weights', value, `${allowed} (these are all 0)`);
  return weights;
}
