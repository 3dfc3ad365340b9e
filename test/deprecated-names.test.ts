// Environment settings, the development variables and the CMake option are named PL_*; their old
// GPL_* names still work for one release, with a deprecation warning (docs/api.md, "Environment
// variables").
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readEnv } from '../lib/env';
import { resolvePerformance } from '../lib/options';
import { expectCode } from './helpers/expect-code';
import { repoRoot } from './helpers/package-copy';

/** The warnings `fn` emits; process.emitWarning delivers them on a later tick. */
async function warningsOf(fn: () => void): Promise<Error[]> {
  const seen: Error[] = [];
  const listener = (w: Error) => seen.push(w);
  process.on('warning', listener);
  try {
    fn();
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('warning', listener);
  }
  return seen;
}

describe('readEnv(name)', () => {
  it('reads the PL_ name without a warning', async () => {
    let value: string | undefined;
    const warnings = await warningsOf(() => (value = readEnv('PL_ENVTEST_A', { PL_ENVTEST_A: '0.5' })));
    expect(value).toBe('0.5');
    expect(warnings).toEqual([]);
  });

  it('falls back to the GPL_ name with a DeprecationWarning naming both', async () => {
    let value: string | undefined;
    const warnings = await warningsOf(() => (value = readEnv('PL_ENVTEST_B', { GPL_ENVTEST_B: '7' })));
    expect(value).toBe('7');
    expect(warnings).toHaveLength(1);
    expect(warnings[0].name).toBe('DeprecationWarning');
    expect((warnings[0] as Error & { code?: string }).code).toBe('PL_DEPRECATED_ENV');
    expect(warnings[0].message).toBe('GPL_ENVTEST_B is deprecated and will be removed in the next release; set PL_ENVTEST_B instead.');
  });

  it('warns once per old name, however often it is read', async () => {
    const warnings = await warningsOf(() => {
      expect(readEnv('PL_ENVTEST_C', { GPL_ENVTEST_C: 'x' })).toBe('x');
      expect(readEnv('PL_ENVTEST_C', { GPL_ENVTEST_C: 'y' })).toBe('y');
    });
    expect(warnings).toHaveLength(1);
  });

  it('prefers the PL_ name when both are set, without a warning', async () => {
    let value: string | undefined;
    const warnings = await warningsOf(() => (value = readEnv('PL_ENVTEST_D', { PL_ENVTEST_D: 'new', GPL_ENVTEST_D: 'old' })));
    expect(value).toBe('new');
    expect(warnings).toEqual([]);
  });

  it('is undefined when neither name is set', () => {
    expect(readEnv('PL_ENVTEST_E', {})).toBeUndefined();
  });

  it('reads process.env by default', async () => {
    process.env.GPL_ENVTEST_F = 'from the process';
    try {
      let value: string | undefined;
      const warnings = await warningsOf(() => (value = readEnv('PL_ENVTEST_F')));
      expect(value).toBe('from the process');
      expect(warnings).toHaveLength(1);
    } finally {
      delete process.env.GPL_ENVTEST_F;
    }
  });
});

describe('the CUDA performance settings', () => {
  it('take their old GPL_ names too, with a DeprecationWarning', async () => {
    let graphs: boolean | undefined;
    const warnings = await warningsOf(() => (graphs = resolvePerformance({}, { GPL_CUDA_GRAPHS: '1' }).cudaGraphs));
    expect(graphs).toBe(true);
    expect(warnings.map((w) => w.message)).toEqual(['GPL_CUDA_GRAPHS is deprecated and will be removed in the next release; set PL_CUDA_GRAPHS instead.']);
  });

  it('name the old variable when its value cannot be read (ERR_OPTIONS)', () => {
    expectCode(() => resolvePerformance({}, { GPL_TARGET_STREAM: 'maybe' }), 'ERR_OPTIONS', /^Invalid environment setting GPL_TARGET_STREAM: got "maybe"/);
  });

  it('prefer the PL_ name to the old one', () => {
    expect(resolvePerformance({}, { PL_ALLOW_TF32: '0', GPL_ALLOW_TF32: '1' }).allowTF32).toBe(false);
  });
});

describe('the CMake option PL_SANITIZE', () => {
  const folders: string[] = [];
  afterAll(() => folders.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

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

  it('is taken from the old -DGPL_SANITIZE with a deprecation warning, and the old entry leaves the cache', () => {
    const { output, cache } = configure('-DGPL_SANITIZE=ON');
    expect(cache).toEqual(['PL_SANITIZE:BOOL=ON']);
    expect(output).toContain('CMake Deprecation Warning');
    expect(output).toContain('GPL_SANITIZE is deprecated; use -DPL_SANITIZE=ON instead.');
  }, 120_000);
});
