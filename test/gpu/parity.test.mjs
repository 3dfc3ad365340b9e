// Parity with PyTorch on the same device, for the defaults, float32 with TF32 off, the reduced
// precisions and every performance switch. The bounds are the issue's: float32 with TF32 off
// within 1e-5, the defaults within 1e-3, bfloat16 and float16 within 2e-2 (relative, on the loss
// and on the gradient's norm of the difference). Figures go to $OUT/parity.json.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CUDA, DEVICE, perceptual, host, recordParity, relErr, resolveOptions, torchReference } from './common.mjs';

const { PerceptualLoss, Tensor } = perceptual;
const SHAPE = CUDA ? [4, 3, 64, 64] : [1, 3, 16, 16];
const pred = host(SHAPE, 1);
const target = host(SHAPE, 2);
const BASE = { inChannels: 3, device: DEVICE, allowTF32: false };

/** The package's loss and gradient (host arrays) for `options`, after `repeat` steps (graphs replay from the 2nd). */
function packageResult(options, { repeat = 1, tensors = false, p = pred, t = target } = {}) {
  const loss = new PerceptualLoss(options);
  let r;
  for (let i = 0; i < repeat; i++) {
    if (tensors) {
      const tp = Tensor.from(p.data, p.shape, { device: DEVICE });
      const tt = Tensor.from(t.data, t.shape, { device: DEVICE });
      const out = loss.lossAndGrad(tp, tt);
      r = { loss: out.loss, grad: out.grad.toArray() };
      out.grad.dispose();
      tp.dispose();
      tt.dispose();
    } else {
      r = loss.lossAndGrad(p, t);
    }
  }
  const stateDict = loss.stateDict();
  const native = resolveOptions(options, CUDA ? 1 : 0).native;
  loss.dispose();
  return { ...r, stateDict, native };
}

function compare(name, ours, ref, bound) {
  const lossErr = relErr(ours.loss, ref.loss);
  const gradErr = relErr(ours.grad, ref.grad);
  recordParity([{ name, device: DEVICE, shape: SHAPE, loss: ours.loss, reference: ref.loss, lossRelErr: lossErr, gradRelErr: gradErr, bound }]);
  assert.ok(lossErr <= bound, `${name}: loss ${ours.loss} vs PyTorch ${ref.loss}: relative error ${lossErr} > ${bound}`);
  assert.ok(gradErr <= bound, `${name}: gradient relative error ${gradErr} > ${bound}`);
}

// One PyTorch run for every case below: importing torch takes seconds.
const fp32 = packageResult(BASE);
const defaults = packageResult({ inChannels: 3, device: DEVICE });
const [refFp32, refTf32] = torchReference([
  { stateDict: fp32.stateDict, options: fp32.native, pred, target, tf32: false },
  { stateDict: defaults.stateDict, options: defaults.native, pred, target, tf32: true },
]);

describe(`parity with PyTorch on ${DEVICE} (${SHAPE.join('x')}, vgg19, five taps)`, () => {
  it('float32 with TF32 off: within 1e-5', () => compare('float32, TF32 off', fp32, refFp32, 1e-5));

  it('the defaults (TF32 allowed, as PyTorch allows it for cuDNN convs): within 1e-3', () => compare('defaults', defaults, refTf32, 1e-3));

  it('the same weights on every device: drawn on the CPU, then moved', () => {
    const cpu = new PerceptualLoss({ inChannels: 3, device: 'cpu' }).stateDict();
    for (const [name, t] of Object.entries(fp32.stateDict)) assert.deepEqual(t.data, cpu[name].data, name);
  });

  const switches = [
    ['channelsLast', { channelsLast: true }, {}],
    ['cudnnBenchmark', { cudnnBenchmark: true }, {}],
    ['targetStream', { targetStream: true }, {}],
    ['cudaGraphs, replayed', { cudaGraphs: true }, { repeat: 3 }],
    ['every switch together, replayed', { channelsLast: true, cudnnBenchmark: true, targetStream: true, cudaGraphs: true }, { repeat: 3 }],
    ['Tensor inputs on the device', {}, { tensors: true }],
    ['Tensor inputs, cudaGraphs replayed', { cudaGraphs: true }, { tensors: true, repeat: 3 }],
  ];
  for (const [name, extra, how] of switches) {
    it(`${name}: float32 with TF32 off, within 1e-5`, () => compare(`float32, TF32 off, ${name}`, packageResult({ ...BASE, ...extra }, how), refFp32, 1e-5));
  }

  it('layout nhwc: within 1e-5', () => {
    const [n, c, h, w] = SHAPE;
    const toNhwc = (x) => {
      const out = new Float32Array(x.data.length);
      for (let i = 0; i < n; i++) for (let y = 0; y < h; y++) for (let z = 0; z < w; z++) for (let k = 0; k < c; k++) {
        out[((i * h + y) * w + z) * c + k] = x.data[((i * c + k) * h + y) * w + z];
      }
      return { data: out, shape: [n, h, w, c] };
    };
    const p = toNhwc(pred);
    const t = toNhwc(target);
    const ours = packageResult({ ...BASE, layout: 'nhwc', channelsLast: true }, { p, t });
    const [ref] = torchReference([{ stateDict: ours.stateDict, options: ours.native, pred: p, target: t, tf32: false, nhwc: true }]);
    compare('float32, TF32 off, nhwc + channelsLast', ours, ref, 1e-5);
  });

  it('l1 with a style term and graphs: within 1e-5', () => {
    const options = { ...BASE, criterion: 'l1', styleWeight: 0.5, cudaGraphs: true };
    const ours = packageResult(options, { repeat: 3 });
    const [ref] = torchReference([{ stateDict: ours.stateDict, options: ours.native, pred, target, tf32: false }]);
    compare('float32, TF32 off, l1 + style, graphs', ours, ref, 1e-5);
  });

  for (const dtype of ['bfloat16', 'float16']) {
    it(`${dtype} compute, float32 loss: within 2e-2 of float32`, { skip: !CUDA && `${dtype} is for CUDA devices here` }, () => {
      compare(`${dtype}`, packageResult({ ...BASE, dtype }), refFp32, 2e-2);
      compare(`${dtype}, channelsLast + graphs`, packageResult({ ...BASE, dtype, channelsLast: true, cudaGraphs: true }, { repeat: 3 }), refFp32, 2e-2);
    });
  }
});
