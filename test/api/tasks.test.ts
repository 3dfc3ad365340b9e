// The task helpers (lib/tasks.ts): segmentation, depth with a valid mask, dense C-channel maps.
import { afterAll, describe, expect, it } from 'vitest';
import { PerceptualLoss } from '../../lib/index';
import { denseLoss, depthLoss, depthValidMask, segmentationLoss, type DenseLoss } from '../../lib/tasks';
import { expectCode } from '../helpers/expect-code';
import { randint, randn } from '../helpers/random';

const SMALL = { arch: [4, 'M', 8] as Array<number | 'M'>, layers: ['relu1_1', 'relu2_1'], device: 'cpu' as const };
const disposables: Array<{ dispose(): void }> = [];
function keep<T extends { dispose(): void }>(x: T): T {
  disposables.push(x);
  return x;
}
afterAll(() => disposables.forEach((d) => d.dispose()));

describe('segmentationLoss', () => {
  const shape = [2, 4, 8, 8];
  const logits = { data: randn(2 * 4 * 64, 1), shape };
  const labelData = randint(2 * 64, 0, 4, 2);
  labelData.fill(7, 0, 16); // 7 = ignore below
  const labels = { data: labelData, shape: [2, 8, 8] };

  it('builds inChannels = classes and equals lossAndGradSegmentation', () => {
    const seg = keep(segmentationLoss({ classes: 4, ignoreIndex: 7, ...SMALL }));
    expect(seg.classes).toBe(4);
    expect(seg.perceptual.options.inChannels).toBe(4);
    const direct = keep(new PerceptualLoss({ inChannels: 4, ...SMALL }));
    const a = seg.lossAndGrad(logits, labels);
    const b = direct.lossAndGradSegmentation(logits, labels, { ignoreIndex: 7 });
    expect(a.loss).toBe(b.loss);
    expect(a.grad).toEqual(b.grad);
    expect(a.loss).toBeGreaterThan(0);
    // The ignored pixels (the first 16 of sample 0) get no gradient in any channel.
    for (let c = 0; c < 4; c++) for (let p = 0; p < 16; p++) expect(Math.abs(a.grad[c * 64 + p])).toBe(0);
  });

  it('defaults ignoreIndex to 255 and takes NHWC logits per call', async () => {
    const seg = keep(segmentationLoss({ classes: 4, ...SMALL }));
    expect(seg.ignoreIndex).toBe(255);
    const nhwc = new Float32Array(logits.data.length);
    for (let b = 0; b < 2; b++) for (let c = 0; c < 4; c++) for (let p = 0; p < 64; p++) nhwc[(b * 64 + p) * 4 + c] = logits.data[(b * 4 + c) * 64 + p];
    const clean = { data: labelData.map((v) => v % 4), shape: [2, 8, 8] };
    const a = seg.lossAndGrad(logits, clean);
    const b = await seg.lossAndGradAsync({ data: nhwc, shape: [2, 8, 8, 4] }, clean, { layout: 'nhwc' });
    expect(b.loss).toBeCloseTo(a.loss, 6);
  });

  it('gives the NHWC gradient in NHWC: the NCHW gradient, permuted, ignored pixels 0', () => {
    const seg = keep(segmentationLoss({ classes: 4, ignoreIndex: 7, ...SMALL }));
    const toNhwc = (d: Float32Array) => {
      const out = new Float32Array(d.length);
      for (let b = 0; b < 2; b++) for (let c = 0; c < 4; c++) for (let p = 0; p < 64; p++) out[(b * 64 + p) * 4 + c] = d[(b * 4 + c) * 64 + p];
      return out;
    };
    const a = seg.lossAndGrad(logits, labels);
    const b = seg.lossAndGrad({ data: toNhwc(logits.data), shape: [2, 8, 8, 4] }, labels, { layout: 'nhwc' });
    const expected = toNhwc(a.grad);
    const scale = Math.max(...Array.from(expected, Math.abs));
    expect(scale).toBeGreaterThan(0);
    expect(b.grad).toBeInstanceOf(Float32Array);
    expect(b.grad.length).toBe(expected.length);
    for (let i = 0; i < expected.length; i++) expect(Math.abs(b.grad[i] - expected[i]), `grad[${i}]`).toBeLessThanOrEqual(1e-5 * scale);
    // Ignored pixels (the first 16 of sample 0): all 4 channels are contiguous in NHWC.
    expect(Array.from(b.grad.subarray(0, 16 * 4), Math.abs)).toEqual(Array(64).fill(0));
  });

  it('dispose() and `using` free the underlying loss', () => {
    let escaped: ReturnType<typeof segmentationLoss>;
    {
      using seg = segmentationLoss({ classes: 4, ...SMALL });
      escaped = seg;
      expect(seg.lossAndGrad(logits, { data: labelData.map((v) => v % 4), shape: [2, 8, 8] }).loss).toBeGreaterThan(0);
    }
    expectCode(() => escaped.lossAndGrad(logits, labels), 'ERR_DISPOSED', /^This PerceptualLoss has been disposed\.$/);
    const other = segmentationLoss({ classes: 4, ...SMALL });
    other.dispose();
    expectCode(() => other.perceptual.stateDict(), 'ERR_DISPOSED', /^This PerceptualLoss has been disposed\.$/);
  });

  it('rejects inChannels and a bad classes', () => {
    expectCode(() => segmentationLoss({ classes: 0 }), 'ERR_OPTIONS', /"classes".*integer >= 1/);
    expectCode(() => segmentationLoss({ classes: 3, inChannels: 3 } as never), 'ERR_OPTIONS', /set by the task.*"classes"/);
    expectCode(() => segmentationLoss({ classes: 3, ignoreIndex: 1.5 }), 'ERR_OPTIONS', /^Invalid option "ignoreIndex": got 1\.5; allowed: an integer\.$/);
  });
});

describe('depthLoss', () => {
  const shape = [2, 1, 8, 8];
  const pred = { data: randn(128, 3), shape };
  const targetData = randn(128, 4).map((v) => Math.abs(v) + 0.5);
  // Invalid depth: zeros and a NaN, as in real sensor data.
  targetData.fill(0, 20, 40);
  targetData[90] = NaN;
  const target = { data: targetData, shape };

  it('masks: equals the plain loss on pre-masked inputs, zero gradient where invalid', () => {
    const depth = keep(depthLoss(SMALL));
    expect(depth.channels).toBe(1);
    const mask = depthValidMask(target);
    expect(Array.from(mask.subarray(18, 42))).toEqual([1, 1, ...new Array<number>(20).fill(0), 1, 1]);
    expect(mask[90]).toBe(0);
    const masked = depth.lossAndGrad(pred, target, { mask });

    const zeroed = (d: Float32Array) => d.map((v, i) => (mask[i] ? v : 0));
    const plain = depth.perceptual.lossAndGrad({ data: zeroed(pred.data), shape }, { data: zeroed(targetData), shape });
    expect(masked.loss).toBe(plain.loss);
    expect(depth.loss(pred, target, { mask })).toBe(plain.loss);
    for (let i = 0; i < 128; i++) {
      if (mask[i]) expect(masked.grad[i]).toBe(plain.grad[i]);
      else expect(masked.grad[i]).toBe(0);
    }
    // The unmasked gradient does reach into the invalid region: the mask is what zeroes it.
    expect(plain.grad.subarray(20, 40).some((g) => g !== 0)).toBe(true);
  });

  it('without a mask is the plain loss; NaN in the target is then rejected', () => {
    const depth = keep(depthLoss(SMALL));
    const clean = { data: targetData.map((v) => (Number.isNaN(v) ? 1 : v)), shape };
    expect(depth.lossAndGrad(pred, clean).loss).toBe(depth.perceptual.lossAndGrad(pred, clean).loss);
    expectCode(() => depth.lossAndGrad(pred, target), 'ERR_NONFINITE', /^target contains NaN or Inf values \(set checkFinite: false/);
  });

  it('accepts depthValidMask ranges, masks as { data, shape }, and rejects a mask with a prepared target', () => {
    const depth = keep(depthLoss(SMALL));
    const mask = depthValidMask(target, { min: 0.6, max: 2 });
    for (let i = 0; i < 128; i++) expect(mask[i]).toBe(targetData[i] > 0.6 && targetData[i] <= 2 ? 1 : 0);
    const a = depth.lossAndGrad(pred, target, { mask });
    const b = depth.lossAndGrad(pred, target, { mask: { data: mask, shape: [2, 8, 8] } });
    expect(a.loss).toBe(b.loss);
    using prepared = depth.perceptual.prepareTarget({ data: targetData.map((v) => (Number.isNaN(v) ? 1 : v)), shape });
    expectCode(() => depth.lossAndGrad(pred, prepared, { mask }), 'ERR_OPTIONS', /mask cannot be applied to a prepared target/);
    expectCode(() => depth.lossAndGrad(pred, target, { mask: new Uint8Array(5) }), 'ERR_SHAPE', /mask holds 5 values; expected 128/);
    expectCode(() => depth.lossAndGrad(pred, target, { mask: { data: mask, shape: [2, 64] } }), 'ERR_SHAPE', /\[N, H, W\]/);
  });
});

describe('denseLoss', () => {
  const [n, c, h, w] = [2, 3, 8, 8];
  const nchw = [n, c, h, w];
  const nhwcShape = [n, h, w, c];
  const pred = randn(n * c * h * w, 5);
  const target = randn(pred.length, 6);
  const pixelMask = new Uint8Array(randint(n * h * w, 0, 2, 7));
  const toNhwc = (d: Float32Array) => {
    const out = new Float32Array(d.length);
    for (let b = 0; b < n; b++) for (let k = 0; k < c; k++) for (let p = 0; p < h * w; p++) out[(b * h * w + p) * c + k] = d[(b * c + k) * h * w + p];
    return out;
  };
  let dense: DenseLoss;

  it('takes C-channel maps; a per-pixel mask covers every channel, in NCHW and NHWC', () => {
    dense = keep(denseLoss({ channels: 3, ...SMALL }));
    expect(dense.perceptual.options.inChannels).toBe(3);
    const a = dense.lossAndGrad({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask: pixelMask });
    const b = dense.lossAndGrad({ data: toNhwc(pred), shape: nhwcShape }, { data: toNhwc(target), shape: nhwcShape }, { mask: pixelMask, layout: 'nhwc' });
    expect(b.loss).toBeCloseTo(a.loss, 6);
    const aNhwc = toNhwc(a.grad);
    for (let i = 0; i < aNhwc.length; i++) expect(b.grad[i]).toBeCloseTo(aNhwc[i], 7);
    // Masked pixels: zero gradient in all three channels.
    for (let b0 = 0; b0 < n; b0++)
      for (let k = 0; k < c; k++)
        for (let p = 0; p < h * w; p++) if (!pixelMask[b0 * h * w + p]) expect(Math.abs(a.grad[(b0 * c + k) * h * w + p])).toBe(0);
  });

  it('a soft per-element mask gives the exact gradient of loss(m * pred, m * target)', () => {
    dense ??= keep(denseLoss({ channels: 3, ...SMALL }));
    const precise = keep(denseLoss({ channels: 3, ...SMALL, dtype: 'float64' }));
    const m = Float64Array.from(randn(pred.length, 8), (v) => Math.abs(v) / 2);
    const p64 = Float64Array.from(pred);
    const t64 = Float64Array.from(target);
    const at = (d: Float64Array) => precise.loss({ data: d, shape: nchw }, { data: t64, shape: nchw }, { mask: m });
    const { grad } = precise.lossAndGrad({ data: p64, shape: nchw }, { data: t64, shape: nchw }, { mask: m });
    expect(grad).toBeInstanceOf(Float64Array);
    const scale = Math.max(...Array.from(grad, Math.abs));
    const eps = 1e-6;
    for (const i of randint(16, 0, pred.length, 9)) {
      const plus = p64.slice();
      const minus = p64.slice();
      plus[i] += eps;
      minus[i] -= eps;
      expect(Math.abs((at(plus) - at(minus)) / (2 * eps) - grad[i]) / scale).toBeLessThan(1e-5);
    }
  });

  it('lossAndGradAsync with a mask gives what lossAndGrad gives, off the JavaScript thread', async () => {
    dense ??= keep(denseLoss({ channels: 3, ...SMALL }));
    const call = { mask: pixelMask };
    const sync = dense.lossAndGrad({ data: pred, shape: nchw }, { data: target, shape: nchw }, call);
    const pending = dense.lossAndGradAsync({ data: pred, shape: nchw }, { data: target, shape: nchw }, call);
    expect(pending).toBeInstanceOf(Promise);
    const async = await pending;
    expect(async.loss).toBe(sync.loss);
    expect(async.grad).toEqual(sync.grad);
    // The mask did act: the unmasked loss differs.
    expect(dense.loss({ data: pred, shape: nchw }, { data: target, shape: nchw })).not.toBe(sync.loss);
  });

  it('a per-element mask in NHWC covers each element, as the same mask in NCHW does', () => {
    dense ??= keep(denseLoss({ channels: 3, ...SMALL }));
    // 0/1 per element, channels differ within a pixel, so a per-pixel reading would be wrong.
    const elementMask = new Uint8Array(randint(pred.length, 0, 2, 10));
    const a = dense.lossAndGrad({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask: elementMask });
    const nhwcMask = new Uint8Array(toNhwc(Float32Array.from(elementMask)));
    const b = dense.lossAndGrad(
      { data: toNhwc(pred), shape: nhwcShape },
      { data: toNhwc(target), shape: nhwcShape },
      { mask: { data: nhwcMask, shape: nhwcShape }, layout: 'nhwc' },
    );
    expect(b.loss).toBeCloseTo(a.loss, 6);
    const expected = toNhwc(a.grad);
    const scale = Math.max(...Array.from(expected, Math.abs));
    for (let i = 0; i < expected.length; i++) {
      if (nhwcMask[i] === 0) expect(Math.abs(b.grad[i]), `grad[${i}] is masked out`).toBe(0);
      else expect(Math.abs(b.grad[i] - expected[i]), `grad[${i}]`).toBeLessThanOrEqual(1e-5 * scale);
    }
    // Equal to the plain loss of the masked inputs.
    const zeroed = (d: Float32Array) => d.map((v, i) => (nhwcMask[i] ? v : 0));
    const plain = dense.perceptual.loss({ data: zeroed(toNhwc(pred)), shape: nhwcShape }, { data: zeroed(toNhwc(target)), shape: nhwcShape }, { layout: 'nhwc' });
    expect(b.loss).toBeCloseTo(plain, 6);
  });

  it('dispose() and `using` free the underlying loss', () => {
    let escaped: DenseLoss;
    {
      using normals = denseLoss({ channels: 3, ...SMALL });
      escaped = normals;
      expect(normals.loss({ data: pred, shape: nchw }, { data: target, shape: nchw })).toBeGreaterThan(0);
    }
    expectCode(() => escaped.loss({ data: pred, shape: nchw }, { data: target, shape: nchw }), 'ERR_DISPOSED', /^This PerceptualLoss has been disposed\.$/);
    const depth = depthLoss(SMALL);
    depth.dispose();
    expectCode(() => depth.lossAndGrad({ data: pred.subarray(0, 128), shape: [2, 1, 8, 8] }, { data: target.subarray(0, 128), shape: [2, 1, 8, 8] }), 'ERR_DISPOSED', /^This PerceptualLoss has been disposed\.$/);
  });

  it('rejects inChannels and a bad channels', () => {
    expectCode(() => denseLoss({ channels: -1 }), 'ERR_OPTIONS', /^Invalid option "channels": got -1; allowed: an integer >= 1 \(required\)\.$/);
    expectCode(() => denseLoss({ channels: 2, inChannels: 2 } as never), 'ERR_OPTIONS', /"channels" instead/);
    expectCode(() => depthLoss({ inChannels: 1 } as never), 'ERR_OPTIONS', /^depthLoss: "inChannels" is set by the task; use "channels" instead\.$/);
  });
});
