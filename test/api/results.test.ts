// What a call gives back (docs/api.md): the same results in either layout, the reductions
// ('none', 'sum', 'mean'), and the per-tap terms.
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, setNumThreads, type PerceptualLossOptions } from '../../lib/index';
import { count, host, sample, SHAPE, SMALL, toNchw } from '../helpers/api';
import { randint } from '../helpers/random';
import { relError, relErrorScalar } from '../helpers/reference';

beforeAll(() => {
  // Tiny tensors: one intra-op thread avoids thread hand-offs that are slow on a busy CI machine.
  setNumThreads(1);
});

// ------------------------------------------------------------------ layout

describe('layout', () => {
  const nhwcShape = [2, 12, 16, 3];
  const nchwShape = [2, 3, 12, 16];
  const [pred, target] = [host(nhwcShape, 1), host(nhwcShape, 2)];
  const predNchw = { data: toNchw(pred.data, nhwcShape), shape: nchwShape };
  const targetNchw = { data: toNchw(target.data, nhwcShape), shape: nchwShape };

  it("per call ({ layout: 'nhwc' }) equals nchw on transposed data, with the grad in nhwc", () => {
    const loss = new PerceptualLoss({ ...SMALL, styleWeight: 1 });
    const a = loss.lossAndGrad(pred, target, { layout: 'nhwc' });
    const b = loss.lossAndGrad(predNchw, targetNchw);
    expect(relErrorScalar(a.loss as number, b.loss as number)).toBeLessThan(1e-6);
    expect(relError(toNchw(a.grad, nhwcShape), b.grad)).toBeLessThan(1e-6);
  });

  it("a loss built with layout 'nhwc' equals the per-call option, and a call can switch back to nchw", () => {
    const nhwc = new PerceptualLoss({ ...SMALL, layout: 'nhwc' });
    const nchw = new PerceptualLoss(SMALL);
    expect(nhwc.loss(pred, target)).toBe(nchw.loss(pred, target, { layout: 'nhwc' }));
    expect(nhwc.loss(predNchw, targetNchw, { layout: 'nchw' })).toBe(nchw.loss(predNchw, targetNchw));
  });

  it('gives features in the layout of the input', () => {
    const loss = new PerceptualLoss(SMALL);
    const a = loss.features(pred, { layout: 'nhwc' });
    const b = loss.features(predNchw);
    a.forEach((f, i) => {
      const [n, c, h, w] = b[i].shape;
      expect(f.shape).toEqual([n, h, w, c]);
      expect(relError(toNchw(f.data, f.shape), b[i].data)).toBeLessThan(1e-6);
    });
  });

  it('applies to segmentation logits', () => {
    const loss = new PerceptualLoss(SMALL);
    const labels = { data: randint(2 * 12 * 16, 0, 3, 9), shape: [2, 12, 16] };
    const a = loss.lossAndGradSegmentation(pred, labels, { layout: 'nhwc' });
    const b = loss.lossAndGradSegmentation(predNchw, labels);
    expect(relErrorScalar(a.loss as number, b.loss as number)).toBeLessThan(1e-6);
    expect(relError(toNchw(a.grad, nhwcShape), b.grad)).toBeLessThan(1e-6);
  });
});

// ------------------------------------------------------------------ reductions

describe('reductions', () => {
  const [pred, target] = [host([3, 3, 16, 16], 1), host([3, 3, 16, 16], 2)];

  it.each([0, 1.5])("'none' gives one value per sample: the 'mean' loss of that sample alone (styleWeight %s)", (styleWeight) => {
    const none = new PerceptualLoss({ ...SMALL, styleWeight, reduction: 'none' });
    const mean = new PerceptualLoss({ ...SMALL, styleWeight });
    const result = none.lossAndGrad(pred, target);
    expect(result.loss).toBeInstanceOf(Float32Array);
    expect((result.loss).length).toBe(3);
    expect(none.loss(pred, target)).toEqual(result.loss);
    const size = count(pred.shape) / 3;
    for (let i = 0; i < 3; i++) {
      const alone = mean.lossAndGrad(sample(pred, i), sample(target, i));
      expect(relErrorScalar((result.loss)[i], alone.loss as number)).toBeLessThan(1e-5);
      // The gradient of 'none' is that of the sum of the per-sample losses.
      expect(relError(result.grad.subarray(i * size, (i + 1) * size), alone.grad)).toBeLessThan(1e-5);
    }
  });

  it("'sum' sums where 'mean' averages: for one tap, sum = mean * the tap's element count", () => {
    const one = { inChannels: 3, arch: [8, 'M', 16] as Array<number | 'M'>, layers: ['relu2_1'] };
    const mean = new PerceptualLoss(one).loss(pred, target);
    const sum = new PerceptualLoss({ ...one, reduction: 'sum' }).loss(pred, target);
    expect(relErrorScalar(sum, mean * 3 * 16 * 8 * 8)).toBeLessThan(1e-5);
  });
});

// ------------------------------------------------------------------ terms

describe('terms', () => {
  const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];
  const options: PerceptualLossOptions = { inChannels: 3, arch: [8, 'M', 16], layers: ['relu2_1', 'conv1_1', 'pool1'], layerWeights: [2, 0.5, 3] };

  it('has one entry per tap, in layers order, whose feature terms sum to the loss (styleWeight 0)', () => {
    const result = new PerceptualLoss(options).lossAndGrad(pred, target);
    expect(result.terms.map((t) => t.name)).toEqual(['relu2_1', 'conv1_1', 'pool1']);
    expect(result.terms.every((t) => t.style === 0)).toBe(true);
    const total = result.terms.reduce((s, t) => s + t.feature, 0);
    expect(relErrorScalar(total, result.loss as number)).toBeLessThan(1e-6);
  });

  it("gives each tap's weighted share: weight * the loss of that tap alone", () => {
    const result = new PerceptualLoss({ ...options, featureWeight: 1.5 }).lossAndGrad(pred, target);
    result.terms.forEach((term, i) => {
      const alone = new PerceptualLoss({ inChannels: 3, arch: [8, 'M', 16], layers: [term.name] }).loss(pred, target);
      expect(relErrorScalar(term.feature, 1.5 * (options.layerWeights as number[])[i] * alone)).toBeLessThan(1e-6);
    });
  });

  it('splits feature and style shares, which together sum to the loss', () => {
    const result = new PerceptualLoss({ ...options, styleWeight: 4 }).lossAndGrad(pred, target);
    expect(result.terms.every((t) => t.style > 0 && t.feature > 0)).toBe(true);
    const total = result.terms.reduce((s, t) => s + t.feature + t.style, 0);
    expect(relErrorScalar(total, result.loss as number)).toBeLessThan(1e-6);
  });

  it("sums over samples with reduction 'none'", () => {
    const result = new PerceptualLoss({ ...options, styleWeight: 1, reduction: 'none' }).lossAndGrad(pred, target);
    const total = result.terms.reduce((s, t) => s + t.feature + t.style, 0);
    const perSample = Array.from(result.loss).reduce((a, b) => a + b, 0);
    expect(relErrorScalar(total, perSample)).toBeLessThan(1e-6);
  });
});
