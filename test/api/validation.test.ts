// The argument checks every entry point shares (lib/validate.ts): options arguments must be
// objects, one ignoreIndex with one default, load() telling the caller's bad options from the
// file's, and device information read from native code once (docs/api.md, "Options" and "Errors").
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { native } from '../../lib/binding';
import { denseLoss, depthLoss, PerceptualLoss, segmentationLoss, Tensor, type PerceptualLossOptions } from '../../lib/index';
import { tfjsPerceptualLoss, tfjsSegmentationLoss } from '../../lib/tfjs';
import { expectCode } from '../helpers/expect-code';
import { randn } from '../helpers/random';

const TINY: PerceptualLossOptions = { inChannels: 3, arch: [4, 'M', 8], layers: ['relu1_1', 'relu2_1'], device: 'cpu' };
const SHAPE = [2, 3, 8, 8];
const host = (seed: number) => ({ data: randn(2 * 3 * 8 * 8, seed), shape: SHAPE });
const TASK = { arch: [4, 'M', 8] as Array<number | 'M'>, layers: ['relu1_1', 'relu2_1'], device: 'cpu' as const };
// Each value that is not an options object, and how a message shows it.
const NOT_OBJECTS: Array<[unknown, string]> = [[null, 'null'], [3, '3'], ['nhwc', '"nhwc"'], [[], '[]']];

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-validation-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('an options argument that is not an object', () => {
  const loss = new PerceptualLoss(TINY);
  const file = path.join(dir, 'tiny.safetensors');
  loss.save(file);
  const logits = { data: randn(2 * 3 * 8 * 8, 3), shape: SHAPE };
  const labels = { data: new Int32Array(2 * 8 * 8), shape: [2, 8, 8] };
  const seg = segmentationLoss({ ...TASK, classes: 3 });
  const dense = denseLoss({ ...TASK, channels: 3 });

  // Each entry point names its own argument; the message ends with the value given.
  const cases: Array<[string, (value: unknown) => unknown, string]> = [
    ['new PerceptualLoss', (v) => new PerceptualLoss(v as never), 'Options must be an object such as { inChannels: 3 }'],
    ['PerceptualLoss.load', (v) => PerceptualLoss.load(file, v as never), 'PerceptualLoss.load options must be an object'],
    ['loss.lossAndGrad', (v) => loss.lossAndGrad(host(1), host(2), v as never), "Call options must be an object such as { layout: 'nhwc' }"],
    ['loss.lossAndGradSegmentation', (v) => loss.lossAndGradSegmentation(logits, labels, v as never), "Call options must be an object such as { layout: 'nhwc' }"],
    ['Tensor.from', (v) => Tensor.from(new Float32Array(4), [4], v as never), 'Tensor.from options must be an object'],
    ['segmentationLoss', (v) => segmentationLoss(v as never), 'segmentationLoss options must be an object'],
    ['denseLoss', (v) => denseLoss(v as never), 'denseLoss options must be an object'],
    ['depthLoss', (v) => depthLoss(v as never), 'depthLoss options must be an object'],
    ['SegmentationLoss#lossAndGrad', (v) => seg.lossAndGrad(logits, labels, v as never), "Call options must be an object such as { layout: 'nhwc' }"],
    ['DenseLoss#lossAndGrad', (v) => dense.lossAndGrad(host(1), host(2), v as never), 'Call options must be an object such as { mask }'],
    ['tfjsPerceptualLoss', (v) => tfjsPerceptualLoss(loss, v as never), 'TensorFlow.js loss options must be an object'],
    ['tfjsSegmentationLoss', (v) => tfjsSegmentationLoss(loss, v as never), 'TensorFlow.js loss options must be an object'],
  ];

  it.each(cases)('%s throws ERR_OPTIONS naming the argument and the value', (_, call, message) => {
    for (const [value, shown] of NOT_OBJECTS) {
      expectCode(() => call(value), 'ERR_OPTIONS', new RegExp(`^${escape(message)}; got ${escape(shown)}\\.$`));
    }
  });

  it('leaves the loss usable', () => {
    expect(loss.loss(host(1), host(2))).toBe(new PerceptualLoss(TINY).loss(host(1), host(2)));
  });
});

describe('ignoreIndex', () => {
  const classes = 3;
  const logits = { data: randn(2 * classes * 8 * 8, 4), shape: [2, classes, 8, 8] };
  // Every other pixel is 255: the default ignoreIndex leaves it out.
  const labels = { data: Int32Array.from({ length: 2 * 8 * 8 }, (_, i) => (i % 2 ? 255 : i % classes)), shape: [2, 8, 8] };
  const loss = new PerceptualLoss(TINY);
  const seg = segmentationLoss({ ...TASK, classes });

  it('is 255 by default, the same in lossAndGradSegmentation, segmentationLoss and the tfjs adapter', () => {
    const explicit = loss.lossAndGradSegmentation(logits, labels, { ignoreIndex: 255 });
    expect(loss.lossAndGradSegmentation(logits, labels).loss).toBe(explicit.loss);
    expect(seg.ignoreIndex).toBe(255);
    expect(seg.lossAndGrad(logits, labels).loss).toBe(explicit.loss);
    const nhwc = (x: Float32Array) => tf.transpose<tf.Tensor4D>(tf.tensor4d(x, [2, classes, 8, 8]), [0, 2, 3, 1]);
    const value = tfjsSegmentationLoss(loss)(nhwc(logits.data), tf.tensor3d(labels.data, [2, 8, 8], 'int32'));
    expect(Math.abs(value.dataSync()[0] - (explicit.loss as number)) / (explicit.loss as number)).toBeLessThan(1e-6);
  });

  it.each([[1.5], [NaN], [Infinity], ['255'], [null], [true], [[255]]])('refuses %j with the same message everywhere (ERR_OPTIONS)', (bad) => {
    const message = new RegExp(`^Invalid option "ignoreIndex": got .*; allowed: an integer\\.$`);
    expectCode(() => loss.lossAndGradSegmentation(logits, labels, { ignoreIndex: bad as never }), 'ERR_OPTIONS', message);
    expectCode(() => segmentationLoss({ classes, ignoreIndex: bad as never }), 'ERR_OPTIONS', message);
    expectCode(() => tfjsSegmentationLoss(loss, { ignoreIndex: bad as never }), 'ERR_OPTIONS', message);
  });
});

describe('PerceptualLoss.load, telling whose options are bad', () => {
  const file = path.join(dir, 'vgg11ish.safetensors');
  new PerceptualLoss({ inChannels: 2, arch: [4, 'M', 8], device: 'cpu' }).save(file);
  const withStored = (stored: object) => {
    const bytes = fs.readFileSync(file);
    const length = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as { __metadata__: Record<string, string> };
    header.__metadata__['generic-perceptual-loss'] = JSON.stringify(stored);
    let text = JSON.stringify(header);
    text += ' '.repeat((8 - ((8 + text.length) % 8)) % 8); // the data stays 8-byte aligned
    const json = Buffer.from(text);
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    const out = path.join(dir, `stored-${Math.random().toString(36).slice(2)}.safetensors`);
    fs.writeFileSync(out, Buffer.concat([prefix, json, bytes.subarray(8 + length)]));
    return out;
  };

  it('an invalid option the caller gives is ERR_OPTIONS', () => {
    expectCode(() => PerceptualLoss.load(file, { criterion: 'mse' as never }), 'ERR_OPTIONS', /^Invalid option "criterion": got "mse"/);
  });

  it('the same invalid option stored in the file is ERR_FILE', () => {
    const bad = withStored({ inChannels: 2, arch: [4, 'M', 8], criterion: 'mse' });
    expectCode(() => PerceptualLoss.load(bad), 'ERR_FILE', /the stored options are invalid: Invalid option "criterion": got "mse"/);
  });

  it("taps the caller asks for that the file's arch lacks are the caller's: ERR_OPTIONS", () => {
    expectCode(() => PerceptualLoss.load(file, { layers: ['relu3_1'] }), 'ERR_OPTIONS', /^Invalid option "layers": got "relu3_1"/);
  });

  it('a caller\'s layers that are not an array are ERR_OPTIONS, not a TypeError', () => {
    expectCode(() => PerceptualLoss.load(file, { layers: 'relu1_1' as never }), 'ERR_OPTIONS', /^Invalid option "layers"/);
  });

  it('an invalid option the caller gives wins over a valid stored one', () => {
    const stored = withStored({ inChannels: 2, arch: [4, 'M', 8], reduction: 'sum' });
    expectCode(() => PerceptualLoss.load(stored, { reduction: 'avg' as never }), 'ERR_OPTIONS', /"reduction": got "avg"/);
    expect(PerceptualLoss.load(stored).options.reduction).toBe('sum');
  });
});

describe('device information', () => {
  it('is read from native code once per process, not per loss, tensor or call', () => {
    new PerceptualLoss(TINY).dispose(); // whatever the first use reads, it has read by now
    Tensor.from(new Float32Array(1), [1]).dispose();
    const spy = vi.spyOn(native(), 'runtimeInfo');
    try {
      const loss = new PerceptualLoss({ ...TINY, device: 'auto' });
      const pred = Tensor.from(host(1).data, SHAPE);
      loss.lossAndGrad(pred, host(2)).grad.dispose();
      pred.dispose();
      loss.loss(host(1), host(2));
      const file = path.join(dir, 'device.safetensors');
      loss.save(file);
      PerceptualLoss.load(file).dispose();
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
