// The demo: its parts (flags, data, metrics, the network's conv op), two short `--quick` runs of
// segmentation and depth with one seed, which must write the same numbers, and two tiny runs of
// the vessels and instances tasks, likewise. (The new tasks' own parts: vessels.test.ts,
// instances.test.ts, model3d.test.ts.)
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_TASKS, DEFAULTS, parseArgs, QUICK, TASKS, UsageError } from '../../demo/args';
import { CLASSES, testSet, trainingBatch } from '../../demo/data';
import { DEPTH_MAX, DEPTH_MIN, depthTestSet, depthTrainingBatch } from '../../demo/depth-data';
import { scoreDepth } from '../../demo/depth-metrics';
import { interval } from '../../demo/stats';
import { ensureGradients } from '../../demo/gradients';
import { instanceTestSet } from '../../demo/instance-data';
import { scoreInstances } from '../../demo/instance-metrics';
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
  it('has defaults: the default tasks, sizes and lambdas', () => {
    expect(parseArgs([])).toEqual({ ...DEFAULTS, tasks: [...DEFAULT_TASKS], quick: false, study: false });
  });

  it('--quick presets the sizes, and explicit flags win', () => {
    expect(parseArgs(['--quick'])).toMatchObject({ ...QUICK, quick: true });
    const every = (v: number) => Object.fromEntries(TASKS.map((t) => [t, v]));
    expect(
      parseArgs(['--quick', '--steps', '7', '--size=40', '--lambda', '0.3', '--seed', '2', '--out', 'x', '--device', 'cpu', '--task', 'depth', '--workers', '3', '--threads', '2', '--volume', '8x12x16']),
    ).toEqual({
      ...DEFAULTS,
      steps: every(7),
      size: 40,
      volume: [8, 12, 16],
      lambda: every(0.3),
      seed: 2,
      out: 'x',
      device: 'cpu',
      tasks: ['depth'],
      workers: 3,
      threads: 2,
      testImages: QUICK.testImages,
      testVolumes: QUICK.testVolumes,
      quick: true,
      study: false,
    });
    expect(parseArgs(['--task', 'all'])).toMatchObject({ tasks: [...TASKS], study: false });
    // The study runs every task unless told otherwise.
    expect(parseArgs(['--study'])).toMatchObject({ tasks: [...TASKS], study: true });
    expect(parseArgs(['--study', '--task', 'seg'])).toMatchObject({ tasks: ['seg'], study: true });
    // A list, in the tasks' own order, once each.
    expect(parseArgs(['--task', 'instances,seg,instances'])).toMatchObject({ tasks: ['seg', 'instances'] });
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
    [['--task', 'flow'], /--task needs seg, depth, vessels, instances or all, or a comma-separated list of tasks; got flow/],
    [['--task', 'seg,all'], /--task needs .*; got seg,all/],
    [['--volume', '16x32'], /--volume needs DxHxW, each side a multiple of 4 and >= 8.*got 16x32/],
    [['--volume', '16x30x32'], /--volume needs DxHxW.*got 16x30x32/],
    [['--volume', '4x32x32'], /--volume needs DxHxW.*got 4x32x32/],
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
/** The report without what may differ between two runs of one seed: timings, provenance, the worker count. */
const comparable = (out: string) => {
  const { timing: _timing, provenance: _provenance, config, ...rest } = read(out);
  const { workers: _workers, ...same } = config;
  return { ...rest, config: same };
};
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * Two runs of the same flags trained the same: every held-out evaluation, final score, pixel-loss
 * value and setting bit for bit. The perceptual loss's value (not its gradient) may differ in its
 * last float32 bits: libtorch sums it over a tap's elements in one or two chunks, by its intra-op
 * threads, and 1 and 2 threads give exactly the two values seen (instances, 12 of 150 steps, in
 * 2 of 4 runs under vitest); the gradient is element-wise, so every later step is the same.
 */
function expectSameRuns(first: string, second: string): void {
  const [a, b] = [first, second].map(comparable);
  const lossless = (r: typeof a) => ({
    ...r,
    tasks: Object.fromEntries(Object.entries(r.tasks).map(([t, v]) => [t, { arms: v.arms.map(({ curve, ...arm }) => ({ ...arm, pixel: curve.pixel })) }])),
  });
  expect(lossless(a)).toEqual(lossless(b));
  for (const task of Object.keys(a.tasks)) {
    a.tasks[task].arms.forEach((arm, i) => {
      const other = b.tasks[task].arms[i].curve;
      for (const key of ['loss', 'perceptual'] as const) {
        const mine = arm.curve[key];
        if (mine === null) {
          expect(other[key]).toBeNull();
          continue;
        }
        expect(other[key]).toHaveLength(mine.length);
        mine.forEach((v, step) => expect(Math.abs(v - other[key]![step]), `${task} / ${arm.name} / ${key}, step ${step + 1}`).toBeLessThanOrEqual(2 ** -21 * Math.abs(v)));
      }
    });
  }
}

let compiled: Promise<string> | null = null;
/**
 * Compiles the current sources into a scratch package once (dist/ of the repo may be stale or in
 * use), next to the repo's native build and node_modules; resolves to its folder.
 */
function compiledDemo(): Promise<string> {
  compiled ??= (async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-demo-test-'));
    folders.push(dir);
    const tsc = (project: string, outDir: string) => run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', project, '--outDir', outDir]);
    await tsc(path.join(repoRoot, 'tsconfig.json'), path.join(dir, 'dist'));
    await tsc(path.join(repoRoot, 'demo', 'tsconfig.json'), path.join(dir, 'dist-demo'));
    fs.cpSync(path.join(repoRoot, 'tools'), path.join(dir, 'tools'), { recursive: true });
    fs.copyFileSync(path.join(repoRoot, 'package.json'), path.join(dir, 'package.json'));
    for (const link of ['build', 'node_modules']) fs.symlinkSync(path.join(repoRoot, link), path.join(dir, link));
    return dir;
  })();
  return compiled;
}

/**
 * Two runs at once of the demo with `argv`, on two and on three worker threads (the numbers must
 * not depend on which worker trains which arm, nor when); resolves to their output folders and logs.
 */
async function twoRuns(name: string, argv: string[]): Promise<{ outputs: string[]; logs: string[] }> {
  const dir = await compiledDemo();
  const outputs = [2, 3].map((workers) => path.join(dir, `${name}-${workers}`));
  const logs = await Promise.all(
    [2, 3].map(async (workers, i) => (await run(process.execPath, [path.join(dir, 'dist-demo', 'main.js'), ...argv, '--workers', String(workers), '--out', outputs[i]], { cwd: dir })).stdout),
  );
  return { outputs, logs };
}

describe('npm run demo -- --quick --task seg,depth', () => {
  let outputs: string[] = [];
  let logs: string[] = [];
  const STEPS = TEST_STEPS;

  beforeAll(async () => {
    ({ outputs, logs } = await twoRuns('quick', ['--quick', '--task', 'seg,depth', '--steps', String(STEPS)]));
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
      expect(report.config).toMatchObject({ steps: { seg: STEPS, depth: STEPS }, size: QUICK.size, testImages: QUICK.testImages, tasks: ['seg', 'depth'] });
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
        expect(bytes.subarray(0, 8)).toEqual(PNG);
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

  it('gives the same numbers for one seed, on two workers or three (all but timings and provenance)', () => {
    expectSameRuns(outputs[0], outputs[1]);
  });
});

describe('npm run demo -- --task vessels,instances, tiny', () => {
  let outputs: string[] = [];
  let logs: string[] = [];
  // Tiny: 8x16x16 volumes and 16x16 images. Enough steps for both instance arms to leave the
  // all-background answer behind (at 16x16, seed 1: BCE alone by step ~90, with the perceptual
  // term by step ~60); the vessel arms may still predict background alone.
  const STEPS = 150;
  const VOLUME = [8, 16, 16];

  beforeAll(async () => {
    ({ outputs, logs } = await twoRuns('tiny', ['--quick', '--task', 'vessels,instances', '--steps', String(STEPS), '--volume', VOLUME.join('x'), '--size', '16']));
  }, 1_800_000);

  it('prints the held-out tables of both tasks', () => {
    expect(logs[0]).toMatch(/vessels: held-out set of 4 volumes 8x16x16/);
    expect(logs[0]).toMatch(/Dice\s+clDice\s+skel\. recall\s+β0 error/);
    expect(logs[0]).toMatch(/BCE only\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}\s+\d+\.\d{3}/);
    expect(logs[0]).toMatch(/BCE \+ 1 x perceptual\s+\d\.\d{3}/);
    expect(logs[0]).toMatch(/instances: held-out set of 24 images 16x16/);
    expect(logs[0]).toMatch(/mask IoU\s+boundary F1\s+exact bd\. F1/);
  });

  it('writes report.json with both arms of each task, their curves, and four PNGs', () => {
    for (const out of outputs) {
      const report = read(out);
      expect(report.config).toMatchObject({ steps: { vessels: STEPS, instances: STEPS }, size: 16, volume: VOLUME, testVolumes: QUICK.testVolumes, tasks: ['vessels', 'instances'] });
      expect(report.tasks.vessels.arms.map((a) => a.name)).toEqual(['BCE only', 'BCE + 1 x perceptual']);
      expect(report.tasks.instances.arms.map((a) => a.name)).toEqual(['BCE only', 'BCE + 1 x perceptual']);
      for (const task of ['vessels', 'instances']) {
        const [pixel, perceptual] = report.tasks[task].arms;
        expect(pixel.curve.loss).toHaveLength(STEPS);
        expect(pixel.curve.perceptual).toBeNull();
        expect(perceptual.curve.perceptual).toHaveLength(STEPS);
        expect(perceptual.curve.perceptual?.every((v) => v > 0)).toBe(true);
        // The pixel loss (BCE) falls: the last tenth of the run against the first.
        for (const arm of [pixel, perceptual]) {
          const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
          expect(mean(arm.curve.pixel.slice(-15))).toBeLessThan(0.8 * mean(arm.curve.pixel.slice(0, 15)));
        }
        expect(perceptual.curve.pixel).not.toEqual(pixel.curve.pixel);
      }
      expect(Object.keys(report.files).sort()).toEqual(['curves-instances', 'curves-vessels', 'samples-instances', 'samples-vessels']);
      for (const png of Object.values(report.files)) {
        const bytes = fs.readFileSync(path.join(out, png));
        expect(bytes.subarray(0, 8)).toEqual(PNG);
        expect(bytes.length).toBeGreaterThan(5000);
      }
    }
  });

  it('scores in range: vessels Dice, clDice and skeleton recall in [0, 1], β0 error >= 0; instance masks well above the empty answer', () => {
    const report = read(outputs[0]);
    for (const arm of report.tasks.vessels.arms) {
      for (const key of ['dice', 'clDice', 'skeletonRecall']) {
        expect(arm.final[key]).toBeGreaterThanOrEqual(0);
        expect(arm.final[key]).toBeLessThanOrEqual(1);
      }
      expect(arm.final.betti0Error).toBeGreaterThanOrEqual(0);
    }
    // A trivial answer: each instance's seed spot (the input's second channel) above 0.5.
    const test = instanceTestSet(DEFAULTS.seed, QUICK.testImages, 16);
    const spots = Uint8Array.from({ length: test.masks.length }, (_, i) => (test.inputs[2 * i + 1] > 0.5 ? 1 : 0));
    const trivial = scoreInstances(spots, test.masks, test.m, 16);
    for (const arm of report.tasks.instances.arms) {
      expect(arm.final.maskIoU).toBeGreaterThan(trivial.maskIoU + 0.05);
      expect(arm.final.maskIoU).toBeLessThanOrEqual(1);
      for (const key of ['boundaryF1', 'boundaryF1Exact'] as const) {
        expect(arm.final[key]).toBeGreaterThan(trivial[key]);
        expect(arm.final[key]).toBeLessThanOrEqual(1);
      }
    }
  });

  it('gives the same numbers for one seed, on two workers or three (all but timings and provenance)', () => {
    expectSameRuns(outputs[0], outputs[1]);
  });
});
