// Both builds (cmake-js, the main one, and node-gyp, the fallback) take libtorch's flags from
// install/find-libtorch.js and produce an addon that computes the same loss.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { RuntimeInfo } from '../../lib/index';
import { sitePackages, torchSeesGpu } from '../helpers/flavours';
import { copyPackage, repoRoot } from '../helpers/package-copy';
import { maxElementError } from '../helpers/reference';
import { run } from '../helpers/run';

const folders: string[] = [];
afterAll(() => folders.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

/** The loss, the gradient and its norm computed by the package in `dir`, in a fresh process. */
function computeIn(dir: string): { loss: number; grad: number[]; gradNorm: number; binary: string } {
  const script = `
    const { PerceptualLoss, runtime } = require(${JSON.stringify(path.join(dir, 'dist/index.js'))});
    const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11' });
    const n = 2 * 3 * 16 * 16;
    const pred = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
    const target = Float32Array.from({ length: n }, (_, i) => Math.cos(i));
    const r = loss.lossAndGrad({ data: pred, shape: [2, 3, 16, 16] }, { data: target, shape: [2, 3, 16, 16] });
    const gradNorm = Math.sqrt(r.grad.reduce((s, g) => s + g * g, 0));
    console.log(JSON.stringify({ loss: r.loss, grad: Array.from(r.grad), gradNorm, binary: runtime().binary }));`;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as { loss: number; grad: number[]; gradNorm: number; binary: string };
}


const expected = computeIn(repoRoot);

describe('native builds', () => {
  it('cmake-js (CMakeLists.txt) builds a working addon', async () => {
    const dir = copyPackage('pl-cmake-');
    folders.push(dir);
    await run(process.execPath, ['install/build-native.js'], { cwd: dir });
    const result = computeIn(dir);
    expect(result.binary).toBe(path.join(dir, 'build/Release/generic_perceptual_loss.node'));
    expect(result.loss).toBe(expected.loss);
    expect(result.gradNorm).toBe(expected.gradNorm);
    // The same sources and libtorch: the same gradient, bit for bit.
    expect(result.grad).toEqual(expected.grad);
  }, 600_000);

  it('node-gyp (binding.gyp) builds a working addon', async () => {
    const dir = copyPackage('pl-gyp-');
    folders.push(dir);
    const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js', { paths: [repoRoot] });
    // Node's own headers, as npm is configured to use: nothing is downloaded.
    const nodedir = path.resolve(path.dirname(process.execPath), '..');
    await run(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodedir}`, '-j', '2'], { cwd: dir });
    const result = computeIn(dir);
    expect(result.binary).toBe(path.join(dir, 'build/Release/generic_perceptual_loss.node'));
    expect(result.loss).toBeCloseTo(expected.loss, 6);
    expect(Math.abs(result.gradNorm - expected.gradNorm) / expected.gradNorm).toBeLessThan(1e-5);
    expect(maxElementError(result.grad, expected.grad), 'the largest elementwise difference of the gradient, relative to its largest magnitude').toBeLessThanOrEqual(1e-5);
  }, 600_000);

  // The CUDA flavour: pip's torch 2.14.1 for CUDA 13.0 (scripts/torch-envs.sh cuda). The CUDA
  // translation unit is compiled and linked against libtorch_cuda, and the addon loads. Where that
  // torch sees a usable GPU (PyTorch's own answer, asked first), it computes there; elsewhere it
  // warns that no GPU is usable and computes on the CPU.
  it('the CUDA flavour builds, links libtorch_cuda, loads, and computes on the GPU where PyTorch sees one, else warns and computes on the CPU', async () => {
    const python = process.env.PL_CUDA_TORCH_PYTHON ?? path.join(repoRoot, '.venv/torch2.14-cu130/bin/python');
    if (!fs.existsSync(python)) {
      throw new Error(`no CUDA torch at ${python}: run \`bash scripts/torch-envs.sh cuda\` or set PL_CUDA_TORCH_PYTHON`);
    }
    const gpu = torchSeesGpu(python);
    // The environment of that python: <env>/bin/python.
    const site = sitePackages(fs.realpathSync(path.dirname(path.dirname(python))));
    const dir = copyPackage('pl-cuda-');
    folders.push(dir);
    // No CUDA toolkit: no nvcc on PATH, no CUDA_HOME; the headers come from the nvidia wheels.
    const withoutNvcc = (process.env.PATH ?? '').split(':').filter((d) => d && !fs.existsSync(path.join(d, 'nvcc'))).join(':');
    const env: NodeJS.ProcessEnv = { ...process.env, LIBTORCH_PYTHON: python, PATH: withoutNvcc };
    for (const name of ['LIBTORCH', 'CUDA_HOME', 'CUDA_PATH']) delete env[name];
    await run(process.execPath, ['install/build-native.js'], { cwd: dir, env });
    const flags = fs.readFileSync(path.join(dir, 'build/libtorch.cmake'), 'utf8');
    expect(flags).toContain(path.join(site, 'nvidia/cu13/include'));
    expect(flags).not.toContain('/usr/local/cuda');
    expect(flags).toContain('set(PL_CXX_STANDARD 20)');
    const addon = path.join(dir, 'build/Release/generic_perceptual_loss.node');
    const needed = execFileSync('readelf', ['-d', addon], { encoding: 'utf8' });
    expect(needed).toContain('[libtorch_cuda.so]');
    expect(needed).toContain('[libc10_cuda.so]');
    // The CUDA-only code is in the binary, not compiled out.
    expect(execFileSync('nm', ['-C', '-D', '--defined-only', addon], { encoding: 'utf8' }).length).toBeGreaterThan(0);
    expect(execFileSync('strings', [addon], { encoding: 'utf8' })).toContain('a CUDA graph capture failed');

    const script = `
      const warnings = [];
      process.on('warning', (w) => warnings.push(w.code));
      const { PerceptualLoss, runtime } = require(${JSON.stringify(path.join(dir, 'dist/index.js'))});
      const info = { ...runtime(), cudaBuild: require(${JSON.stringify(path.join(dir, 'dist/binding.js'))}).native().runtimeInfo().cudaBuild };
      // allowTF32 off: a GPU's float32 convs then compare with the CPU's (it changes nothing on the CPU).
      const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', device: 'auto', cudaGraphs: true, targetStream: true, allowTF32: false });
      const n = 2 * 3 * 16 * 16;
      const pred = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
      const target = Float32Array.from({ length: n }, (_, i) => Math.cos(i));
      const r = loss.lossAndGrad({ data: pred, shape: [2, 3, 16, 16] }, { data: target, shape: [2, 3, 16, 16] });
      const gradNorm = Math.sqrt(r.grad.reduce((s, g) => s + g * g, 0));
      let cudaError;
      try { new PerceptualLoss({ inChannels: 3, device: 'cuda' }); } catch (e) { cudaError = e.code; }
      setImmediate(() => console.log(JSON.stringify({ loss: r.loss, grad: Array.from(r.grad), gradNorm, info, device: loss.options.device, warnings, cudaError })));`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', env })) as {
      loss: number;
      grad: number[];
      gradNorm: number;
      info: RuntimeInfo & { cudaBuild: boolean };
      device: string;
      warnings: string[];
      cudaError?: string;
    };
    expect(out.info.binary).toBe(addon);
    expect(out.info.libtorch).toMatchObject({ version: '2.14.1', cuda: true, gpu, flavour: 'torch2.14-cu130-cxx11' });
    expect(out.info.cudaBuild).toBe(true);
    expect(out.info.libtorch.path).toBe(fs.realpathSync(path.join(site, 'torch/lib')));
    if (gpu) {
      expect(out.info.devices[0]).toBe('cpu');
      expect(out.info.devices.slice(1).length).toBeGreaterThan(0);
      expect(out.info.devices.slice(1).every((d) => /^cuda:\d+$/.test(d))).toBe(true);
      expect(out.warnings).not.toContain('PL_NO_GPU');
      expect(out.device).toBe('cuda:0');
      expect(out.cudaError).toBeUndefined();
    } else {
      expect(out.info.devices).toEqual(['cpu']);
      expect(out.warnings).toContain('PL_NO_GPU');
      expect(out.device).toBe('cpu');
      expect(out.cudaError).toBe('ERR_DEVICE');
    }
    // Another libtorch (2.14's oneDNN), the same loss within float32 rounding; cuDNN's float32
    // convs (TF32 off) sum in other orders, within 1e-4.
    const tolerance = gpu ? 1e-4 : 1e-5;
    expect(Math.abs(out.loss - expected.loss) / expected.loss).toBeLessThan(tolerance);
    expect(Math.abs(out.gradNorm - expected.gradNorm) / expected.gradNorm).toBeLessThan(tolerance);
    expect(maxElementError(out.grad, expected.grad), 'the largest elementwise difference of the gradient, relative to its largest magnitude').toBeLessThanOrEqual(tolerance);
  }, 1_200_000);
});

describe('the CMake option PL_SANITIZE', () => {
  /** Configures (no build) in a fresh folder; returns the output and the cached sanitizer options. */
  function configure(define: string): { output: string; cache: string[] } {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-cmake-option-'));
    folders.push(dir);
    const result = spawnSync('cmake', ['-S', repoRoot, '-B', dir, define], { encoding: 'utf8' });
    expect(result.status, result.stderr).toBe(0);
    const cache = fs.readFileSync(path.join(dir, 'CMakeCache.txt'), 'utf8');
    return { output: result.stdout + result.stderr, cache: cache.split('\n').filter((l) => /^G?PL_SANITIZE:/.test(l)) };
  }

  it('is taken from -DPL_SANITIZE without a warning', () => {
    const { output, cache } = configure('-DPL_SANITIZE=ON');
    expect(cache).toEqual(['PL_SANITIZE:BOOL=ON']);
    expect(output).not.toContain('deprecated');
  }, 120_000);
});
