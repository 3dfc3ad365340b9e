// The cases of the input fuzzing (test/fuzz/inputs.test.ts): pools of small losses, of images and
// of volumes, each with the result it gave at first; the defects a call's operands, labels, masks
// and options can have, with the code each must give; the random case; and how a defect is
// applied to an operand and made real.
import fc from 'fast-check';
import { expect } from 'vitest';
import { PerceptualLoss, PerceptualLossError, Tensor, type ErrorCode, type PerceptualLossOptions, type Reduction } from '../../lib/index';
import {
  channelsLast,
  count,
  CUDA,
  dataArb,
  defaultLayers,
  expectSameBits,
  layoutShape,
  materialize,
  METHODS,
  nchwShape,
  otherLayout,
  shapeIn,
  type Dtype,
  type Layout,
  type Method,
  type TargetRelation,
} from './fuzz';
import * as ref from './js-reference';

export interface PoolEntry {
  options: PerceptualLossOptions;
  js: ref.JsOptions;
  spatialDims: 2 | 3;
  layout: Layout;
  dtype: Dtype;
  minSize: number;
  // Any reduction: the pool draws them all.
  loss: PerceptualLoss<Reduction>;
  convs: ref.JsConv[];
  /** Fails unless the loss still gives, bit for bit, its first result. */
  expectUnchanged(): void;
}

export const POOL_OPTIONS: Array<{ options: PerceptualLossOptions; js: Omit<ref.JsOptions, 'inChannels' | 'arch' | 'layers'> }> = [
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

/** Volume losses (spatialDims: 3): 1 or 2 channels, a few voxels per axis. */
export const VOLUME_POOL_OPTIONS: typeof POOL_OPTIONS = [
  { options: { inChannels: 1, spatialDims: 3, arch: [2] }, js: { layerWeights: [1], criterion: 'l2', featureWeight: 1, styleWeight: 0, reduction: 'mean', pool: 'max' } },
  {
    options: { inChannels: 2, spatialDims: 3, arch: [2, 'M', 2], layout: 'ndhwc', reduction: 'none', criterion: 'l1', styleWeight: 0.5 },
    js: { layerWeights: [1, 1], criterion: 'l1', featureWeight: 1, styleWeight: 0.5, reduction: 'none', pool: 'max' },
  },
  {
    options: { inChannels: 2, spatialDims: 3, arch: [3, 'M', 2], layers: ['pool1', 'relu2_1'], layerWeights: [2, 0.5], dtype: 'float64', pool: 'avg', reduction: 'sum' },
    js: { layerWeights: [2, 0.5], criterion: 'l2', featureWeight: 1, styleWeight: 0, reduction: 'sum', pool: 'avg' },
  },
  {
    options: { inChannels: 1, spatialDims: 3, arch: ['M', 2, 'M', 2], layers: ['relu2_1'], criterion: 'smooth_l1', styleWeight: 1, dtype: 'float64', layout: 'ndhwc' },
    js: { layerWeights: [1], criterion: 'smooth_l1', featureWeight: 1, styleWeight: 1, reduction: 'mean', pool: 'max' },
  },
  {
    options: { inChannels: 1, spatialDims: 3, arch: [2, 'M', 2], layers: ['conv1_1', 'pool1'], featureWeight: 2, reduction: 'none' },
    js: { layerWeights: [1, 1], criterion: 'l2', featureWeight: 2, styleWeight: 0, reduction: 'none', pool: 'max' },
  },
];

export function makePoolEntry({ options, js }: (typeof POOL_OPTIONS)[number]): PoolEntry {
  const full: PerceptualLossOptions = { ...options, device: 'cpu' };
  const loss = new PerceptualLoss(full);
  const arch = options.arch as ref.ArchEntry[];
  const layers = (options.layers as string[] | undefined) ?? defaultLayers(arch);
  const spatialDims = options.spatialDims ?? 2;
  const layout: Layout = options.layout ?? (spatialDims === 3 ? 'ncdhw' : 'nchw');
  const minSize = ref.minSizeOf(arch, layers);
  const c = options.inChannels;
  const shape = shapeIn(layout, 2, c, [minSize + 1, minSize + 2, minSize + 1].slice(0, spatialDims));
  const probe = { data: materialize({ seed: 5, kind: 'randn', scale: 1 }, count(shape)), shape };
  const probeTarget = { data: materialize({ seed: 6, kind: 'randn', scale: 1 }, count(shape)), shape };
  const first = loss.lossAndGrad(probe, probeTarget);
  return {
    options: full,
    js: { ...js, inChannels: c, arch, layers },
    spatialDims,
    layout,
    dtype: (options.dtype ?? 'float32') as Dtype,
    minSize,
    loss,
    convs: ref.convsOf(loss.stateDict()),
    expectUnchanged() {
      const now = loss.lossAndGrad(probe, probeTarget);
      if (typeof first.loss === 'number') expect(now.loss).toBe(first.loss);
      else expectSameBits(now.loss as Float32Array, first.loss, 'probe loss');
      expectSameBits(now.grad, first.grad, 'probe grad');
    },
  };
}

export const isPair = (m: Method) => m.startsWith('loss') && !m.includes('Segmentation');
export const isSeg = (m: Method) => m.includes('Segmentation');

/** Defects of one operand (pred, x or logits; target), with the code each must give. */
export const OPERAND_DEFECTS = {
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
  fakeTensor: 'ERR_FOREIGN_OBJECT',
  wrongDevice: 'ERR_DEVICE',
  // The data laid out in the other layout of its rank ([N, D, H, W, C] for 'ncdhw', ...).
  channelAxis: 'ERR_SHAPE',
} as const satisfies Record<string, ErrorCode>;

export const TARGET_ONLY_DEFECTS = {
  shapeMismatch: 'ERR_SHAPE',
  preparedDisposed: 'ERR_DISPOSED',
  preparedForeign: 'ERR_OPTIONS',
  preparedLayout: 'ERR_SHAPE',
  preparedShape: 'ERR_SHAPE',
} as const satisfies Record<string, ErrorCode>;

export const LABEL_DEFECTS = {
  labelsType: 'ERR_DTYPE',
  labelsTensorDtype: 'ERR_DTYPE',
  labelsShape: 'ERR_SHAPE',
  labelsLength: 'ERR_SHAPE',
  labelsRange: 'ERR_SHAPE',
  labelsDisposed: 'ERR_DISPOSED',
  labelsNotObject: 'ERR_SHAPE',
  labelsFake: 'ERR_FOREIGN_OBJECT',
  ignoreIndexBad: 'ERR_OPTIONS',
} as const satisfies Record<string, ErrorCode>;

/** Defects of the `mask` of loss and lossAndGrad (sync and async). */
export const MASK_DEFECTS = {
  maskShape: 'ERR_SHAPE',
  maskLength: 'ERR_SHAPE',
  maskType: 'ERR_DTYPE',
  maskTensorDtype: 'ERR_DTYPE',
  maskPrepared: 'ERR_OPTIONS',
} as const satisfies Record<string, ErrorCode>;

export const CALL_DEFECTS = {
  callNotObject: 'ERR_OPTIONS',
  callLayoutBad: 'ERR_OPTIONS',
  // A layout name of the other dimensionality: 'nchw' for a volume loss, 'ndhwc' for an image loss.
  callLayoutOtherDims: 'ERR_OPTIONS',
  lossDisposed: 'ERR_DISPOSED',
} as const satisfies Record<string, ErrorCode>;

export type Slot = 'pred' | 'target' | 'labels' | 'mask' | 'call';
export const DEFECTS: Array<{ kind: string; slot: Slot; code: ErrorCode }> = [
  ...Object.entries(OPERAND_DEFECTS).map(([kind, code]) => ({ kind, slot: 'pred' as const, code })),
  ...Object.entries({ ...OPERAND_DEFECTS, ...TARGET_ONLY_DEFECTS }).map(([kind, code]) => ({ kind, slot: 'target' as const, code })),
  ...Object.entries(LABEL_DEFECTS).map(([kind, code]) => ({ kind, slot: 'labels' as const, code })),
  ...Object.entries(MASK_DEFECTS).map(([kind, code]) => ({ kind, slot: 'mask' as const, code })),
  ...Object.entries(CALL_DEFECTS).map(([kind, code]) => ({ kind, slot: 'call' as const, code })),
].filter((d) => d.kind !== 'wrongDevice' || CUDA.length > 0);

export function applies(slot: Slot, method: Method): boolean {
  if (slot === 'target' || slot === 'mask') return isPair(method);
  if (slot === 'labels') return isSeg(method);
  return true;
}

/** A valid mask of a call: one value per pixel (voxel) or per element, in one of its forms. */
export const maskArb = fc.record({
  // pixel: [N, ...spatial]; broadcast: [N, 1, ...spatial] or [N, ...spatial, 1]; element: pred's
  // shape; bare: a typed array alone (per pixel, or per element with `perElement`); tensor: a
  // per-pixel Tensor.
  form: fc.constantFrom('pixel', 'broadcast', 'element', 'bare', 'tensor'),
  perElement: fc.boolean(),
  type: fc.constantFrom('uint8', 'float32', 'float64'),
  binary: fc.boolean(),
  seed: fc.nat(),
});
export type MaskCase = typeof maskArb extends fc.Arbitrary<infer T> ? T : never;

/** The random case of a call on one of `poolSize` losses. */
export const inputCaseArbOf = (poolSize: number) =>
  fc.record({
    loss: fc.nat(poolSize - 1),
    method: fc.constantFrom(...METHODS),
    n: fc.integer({ min: 1, max: 2 }),
    // The extra size of each spatial axis beyond the minimum (D, H, W; images use the last two).
    extras: fc.array(fc.nat(3), { minLength: 3, maxLength: 3 }),
    mask: fc.option(maskArb, { freq: 2 }),
    predForm: fc.constantFrom('host32', 'host64', 'tensor32', 'tensor64'),
    targetForm: fc.constantFrom('host32', 'host64', 'tensor32', 'tensor64', 'prepared'),
    labelsForm: fc.constantFrom('int32', 'uint8', 'tensorInt32', 'tensorUint8'),
    // The loss's own layout, or the other of its rank, given per call.
    callLayout: fc.constantFrom(undefined, 'own' as const, 'other' as const),
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
export type InputCase = ReturnType<typeof inputCaseArbOf> extends fc.Arbitrary<infer T> ? T : never;

/** What a call is made of, before it is made. */
export interface Draft {
  data: unknown;
  shape: unknown;
  /** 'host' | 'tensor' | 'prepared' */
  form: string;
  f64: boolean;
  replace?: { value: unknown };
  disposed?: boolean;
  intTensor?: boolean;
  device?: string;
  /** The elements a nonFinite defect made NaN or Inf. */
  poisoned?: number[];
}

/** What an operand defect needs to know of the call. */
export interface DefectContext {
  /** The axis of C in the call's layout. */
  channelAxis: number;
  minSize: number;
  inChannels: number;
  layout: Layout;
  allowHuge: boolean;
}

/** The spatial axes of a shape of `rank` in `layout`. */
export function spatialAxes(layout: Layout, rank: number): number[] {
  const first = channelsLast(layout) ? 1 : 2;
  return Array.from({ length: rank - 2 }, (_, i) => first + i);
}

/** Whether the channelAxis defect is one for an operand of `shape`: the axis read as C after the move does not hold C. */
export function channelAxisApplies(shape: readonly number[], layout: Layout, inChannels: number): boolean {
  const moved = layoutShape(nchwShape(shape, layout), otherLayout(layout));
  return nchwShape(moved, layout)[1] !== inChannels;
}

/** Applies one operand defect to a draft (shape in the call's layout; C at `channelAxis`). */
export function applyOperandDefect(draft: Draft, kind: string, variant: number, at: number, ctx: DefectContext): void {
  const pick = <T>(options: readonly T[]) => options[variant % options.length];
  const shape = draft.shape as number[];
  const data = draft.data as Float32Array;
  const isFloat = (v: unknown): v is Float32Array | Float64Array => v instanceof Float32Array || v instanceof Float64Array;
  // (An earlier defect of the same operand may have left no shape array.)
  const spatial = Array.isArray(shape) ? spatialAxes(ctx.layout, shape.length) : [];
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
      // Without the first spatial axis: an image for a volume loss, [N, C, W] for an image loss.
      const withoutD = shape.filter((_, i) => i !== spatial[0]);
      const dims = pick([[], [count(shape)], shape.slice(1), [1, ...shape], [...shape, 1], [1, 1, ...shape], withoutD]);
      draft.shape = dims;
      draft.data = data.slice(0, count(dims));
      return;
    }
    case 'zeroDim': {
      const dims = [...shape];
      const rank = dims.length;
      dims[at % rank] = 0;
      // Host arrays may also claim huge dimensions next to the zero: still no elements.
      if (draft.form === 'host' && ctx.allowHuge && variant % 3 === 0) dims[(at + 1) % rank] = pick([2 ** 40, 2 ** 53 - 1, 2 ** 31, 65536]);
      if (dims[(at + 1) % rank] === 0) dims[(at + 1) % rank] = 1;
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
      // One or more spatial axes (a non-empty subset, by the bits of `variant`) below the minimum.
      const dims = [...shape];
      const subset = 1 + (variant % (2 ** spatial.length - 1));
      spatial.forEach((axis, i) => {
        if (subset & (1 << i)) dims[axis] = 1 + ((at >> i) % (ctx.minSize - 1));
      });
      draft.shape = dims;
      draft.data = materialize({ seed: at, kind: 'randn', scale: 1 }, count(dims));
      return;
    }
    case 'channelAxis': {
      // The same number of elements, laid out as the other layout of the rank has them.
      draft.shape = layoutShape(nchwShape(shape, ctx.layout), otherLayout(ctx.layout));
      return;
    }
    case 'nonFinite': {
      if (!isFloat(draft.data)) return;
      const poisoned = draft.data.slice();
      const value = pick([NaN, Infinity, -Infinity]);
      const hits = 1 + (variant % 3);
      draft.poisoned = [];
      for (let i = 0; i < hits; i++) {
        const k = (at + i * 7919) % poisoned.length;
        poisoned[k] = value;
        draft.poisoned.push(k);
      }
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
export const DEFECT_ORDER = ['rank', 'channels', 'tooSmall', 'channelAxis', 'shapeMismatch', 'nonFinite', 'zeroDim', 'length', 'shapeBad', 'dataType', 'tensorDtype', 'disposedTensor', 'wrongDevice', 'fakeTensor', 'notTensorLike'];
export const inOrder = <D extends { kind: string }>(list: D[]) => [...list].sort((a, b) => DEFECT_ORDER.indexOf(a.kind) - DEFECT_ORDER.indexOf(b.kind));

/** Makes the value of a draft; Tensors go into `owned` to be disposed after the case. */
export function realize(draft: Draft, owned: Array<{ dispose(): void }>): unknown {
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