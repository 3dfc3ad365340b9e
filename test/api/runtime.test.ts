// The runtime of docs/api.md (the libtorch and binary in use, the thread count), loading the package
// with both `require` and `import`, and PerceptualLossError itself.
import { findLibtorch } from '../../lib/libtorch';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, PerceptualLossError, runtime, setNumThreads } from '../../lib/index';
import { host, SMALL } from '../helpers/api';
import { expectCode } from '../helpers/expect-code';
import { relError, relErrorScalar } from '../helpers/reference';

const ROOT = path.resolve(__dirname, '../..');

beforeAll(() => {
  // Tiny tensors: one intra-op thread avoids thread hand-offs that are slow on a busy CI machine.
  // ('runtime and threads' below compares 2 threads with 1 explicitly.)
  setNumThreads(1);
});

// ------------------------------------------------------------------ runtime and threads

describe('runtime and threads', () => {
  it('reports the libtorch that discovery chose, whether it is a CUDA build and whether a GPU is usable, and the binary it loaded', () => {
    const info = runtime();
    const expected = findLibtorch().chosen!;
    expect(info.libtorch.version).toBe(expected.version);
    expect(info.libtorch.flavour).toBe(expected.flavour);
    expect(info.libtorch.cuda).toBe(expected.cuda);
    expect(info.libtorch.gpu).toBe(info.devices.length > 1);
    expect(info.devices[0]).toBe('cpu');
    expect(info.devices.slice(1)).toEqual(info.devices.slice(1).map((_, i) => `cuda:${i}`));
    expect(path.isAbsolute(info.binary)).toBe(true);
    expect(info.binary.endsWith('.node')).toBe(true);
    expect(fs.existsSync(info.binary)).toBe(true);
    expect(info.libtorch.path).toBeDefined();
    expect(fs.existsSync(path.join(info.libtorch.path!, 'libtorch_cpu.so'))).toBe(true);
  });

  it('setNumThreads(1) leaves the results of 2 threads unchanged (within 1e-6) and is reported by runtime()', () => {
    const loss = new PerceptualLoss({ ...SMALL, styleWeight: 1 });
    const [pred, target] = [host([4, 3, 32, 32], 1), host([4, 3, 32, 32], 2)];
    const threads = runtime().numThreads;
    try {
      setNumThreads(2);
      expect(runtime().numThreads).toBe(2);
      const two = loss.lossAndGrad(pred, target);
      setNumThreads(1);
      expect(runtime().numThreads).toBe(1);
      const one = loss.lossAndGrad(pred, target);
      expect(relErrorScalar(one.loss as number, two.loss as number)).toBeLessThan(1e-6);
      expect(relError(one.grad, two.grad)).toBeLessThan(1e-6);
    } finally {
      setNumThreads(threads);
    }
    expect(runtime().numThreads).toBe(threads);
  });

  it.each([0, 1.5, -2, NaN, '2'])('setNumThreads(%j) throws ERR_OPTIONS', (n) => {
    const threads = runtime().numThreads;
    expectCode(() => setNumThreads(n as number), 'ERR_OPTIONS');
    expect(runtime().numThreads).toBe(threads);
  });
});

// ------------------------------------------------------------------ require and import

describe('module formats', () => {
  const body = `
const p = new PerceptualLoss({ inChannels: 1, arch: [4, 'M', 4] });
const d = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
const t = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i));
const loss = p.loss({ data: d, shape: [1, 1, 8, 8] }, { data: t, shape: [1, 1, 8, 8] });
let code; try { new PerceptualLoss({ inChannels: 0 }); } catch (e) { code = e instanceof PerceptualLossError && e.code; }
console.log(JSON.stringify({ loss, code }));`;

  // dist/ is current: test/global-setup.ts rebuilds it from lib/ before any suite runs.

  const expected = () => {
    const p = new PerceptualLoss({ inChannels: 1, arch: [4, 'M', 4] });
    const d = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    const t = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i));
    return { loss: p.loss({ data: d, shape: [1, 1, 8, 8] }, { data: t, shape: [1, 1, 8, 8] }), code: 'ERR_OPTIONS' };
  };

  it('works with require()', () => {
    const out = execFileSync(process.execPath, ['-e', `const { PerceptualLoss, PerceptualLossError } = require('./dist/index.js');${body}`], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(JSON.parse(out)).toEqual(expected());
  });

  it('works with import, sharing one instance with require()', () => {
    const script = `
import { PerceptualLoss, PerceptualLossError } from './dist/index.mjs';
import { createRequire } from 'node:module';
const cjs = createRequire(import.meta.url)('./dist/index.js');
if (cjs.PerceptualLoss !== PerceptualLoss || cjs.PerceptualLossError !== PerceptualLossError) throw new Error('two instances');
${body}`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual(expected());
  });
});

// PerceptualLossError is what every failure is; one sanity check of the class itself.
it('PerceptualLossError is an Error with name, code and message', () => {
  const e = new PerceptualLossError('ERR_SHAPE', 'bad shape');
  expect(e).toBeInstanceOf(Error);
  expect([e.name, e.code, e.message]).toEqual(['PerceptualLossError', 'ERR_SHAPE', 'bad shape']);
});
