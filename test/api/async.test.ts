// The async methods of docs/api.md: equal to their synchronous forms, copying their inputs, finishing
// calls in flight when the loss or a Tensor is disposed, and running concurrent calls independently.
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, setNumThreads } from '../../lib/index';
import { host, SHAPE, SMALL } from '../helpers/api';
import { randint } from '../helpers/random';

beforeAll(() => {
  // Tiny tensors: one intra-op thread avoids thread hand-offs that are slow on a busy CI machine.
  setNumThreads(1);
});

// ------------------------------------------------------------------ async

describe('async methods', () => {
  const loss = new PerceptualLoss({ ...SMALL, styleWeight: 0.5 });
  const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];
  const labels = { data: randint(2 * 16 * 16, 0, 3, 3), shape: [2, 16, 16] };

  it('lossAndGradAsync equals lossAndGrad exactly', async () => {
    const expected = loss.lossAndGrad(pred, target);
    const result = await loss.lossAndGradAsync(pred, target);
    expect(result.loss).toBe(expected.loss);
    expect(result.grad).toEqual(expected.grad);
    expect(result.terms).toEqual(expected.terms);
  });

  it('lossAsync, featuresAsync and lossAndGradSegmentationAsync equal their synchronous forms', async () => {
    expect(await loss.lossAsync(pred, target)).toBe(loss.loss(pred, target));
    expect(await loss.featuresAsync(pred)).toEqual(loss.features(pred));
    const seg = loss.lossAndGradSegmentation(pred, labels);
    const segAsync = await loss.lossAndGradSegmentationAsync(pred, labels);
    expect(segAsync.loss).toBe(seg.loss);
    expect(segAsync.grad).toEqual(seg.grad);
  });

  it('copies its inputs: overwriting the arrays right after the call does not change the result', async () => {
    const expected = loss.lossAndGrad(pred, target);
    const p = { data: pred.data.slice(), shape: SHAPE };
    const t = { data: target.data.slice(), shape: SHAPE };
    const pending = loss.lossAndGradAsync(p, t);
    const pendingLoss = loss.lossAsync(p, t);
    const pendingFeatures = loss.featuresAsync(p);
    p.data.fill(0);
    t.data.fill(3);
    const result = await pending;
    expect(result.loss).toBe(expected.loss);
    expect(result.grad).toEqual(expected.grad);
    expect(await pendingLoss).toBe(expected.loss);
    expect(await pendingFeatures).toEqual(loss.features(pred));
  });

  it('copies labels and logits of a segmentation call', async () => {
    const expected = loss.lossAndGradSegmentation(pred, labels);
    const l = { data: pred.data.slice(), shape: SHAPE };
    const y = { data: labels.data.slice(), shape: labels.shape };
    const pending = loss.lossAndGradSegmentationAsync(l, y);
    l.data.fill(0);
    y.data.fill(1);
    const result = await pending;
    expect(result.loss).toBe(expected.loss);
    expect(result.grad).toEqual(expected.grad);
  });

  it('finishes a call in flight when the loss or the input Tensor is disposed right after it', async () => {
    const doomed = new PerceptualLoss({ ...SMALL, styleWeight: 0.5 });
    const p = Tensor.from(pred.data, SHAPE);
    const expected = loss.lossAndGrad(pred, target);
    const pending = doomed.lossAndGradAsync(p, target);
    const pendingLoss = doomed.lossAsync(pred, target);
    doomed.dispose();
    p.dispose();
    const result = await pending;
    expect(result.loss).toBe(expected.loss);
    expect(result.grad.toArray()).toEqual(expected.grad);
    expect(await pendingLoss).toBe(expected.loss);
  });

  it('runs concurrent calls independently', async () => {
    const inputs = [1, 2, 3, 4].map((s) => host(SHAPE, 100 + s));
    const expected = inputs.map((p) => loss.loss(p, target));
    expect(await Promise.all(inputs.map((p) => loss.lossAsync(p, target)))).toEqual(expected);
  });
});
