// Every bad input gets a PerceptualLossError with the right code and a message that says what was
// wrong; afterwards the loss object that threw still gives the answer it gave before (docs/api.md,
// "Errors"): shapes, sizes, array types, Tensors, segmentation labels, non-finite values, and steps
// too large for the memory.
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, type HostTensor } from '../../lib/index';
import { expectError, host, SHAPE, SMALL, smallSubject, subject, type Subject } from '../helpers/errors';
import { randint } from '../helpers/random';

let small: Subject;

beforeAll(() => {
  small = smallSubject();
});

// ------------------------------------------------------------------ inputs

describe('inputs', () => {
  it('rejects pred and target of different shapes (ERR_SHAPE), giving both', () => {
    const { loss, pred } = small;
    const target = host([2, 3, 16, 20], 3);
    expectError(small, () => loss.loss(pred, target), 'ERR_SHAPE', ['[2, 3, 16, 16]', '[2, 3, 16, 20]']);
    expectError(small, () => loss.lossAndGrad(pred, host([1, 3, 16, 16], 3)), 'ERR_SHAPE', ['[1, 3, 16, 16]']);
  });

  it('rejects a pred that is not 4-D', () => {
    const { loss, target } = small;
    expectError(small, () => loss.loss(host([3, 16, 16], 1), target), 'ERR_SHAPE', ['4-D', '[3, 16, 16]']);
    expectError(small, () => loss.loss(host([1, 2, 3, 16, 16], 1), target), 'ERR_SHAPE', ['4-D', '[1, 2, 3, 16, 16]']);
  });

  it('rejects a target that is not 4-D', () => {
    const { loss, pred } = small;
    expectError(small, () => loss.loss(pred, host([6, 16, 16], 1)), 'ERR_SHAPE', ['target', '4-D']);
  });

  it('rejects a channel count other than inChannels', () => {
    const { loss } = small;
    const x = host([2, 4, 16, 16], 1);
    expectError(small, () => loss.loss(x, x), 'ERR_SHAPE', ['4 channels', 'inChannels: 3']);
  });

  it('reads the channels from the last axis with layout nhwc', () => {
    const { loss } = small;
    // [N, C, H, W] = [2, 3, 16, 16] read as NHWC has 16 channels.
    expectError(small, () => loss.loss(small.pred, small.target, { layout: 'nhwc' }), 'ERR_SHAPE', ['16 channels', 'inChannels: 3']);
  });

  describe('too small for the deepest tap', () => {
    let vgg19: Subject;
    beforeAll(() => {
      vgg19 = subject({ inChannels: 3 }, [1, 3, 16, 16]);
    });

    it('gives the minimum size: vgg19 default taps need 16', () => {
      const x = host([1, 3, 15, 16], 1);
      expectError(vgg19, () => vgg19.loss.loss(x, x), 'ERR_SHAPE', ['15x16', /at least 16\b/]);
    });

    it('checks W as well as H', () => {
      const x = host([1, 3, 16, 8], 1);
      expectError(vgg19, () => vgg19.loss.lossAndGrad(x, x), 'ERR_SHAPE', ['16x8', /at least 16\b/]);
    });

    it('checks the input of features()', () => {
      expectError(vgg19, () => vgg19.loss.features(host([1, 3, 8, 8], 1)), 'ERR_SHAPE', [/at least 16\b/]);
    });

    it('counts a pool tap: pool5 on vgg11 needs 32', () => {
      const deep = subject({ inChannels: 3, arch: 'vgg11', layers: ['pool5'] }, [1, 3, 32, 32]);
      const x = host([1, 3, 31, 32], 1);
      expectError(deep, () => deep.loss.loss(x, x), 'ERR_SHAPE', ['31x32', /at least 32\b/]);
    });
  });

  it('rejects an empty tensor (a zero dimension)', () => {
    const { loss } = small;
    const empty = { data: new Float32Array(0), shape: [0, 3, 16, 16] };
    expectError(small, () => loss.loss(empty, empty), 'ERR_SHAPE', ['empty', '[0, 3, 16, 16]']);
    const flat = { data: new Float32Array(0), shape: [2, 3, 0, 16] };
    expectError(small, () => loss.lossAndGrad(flat, flat), 'ERR_SHAPE', ['empty']);
  });

  it('rejects data that is a plain array (ERR_DTYPE)', () => {
    const { loss, target } = small;
    const pred = { data: Array.from(small.pred.data), shape: SHAPE } as unknown as HostTensor;
    expectError(small, () => loss.loss(pred, target), 'ERR_DTYPE', ['pred', 'Float32Array']);
  });

  it('rejects an Int32Array pred (ERR_DTYPE), naming the type given', () => {
    const { loss, target } = small;
    const pred = { data: new Int32Array(small.pred.data.length), shape: SHAPE } as unknown as HostTensor;
    expectError(small, () => loss.loss(pred, target), 'ERR_DTYPE', ['pred', 'Int32Array', 'Float32Array or Float64Array']);
  });

  it('rejects a buffer whose length does not match the shape (ERR_SHAPE)', () => {
    const { loss, target } = small;
    const pred = { data: new Float32Array(1000), shape: SHAPE };
    expectError(small, () => loss.loss(pred, target), 'ERR_SHAPE', ['1000', '1536']);
    const longer = { data: new Float32Array(2000), shape: SHAPE };
    expectError(small, () => loss.loss(small.pred, longer), 'ERR_SHAPE', ['target', '2000', '1536']);
  });

  it('rejects a shape that is not an array of integers', () => {
    const { loss, target } = small;
    expectError(small, () => loss.loss({ data: small.pred.data, shape: [2, 3, 16, 16.5] }, target), 'ERR_SHAPE', ['16.5']);
    expectError(small, () => loss.loss({ data: small.pred.data, shape: [2, -3, 16, 16] }, target), 'ERR_SHAPE', ['-3']);
  });

  it('rejects something that is neither a Tensor nor { data, shape }', () => {
    const { loss, target } = small;
    expectError(small, () => loss.loss(small.pred.data as unknown as HostTensor, target), 'ERR_SHAPE', ['pred', '{ data, shape }']);
    expectError(small, () => loss.loss(null as unknown as HostTensor, target), 'ERR_SHAPE', ['pred', 'null']);
  });

  it('rejects call options that are not an object, or an unknown layout', () => {
    const { loss, pred, target } = small;
    expectError(small, () => loss.loss(pred, target, 'nhwc' as never), 'ERR_OPTIONS', ['"nhwc"']);
    expectError(small, () => loss.loss(pred, target, { layout: 'hwc' as never }), 'ERR_OPTIONS', ['"layout"', '"hwc"']);
  });

  it('rejects bad arguments to Tensor.from', () => {
    expectError(small, () => Tensor.from([1, 2, 3] as unknown as Float32Array, [3]), 'ERR_DTYPE', ['Float32Array']);
    expectError(small, () => Tensor.from(new Int16Array(3) as unknown as Float32Array, [3]), 'ERR_DTYPE', ['Int16Array']);
    expectError(small, () => Tensor.from(new Float32Array(6), [2, 4]), 'ERR_SHAPE', ['[2, 4]', '8', '6']);
  });

  it('rejects a Tensor of the wrong dtype as pred', () => {
    const ints = Tensor.from(new Int32Array(small.pred.data.length), SHAPE);
    expectError(small, () => small.loss.loss(ints, small.target), 'ERR_DTYPE', ['pred', 'int32']);
    ints.dispose();
  });

  it('rejects a prepared target against a pred of another shape', () => {
    const prepared = small.loss.prepareTarget(small.target);
    expectError(small, () => small.loss.loss(host([1, 3, 16, 16], 5), prepared), 'ERR_SHAPE', ['[1, 3, 16, 16]', '[2, 3, 16, 16]']);
    prepared.dispose();
  });
});

// ------------------------------------------------------------------ segmentation labels

describe('segmentation labels', () => {
  const labels = (fill: (i: number) => number) => ({
    data: Int32Array.from({ length: 2 * 16 * 16 }, (_, i) => fill(i)),
    shape: [2, 16, 16],
  });
  const valid = randint(2 * 16 * 16, 0, 3, 21);

  it.each([
    ['7 with 3 classes', 7],
    ['-1', -1],
    ['3 (= the class count)', 3],
  ])('rejects label %s with the allowed range (ERR_SHAPE)', (_, bad) => {
    const y = labels((i) => (i === 100 ? bad : valid[i]));
    expectError(small, () => small.loss.lossAndGradSegmentation(small.pred, y), 'ERR_SHAPE', ['[0, 3)', 'ignoreIndex (255)', `found ${bad}`]);
  });

  it('rejects an out-of-range Uint8Array label', () => {
    const y = { data: Uint8Array.from(valid, (v, i) => (i === 5 ? 200 : v)), shape: [2, 16, 16] };
    expectError(small, () => small.loss.lossAndGradSegmentation(small.pred, y), 'ERR_SHAPE', ['[0, 3)', 'found 200']);
  });

  it('names the ignoreIndex in force', () => {
    const y = labels((i) => (i === 0 ? 255 : valid[i]));
    expectError(small, () => small.loss.lossAndGradSegmentation(small.pred, y, { ignoreIndex: -1 }), 'ERR_SHAPE', ['ignoreIndex (-1)', 'found 255']);
  });

  it('rejects labels of the wrong shape (ERR_SHAPE)', () => {
    const { loss, pred } = small;
    const narrow = { data: new Int32Array(2 * 16 * 15), shape: [2, 16, 15] };
    expectError(small, () => loss.lossAndGradSegmentation(pred, narrow), 'ERR_SHAPE', ['labels', '[2, 16, 15]', '[2, 16, 16]']);
    const fourD = { data: new Int32Array(2 * 16 * 16), shape: [2, 1, 16, 16] };
    expectError(small, () => loss.lossAndGradSegmentation(pred, fourD), 'ERR_SHAPE', ['labels', '[2, 1, 16, 16]']);
    const short = { data: new Int32Array(10), shape: [2, 16, 16] };
    expectError(small, () => loss.lossAndGradSegmentation(pred, short), 'ERR_SHAPE', ['labels', '10', '512']);
  });

  it('rejects float labels (ERR_DTYPE)', () => {
    const y = { data: Float32Array.from(valid), shape: [2, 16, 16] } as never;
    expectError(small, () => small.loss.lossAndGradSegmentation(small.pred, y), 'ERR_DTYPE', ['labels', 'Int32Array']);
  });

  it('rejects a non-integer ignoreIndex (ERR_OPTIONS)', () => {
    const y = labels((i) => valid[i]);
    expectError(small, () => small.loss.lossAndGradSegmentation(small.pred, y, { ignoreIndex: 1.5 }), 'ERR_OPTIONS', ['"ignoreIndex"', '1.5']);
  });
});

// ------------------------------------------------------------------ non-finite values

describe('non-finite values', () => {
  const poisoned = (value: number, at: number) => {
    const data = small.pred.data.slice();
    data[at] = value;
    return { data, shape: SHAPE };
  };

  it('rejects NaN in pred (ERR_NONFINITE)', () => {
    expectError(small, () => small.loss.loss(poisoned(NaN, 17), small.target), 'ERR_NONFINITE', ['pred', 'NaN or Inf', 'checkFinite']);
    expectError(small, () => small.loss.lossAndGrad(poisoned(NaN, 1535), small.target), 'ERR_NONFINITE', ['pred']);
  });

  it('rejects Inf and -Inf in target (ERR_NONFINITE)', () => {
    expectError(small, () => small.loss.loss(small.pred, poisoned(Infinity, 3)), 'ERR_NONFINITE', ['target']);
    expectError(small, () => small.loss.lossAndGrad(small.pred, poisoned(-Infinity, 900)), 'ERR_NONFINITE', ['target']);
  });

  it('rejects NaN in the input of features() and prepareTarget()', () => {
    expectError(small, () => small.loss.features(poisoned(NaN, 0)), 'ERR_NONFINITE');
    expectError(small, () => small.loss.prepareTarget(poisoned(NaN, 0)), 'ERR_NONFINITE', ['target']);
  });

  it('rejects NaN in segmentation logits', () => {
    const y = { data: randint(2 * 16 * 16, 0, 3, 4), shape: [2, 16, 16] };
    expectError(small, () => small.loss.lossAndGradSegmentation(poisoned(NaN, 40), y), 'ERR_NONFINITE', ['logits']);
  });

  it('rejects NaN in a float64 pred', () => {
    const loss = subject({ ...SMALL, dtype: 'float64' }, SHAPE);
    const data = Float64Array.from(small.pred.data);
    data[8] = NaN;
    expectError(loss, () => loss.loss.loss({ data, shape: SHAPE }, { data: Float64Array.from(small.target.data), shape: SHAPE }), 'ERR_NONFINITE');
  });

  it('lets NaN propagate with checkFinite: false', () => {
    const loss = new PerceptualLoss({ ...SMALL, checkFinite: false });
    expect(loss.loss(poisoned(NaN, 17), small.target)).toBeNaN();
    const result = loss.lossAndGrad(small.pred, poisoned(NaN, 17));
    expect(result.loss).toBeNaN();
    // Finite inputs still give the finite answer of the checking loss.
    expect(loss.loss(small.pred, small.target)).toBe(small.loss.loss(small.pred, small.target));
  });
});

// ------------------------------------------------------------------ memory

describe('resource exhaustion', () => {
  it('refuses a step that cannot fit in memory with ERR_OUT_OF_MEMORY, before allocating it', () => {
    const loss = subject({ inChannels: 1 }, [1, 1, 16, 16]);
    // 268 MB of input; vgg19's activations for it would need far more than this machine has.
    const shape = [1, 1, 8192, 8192];
    const data = new Float32Array(8192 * 8192);
    const rssBefore = process.memoryUsage().rss;
    expectError(loss, () => loss.loss.lossAndGrad({ data, shape }, { data, shape }), 'ERR_OUT_OF_MEMORY', ['GiB', 'smaller batches']);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 * 2 ** 20);
  });
});
