// Both builds (cmake-js, the main one, and node-gyp, the fallback) take libtorch's flags from
// install/find-libtorch.js and produce an addon that computes the same loss.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { copyPackage, repoRoot } from './helpers/package-copy';
import { run } from './helpers/run';

const folders: string[] = [];
afterAll(() => folders.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

/** The loss and gradient norm computed by the package in `dir`, in a fresh process. */
function computeIn(dir: string): { loss: number; gradNorm: number; binary: string } {
  const script = `
    const { PerceptualLoss, runtime } = require(${JSON.stringify(path.join(dir, 'dist/index.js'))});
    const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11' });
    const n = 2 * 3 * 16 * 16;
    const pred = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
    const target = Float32Array.from({ length: n }, (_, i) => Math.cos(i));
    const r = loss.lossAndGrad({ data: pred, shape: [2, 3, 16, 16] }, { data: target, shape: [2, 3, 16, 16] });
    const gradNorm = Math.sqrt(r.grad.reduce((s, g) => s + g * g, 0));
    console.log(JSON.stringify({ loss: r.loss, gradNorm, binary: runtime().binary }));`;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }));
}

const expected = computeIn(repoRoot);

describe('native builds', () => {
  it('cmake-js (CMakeLists.txt) builds a working addon', async () => {
    const dir = copyPackage('gpl-cmake-');
    folders.push(dir);
    await run(process.execPath, ['install/build-native.js'], { cwd: dir });
    const result = computeIn(dir);
    expect(result.binary).toBe(path.join(dir, 'build/Release/generic_perceptual_loss.node'));
    expect(result.loss).toBe(expected.loss);
    expect(result.gradNorm).toBe(expected.gradNorm);
  }, 600_000);

  it('node-gyp (binding.gyp) builds a working addon', async () => {
    const dir = copyPackage('gpl-gyp-');
    folders.push(dir);
    const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js', { paths: [repoRoot] });
    // Node's own headers, as npm is configured to use: nothing is downloaded.
    const nodedir = path.resolve(path.dirname(process.execPath), '..');
    await run(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodedir}`, '-j', '2'], { cwd: dir });
    const result = computeIn(dir);
    expect(result.binary).toBe(path.join(dir, 'build/Release/generic_perceptual_loss.node'));
    expect(result.loss).toBeCloseTo(expected.loss, 6);
    expect(Math.abs(result.gradNorm - expected.gradNorm) / expected.gradNorm).toBeLessThan(1e-5);
  }, 600_000);

  it('every translation unit compiles with the CUDA switch on (PL_WITH_CUDA), against the CUDA headers', async () => {
    const out = await run('bash', ['scripts/check-cuda-compile.sh'], { cwd: repoRoot });
    for (const unit of ['native/addon.cc', 'native/cuda.cc', 'native/perceptual.cc']) expect(out).toContain(`check-cuda-compile: ${unit}`);
    expect(out).toContain('all translation units compile with PL_WITH_CUDA');
  }, 300_000);
});
