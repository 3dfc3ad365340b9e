// The stable-ABI binary reaches the CPU's convs, conv backward and max pools through libtorch's
// AOTI CPU shims where the loaded torch exports them, and through the dispatcher by name where it
// does not (native/ops_stable.h). The parity suites run the first route against PyTorch on both
// pip torches; here PL_STABLE_ABI_SHIMS=0 forces the second on the same torch, and both routes
// must give the same bits: the same kernels, reached two ways.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { STABLE_ABI_FLAVOURS, STABLE_ABI_PREBUILD } from '../helpers/flavours';

const ROOT = path.resolve(__dirname, '../..');
const DIST = path.join(ROOT, 'dist/index.js');

// Images and volumes, max and average pools, float32 and bfloat16 where the CPU has it: a loss, its
// gradient and the features, hashed.
const SCRIPT = `
const crypto = require('node:crypto');
const { PerceptualLoss, runtime } = require(${JSON.stringify(DIST)});
const hash = (a) => crypto.createHash('sha256').update(Buffer.from(a.buffer, a.byteOffset, a.byteLength)).digest('hex');
const data = (n, seed) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 7919 + i * 0.37));
const cases = [
  { shape: [2, 3, 16, 16], options: { inChannels: 3, arch: [8, 'M', 16, 'M', 16], layers: ['relu1_1', 'pool1', 'relu2_1', 'relu3_1'] } },
  { shape: [2, 3, 16, 16], options: { inChannels: 3, arch: [8, 'M', 16], layers: ['relu1_1', 'relu2_1'], pool: 'avg' } },
  { shape: [1, 2, 8, 8, 8], options: { spatialDims: 3, inChannels: 2, arch: [8, 'M', 16], layers: ['relu1_1', 'relu2_1'] } },
];
const rt = runtime();
const out = { binary: rt.binary, reason: rt.binaryReason, results: [] };
for (const dtype of rt.cpu.bfloat16 ? ['float32', 'bfloat16'] : ['float32']) {
  for (const c of cases) {
    const loss = new PerceptualLoss({ ...c.options, dtype, seed: 7 });
    const n = c.shape.reduce((a, b) => a * b, 1);
    const pred = { data: data(n, 1), shape: c.shape };
    const target = { data: data(n, 2), shape: c.shape };
    const { loss: value, grad } = loss.lossAndGrad(pred, target);
    const features = loss.features(pred).map((f) => hash(f.data));
    out.results.push({ dtype, shape: c.shape, loss: value, grad: hash(grad), features });
    loss.dispose();
  }
}
console.log(JSON.stringify(out));
`;

interface Outcome {
  binary: string;
  reason: string;
  results: Array<{ dtype: string; shape: number[]; loss: number; grad: string; features: string[] }>;
}

function run(env: NodeJS.ProcessEnv): Outcome {
  const out = execFileSync(process.execPath, ['-e', SCRIPT], { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 300_000 });
  return JSON.parse(out.trim().split('\n').pop()!) as Outcome;
}

const built = fs.existsSync(path.join(ROOT, 'prebuilds', STABLE_ABI_PREBUILD)) && fs.existsSync(DIST);

describe.each(Object.keys(STABLE_ABI_FLAVOURS))('%s', (name) => {
  const f = STABLE_ABI_FLAVOURS[name];
  const present = built && fs.existsSync(f.python);

  it.runIf(present)('gives the same loss, gradient and features through the AOTI shims and through the dispatcher by name (where the stable-ABI prebuild and this torch are here)', () => {
    const shims = run(f.env);
    const byName = run({ ...f.env, PL_STABLE_ABI_SHIMS: '0' });
    expect(shims.reason).toMatch(/^stable-ABI prebuild /);
    expect(byName.binary).toBe(shims.binary);
    expect(shims.results.every((r) => Number.isFinite(r.loss) && r.loss > 0)).toBe(true);
    expect(byName.results).toEqual(shims.results);
  });
});
