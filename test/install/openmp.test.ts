// OpenMP's wait policy (lib/openmp.ts): the package sets OMP_WAIT_POLICY=PASSIVE before libtorch
// loads unless the user chose how OpenMP waits (OMP_WAIT_POLICY, GOMP_SPINCOUNT, KMP_BLOCKTIME),
// and runtime() says which. libgomp reads its settings once, as it loads: the child processes
// below load the package fresh and ask libgomp itself (OMP_DISPLAY_ENV) what it read, and measure
// what the policy does, the CPU time a process burns while it waits between steps.
import { execFileSync, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runtime } from '../../lib/index';
import { decideWaitPolicy } from '../../lib/openmp';

const DIST = path.resolve(__dirname, '../../dist/index.js');

/** The environment less every OpenMP wait setting, plus `extra`. */
function envWith(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME', 'OMP_DISPLAY_ENV']) delete env[name];
  return { ...env, ...extra };
}

describe('the decision', () => {
  it('sets OMP_WAIT_POLICY=PASSIVE and GOMP_SPINCOUNT=100000 where the user set nothing, in the main thread, before OpenMP loads', () => {
    const env: Record<string, string | undefined> = { PATH: '/bin' };
    expect(decideWaitPolicy(env, true, false)).toEqual({ waitPolicy: 'PASSIVE', source: 'package', settings: {} });
    expect(env).toEqual({ PATH: '/bin', OMP_WAIT_POLICY: 'PASSIVE', GOMP_SPINCOUNT: '100000' });
  });

  it.each([
    [{ OMP_WAIT_POLICY: 'active' }, 'active'],
    [{ OMP_WAIT_POLICY: 'passive' }, 'passive'],
    [{ GOMP_SPINCOUNT: '300000' }, undefined],
    [{ KMP_BLOCKTIME: '0' }, undefined],
    [{ GOMP_SPINCOUNT: '10', KMP_BLOCKTIME: '5' }, undefined],
  ])('leaves the user\'s choice %j as it is', (settings, waitPolicy) => {
    const env: Record<string, string | undefined> = { ...settings };
    expect(decideWaitPolicy(env, true, false)).toEqual({ waitPolicy, source: 'user', settings });
    expect(env).toEqual(settings);
  });

  it('counts an empty setting as unset', () => {
    const env: Record<string, string | undefined> = { OMP_WAIT_POLICY: '', GOMP_SPINCOUNT: '' };
    expect(decideWaitPolicy(env, true, false)).toMatchObject({ waitPolicy: 'PASSIVE', source: 'package', settings: {} });
    expect(env.OMP_WAIT_POLICY).toBe('PASSIVE');
  });

  it('changes nothing once OpenMP is loaded (it has read its settings), and says so', () => {
    const env: Record<string, string | undefined> = {};
    expect(decideWaitPolicy(env, true, true)).toEqual({ waitPolicy: undefined, source: 'unchanged', settings: {} });
    expect(env).toEqual({});
  });

  it("changes nothing in a worker thread (its process.env is not the C library's), and says so", () => {
    const env: Record<string, string | undefined> = {};
    expect(decideWaitPolicy(env, false, false)).toEqual({ waitPolicy: undefined, source: 'unchanged', settings: {} });
    expect(env).toEqual({});
  });

  it('runtime() reports the policy of this process', () => {
    const { openmp } = runtime();
    expect(['package', 'user', 'unchanged']).toContain(openmp.source);
    if (openmp.source === 'package') expect([openmp.waitPolicy, process.env.OMP_WAIT_POLICY]).toEqual(['PASSIVE', 'PASSIVE']);
  });
});

/** Loads the compiled package in a fresh process with `env`; what it and libgomp say. */
function child(extra: Record<string, string>): { env: string | undefined; openmp: unknown; display: Record<string, string>; gomp: boolean } {
  const script = `
    const { runtime } = require(${JSON.stringify(DIST)});
    const gomp = /\\/libgomp[^/\\n]*\\.so/.test(require('node:fs').readFileSync('/proc/self/maps', 'utf8'));
    console.log(JSON.stringify({ env: process.env.OMP_WAIT_POLICY, openmp: runtime().openmp, gomp }));`;
  const run = spawnSync(process.execPath, ['-e', script], { env: envWith({ ...extra, OMP_DISPLAY_ENV: 'verbose' }), encoding: 'utf8' });
  expect(run.status, run.stderr).toBe(0);
  const result = JSON.parse(run.stdout.trim()) as { env: string | undefined; openmp: unknown; gomp: boolean };
  // libgomp prints what it read, as it loads, to stderr: `  NAME = 'value'` lines.
  const display = Object.fromEntries([...run.stderr.matchAll(/^ {2}(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'$/gm)].map((m) => [m[1], m[2]]));
  return { ...result, display };
}

describe('in a fresh process', () => {
  it('with nothing set: OMP_WAIT_POLICY=PASSIVE after a short spin in the environment, in runtime(), and as libgomp read it (spin count 100000)', () => {
    const run = child({});
    expect(run.env).toBe('PASSIVE');
    expect(run.openmp).toEqual({ waitPolicy: 'PASSIVE', source: 'package', settings: {} });
    // Where libtorch's OpenMP is libgomp (Debian's and pip's libtorch on Linux).
    if (run.gomp) expect(run.display).toEqual({ OMP_WAIT_POLICY: 'PASSIVE', GOMP_SPINCOUNT: '100000' });
  });

  it("with OMP_WAIT_POLICY=active: the user's policy, in runtime() and as libgomp read it", () => {
    const run = child({ OMP_WAIT_POLICY: 'active' });
    expect(run.env).toBe('active');
    expect(run.openmp).toEqual({ waitPolicy: 'active', source: 'user', settings: { OMP_WAIT_POLICY: 'active' } });
    if (run.gomp) expect(run.display).toEqual({ OMP_WAIT_POLICY: 'ACTIVE', GOMP_SPINCOUNT: '30000000000' });
  });

  it("with GOMP_SPINCOUNT=300000: no policy set, libgomp's own default (bench/wait-policy.js's old behaviour)", () => {
    const run = child({ GOMP_SPINCOUNT: '300000' });
    expect(run.env).toBeUndefined();
    expect(run.openmp).toEqual({ waitPolicy: undefined, source: 'user', settings: { GOMP_SPINCOUNT: '300000' } });
    // libgomp shows an undefined policy as PASSIVE; the spin count tells them apart.
    if (run.gomp) expect(run.display).toEqual({ OMP_WAIT_POLICY: 'PASSIVE', GOMP_SPINCOUNT: '300000' });
  });

  /** CPU time (ms) the process burns in 500 ms of waiting after a step with 2 threads. */
  function idleCpuMs(extra: Record<string, string>): number {
    const script = `
      const { PerceptualLoss, setNumThreads } = require(${JSON.stringify(DIST)});
      setNumThreads(2);
      const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11' });
      const x = { data: Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => Math.sin(i)), shape: [1, 3, 32, 32] };
      loss.lossAndGrad(x, x);
      const start = process.cpuUsage();
      setTimeout(() => { const d = process.cpuUsage(start); console.log((d.user + d.system) / 1000); }, 500);`;
    return Number(execFileSync(process.execPath, ['-e', script], { env: envWith(extra), encoding: 'utf8' }).trim());
  }

  it('takes effect: a PASSIVE process waits at no cost, an ACTIVE one keeps a core spinning', () => {
    const passive = idleCpuMs({});
    const active = idleCpuMs({ OMP_WAIT_POLICY: 'active' });
    // Measured on an idle 2-core machine: 3.5 ms and 386 ms of CPU in 500 ms of waiting.
    expect(passive, `passive: ${passive} ms, active: ${active} ms`).toBeLessThan(50);
    expect(active, `passive: ${passive} ms, active: ${active} ms`).toBeGreaterThan(100);
  });
});
