// Parity with PyTorch on the same device for volumes (spatialDims 3: Conv3d, MaxPool3d/AvgPool3d,
// inputs [N, C, D, H, W]): the default 3-D arch on one channel; a small custom arch on two channels
// over a box of three different sides, with average pooling, l1 and a style term; layout 'ndhwc';
// Tensor inputs and every performance switch; float16 and bfloat16 where the 2-D parity runs them.
// The bounds are those of 2-D (parity.test.mjs): float32 with TF32 off within 1e-5, the defaults
// within 1e-3, the reduced precisions within 2e-2. Figures go to $OUT/parity.json.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CUDA, DEVICE, perceptual, host, recordParity, relErr, resolveOptions, toChannelsLast, torchReference } from './common.mjs';

const { PerceptualLoss, Tensor } = perceptual;
// The default 3-D arch pools four times: every axis at least 16 (40 leaves 2 at the deepest tap).
const SHAPE = CUDA ? [2, 1, 32, 48, 40] : [1, 1, 16, 16, 16];
// A small custom arch (two pools) on two channels.
const SMALL_ARCH = [16, 'M', 32, 'M', 64];
const SMALL_SHAPE = CUDA ? [2, 2, 24, 40, 32] : [1, 2, 8, 12, 10];
const BASE = { inChannels: 1, spatialDims: 3, device: DEVICE, allowTF32: false };
const SMALL = { inChannels: 2, spatialDims: 3, device: DEVICE, allowTF32: false, arch: SMALL_ARCH, pool: 'avg', criterion: 'l1', styleWeight: 0.5 };

const pred = host(SHAPE, 31);
const target = host(SHAPE, 32);
const pred2 = host(SMALL_SHAPE, 33);
const target2 = host(SMALL_SHAPE, 34);

/** The package's loss and gradient (host arrays) for `options`, after `repeat` steps (graphs replay from the 2nd). */
function packageResult(options, { repeat = 1, tensors = false, p = pred, t = target } = {}) {
  const loss = new PerceptualLoss(options);
  let r;
  for (let i = 0; i < repeat; i++) {
    if (tensors) {
      const tp = Tensor.from(p.data, p.shape, { device: DEVICE });
      const tt = Tensor.from(t.data, t.shape, { device: DEVICE });
      const out = loss.lossAndGrad(tp, tt);
      assert.equal(out.grad.device, DEVICE);
      r = { loss: out.loss, grad: out.grad.toArray() };
      out.grad.dispose();
      tp.dispose();
      tt.dispose();
    } else {
      r = loss.lossAndGrad(p, t);
    }
  }
  const stateDict = loss.stateDict();
  const resolved = loss.options;
  const native = resolveOptions(options, CUDA ? 1 : 0).native;
  loss.dispose();
  return { ...r, stateDict, native, resolved, shape: p.shape };
}

function compare(name, ours, ref, bound) {
  const lossErr = relErr(ours.loss, ref.loss);
  const gradErr = relErr(ours.grad, ref.grad);
  assert.equal(ours.grad.length, ref.grad.length, `${name}: gradient of ${ours.grad.length} values, PyTorch's of ${ref.grad.length}`);
  recordParity([{ name: `3-D: ${name}`, device: DEVICE, shape: ours.shape, loss: ours.loss, reference: ref.loss, lossRelErr: lossErr, gradRelErr: gradErr, bound }]);
  assert.ok(lossErr <= bound, `${name}: loss ${ours.loss} vs PyTorch ${ref.loss}: relative error ${lossErr} > ${bound}`);
  assert.ok(gradErr <= bound, `${name}: gradient relative error ${gradErr} > ${bound}`);
}

// One PyTorch run for every case below: importing torch takes seconds.
const fp32 = packageResult(BASE);
const defaults = packageResult({ inChannels: 1, spatialDims: 3, device: DEVICE });
const small = packageResult(SMALL, { p: pred2, t: target2 });
const pred2Last = toChannelsLast(pred2);
const target2Last = toChannelsLast(target2);
const smallLast = packageResult({ ...SMALL, layout: 'ndhwc', channelsLast: true }, { p: pred2Last, t: target2Last });
const [refFp32, refTf32, refSmall, refSmallLast] = torchReference([
  { stateDict: fp32.stateDict, options: fp32.native, spatialDims: 3, pred, target, tf32: false },
  { stateDict: defaults.stateDict, options: defaults.native, spatialDims: 3, pred, target, tf32: true },
  { stateDict: small.stateDict, options: small.native, spatialDims: 3, pred: pred2, target: target2, tf32: false },
  { stateDict: smallLast.stateDict, options: smallLast.native, spatialDims: 3, pred: pred2Last, target: target2Last, tf32: false, nhwc: true },
]);

describe(`volumes: parity with PyTorch on ${DEVICE} (${SHAPE.join('x')}, the default 3-D arch; ${SMALL_SHAPE.join('x')}, ${JSON.stringify(SMALL_ARCH)})`, () => {
  it('the default 3-D network: 3x3x3 conv weights, drawn on the CPU and moved, the same as a CPU loss draws', () => {
    assert.equal(fp32.resolved.spatialDims, 3);
    assert.equal(fp32.resolved.layout, 'ncdhw');
    const cpu = new PerceptualLoss({ inChannels: 1, spatialDims: 3, device: 'cpu' });
    const cpuWeights = cpu.stateDict();
    cpu.dispose();
    const entries = Object.entries(fp32.stateDict);
    assert.ok(entries.length > 0);
    for (const [name, t] of entries) {
      if (name.endsWith('.weight')) assert.deepEqual(t.shape.slice(2), [3, 3, 3], `${name}: shape ${t.shape}`);
      assert.deepEqual(t.data, cpuWeights[name].data, name);
    }
  });

  it('default 3-D arch, 1 channel, float32 with TF32 off: within 1e-5', () => compare('default arch, float32, TF32 off', fp32, refFp32, 1e-5));

  it('the defaults (TF32 allowed, as PyTorch allows it for cuDNN convs): within 1e-3', () => compare('default arch, defaults', defaults, refTf32, 1e-3));

  it('custom arch, 2 channels, avg pool, l1 + style: within 1e-5', () => compare('custom arch, 2 channels, avg, l1 + style, float32, TF32 off', small, refSmall, 1e-5));

  it("layout 'ndhwc' with channelsLast: within 1e-5", () => compare("custom arch, 2 channels, 'ndhwc' + channelsLast", smallLast, refSmallLast, 1e-5));

  const switches = [
    ['Tensor inputs on the device', {}, { tensors: true }],
    ['every switch together, replayed', { channelsLast: true, cudnnBenchmark: true, targetStream: true, cudaGraphs: true }, { repeat: 3 }],
    ['Tensor inputs, cudaGraphs replayed', { cudaGraphs: true }, { tensors: true, repeat: 3 }],
  ];
  for (const [name, extra, how] of switches) {
    it(`${name}: float32 with TF32 off, within 1e-5`, () => compare(`default arch, float32, TF32 off, ${name}`, packageResult({ ...BASE, ...extra }, how), refFp32, 1e-5));
  }

  for (const dtype of ['bfloat16', 'float16']) {
    it(`${dtype} compute, float32 loss: within 2e-2 of float32`, { skip: !CUDA && `${dtype} is for CUDA devices here` }, () => {
      compare(`default arch, ${dtype}`, packageResult({ ...BASE, dtype }), refFp32, 2e-2);
      compare(`default arch, ${dtype}, channelsLast + graphs`, packageResult({ ...BASE, dtype, channelsLast: true, cudaGraphs: true }, { repeat: 3 }), refFp32, 2e-2);
    });
  }
});
