// Property-based fuzzing of the inputs of every method that takes a tensor, sync and async
// (test/helpers/fuzz.ts says how to replay a failure): random shapes, layouts, dtypes, lengths,
// NaN/Inf/denormal values, huge and zero dimensions, disposed and foreign objects, labels and
// ignoreIndex values, masks, call options and wrong devices, one or two defects at a time, for a
// pool of image losses and one of volume losses (spatialDims: 3, 5-D inputs):
//   - every invalid call throws (or rejects) a PerceptualLossError with the code of its defect
//     (where it is the only one, a message that names what the shape, layout or size needs),
//     and the loss that saw it still gives, bit for bit, the result it gave before;
//   - every valid call gives finite results equal to an independent float64 implementation of
//     docs/api.md in JavaScript (test/helpers/js-reference.ts).
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, PerceptualLossError, PreparedTarget, Tensor, type ErrorCode, type HostTensor } from '../../lib/index';
import {
  bump,
  channelsLast,
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
  layoutShape,
  materialize,
  METHODS,
  nchwShape,
  otherLayout,
  release,
  RUNS_SCALE,
  setupFuzzFile,
  shapeIn,
  targetFor,
  toNchw64,
  type Expectation,
  type FuzzProperty,
  type Layout,
} from '../helpers/fuzz';
import {
  applies,
  applyOperandDefect,
  channelAxisApplies,
  DEFECTS,
  inOrder,
  inputCaseArbOf,
  isPair,
  isSeg,
  makePoolEntry,
  POOL_OPTIONS,
  realize,
  VOLUME_POOL_OPTIONS,
  type DefectContext,
  type Draft,
  type InputCase,
  type MaskCase,
  type PoolEntry,
} from '../helpers/fuzz-inputs';
import * as ref from '../helpers/js-reference';
import { mulberry32 as mulberry } from '../helpers/random';

setupFuzzFile();

/** A pool of losses (images or volumes) and what its cases exercised. */
interface Run {
  property: FuzzProperty;
  pool: PoolEntry[];
  defectStats: Map<string, number>;
  methodStats: Map<string, number>;
  outcomeStats: Map<string, number>;
  /** The defects whose message was checked (the only defect of a call). */
  messageStats: Map<string, number>;
}
const newRun = (property: FuzzProperty): Run => ({
  property,
  pool: [],
  defectStats: new Map(),
  methodStats: new Map(),
  outcomeStats: new Map(),
  messageStats: new Map(),
});
const images = newRun('inputs');
const volumes = newRun('inputsVolume');

const layoutsOf = (spatialDims: number): Layout[] => (spatialDims === 3 ? ['ncdhw', 'ndhwc'] : ['nchw', 'nhwc']);
const spatialNames = (spatialDims: number) => (spatialDims === 3 ? ['D', 'H', 'W'] : ['H', 'W']);
const sameDims = (a: readonly unknown[], b: readonly unknown[]) => a.length === b.length && a.every((v, i) => v === b[i]);

/** The mask a mask defect starts from where the case drew none. */
const PLAIN_MASK: MaskCase = { form: 'pixel', perElement: false, type: 'float32', binary: true, seed: 1 };

/**
 * What the message of a defect says where it is a call's only defect (docs/api.md, "Volumes
 * (3-D)"): the rank and spatialDims, the layout that fits, the minimum of each axis and the axes
 * that fall short, the layouts of the loss's dimensionality, the shape of labels and masks. The
 * other defects are held to their code.
 */
function expectedMessage(kind: string, entry: PoolEntry, layout: Layout, operandShape: readonly number[], maskShape: unknown): string[] | undefined {
  const dims = entry.spatialDims;
  const names = spatialNames(dims);
  const m = entry.minSize;
  switch (kind) {
    case 'rank': {
      const rank = operandShape.length;
      if (dims === 3 && rank === 4) return ['must be 5-D', 'A 4-D shape [N, C, H, W] is a batch of 2-D images, for a loss with spatialDims: 2'];
      if (dims === 2 && rank === 5) return ['must be 4-D', 'A 5-D shape is a batch of volumes: build the loss with spatialDims: 3'];
      return [`must be ${dims + 2}-D`];
    }
    case 'tooSmall': {
      const sides = channelsLast(layout) ? operandShape.slice(1, -1) : operandShape.slice(2);
      if (dims === 2) return [`is ${sides.join('x')} but the deepest tap needs H and W of at least ${m} (minimum size ${m}x${m}).`];
      const short = sides.flatMap((v, i) => (v < m ? [`${names[i]}=${v}`] : []));
      return [`is ${sides.join('x')} (D x H x W) but the deepest tap needs D, H and W of at least ${m} each (minimum size ${m}x${m}x${m}); got ${short.join(', ')}.`];
    }
    case 'channelAxis':
      return [`pass layout: '${otherLayout(layout)}'`];
    case 'callLayoutOtherDims': {
      const [first, second] = layoutsOf(dims);
      return [`'${first}' | '${second}' for spatialDims: ${dims}`];
    }
    case 'labelsShape':
      return [`labels must be [${['N', ...names].join(', ')}] of the logits`];
    case 'maskShape':
      return Array.isArray(maskShape) ? [`mask shape [${maskShape.join(', ')}] must be [${['N', ...names].join(', ')}]`] : ['mask.shape must be an array'];
    case 'maskLength':
      return [`one per ${dims === 3 ? 'voxel' : 'pixel'}, [${['N', ...names].join(', ')}]`];
  }
  return undefined;
}

async function runInputCase(run: Run, c: InputCase): Promise<void> {
  const entry = run.pool[c.loss];
  const method = c.method;
  bump(run.methodStats, method);
  const layout: Layout = c.callLayout === 'other' ? otherLayout(entry.layout) : entry.layout;
  const C = entry.js.inChannels;
  const spatial = c.extras.slice(3 - entry.spatialDims).map((e) => entry.minSize + e);
  const shape = shapeIn(layout, c.n, C, spatial);
  const pixels = c.n * count(spatial);
  const ctx: DefectContext = { channelAxis: channelsLast(layout) ? shape.length - 1 : 1, minSize: entry.minSize, inChannels: C, layout, allowHuge: true };
  const predData = materialize(c.pred, count(shape));
  const targetData = targetFor(predData, c.relation, c.target);
  const owned: Array<{ dispose(): void }> = [];
  // Each drawn defect is one of those the method can have (its target, labels or mask).
  const applicable = DEFECTS.filter((d) => applies(d.slot, method));
  let defects = [...new Map(c.defects.map((d) => [d.defect % applicable.length, { ...applicable[d.defect % applicable.length], variant: d.variant, at: d.at }])).values()].filter(
    (d) => (d.kind !== 'tooSmall' || entry.minSize > 1) && (d.kind !== 'channelAxis' || channelAxisApplies(shape, layout, C)),
  );
  // A defect of the target's own makes it a host value: a mask then meets no prepared target.
  if (defects.some((d) => d.slot === 'target' && !d.kind.startsWith('prepared'))) defects = defects.filter((d) => d.kind !== 'maskPrepared');
  for (const d of defects) bump(run.defectStats, `${d.slot}.${d.kind}`);
  // Defects that turn out to do nothing: NaN or Inf where the mask is 0 (set to 0 before the network).
  const harmless = new Set<(typeof defects)[number]>();
  try {
    // ---- the loss, and the call options
    let loss = entry.loss;
    const lossDisposed = defects.some((d) => d.kind === 'lossDisposed');
    if (lossDisposed) loss = new PerceptualLoss(entry.options);
    let call: unknown = c.callLayout !== undefined ? { layout } : c.emptyCall ? {} : undefined;
    const callDefect = defects.find((d) => d.kind === 'callNotObject' || d.kind === 'callLayoutBad' || d.kind === 'callLayoutOtherDims');
    if (callDefect?.kind === 'callNotObject') call = [layout, 1, true, null, () => ({ layout }), Symbol('call')][callDefect.variant % 6];
    if (callDefect?.kind === 'callLayoutBad') call = { layout: ['NHWC', 'chw', 'hwc', 1, null, '', 'NDHWC', 'dhwc'][callDefect.variant % 8] };
    if (callDefect?.kind === 'callLayoutOtherDims') call = { layout: layoutsOf(entry.spatialDims === 3 ? 2 : 3)[callDefect.variant % 2] };

    // ---- pred (x, logits)
    const predDraft: Draft = { data: predData, shape, form: c.predForm.startsWith('tensor') ? 'tensor' : 'host', f64: c.predForm.endsWith('64') };
    const predDefects = inOrder(defects.filter((d) => d.slot === 'pred'));
    const tensorMaking = (list: typeof defects) => list.some((d) => ['tensorDtype', 'disposedTensor', 'wrongDevice'].includes(d.kind));
    for (const d of predDefects) applyOperandDefect(predDraft, d.kind, d.variant, d.at, { ...ctx, allowHuge: !tensorMaking(predDefects) });
    const pred = realize(predDraft, owned);

    // ---- target
    let target: unknown;
    const targetDefects = defects.filter((d) => d.slot === 'target');
    const preparedDefect = targetDefects.find((d) => d.kind.startsWith('prepared'));
    const plainDefects = inOrder(targetDefects.filter((d) => !d.kind.startsWith('prepared')));
    const maskDefects = defects.filter((d) => d.slot === 'mask');
    const maskPrepared = maskDefects.some((d) => d.kind === 'maskPrepared');
    let targetForm = c.targetForm;
    if (preparedDefect || maskPrepared) targetForm = 'prepared';
    else if (targetForm === 'prepared' && (plainDefects.length > 0 || maskDefects.length > 0)) targetForm = 'host32';
    const targetDraft: Draft = { data: targetData, shape, form: targetForm.startsWith('tensor') ? 'tensor' : 'host', f64: targetForm.endsWith('64') };
    if (isPair(method)) {
      for (const d of plainDefects) {
        if (d.kind === 'shapeMismatch') {
          // The batch axis, or one of the spatial axes, one or two larger.
          const dims = [...shape];
          const axis = d.at % 2 === 0 ? 0 : (channelsLast(layout) ? 1 : 2) + (d.variant % entry.spatialDims);
          dims[axis] += 1 + (d.variant % 2);
          targetDraft.shape = dims;
          targetDraft.data = materialize({ seed: d.at, kind: 'randn', scale: 1 }, count(dims));
        } else applyOperandDefect(targetDraft, d.kind, d.variant, d.at, { ...ctx, allowHuge: !tensorMaking(plainDefects) });
      }
      if (targetForm === 'prepared') {
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
            // The same data read in the other layout of its rank: its own shape must then also be valid there.
            const other = otherLayout(layout);
            target = loss.prepareTarget({ data: targetData, shape: layoutShape(nchwShape(shape, layout), other) }, { layout: other });
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
      } else target = realize(targetDraft, owned);
    }

    // ---- mask (loss and lossAndGrad): one value per pixel (voxel) or per element
    let maskValues: Float64Array | undefined;
    let maskPerElement = false;
    let maskShape: unknown;
    const maskSpec = c.mask ?? (maskDefects.length > 0 ? PLAIN_MASK : null);
    if (isPair(method) && maskSpec && (targetForm !== 'prepared' || maskDefects.length > 0)) {
      maskPerElement = maskSpec.form === 'element' || (maskSpec.form !== 'pixel' && maskSpec.form !== 'broadcast' && maskSpec.perElement);
      const rand = mulberry(maskSpec.seed);
      const length = maskPerElement ? count(shape) : pixels;
      const binary = maskSpec.binary || maskSpec.type === 'uint8';
      const raw = Array.from({ length }, () => (binary ? (rand() < 0.5 ? 0 : 1) : rand() < 0.2 ? 0 : 1.5 * rand()));
      const typed = maskSpec.type === 'uint8' ? Uint8Array.from(raw) : maskSpec.type === 'float32' ? Float32Array.from(raw) : Float64Array.from(raw);
      maskValues = Float64Array.from(typed);
      const pixelShape = [c.n, ...spatial];
      const broadcast = channelsLast(layout) ? [c.n, ...spatial, 1] : [c.n, 1, ...spatial];
      let value: unknown;
      switch (maskSpec.form) {
        case 'pixel':
          value = { data: typed, shape: pixelShape };
          break;
        case 'broadcast':
          value = { data: typed, shape: broadcast };
          break;
        case 'element':
          value = { data: typed, shape };
          break;
        case 'bare':
          value = typed;
          break;
        case 'tensor': {
          const t = Tensor.from(typed, maskPerElement ? shape : pixelShape, { device: 'cpu' });
          owned.push(t);
          value = t;
          break;
        }
      }
      for (const d of maskDefects) {
        const pick = <T>(options: readonly T[]) => options[d.variant % options.length];
        const elements = count(shape);
        switch (d.kind) {
          case 'maskShape': {
            const S = spatial;
            const last = S.length - 1;
            const accepted = [pixelShape, broadcast, shape];
            const wrong = [
              [c.n, ...S.slice(0, last), S[last] + 1],
              [c.n + 1, ...S],
              [c.n, 2, ...S],
              [c.n, ...S, 2],
              [...S],
              [c.n, 1, 1, ...S],
              [c.n, ...S.slice(1)],
              channelsLast(layout) ? [c.n, 1, ...S] : [c.n, ...S, 1],
            ].filter((dims) => !accepted.some((a) => sameDims(a, dims)));
            const bad: unknown[] = [...wrong.map((dims) => ({ data: new Float32Array(count(dims)), shape: dims })), { data: typed, shape: 'abc' }, { data: typed, shape: null }];
            value = pick(bad);
            break;
          }
          case 'maskLength': {
            const lengths = [pixels - 1, pixels + 1, 0, elements + 1, 2 * elements + 3].filter((k) => k >= 0 && k !== pixels && k !== elements);
            const k = lengths[d.at % lengths.length];
            value = d.variant % 2 ? new Float32Array(k) : { data: new Float32Array(k), shape: pixelShape };
            break;
          }
          case 'maskType':
            value = pick([new Int32Array(pixels), Array.from(raw), { data: new Int16Array(pixels), shape: pixelShape }, { data: Array.from(raw), shape: pixelShape }, 'mask', 5, null, true]);
            break;
          case 'maskTensorDtype': {
            const t = Tensor.from(new Int32Array(pixels), pixelShape, { device: 'cpu' });
            owned.push(t);
            value = t;
            break;
          }
          case 'maskPrepared':
            break;
        }
      }
      call = callDefect ? call : { ...(call as object | undefined), mask: value };
      maskShape = (value as { shape?: unknown } | null)?.shape;
      // NaN or Inf where the mask is 0 is set to 0 before the network: no error.
      const S = count(spatial);
      const maskAt = (i: number) => (maskPerElement ? maskValues![i] : maskValues![channelsLast(layout) ? Math.floor(i / C) : Math.floor(i / (C * S)) * S + (i % S)]);
      if (maskDefects.length === 0) {
        for (const [slot, draft] of [['pred', predDraft], ['target', targetDraft]] as const) {
          const d = defects.find((x) => x.slot === slot && x.kind === 'nonFinite');
          if (d && draft.poisoned?.every((i) => maskAt(i) === 0)) harmless.add(d);
        }
      }
    }

    // ---- labels and ignoreIndex
    let labels: unknown;
    let segOptions: unknown = call;
    let ignoreIndex = c.ignoreIndex ?? 255;
    let labelValues: Int32Array | undefined;
    if (isSeg(method)) {
      const total = pixels;
      const rand = mulberry(c.labelsSeed);
      const isUint8 = c.labelsForm.toLowerCase().includes('uint8');
      const storable = isUint8 ? ignoreIndex >= 0 && ignoreIndex <= 255 : ignoreIndex >= -(2 ** 31) && ignoreIndex < 2 ** 31;
      labelValues = Int32Array.from({ length: total }, () => (storable && rand() < c.ignoredFraction ? ignoreIndex : Math.floor(rand() * C)));
      const labelShape = [c.n, ...spatial];
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
            // Wrong sizes, an extra or a missing axis: for volumes, [N, H, W] labels of one slice too.
            const S = spatial;
            const last = S.length - 1;
            const dims = pick([[c.n, ...S.slice(0, last), S[last] + 1], [c.n + 1, ...S], [c.n, 1, ...S], [c.n * S[0], ...S.slice(1)], [c.n, ...[...S].reverse()], [c.n, ...S, 1], [c.n, ...S.slice(1)]]);
            if (sameDims(dims, labelShape)) dims.push(1);
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

    const acting = defects.filter((d) => !harmless.has(d));
    if (harmless.size > 0) bump(run.outcomeStats, 'nonFinite under a 0 mask');
    const codes = new Set<ErrorCode>(acting.map((d) => d.code));
    if (codes.size > 0) {
      const error = isAsync(method) ? await expectRejectsCode(invoke, [...codes]) : expectThrowsCode(invoke, [...codes]);
      bump(run.outcomeStats, error.code);
      if (acting.length === 1) {
        const only = acting[0];
        const operand = only.slot === 'target' ? targetDraft : predDraft;
        const wanted = expectedMessage(only.kind, entry, layout, Array.isArray(operand.shape) ? (operand.shape as number[]) : [], maskShape);
        if (wanted) {
          bump(run.messageStats, only.kind);
          for (const part of wanted) expect(error.message, `the message of ${only.slot}.${only.kind}`).toContain(part);
        }
      }
      entry.expectUnchanged();
      return;
    }
    bump(run.outcomeStats, maskValues ? 'valid with a mask' : 'valid');
    const result = isAsync(method) ? await (invoke() as Promise<unknown>) : invoke();
    try {
      const precise = isSeg(method) ? comparable(entry.dtype, [c.pred], c.pred) : comparable(entry.dtype, isPair(method) ? [c.pred, c.target] : [c.pred]);
      const e: Expectation = { dtype: entry.dtype, js: entry.js, convs: entry.convs, precise };
      const nchw = nchwShape(shape, layout);
      const x = toNchw64(predData, shape, layout);
      if (isPair(method)) {
        const t = toNchw64(targetData, shape, layout);
        let expected: ref.JsResult;
        if (maskValues) {
          const mask: ref.JsTensor = maskPerElement ? toNchw64(maskValues, shape, layout) : { shape: [c.n, 1, ...spatial], data: maskValues };
          // The product of a float32 operand and its mask is a float32 array, as in PyTorch (mask * pred);
          // float32 compute rounds every product to float32.
          const f32 = entry.dtype === 'float32';
          expected = ref.masked(entry.js, entry.convs, x, t, mask, { pred: f32 || !predDraft.f64, target: f32 || !targetDraft.f64 });
        } else expected = ref.lossAndGrad(entry.js, entry.convs, x, t);
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

/** Every method, every defect and every error code came up; the messages of the only defect of a call were checked. */
function expectExercised(run: Run): void {
  console.log(`${run.property}: outcomes ${JSON.stringify(Object.fromEntries(run.outcomeStats))}; messages ${JSON.stringify(Object.fromEntries(run.messageStats))}`);
  const minimum = Math.max(1, Math.round(10 * RUNS_SCALE));
  for (const m of METHODS) expect(run.methodStats.get(m) ?? 0, m).toBeGreaterThanOrEqual(minimum);
  for (const d of DEFECTS) expect(run.defectStats.get(`${d.slot}.${d.kind}`) ?? 0, `${d.slot}.${d.kind}`).toBeGreaterThanOrEqual(Math.min(minimum, 5));
  const codes: string[] = ['valid', 'valid with a mask', 'ERR_OPTIONS', 'ERR_SHAPE', 'ERR_DTYPE', 'ERR_DISPOSED', 'ERR_FOREIGN_OBJECT', 'ERR_NONFINITE'];
  if (CUDA.length > 0) codes.push('ERR_DEVICE');
  for (const code of codes) expect(run.outcomeStats.get(code) ?? 0, code).toBeGreaterThanOrEqual(minimum);
  for (const kind of ['rank', 'tooSmall', 'channelAxis', 'callLayoutOtherDims', 'labelsShape', 'maskShape', 'maskLength']) {
    expect(run.messageStats.get(kind) ?? 0, `message of ${kind}`).toBeGreaterThanOrEqual(1);
  }
}

describe('inputs at every method, sync and async', () => {
  beforeAll(() => {
    for (const p of POOL_OPTIONS) images.pool.push(makePoolEntry(p));
    for (const p of VOLUME_POOL_OPTIONS) volumes.pool.push(makePoolEntry(p));
  });

  it('gives the code of each defect, or the reference result; the loss stays usable', async () => {
    await fc.assert(fc.asyncProperty(inputCaseArbOf(images.pool.length), counted('inputs', (c) => runInputCase(images, c))), fuzzParams(FUZZ_RUNS.inputs));
  });

  it('exercised every method, every defect and every error code', () => {
    expectExercised(images);
  });

  it('volumes (spatialDims 3, 5-D inputs, labels [N, D, H, W], voxel masks): gives the code of each defect, or the reference result; the loss stays usable', async () => {
    await fc.assert(fc.asyncProperty(inputCaseArbOf(volumes.pool.length), counted('inputsVolume', (c) => runInputCase(volumes, c))), fuzzParams(FUZZ_RUNS.inputsVolume));
  });

  // Below half the cases, some defects may not come up often enough.
  it.skipIf(RUNS_SCALE < 0.5)('volumes: exercised every method, every defect and every error code (not below PL_FUZZ_RUNS_SCALE=0.5)', () => {
    expectExercised(volumes);
  });
});

// ================================================================== totals

describeTotals(['inputs', 'inputsVolume'], () => {
  for (const entry of [...images.pool, ...volumes.pool]) entry.loss.dispose();
});
