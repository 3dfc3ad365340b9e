// The weights of docs/api.md: the state dict and its torchvision names (checked in torchvision
// itself), reseed, and save/load with the options stored in the safetensors metadata.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, setNumThreads, type PerceptualLossOptions } from '../../lib/index';
import { count, host, SHAPE, SMALL, weightBits } from '../helpers/api';
import { expectCode } from '../helpers/expect-code';
import { PYTHON, relError } from '../helpers/reference';
import { packFloat32, readRawSafetensors, writeRawSafetensors } from '../helpers/safetensors';

let dir: string;
beforeAll(() => {
  // Tiny tensors: one intra-op thread avoids thread hand-offs that are slow on a busy CI machine.
  setNumThreads(1);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-api-weights-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
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
