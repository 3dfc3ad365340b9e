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
import { DEFAULTS, parseArgs, QUICK, UsageError } from '../../demo/args';
import { CLASSES, testSet, trainingBatch } from '../../demo/data';
import { DEPTH_MAX, DEPTH_MIN, depthTestSet, depthTrainingBatch } from '../../demo/depth-data';
import { scoreDepth } from '../../demo/depth-metrics';
import { interval } from '../../demo/stats';
import { ensureGradients } from '../../demo/gradients';
import { score } from '../../demo/metrics';
import { convOp } from '../../demo/model';
import { repoRoot } from '../helpers/package-copy';

const run = promisify(execFile);
/**
 * Steps of the end-to-end runs: enough for both tasks' arms to leave the trivial answers behind
 * (segmentation predicts background alone for the first ~170 steps at 24x24, seed 1).
 */
const TEST_STEPS = 200;
const folders: string[] = [];
afterAll(() => folders.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

describe('demo flags', () => {
  it('has defaults: both tasks, the default sizes and lambdas', () => {
    expect(parseArgs([])).toEqual({ ...DEFAULTS, tasks: ['seg', 'depth'], quick: false, study: false });
  });

  it('--quick presets the sizes, and explicit flags win', () => {
    expect(parseArgs(['--quick'])).toMatchObject({ ...QUICK, quick: true });
    expect(
      parseArgs(['--quick', '--steps', '7', '--size=40', '--lambda', '0.3', '--seed', '2', '--out', 'x', '--device', 'cpu', '--task', 'depth', '--workers', '3', '--threads', '2']),
    ).toEqual({
      ...DEFAULTS,
      steps: 7,
      size: 40,
      lambda: { seg: 0.3, depth: 0.3 },
      seed: 2,
      out: 'x',
      device: 'cpu',
      tasks: ['depth'],
      workers: 3,
      threads: 2,
      testImages: QUICK.testImages,
      quick: true,
      study: false,
    });
    expect(parseArgs(['--task', 'all', '--study'])).toMatchObject({ tasks: ['seg', 'depth'], study: true });
    expect(parseArgs(['--help'])).toBeNull();
    expect(parseArgs(['-h'])).toBeNull();
  });

  it.each([
    [['--steps', '0'], /--steps needs an integer >= 1; got 0/],
    [['--steps', '1.5'], /--steps needs an integer >= 1; got 1.5/],
    [['--size', '30'], /--size must be a multiple of 4.*got 30/],
    [['--size', '8'], /--size needs an integer >= 16; got 8/],
    [['--lambda=-1'], /--lambda needs a number > 0; got -1/],
    [['--lambda', 'x'], /--lambda needs a number > 0; got x/],
    [['--lambda'], /--lambda/],
    [['--device', 'gpu'], /--device needs auto, cpu, cuda or cuda:N; got gpu/],
    [['--task', 'flow'], /--task needs seg, depth or all; got flow/],
    [['--workers', '0'], /--workers needs an integer >= 1; got 0/],
    [['--out='], /--out needs a folder/],
    [['--frobnicate'], /Unknown option '--frobnicate'/],
    [['stray'], /stray/],
  ])('rejects %j with a UsageError that names the flag', (argv, message) => {
    expect(() => parseArgs(argv)).toThrow(UsageError);
    expect(() => parseArgs(argv)).toThrow(message);
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

describe('demo depth data', () => {
  it('is a function of (seed, index), on streams of its own', () => {
    const a = depthTrainingBatch(1, 5, 2, 32);
    expect(depthTrainingBatch(1, 5, 2, 32)).toEqual(a);
    expect(depthTrainingBatch(2, 5, 2, 32).depth).not.toEqual(a.depth);
    expect(depthTrainingBatch(1, 6, 2, 32).depth).not.toEqual(a.depth);
    expect(depthTestSet(1, 2, 32).depth).not.toEqual(a.depth);
  });

  it('has depths in range, holes stored as 0, and sharp depth edges', () => {
    const set = depthTestSet(1, 16, 32);
    const valid = set.depth.filter((d) => d > 0);
    const holes = set.depth.length - valid.length;
    expect(holes / set.depth.length).toBeGreaterThan(0.005);
    expect(holes / set.depth.length).toBeLessThan(0.15);
    expect(Math.min(...valid)).toBeGreaterThanOrEqual(DEPTH_MIN);
    expect(Math.max(...valid)).toBeLessThanOrEqual(DEPTH_MAX);
    // The ground truth scored against itself finds its edges; flattened, it has none.
    const mask = Uint8Array.from(set.depth, (d) => (d > 0 ? 1 : 0));
    expect(scoreDepth(set.depth, set.depth, mask, set.n, set.size)).toEqual({ absRel: 0, rmse: 0, delta1: 1, edgeF1: 1 });
    expect(scoreDepth(new Float32Array(set.depth.length).fill(5), set.depth, mask, set.n, set.size).edgeF1).toBe(0);
  });
});

describe('demo depth metrics', () => {
  const size = 8;
  /** A plane at 4 m with a 1 px pole at 2 m in column `x`. */
  const pole = (x: number) => Float32Array.from({ length: size * size }, (_, i) => (i % size === x ? 2 : 4));
  const all = new Uint8Array(size * size).fill(1);

  it('AbsRel, RMSE and delta < 1.25 of a prediction 10% too far', () => {
    const gt = pole(3);
    const s = scoreDepth(gt.map((d) => 1.1 * d), gt, all, 1, size);
    expect(s.absRel).toBeCloseTo(0.1, 6);
    expect(s.rmse).toBeCloseTo(Math.sqrt((8 * 0.2 ** 2 + 56 * 0.4 ** 2) / 64), 6);
    expect(s.delta1).toBe(1);
    expect(s.edgeF1).toBe(1); // scaled depth keeps its edges
  });

  it('edge F1 counts a missed thin pole, within 1 px only', () => {
    const gt = pole(3);
    expect(scoreDepth(new Float32Array(size * size).fill(4), gt, all, 1, size).edgeF1).toBe(0);
    expect(scoreDepth(pole(4), gt, all, 1, size).edgeF1).toBe(1);
    expect(scoreDepth(pole(6), gt, all, 1, size).edgeF1).toBeLessThan(0.5);
  });

  it('leaves out the pixels without a measurement', () => {
    const gt = pole(3);
    const valid = Uint8Array.from(gt, (d) => (d === 2 ? 0 : 1));
    const pred = gt.map((d) => (d === 2 ? 100 : d));
    expect(scoreDepth(pred, gt, valid, 1, size)).toMatchObject({ absRel: 0, rmse: 0, delta1: 1 });
  });
});

describe('demo statistics', () => {
  it('gives the mean and the 95% Student-t interval', () => {
    const i = interval([1, 2, 3, 4, 5]);
    expect(i.mean).toBe(3);
    expect(i.sd).toBeCloseTo(Math.sqrt(2.5), 12);
    expect(i.hi - i.mean).toBeCloseTo((2.776 * Math.sqrt(2.5)) / Math.sqrt(5), 12);
    expect(i.lo).toBeCloseTo(2 * i.mean - i.hi, 12);
    expect(() => interval([1])).toThrow(/at least 2/);
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
          x: () => tf.engine().runKernel<tf.Tensor>(tf.Conv2DBackpropInput, { dy: g, filter }, { ...attrs, inputShape: x.shape }),
          filter: () => tf.engine().runKernel<tf.Tensor>(tf.Conv2DBackpropFilter, { x, dy: g }, { ...attrs, filterShape: filter.shape }),
        };
      },
    });
  });

  // Output channels 4, 8, 5 and 1 cover a full block of four, two blocks, and the remainders (the
  // heads: 5 classes, 1 depth); 3 and 4 input channels, the input gradient's remainders.
  it.each([
    [1, 1, true, 3, 8, 4],
    [2, 1, true, 3, 8, 8],
    [1, 2, true, 3, 8, 5],
    [1, 2, false, 3, 9, 4],
    [1, 1, false, 1, 7, 5],
    [1, 1, false, 1, 6, 1],
    [2, 2, true, 3, 7, 7],
  ])('inputs %i, stride %i, relu %s, a %i-wide filter on %i px, %i outputs: the value and gradients of tf.conv2d', (count, stride, relu, k, h, outC) => {
    tf.tidy(() => {
      const xs = Array.from({ length: count }, (_, i) => tf.randomNormal([2, h, h, 3 + i], 0, 1, 'float32', i + 1));
      const ws = Array.from({ length: count }, (_, i) => tf.randomNormal([k, k, 3 + i, outC], 0, 1, 'float32', 10 + i));
      const bias = tf.randomNormal([outC], 0, 1, 'float32', 99);
      const op = convOp(count, stride, relu);
      const forward = (...a: tf.Tensor[]) => op(a.slice(0, count) as tf.Tensor4D[], a.slice(count, 2 * count) as tf.Tensor4D[], a[2 * count] as tf.Tensor1D);
      const referenceForward = (...a: tf.Tensor[]) => {
        let z: tf.Tensor = tf.conv2d(a[0] as tf.Tensor4D, a[count] as tf.Tensor4D, stride, 'same');
        for (let i = 1; i < count; i++) z = tf.add(z, tf.conv2d(a[i] as tf.Tensor4D, a[count + i] as tf.Tensor4D, stride, 'same'));
        z = tf.add(z, a[2 * count]);
        return relu ? tf.relu(z) : z;
      };
      const args = [...xs, ...ws, bias];
      const relativeError = (a: tf.Tensor, b: tf.Tensor) => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / tf.max(tf.abs(b)).dataSync()[0];
      const y = forward(...args);
      const yRef = referenceForward(...args);
      expect(y.shape).toEqual(yRef.shape);
      expect(relativeError(y, yRef)).toBeLessThan(1e-6);
      const weights = tf.randomNormal(y.shape, 0, 1, 'float32', 7);
      const ours = (...a: tf.Tensor[]) => tf.sum(tf.mul(weights, forward(...a)));
      const reference = (...a: tf.Tensor[]) => tf.sum(tf.mul(weights, referenceForward(...a)));
      const a = tf.grads(ours)(args);
      const b = tf.grads(reference)(args);
      a.forEach((g, i) => {
        expect(g.shape).toEqual(b[i].shape);
        expect(relativeError(g, b[i])).toBeLessThan(1e-5);
      });
    });
  });
});

describe('npm run demo -- --quick', () => {
  let dir: string;
  const outputs: string[] = [];
  let logs: string[] = [];
  const STEPS = TEST_STEPS;
  interface ArmReport {
    name: string;
    curve: { loss: number[]; pixel: number[]; perceptual: number[] | null };
    final: Record<string, number>;
  }
  interface DemoReport {
    config: Record<string, unknown>;
    tasks: Record<string, { arms: ArmReport[] }>;
    files: Record<string, string>;
    timing?: unknown;
    provenance?: unknown;
  }
  const read = (out: string) => JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as DemoReport;

  beforeAll(async () => {
    // Compile the current sources into a scratch package (dist/ of the repo may be stale or in
    // use), next to the repo's native build and node_modules.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-demo-test-'));
    folders.push(dir);
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(repoRoot, 'tsconfig.json'), '--outDir', path.join(dir, 'dist')], {
      stdio: 'pipe',
    });
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(repoRoot, 'demo', 'tsconfig.json'), '--outDir', path.join(dir, 'dist-demo')], {
      stdio: 'pipe',
    });
    fs.cpSync(path.join(repoRoot, 'tools'), path.join(dir, 'tools'), { recursive: true });
    fs.copyFileSync(path.join(repoRoot, 'package.json'), path.join(dir, 'package.json'));
    for (const link of ['build', 'node_modules']) fs.symlinkSync(path.join(repoRoot, link), path.join(dir, link));
    // Two runs at once, on two and on three worker threads: the numbers must not depend on
    // which worker trains which arm, nor when.
    const runs = [2, 3].map(async (workers, i) => {
      const out = path.join(dir, `out${i}`);
      outputs.push(out);
      const { stdout } = await run(process.execPath, [path.join(dir, 'dist-demo', 'main.js'), '--quick', '--steps', String(STEPS), '--workers', String(workers), '--out', out], {
        cwd: dir,
      });
      return stdout;
    });
    logs = await Promise.all(runs);
  }, 1_800_000);

  it('prints the held-out tables of both tasks', () => {
    expect(logs[0]).toMatch(/mIoU\s+pixel acc\s+boundary F1/);
    expect(logs[0]).toMatch(/CE only\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}/);
    expect(logs[0]).toMatch(/CE \+ 3 x perceptual\s+\d\.\d{3}/);
    expect(logs[0]).toMatch(/AbsRel\s+RMSE \(m\)\s+δ<1\.25\s+edge F1/);
    expect(logs[0]).toMatch(/L1 only\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}/);
    expect(logs[0]).toMatch(/L1 \+ 1 x perceptual\s+\d\.\d{3}/);
  });

  it('writes report.json and four PNGs', () => {
    for (const out of outputs) {
      const report = read(out);
      expect(report.config).toMatchObject({ steps: STEPS, size: QUICK.size, testImages: QUICK.testImages, tasks: ['seg', 'depth'] });
      expect(report.tasks.seg.arms.map((a: { name: string }) => a.name)).toEqual(['CE only', 'CE + 3 x perceptual']);
      expect(report.tasks.depth.arms.map((a: { name: string }) => a.name)).toEqual(['L1 only', 'L1 + 1 x perceptual']);
      for (const task of ['seg', 'depth']) {
        const [pixel, perceptual] = report.tasks[task].arms;
        expect(pixel.curve.loss).toHaveLength(STEPS);
        expect(pixel.curve.perceptual).toBeNull();
        expect(perceptual.curve.perceptual).toHaveLength(STEPS);
        expect(perceptual.curve.perceptual?.every((v) => v > 0)).toBe(true);
      }
      for (const png of Object.values(report.files)) {
        const bytes = fs.readFileSync(path.join(out, png));
        expect(bytes.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
        expect(bytes.length).toBeGreaterThan(5000);
      }
      expect(Object.keys(report.files)).toHaveLength(4);
    }
  });

  it('segmentation: both arms beat an all-background prediction, and the arms differ', () => {
    const test = testSet(DEFAULTS.seed, QUICK.testImages, QUICK.size);
    const background = score(new Int32Array(test.labels.length), test.labels, test.n, test.size, CLASSES);
    const [pixel, perceptual] = read(outputs[0]).tasks.seg.arms;
    for (const arm of [pixel, perceptual]) {
      expect(arm.final.miou).toBeGreaterThan(background.miou + 0.02);
      expect(arm.final.boundaryF1).toBeGreaterThan(0.05); // all background has no boundary: 0
    }
    expect(perceptual.final).not.toEqual(pixel.final);
    expect(perceptual.curve.pixel).not.toEqual(pixel.curve.pixel);
  });

  it('depth: both arms beat the best constant prediction, and the arms differ', () => {
    const test = depthTestSet(DEFAULTS.seed, QUICK.testImages, QUICK.size);
    const valid = Uint8Array.from(test.depth, (d) => (d > 0 ? 1 : 0));
    const depths = [...test.depth.filter((d) => d > 0)].sort((a, b) => a - b);
    // The median minimises the mean absolute error of a constant; it has no edges at all.
    const constant = scoreDepth(new Float32Array(test.depth.length).fill(depths[depths.length >> 1]), test.depth, valid, test.n, test.size);
    const [pixel, perceptual] = read(outputs[0]).tasks.depth.arms;
    for (const arm of [pixel, perceptual]) {
      expect(arm.final.rmse).toBeLessThan(constant.rmse);
      expect(arm.final.delta1).toBeGreaterThan(constant.delta1);
      expect(arm.final.edgeF1).toBeGreaterThan(0.05);
      for (const key of ['absRel', 'rmse', 'delta1', 'edgeF1']) expect(arm.final[key]).toBeGreaterThan(0);
    }
    expect(perceptual.final).not.toEqual(pixel.final);
  });

  it('gives identical numbers for one seed, on two workers or three (all but timings and provenance)', () => {
    const [a, b] = outputs.map((out) => {
      const { timing: _timing, provenance: _provenance, config, ...rest } = read(out);
      const { workers: _workers, ...same } = config;
      return { ...rest, config: same };
    });
    expect(a).toEqual(b);
  });
});
