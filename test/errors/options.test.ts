// Every bad option gets a PerceptualLossError with the right code and a message that says what was
// wrong; afterwards the loss object that threw still gives the answer it gave before (docs/api.md,
// "Errors"): options of the wrong type or out of range, taps no architecture has, devices and dtypes.
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, runtime, type PerceptualLossOptions } from '../../lib/index';
import { resolveDevice } from '../../lib/options';
import { construct, expectError, smallSubject, type Subject } from '../helpers/errors';

let small: Subject;

beforeAll(() => {
  small = smallSubject();
});

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

  // The fix depends on why there is no CUDA device: a libtorch built without CUDA needs another
  // libtorch; a CUDA build that sees no GPU needs its driver or CUDA_VISIBLE_DEVICES looked at.
  describe('a CUDA device that cannot be had: the message says why, and the fix', () => {
    it('with a CPU-only libtorch: says so, and how to get a CUDA one', () => {
      expect(() => resolveDevice('cuda', 0, false)).toThrow(
        "Device \"cuda\" was requested, but the loaded libtorch is a CPU-only build (see runtime().libtorch, or npx generic-perceptual-loss doctor). For a GPU, install a CUDA build of PyTorch, for example pip install torch --index-url https://download.pytorch.org/whl/cu130, so that python3's torch is found, or point LIBTORCH at a CUDA libtorch folder; or use device: 'cpu' or 'auto'.",
      );
    });

    it('with a CUDA libtorch and no visible GPU: says so, and names the driver and CUDA_VISIBLE_DEVICES', () => {
      expect(() => resolveDevice('cuda:1', 0, true)).toThrow(
        "Device \"cuda:1\" was requested, but the loaded libtorch is a CUDA build but sees no CUDA device: check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES (an empty value or a wrong index hides every GPU); or use device: 'cpu' or 'auto'.",
      );
    });

    it.runIf(!runtime().libtorch.cuda)('the loaded libtorch here (a CPU-only build): new PerceptualLoss and Tensor.from say it is one (ERR_DEVICE)', () => {
      expectError(small, construct({ inChannels: 3, device: 'cuda' }), 'ERR_DEVICE', ['CPU-only build', 'pip install torch --index-url', 'LIBTORCH']);
      expectError(small, () => Tensor.from(new Float32Array(4), [4], { device: 'cuda:0' }), 'ERR_DEVICE', ['CPU-only build']);
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
