// The CUDA path as far as it goes without a GPU: the performance switches (options and
// environment settings), the device errors that need no device, and the CUDA graph cache's rules
// (a plain C++ test). The GPU itself is exercised by scripts/gpu-suite.sh (test/gpu/).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { native } from '../../lib/binding';
import { PerceptualLoss, Tensor, runtime, type PerceptualLossOptions } from '../../lib/index';
import { PERFORMANCE_SWITCHES, resolveOptions, resolvePerformance } from '../../lib/options';
import { readSafetensors } from '../../lib/safetensors';
import { expectCode } from '../helpers/expect-code';
import { randn } from '../helpers/random';
import { run } from '../helpers/run';

const hasCuda = runtime().devices.some((d) => d.startsWith('cuda'));
const SMALL: PerceptualLossOptions = { inChannels: 3, arch: [8, 'M', 16], device: 'cpu' };
const shape = [2, 3, 8, 8];
const pred = { data: randn(2 * 3 * 8 * 8, 1), shape };
const target = { data: randn(2 * 3 * 8 * 8, 2), shape };

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-cuda-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('performance switches', () => {
  const SWITCHES = ['cudnnBenchmark', 'channelsLast', 'cudaGraphs', 'targetStream', 'allowTF32'] as const;

  it('default to the safe settings: graphs, target stream, autotuning and channels-last off, TF32 as in PyTorch', () => {
    expect(resolvePerformance({}, {})).toEqual({
      cudnnBenchmark: false,
      channelsLast: false,
      cudaGraphs: false,
      targetStream: false,
      allowTF32: true,
    });
  });

  it('name one environment setting per switch', () => {
    expect(PERFORMANCE_SWITCHES.map((s) => [s.option, s.env])).toEqual([
      ['cudnnBenchmark', 'PL_CUDNN_BENCHMARK'],
      ['channelsLast', 'PL_CHANNELS_LAST'],
      ['cudaGraphs', 'PL_CUDA_GRAPHS'],
      ['targetStream', 'PL_TARGET_STREAM'],
      ['allowTF32', 'PL_ALLOW_TF32'],
    ]);
  });

  it.each(SWITCHES)('%s takes true and false as an option', (option) => {
    expect(resolvePerformance({ [option]: true }, {})[option]).toBe(true);
    expect(resolvePerformance({ [option]: false }, {})[option]).toBe(false);
  });

  it.each(SWITCHES)('%s rejects a value that is not a boolean (ERR_OPTIONS)', (option) => {
    for (const value of [1, 'true', null, {}]) {
      expectCode(() => resolvePerformance({ [option]: value }, {}), 'ERR_OPTIONS', new RegExp(`"${option}".*true \\| false`));
    }
  });

  it('reads each environment setting: 1/true/on/yes and 0/false/off/no, any case, blank = unset', () => {
    for (const { option, env, fallback } of PERFORMANCE_SWITCHES) {
      for (const text of ['1', 'true', 'ON', 'Yes', ' on ']) expect(resolvePerformance({}, { [env]: text })[option]).toBe(true);
      for (const text of ['0', 'false', 'OFF', 'no']) expect(resolvePerformance({}, { [env]: text })[option]).toBe(false);
      expect(resolvePerformance({}, { [env]: '' })[option]).toBe(fallback);
    }
  });

  it('rejects an environment setting it cannot read, naming the variable (ERR_OPTIONS)', () => {
    expectCode(() => resolvePerformance({}, { PL_CUDA_GRAPHS: 'maybe' }), 'ERR_OPTIONS', /PL_CUDA_GRAPHS.*"maybe".*1, true, on/);
  });

  it('lets an option override its environment setting, both ways', () => {
    expect(resolvePerformance({ cudaGraphs: false }, { PL_CUDA_GRAPHS: '1' }).cudaGraphs).toBe(false);
    expect(resolvePerformance({ allowTF32: true }, { PL_ALLOW_TF32: '0' }).allowTF32).toBe(true);
    // An option given wins even over a setting that could not be read.
    expect(resolvePerformance({ channelsLast: true }, { PL_CHANNELS_LAST: 'bogus' }).channelsLast).toBe(true);
  });

  it('reaches the resolved options and the native config', () => {
    const resolved = resolveOptions({ inChannels: 3, device: 'cpu', cudaGraphs: true, channelsLast: true }, 0);
    expect(resolved.options).toMatchObject({ cudaGraphs: true, channelsLast: true, targetStream: false });
    expect(resolved.native).toMatchObject({ cudaGraphs: true, channelsLast: true, cudnnBenchmark: false, allowTF32: true });
  });

  it('are read from process.env by the constructor', () => {
    process.env.PL_TARGET_STREAM = '1';
    try {
      expect(new PerceptualLoss(SMALL).options.targetStream).toBe(true);
      process.env.PL_TARGET_STREAM = 'sometimes';
      expectCode(() => new PerceptualLoss(SMALL), 'ERR_OPTIONS', /PL_TARGET_STREAM/);
    } finally {
      delete process.env.PL_TARGET_STREAM;
    }
  });

  it('change nothing on the CPU: the same loss and gradient, bit for bit', () => {
    const plain = new PerceptualLoss(SMALL).lossAndGrad(pred, target);
    const all = new PerceptualLoss({
      ...SMALL, cudnnBenchmark: true, channelsLast: true, cudaGraphs: true, targetStream: true, allowTF32: false,
    });
    for (let i = 0; i < 3; i++) {
      const r = all.lossAndGrad(pred, target);
      expect(r.loss).toBe(plain.loss);
      expect(r.grad).toEqual(plain.grad);
    }
  });

  it('hold no CUDA graphs on the CPU', () => {
    // PerceptualLoss keeps its native handle private; one made through the binding shows the count.
    const raw = new (native().NativeLoss)(resolveOptions({ ...SMALL, cudaGraphs: true }, 0).native);
    for (let i = 0; i < 3; i++) raw.lossAndGrad(pred.data, shape, target.data, shape, 'nchw');
    expect(raw.cachedGraphs()).toBe(0);
    raw.dispose();
  });

  it('are not written to saved files: they belong to the machine', () => {
    const file = path.join(dir, 'switches.safetensors');
    new PerceptualLoss({ ...SMALL, cudaGraphs: true, channelsLast: true }).save(file);
    const stored = JSON.parse(readSafetensors(file).metadata['generic-perceptual-loss']) as Record<string, unknown>;
    for (const option of SWITCHES) expect(stored).not.toHaveProperty(option);
    expect(stored).not.toHaveProperty('device');
    expect(PerceptualLoss.load(file).options.cudaGraphs).toBe(false);
  });
});

describe.skipIf(hasCuda)('CUDA errors without a usable GPU', () => {
  const config = (device: string) => ({ ...resolveOptions(SMALL, 0).native, device });

  it.each(['cuda', 'cuda:0', 'cuda:3'])('the native loss refuses device %j (ERR_DEVICE), past the TS checks', (device) => {
    expectCode(() => new (native().NativeLoss)(config(device)), 'ERR_DEVICE', new RegExp(`'${device}'.*CUDA.*'cpu'`));
  });

  it.each(['cuda', 'cuda:1'])('the native tensor refuses device %j (ERR_DEVICE)', (device) => {
    expectCode(() => native().NativeTensor.fromHost(new Float32Array(4), [4], device), 'ERR_DEVICE', /needs CUDA/);
  });

  it('the CUDA memory figures are ERR_DEVICE', () => {
    expectCode(() => native().cudaMemory(0), 'ERR_DEVICE', /CUDA/);
    expectCode(() => native().cudaResetPeakMemory(0), 'ERR_DEVICE', /CUDA/);
    expectCode(() => native().cudaSetMemoryFraction(0.5, 0), 'ERR_DEVICE', /CUDA/);
  });

  it('emptying the CUDA cache is harmless', () => {
    expect(() => native().cudaEmptyCache()).not.toThrow();
  });

  it('after each of them the process and a loss keep working', () => {
    const loss = new PerceptualLoss(SMALL);
    const before = loss.lossAndGrad(pred, target);
    expect(() => new (native().NativeLoss)(config('cuda:0'))).toThrow();
    expect(() => Tensor.from(new Float32Array(4), [4], { device: 'cuda:0' })).toThrow();
    expect(() => new PerceptualLoss({ ...SMALL, device: 'cuda' })).toThrow();
    const after = loss.lossAndGrad(pred, target);
    expect(after.loss).toBe(before.loss);
    expect(after.grad).toEqual(before.grad);
  });
});

describe('CUDA graph cache rules (native/graph_cache.h, plain C++)', () => {
  it('captures a repeated shape, recaptures on a shape change, drops graphs on reseed, evicts the least recently used', async () => {
    const binary = path.join(dir, 'graph_cache_test');
    const root = path.resolve(__dirname, '../..');
    await run('g++', ['-std=c++17', '-Wall', '-Wextra', '-Werror', '-O0', path.join(root, 'test/native/graph_cache_test.cc'), '-o', binary]);
    const out = await run(binary, []);
    expect(out).not.toContain('FAIL');
    expect(out).toMatch(/graph cache: \d+ checks passed/);
    expect(Number(/(\d+) checks passed/.exec(out)![1])).toBeGreaterThanOrEqual(30);
  }, 120_000);
});
