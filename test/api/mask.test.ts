// Masks on PerceptualLoss.loss / lossAndGrad (and the dense task helpers): applied on the device,
// they must give exactly loss(mask * pred, mask * target), computed by the package without a mask,
// and mask * its gradient.
import { afterAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor } from '../../lib/index';
import { denseLoss } from '../../lib/tasks';
import { expectCode } from '../helpers/expect-code';
import { randint, randn } from '../helpers/random';

const SMALL = { arch: [4, 'M', 8] as Array<number | 'M'>, layers: ['relu1_1', 'relu2_1'], device: 'cpu' as const };
const [n, c, h, w] = [2, 3, 8, 8];
const nchw = [n, c, h, w];
const nhwc = [n, h, w, c];
const pixels = n * h * w;
const elements = pixels * c;

const disposables: Array<{ dispose(): void }> = [];
function keep<T extends { dispose(): void }>(x: T): T {
  disposables.push(x);
  return x;
}
afterAll(() => disposables.forEach((d) => d.dispose()));

type Float = Float32Array | Float64Array;
type MaskValues = Uint8Array | Float32Array | Float64Array;

/** Which mask value covers element i of pred: per pixel in either layout, or per element. */
function coverage(perPixel: boolean, layout: 'nchw' | 'nhwc'): (i: number) => number {
  if (!perPixel) return (i) => i;
  const plane = h * w;
  return layout === 'nhwc' ? (i) => Math.floor(i / c) : (i) => Math.floor(i / (c * plane)) * plane + (i % plane);
}

/** The mask applied in JS, element by element: 0 where the mask is 0 (not NaN * 0), else x * m. */
function applied<A extends Float>(data: A, mask: MaskValues, index: (i: number) => number): A {
  const out = new (data.constructor as new (k: number) => A)(data.length);
  for (let i = 0; i < data.length; i++) {
    const m = mask[index(i)];
    out[i] = m === 0 ? 0 : data[i] * m;
  }
  return out;
}

/** What a mask must give: the unmasked loss of the masked inputs, and mask * its gradient. */
function reference(loss: PerceptualLoss, pred: Float, target: Float, shape: number[], mask: MaskValues, index: (i: number) => number, layout: 'nchw' | 'nhwc' = 'nchw') {
  const plain = loss.lossAndGrad({ data: applied(pred, mask, index), shape }, { data: applied(target, mask, index), shape }, { layout });
  return { loss: plain.loss, grad: applied(plain.grad, mask, index) };
}

function toNhwc(d: Float32Array): Float32Array {
  const out = new Float32Array(d.length);
  for (let b = 0; b < n; b++) for (let k = 0; k < c; k++) for (let p = 0; p < h * w; p++) out[(b * h * w + p) * c + k] = d[(b * c + k) * h * w + p];
  return out;
}

const pred = randn(elements, 11);
const target = randn(elements, 12);
const pixelMask = Uint8Array.from(randint(pixels, 0, 2, 13));
const softMask = Float32Array.from(randn(elements, 14), (v) => (v > 0.5 ? 0 : Math.abs(v)));

describe('mask on PerceptualLoss', () => {
  it('a per-pixel host mask gives exactly loss(m * pred, m * target) and m * its gradient', () => {
    const loss = keep(new PerceptualLoss({ inChannels: c, ...SMALL }));
    const want = reference(loss, pred, target, nchw, pixelMask, coverage(true, 'nchw'));
    const got = loss.lossAndGrad({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask: pixelMask });
    expect(got.loss).toBe(want.loss);
    expect(got.grad).toEqual(want.grad);
    expect(loss.loss({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask: pixelMask })).toBe(want.loss);
    // Where the mask is 0 the gradient is +0 in every channel.
    for (let i = 0; i < elements; i++) if (pixelMask[coverage(true, 'nchw')(i)] === 0) expect(Object.is(got.grad[i], 0)).toBe(true);
  });

  it('reads a per-pixel mask as [N, H, W], [N, 1, H, W] or a bare array, all alike', () => {
    const loss = keep(new PerceptualLoss({ inChannels: c, ...SMALL }));
    const p = { data: pred, shape: nchw };
    const t = { data: target, shape: nchw };
    const bare = loss.lossAndGrad(p, t, { mask: pixelMask });
    for (const shape of [[n, h, w], [n, 1, h, w]]) {
      const shaped = loss.lossAndGrad(p, t, { mask: { data: pixelMask, shape } });
      expect(shaped.loss).toBe(bare.loss);
      expect(shaped.grad).toEqual(bare.grad);
    }
  });

  it('a soft per-element mask, and a float64 mask on float32 data, match the JS semantics exactly', () => {
    const loss = keep(new PerceptualLoss({ inChannels: c, ...SMALL }));
    for (const mask of [softMask, Float64Array.from(softMask, (v) => v / 3)]) {
      const want = reference(loss, pred, target, nchw, mask, coverage(false, 'nchw'));
      const got = loss.lossAndGrad({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask: { data: mask, shape: nchw } });
      expect(got.loss).toBe(want.loss);
      expect(got.grad).toEqual(want.grad);
    }
  });

  it('takes Tensor pred, target and mask: the gradient is a Tensor equal to the host result', () => {
    const loss = keep(new PerceptualLoss({ inChannels: c, ...SMALL }));
    const want = loss.lossAndGrad({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask: pixelMask });
    using p = Tensor.from(pred, nchw, { device: 'cpu' });
    using t = Tensor.from(target, nchw, { device: 'cpu' });
    for (const mask of [Tensor.from(pixelMask, [n, h, w], { device: 'cpu' }), Tensor.from(Float32Array.from(pixelMask), [n, 1, h, w], { device: 'cpu' })]) {
      using m = mask;
      const got = loss.lossAndGrad(p, t, { mask: m });
      expect(got.grad).toBeInstanceOf(Tensor);
      using grad = got.grad;
      expect(got.loss).toBe(want.loss);
      expect(grad.shape).toEqual(nchw);
      expect(grad.toArray()).toEqual(want.grad);
    }
    // A host mask with Tensor operands, and a Tensor mask with host operands.
    const mixed = loss.lossAndGrad(p, t, { mask: pixelMask });
    using mixedGrad = mixed.grad;
    expect(mixedGrad.toArray()).toEqual(want.grad);
    using m = Tensor.from(pixelMask, [n, h, w], { device: 'cpu' });
    const hostOperands = loss.lossAndGrad({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask: m });
    expect(hostOperands.grad).toEqual(want.grad);
  });

  it('in nhwc: a per-pixel mask [N, H, W] or [N, H, W, 1] and a per-element one, in the call layout', () => {
    const loss = keep(new PerceptualLoss({ inChannels: c, ...SMALL }));
    const p = toNhwc(pred);
    const t = toNhwc(target);
    const want = reference(loss, p, t, nhwc, pixelMask, coverage(true, 'nhwc'), 'nhwc');
    for (const shape of [[n, h, w], [n, h, w, 1]]) {
      const got = loss.lossAndGrad({ data: p, shape: nhwc }, { data: t, shape: nhwc }, { mask: { data: pixelMask, shape }, layout: 'nhwc' });
      expect(got.loss).toBe(want.loss);
      expect(got.grad).toEqual(want.grad);
    }
    const soft = toNhwc(softMask);
    const wantSoft = reference(loss, p, t, nhwc, soft, coverage(false, 'nhwc'), 'nhwc');
    const gotSoft = loss.lossAndGrad({ data: p, shape: nhwc }, { data: t, shape: nhwc }, { mask: soft, layout: 'nhwc' });
    expect(gotSoft.loss).toBe(wantSoft.loss);
    expect(gotSoft.grad).toEqual(wantSoft.grad);
  });

  it('async gives the sync result, and the caller may change the mask as soon as the call returns', async () => {
    const loss = keep(new PerceptualLoss({ inChannels: c, ...SMALL }));
    const want = loss.lossAndGrad({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask: pixelMask });
    const mask = pixelMask.slice();
    const pending = loss.lossAndGradAsync({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask });
    const pendingLoss = loss.lossAsync({ data: pred, shape: nchw }, { data: target, shape: nchw }, { mask });
    mask.fill(1);
    const got = await pending;
    expect(got.loss).toBe(want.loss);
    expect(got.grad).toEqual(want.grad);
    expect(await pendingLoss).toBe(want.loss);
  });

  it('NaN and Inf under a 0 mask do no harm; under a non-zero mask checkFinite still rejects them', () => {
    const loss = keep(new PerceptualLoss({ inChannels: c, ...SMALL }));
    const index = coverage(true, 'nchw');
    const holed = pred.slice();
    const holedTarget = target.slice();
    const masked = [...Array(elements).keys()].filter((i) => pixelMask[index(i)] === 0);
    holed[masked[0]] = NaN;
    holedTarget[masked[1]] = Infinity;
    holedTarget[masked[2]] = NaN;
    const want = reference(loss, pred, target, nchw, pixelMask, index);
    const got = loss.lossAndGrad({ data: holed, shape: nchw }, { data: holedTarget, shape: nchw }, { mask: pixelMask });
    expect(got.loss).toBe(want.loss);
    expect(got.grad).toEqual(want.grad);
    const open = [...Array(elements).keys()].find((i) => pixelMask[index(i)] === 1)!;
    holed[open] = NaN;
    expectCode(() => loss.lossAndGrad({ data: holed, shape: nchw }, { data: target, shape: nchw }, { mask: pixelMask }), 'ERR_NONFINITE', /pred/);
  });

  it('rejects a mask with a prepared target, a mask of the wrong size, shape or dtype', () => {
    const loss = keep(new PerceptualLoss({ inChannels: c, ...SMALL }));
    const p = { data: pred, shape: nchw };
    using prepared = loss.prepareTarget({ data: target, shape: nchw });
    expectCode(() => loss.lossAndGrad(p, prepared, { mask: pixelMask }), 'ERR_OPTIONS', /mask cannot be applied to a prepared target/);
    expectCode(() => loss.loss(p, prepared, { mask: pixelMask }), 'ERR_OPTIONS', /prepared target/);
    expectCode(() => loss.lossAndGrad(p, p, { mask: new Uint8Array(7) }), 'ERR_SHAPE', /mask holds 7 values; expected 128 .* or 384/);
    expectCode(() => loss.lossAndGrad(p, p, { mask: { data: pixelMask, shape: [n, h * w] } }), 'ERR_SHAPE', /\[N, H, W\] = \[2, 8, 8\], \[N, 1, H, W\]/);
    expectCode(() => loss.lossAndGrad(p, p, { mask: new Int32Array(pixels) as never }), 'ERR_DTYPE', /mask must be/);
    using labels = Tensor.from(new Int32Array(pixels), [n, h, w], { device: 'cpu' });
    expectCode(() => loss.lossAndGrad(p, p, { mask: labels }), 'ERR_DTYPE', /int32 Tensor/);
  });
});

describe('mask on the dense task helpers', () => {
  it('DenseLoss takes Tensors with a Tensor mask, as PerceptualLoss does', async () => {
    const dense = keep(denseLoss({ channels: c, ...SMALL }));
    const want = reference(dense.perceptual, pred, target, nchw, pixelMask, coverage(true, 'nchw'));
    using p = Tensor.from(pred, nchw, { device: 'cpu' });
    using t = Tensor.from(target, nchw, { device: 'cpu' });
    using m = Tensor.from(pixelMask, [n, h, w], { device: 'cpu' });
    const got = await dense.lossAndGradAsync(p, t, { mask: m });
    using grad = got.grad;
    expect(got.loss).toBe(want.loss);
    expect(grad.toArray()).toEqual(want.grad);
    expect(dense.loss(p, t, { mask: m })).toBe(want.loss);
  });
});
