// Property-based fuzzing of the inputs of every method that takes a tensor, sync and async
// (test/helpers/fuzz.ts says how to replay a failure): random shapes, layouts, dtypes, lengths,
// NaN/Inf/denormal values, huge and zero dimensions, disposed and foreign objects, labels and
// ignoreIndex values, call options and wrong devices, one or two defects at a time:
//   - every invalid call throws (or rejects) a PerceptualLossError with the code of its defect,
//     and the loss that saw it still gives, bit for bit, the result it gave before;
//   - every valid call gives finite results equal to an independent float64 implementation of
//     docs/api.md in JavaScript (test/helpers/js-reference.ts).
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  PerceptualLoss,
  PerceptualLossError,
  PreparedTarget,
  Tensor,
  type ErrorCode,
  type HostTensor,
  type PerceptualLossOptions,
} from '../lib/index';
import {
  bump,
  comparable,
  count,
  counted,
  CUDA,
  dataArb,
  defaultLayers,
  describeTotals,
  expectFeatures,
  expectGrad,
  expectLoss,
  expectRejectsCode,
  expectSameBits,
  expectTerms,
  expectThrowsCode,
  fromNchw,
  FUZZ_RUNS,
  fuzzParams,
  gradComparable,
  hostOf,
  isAsync,
  materialize,
  METHODS,
  nchwShape,
  release,
  RUNS_SCALE,
  setupFuzzFile,
  targetFor,
  toNchw64,
  type Dtype,
  type Expectation,
  type Layout,
  type Method,
  type TargetRelation,
} from './helpers/fuzz';
import * as ref from './helpers/js-reference';
import { mulberry32 as mulberry } from './helpers/random';

setupFuzzFile();

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
      expectSameBits(now.grad, first.grad, 'probe grad');
    },
  };
}

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
  ...Object.entries(OPERAND_DEFECTS).map(([kind, code]) => ({ kind, slot: 'pred' as const, code })),
  ...Object.entries({ ...OPERAND_DEFECTS, ...TARGET_ONLY_DEFECTS }).map(([kind, code]) => ({ kind, slot: 'target' as const, code })),
  ...Object.entries(LABEL_DEFECTS).map(([kind, code]) => ({ kind, slot: 'labels' as const, code })),
  ...Object.entries(CALL_DEFECTS).map(([kind, code]) => ({ kind, slot: 'call' as const, code })),
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
    await fc.assert(fc.asyncProperty(inputCaseArb, counted('inputs', runInputCase)), fuzzParams(FUZZ_RUNS.inputs));
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

// ================================================================== totals

describeTotals(['inputs'], () => {
  for (const entry of pool) entry.loss.dispose();
});
