// Volumes (docs/api.md, "Volumes (3-D)"): spatialDims 3, its default network and taps, 3x3x3
// convs and 2x2x2 pools checked against a plain JavaScript convolution, the Gram term's
// C*D*H*W, both 3-D layouts, masks, save/load, reseed, async calls, Tensors, prepared targets
// and the task helpers on [N, C, D, H, W] inputs.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_ARCH_3D } from '../../lib/network';
import { resolveOptions } from '../../lib/options';
import {
  denseLoss,
  depthLoss,
  PerceptualLoss,
  runtime,
  segmentationLoss,
  setNumThreads,
  Tensor,
  type HostTensor,
  type PerceptualLossOptions,
} from '../../lib/index';
import { weightBits } from '../helpers/api';
import { randint, randn } from '../helpers/random';
import { conv3d, maxRelError, ndhwcShape, toChannelsFirst, toChannelsLast } from '../helpers/volumes';

/** A small 3-D network with conv, relu and pool taps. */
const SMALL3 = { inChannels: 2, spatialDims: 3, arch: [4, 'M', 8], layers: ['conv1_1', 'pool1', 'relu2_1'], device: 'cpu' } as const satisfies PerceptualLossOptions;
const SHAPE3 = [2, 2, 8, 8, 8];
const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const host = (shape: number[], seed: number): HostTensor<Float32Array> => ({ data: randn(count(shape), seed), shape });
const host64 = (shape: number[], seed: number): HostTensor<Float64Array> => ({ data: Float64Array.from(randn(count(shape), seed)), shape });

const disposables: Array<{ dispose(): void }> = [];
function keep<T extends { dispose(): void }>(x: T): T {
  disposables.push(x);
  return x;
}
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-volumes-'));

beforeAll(() => {
  // Tiny volumes: one intra-op thread avoids thread hand-offs that are slow on a busy machine.
  setNumThreads(1);
});
afterAll(() => {
  disposables.forEach((d) => d.dispose());
  fs.rmSync(scratch, { recursive: true, force: true });
});

describe('options', () => {
  it("spatialDims 3 defaults to DEFAULT_ARCH_3D, its five relu{b}_1 taps and layout 'ncdhw'", () => {
    const options = keep(new PerceptualLoss({ inChannels: 1, spatialDims: 3, device: 'cpu' })).options;
    expect(options.spatialDims).toBe(3);
    expect(options.arch).toEqual([64, 'M', 128, 'M', 256, 'M', 512, 'M', 512]);
    expect(options.arch).toEqual([...DEFAULT_ARCH_3D]);
    expect(options.layers).toEqual(['relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1']);
    expect(options.layerWeights).toEqual([1, 1, 1, 1, 1]);
    expect(options.layout).toBe('ncdhw');
  });

  it('spatialDims 2 stays the default, with vgg19 and nchw', () => {
    const options = keep(new PerceptualLoss({ inChannels: 1, arch: [4], device: 'cpu' })).options;
    expect([options.spatialDims, options.layout]).toEqual([2, 'nchw']);
    expect(resolveOptions({ inChannels: 1 }, 0).options).toMatchObject({ spatialDims: 2, arch: 'vgg19', layout: 'nchw' });
  });

  it('takes the named archs in 3-D, with the 2-D default taps', () => {
    const options = keep(new PerceptualLoss({ inChannels: 1, spatialDims: 3, arch: 'vgg11', layers: ['relu1_1', 'relu2_1'], device: 'cpu' })).options;
    expect(options.arch).toBe('vgg11');
    expect(options.layers).toEqual(['relu1_1', 'relu2_1']);
    const loss = keep(new PerceptualLoss({ inChannels: 1, spatialDims: 3, arch: 'vgg11', layers: ['relu1_1'], device: 'cpu' }));
    expect(loss.stateDict()['features.0.weight'].shape).toEqual([64, 1, 3, 3, 3]);
  });

  it("takes layout 'ndhwc' for 3-D, as an option or per call", () => {
    const loss = keep(new PerceptualLoss({ ...SMALL3, layout: 'ndhwc' }));
    expect(loss.options.layout).toBe('ndhwc');
    const x = host(SHAPE3, 1);
    const y = host(SHAPE3, 2);
    const perCall = keep(new PerceptualLoss(SMALL3)).loss(
      { data: toChannelsLast(x.data, SHAPE3), shape: ndhwcShape(SHAPE3) },
      { data: toChannelsLast(y.data, SHAPE3), shape: ndhwcShape(SHAPE3) },
      { layout: 'ndhwc' },
    );
    const fromOption = loss.loss({ data: toChannelsLast(x.data, SHAPE3), shape: ndhwcShape(SHAPE3) }, { data: toChannelsLast(y.data, SHAPE3), shape: ndhwcShape(SHAPE3) });
    expect(fromOption).toBe(perCall);
    expect(fromOption).toBeGreaterThan(0);
  });
});

describe('the 3-D network', () => {
  it('stateDict() gives Conv3d weights [Cout, Cin, 3, 3, 3] under the torchvision names', () => {
    const dict = keep(new PerceptualLoss(SMALL3)).stateDict();
    expect(Object.keys(dict)).toEqual(['features.0.weight', 'features.0.bias', 'features.3.weight', 'features.3.bias']);
    expect(dict['features.0.weight'].shape).toEqual([4, 2, 3, 3, 3]);
    expect(dict['features.0.weight'].data).toHaveLength(4 * 2 * 27);
    expect(dict['features.3.weight'].shape).toEqual([8, 4, 3, 3, 3]);
    expect(dict['features.3.bias']).toEqual({ shape: [8], data: new Float32Array(8) });
  });

  it('draws kaiming_normal with fan_in = Cin * 27: the 2-D draw of the same seed, scaled by sqrt(9 / 27)', () => {
    // torch's normal_ fills from one stream of uniforms, so the first 64*9 values of the 3-D draw
    // are those of the 2-D draw, each scaled by its std: sqrt(2 / 27) against sqrt(2 / 9).
    const options = { inChannels: 1, arch: [64], layers: ['conv1_1'], seed: 5, device: 'cpu' } as const;
    const w2 = keep(new PerceptualLoss(options)).stateDict()['features.0.weight'].data;
    const w3 = keep(new PerceptualLoss({ ...options, spatialDims: 3 })).stateDict()['features.0.weight'].data;
    expect(w3).toHaveLength(64 * 27);
    const scaled = Float64Array.from(w2, (v) => v * Math.sqrt(9 / 27));
    expect(maxRelError(w3.subarray(0, w2.length), scaled)).toBeLessThan(1e-6);
    const std = Math.sqrt(w3.reduce((s, v) => s + v * v, 0) / w3.length);
    expect(Math.abs(std / Math.sqrt(2 / 27) - 1)).toBeLessThan(0.08);
  });

  it('conv1_1 and relu1_1 are the 3x3x3 convolution of the input (padding 1) and its ReLU', () => {
    const loss = keep(new PerceptualLoss({ inChannels: 2, spatialDims: 3, arch: [3], layers: ['conv1_1', 'relu1_1'], dtype: 'float64', device: 'cpu' }));
    const shape = [2, 2, 5, 6, 7];
    const x = host64(shape, 3);
    const { data: weight } = loss.stateDict()['features.0.weight'];
    const expected = conv3d(x.data, shape, weight, new Float64Array(3));
    const [conv, relu] = loss.features(x);
    expect(conv.shape).toEqual([2, 3, 5, 6, 7]);
    expect(conv.data).toBeInstanceOf(Float64Array);
    expect(maxRelError(conv.data, expected)).toBeLessThan(1e-12);
    expect(maxRelError(relu.data, expected.map((v) => Math.max(v, 0)))).toBeLessThan(1e-12);
  });

  it.each(['max', 'avg'] as const)("'M' is a 2x2x2 %s pool with stride 2", (pool) => {
    const loss = keep(new PerceptualLoss({ inChannels: 1, spatialDims: 3, arch: [2, 'M'], layers: ['relu1_1', 'pool1'], pool, dtype: 'float64', device: 'cpu' }));
    const shape = [1, 1, 4, 6, 8];
    const x = host64(shape, 4);
    const [relu, pooled] = loss.features(x);
    expect(pooled.shape).toEqual([1, 2, 2, 3, 4]);
    const [c, d, h, w] = [2, 4, 6, 8];
    const expected = new Float64Array(c * 2 * 3 * 4);
    for (let k = 0; k < c; k++)
      for (let z = 0; z < 2; z++)
        for (let y = 0; y < 3; y++)
          for (let xx = 0; xx < 4; xx++) {
            const window: number[] = [];
            for (let dz = 0; dz < 2; dz++)
              for (let dy = 0; dy < 2; dy++)
                for (let dx = 0; dx < 2; dx++) window.push(relu.data[((k * d + 2 * z + dz) * h + 2 * y + dy) * w + 2 * xx + dx]);
            expected[((k * 2 + z) * 3 + y) * 4 + xx] = pool === 'max' ? Math.max(...window) : window.reduce((a, b) => a + b) / 8;
          }
    expect(maxRelError(pooled.data, expected)).toBeLessThan(1e-12);
  });

  it('the default network reaches relu5_1 at 16x16x16, each tap after a pool', () => {
    const loss = keep(new PerceptualLoss({ inChannels: 1, spatialDims: 3, device: 'cpu' }));
    const features = loss.features(host([1, 1, 16, 16, 16], 5));
    expect(features.map((f) => [f.name, f.shape])).toEqual([
      ['relu1_1', [1, 64, 16, 16, 16]],
      ['relu2_1', [1, 128, 8, 8, 8]],
      ['relu3_1', [1, 256, 4, 4, 4]],
      ['relu4_1', [1, 512, 2, 2, 2]],
      ['relu5_1', [1, 512, 1, 1, 1]],
    ]);
    expect(loss.loss(host([1, 1, 16, 16, 16], 6), host([1, 1, 16, 16, 16], 7))).toBeGreaterThan(0);
  });
});

describe('the loss on volumes', () => {
  it("l2 on conv1_1 is the mean squared difference of the 3-D convolutions; the Gram term divides by C*D*H*W", () => {
    const shape = [2, 1, 4, 5, 6];
    const options = { inChannels: 1, spatialDims: 3, arch: [3], layers: ['conv1_1'], dtype: 'float64', device: 'cpu' } as const;
    const feature = keep(new PerceptualLoss(options));
    const style = keep(new PerceptualLoss({ ...options, featureWeight: 0, styleWeight: 1 }));
    const [p, t] = [host64(shape, 8), host64(shape, 9)];
    const { data: weight } = feature.stateDict()['features.0.weight'];
    const fp = conv3d(p.data, shape, weight, new Float64Array(3));
    const ft = conv3d(t.data, shape, weight, new Float64Array(3));
    const mse = fp.reduce((s, v, i) => s + (v - ft[i]) ** 2, 0) / fp.length;
    expect(Math.abs(feature.loss(p, t) - mse) / mse).toBeLessThan(1e-12);

    const [c, voxels] = [3, 4 * 5 * 6];
    const gram = (f: Float64Array, n: number) => {
      const g = new Float64Array(c * c);
      for (let a = 0; a < c; a++)
        for (let b = 0; b < c; b++) {
          let s = 0;
          for (let v = 0; v < voxels; v++) s += f[(n * c + a) * voxels + v] * f[(n * c + b) * voxels + v];
          g[a * c + b] = s / (c * voxels);
        }
      return g;
    };
    let sum = 0;
    for (let n = 0; n < 2; n++) {
      const [gp, gt] = [gram(fp, n), gram(ft, n)];
      sum += gp.reduce((s, v, i) => s + (v - gt[i]) ** 2, 0);
    }
    const expected = sum / (2 * c * c);
    expect(Math.abs(style.loss(p, t) - expected) / expected).toBeLessThan(1e-10);
  });

  it('gives the float64 gradient of its loss (central differences, ReLU, pool and the Gram term)', () => {
    const loss = keep(new PerceptualLoss({ ...SMALL3, styleWeight: 0.5, dtype: 'float64' }));
    const [p, t] = [host64(SHAPE3, 10), host64(SHAPE3, 11)];
    const { grad } = loss.lossAndGrad(p, t);
    expect(grad).toBeInstanceOf(Float64Array);
    const scale = Math.max(...Array.from(grad, Math.abs));
    expect(scale).toBeGreaterThan(0);
    const eps = 1e-6;
    for (const i of randint(12, 0, p.data.length, 12)) {
      const plus = p.data.slice();
      const minus = p.data.slice();
      plus[i] += eps;
      minus[i] -= eps;
      const numeric = (loss.loss({ data: plus, shape: SHAPE3 }, t) - loss.loss({ data: minus, shape: SHAPE3 }, t)) / (2 * eps);
      expect(Math.abs(numeric - grad[i]) / scale, `grad[${i}]`).toBeLessThan(1e-5);
    }
  });

  it("gives the same loss in 'ndhwc' as in 'ncdhw', and the gradient and features in the input's layout", () => {
    const loss = keep(new PerceptualLoss(SMALL3));
    const [p, t] = [host(SHAPE3, 13), host(SHAPE3, 14)];
    const first = loss.lossAndGrad(p, t);
    const shape = ndhwcShape(SHAPE3);
    const last = loss.lossAndGrad({ data: toChannelsLast(p.data, SHAPE3), shape }, { data: toChannelsLast(t.data, SHAPE3), shape }, { layout: 'ndhwc' });
    expect(Math.abs(last.loss - first.loss) / first.loss).toBeLessThan(1e-5);
    expect(last.grad).toHaveLength(first.grad.length);
    expect(maxRelError(toChannelsFirst(last.grad, shape), first.grad)).toBeLessThan(1e-4);

    const ncdhw = loss.features(p);
    const ndhwc = loss.features({ data: toChannelsLast(p.data, SHAPE3), shape }, { layout: 'ndhwc' });
    expect(ndhwc.map((f) => f.shape)).toEqual([
      [2, 8, 8, 8, 4],
      [2, 4, 4, 4, 4],
      [2, 4, 4, 4, 8],
    ]);
    ndhwc.forEach((f, i) => expect(maxRelError(toChannelsFirst(f.data, f.shape), ncdhw[i].data), f.name).toBeLessThan(1e-5));
  });

  it("reduction 'none' gives one value per volume, whose mean is the 'mean' loss", () => {
    const perSample = keep(new PerceptualLoss({ ...SMALL3, reduction: 'none' }));
    const mean = keep(new PerceptualLoss(SMALL3));
    const [p, t] = [host(SHAPE3, 15), host(SHAPE3, 16)];
    const values = perSample.loss(p, t);
    expect(values).toBeInstanceOf(Float32Array);
    expect(values).toHaveLength(2);
    expect(Math.abs((values[0] + values[1]) / 2 - mean.loss(p, t)) / mean.loss(p, t)).toBeLessThan(1e-5);
    // Each value is that volume's loss alone.
    const half = count(SHAPE3) / 2;
    const one = (x: HostTensor<Float32Array>) => ({ data: x.data.slice(half), shape: [1, ...SHAPE3.slice(1)] });
    expect(Math.abs(mean.loss(one(p), one(t)) - values[1]) / values[1]).toBeLessThan(1e-5);
  });

  it('terms add up to the loss', () => {
    const loss = keep(new PerceptualLoss({ ...SMALL3, styleWeight: 2 }));
    const { loss: value, terms } = loss.lossAndGrad(host(SHAPE3, 17), host(SHAPE3, 18));
    expect(terms.map((t) => t.name)).toEqual(['conv1_1', 'pool1', 'relu2_1']);
    expect(terms.every((t) => t.style > 0)).toBe(true);
    const total = terms.reduce((s, t) => s + t.feature + t.style, 0);
    expect(Math.abs(total - value) / value).toBeLessThan(1e-5);
  });
});

describe('dtypes on volumes', () => {
  const [p, t] = [host(SHAPE3, 33), host(SHAPE3, 34)];

  it.skipIf(!runtime().cpu.bfloat16)('bfloat16 (a CPU with AVX512-BF16 or AMX-BF16): close to float32, with float32 results', () => {
    const f32 = keep(new PerceptualLoss(SMALL3)).lossAndGrad(p, t);
    const bf16 = keep(new PerceptualLoss({ ...SMALL3, dtype: 'bfloat16' })).lossAndGrad(p, t);
    expect(bf16.grad).toBeInstanceOf(Float32Array);
    // As test/fuzz/bfloat16.test.ts bounds bf16 against float32: 8 bits of mantissa.
    expect(Math.abs(bf16.loss - f32.loss) / f32.loss).toBeLessThan(2e-2);
    const norm = (d: ArrayLike<number>) => Math.sqrt(Array.from(d).reduce((s, v) => s + v * v, 0));
    expect(norm(bf16.grad.map((g, i) => g - f32.grad[i])) / norm(f32.grad)).toBeLessThan(0.25);
  });

  it('float64 with Float64Array inputs: close to float32, with Float64Array results', () => {
    const f32 = keep(new PerceptualLoss(SMALL3)).lossAndGrad(p, t);
    const p64 = { data: Float64Array.from(p.data), shape: SHAPE3 };
    const f64 = keep(new PerceptualLoss({ ...SMALL3, dtype: 'float64' })).lossAndGrad(p64, { data: Float64Array.from(t.data), shape: SHAPE3 });
    expect(f64.grad).toBeInstanceOf(Float64Array);
    expect(Math.abs(f64.loss - f32.loss) / f64.loss).toBeLessThan(1e-5);
    expect(maxRelError(f32.grad, f64.grad)).toBeLessThan(1e-4);
  });
});

describe('masks on volumes', () => {
  const [n, c, d, h, w] = SHAPE3;
  const voxels = n * d * h * w;
  const mask = Uint8Array.from(randint(voxels, 0, 2, 19));
  const [p, t] = [host(SHAPE3, 20), host(SHAPE3, 21)];
  /** The voxel mask spread over the channels, as one value per element. */
  const perElement = (m: ArrayLike<number>) => {
    const out = new Float32Array(count(SHAPE3));
    for (let b = 0; b < n; b++) for (let k = 0; k < c; k++) for (let v = 0; v < d * h * w; v++) out[(b * c + k) * d * h * w + v] = m[b * d * h * w + v];
    return out;
  };

  it('a voxel mask [N, D, H, W] gives the loss of the masked inputs, and no gradient where it is 0', () => {
    const loss = keep(new PerceptualLoss(SMALL3));
    const masked = loss.lossAndGrad(p, t, { mask: { data: mask, shape: [n, d, h, w] } });
    const spread = perElement(mask);
    const plain = loss.lossAndGrad({ data: p.data.map((v, i) => v * spread[i]), shape: SHAPE3 }, { data: t.data.map((v, i) => v * spread[i]), shape: SHAPE3 });
    expect(masked.loss).toBe(plain.loss);
    for (let i = 0; i < spread.length; i++) {
      if (spread[i]) expect(masked.grad[i], `grad[${i}]`).toBe(plain.grad[i]);
      else expect(Math.abs(masked.grad[i]), `grad[${i}]`).toBe(0);
    }
    expect(plain.grad.some((g, i) => !spread[i] && g !== 0)).toBe(true);
  });

  it('[N, 1, D, H, W], a bare array of one value per voxel and one value per element all mean the same', () => {
    const loss = keep(new PerceptualLoss(SMALL3));
    const expected = loss.loss(p, t, { mask: { data: mask, shape: [n, d, h, w] } });
    expect(loss.loss(p, t, { mask: { data: mask, shape: [n, 1, d, h, w] } })).toBe(expected);
    expect(loss.loss(p, t, { mask })).toBe(expected);
    expect(Math.abs(loss.loss(p, t, { mask: { data: perElement(mask), shape: SHAPE3 } }) - expected) / expected).toBeLessThan(1e-6);
    expect(loss.loss(p, t)).not.toBe(expected);
  });

  it("in 'ndhwc' a voxel mask [N, D, H, W, 1] covers the channels as in 'ncdhw'", () => {
    const loss = keep(new PerceptualLoss(SMALL3));
    const expected = loss.loss(p, t, { mask });
    const shape = ndhwcShape(SHAPE3);
    const last = loss.loss({ data: toChannelsLast(p.data, SHAPE3), shape }, { data: toChannelsLast(t.data, SHAPE3), shape }, { layout: 'ndhwc', mask: { data: mask, shape: [n, d, h, w, 1] } });
    expect(Math.abs(last - expected) / expected).toBeLessThan(1e-5);
  });

  it('a Tensor mask acts as the host one', () => {
    const loss = keep(new PerceptualLoss(SMALL3));
    using m = Tensor.from(mask, [n, d, h, w], { device: 'cpu' });
    expect(loss.loss(p, t, { mask: m })).toBe(loss.loss(p, t, { mask }));
  });
});

describe('methods on volumes', () => {
  const [p, t] = [host(SHAPE3, 22), host(SHAPE3, 23)];

  it('save() and load() round-trip a 3-D loss: load without options gives spatialDims 3 and the same weights and loss', () => {
    const loss = keep(new PerceptualLoss({ ...SMALL3, seed: 4, layout: 'ndhwc' }));
    const file = path.join(scratch, 'volume.safetensors');
    loss.save(file);
    const plain = keep(PerceptualLoss.load(file));
    expect(plain.options).toMatchObject({ spatialDims: 3, layout: 'ndhwc', arch: [4, 'M', 8], layers: SMALL3.layers, seed: 4 });
    expect(weightBits(plain)).toBe(weightBits(loss));
    const loaded = keep(PerceptualLoss.load(file, { device: 'cpu' }));
    expect(loaded.options).toEqual(loss.options);
    const shape = ndhwcShape(SHAPE3);
    const [pl, tl] = [{ data: toChannelsLast(p.data, SHAPE3), shape }, { data: toChannelsLast(t.data, SHAPE3), shape }];
    expect(loaded.loss(pl, tl)).toBe(loss.loss(pl, tl));
    // The options given to load still override the stored ones.
    expect(keep(PerceptualLoss.load(file, { layout: 'ncdhw' })).loss(p, t)).toBe(loss.loss(pl, tl, { layout: 'ndhwc' }));
  });

  it('load() of the default 3-D network keeps its arch and taps', () => {
    const loss = keep(new PerceptualLoss({ inChannels: 1, spatialDims: 3, device: 'cpu' }));
    const file = path.join(scratch, 'default3d.safetensors');
    loss.save(file);
    const loaded = keep(PerceptualLoss.load(file));
    expect(loaded.options.arch).toEqual([...DEFAULT_ARCH_3D]);
    expect(loaded.options.layers).toEqual(loss.options.layers);
    expect(loaded.stateDict()['features.12.weight'].shape).toEqual([512, 512, 3, 3, 3]);
    expect(weightBits(loaded)).toBe(weightBits(loss));
  });

  it('reseed(seed) draws the weights a new loss of that seed has', () => {
    const loss = keep(new PerceptualLoss(SMALL3));
    const before = loss.loss(p, t);
    loss.reseed(9);
    const fresh = keep(new PerceptualLoss({ ...SMALL3, seed: 9 }));
    expect(weightBits(loss)).toBe(weightBits(fresh));
    expect(loss.loss(p, t)).toBe(fresh.loss(p, t));
    expect(loss.loss(p, t)).not.toBe(before);
    expect(loss.options.seed).toBe(9);
  });

  it('lossAsync, lossAndGradAsync and featuresAsync give what the synchronous calls give', async () => {
    const loss = keep(new PerceptualLoss(SMALL3));
    const sync = loss.lossAndGrad(p, t);
    const [value, both, features] = await Promise.all([loss.lossAsync(p, t), loss.lossAndGradAsync(p, t), loss.featuresAsync(p)]);
    expect(value).toBe(sync.loss);
    expect(both.loss).toBe(sync.loss);
    expect(both.grad).toEqual(sync.grad);
    expect(features.map((f) => f.data)).toEqual(loss.features(p).map((f) => f.data));
  });

  it('takes Tensors: the gradient and the features are 5-D Tensors in the input layout, equal to the host results', () => {
    const loss = keep(new PerceptualLoss(SMALL3));
    using pt = Tensor.from(p.data, SHAPE3, { device: 'cpu' });
    using tt = Tensor.from(t.data, SHAPE3, { device: 'cpu' });
    const hostResult = loss.lossAndGrad(p, t);
    const result = loss.lossAndGrad(pt, tt);
    using grad = result.grad;
    expect(result.loss).toBe(hostResult.loss);
    expect(grad.shape).toEqual(SHAPE3);
    expect(grad.toArray()).toEqual(hostResult.grad);
    const features = loss.features(pt);
    expect(features.map((f) => f.data.shape)).toEqual([
      [2, 4, 8, 8, 8],
      [2, 4, 4, 4, 4],
      [2, 8, 4, 4, 4],
    ]);
    features.forEach((f) => f.data.dispose());
  });

  it('prepareTarget() on a volume gives the result of the plain target', () => {
    const loss = keep(new PerceptualLoss(SMALL3));
    using prepared = loss.prepareTarget(t);
    expect(prepared.shape).toEqual(SHAPE3);
    expect(prepared.layout).toBe('ncdhw');
    const plain = loss.lossAndGrad(p, t);
    const again = loss.lossAndGrad(p, prepared);
    expect(again.loss).toBe(plain.loss);
    expect(again.grad).toEqual(plain.grad);
  });
});

describe('task helpers on volumes', () => {
  const TASK = { spatialDims: 3, arch: [4, 'M', 8], layers: ['relu1_1', 'relu2_1'], device: 'cpu' } as const;

  it('denseLoss({ channels, spatialDims: 3 }) is the 3-D PerceptualLoss with inChannels = channels', () => {
    const dense = keep(denseLoss({ channels: 2, ...TASK }));
    expect(dense.perceptual.options).toMatchObject({ inChannels: 2, spatialDims: 3, layout: 'ncdhw' });
    const direct = keep(new PerceptualLoss({ inChannels: 2, ...TASK }));
    const [p, t] = [host(SHAPE3, 24), host(SHAPE3, 25)];
    expect(dense.loss(p, t)).toBe(direct.loss(p, t));
    expect(dense.lossAndGrad(p, t).grad).toEqual(direct.lossAndGrad(p, t).grad);
  });

  it('depthLoss({ spatialDims: 3 }) takes one-channel volumes with a voxel mask', () => {
    const depth = keep(depthLoss(TASK));
    const shape = [1, 1, 8, 8, 8];
    const [p, t] = [host(shape, 26), host(shape, 27)];
    const mask = Uint8Array.from(randint(512, 0, 2, 28));
    const { loss, grad } = depth.lossAndGrad(p, t, { mask: { data: mask, shape: [1, 8, 8, 8] } });
    expect(loss).toBeGreaterThan(0);
    for (let i = 0; i < 512; i++) if (!mask[i]) expect(Math.abs(grad[i])).toBe(0);
  });

  it('segmentationLoss takes logits [N, classes, D, H, W] and labels [N, D, H, W]: softmax against one-hot, ignored voxels left out', () => {
    const classes = 3;
    const shape = [2, classes, 8, 8, 8];
    const voxels = 512;
    const seg = keep(segmentationLoss({ classes, ignoreIndex: 9, ...TASK, dtype: 'float64' }));
    const logits = host64(shape, 29);
    const labels = randint(2 * voxels, 0, classes, 30);
    labels.fill(9, 100, 200);
    const result = seg.lossAndGrad(logits, { data: labels, shape: [2, 8, 8, 8] });
    // The same loss from the softmax and the one-hot target computed here.
    const pred = new Float64Array(logits.data.length);
    const target = new Float64Array(logits.data.length);
    for (let b = 0; b < 2; b++)
      for (let v = 0; v < voxels; v++) {
        const label = labels[b * voxels + v];
        if (label === 9) continue;
        const at = (k: number) => (b * classes + k) * voxels + v;
        const max = Math.max(...[0, 1, 2].map((k) => logits.data[at(k)]));
        const exps = [0, 1, 2].map((k) => Math.exp(logits.data[at(k)] - max));
        const sum = exps.reduce((a, e) => a + e);
        for (let k = 0; k < classes; k++) {
          pred[at(k)] = exps[k] / sum;
          target[at(k)] = k === label ? 1 : 0;
        }
      }
    const expected = seg.perceptual.loss({ data: pred, shape }, { data: target, shape });
    expect(Math.abs(result.loss - expected) / expected).toBeLessThan(1e-10);
    for (let k = 0; k < classes; k++) for (let v = 100; v < 200; v++) expect(Math.abs(result.grad[k * voxels + v])).toBe(0);
    expect(result.grad.some((g) => g !== 0)).toBe(true);
  });

  it("segmentation in 'ndhwc' gives the 'ncdhw' loss and the gradient permuted", async () => {
    const seg = keep(segmentationLoss({ classes: 3, ...TASK }));
    const shape = [2, 3, 8, 8, 8];
    const logits = host(shape, 31);
    const labels = { data: randint(1024, 0, 3, 32), shape: [2, 8, 8, 8] };
    const first = seg.lossAndGrad(logits, labels);
    const last = await seg.lossAndGradAsync({ data: toChannelsLast(logits.data, shape), shape: ndhwcShape(shape) }, labels, { layout: 'ndhwc' });
    expect(Math.abs(last.loss - first.loss) / first.loss).toBeLessThan(1e-5);
    expect(maxRelError(toChannelsFirst(last.grad, ndhwcShape(shape)), first.grad)).toBeLessThan(1e-4);
  });
});
