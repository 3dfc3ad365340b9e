// Prepared targets (docs/api.md, prepareTarget): the results of the plain target, for several
// predictions, with their own copy of the data, across reseed() and layouts, and for one loss only.
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, setNumThreads, type PerceptualLossOptions } from '../../lib/index';
import { host, SHAPE, SMALL } from '../helpers/api';
import { expectCode } from '../helpers/expect-code';

beforeAll(() => {
  // Tiny tensors: one intra-op thread avoids thread hand-offs that are slow on a busy CI machine.
  setNumThreads(1);
});

// ------------------------------------------------------------------ prepareTarget

describe('prepareTarget', () => {
  const options: PerceptualLossOptions = { ...SMALL, styleWeight: 2 };
  const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];

  it('gives exactly the loss and gradient of the plain target (style on)', () => {
    const loss = new PerceptualLoss(options);
    const prepared = loss.prepareTarget(target);
    expect(prepared.shape).toEqual(SHAPE);
    expect(loss.loss(pred, prepared)).toBe(loss.loss(pred, target));
    const a = loss.lossAndGrad(pred, prepared);
    const b = loss.lossAndGrad(pred, target);
    expect(a.loss).toBe(b.loss);
    expect(a.grad).toEqual(b.grad);
    expect(a.terms).toEqual(b.terms);
  });

  it('serves several predictions, sync and async', async () => {
    const loss = new PerceptualLoss(options);
    const prepared = loss.prepareTarget(target);
    for (const seed of [5, 6, 7]) {
      const p = host(SHAPE, seed);
      expect(loss.loss(p, prepared)).toBe(loss.loss(p, target));
      expect(await loss.lossAsync(p, prepared)).toBe(loss.loss(p, target));
    }
  });

  it('keeps its own copy of the target data', () => {
    const loss = new PerceptualLoss(options);
    const t = { data: target.data.slice(), shape: SHAPE };
    const prepared = loss.prepareTarget(t);
    t.data.fill(0);
    expect(loss.loss(pred, prepared)).toBe(loss.loss(pred, target));
  });

  it('follows reseed(): it then gives the result of the plain target with the new weights', () => {
    const loss = new PerceptualLoss(options);
    const t = { data: target.data.slice(), shape: SHAPE };
    const prepared = loss.prepareTarget(t);
    t.data.fill(0);
    const before = loss.loss(pred, prepared);
    loss.reseed(5);
    const after = loss.loss(pred, prepared);
    expect(after).not.toBe(before);
    expect(after).toBe(loss.loss(pred, target));
    expect(after).toBe(new PerceptualLoss({ ...options, seed: 5 }).loss(pred, target));
  });

  it('works with layout nhwc when prepared with it', () => {
    const loss = new PerceptualLoss(options);
    const shape = [2, 16, 16, 3];
    const [p, t] = [host(shape, 3), host(shape, 4)];
    const prepared = loss.prepareTarget(t, { layout: 'nhwc' });
    expect(prepared.layout).toBe('nhwc');
    expect(loss.loss(p, prepared, { layout: 'nhwc' })).toBe(loss.loss(p, t, { layout: 'nhwc' }));
  });

  it('is refused by another loss, even with the same options (ERR_OPTIONS)', () => {
    const a = new PerceptualLoss(options);
    const b = new PerceptualLoss(options);
    const prepared = a.prepareTarget(target);
    expectCode(() => b.loss(pred, prepared), 'ERR_OPTIONS', /another PerceptualLoss/);
    expect(b.loss(pred, target)).toBe(a.loss(pred, prepared));
  });
});
