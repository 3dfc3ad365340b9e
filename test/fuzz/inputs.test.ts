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
import { PerceptualLoss, PerceptualLossError, PreparedTarget, Tensor, type ErrorCode, type HostTensor } from '../../lib/index';
import {
  bump,
  comparable,
  count,
  counted,
  CUDA,
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
  type Expectation,
  type Layout,
} from '../helpers/fuzz';
import {
  applies,
  applyOperandDefect,
  DEFECTS,
  inOrder,
  inputCaseArb,
  isPair,
  isSeg,
  makePoolEntry,
  POOL_OPTIONS,
  realize,
  type Draft,
  type InputCase,
  type PoolEntry,
} from '../helpers/fuzz-inputs';
import * as ref from '../helpers/js-reference';
import { mulberry32 as mulberry } from '../helpers/random';

setupFuzzFile();

const pool: PoolEntry[] = [];

const defectStats = new Map<string, number>();
const methodStats = new Map<string, number>();
const outcomeStats = new Map<string, number>();

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
    const codes: string[] = ['valid', 'ERR_OPTIONS', 'ERR_SHAPE', 'ERR_DTYPE', 'ERR_DISPOSED', 'ERR_FOREIGN_OBJECT', 'ERR_NONFINITE'];
    if (CUDA.length > 0) codes.push('ERR_DEVICE');
    for (const code of codes) expect(outcomeStats.get(code) ?? 0, code).toBeGreaterThanOrEqual(minimum);
  });
});

// ================================================================== totals

describeTotals(['inputs'], () => {
  for (const entry of pool) entry.loss.dispose();
});
