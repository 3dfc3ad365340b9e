// The resolved options of docs/api.md: every default, the default taps of each arch, layerWeights
// by name, and copies in both directions (docs/api.md, "Options").
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, runtime, setNumThreads, type ResolvedOptions } from '../../lib/index';
import { host, SHAPE, SMALL } from '../helpers/api';

beforeAll(() => {
  // Tiny tensors: one intra-op thread avoids thread hand-offs that are slow on a busy CI machine.
  setNumThreads(1);
});

// ------------------------------------------------------------------ options

describe('options', () => {
  const autoDevice = () => runtime().devices.find((d) => d.startsWith('cuda')) ?? 'cpu';

  it('fills in every default of docs/api.md', () => {
    expect(new PerceptualLoss({ inChannels: 3 }).options).toEqual({
      inChannels: 3,
      spatialDims: 2,
      arch: 'vgg19',
      layers: ['relu1_2', 'relu2_2', 'relu3_4', 'relu4_4', 'relu5_4'],
      layerWeights: [1, 1, 1, 1, 1],
      criterion: 'l2',
      featureWeight: 1,
      styleWeight: 0,
      reduction: 'mean',
      init: 'kaiming_normal',
      seed: 0,
      pool: 'max',
      device: autoDevice(),
      dtype: 'float32',
      layout: 'nchw',
      checkFinite: true,
      cudnnBenchmark: false,
      channelsLast: false,
      cudaGraphs: false,
      targetStream: false,
      allowTF32: true,
    });
  });

  it.each([
    ['vgg11', ['relu1_1', 'relu2_1', 'relu3_2', 'relu4_2', 'relu5_2']],
    ['vgg13', ['relu1_2', 'relu2_2', 'relu3_2', 'relu4_2', 'relu5_2']],
    ['vgg16', ['relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3']],
  ] as const)('taps the last ReLU of each block of %s by default', (arch, layers) => {
    const options = new PerceptualLoss({ inChannels: 1, arch }).options;
    expect(options.layers).toEqual(layers);
    expect(options.layerWeights).toEqual([1, 1, 1, 1, 1]);
  });

  it('taps the last ReLU of each block of a custom arch by default', () => {
    expect(new PerceptualLoss({ inChannels: 2, arch: [8, 'M', 16, 16, 'M', 32] }).options.layers).toEqual(['relu1_1', 'relu2_2', 'relu3_1']);
    // A trailing 'M' ends block 1; there is no block 2 to tap.
    expect(new PerceptualLoss({ inChannels: 2, arch: [8, 8, 'M'] }).options.layers).toEqual(['relu1_2']);
  });

  it('resolves layerWeights given by name to one weight per tap, in layers order (missing names weigh 1)', () => {
    const loss = new PerceptualLoss({ ...SMALL, layerWeights: { relu3_1: 4, conv1_1: 0.5 } });
    expect(loss.options.layerWeights).toEqual([0.5, 1, 1, 4]);
  });

  it('keeps a custom arch and explicit values as given', () => {
    const options = new PerceptualLoss({ ...SMALL, init: { normal: 0.02 }, seed: 12, pool: 'avg', criterion: 'smooth_l1', device: 'cpu' }).options;
    expect(options.arch).toEqual([8, 'M', 16, 'M', 16]);
    expect(options.layers).toEqual(['conv1_1', 'relu2_1', 'pool2', 'relu3_1']);
    expect(options.init).toEqual({ normal: 0.02 });
    expect([options.seed, options.pool, options.criterion, options.device]).toEqual([12, 'avg', 'smooth_l1', 'cpu']);
  });

  it('returns a copy: mutating it changes neither the options nor the results', () => {
    const loss = new PerceptualLoss(SMALL);
    const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];
    const before = { options: loss.options, loss: loss.loss(pred, target) };
    const options = loss.options as ResolvedOptions;
    options.layers.push('relu1_1');
    options.layerWeights[0] = 100;
    (options.arch as Array<number | 'M'>)[0] = 64;
    options.seed = 9;
    options.reduction = 'sum';
    expect(loss.options).toEqual(before.options);
    expect(loss.loss(pred, target)).toBe(before.loss);
  });

  it('copies the options it is given: mutating them afterwards changes nothing', () => {
    const arch: Array<number | 'M'> = [8, 'M', 16];
    const layers = ['relu1_1', 'relu2_1'];
    const layerWeights = [1, 2];
    const loss = new PerceptualLoss({ inChannels: 3, arch, layers, layerWeights });
    const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];
    const before = loss.loss(pred, target);
    arch[0] = 4;
    layers.pop();
    layerWeights[1] = 50;
    expect(loss.options).toMatchObject({ arch: [8, 'M', 16], layers: ['relu1_1', 'relu2_1'], layerWeights: [1, 2] });
    expect(loss.loss(pred, target)).toBe(before);
  });
});
