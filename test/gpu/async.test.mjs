// 1,000 async steps with no growth in device memory, and an event loop that keeps running while
// steps compute.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CUDA, DEVICE, cudaMemory, perceptual, host, native } from './common.mjs';

const { PerceptualLoss, Tensor } = perceptual;
const STEPS = 1000;

async function run(options, shape) {
  const loss = new PerceptualLoss(options);
  const p = host(shape, 1);
  const t = host(shape, 2);
  const tp = Tensor.from(p.data, shape, { device: DEVICE });
  const tt = Tensor.from(t.data, shape, { device: DEVICE });
  let after20;
  let tensors20;
  let last;
  for (let i = 0; i < STEPS; i++) {
    // Host and Tensor inputs alternate; every Tensor gradient is disposed.
    const r = i % 2 ? await loss.lossAndGradAsync(p, t) : await loss.lossAndGradAsync(tp, tt);
    if (!(r.grad instanceof Float32Array)) r.grad.dispose();
    last = r.loss;
    if (i === 19) {
      after20 = cudaMemory();
      tensors20 = native.liveTensors();
    }
  }
  const end = cudaMemory();
  const tensorsEnd = native.liveTensors();
  tp.dispose();
  tt.dispose();
  loss.dispose();
  return { after20, end, tensors20, tensorsEnd, last };
}

describe(`${STEPS} async steps (${DEVICE})`, () => {
  for (const [name, extra] of [['eager', {}], ['cudaGraphs + targetStream', { cudaGraphs: true, targetStream: true }]]) {
    it(`${name}: no growth in GPU memory or live tensors`, async () => {
      // The CPU dry run checks the harness with a tiny network; the GPU runs vgg19.
      const options = CUDA ? { inChannels: 3, device: DEVICE } : { inChannels: 3, arch: [4, 'M', 8], device: DEVICE };
      const r = await run({ ...options, ...extra }, CUDA ? [2, 3, 32, 32] : [1, 3, 8, 8]);
      assert.ok(Number.isFinite(r.last) && r.last > 0);
      assert.equal(r.tensorsEnd, r.tensors20, 'live native tensors');
      if (CUDA) {
        assert.equal(r.end.allocated, r.after20.allocated, `allocated bytes after step 20 and after step ${STEPS}`);
        assert.ok(r.end.reserved <= r.after20.reserved, `reserved grew: ${r.after20.reserved} -> ${r.end.reserved}`);
      }
    });
  }

  it('the event loop keeps running while a large step computes', async () => {
    const shape = CUDA ? [16, 3, 256, 256] : [1, 3, 32, 32];
    const loss = new PerceptualLoss({ inChannels: 3, device: DEVICE, ...(CUDA ? {} : { arch: 'vgg11' }) });
    const p = host(shape, 3);
    const t = host(shape, 4);
    await loss.lossAndGradAsync(p, t); // warm up
    let ticks = 0;
    let worstGap = 0;
    let previous = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      worstGap = Math.max(worstGap, now - previous);
      previous = now;
      ticks++;
    }, 1);
    const started = performance.now();
    for (let i = 0; i < 5; i++) await loss.lossAndGradAsync(p, t);
    const elapsed = performance.now() - started;
    clearInterval(timer);
    assert.ok(ticks >= elapsed / 20, `${ticks} timer ticks in ${elapsed.toFixed(0)} ms`);
    // Staging a host input is the only work on the JS thread: far less than a step.
    assert.ok(worstGap < Math.max(100, elapsed / 10), `the event loop stalled for ${worstGap.toFixed(1)} ms`);
  });
});
