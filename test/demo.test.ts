// The demo: its parts (flags, data, metrics, the network's conv op) and two short `--quick` runs
// of the compiled entry point with one seed, which must write the same numbers.
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS, parseArgs, QUICK, UsageError } from '../demo/args';
import { CLASSES, testSet, trainingBatch } from '../demo/data';
import { ensureGradients } from '../demo/gradients';
import { score } from '../demo/metrics';
import { convOp } from '../demo/model';
import { repoRoot } from './helpers/package-copy';

const run = promisify(execFile);
const folders: string[] = [];
afterAll(() => folders.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

describe('demo flags', () => {
  it('has defaults, --quick presets and explicit flags that win', () => {
    expect(parseArgs([])).toMatchObject({ ...DEFAULTS, quick: false, sweep: false });
    expect(parseArgs(['--quick'])).toMatchObject({ ...QUICK, quick: true });
    expect(parseArgs(['--quick', '--steps', '7', '--size=40', '--lambda', '0.3', '--seed', '2', '--out', 'x', '--sweep', '--device', 'cpu'])).toMatchObject({
      steps: 7,
      size: 40,
      lambda: 0.3,
      seed: 2,
      out: 'x',
      sweep: true,
      device: 'cpu',
      testImages: QUICK.testImages,
    });
    expect(parseArgs(['--help'])).toBeNull();
  });

  it('rejects bad values with a UsageError', () => {
    for (const argv of [['--steps', '0'], ['--size', '30'], ['--size', '8'], ['--lambda', '-1'], ['--lambda'], ['--device', 'gpu'], ['--frobnicate']]) {
      expect(() => parseArgs(argv)).toThrow(UsageError);
    }
  });
});

describe('demo data', () => {
  it('is a function of (seed, index): same seed, same batch; another seed, another batch', () => {
    const a = trainingBatch(1, 5, 2, 32);
    expect(trainingBatch(1, 5, 2, 32)).toEqual(a);
    expect(trainingBatch(2, 5, 2, 32).labels).not.toEqual(a.labels);
    expect(trainingBatch(1, 6, 2, 32).labels).not.toEqual(a.labels);
  });

  it('holds every class, thin parts included, in a held-out set', () => {
    const set = testSet(1, 32, 48);
    const counts = new Array(CLASSES).fill(0);
    for (const l of set.labels) counts[l]++;
    expect(counts.every((c) => c > 0)).toBe(true);
    expect(counts[0] / set.labels.length).toBeGreaterThan(0.7); // mostly background
  });
});

describe('demo metrics', () => {
  const size = 8;
  /** A 3x3 square of class 1 at (x, y) in an 8x8 background map. */
  const square = (x: number, y: number) => {
    const m = new Int32Array(size * size);
    for (let yy = y; yy < y + 3; yy++) for (let xx = x; xx < x + 3; xx++) m[yy * size + xx] = 1;
    return m;
  };

  it('scores a perfect prediction 1', () => {
    const s = score(square(2, 2), square(2, 2), 1, size, 2);
    expect(s).toMatchObject({ miou: 1, pixelAccuracy: 1, boundaryF1: 1 });
  });

  it('boundary F1 tolerates a 1 px shift, IoU does not', () => {
    const s = score(square(3, 2), square(2, 2), 1, size, 2);
    expect(s.boundaryF1).toBe(1); // every boundary pixel has one within 1 px
    expect(s.perClass.iou[1]).toBeCloseTo(6 / 12, 10);
    const far = score(square(5, 2), square(1, 2), 1, size, 2);
    expect(far.boundaryF1).toBe(0);
  });

  it('boundary F1 counts a missed thin line as missed recall', () => {
    const gt = new Int32Array(size * size);
    for (let x = 0; x < size; x++) gt[3 * size + x] = 1; // a 1 px line
    const s = score(new Int32Array(size * size), gt, 1, size, 2);
    expect(s.boundaryF1).toBe(0);
    expect(s.pixelAccuracy).toBeCloseTo(7 / 8, 10); // while most pixels are right
  });
});

describe('demo network conv op', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
    tf.enableProdMode();
    ensureGradients();
    // The reference: tf.conv2d through the backend's own (slow) gradient kernels.
    tf.registerGradient({
      kernelName: tf.Conv2D,
      inputsToSave: ['x', 'filter'],
      gradFunc: (dy, saved, attrs) => {
        const [x, filter] = saved;
        const g = dy as tf.Tensor;
        return {
          x: () => tf.engine().runKernel(tf.Conv2DBackpropInput, { dy: g, filter }, { ...attrs, inputShape: x.shape }) as tf.Tensor,
          filter: () => tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy: g }, { ...attrs, filterShape: filter.shape }) as tf.Tensor,
        };
      },
    });
  });

  it.each([
    [1, 1, true, 3, 8],
    [2, 1, true, 3, 8],
    [1, 2, true, 3, 8],
    [1, 2, false, 3, 9],
    [1, 1, false, 1, 7],
    [2, 2, true, 3, 7],
  ])('inputs %i, stride %i, relu %s, %ix%i filter on %i px: the gradients of tf.conv2d', (count, stride, relu, k, h) => {
    tf.tidy(() => {
      const xs = Array.from({ length: count }, (_, i) => tf.randomNormal([2, h, h, 3 + i], 0, 1, 'float32', i + 1));
      const ws = Array.from({ length: count }, (_, i) => tf.randomNormal([k, k, 3 + i, 4], 0, 1, 'float32', 10 + i));
      const bias = tf.randomNormal([4], 0, 1, 'float32', 99);
      const op = convOp(count, stride, relu);
      const weights = tf.randomNormal(op(xs as tf.Tensor4D[], ws as tf.Tensor4D[], bias as tf.Tensor1D).shape, 0, 1, 'float32', 7);
      const ours = (...a: tf.Tensor[]) =>
        tf.sum(tf.mul(weights, op(a.slice(0, count) as tf.Tensor4D[], a.slice(count, 2 * count) as tf.Tensor4D[], a[2 * count] as tf.Tensor1D)));
      const reference = (...a: tf.Tensor[]) => {
        let z: tf.Tensor = tf.conv2d(a[0] as tf.Tensor4D, a[count] as tf.Tensor4D, stride, 'same');
        for (let i = 1; i < count; i++) z = tf.add(z, tf.conv2d(a[i] as tf.Tensor4D, a[count + i] as tf.Tensor4D, stride, 'same'));
        z = tf.add(z, a[2 * count]);
        return tf.sum(tf.mul(weights, relu ? tf.relu(z) : z));
      };
      const args = [...xs, ...ws, bias];
      expect(ours(...args).dataSync()[0]).toBeCloseTo(reference(...args).dataSync()[0], 3);
      const a = tf.grads(ours)(args);
      const b = tf.grads(reference)(args);
      a.forEach((g, i) => {
        const err = tf.max(tf.abs(tf.sub(g, b[i]))).dataSync()[0] / tf.max(tf.abs(b[i])).dataSync()[0];
        expect(err).toBeLessThan(1e-5);
      });
    });
  });
});

describe('npm run demo -- --quick', () => {
  let dir: string;
  const outputs: string[] = [];

  beforeAll(async () => {
    // Compile the current sources into a scratch package (dist/ of the repo may be stale or in
    // use), next to the repo's native build and node_modules.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpl-demo-test-'));
    folders.push(dir);
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(repoRoot, 'tsconfig.json'), '--outDir', path.join(dir, 'dist')], {
      stdio: 'pipe',
    });
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(repoRoot, 'demo', 'tsconfig.json'), '--outDir', path.join(dir, 'dist-demo')], {
      stdio: 'pipe',
    });
    fs.cpSync(path.join(repoRoot, 'scripts'), path.join(dir, 'scripts'), { recursive: true });
    fs.copyFileSync(path.join(repoRoot, 'package.json'), path.join(dir, 'package.json'));
    for (const link of ['build', 'node_modules']) fs.symlinkSync(path.join(repoRoot, link), path.join(dir, link));
    // Two runs at once: each uses one core (tfjs' CPU backend, one libtorch thread).
    const runs = [1, 2].map(async (i) => {
      const out = path.join(dir, `out${i}`);
      outputs.push(out);
      const { stdout } = await run(process.execPath, [path.join(dir, 'dist-demo', 'main.js'), '--quick', '--steps', '12', '--out', out], { cwd: dir });
      return stdout;
    });
    const logs = await Promise.all(runs);
    fs.writeFileSync(path.join(dir, 'log.txt'), logs.join('\n'));
  }, 300_000);

  it('prints the held-out table', () => {
    const log = fs.readFileSync(path.join(dir, 'log.txt'), 'utf8');
    expect(log).toMatch(/mIoU\s+pixel acc\s+boundary F1/);
    expect(log).toMatch(/CE only\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}/);
    expect(log).toMatch(/CE \+ 1 x perceptual\s+\d\.\d{3}/);
  });

  it('writes report.json and two PNGs', () => {
    for (const out of outputs) {
      const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
      expect(report.arms.map((a: { name: string }) => a.name)).toEqual(['CE only', 'CE + 1 x perceptual']);
      expect(report.config).toMatchObject({ steps: 12, size: QUICK.size, testImages: QUICK.testImages });
      for (const arm of report.arms) {
        expect(arm.curve.loss).toHaveLength(12);
        expect(arm.final.miou).toBeGreaterThan(0);
      }
      expect(report.arms[0].curve.perceptual).toBeNull();
      expect(report.arms[1].curve.perceptual).toHaveLength(12);
      for (const png of ['curves.png', 'samples.png']) {
        const bytes = fs.readFileSync(path.join(out, png));
        expect(bytes.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
        expect(bytes.length).toBeGreaterThan(5000);
      }
    }
  });

  it('gives identical numbers for one seed (all but the timings)', () => {
    const [a, b] = outputs.map((out) => {
      const { timing: _timing, ...rest } = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
      return rest;
    });
    expect(a).toEqual(b);
  });
});
