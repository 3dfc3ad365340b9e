// Leaks: a short run of scripts/soak.js (the full one is `npm run soak`, 5,000 steps),
// the script's own failure detection, and the finalizer that frees Tensors the garbage collector
// takes without dispose().
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const SOAK = path.join(ROOT, 'scripts', 'soak.js');

interface SoakResult {
  ok: boolean;
  steps: number;
  every: number;
  warmup: number;
  rssBaselineMiB: number;
  rssMaxMiB: number;
  rssGrowth: number;
  maxGrowth: number;
  liveBaseline: number;
  liveEnd: number;
  counts: Record<string, number>;
  violations: string[];
}

function soak(args: string[]): { status: number | null; stdout: string; stderr: string; result?: SoakResult } {
  const run = spawnSync(process.execPath, [SOAK, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  const line = run.stdout.split('\n').find((l) => l.startsWith('SOAK_RESULT '));
  return { status: run.status, stdout: run.stdout, stderr: run.stderr, result: line ? (JSON.parse(line.slice('SOAK_RESULT '.length)) as SoakResult) : undefined };
}

describe('scripts/soak.js', () => {
  it('600 steps: RSS grows at most 5% after the warm-up and the live tensors stay at their baseline', () => {
    // One intra-op thread: the run shares the machine with the other test files.
    const run = soak(['--steps', '600', '--threads', '1']);
    expect(run.result, run.stdout + run.stderr).toBeDefined();
    const r = run.result!;
    expect(r.violations).toEqual([]);
    expect(r.ok).toBe(true);
    expect(run.status).toBe(0);
    expect(r.steps).toBe(600);
    // Reports every 60 steps; RSS measured against step 240, the end of the warm-up.
    expect(run.stdout.match(/^step /gm)?.length).toBe(10);
    expect(r.warmup).toBe(240);
    expect(r.rssGrowth).toBeLessThanOrEqual(0.05);
    expect(r.rssBaselineMiB).toBeGreaterThan(0);
    // The two resident Tensors were the baseline; nothing else survived.
    expect(r.liveBaseline).toBe(2);
    expect(r.liveEnd).toBe(0);
    // Every kind of step ran.
    for (const kind of [
      'sync lossAndGrad (host)',
      'async lossAndGrad (Tensor)',
      'sync features (host)',
      'async features (Tensor)',
      'sync segmentation',
      'async segmentation',
      'prepared target, sync and async',
      'concurrent async, nhwc',
      'Tensors left to the garbage collector',
      'refused calls',
      'new prepared target',
      'save and load',
      'reseed',
      'new loss, old disposed in flight',
    ]) {
      expect(r.counts[kind] ?? 0, kind).toBeGreaterThan(0);
    }
  }, 300_000);

  it('exits 1 and names the violation when native tensors leak', () => {
    const run = soak(['--steps', '100', '--threads', '1', '--self-test-leak']);
    expect(run.status).toBe(1);
    expect(run.result?.ok).toBe(false);
    expect(run.result?.violations.join('\n')).toMatch(/live native tensors/);
  }, 300_000);
});

describe('the finalizer', () => {
  /** Runs `body` in `node --expose-gc` with the compiled package; returns what it printed as JSON. */
  function withGc(body: string): Record<string, number> {
    const script = `
      const { PerceptualLoss, Tensor, setNumThreads } = require(${JSON.stringify(path.join(ROOT, 'dist/index.js'))});
      const { native } = require(${JSON.stringify(path.join(ROOT, 'dist/binding.js'))});
      setNumThreads(1);
      const settle = async () => { for (let i = 0; i < 3; i++) { gc(); await new Promise((r) => setImmediate(r)); } };
      (async () => { ${body} })().catch((e) => { console.error(e); process.exit(2); });`;
    // A fixed mmap threshold: glibc's adaptive one would keep freed 400 kB blocks cached in the heap,
    // which reads as growth of the RSS although the memory was freed.
    const env = { ...process.env, MALLOC_MMAP_THRESHOLD_: '65536' };
    const run = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 120_000, env });
    expect(run.status, run.stderr).toBe(0);
    return JSON.parse(run.stdout.trim().split('\n').pop()!) as Record<string, number>;
  }

  it('frees Tensors that were never disposed once they are garbage-collected: liveTensors returns to its baseline', () => {
    const r = withGc(`
      await settle();
      const baseline = native().liveTensors();
      (() => { for (let i = 0; i < 2000; i++) Tensor.from(new Float32Array(1000), [10, 100]); })();
      const created = native().liveTensors();
      await settle();
      console.log(JSON.stringify({ baseline, created, after: native().liveTensors() }));`);
    expect(r.created - r.baseline).toBe(2000);
    expect(r.after).toBe(r.baseline);
  });

  it('frees the Tensors a loss returns (gradients, features) once they are garbage-collected', () => {
    const r = withGc(`
      const loss = new PerceptualLoss({ inChannels: 2, arch: [4, 'M', 4], device: 'cpu' });
      const x = Tensor.from(new Float32Array(2 * 2 * 8 * 8).map((_, i) => Math.sin(i)), [2, 2, 8, 8]);
      await settle();
      const baseline = native().liveTensors();
      // Synchronously: finalizers only run on a later turn of the event loop, so all are counted.
      for (let i = 0; i < 200; i++) {
        loss.lossAndGrad(x, x);
        loss.features(x);
      }
      const created = native().liveTensors();
      for (let i = 0; i < 200; i++) await loss.lossAndGradAsync(x, x);
      await settle();
      console.log(JSON.stringify({ baseline, created, after: native().liveTensors() }));`);
    // 200 * (1 grad + 2 features) Tensors were made and dropped, then 200 async grads.
    expect(r.created - r.baseline).toBe(600);
    expect(r.after).toBe(r.baseline);
  });

  it('gives the memory back: a second round of 200 MB of dropped Tensors does not grow the RSS again', () => {
    const r = withGc(`
      const round = async () => {
        (() => { for (let i = 0; i < 500; i++) Tensor.from(new Float32Array(100_000), [100_000]); })();
        await settle();
        return process.memoryUsage().rss;
      };
      const start = process.memoryUsage().rss;
      const first = await round();
      const second = await round();
      const third = await round();
      console.log(JSON.stringify({ start, first, second, third, live: native().liveTensors() }));`);
    expect(r.live).toBe(0);
    // Had the finalizer not freed them, each round would add 200 MB (plus the JS arrays).
    expect(r.third - r.first).toBeLessThan(50 * 2 ** 20);
  });
});
