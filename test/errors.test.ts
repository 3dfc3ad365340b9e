// Every bad option, input, state and file gets a PerceptualLossError with the right code and a
// message that says what was wrong; afterwards the loss object that threw still gives the answer
// it gave before (docs/api.md, "Errors": the process never crashes, and the loss object that threw
// stays usable and gives the results it gave before).
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
  type ErrorCode,
  type HostTensor,
  type PerceptualLossOptions,
} from '../lib/index';
import { randint, randn } from './helpers/random';
import { packFloat32, writeRawSafetensors } from './helpers/safetensors';

// ------------------------------------------------------------------ helpers

/** A loss with fixed inputs and the result it gave before any error was provoked. */
interface Subject {
  loss: PerceptualLoss;
  pred: HostTensor<Float32Array>;
  target: HostTensor<Float32Array>;
  /** Fails unless the loss still gives bit for bit the loss and gradient it gave at first. */
  expectUnchanged(): void;
}

function host(shape: number[], seed: number): HostTensor<Float32Array> {
  return { data: randn(shape.reduce((a, b) => a * b, 1), seed), shape };
}

function subject(options: PerceptualLossOptions, shape: number[]): Subject {
  const loss = new PerceptualLoss(options);
  const pred = host(shape, 11);
  const target = host(shape, 12);
  const before = loss.lossAndGrad(pred, target);
  expect(Number.isFinite(before.loss as number)).toBe(true);
  return {
    loss,
    pred,
    target,
    expectUnchanged() {
      const now = loss.lossAndGrad(pred, target);
      expect(now.loss).toBe(before.loss);
      expect(now.grad).toEqual(before.grad);
    },
  };
}

/**
 * Runs `fn`, expects a PerceptualLossError with `code` whose message contains every one of
 * `mentions`, then expects `after` to still give its first result.
 */
function expectError(after: Subject, fn: () => unknown, code: ErrorCode, mentions: Array<string | RegExp> = []): PerceptualLossError {
  let thrown: unknown;
  let threw = false;
  try {
    fn();
  } catch (error) {
    threw = true;
    thrown = error;
  }
  expect(threw, `expected ${code} to be thrown`).toBe(true);
  expect(thrown).toBeInstanceOf(PerceptualLossError);
  expect(thrown).toBeInstanceOf(Error);
  const error = thrown as PerceptualLossError;
  expect(error.name).toBe('PerceptualLossError');
  expect(error.code, error.message).toBe(code);
  for (const m of mentions) {
    if (typeof m === 'string') expect(error.message).toContain(m);
    else expect(error.message).toMatch(m);
  }
  after.expectUnchanged();
  return error;
}

/** As expectError, for an async method: it must return a Promise that rejects, not throw. */
async function expectRejection(
  after: Subject,
  fn: () => Promise<unknown>,
  code: ErrorCode,
  mentions: Array<string | RegExp> = [],
): Promise<void> {
  let promise: Promise<unknown> | undefined;
  expect(() => {
    promise = fn();
  }, 'an async method must reject, not throw synchronously').not.toThrow();
  expect(promise).toBeInstanceOf(Promise);
  let rejected = false;
  let reason: unknown;
  try {
    await promise;
  } catch (error) {
    rejected = true;
    reason = error;
  }
  expect(rejected, `expected a rejection with ${code}`).toBe(true);
  expectError(after, () => {
    throw reason;
  }, code, mentions);
}

const SHAPE = [2, 3, 16, 16];
const SMALL: PerceptualLossOptions = { inChannels: 3, arch: [8, 'M', 16] };

let small: Subject;
let dir: string;

beforeAll(() => {
  // Tiny tensors: one intra-op thread avoids thread hand-offs that are slow on a busy CI machine.
  setNumThreads(1);
  small = subject(SMALL, SHAPE);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpl-errors-'));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const construct = (options: unknown) => () => new PerceptualLoss(options as PerceptualLossOptions);

// ------------------------------------------------------------------ options

describe('options', () => {
  it('rejects an unknown option, naming it', () => {
    expectError(small, construct({ inChannels: 3, criterio: 'l1' }), 'ERR_OPTIONS', ['criterio', 'unknown option']);
  });

  it('rejects options that are not an object', () => {
    expectError(small, construct(3), 'ERR_OPTIONS', ['3']);
    expectError(small, construct(null), 'ERR_OPTIONS', ['null']);
  });

  it('requires inChannels', () => {
    expectError(small, construct({ arch: 'vgg11' }), 'ERR_OPTIONS', ['"inChannels"', 'undefined', 'required']);
  });

  // [option, value, text the message must contain besides the option's name]
  const wrongTypes: Array<[string, unknown, string]> = [
    ['inChannels', '3', '"3"'],
    ['arch', 19, '19'],
    ['layers', 'relu1_1', '"relu1_1"'],
    ['layerWeights', 'equal', '"equal"'],
    ['criterion', 5, '5'],
    ['featureWeight', '1', '"1"'],
    ['styleWeight', true, 'true'],
    ['reduction', null, 'null'],
    ['init', 42, '42'],
    ['seed', '7', '"7"'],
    ['pool', ['max'], '"max"'],
    ['device', 0, '0'],
    ['dtype', 32, '32'],
    ['layout', {}, '{}'],
    ['checkFinite', 'yes', '"yes"'],
  ];
  it.each(wrongTypes)('rejects %s of the wrong type (%j), naming the option and the value', (option, value, shown) => {
    expectError(small, construct({ inChannels: 3, [option]: value }), 'ERR_OPTIONS', [`"${option}"`, shown, 'allowed']);
  });

  it('says what is allowed for an option with a fixed set of values', () => {
    expectError(small, construct({ inChannels: 3, criterion: 'mse' }), 'ERR_OPTIONS', ['"criterion"', '"mse"', "'l1'", "'l2'", "'smooth_l1'"]);
    expectError(small, construct({ inChannels: 3, reduction: 'avg' }), 'ERR_OPTIONS', ['"reduction"', '"avg"', "'none'"]);
    expectError(small, construct({ inChannels: 3, pool: 'min' }), 'ERR_OPTIONS', ['"pool"', '"min"', "'avg'"]);
    expectError(small, construct({ inChannels: 3, layout: 'NCHW' }), 'ERR_OPTIONS', ['"layout"', '"NCHW"', "'nhwc'"]);
  });

  const outOfRange: Array<[string, PerceptualLossOptions | Record<string, unknown>, string[]]> = [
    ['negative featureWeight', { inChannels: 3, featureWeight: -1 }, ['"featureWeight"', '-1', '>= 0']],
    ['infinite featureWeight', { inChannels: 3, featureWeight: Infinity }, ['"featureWeight"', 'Infinity']],
    ['negative styleWeight', { inChannels: 3, styleWeight: -0.5 }, ['"styleWeight"', '-0.5', '>= 0']],
    ['NaN styleWeight', { inChannels: 3, styleWeight: NaN }, ['"styleWeight"', 'NaN']],
    ['inChannels 0', { inChannels: 0 }, ['"inChannels"', '0', '>= 1']],
    ['fractional inChannels', { inChannels: 2.5 }, ['"inChannels"', '2.5']],
    ['non-integer seed', { inChannels: 3, seed: 1.5 }, ['"seed"', '1.5', 'integer']],
    ['init with a negative std', { inChannels: 3, init: { normal: -1 } }, ['"init"', '-1', 'normal']],
    ['init with std 0', { inChannels: 3, init: { normal: 0 } }, ['"init"', '"normal":0']],
    ['init object with an unknown key', { inChannels: 3, init: { std: 0.1 } }, ['"init"', 'std']],
    ['init object with an extra key', { inChannels: 3, init: { normal: 0.1, mean: 0 } }, ['"init"', 'mean']],
    ['unknown init name', { inChannels: 3, init: 'he_normal' }, ['"init"', '"he_normal"', "'kaiming_normal'"]],
    ['unknown arch name', { inChannels: 3, arch: 'vgg20' }, ['"arch"', '"vgg20"', "'vgg19'"]],
    ['arch with a bad entry', { inChannels: 3, arch: [8, 'X', 16] }, ['"arch"', '"X"']],
    ['arch with a zero width', { inChannels: 3, arch: [8, 0] }, ['"arch"', '[8, 0]']],
    ['arch with a fractional width', { inChannels: 3, arch: [8.5] }, ['"arch"', '8.5']],
    ['arch with no conv', { inChannels: 3, arch: ['M', 'M'] }, ['"arch"', 'at least one conv']],
    ['empty arch', { inChannels: 3, arch: [] }, ['"arch"', '[]']],
    ['empty layers', { inChannels: 3, layers: [] }, ['"layers"', '[]', 'non-empty']],
    ['a duplicate tap', { inChannels: 3, layers: ['relu1_1', 'relu2_1', 'relu1_1'] }, ['"layers"', 'relu1_1', 'at most once']],
    ['a non-string tap', { inChannels: 3, layers: ['relu1_1', 3] }, ['"layers"', '3']],
    ['layerWeights of the wrong length', { inChannels: 3, layerWeights: [1, 2] }, ['"layerWeights"', '[1, 2]', 'one per tap', '5']],
    ['a negative layer weight', { inChannels: 3, layers: ['relu1_1', 'relu2_1'], layerWeights: [1, -2] }, ['"layerWeights"', '-2']],
    [
      'layerWeights naming a tap not in use',
      { inChannels: 3, layers: ['relu1_1', 'relu2_1'], layerWeights: { relu3_1: 2 } },
      ['"layerWeights"', 'relu3_1', 'relu1_1, relu2_1'],
    ],
    ['a NaN layer weight by name', { inChannels: 3, layers: ['relu1_1'], layerWeights: { relu1_1: NaN } }, ['layerWeights.relu1_1', 'NaN']],
  ];
  it.each(outOfRange)('rejects %s', (_, options, mentions) => {
    expectError(small, construct(options), 'ERR_OPTIONS', mentions);
  });
});

describe('taps', () => {
  it('rejects a tap name that no VGG has (relu9_9 on vgg19)', () => {
    expectError(small, construct({ inChannels: 3, layers: ['relu1_2', 'relu9_9'] }), 'ERR_OPTIONS', ['"layers"', 'relu9_9', 'vgg19']);
  });

  it('rejects a string that is not a tap name', () => {
    expectError(small, construct({ inChannels: 3, layers: ['foo'] }), 'ERR_OPTIONS', ['"layers"', '"foo"', 'conv{b}_{i}']);
  });

  it('rejects a tap that is not in the architecture (relu5_4 on vgg11, whose block 5 has 2 convs)', () => {
    expectError(small, construct({ inChannels: 3, arch: 'vgg11', layers: ['relu5_4'] }), 'ERR_OPTIONS', ['"layers"', 'relu5_4', 'vgg11']);
  });

  it('rejects a pool past the end of a custom arch', () => {
    expectError(small, construct({ inChannels: 3, arch: [8, 'M', 16], layers: ['pool2'] }), 'ERR_OPTIONS', ['"layers"', 'pool2', 'custom arch']);
  });
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

// ------------------------------------------------------------------ disposed objects

describe('disposed objects', () => {
  it('rejects a disposed Tensor as pred (ERR_DISPOSED)', () => {
    const pred = Tensor.from(small.pred.data, SHAPE);
    pred.dispose();
    expectError(small, () => small.loss.loss(pred, small.target), 'ERR_DISPOSED', ['Tensor', 'disposed']);
    expectError(small, () => small.loss.lossAndGrad(pred, small.target), 'ERR_DISPOSED');
    expectError(small, () => small.loss.features(pred), 'ERR_DISPOSED');
  });

  it('rejects a disposed Tensor as target (ERR_DISPOSED)', () => {
    const target = Tensor.from(small.target.data, SHAPE);
    target.dispose();
    expectError(small, () => small.loss.lossAndGrad(small.pred, target), 'ERR_DISPOSED', ['Tensor', 'disposed']);
    expectError(small, () => small.loss.prepareTarget(target), 'ERR_DISPOSED');
  });

  it('rejects every use of a disposed Tensor itself', () => {
    const t = Tensor.from(small.pred.data, SHAPE);
    t.dispose();
    expectError(small, () => t.toArray(), 'ERR_DISPOSED');
    expectError(small, () => t.shape, 'ERR_DISPOSED');
    expectError(small, () => t.dtype, 'ERR_DISPOSED');
    expectError(small, () => t.device, 'ERR_DISPOSED');
  });

  it('rejects a disposed prepared target (ERR_DISPOSED)', () => {
    const prepared = small.loss.prepareTarget(small.target);
    prepared.dispose();
    expect(prepared.disposed).toBe(true);
    expectError(small, () => small.loss.loss(small.pred, prepared), 'ERR_DISPOSED', ['prepared target', 'disposed']);
    expectError(small, () => small.loss.lossAndGrad(small.pred, prepared), 'ERR_DISPOSED');
  });

  it('rejects every method of a disposed PerceptualLoss (ERR_DISPOSED), and dispose() twice is safe', async () => {
    const loss = new PerceptualLoss(SMALL);
    const { pred, target } = small;
    loss.dispose();
    loss.dispose();
    const labels = { data: new Int32Array(2 * 16 * 16), shape: [2, 16, 16] };
    expectError(small, () => loss.loss(pred, target), 'ERR_DISPOSED', ['PerceptualLoss', 'disposed']);
    expectError(small, () => loss.lossAndGrad(pred, target), 'ERR_DISPOSED');
    expectError(small, () => loss.features(pred), 'ERR_DISPOSED');
    expectError(small, () => loss.prepareTarget(target), 'ERR_DISPOSED');
    expectError(small, () => loss.lossAndGradSegmentation(pred, labels), 'ERR_DISPOSED');
    expectError(small, () => loss.stateDict(), 'ERR_DISPOSED');
    expectError(small, () => loss.save(path.join(dir, 'disposed.safetensors')), 'ERR_DISPOSED');
    expect(fs.existsSync(path.join(dir, 'disposed.safetensors'))).toBe(false);
    expectError(small, () => loss.reseed(1), 'ERR_DISPOSED');
    await expectRejection(small, () => loss.lossAsync(pred, target), 'ERR_DISPOSED');
    await expectRejection(small, () => loss.lossAndGradAsync(pred, target), 'ERR_DISPOSED');
    await expectRejection(small, () => loss.featuresAsync(pred), 'ERR_DISPOSED');
    await expectRejection(small, () => loss.lossAndGradSegmentationAsync(pred, labels), 'ERR_DISPOSED');
  });

  it('rejects a prepared target once its PerceptualLoss is disposed', () => {
    const loss = new PerceptualLoss(SMALL);
    const prepared = loss.prepareTarget(small.target);
    loss.dispose();
    expectError(small, () => loss.loss(small.pred, prepared), 'ERR_DISPOSED');
  });
});

// ------------------------------------------------------------------ devices and dtypes

describe('devices and dtypes', () => {
  it.each(['tpu', 'cuda:x', 'gpu', 'CUDA', 'cuda:-1', 'cpu:0'])('rejects the unknown device %j (ERR_OPTIONS)', (device) => {
    expectError(small, construct({ inChannels: 3, device }), 'ERR_OPTIONS', ['"device"', JSON.stringify(device), "'cuda:N'"]);
  });

  it('rejects an unknown device in Tensor.from (ERR_OPTIONS)', () => {
    expectError(small, () => Tensor.from(new Float32Array(4), [4], { device: 'tpu' as never }), 'ERR_OPTIONS', ['"device"', '"tpu"']);
  });

  describe.skipIf(runtime().devices.some((d) => d.startsWith('cuda')))('where there is no CUDA device', () => {
    it.each(['cuda', 'cuda:0', 'cuda:1'])('rejects device %j (ERR_DEVICE)', (device) => {
      expectError(small, construct({ inChannels: 3, device }), 'ERR_DEVICE', [JSON.stringify(device), 'CUDA', "'cpu'"]);
    });

    it("rejects Tensor.from(..., { device: 'cuda' }) (ERR_DEVICE)", () => {
      expectError(small, () => Tensor.from(new Float32Array(4), [4], { device: 'cuda' }), 'ERR_DEVICE', ['"cuda"', 'CUDA']);
    });

    it('rejects dtype float16 on the CPU (ERR_DTYPE)', () => {
      expectError(small, construct({ inChannels: 3, dtype: 'float16' }), 'ERR_DTYPE', ['"float16"', 'CUDA', "'float32'", "'bfloat16'"]);
      expectError(small, construct({ inChannels: 3, dtype: 'float16', device: 'cpu' }), 'ERR_DTYPE', ['"float16"']);
    });

    it.skipIf(runtime().cpu.bfloat16)('rejects dtype bfloat16 on a CPU without AVX512-BF16 or AMX-BF16 (ERR_DTYPE naming what is missing)', () => {
      expectError(small, construct({ inChannels: 3, dtype: 'bfloat16' }), 'ERR_DTYPE', ['"bfloat16"', runtime().cpu.bfloat16Missing, "'float32'"]);
    });

    it.skipIf(!runtime().cpu.bfloat16)('accepts dtype bfloat16 on a CPU with AVX512-BF16 or AMX-BF16', () => {
      const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', dtype: 'bfloat16' });
      expect(loss.options.dtype).toBe('bfloat16');
      expect(loss.options.device).toBe('cpu');
      loss.dispose();
    });
  });

  // The same refusals where CUDA devices exist: an index past the last device, half precision on the CPU.
  const cudaDevices = runtime().devices.filter((d) => d.startsWith('cuda')).length;
  describe.runIf(cudaDevices > 0)('where there are CUDA devices', () => {
    it('rejects the device index past the last one (ERR_DEVICE)', () => {
      const device = `cuda:${cudaDevices}`;
      expectError(small, construct({ inChannels: 3, device }), 'ERR_DEVICE', [JSON.stringify(device), 'out of range', `cuda:${cudaDevices - 1}`]);
    });

    it.each(['float16', 'bfloat16'])("rejects dtype %s with device: 'cpu' (ERR_DTYPE)", (dtype) => {
      expectError(small, construct({ inChannels: 3, dtype, device: 'cpu' }), 'ERR_DTYPE', [JSON.stringify(dtype)]);
    });
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

// ------------------------------------------------------------------ files

describe('safetensors files', () => {
  /** A small valid file: [8, 'M', 16] with 3 input channels. */
  let good: string;
  let goodBytes: Buffer;
  beforeAll(() => {
    good = path.join(dir, 'good.safetensors');
    small.loss.save(good);
    goodBytes = fs.readFileSync(good);
    // The file is valid: it loads.
    PerceptualLoss.load(good).dispose();
  });

  const load = (file: string, options?: Partial<PerceptualLossOptions>) => () => PerceptualLoss.load(file, options);

  it('rejects a missing file (ERR_FILE), naming it', () => {
    const missing = path.join(dir, 'nope.safetensors');
    expectError(small, load(missing), 'ERR_FILE', [missing, 'ENOENT']);
  });

  it('rejects a directory (ERR_FILE)', () => {
    expectError(small, load(dir), 'ERR_FILE', [dir]);
  });

  it('rejects a file truncated inside its data (ERR_FILE)', () => {
    const file = path.join(dir, 'truncated.safetensors');
    fs.writeFileSync(file, goodBytes.subarray(0, goodBytes.length - 100));
    expectError(small, load(file), 'ERR_FILE', [file, 'not a valid safetensors file']);
  });

  it('rejects a file truncated inside its header (ERR_FILE)', () => {
    const file = path.join(dir, 'truncated-header.safetensors');
    fs.writeFileSync(file, goodBytes.subarray(0, 40));
    expectError(small, load(file), 'ERR_FILE', [file]);
  });

  it('rejects a file shorter than the 8-byte header length (ERR_FILE)', () => {
    const file = path.join(dir, 'tiny.safetensors');
    fs.writeFileSync(file, goodBytes.subarray(0, 5));
    expectError(small, load(file), 'ERR_FILE', ['5 bytes']);
  });

  it('rejects an empty file (ERR_FILE)', () => {
    const file = path.join(dir, 'empty.safetensors');
    fs.writeFileSync(file, Buffer.alloc(0));
    expectError(small, load(file), 'ERR_FILE', ['0 bytes']);
  });

  it('rejects garbage bytes (ERR_FILE)', () => {
    const file = path.join(dir, 'garbage.safetensors');
    fs.writeFileSync(file, Uint8Array.from(randint(4096, 0, 256, 99)));
    expectError(small, load(file), 'ERR_FILE', [file]);
  });

  it('rejects a header that is not JSON (ERR_FILE)', () => {
    const file = path.join(dir, 'not-json.safetensors');
    const body = Buffer.from('{"features.0.weight": nope}', 'utf8');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(body.length));
    fs.writeFileSync(file, Buffer.concat([length, body]));
    expectError(small, load(file), 'ERR_FILE', ['not JSON']);
  });

  it('rejects a header length that exceeds the file (ERR_FILE)', () => {
    const file = path.join(dir, 'long-header.safetensors');
    const bytes = Buffer.from(goodBytes);
    bytes.writeBigUInt64LE(BigInt(bytes.length), 0);
    fs.writeFileSync(file, bytes);
    expectError(small, load(file), 'ERR_FILE', ['header length', String(bytes.length)]);
    bytes.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, 0);
    fs.writeFileSync(file, bytes);
    expectError(small, load(file), 'ERR_FILE', ['header length']);
  });

  it('rejects tensors whose data offsets overlap (ERR_FILE)', () => {
    const file = path.join(dir, 'overlap.safetensors');
    const state = small.loss.stateDict();
    const { header, data } = packFloat32(state);
    // features.0.bias (8 floats, 32 bytes) claims the last 32 bytes of features.0.weight.
    const weightEnd = header['features.0.weight'].data_offsets[1];
    header['features.0.bias'].data_offsets = [weightEnd - 32, weightEnd];
    writeRawSafetensors(file, header, data);
    expectError(small, load(file), 'ERR_FILE', ['overlaps']);
  });

  it('rejects data offsets past the end of the data (ERR_FILE)', () => {
    const file = path.join(dir, 'past-end.safetensors');
    const { header, data } = packFloat32(small.loss.stateDict());
    const [begin, end] = header['features.3.bias'].data_offsets;
    header['features.3.bias'].data_offsets = [begin + 4, end + 4];
    writeRawSafetensors(file, header, data);
    expectError(small, load(file), 'ERR_FILE', ['features.3.bias', 'offsets']);
  });

  it('rejects a tensor whose shape does not fill its bytes (ERR_FILE)', () => {
    const file = path.join(dir, 'bad-shape.safetensors');
    const { header, data } = packFloat32(small.loss.stateDict());
    header['features.0.bias'].shape = [9];
    writeRawSafetensors(file, header, data);
    expectError(small, load(file), 'ERR_FILE', ['features.0.bias', '[9]']);
  });

  it('rejects a dtype other than F32 (ERR_FILE)', () => {
    const file = path.join(dir, 'f16.safetensors');
    const { header, data } = packFloat32(small.loss.stateDict());
    header['features.0.bias'].dtype = 'F16';
    writeRawSafetensors(file, header, data);
    expectError(small, load(file), 'ERR_FILE', ['features.0.bias', 'F16']);
  });

  it('rejects names that do not match the architecture (a vgg11 file loaded as vgg13)', () => {
    const file = path.join(dir, 'vgg11.safetensors');
    const vgg11 = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', layers: ['relu2_1'] });
    vgg11.save(file);
    // vgg11 keeps features.0 and features.3; vgg13 up to relu2_1 needs features.0, .2 and .5.
    expectError(small, load(file, { arch: 'vgg13' }), 'ERR_FILE', ['does not match the architecture', 'features.2.weight', 'features.3.weight']);
  });

  it('rejects weights of the wrong shape (a 3-channel file loaded with inChannels 4)', () => {
    expectError(small, load(good, { inChannels: 4 }), 'ERR_FILE', ['features.0.weight', '[8, 3, 3, 3]', '[8, 4, 3, 3]']);
  });

  it('rejects stored options that are not JSON (ERR_FILE)', () => {
    const file = path.join(dir, 'bad-options.safetensors');
    const { header, data } = packFloat32(small.loss.stateDict());
    writeRawSafetensors(file, { __metadata__: { 'generic-perceptual-loss': '{inChannels: 3' }, ...header }, data);
    expectError(small, load(file), 'ERR_FILE', ['options']);
  });

  it('rejects a path it cannot write to in save() (ERR_FILE)', () => {
    const file = path.join(dir, 'no', 'such', 'folder', 'x.safetensors');
    expectError(small, () => small.loss.save(file), 'ERR_FILE', [file]);
  });
});

// ------------------------------------------------------------------ async methods

describe('async methods reject, never throw', () => {
  const wrongChannels = host([2, 4, 16, 16], 7);

  it('lossAsync rejects a shape mismatch (ERR_SHAPE)', async () => {
    await expectRejection(small, () => small.loss.lossAsync(small.pred, host([2, 3, 16, 20], 1)), 'ERR_SHAPE', ['[2, 3, 16, 20]']);
  });

  it('lossAsync rejects NaN found on the worker thread (ERR_NONFINITE)', async () => {
    const data = small.pred.data.slice();
    data[0] = NaN;
    await expectRejection(small, () => small.loss.lossAsync({ data, shape: SHAPE }, small.target), 'ERR_NONFINITE', ['pred']);
  });

  it('lossAndGradAsync rejects a disposed Tensor (ERR_DISPOSED)', async () => {
    const pred = Tensor.from(small.pred.data, SHAPE);
    pred.dispose();
    await expectRejection(small, () => small.loss.lossAndGradAsync(pred, small.target), 'ERR_DISPOSED');
  });

  it('lossAndGradAsync rejects an Int32Array pred (ERR_DTYPE)', async () => {
    const pred = { data: new Int32Array(1536), shape: SHAPE } as unknown as HostTensor;
    await expectRejection(small, () => small.loss.lossAndGradAsync(pred, small.target), 'ERR_DTYPE', ['Int32Array']);
  });

  it('featuresAsync rejects the wrong channel count (ERR_SHAPE)', async () => {
    await expectRejection(small, () => small.loss.featuresAsync(wrongChannels), 'ERR_SHAPE', ['4 channels']);
  });

  it('featuresAsync rejects Inf (ERR_NONFINITE)', async () => {
    const data = small.pred.data.slice();
    data[99] = Infinity;
    await expectRejection(small, () => small.loss.featuresAsync({ data, shape: SHAPE }), 'ERR_NONFINITE');
  });

  it('lossAndGradSegmentationAsync rejects labels of the wrong shape (ERR_SHAPE)', async () => {
    const labels = { data: new Int32Array(16 * 16), shape: [1, 16, 16] };
    await expectRejection(small, () => small.loss.lossAndGradSegmentationAsync(small.pred, labels), 'ERR_SHAPE', ['labels']);
  });

  it('lossAndGradSegmentationAsync rejects an out-of-range label found on the worker thread (ERR_SHAPE)', async () => {
    const data = randint(2 * 16 * 16, 0, 3, 8);
    data[10] = 7;
    await expectRejection(small, () => small.loss.lossAndGradSegmentationAsync(small.pred, { data, shape: [2, 16, 16] }), 'ERR_SHAPE', [
      '[0, 3)',
      'found 7',
    ]);
  });

  it('rejects bad call options', async () => {
    await expectRejection(small, () => small.loss.lossAsync(small.pred, small.target, { layout: 'chw' as never }), 'ERR_OPTIONS', ['"chw"']);
  });
});
