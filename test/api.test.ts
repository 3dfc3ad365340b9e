// The public API of docs/api.md: resolved options, the state dict and its torchvision names, Tensor,
// array types, async calls, prepared targets, reseed, save/load, layouts, reductions, per-tap
// terms, the runtime, and loading the package with both `require` and `import`.
import { findLibtorch } from '../lib/libtorch';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PerceptualLoss,
  PerceptualLossError,
  Tensor,
  runtime,
  setNumThreads,
  type HostTensor,
  type PerceptualLossOptions,
  type ResolvedOptions,
} from '../lib/index';
import { expectCode } from './helpers/expect-code';
import { randint, randn } from './helpers/random';
import { PYTHON, relError, relErrorScalar, sha256OfFloat32 } from './helpers/reference';
import { packFloat32, readRawSafetensors, writeRawSafetensors } from './helpers/safetensors';

const ROOT = path.resolve(__dirname, '..');

const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const host = (shape: number[], seed: number): HostTensor<Float32Array> => ({ data: randn(count(shape), seed), shape });

/** A small network with conv, relu and pool taps: fast, and every tap kind is exercised. */
const SMALL: PerceptualLossOptions = { inChannels: 3, arch: [8, 'M', 16, 'M', 16], layers: ['conv1_1', 'relu2_1', 'pool2', 'relu3_1'] };
const SHAPE = [2, 3, 16, 16];

/** sha256 of every weight and bias, in state-dict order: equal hashes mean bit-identical weights. */
function weightBits(loss: PerceptualLoss): string {
  return sha256OfFloat32(Object.values(loss.stateDict()).map((t) => t.data));
}

/** [N, H, W, C] -> [N, C, H, W]. */
function toNchw<A extends Float32Array | Float64Array>(data: A, [n, h, w, c]: number[]): A {
  const out = new (data.constructor as new (n: number) => A)(data.length);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let k = 0; k < c; k++) out[((i * c + k) * h + y) * w + x] = data[((i * h + y) * w + x) * c + k];
  return out;
}

/** Sample `i` of an [N, ...] host tensor, as a batch of one. */
function sample(x: HostTensor<Float32Array>, i: number): HostTensor<Float32Array> {
  const size = count(x.shape) / x.shape[0];
  return { data: x.data.slice(i * size, (i + 1) * size), shape: [1, ...x.shape.slice(1)] };
}

let dir: string;
beforeAll(() => {
  // Tiny tensors: one intra-op thread avoids thread hand-offs that are slow on a busy CI machine.
  // ('runtime and threads' below compares 2 threads with 1 explicitly.)
  setNumThreads(1);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpl-api-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ options

describe('options', () => {
  const autoDevice = () => runtime().devices.find((d) => d.startsWith('cuda')) ?? 'cpu';

  it('fills in every default of docs/api.md', () => {
    expect(new PerceptualLoss({ inChannels: 3 }).options).toEqual({
      inChannels: 3,
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

// ------------------------------------------------------------------ stateDict

describe('stateDict', () => {
  it('names vgg19 convs features.{k} as torchvision does and cuts after the deepest tap (relu2_1)', () => {
    const state = new PerceptualLoss({ inChannels: 3, layers: ['relu2_1'] }).stateDict();
    expect(Object.keys(state)).toEqual([
      'features.0.weight',
      'features.0.bias',
      'features.2.weight',
      'features.2.bias',
      'features.5.weight',
      'features.5.bias',
    ]);
    expect(Object.values(state).map((t) => t.shape)).toEqual([[64, 3, 3, 3], [64], [64, 64, 3, 3], [64], [128, 64, 3, 3], [128]]);
    for (const t of Object.values(state)) {
      expect(t.data).toBeInstanceOf(Float32Array);
      expect(t.data.length).toBe(count(t.shape));
    }
  });

  it('keeps all 16 convs of vgg19 for the default taps, at torchvision indices', () => {
    const names = Object.keys(new PerceptualLoss({ inChannels: 1 }).stateDict()).filter((n) => n.endsWith('.weight'));
    expect(names.map((n) => Number(n.split('.')[1]))).toEqual([0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]);
  });

  it('counts a pool tap as a module: pool1 on a custom arch keeps the convs before it only', () => {
    const state = new PerceptualLoss({ inChannels: 2, arch: [8, 8, 'M', 16], layers: ['pool1'] }).stateDict();
    expect(Object.keys(state)).toEqual(['features.0.weight', 'features.0.bias', 'features.2.weight', 'features.2.bias']);
  });

  it('has zero biases and non-zero weights', () => {
    const state = new PerceptualLoss(SMALL).stateDict();
    for (const [name, t] of Object.entries(state)) {
      if (name.endsWith('.bias')) expect(t.data.every((v) => v === 0)).toBe(true);
      else expect(t.data.some((v) => v !== 0)).toBe(true);
    }
  });

  it('loads into torchvision vgg19 (first conv taking inChannels) and gives the same conv1_1 and relu2_1', () => {
    const loss = new PerceptualLoss({ inChannels: 2, layers: ['conv1_1', 'relu2_1'], seed: 5 });
    const file = path.join(dir, 'torchvision.safetensors');
    loss.save(file);
    const shape = [2, 2, 12, 10];
    const x = host(shape, 77);
    const input = path.join(dir, 'x.f32');
    fs.writeFileSync(input, new Uint8Array(x.data.buffer));
    // safetensors (python) may not be installed: the file is parsed with json and struct.
    const script = `
import json, struct, sys
import numpy as np, torch, torchvision
file, xfile, shape = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
raw = open(file, 'rb').read()
(n,) = struct.unpack('<Q', raw[:8])
header = json.loads(raw[8:8 + n])
header.pop('__metadata__', None)
data = raw[8 + n:]
state = {k: torch.from_numpy(np.frombuffer(data[e['data_offsets'][0]:e['data_offsets'][1]], dtype='<f4').copy()).reshape(e['shape'])
         for k, e in header.items()}
model = torchvision.models.vgg19()
model.features[0] = torch.nn.Conv2d(shape[1], 64, 3, padding=1)
result = model.load_state_dict(state, strict=False)
x = torch.from_numpy(np.fromfile(xfile, dtype='<f4')).reshape(shape)
with torch.no_grad():
    conv = model.features[0](x)
    relu = model.features[:7](x)
print(json.dumps({
    'unexpected': list(result.unexpected_keys),
    'missing': sorted({int(k.split('.')[1]) for k in result.missing_keys if k.startswith('features.')}),
    'conv1_1': conv.flatten().tolist(), 'relu2_1': relu.flatten().tolist(),
}))
`;
    const out = JSON.parse(execFileSync(PYTHON, ['-c', script, file, input, JSON.stringify(shape)], { encoding: 'utf8', maxBuffer: 64 << 20 })) as {
      unexpected: string[];
      missing: number[];
      conv1_1: number[];
      relu2_1: number[];
    };
    expect(out.unexpected).toEqual([]);
    // Every name we give lands; torchvision misses only the convs after the cut (features.7 on).
    expect(out.missing).toEqual([7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]);
    const [conv, relu] = loss.features(x);
    expect(conv.name).toBe('conv1_1');
    expect(conv.data.length).toBe(out.conv1_1.length);
    expect(relError(conv.data, out.conv1_1)).toBeLessThan(1e-5);
    expect(relu.name).toBe('relu2_1');
    expect(relError(relu.data, out.relu2_1)).toBeLessThan(1e-5);
  });
});

// ------------------------------------------------------------------ Tensor

describe('Tensor', () => {
  it.each([
    ['float32', new Float32Array([1.5, -2, 3.25, 1e-30, -0, 7])],
    ['float64', new Float64Array([1.5, -2, 3.25, 1e-300, Math.PI, 7])],
    ['int32', new Int32Array([1, -2, 3, 2 ** 31 - 1, -(2 ** 31), 0])],
    ['uint8', new Uint8Array([0, 1, 2, 128, 254, 255])],
  ] as const)('holds %s data of its shape on the CPU and round-trips it exactly', (dtype, data) => {
    const t = Tensor.from(data, [2, 3]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.device).toBe('cpu');
    expect(t.dtype).toBe(dtype);
    const back = t.toArray();
    expect(back.constructor).toBe(data.constructor);
    expect(Array.from(back)).toEqual(Array.from(data));
    t.dispose();
  });

  it("goes on the CPU with device 'cpu' or 'auto' where there is no GPU", () => {
    expect(Tensor.from(new Float32Array(2), [2], { device: 'cpu' }).device).toBe('cpu');
    if (!runtime().devices.some((d) => d.startsWith('cuda'))) {
      expect(Tensor.from(new Float32Array(2), [2], { device: 'auto' }).device).toBe('cpu');
    }
  });

  it('copies its data in and out: later changes to either array do not reach the tensor', () => {
    const data = new Float32Array([1, 2, 3, 4]);
    const t = Tensor.from(data, [4]);
    data[0] = 100;
    const out = t.toArray();
    out[1] = 200;
    expect(Array.from(t.toArray())).toEqual([1, 2, 3, 4]);
  });

  it('reports disposed after dispose(), and every use then throws ERR_DISPOSED', () => {
    const t = Tensor.from(new Float32Array(4), [4]);
    expect(t.disposed).toBe(false);
    t.dispose();
    expect(t.disposed).toBe(true);
    for (const use of [() => t.toArray(), () => t.shape, () => t.device, () => t.dtype]) {
      expectCode(use, 'ERR_DISPOSED');
    }
    expect(() => t.dispose()).not.toThrow();
  });

  it('is disposed by Symbol.dispose (what `using` calls)', () => {
    const t = Tensor.from(new Float32Array(4), [4]);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
  });

  describe('as loss inputs', () => {
    const loss = new PerceptualLoss(SMALL);
    const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];

    it('a Tensor pred gives a Tensor grad equal to the host-array grad', () => {
      const expected = loss.lossAndGrad(pred, target);
      const p = Tensor.from(pred.data, SHAPE);
      const t = Tensor.from(target.data, SHAPE);
      for (const result of [loss.lossAndGrad(p, t), loss.lossAndGrad(p, target)]) {
        expect(result.loss).toBe(expected.loss);
        expect(result.grad).toBeInstanceOf(Tensor);
        expect(result.grad.shape).toEqual(SHAPE);
        expect(result.grad.device).toBe('cpu');
        expect(result.grad.dtype).toBe('float32');
        expect(result.grad.toArray()).toEqual(expected.grad);
      }
      expect(loss.loss(p, t)).toBe(expected.loss);
    });

    it('a host pred with a Tensor target gives a host grad', () => {
      const expected = loss.lossAndGrad(pred, target);
      const result = loss.lossAndGrad(pred, Tensor.from(target.data, SHAPE));
      expect(result.grad).toBeInstanceOf(Float32Array);
      expect(result.grad).toEqual(expected.grad);
    });

    it('a float64 Tensor pred gives a float64 Tensor grad', () => {
      const p = Tensor.from(Float64Array.from(pred.data), SHAPE);
      const result = loss.lossAndGrad(p, target);
      expect(result.grad.dtype).toBe('float64');
      expect(result.grad.toArray()).toBeInstanceOf(Float64Array);
    });

    it('features of a Tensor are Tensors, equal to the features of the host array', () => {
      const expected = loss.features(pred);
      const features = loss.features(Tensor.from(pred.data, SHAPE));
      expect(features.map((f) => f.name)).toEqual(SMALL.layers);
      features.forEach((f, i) => {
        expect(f.data).toBeInstanceOf(Tensor);
        expect(f.data.shape).toEqual(expected[i].shape);
        expect(f.shape).toEqual(expected[i].shape);
        expect(f.data.toArray()).toEqual(expected[i].data);
      });
    });

    it('int32 and uint8 label Tensors give the same segmentation result as host labels', () => {
      const labels = randint(2 * 16 * 16, 0, 3, 5);
      const expected = loss.lossAndGradSegmentation(pred, { data: labels, shape: [2, 16, 16] });
      for (const y of [Tensor.from(labels, [2, 16, 16]), Tensor.from(Uint8Array.from(labels), [2, 16, 16])]) {
        const result = loss.lossAndGradSegmentation(Tensor.from(pred.data, SHAPE), y);
        expect(result.loss).toBe(expected.loss);
        expect(result.grad.toArray()).toEqual(expected.grad);
      }
    });
  });
});

// ------------------------------------------------------------------ array types

describe('array types', () => {
  const loss = new PerceptualLoss(SMALL);
  const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];
  const pred64 = { data: Float64Array.from(pred.data), shape: SHAPE };
  const target64 = { data: Float64Array.from(target.data), shape: SHAPE };

  it('Float32Array inputs give a Float32Array grad and features', () => {
    expect(loss.lossAndGrad(pred, target).grad).toBeInstanceOf(Float32Array);
    for (const f of loss.features(pred)) expect(f.data).toBeInstanceOf(Float32Array);
  });

  it('Float64Array inputs give a Float64Array grad and features, of the same float32-computed values', () => {
    const r32 = loss.lossAndGrad(pred, target);
    const r64 = loss.lossAndGrad(pred64, target64);
    expect(r64.grad).toBeInstanceOf(Float64Array);
    expect(r64.loss).toBe(r32.loss);
    expect(Array.from(r64.grad)).toEqual(Array.from(r32.grad));
    const f32 = loss.features(pred);
    loss.features(pred64).forEach((f, i) => {
      expect(f.data).toBeInstanceOf(Float64Array);
      expect(Array.from(f.data)).toEqual(Array.from(f32[i].data));
    });
  });

  it('reads a typed-array view (subarray) from its own offset, sync and async', async () => {
    const expected = loss.lossAndGrad(pred, target);
    const backing = new Float32Array(7 + pred.data.length + 5).fill(99);
    backing.set(pred.data, 7);
    const view = { data: backing.subarray(7, 7 + pred.data.length), shape: SHAPE };
    const sync = loss.lossAndGrad(view, target);
    expect(sync.loss).toBe(expected.loss);
    expect(sync.grad).toEqual(expected.grad);
    expect(await loss.lossAsync(view, target)).toBe(expected.loss);
    const view64 = { data: new Float64Array(pred.data.length + 3).fill(-5).subarray(3), shape: SHAPE };
    view64.data.set(pred.data);
    expect(loss.loss(view64, target)).toBe(expected.loss);
  });

  it("a float64 loss given Float32Array inputs returns Float32Array (pred's type)", () => {
    const f64 = new PerceptualLoss({ ...SMALL, dtype: 'float64' });
    expect(f64.lossAndGrad(pred, target).grad).toBeInstanceOf(Float32Array);
    expect(f64.lossAndGrad(pred64, target64).grad).toBeInstanceOf(Float64Array);
  });
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

// ------------------------------------------------------------------ reseed

describe('reseed', () => {
  const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];

  it('draws the weights of a new loss with that seed', () => {
    const loss = new PerceptualLoss(SMALL);
    loss.reseed(5);
    const fresh = new PerceptualLoss({ ...SMALL, seed: 5 });
    expect(weightBits(loss)).toBe(weightBits(fresh));
    expect(weightBits(loss)).not.toBe(weightBits(new PerceptualLoss(SMALL)));
    expect(loss.lossAndGrad(pred, target)).toEqual(fresh.lossAndGrad(pred, target));
  });

  it('is reflected in options.seed', () => {
    const loss = new PerceptualLoss(SMALL);
    loss.reseed(123456789);
    expect(loss.options.seed).toBe(123456789);
  });

  it('restores the weights bit for bit when given the original seed again', () => {
    const loss = new PerceptualLoss({ ...SMALL, seed: 3, init: 'xavier_uniform' });
    const bits = weightBits(loss);
    const before = loss.lossAndGrad(pred, target);
    loss.reseed(4);
    loss.reseed(3);
    expect(weightBits(loss)).toBe(bits);
    const after = loss.lossAndGrad(pred, target);
    expect(after.loss).toBe(before.loss);
    expect(after.grad).toEqual(before.grad);
  });

  it('rejects a bad seed and keeps its weights and options', () => {
    const loss = new PerceptualLoss(SMALL);
    const bits = weightBits(loss);
    for (const seed of [-1, 1.5, NaN, '2']) {
      expectCode(() => loss.reseed(seed as number), 'ERR_OPTIONS', /"seed"/);
    }
    expect(weightBits(loss)).toBe(bits);
    expect(loss.options.seed).toBe(0);
  });
});

// ------------------------------------------------------------------ save and load

describe('save and load', () => {
  const options: PerceptualLossOptions = { ...SMALL, layerWeights: [0.5, 1, 2, 3], criterion: 'l1', styleWeight: 0.25, init: { normal: 0.1 }, seed: 8 };
  const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];

  it('round-trips weights bit for bit, the options, and the results', () => {
    const loss = new PerceptualLoss(options);
    const file = path.join(dir, 'roundtrip.safetensors');
    loss.save(file);
    const loaded = PerceptualLoss.load(file);
    expect(weightBits(loaded)).toBe(weightBits(loss));
    expect(Object.keys(loaded.stateDict())).toEqual(Object.keys(loss.stateDict()));
    const { device: _a, ...want } = loss.options;
    const { device: _b, ...got } = loaded.options;
    expect(got).toEqual(want);
    const a = loss.lossAndGrad(pred, target);
    const b = loaded.lossAndGrad(pred, target);
    expect(b.loss).toBe(a.loss);
    expect(b.grad).toEqual(a.grad);
  });

  it('stores the options (without the device) in the safetensors metadata', () => {
    const file = path.join(dir, 'metadata.safetensors');
    new PerceptualLoss(options).save(file);
    const { header } = readRawSafetensors(file);
    const metadata = header.__metadata__ as Record<string, string>;
    expect(metadata.format).toBe('pt');
    const stored = JSON.parse(metadata['generic-perceptual-loss']) as Record<string, unknown>;
    expect(stored).toMatchObject({ inChannels: 3, arch: [8, 'M', 16, 'M', 16], criterion: 'l1', seed: 8, layerWeights: [0.5, 1, 2, 3] });
    expect(stored).not.toHaveProperty('device');
  });

  it('lets load(path, options) override stored options', () => {
    const file = path.join(dir, 'override.safetensors');
    new PerceptualLoss(options).save(file);
    const loaded = PerceptualLoss.load(file, { reduction: 'sum' });
    expect(loaded.options.reduction).toBe('sum');
    expect(loaded.options.criterion).toBe('l1');
    expect(loaded.loss(pred, target)).toBe(new PerceptualLoss({ ...options, reduction: 'sum' }).loss(pred, target));
  });

  it("uses the file's weights, not its stored seed", () => {
    // Stored options say seed 8; the weights are those of seed 3.
    const file = path.join(dir, 'weights.safetensors');
    const saved = path.join(dir, 'seed8.safetensors');
    new PerceptualLoss(options).save(saved);
    const seed3 = new PerceptualLoss({ ...options, seed: 3 });
    const { header, data } = packFloat32(seed3.stateDict());
    writeRawSafetensors(file, { __metadata__: readRawSafetensors(saved).header.__metadata__ as Record<string, string>, ...header }, data);
    const loaded = PerceptualLoss.load(file);
    expect(weightBits(loaded)).toBe(weightBits(seed3));
    expect(loaded.loss(pred, target)).toBe(seed3.loss(pred, target));
  });

  it('loads a file saved with deeper taps into a loss with shallower ones, skipping the deeper convs', () => {
    const deep = new PerceptualLoss({ inChannels: 3, arch: [8, 'M', 16, 'M', 16], seed: 5 });
    const file = path.join(dir, 'deep.safetensors');
    deep.save(file);
    const shallow = PerceptualLoss.load(file, { layers: ['relu1_1'] });
    expect(Object.keys(shallow.stateDict())).toEqual(['features.0.weight', 'features.0.bias']);
    expect(shallow.stateDict()['features.0.weight'].data).toEqual(deep.stateDict()['features.0.weight'].data);
  });

  it('loads a file without stored options (torchvision names) given inChannels and arch', () => {
    const source = new PerceptualLoss({ inChannels: 3, arch: [8, 'M', 16], seed: 4 });
    const file = path.join(dir, 'plain.safetensors');
    const { header, data } = packFloat32(source.stateDict());
    writeRawSafetensors(file, header, data);
    const loaded = PerceptualLoss.load(file, { inChannels: 3, arch: [8, 'M', 16] });
    expect(loaded.options.seed).toBe(0);
    expect(weightBits(loaded)).toBe(weightBits(source));
  });
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
    expect((result.loss as Float32Array).length).toBe(3);
    expect(none.loss(pred, target)).toEqual(result.loss);
    const size = count(pred.shape) / 3;
    for (let i = 0; i < 3; i++) {
      const alone = mean.lossAndGrad(sample(pred, i), sample(target, i));
      expect(relErrorScalar((result.loss as Float32Array)[i], alone.loss as number)).toBeLessThan(1e-5);
      // The gradient of 'none' is that of the sum of the per-sample losses.
      expect(relError(result.grad.subarray(i * size, (i + 1) * size), alone.grad)).toBeLessThan(1e-5);
    }
  });

  it("'sum' sums where 'mean' averages: for one tap, sum = mean * the tap's element count", () => {
    const one = { inChannels: 3, arch: [8, 'M', 16] as Array<number | 'M'>, layers: ['relu2_1'] };
    const mean = new PerceptualLoss(one).loss(pred, target) as number;
    const sum = new PerceptualLoss({ ...one, reduction: 'sum' }).loss(pred, target) as number;
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
      const alone = new PerceptualLoss({ inChannels: 3, arch: [8, 'M', 16], layers: [term.name] }).loss(pred, target) as number;
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
    const perSample = Array.from(result.loss as Float32Array).reduce((a, b) => a + b, 0);
    expect(relErrorScalar(total, perSample)).toBeLessThan(1e-6);
  });
});

// ------------------------------------------------------------------ runtime and threads

describe('runtime and threads', () => {
  it('reports the libtorch that discovery chose, whether it is a CUDA build and whether a GPU is usable, and the binary it loaded', () => {
    const info = runtime();
    const expected = findLibtorch().chosen!;
    expect(info.libtorch.version).toBe(expected.version);
    expect(info.libtorch.flavour).toBe(expected.flavour);
    expect(info.libtorch.cuda).toBe(expected.cuda);
    expect(info.libtorch.gpu).toBe(info.devices.length > 1);
    expect(info.devices[0]).toBe('cpu');
    expect(info.devices.slice(1)).toEqual(info.devices.slice(1).map((_, i) => `cuda:${i}`));
    expect(path.isAbsolute(info.binary)).toBe(true);
    expect(info.binary.endsWith('.node')).toBe(true);
    expect(fs.existsSync(info.binary)).toBe(true);
    expect(info.libtorch.path).toBeDefined();
    expect(fs.existsSync(path.join(info.libtorch.path!, 'libtorch_cpu.so'))).toBe(true);
  });

  it('setNumThreads(1) leaves the results of 2 threads unchanged (within 1e-6) and is reported by runtime()', () => {
    const loss = new PerceptualLoss({ ...SMALL, styleWeight: 1 });
    const [pred, target] = [host([4, 3, 32, 32], 1), host([4, 3, 32, 32], 2)];
    const threads = runtime().numThreads;
    try {
      setNumThreads(2);
      expect(runtime().numThreads).toBe(2);
      const two = loss.lossAndGrad(pred, target);
      setNumThreads(1);
      expect(runtime().numThreads).toBe(1);
      const one = loss.lossAndGrad(pred, target);
      expect(relErrorScalar(one.loss as number, two.loss as number)).toBeLessThan(1e-6);
      expect(relError(one.grad, two.grad)).toBeLessThan(1e-6);
    } finally {
      setNumThreads(threads);
    }
    expect(runtime().numThreads).toBe(threads);
  });

  it.each([0, 1.5, -2, NaN, '2'])('setNumThreads(%j) throws ERR_OPTIONS', (n) => {
    const threads = runtime().numThreads;
    expectCode(() => setNumThreads(n as number), 'ERR_OPTIONS');
    expect(runtime().numThreads).toBe(threads);
  });
});

// ------------------------------------------------------------------ require and import

describe('module formats', () => {
  const body = `
const p = new PerceptualLoss({ inChannels: 1, arch: [4, 'M', 4] });
const d = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
const t = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i));
const loss = p.loss({ data: d, shape: [1, 1, 8, 8] }, { data: t, shape: [1, 1, 8, 8] });
let code; try { new PerceptualLoss({ inChannels: 0 }); } catch (e) { code = e instanceof PerceptualLossError && e.code; }
console.log(JSON.stringify({ loss, code }));`;

  // dist/ is current: test/global-setup.ts rebuilds it from lib/ before any suite runs.

  const expected = () => {
    const p = new PerceptualLoss({ inChannels: 1, arch: [4, 'M', 4] });
    const d = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    const t = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i));
    return { loss: p.loss({ data: d, shape: [1, 1, 8, 8] }, { data: t, shape: [1, 1, 8, 8] }), code: 'ERR_OPTIONS' };
  };

  it('works with require()', () => {
    const out = execFileSync(process.execPath, ['-e', `const { PerceptualLoss, PerceptualLossError } = require('./dist/index.js');${body}`], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(JSON.parse(out)).toEqual(expected());
  });

  it('works with import, sharing one instance with require()', () => {
    const script = `
import { PerceptualLoss, PerceptualLossError } from './dist/index.mjs';
import { createRequire } from 'node:module';
const cjs = createRequire(import.meta.url)('./dist/index.js');
if (cjs.PerceptualLoss !== PerceptualLoss || cjs.PerceptualLossError !== PerceptualLossError) throw new Error('two instances');
${body}`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual(expected());
  });
});

// PerceptualLossError is what every failure is; one sanity check of the class itself.
it('PerceptualLossError is an Error with name, code and message', () => {
  const e = new PerceptualLossError('ERR_SHAPE', 'bad shape');
  expect(e).toBeInstanceOf(Error);
  expect([e.name, e.code, e.message]).toEqual(['PerceptualLossError', 'ERR_SHAPE', 'bad shape']);
});
