// Every bad option, input and file of a volume loss (docs/api.md, "Volumes (3-D)") gets a
// PerceptualLossError with the right code and a message that says what was wrong and what is
// allowed: spatialDims, the layout names of the other dimensionality, 4-D and 5-D shapes in the
// wrong loss, channels on the other axis, the minimum size of each axis, voxel masks, labels,
// files of the other dimensionality and steps too large for the memory. Afterwards the loss that
// threw still gives the answer it gave before.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, type PerceptualLossOptions } from '../../lib/index';
import { estimateStepBytes } from '../../lib/memory';
import { describeNetwork } from '../../lib/network';
import { construct, expectError, host, smallSubject, subject, type Subject } from '../helpers/errors';
import { randint } from '../helpers/random';
import { packFloat32, writeRawSafetensors } from '../helpers/safetensors';

const SMALL3 = { inChannels: 2, spatialDims: 3, arch: [4, 'M', 8], device: 'cpu' } as const satisfies PerceptualLossOptions;
const SHAPE3 = [2, 2, 8, 8, 8];

let small: Subject;
let volume: Subject;
let dir: string;

beforeAll(() => {
  small = smallSubject();
  volume = subject(SMALL3, SHAPE3);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-errors-volumes-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  volume.loss.dispose();
});

// ------------------------------------------------------------------ options

describe('options', () => {
  it.each([1, 4, '3', 3.5, null])('rejects spatialDims %j, naming 2 and 3', (value) => {
    expectError(small, construct({ inChannels: 1, spatialDims: value }), 'ERR_OPTIONS', ['"spatialDims"', '2 (images, the default) | 3 (volumes)']);
  });

  it.each(['nchw', 'nhwc'])("refuses the 2-D layout '%s' for spatialDims 3, naming 'ncdhw' and 'ndhwc'", (layout) => {
    expectError(volume, construct({ ...SMALL3, layout }), 'ERR_OPTIONS', [
      `Invalid option "layout": got "${layout}"; allowed: 'ncdhw' | 'ndhwc' for spatialDims: 3`,
      `"${layout}" is a layout of 2-D images`,
    ]);
  });

  it.each(['ncdhw', 'ndhwc'])("refuses the 3-D layout '%s' for spatialDims 2, naming 'nchw' and 'nhwc' and spatialDims: 3", (layout) => {
    expectError(small, construct({ inChannels: 3, layout }), 'ERR_OPTIONS', [
      `Invalid option "layout": got "${layout}"; allowed: 'nchw' | 'nhwc' for spatialDims: 2`,
      'build the loss with spatialDims: 3',
    ]);
  });

  it('refuses a layout of the other dimensionality per call too', () => {
    expectError(volume, () => volume.loss.loss(volume.pred, volume.target, { layout: 'nhwc' }), 'ERR_OPTIONS', ['"nhwc"', "'ncdhw' | 'ndhwc'"]);
    expectError(small, () => small.loss.loss(small.pred, small.target, { layout: 'ndhwc' }), 'ERR_OPTIONS', ['"ndhwc"', 'spatialDims: 3']);
    expectError(volume, () => volume.loss.features(volume.pred, { layout: 'NDHWC' as never }), 'ERR_OPTIONS', ['"NDHWC"', "'ncdhw' | 'ndhwc'"]);
  });

  it("names the 3-D layouts for an unknown layout in 2-D as well as the 2-D ones", () => {
    expectError(small, construct({ inChannels: 3, layout: 'chw' }), 'ERR_OPTIONS', ["'nchw' | 'nhwc'", "'ncdhw' | 'ndhwc' with spatialDims: 3"]);
  });
});

// ------------------------------------------------------------------ shapes

describe('shapes', () => {
  it('rejects a 4-D input to a 3-D loss, naming 5-D and spatialDims', () => {
    const x = host([2, 2, 8, 8], 1);
    expectError(volume, () => volume.loss.loss(x, x), 'ERR_SHAPE', [
      "pred must be 5-D [N, C, D, H, W] (layout 'ncdhw', spatialDims: 3); got shape [2, 2, 8, 8].",
      'A 4-D shape [N, C, H, W] is a batch of 2-D images, for a loss with spatialDims: 2',
    ]);
  });

  it('reads a 4-D input to a 3-D loss as one volume without its batch axis, too', () => {
    const x = host([2, 8, 8, 8], 1);
    expectError(volume, () => volume.loss.lossAndGrad(x, x), 'ERR_SHAPE', ['For one volume, add the batch axis: shape [1, 2, 8, 8, 8].']);
  });

  it('rejects a 5-D input to a 2-D loss, naming spatialDims: 3', () => {
    const x = host([2, 3, 4, 16, 16], 1);
    expectError(small, () => small.loss.loss(x, x), 'ERR_SHAPE', [
      "pred must be 4-D [N, C, H, W] (layout 'nchw'); got shape [2, 3, 4, 16, 16].",
      "A 5-D shape is a batch of volumes: build the loss with spatialDims: 3 (layouts 'ncdhw' [N, C, D, H, W] and 'ndhwc' [N, D, H, W, C]).",
    ]);
  });

  it("names [N, D, H, W, C] for layout 'ndhwc' and rejects other ranks there", () => {
    const x = host([2, 8, 8, 2], 1);
    expectError(volume, () => volume.loss.loss(x, x, { layout: 'ndhwc' }), 'ERR_SHAPE', ["must be 5-D [N, D, H, W, C] (layout 'ndhwc', spatialDims: 3)"]);
    const six = host([1, 2, 2, 8, 8, 8], 1);
    expectError(volume, () => volume.loss.loss(six, six), 'ERR_SHAPE', ['5-D', '[1, 2, 2, 8, 8, 8]']);
  });

  it('rejects an empty volume', () => {
    const empty = { data: new Float32Array(0), shape: [2, 2, 0, 8, 8] };
    expectError(volume, () => volume.loss.loss(empty, empty), 'ERR_SHAPE', ['empty', '[2, 2, 0, 8, 8]', '[N, C, D, H, W]']);
  });

  it("NDHWC data with layout 'ncdhw': the channel count on the last axis names layout 'ndhwc'", () => {
    const x = host([2, 8, 8, 8, 2], 1);
    expectError(volume, () => volume.loss.loss(x, x), 'ERR_SHAPE', [
      'pred has 8 channels (shape [2, 8, 8, 8, 2], [N, C, D, H, W]) but the loss was built with inChannels: 2.',
      "The last axis has 2: for data laid out [N, D, H, W, C] (TensorFlow.js tensors) pass layout: 'ndhwc', to the constructor or to this call.",
    ]);
  });

  it("NCDHW data with layout 'ndhwc': the message names layout 'ncdhw'", () => {
    const x = host([2, 2, 8, 8, 8], 1);
    expectError(volume, () => volume.loss.loss(x, x, { layout: 'ndhwc' }), 'ERR_SHAPE', [
      'pred has 8 channels (shape [2, 2, 8, 8, 8], [N, D, H, W, C])',
      "The second axis has 2: for data laid out [N, C, D, H, W] pass layout: 'ncdhw'.",
    ]);
  });

  it('rejects pred and target of different 5-D shapes, giving both', () => {
    expectError(volume, () => volume.loss.loss(volume.pred, host([2, 2, 8, 8, 10], 2)), 'ERR_SHAPE', ['[2, 2, 8, 8, 8]', '[2, 2, 8, 8, 10]']);
  });
});

describe('too small for the deepest tap: the minimum of each axis', () => {
  let deep: Subject;
  beforeAll(() => {
    // The default 3-D network: four pools before relu5_1, 16 on each axis.
    deep = subject({ inChannels: 1, spatialDims: 3, device: 'cpu' }, [1, 1, 16, 16, 16]);
  });
  afterAll(() => deep.loss.dispose());

  it('names D, H and W, the minimum 16 and the axis that falls short', () => {
    const x = host([1, 1, 8, 16, 16], 1);
    const error = expectError(deep, () => deep.loss.loss(x, x), 'ERR_SHAPE');
    expect(error.message).toBe(
      'pred is 8x16x16 (D x H x W) but the deepest tap needs D, H and W of at least 16 each (minimum size 16x16x16); got D=8.' +
        " Use shallower taps (at 8x16x16: layers: ['relu1_1', 'relu2_1', 'relu3_1', 'relu4_1'], relu4_1 the deepest that fits)," +
        " an arch with fewer pools (each 'M' halves D, H and W), or a larger input.",
    );
  });

  it('names every axis that falls short, H and W as well as D', () => {
    const x = host([1, 1, 16, 4, 12], 1);
    expectError(deep, () => deep.loss.lossAndGrad(x, x), 'ERR_SHAPE', ['16x4x12', 'got H=4, W=12.', "layers: ['relu1_1', 'relu2_1', 'relu3_1']"]);
  });

  it('checks each axis in ndhwc too, and the input of features()', () => {
    const x = host([1, 16, 16, 15, 1], 1);
    expectError(deep, () => deep.loss.features(x, { layout: 'ndhwc' }), 'ERR_SHAPE', ['16x16x15', 'got W=15.']);
  });

  it('the suggested taps are the fix: they compute at 8x16x16', () => {
    const shallow = new PerceptualLoss({ inChannels: 1, spatialDims: 3, layers: ['relu1_1', 'relu2_1', 'relu3_1', 'relu4_1'], device: 'cpu' });
    const x = host([1, 1, 8, 16, 16], 1);
    expect(shallow.loss(x, host([1, 1, 8, 16, 16], 2))).toBeGreaterThan(0);
    shallow.dispose();
  });
});

// ------------------------------------------------------------------ masks and labels

describe('voxel masks and labels', () => {
  it('rejects a mask shape that is none of [N, D, H, W], [N, 1, D, H, W] and the volume', () => {
    const mask = { data: new Uint8Array(2 * 8 * 8 * 8), shape: [2, 8, 64] };
    expectError(volume, () => volume.loss.loss(volume.pred, volume.target, { mask }), 'ERR_SHAPE', [
      'mask shape [2, 8, 64] must be [N, D, H, W] = [2, 8, 8, 8], [N, 1, D, H, W] = [2, 1, 8, 8, 8] or pred\'s shape [2, 2, 8, 8, 8].',
    ]);
  });

  it("names [N, D, H, W, 1] in 'ndhwc'", () => {
    const x = host([2, 8, 8, 8, 2], 3);
    const mask = { data: new Uint8Array(2 * 8 * 8 * 8), shape: [2, 1, 8, 8, 8] };
    expectError(volume, () => volume.loss.loss(x, x, { layout: 'ndhwc', mask }), 'ERR_SHAPE', ['[N, D, H, W, 1] = [2, 8, 8, 8, 1]']);
  });

  it('counts the values of a bare mask per voxel', () => {
    expectError(volume, () => volume.loss.lossAndGrad(volume.pred, volume.target, { mask: new Uint8Array(100) }), 'ERR_SHAPE', [
      'mask holds 100 values; expected 1024 (one per voxel, [N, D, H, W]) or 2048 (one per element of pred [2, 2, 8, 8, 8]).',
    ]);
  });

  it("rejects a mask that states pred's shape but holds one value per voxel", () => {
    const mask = { data: new Uint8Array(2 * 8 * 8 * 8), shape: SHAPE3 };
    expectError(volume, () => volume.loss.loss(volume.pred, volume.target, { mask }), 'ERR_SHAPE', [
      'mask shape [2, 2, 8, 8, 8] needs 2048 values, but its data holds 1024; a mask holds 1024 (one per voxel, [N, D, H, W]) or 2048 (one per element of pred [2, 2, 8, 8, 8]).',
    ]);
  });

  it('rejects a Tensor mask of the wrong shape', () => {
    using mask = Tensor.from(new Float32Array(2 * 8 * 8), [2, 8, 8], { device: 'cpu' });
    expectError(volume, () => volume.loss.loss(volume.pred, volume.target, { mask }), 'ERR_SHAPE', ['mask shape [2, 8, 8] must be [N, D, H, W] = [2, 8, 8, 8]']);
  });

  it('rejects labels that are not [N, D, H, W] of the logits', () => {
    const labels = { data: new Int32Array(2 * 8 * 8), shape: [2, 8, 8] };
    expectError(volume, () => volume.loss.lossAndGradSegmentation(volume.pred, labels), 'ERR_SHAPE', ['labels must be [N, D, H, W] of the logits', '[2, 8, 8]', '[2, 8, 8, 8]']);
    const wide = { data: new Int32Array(2 * 8 * 8 * 9), shape: [2, 8, 8, 9] };
    expectError(volume, () => volume.loss.lossAndGradSegmentation(volume.pred, wide), 'ERR_SHAPE', ['[2, 8, 8, 9]']);
  });

  it('checks label values in 3-D as in 2-D', () => {
    const data = randint(2 * 512, 0, 2, 4);
    data[700] = 5;
    expectError(volume, () => volume.loss.lossAndGradSegmentation(volume.pred, { data, shape: [2, 8, 8, 8] }), 'ERR_SHAPE', ['[0, 2)', 'found 5']);
  });
});

// ------------------------------------------------------------------ files

describe('files', () => {
  const load = (file: string, options?: Partial<PerceptualLossOptions>) => () => PerceptualLoss.load(file, options);

  it('refuses a 2-D file loaded with spatialDims: 3 (ERR_FILE), naming both', () => {
    const file = path.join(dir, 'images.safetensors');
    small.loss.save(file);
    expectError(small, load(file, { spatialDims: 3 }), 'ERR_FILE', [file, 'holds a 2-D network (spatialDims: 2, weights [Cout, Cin, 3, 3])', 'spatialDims: 3', 'Leave spatialDims out']);
  });

  it('refuses a 3-D file loaded with spatialDims: 2 (ERR_FILE)', () => {
    const file = path.join(dir, 'volumes.safetensors');
    volume.loss.save(file);
    expectError(volume, load(file, { spatialDims: 2 }), 'ERR_FILE', ['holds a 3-D network (spatialDims: 3, weights [Cout, Cin, 3, 3, 3])', 'spatialDims: 2']);
  });

  it('refuses a 2-D layout for a 3-D file as the caller\'s option (ERR_OPTIONS)', () => {
    const file = path.join(dir, 'volumes-layout.safetensors');
    volume.loss.save(file);
    expectError(volume, load(file, { layout: 'nhwc' }), 'ERR_OPTIONS', ['"layout"', "'ncdhw' | 'ndhwc'"]);
  });

  it('names the dimensionality of weights without stored options: Conv2d weights for a 3-D network', () => {
    const file = path.join(dir, 'foreign2d.safetensors');
    const { header, data } = packFloat32(small.loss.stateDict());
    writeRawSafetensors(file, header, data);
    expectError(small, load(file, { inChannels: 3, arch: [8, 'M', 16], spatialDims: 3 }), 'ERR_FILE', [
      'features.0.weight has shape [8, 3, 3, 3] but the architecture needs [8, 3, 3, 3, 3].',
      "It is a 2-D network's weight: load it with spatialDims: 2.",
    ]);
  });

  it('and Conv3d weights for a 2-D network', () => {
    const file = path.join(dir, 'foreign3d.safetensors');
    const { header, data } = packFloat32(volume.loss.stateDict());
    writeRawSafetensors(file, header, data);
    expectError(volume, load(file, { inChannels: 2, arch: [4, 'M', 8] }), 'ERR_FILE', ['[4, 2, 3, 3, 3]', '[4, 2, 3, 3]', 'load it with spatialDims: 3']);
  });

  it('rejects an invalid stored spatialDims as a bad file', () => {
    const file = path.join(dir, 'bad-dims.safetensors');
    const { header, data } = packFloat32(volume.loss.stateDict());
    const options = JSON.stringify({ ...volume.loss.options, device: undefined, spatialDims: 4 });
    writeRawSafetensors(file, { __metadata__: { 'generic-perceptual-loss': options }, ...header }, data);
    expectError(volume, load(file), 'ERR_FILE', ['stored options are invalid', '"spatialDims"', '4']);
  });
});

// ------------------------------------------------------------------ memory

describe('memory', () => {
  it('estimates a 3-D step over D, H and W: each pool halves all three', () => {
    const modules = describeNetwork([4, 'M', 8], 1);
    // Kept: input 4096, conv and relu 16384 each, pool 2048 (x3 with indices), conv and relu
    // 4096 each; the largest activation 16384.
    expect(estimateStepBytes(modules, [1, 1, 16, 16, 16], 'float32')).toBe((2 * 51200 + 4 * 16384) * 4);
    // The same network in 2-D, as before volumes.
    expect(estimateStepBytes(modules, [1, 1, 16, 16], 'float32')).toBe((2 * 4096 + 4 * 1024) * 4);
    // im2col: conv1's columns, 27 per input voxel, the larger of the two.
    expect(estimateStepBytes(modules, [1, 1, 16, 16, 16], 'float64', true)).toBe((2 * 51200 + 4 * 16384 + 27 * 4096) * 8);
  });

  it('refuses a volume whose step cannot fit in memory with ERR_OUT_OF_MEMORY, before allocating it', () => {
    const wide = subject({ inChannels: 1, spatialDims: 3, arch: [65536], device: 'cpu' }, [1, 1, 2, 2, 2]);
    // The conv output alone is twice the machine's memory.
    const side = Math.ceil(Math.cbrt((2 * os.totalmem()) / (65536 * 4))) + 1;
    const shape = [1, 1, side, side, side];
    const data = new Float32Array(side ** 3);
    const rssBefore = process.memoryUsage().rss;
    expectError(wide, () => wide.loss.lossAndGrad({ data, shape }, { data, shape }), 'ERR_OUT_OF_MEMORY', [`[${shape.join(', ')}]`, 'GiB', 'smaller batches']);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 * 2 ** 20);
    wide.loss.dispose();
  });
});
