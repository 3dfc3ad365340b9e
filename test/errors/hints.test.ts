// Errors that name their fix (issue 23, "the first hour of a new user"): where a mistake can be
// told from the input cheaply, the message says what to do about it: the layout of interleaved
// pixels, the batch axis of one image, 8-bit pixels, RGBA, the taps that fit a small input. And
// the messages read as English: one channel, an Int32Array.
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, type HostTensor } from '../../lib/index';
import { withArticle } from '../../lib/errors';
import { expectError, host, smallSubject, subject, type Subject } from '../helpers/errors';

let small: Subject;

beforeAll(() => {
  small = smallSubject();
});

describe('channels on the other axis', () => {
  it("NHWC data with the default layout: the message suggests layout: 'nhwc'", () => {
    const x = host([1, 32, 32, 3], 1);
    const error = expectError(small, () => small.loss.loss(x, x), 'ERR_SHAPE');
    expect(error.message).toBe(
      'pred has 32 channels (shape [1, 32, 32, 3], [N, C, H, W]) but the loss was built with inChannels: 3.' +
        " The last axis has 3: for data laid out [N, H, W, C] (TensorFlow.js tensors, pixels as sharp or a canvas decode them) pass layout: 'nhwc', to the constructor or to this call.",
    );
  });

  it('the suggested layout is the fix: the same data computes with it', () => {
    const x = host([1, 32, 32, 3], 1);
    const value = small.loss.loss(x, x, { layout: 'nhwc' });
    expect(value).toBe(0);
  });

  it("NCHW data with layout 'nhwc': the message suggests layout: 'nchw'", () => {
    const x = host([1, 3, 32, 32], 1);
    expectError(small, () => small.loss.loss(x, x, { layout: 'nhwc' }), 'ERR_SHAPE', [
      "pred has 32 channels (shape [1, 3, 32, 32], [N, H, W, C]) but the loss was built with inChannels: 3. The second axis has 3: for data laid out [N, C, H, W] pass layout: 'nchw'.",
    ]);
  });

  it('RGBA pixels [N, H, W, 4] for an RGB loss: the layout and the alpha channel', () => {
    const x = host([1, 32, 32, 4], 1);
    expectError(small, () => small.loss.loss(x, x), 'ERR_SHAPE', ["pass layout: 'nhwc'", 'need their alpha dropped (sharp: .removeAlpha())']);
  });

  it('RGBA in the right layout: the alpha channel alone', () => {
    const x = host([1, 32, 32, 4], 1);
    const error = expectError(small, () => small.loss.loss(x, x, { layout: 'nhwc' }), 'ERR_SHAPE', ['has 4 channels', 'need their alpha dropped']);
    expect(error.message).not.toContain("pass layout: 'nhwc'");
  });

  it('no hint where the channel count fits no axis', () => {
    const x = host([1, 5, 16, 16], 1);
    const error = expectError(small, () => small.loss.loss(x, x), 'ERR_SHAPE');
    expect(error.message).toBe('pred has 5 channels (shape [1, 5, 16, 16], [N, C, H, W]) but the loss was built with inChannels: 3.');
  });

  it('says "1 channel", not "1 channels"', () => {
    const x = host([2, 1, 16, 16], 1);
    const error = expectError(small, () => small.loss.loss(x, x), 'ERR_SHAPE', ['pred has 1 channel (shape [2, 1, 16, 16]']);
    expect(error.message).not.toContain('1 channels');
  });
});

describe('image decoders', () => {
  it('one [H, W, C] image as sharp or a canvas decodes it: the batch axis and the layout', () => {
    const x = host([32, 32, 3], 1);
    expectError(small, () => small.loss.loss(x, x), 'ERR_SHAPE', [
      "pred must be 4-D [N, C, H, W] (layout 'nchw'); got shape [32, 32, 3]. For one image, add the batch axis: shape [1, 32, 32, 3].",
      "pass [1, H, W, C] with layout: 'nhwc'",
    ]);
  });

  it('one [C, H, W] image: the batch axis alone', () => {
    const x = host([3, 16, 16], 1);
    const error = expectError(small, () => small.loss.loss(x, x), 'ERR_SHAPE', ['add the batch axis: shape [1, 3, 16, 16].']);
    expect(error.message).not.toContain('nhwc');
  });

  it.each([Uint8Array, Uint8ClampedArray])('8-bit pixels (%s): convert to floats, and the layout of interleaved pixels', (type) => {
    const x = { data: new type(32 * 32 * 3), shape: [1, 32, 32, 3] } as unknown as HostTensor;
    expectError(small, () => small.loss.loss(x, small.target), 'ERR_DTYPE', [
      'pred.data must be a Float32Array or Float64Array',
      'Float32Array.from(bytes, (v) => v / 255)',
      "with layout: 'nhwc'",
    ]);
  });

  it('labels get no pixel hint: a Uint8Array is valid labels', () => {
    const logits = host([2, 3, 16, 16], 1);
    const error = expectError(small, () => small.loss.lossAndGradSegmentation(logits, { data: new Float32Array(512), shape: [2, 16, 16] } as never), 'ERR_DTYPE', [
      'labels.data must be an Int32Array or Uint8Array; got a Float32Array of length 512.',
    ]);
    expect(error.message).not.toContain('v / 255');
  });
});

describe('too small for the deepest tap: the taps that fit', () => {
  let vgg19: Subject;
  beforeAll(() => {
    vgg19 = subject({ inChannels: 3 }, [1, 3, 16, 16]);
  });

  it("2x3x8x8 with vgg19's default taps names the ones that reach 8x8", () => {
    const x = host([2, 3, 8, 8], 1);
    const error = expectError(vgg19, () => vgg19.loss.lossAndGrad(x, x), 'ERR_SHAPE');
    expect(error.message).toBe(
      'pred is 8x8 but the deepest tap needs H and W of at least 16 (minimum size 16x16).' +
        " Use shallower taps (at 8x8: layers: ['relu1_2', 'relu2_2', 'relu3_4', 'relu4_4'], relu4_4 the deepest that fits)," +
        " an arch with fewer pools (each 'M' halves H and W), or a larger input.",
    );
  });

  it('the suggested taps are the fix: they compute at 8x8', () => {
    const x = host([2, 3, 8, 8], 1);
    const shallow = new PerceptualLoss({ inChannels: 3, layers: ['relu1_2', 'relu2_2', 'relu3_4', 'relu4_4'] });
    expect(shallow.loss(x, host([2, 3, 8, 8], 2))).toBeGreaterThan(0);
    shallow.dispose();
  });

  it("keeps the given taps that fit: ['relu1_1', 'relu3_1', 'relu5_1'] at 4x5 leaves relu1_1 and relu3_1", () => {
    const some = subject({ inChannels: 3, layers: ['relu1_1', 'relu3_1', 'relu5_1'] }, [1, 3, 16, 16]);
    const x = host([1, 3, 4, 5], 1);
    expectError(some, () => some.loss.loss(x, x), 'ERR_SHAPE', ["at 4x5: layers: ['relu1_1', 'relu3_1'], relu3_1 the deepest that fits"]);
  });

  it('where none of the given taps fits, names the deepest ReLU that does', () => {
    const deep = subject({ inChannels: 3, arch: 'vgg11', layers: ['pool5'] }, [1, 3, 32, 32]);
    const x = host([1, 3, 8, 8], 1);
    expectError(deep, () => deep.loss.loss(x, x), 'ERR_SHAPE', ["at 8x8: layers: ['relu4_2'], relu4_2 the deepest that fits"]);
  });
});

describe('a and an', () => {
  it.each([
    ['Int32Array', 'an Int32Array'],
    ['Int16Array', 'an Int16Array'],
    ['int32', 'an int32'],
    ['Object', 'an Object'],
    ['ArrayBuffer', 'an ArrayBuffer'],
    ['undefined', 'an undefined'],
    ['Uint8Array', 'a Uint8Array'],
    ['uint8', 'a uint8'],
    ['URL', 'a URL'],
    ['Float32Array', 'a Float32Array'],
    ['Map', 'a Map'],
  ])('%s reads as "%s"', (word, expected) => {
    expect(withArticle(word)).toBe(expected);
  });

  it('an Int32Array pred: "got an Int32Array"', () => {
    const pred = { data: new Int32Array(small.pred.data.length), shape: small.pred.shape } as unknown as HostTensor;
    expectError(small, () => small.loss.loss(pred, small.target), 'ERR_DTYPE', ['got an Int32Array of length 1536']);
  });

  it('an int32 Tensor pred: "pred is an int32 Tensor"', () => {
    const ints = Tensor.from(new Int32Array(small.pred.data.length), small.pred.shape);
    expectError(small, () => small.loss.loss(ints, small.target), 'ERR_DTYPE', ['pred is an int32 Tensor; expected float32 or float64.']);
    ints.dispose();
  });
});
