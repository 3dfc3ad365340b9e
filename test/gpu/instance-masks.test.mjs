// Instance masks (instanceMaskLoss, the paper's third task) against PyTorch autograd on the same
// device: pred = sigmoid(maskLogits), target = the binary masks, one 1-channel mask per instance;
// the loss and d loss / d maskLogits, without weights and with them under every reduction ('mean':
// sum_i w_i t_i / sum_i w_i, 'sum': sum_i w_i s_i, 'none': the values w_i t_i), for host arrays,
// Tensors on the device, uint8 masks off the JavaScript thread, and volumes. float32 with TF32
// off, within 1e-5 (the 2-D bound). Figures go to $OUT/parity.json.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CUDA, DEVICE, perceptual, numel, rand, recordParity, relErr, resolveOptions, torchReference } from './common.mjs';

const { instanceMaskLoss, PerceptualLoss, Tensor } = perceptual;
const SHAPE = CUDA ? [6, 1, 64, 64] : [3, 1, 16, 16];
const WEIGHTS = CUDA ? [1, 0.5, 2, 0, 1.5, 1] : [1, 0, 2.5];
const SHAPE_3D = CUDA ? [4, 1, 16, 24, 20] : [2, 1, 8, 8, 8];
const WEIGHTS_3D = CUDA ? [0.5, 1, 0, 2] : [0.5, 2];
const ARCH_3D = [8, 'M', 16];
const BASE = { device: DEVICE, allowTF32: false };

/** Logits in [-3, 3): confident and unsure pixels alike. */
function logitsOf(shape, seed) {
  return { data: rand(numel(shape), seed).map((v) => 3 * v), shape };
}

/** One filled ball (a disc in 2-D) per instance, of its own centre and radius: binary masks, as `type`. */
function ballMasks(shape, type = Float32Array) {
  const [m, , ...spatial] = shape;
  const size = numel(spatial);
  const data = new type(m * size);
  for (let i = 0; i < m; i++) {
    const centre = spatial.map((s, a) => s * (0.3 + 0.4 * (((i + 1) * (a + 2) * 0.37) % 1)));
    const radius = Math.min(...spatial) * (0.2 + 0.05 * (i % 4));
    for (let j = 0; j < size; j++) {
      let rest = j;
      let d2 = 0;
      for (let a = spatial.length - 1; a >= 0; a--) {
        const x = rest % spatial[a];
        rest = Math.floor(rest / spatial[a]);
        d2 += (x + 0.5 - centre[a]) ** 2;
      }
      data[i * size + j] = d2 <= radius * radius ? 1 : 0;
    }
  }
  return { data, shape };
}

const logits = logitsOf(SHAPE, 41);
const masks = ballMasks(SHAPE);
const logits3d = logitsOf(SHAPE_3D, 43);
const masks3d = ballMasks(SHAPE_3D);

/** The package's loss (a number, or the M values of 'none') and gradient (a host array) for `options`. */
async function packageResult(options, { weights, tensors = false, async = false, l = logits, m = masks } = {}) {
  const loss = instanceMaskLoss(options);
  const call = weights ? { weights } : undefined;
  const resident = tensors ? [Tensor.from(l.data, l.shape, { device: DEVICE }), Tensor.from(m.data, m.shape, { device: DEVICE })] : null;
  const [a, b] = resident ?? [l, m];
  const out = async ? await loss.lossAndGradAsync(a, b, call) : loss.lossAndGrad(a, b, call);
  let grad = out.grad;
  if (tensors) {
    assert.equal(grad.device, DEVICE);
    grad = out.grad.toArray();
    out.grad.dispose();
    for (const t of resident) t.dispose();
  }
  const stateDict = loss.perceptual.stateDict();
  const native = resolveOptions({ ...options, inChannels: 1 }, CUDA ? 1 : 0).native;
  loss.dispose();
  return { loss: out.loss, grad, stateDict, native, shape: l.shape };
}

function compare(name, ours, ref, bound) {
  const values = ours.loss instanceof Float32Array;
  // 'none': the M values w_i t_i, and the gradient of their sum.
  const lossErr = values ? relErr(ours.loss, Float32Array.from(ref.values)) : relErr(ours.loss, ref.loss);
  const gradErr = relErr(ours.grad, ref.grad);
  const loss = values ? ours.loss.reduce((a, b) => a + b, 0) : ours.loss;
  recordParity([{ name: `instance masks: ${name}`, device: DEVICE, shape: ours.shape, loss, reference: ref.loss, lossRelErr: lossErr, gradRelErr: gradErr, bound }]);
  if (values) assert.equal(ours.loss.length, ref.values.length, `${name}: ${ours.loss.length} values, PyTorch ${ref.values.length}`);
  assert.ok(lossErr <= bound, `${name}: loss ${values ? `[${ours.loss.join(', ')}]` : ours.loss} vs PyTorch ${values ? `[${ref.values.join(', ')}]` : ref.loss}: relative error ${lossErr} > ${bound}`);
  assert.ok(gradErr <= bound, `${name}: gradient (d loss / d maskLogits) relative error ${gradErr} > ${bound}`);
}

const CASES = [
  { name: 'no weights, mean', options: BASE, how: {} },
  { name: 'weights, mean', options: BASE, how: { weights: WEIGHTS } },
  { name: 'weights, sum', options: { ...BASE, reduction: 'sum' }, how: { weights: WEIGHTS } },
  { name: "weights, 'none' (the M values w_i t_i)", options: { ...BASE, reduction: 'none' }, how: { weights: WEIGHTS } },
  { name: 'weights, l1 + style', options: { ...BASE, criterion: 'l1', styleWeight: 0.5 }, how: { weights: WEIGHTS } },
  { name: 'weights, smooth_l1, sum', options: { ...BASE, criterion: 'smooth_l1', reduction: 'sum' }, how: { weights: WEIGHTS } },
  { name: 'weights, Tensors on the device', options: BASE, how: { weights: WEIGHTS, tensors: true } },
  { name: 'weights, uint8 masks, lossAndGradAsync', options: BASE, how: { weights: WEIGHTS, async: true, m: ballMasks(SHAPE, Uint8Array) } },
  {
    name: `volumes ${SHAPE_3D.join('x')}, ${JSON.stringify(ARCH_3D)}, weights, mean`,
    options: { ...BASE, spatialDims: 3, arch: ARCH_3D },
    how: { weights: WEIGHTS_3D, l: logits3d, m: masks3d },
  },
];

const ours = [];
for (const c of CASES) ours.push(await packageResult(c.options, c.how));
// One PyTorch run for every case: importing torch takes seconds.
const refs = torchReference(CASES.map((c, i) => ({
  stateDict: ours[i].stateDict,
  options: ours[i].native,
  pred: c.how.l ?? logits,
  target: c.how.m ?? masks,
  tf32: false,
  instance: { weights: c.how.weights ?? null },
})));

describe(`instance masks: parity with PyTorch autograd through sigmoid on ${DEVICE} (${SHAPE.join('x')}, vgg19)`, () => {
  for (const [i, c] of CASES.entries()) {
    it(`${c.name}: within 1e-5`, () => compare(c.name, ours[i], refs[i], 1e-5));
  }

  it("without weights, the loss is PerceptualLoss's on sigmoid(maskLogits): within 1e-5", () => {
    const plain = new PerceptualLoss({ ...BASE, inChannels: 1 });
    const value = plain.loss({ data: logits.data.map((v) => 1 / (1 + Math.exp(-v))), shape: SHAPE }, masks);
    plain.dispose();
    const none = ours[CASES.findIndex((c) => c.name === 'no weights, mean')].loss;
    assert.ok(relErr(none, value) <= 1e-5, `instanceMaskLoss ${none} vs PerceptualLoss on sigmoid(maskLogits) ${value}`);
  });
});
