// One loss per device, each in its own worker thread (the data-parallel pattern of the README):
// the same seed gives bit-identical weights everywhere, so the loss needs no communication.
// With one GPU, two workers share cuda:0; a CPU worker draws the reference.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { CUDA, perceptual, packageDir } from './common.mjs';

const devices = perceptual.runtime().devices.filter((d) => d.startsWith('cuda'));
const workers = CUDA ? [...devices, ...(devices.length === 1 ? ['cuda:0'] : []), 'cpu'] : ['cpu', 'cpu'];

const source = `
  const { parentPort, workerData } = require('node:worker_threads');
  const { createHash } = require('node:crypto');
  const { PerceptualLoss } = require(workerData.index);
  const loss = new PerceptualLoss({ inChannels: 3, seed: 1234, device: workerData.device, allowTF32: false });
  const hash = createHash('sha256');
  for (const [name, t] of Object.entries(loss.stateDict())) hash.update(name).update(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  const shape = [2, 3, 32, 32];
  const n = 2 * 3 * 32 * 32;
  const pred = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37));
  const target = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11));
  (async () => {
    const r = await loss.lossAndGradAsync({ data: pred, shape }, { data: target, shape });
    parentPort.postMessage({ device: loss.options.device, weights: hash.digest('hex'), loss: r.loss });
  })();`;

function runWorker(device) {
  return new Promise((resolve, reject) => {
    const w = new Worker(source, { eval: true, workerData: { device, index: `${packageDir}/dist/index.js` } });
    w.once('message', (m) => {
      resolve(m);
      w.terminate();
    });
    w.once('error', reject);
  });
}

describe('one loss per device in worker threads', () => {
  it(`same seed, bit-identical weights on ${workers.join(', ')}; the same loss`, async () => {
    const results = await Promise.all(workers.map(runWorker));
    assert.deepEqual(results.map((r) => r.device), workers);
    const hashes = new Set(results.map((r) => r.weights));
    assert.equal(hashes.size, 1, `weight hashes: ${results.map((r) => `${r.device} ${r.weights.slice(0, 12)}`).join(', ')}`);
    const reference = results.at(-1).loss;
    for (const r of results) assert.ok(Math.abs(r.loss - reference) <= 1e-5 * reference, `${r.device}: ${r.loss} vs ${reference}`);
    // The main thread's copy of the package stays usable alongside.
    assert.ok(new perceptual.PerceptualLoss({ inChannels: 3 }).loss({ data: new Float32Array(3 * 16 * 16).fill(0.5), shape: [1, 3, 16, 16] }, { data: new Float32Array(3 * 16 * 16), shape: [1, 3, 16, 16] }) > 0);
  });
});
