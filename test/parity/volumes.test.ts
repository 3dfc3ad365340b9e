// Parity with PyTorch for volumes (spatialDims: 3) and instance masks: the Conv3d network's
// weights bit for bit, and features, loss and gradient within the 2-D tolerances (1e-5 float32,
// 1e-10 float64), against reference/cases.py.
import { beforeAll, describe, expect, it } from 'vitest';
import { instanceMaskLoss, PerceptualLoss, type PerceptualLossOptions } from '../../lib/index';
import { randint, randn } from '../helpers/random';
import { relError, runReference, sha256OfFloat32, type RefCase, type RefResult } from '../helpers/reference';

interface Case {
  id: string;
  options: PerceptualLossOptions;
  /** In the layout of the options. */
  shape: number[];
  /** pred and target are multiplied by a 0/1 mask, one value per voxel. */
  masked?: boolean;
  /** A segmentation case: classes = inChannels, labels [N, D, H, W] with `ignored` voxels. */
  segmentation?: { ignored: number };
  /** pred takes the values 0, 1 and 2 only: a max pool over it meets exact ties. */
  ties?: boolean;
}

const SMALL: Array<number | 'M'> = [8, 'M', 16, 16, 'M', 24];

const CASES: Case[] = [
  // The default 3-D arch, at the smallest volume its deepest tap takes.
  { id: 'vol-default-1ch', options: { inChannels: 1, spatialDims: 3 }, shape: [1, 1, 16, 16, 16] },
  { id: 'vol-default-2ch-style', options: { inChannels: 2, spatialDims: 3, styleWeight: 0.5, seed: 5 }, shape: [2, 2, 16, 17, 16] },
  // A named 2-D arch in 3-D, cut at its first taps.
  { id: 'vol-vgg11-4ch', options: { inChannels: 4, spatialDims: 3, arch: 'vgg11', layers: ['relu1_1', 'relu2_1', 'relu3_2'] }, shape: [1, 4, 9, 8, 12] },
  // Criteria and reductions.
  { id: 'vol-l1-sum', options: { inChannels: 2, spatialDims: 3, arch: SMALL, criterion: 'l1', reduction: 'sum' }, shape: [2, 2, 6, 8, 10] },
  { id: 'vol-smoothl1-none', options: { inChannels: 1, spatialDims: 3, arch: SMALL, criterion: 'smooth_l1', reduction: 'none' }, shape: [3, 1, 8, 8, 6] },
  { id: 'vol-style-l1-none', options: { inChannels: 4, spatialDims: 3, arch: SMALL, criterion: 'l1', styleWeight: 2, reduction: 'none' }, shape: [2, 4, 4, 6, 8] },
  // Taps, pools, inits.
  {
    id: 'vol-avg-taps',
    options: { inChannels: 2, spatialDims: 3, arch: SMALL, pool: 'avg', layers: ['conv1_1', 'pool1', 'relu2_2', 'relu3_1'], layerWeights: [0.5, 2, 1, 3] },
    shape: [1, 2, 8, 6, 10],
  },
  // A max pool first, over inputs with exact ties and odd sizes (voxels no window covers): each
  // window's gradient goes to its first maximum in (d, h, w) order, as PyTorch's does.
  { id: 'vol-pool-first-ties', options: { inChannels: 1, spatialDims: 3, arch: ['M', 8, 'M', 8] }, shape: [2, 1, 7, 9, 6], ties: true },
  { id: 'vol-pool-first-ties-f64', options: { inChannels: 2, spatialDims: 3, arch: ['M', 8, 'M', 8], dtype: 'float64' }, shape: [1, 2, 9, 6, 7], ties: true },
  { id: 'vol-xavier-uniform', options: { inChannels: 1, spatialDims: 3, arch: SMALL, init: 'xavier_uniform', seed: 9 }, shape: [1, 1, 8, 8, 8] },
  // Layouts.
  { id: 'vol-ndhwc', options: { inChannels: 2, spatialDims: 3, arch: SMALL, layout: 'ndhwc', styleWeight: 1 }, shape: [2, 6, 8, 4, 2] },
  { id: 'vol-ndhwc-default', options: { inChannels: 4, spatialDims: 3, layout: 'ndhwc' }, shape: [1, 16, 16, 16, 4] },
  // A mask, one value per voxel.
  { id: 'vol-mask', options: { inChannels: 2, spatialDims: 3, arch: SMALL }, shape: [2, 2, 6, 8, 6], masked: true },
  // float64.
  { id: 'vol-f64', options: { inChannels: 2, spatialDims: 3, arch: SMALL, dtype: 'float64', styleWeight: 1, criterion: 'smooth_l1' }, shape: [2, 2, 6, 6, 8] },
  { id: 'vol-f64-ndhwc-avg', options: { inChannels: 1, spatialDims: 3, arch: SMALL, dtype: 'float64', layout: 'ndhwc', pool: 'avg', reduction: 'sum' }, shape: [1, 8, 6, 8, 1] },
  // Segmentation of volumes: softmax against one-hot labels [N, D, H, W].
  { id: 'vol-seg-3', options: { inChannels: 3, spatialDims: 3, arch: SMALL }, shape: [2, 3, 6, 8, 8], segmentation: { ignored: 20 } },
];

const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const channelsLast = (options: PerceptualLossOptions) => options.layout === 'ndhwc';
/** [N, D, H, W] of a case's shape. */
const voxelShape = (c: Case) => (channelsLast(c.options) ? c.shape.slice(0, 4) : [c.shape[0], ...c.shape.slice(2)]);

function inputsOf(c: Case, index: number) {
  const n = count(c.shape);
  const pred = c.ties ? Float32Array.from(randint(n, 0, 3, 5000 + index)) : randn(n, 5000 + index);
  const target = randn(n, 6000 + index);
  const mask = c.masked ? Float32Array.from(randint(count(voxelShape(c)), 0, 2, 7000 + index)) : undefined;
  let labels: Int32Array | undefined;
  if (c.segmentation) {
    labels = randint(count(voxelShape(c)), 0, c.options.inChannels, 8000 + index);
    for (const s of randint(c.segmentation.ignored, 0, labels.length, 9000 + index)) labels[s] = 255;
  }
  return { pred, target, mask, labels };
}

describe('parity with PyTorch: volumes', () => {
  let reference: Map<string, RefResult>;

  beforeAll(async () => {
    const cases: RefCase[] = CASES.map((c, i) => {
      const { pred, target, mask, labels } = inputsOf(c, i);
      return {
        id: c.id,
        options: c.options as RefCase['options'],
        shape: c.shape,
        pred,
        target,
        mask,
        labels,
        outputs: ['weights', 'features', 'loss', 'grad'],
      };
    });
    reference = await runReference(cases);
  }, 600_000);

  CASES.forEach((c, index) => {
    const f64 = c.options.dtype === 'float64';
    const tolerance = f64 ? 1e-10 : 1e-5;
    const host = (data: Float32Array) => ({ data: f64 ? Float64Array.from(data) : data, shape: c.shape });

    describe(c.id, () => {
      const loss = () => new PerceptualLoss(c.options);

      it('draws bit-identical Conv3d weights, [Cout, Cin, 3, 3, 3] by their torch names', () => {
        const ref = reference.get(c.id)!;
        const state = loss().stateDict();
        expect(Object.keys(state)).toEqual(ref.stateDictNames);
        expect(Object.values(state)[0].shape).toEqual([Object.values(state)[0].shape[0], c.options.inChannels, 3, 3, 3]);
        expect(sha256OfFloat32(Object.values(state).map((t) => t.data))).toBe(ref.weightsSha256);
      });

      if (!c.segmentation && !c.masked) {
        it(`matches the features of pred within ${tolerance}`, () => {
          const ref = reference.get(c.id)!;
          const features = loss().features(host(inputsOf(c, index).pred));
          expect(features.map((f) => f.name)).toEqual(ref.features!.map((f) => f.name));
          features.forEach((f, i) => {
            expect(f.shape).toEqual(ref.features![i].shape);
            expect(relError(f.data, ref.features![i].data), f.name).toBeLessThan(tolerance);
          });
        });
      }

      it(`matches the loss and its gradient within ${tolerance}`, () => {
        const ref = reference.get(c.id)!;
        const { pred, target, mask, labels } = inputsOf(c, index);
        const result = c.segmentation
          ? loss().lossAndGradSegmentation(host(pred), { data: labels!, shape: voxelShape(c) })
          : loss().lossAndGrad(host(pred), host(target), mask ? { mask: { data: mask, shape: voxelShape(c) } } : undefined);
        const expected = typeof ref.loss === 'number' ? [ref.loss] : ref.loss!;
        const actual = typeof result.loss === 'number' ? [result.loss] : result.loss;
        expect(relError(actual, expected), 'loss').toBeLessThan(tolerance);
        expect(result.grad).toBeInstanceOf(f64 ? Float64Array : Float32Array);
        expect(relError(result.grad, ref.grad!), 'grad').toBeLessThan(tolerance);
      });
    });
  });
});

interface InstanceCase {
  id: string;
  options: Omit<PerceptualLossOptions, 'inChannels'>;
  shape: number[];
  weights?: number[];
}

const INSTANCE_CASES: InstanceCase[] = [
  { id: 'inst-mean', options: { arch: 'vgg11', layers: ['relu1_1', 'relu2_1', 'relu3_2'] }, shape: [3, 1, 20, 24] },
  { id: 'inst-mean-weights', options: { arch: 'vgg11', layers: ['relu1_1', 'relu2_1', 'relu3_2'] }, shape: [3, 1, 20, 24], weights: [1, 0.25, 3] },
  { id: 'inst-sum-weights-style', options: { arch: SMALL, reduction: 'sum', styleWeight: 0.5 }, shape: [4, 1, 16, 12], weights: [0, 1, 2, 0.5] },
  { id: 'inst-none-weights-l1', options: { arch: SMALL, reduction: 'none', criterion: 'l1' }, shape: [3, 1, 12, 12], weights: [2, 1, 0.5] },
  { id: 'inst-nhwc-weights', options: { arch: SMALL, layout: 'nhwc' }, shape: [2, 14, 10, 1], weights: [3, 1] },
  { id: 'inst-f64-weights', options: { arch: SMALL, dtype: 'float64', criterion: 'smooth_l1' }, shape: [3, 1, 10, 10], weights: [1, 2, 3] },
  { id: 'inst-volume-weights', options: { arch: SMALL, spatialDims: 3 }, shape: [2, 1, 6, 8, 8], weights: [1, 4] },
];

describe('parity with PyTorch autograd: instance masks through sigmoid', () => {
  let reference: Map<string, RefResult>;
  const inputsOfInstance = (c: InstanceCase, index: number) => ({
    logits: randn(count(c.shape), 11000 + index).map((v) => 3 * v),
    masks: Float32Array.from(randint(count(c.shape), 0, 2, 12000 + index)),
  });

  beforeAll(async () => {
    const cases: RefCase[] = INSTANCE_CASES.map((c, i) => {
      const { logits, masks } = inputsOfInstance(c, i);
      return {
        id: c.id,
        options: { ...c.options, inChannels: 1 } as RefCase['options'],
        shape: c.shape,
        pred: logits,
        target: masks,
        instance: { masks, weights: c.weights },
        outputs: ['loss', 'grad'],
      };
    });
    reference = await runReference(cases);
  }, 600_000);

  INSTANCE_CASES.forEach((c, index) => {
    const f64 = c.options.dtype === 'float64';
    const tolerance = f64 ? 1e-10 : 1e-5;
    it(`${c.id}: loss and gradient with respect to the logits within ${tolerance}`, () => {
      const ref = reference.get(c.id)!;
      const { logits, masks } = inputsOfInstance(c, index);
      const loss = instanceMaskLoss(c.options);
      const pred = { data: f64 ? Float64Array.from(logits) : logits, shape: c.shape };
      // uint8 masks: the form a decoder or a rasteriser gives.
      const truth = { data: Uint8Array.from(masks), shape: c.shape };
      const result = loss.lossAndGrad(pred, truth, c.weights ? { weights: c.weights } : undefined);
      const expected = typeof ref.loss === 'number' ? [ref.loss] : ref.loss!;
      const actual = typeof result.loss === 'number' ? [result.loss] : result.loss;
      expect(relError(actual, expected), 'loss').toBeLessThan(tolerance);
      expect(relError(result.grad, ref.grad!), 'grad').toBeLessThan(tolerance);
    });
  });
});
