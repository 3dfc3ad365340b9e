// Devices, transfers and errors on the suite's device: every error is a PerceptualLossError
// (ERR_DEVICE, ERR_OUT_OF_MEMORY, ERR_NONFINITE) and the process and the loss keep working.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CUDA, DEVICE, codeOf, codeOfAsync, perceptual, host, native } from './common.mjs';

const { PerceptualLoss, Tensor, runtime } = perceptual;
const SMALL = { inChannels: 3, arch: [8, 'M', 16], device: DEVICE };
const shape = [2, 3, 16, 16];
const pred = host(shape, 3);
const target = host(shape, 4);

describe(`devices and transfers (${DEVICE})`, () => {
  it('runtime() lists the devices; auto picks the first CUDA device when there is one', () => {
    const info = runtime();
    assert.equal(info.devices[0], 'cpu');
    assert.equal(info.devices.includes('cuda:0'), CUDA);
    assert.equal(info.libtorch.cuda, CUDA);
    assert.equal(new PerceptualLoss({ inChannels: 3 }).options.device, CUDA ? 'cuda:0' : 'cpu');
    assert.equal(new PerceptualLoss({ inChannels: 3, device: CUDA ? 'cuda' : 'cpu' }).options.device, DEVICE);
  });

  it('Tensor.from uploads and toArray downloads, bit for bit, for every array type', () => {
    const arrays = [
      Float32Array.from({ length: 24 }, (_, i) => Math.sin(i) * 1e3),
      Float64Array.from({ length: 24 }, (_, i) => Math.cos(i) / 7),
      Int32Array.from({ length: 24 }, (_, i) => i * 77 - 900),
      Uint8Array.from({ length: 24 }, (_, i) => (i * 37) % 256),
    ];
    for (const data of arrays) {
      const t = Tensor.from(data, [2, 3, 4], { device: DEVICE });
      assert.equal(t.device, DEVICE);
      assert.deepEqual(t.shape, [2, 3, 4]);
      const back = t.toArray();
      t.dispose();
      assert.equal(back.constructor, data.constructor);
      assert.deepEqual(back, data);
    }
  });

  it('a large upload followed at once by a loss on another stream sees the data (the loss stream waits)', () => {
    const big = [8, 3, 128, 128];
    const p = host(big, 5);
    const t = host(big, 6);
    const loss = new PerceptualLoss({ ...SMALL, allowTF32: false });
    const fromHost = loss.lossAndGrad(p, t);
    for (let i = 0; i < 3; i++) {
      const tp = Tensor.from(p.data, big, { device: DEVICE });
      const tt = Tensor.from(t.data, big, { device: DEVICE });
      const r = loss.lossAndGrad(tp, tt);
      assert.equal(r.grad.device, DEVICE);
      assert.ok(Math.abs(r.loss - fromHost.loss) <= 1e-6 * Math.abs(fromHost.loss), `${r.loss} vs ${fromHost.loss}`);
      for (const x of [r.grad, tp, tt]) x.dispose();
    }
  });

  it('gradients of Tensor inputs stay on the device; of host inputs come back as Float32Array', () => {
    const loss = new PerceptualLoss(SMALL);
    const tp = Tensor.from(pred.data, shape, { device: DEVICE });
    const r = loss.lossAndGrad(tp, target);
    assert.equal(r.grad.device, DEVICE);
    assert.deepEqual(r.grad.shape, shape);
    r.grad.dispose();
    tp.dispose();
    assert.ok(loss.lossAndGrad(pred, target).grad instanceof Float32Array);
  });
});

describe(`errors (${DEVICE})`, () => {
  it('an out-of-range device index is ERR_DEVICE', () => {
    const count = runtime().devices.length - 1;
    assert.equal(codeOf(() => new PerceptualLoss({ ...SMALL, device: `cuda:${count}` })), 'ERR_DEVICE');
    assert.equal(codeOf(() => Tensor.from(new Float32Array(4), [4], { device: `cuda:${count + 3}` })), 'ERR_DEVICE');
    assert.equal(codeOf(() => native.NativeTensor.fromHost(new Float32Array(4), [4], `cuda:${count}`)), 'ERR_DEVICE');
  });

  it('a Tensor on another device than the loss is ERR_DEVICE, and the loss keeps working', { skip: !CUDA && 'needs a CUDA device' }, () => {
    const loss = new PerceptualLoss(SMALL);
    const before = loss.lossAndGrad(pred, target).loss;
    const onCpu = Tensor.from(pred.data, shape, { device: 'cpu' });
    assert.equal(codeOf(() => loss.lossAndGrad(onCpu, target)), 'ERR_DEVICE');
    const cpuLoss = new PerceptualLoss({ ...SMALL, device: 'cpu' });
    const onGpu = Tensor.from(pred.data, shape, { device: DEVICE });
    assert.equal(codeOf(() => cpuLoss.lossAndGrad(onGpu, target)), 'ERR_DEVICE');
    onCpu.dispose();
    onGpu.dispose();
    assert.equal(loss.lossAndGrad(pred, target).loss, before);
  });

  it('NaN in pred or target is ERR_NONFINITE naming it (checked on the device), sync and async; the loss keeps working', async () => {
    const loss = new PerceptualLoss(SMALL);
    const before = loss.lossAndGrad(pred, target).loss;
    const bad = { data: pred.data.slice(), shape };
    bad.data[17] = Number.NaN;
    for (const [p, t, name] of [[bad, target, 'pred'], [pred, bad, 'target']]) {
      assert.throws(() => loss.lossAndGrad(p, t), (e) => e.code === 'ERR_NONFINITE' && e.message.startsWith(name));
      assert.equal(await codeOfAsync(() => loss.lossAndGradAsync(p, t)), 'ERR_NONFINITE');
    }
    const graphs = new PerceptualLoss({ ...SMALL, cudaGraphs: true });
    for (let i = 0; i < 3; i++) graphs.lossAndGrad(pred, target);
    assert.equal(codeOf(() => graphs.lossAndGrad(bad, target)), 'ERR_NONFINITE', 'a replayed graph checks too');
    assert.equal(graphs.lossAndGrad(pred, target).loss, before);
    assert.equal(loss.lossAndGrad(pred, target).loss, before);
  });

  it('a CUDA out-of-memory error is ERR_OUT_OF_MEMORY; the cache is emptied and the process and the loss keep working', { skip: !CUDA && 'needs a CUDA device' }, async () => {
    const loss = new PerceptualLoss({ inChannels: 3, device: DEVICE });
    const small = [1, 3, 32, 32];
    const p = host(small, 7);
    const t = host(small, 8);
    const before = loss.lossAndGrad(p, t).loss;
    const big = [32, 3, 256, 256]; // about 25 GiB for one step: past the cap below, within the card
    const bp = host(big, 9);
    const bt = host(big, 10);
    const total = native.runtimeInfo().cudaDevices[0].memoryBytes;
    native.cudaSetMemoryFraction(Math.min(1, (4 * 2 ** 30) / total), 0); // a 4 GiB cap
    try {
      assert.equal(codeOf(() => loss.lossAndGrad(bp, bt)), 'ERR_OUT_OF_MEMORY');
      assert.equal(await codeOfAsync(() => loss.lossAndGradAsync(bp, bt)), 'ERR_OUT_OF_MEMORY');
      const graphs = new PerceptualLoss({ inChannels: 3, device: DEVICE, cudaGraphs: true });
      for (let i = 0; i < 3; i++) assert.equal(codeOf(() => graphs.lossAndGrad(bp, bt)), 'ERR_OUT_OF_MEMORY', `graphs, step ${i}`);
      assert.equal(loss.lossAndGrad(p, t).loss, before, 'the same loss after the errors, under the cap');
      assert.ok(Math.abs(graphs.lossAndGrad(p, t).loss - before) <= 1e-6 * before);
    } finally {
      native.cudaSetMemoryFraction(1, 0);
    }
    assert.ok(native.cudaMemory(0).allocated < 2 ** 30, 'the failed steps left nothing allocated');
  });
});
