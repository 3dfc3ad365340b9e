// Every bad option and input of instanceMaskLoss (docs/api.md, "Instance masks") gets a
// PerceptualLossError with the right code and a message that says what was wrong and what is
// allowed: inChannels, logits with more than one channel, masks of another shape or type or with
// values outside [0, 1], weights of the wrong length, sign or type. Afterwards the loss that threw
// still gives the answer it gave before.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instanceMaskLoss, setNumThreads, Tensor, type HostTensor, type InstanceMaskLoss } from '../../lib/index';
import { expectError, expectRejection, host, type Subject } from '../helpers/errors';
import { randint } from '../helpers/random';

const SHAPE = [3, 1, 8, 8];
const NET = { arch: [4, 'M', 8], device: 'cpu' } as const;

let instances: InstanceMaskLoss;
let subject: Subject;
const logits = host(SHAPE, 1);
const masks = { data: Uint8Array.from(randint(3 * 64, 0, 2, 2)), shape: SHAPE };

beforeAll(() => {
  setNumThreads(1);
  instances = instanceMaskLoss(NET);
  const before = instances.lossAndGrad(logits, masks, { weights: [1, 2, 3] });
  expect(before.loss).toBeGreaterThan(0);
  // The checks of expectError: the loss still gives bit for bit what it gave at first.
  subject = {
    loss: instances.perceptual,
    pred: logits,
    target: logits,
    expectUnchanged() {
      const now = instances.lossAndGrad(logits, masks, { weights: [1, 2, 3] });
      expect(now.loss).toBe(before.loss);
      expect(now.grad).toEqual(before.grad);
    },
  };
});
afterAll(() => instances.dispose());

describe('options', () => {
  it('refuses inChannels: instance masks have 1 channel', () => {
    expectError(subject, () => instanceMaskLoss({ inChannels: 1 } as never), 'ERR_OPTIONS', [
      'instanceMaskLoss: "inChannels" is set by the task; instance masks have 1 channel, one mask per instance: leave it out.',
    ]);
  });

  it('checks every other option as PerceptualLoss does', () => {
    expectError(subject, () => instanceMaskLoss({ reduction: 'avg' as never }), 'ERR_OPTIONS', ['"reduction"', '"avg"']);
    expectError(subject, () => instanceMaskLoss({ spatialDims: 3, layout: 'nhwc' }), 'ERR_OPTIONS', ['"layout"', "'ncdhw' | 'ndhwc'"]);
    expectError(subject, () => instanceMaskLoss(null as never), 'ERR_OPTIONS', ['instanceMaskLoss options must be an object']);
  });

  it('refuses call options that are not an object', () => {
    expectError(subject, () => instances.loss(logits, masks, [1, 2, 3] as never), 'ERR_OPTIONS', ['Call options must be an object such as { weights }']);
  });
});

describe('mask logits', () => {
  it('refuses more than one channel, naming [M, 1, H, W]', () => {
    const x = host([3, 2, 8, 8], 3);
    expectError(subject, () => instances.lossAndGrad(x, { data: new Uint8Array(384), shape: [3, 2, 8, 8] }), 'ERR_SHAPE', [
      'maskLogits has 2 channels (shape [3, 2, 8, 8], [M, C, H, W]) but instance masks have 1 channel: [M, 1, H, W], one mask per instance.',
    ]);
  });

  it("names the layout 'nhwc' for [M, H, W, 1] logits", () => {
    const x = host([3, 8, 8, 1], 3);
    expectError(subject, () => instances.loss(x, { data: masks.data, shape: [3, 8, 8, 1] }), 'ERR_SHAPE', ["pass layout: 'nhwc'"]);
  });

  it('refuses logits [M, H, W] without the channel axis, naming [M, 1, H, W]', () => {
    const x = host([3, 8, 8], 3);
    expectError(subject, () => instances.loss(x, masks), 'ERR_SHAPE', ["maskLogits must be 4-D [M, 1, H, W] (layout 'nchw'); got shape [3, 8, 8]."]);
  });

  it('refuses logits too small for the deepest tap', () => {
    const x = host([3, 1, 1, 8], 3);
    expectError(subject, () => instances.loss(x, { data: new Uint8Array(24), shape: [3, 1, 1, 8] }), 'ERR_SHAPE', ['maskLogits is 1x8', 'at least 2']);
  });

  it('refuses NaN logits (ERR_NONFINITE)', () => {
    const x = { data: logits.data.slice(), shape: SHAPE };
    x.data[5] = NaN;
    expectError(subject, () => instances.lossAndGrad(x, masks), 'ERR_NONFINITE', ['NaN or Inf']);
  });
});

describe('masks', () => {
  it('refuses masks of another shape than the logits', () => {
    expectError(subject, () => instances.loss(logits, { data: new Uint8Array(128), shape: [2, 1, 8, 8] }), 'ERR_SHAPE', [
      'masks must have the shape of maskLogits: shapes differ, [2, 1, 8, 8] and [3, 1, 8, 8].',
    ]);
  });

  it('refuses an Int32Array (ERR_DTYPE), naming the array types it takes', () => {
    expectError(subject, () => instances.loss(logits, { data: new Int32Array(192), shape: SHAPE } as never), 'ERR_DTYPE', [
      'masks.data must be a Uint8Array or Float32Array or Float64Array; got an Int32Array of length 192.',
    ]);
  });

  it('refuses an int32 Tensor of masks (ERR_DTYPE)', () => {
    using m = Tensor.from(new Int32Array(192), SHAPE, { device: 'cpu' });
    expectError(subject, () => instances.loss(logits, m), 'ERR_DTYPE', ['masks is an int32 Tensor; expected uint8 or float32 or float64.']);
  });

  it('refuses masks stored as 0 and 255, naming the value and the fix', () => {
    const bytes = masks.data.map((v) => v * 255);
    const at = bytes.findIndex((v) => v === 255);
    expectError(subject, () => instances.loss(logits, { data: bytes, shape: SHAPE }), 'ERR_SHAPE', [
      `masks must hold 0 and 1 (values in [0, 1]); masks.data[${at}] is 255 (masks stored as 0 and 255: divide by 255, or compare with 0).`,
    ]);
  });

  it('refuses negative float mask values', () => {
    const floats = Float32Array.from(masks.data);
    floats[7] = -1;
    expectError(subject, () => instances.lossAndGrad(logits, { data: floats, shape: SHAPE }), 'ERR_SHAPE', ['masks.data[7] is -1.']);
  });

  it('refuses something that is not a tensor-like', () => {
    expectError(subject, () => instances.loss(logits, masks.data as never), 'ERR_SHAPE', ['masks must be a Tensor or { data, shape }']);
  });
});

describe('weights', () => {
  it('refuses a length other than M', () => {
    expectError(subject, () => instances.loss(logits, masks, { weights: [1, 2] }), 'ERR_OPTIONS', [
      'Invalid option "weights": got [1, 2]; allowed: 3 finite numbers >= 0, one per instance (M = 3), not all 0',
      'got 2',
    ]);
  });

  it.each([
    [-1, '-1'],
    [NaN, 'NaN'],
    [Infinity, 'Infinity'],
    ['2', '"2"'],
  ])('refuses a weight of %j, naming its index', (bad, shown) => {
    expectError(subject, () => instances.lossAndGrad(logits, masks, { weights: [1, bad as number, 1] }), 'ERR_OPTIONS', [
      `Invalid option "weights[1]": got ${shown}; allowed: a finite number >= 0.`,
    ]);
  });

  it('refuses weights that are all 0', () => {
    expectError(subject, () => instances.loss(logits, masks, { weights: new Float64Array(3) }), 'ERR_OPTIONS', ['"weights"', 'not all 0', '(these are all 0)']);
  });

  it('refuses weights that are not a list of numbers', () => {
    expectError(subject, () => instances.loss(logits, masks, { weights: 2 as never }), 'ERR_OPTIONS', ['"weights"', 'got 2', 'as an array, a Float64Array or a Float32Array']);
    expectError(subject, () => instances.loss(logits, masks, { weights: new Int32Array(3) as never }), 'ERR_OPTIONS', ['an Int32Array of length 3']);
  });

  it('the async forms reject, not throw', async () => {
    await expectRejection(subject, () => instances.lossAsync(logits, masks, { weights: [1] }), 'ERR_OPTIONS', ['"weights"']);
    await expectRejection(subject, () => instances.lossAndGradAsync(logits, { data: masks.data, shape: [3, 8, 8, 1] }), 'ERR_SHAPE', ['masks must have the shape']);
  });
});

describe('state', () => {
  it('a disposed instance loss throws ERR_DISPOSED', () => {
    const gone = instanceMaskLoss(NET);
    gone.dispose();
    expectError(subject, () => gone.loss(logits, masks), 'ERR_DISPOSED', ['This PerceptualLoss has been disposed.']);
  });

  it('a volume loss refuses 2-D masks logits, naming [M, 1, D, H, W]', () => {
    const volume = instanceMaskLoss({ ...NET, spatialDims: 3 });
    const x: HostTensor<Float32Array> = host([3, 1, 8, 8], 3);
    expectError(subject, () => volume.loss(x, masks), 'ERR_SHAPE', ["maskLogits must be 5-D [M, 1, D, H, W] (layout 'ncdhw', spatialDims: 3)"]);
    volume.dispose();
  });
});
