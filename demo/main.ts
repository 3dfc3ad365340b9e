// `npm run demo`: does the random-weight perceptual loss help a network learn structure? For each
// of two dense tasks (segmentation, depth), trains the same small TensorFlow.js network twice,
// with the same seed, data and steps: the pixel loss alone, and the pixel loss + lambda x the
// perceptual loss. The arms train side by side in worker threads; both are scored on a held-out
// set. `--study` runs the protocol of study.ts instead. See `node dist-demo/main.js --help`.
import * as path from 'node:path';
import { parseArgs, USAGE, UsageError, type DemoArgs, type TaskName } from './args';
import { curvesSpec, type CurvePoint } from './charts';
import { BATCH, LEARNING_RATE, METRICS, PERCEPTUAL, PIXEL_LOSS, provenance, runSpec, TASK_TITLE } from './config';
import { CLASS_NAMES, testSet } from './data';
import { DEPTH_MAX, DEPTH_MIN, depthTestSet } from './depth-data';
import { EDGE_JUMP } from './depth-metrics';
import { colourDepth, colourError, colourLabels, imageBytes } from './images';
import { BOUNDARY_TOLERANCE } from './metrics';
import { setup, trainWithProgress } from './runs';
import { render, writeJson, type RenderJob } from './report';
import { runStudy } from './study';
import type { RunResult } from './train';

/** Test images shown in the sample grids. */
const SHOWN = 4;
/** Error maps saturate at this many metres. */
const ERROR_TOP = 2;

const fmt = (v: number, digits = 3) => (Number.isFinite(v) ? v.toFixed(digits) : '-');

/** Trailing mean over `window` steps: the per-step training loss is noisy. */
function smooth(values: number[], window: number): number[] {
  let sum = 0;
  return values.map((v, i) => {
    sum += v - (i >= window ? values[i - window] : 0);
    return sum / Math.min(i + 1, window);
  });
}

function printTable(task: TaskName, results: RunResult[], args: DemoArgs): void {
  const metrics = METRICS[task];
  const width = Math.max(...results.map((r) => r.spec.name.length), 3);
  const row = (cells: string[]) => console.log(`  ${cells[0].padEnd(width)}  ${cells.slice(1).map((c) => c.padStart(11)).join('  ')}`);
  const tolerance = task === 'seg' ? `boundary F1 within ${BOUNDARY_TOLERANCE} px` : `edges: depth jumps > ${EDGE_JUMP * 100}%, matched within ${BOUNDARY_TOLERANCE} px`;
  console.log(`\n${task}: held-out set of ${args.testImages} images ${args.size}x${args.size}, after ${args.steps} steps (${tolerance}):\n`);
  row(['arm', ...metrics.map((m) => m.label), 'steps/s']);
  for (const r of results) row([r.spec.name, ...metrics.map((m) => fmt(r.final[m.key])), fmt(r.spec.steps / r.seconds, 2)]);
  if (task === 'seg') {
    console.log('\n  IoU per class:');
    row(['arm', ...CLASS_NAMES]);
    for (const r of results) row([r.spec.name, ...r.perClass!.iou.map((v) => fmt(v))]);
  }
}

function curves(task: TaskName, results: RunResult[], steps: number, file: string): RenderJob['plots'][number] {
  const window = Math.max(1, Math.round(steps / 25));
  const points: CurvePoint[] = [];
  const metrics = METRICS[task];
  const series = [`training ${PIXEL_LOSS[task]} (mean of ${window} steps)`, ...metrics.map((m) => `held-out ${m.label}`)];
  for (const r of results) {
    smooth(r.curve.pixel, window).forEach((value, i) => points.push({ arm: r.spec.name, step: i + 1, value, series: series[0] }));
    for (const e of r.evals) metrics.forEach((m, k) => points.push({ arm: r.spec.name, step: e.step, value: e.metrics[m.key], series: series[k + 1] }));
  }
  const title = `${task === 'seg' ? 'Segmentation' : 'Depth'}, seed ${results[0].spec.seed}`;
  return { file, spec: curvesSpec(title, points, series, results.map((r) => r.spec.name)) };
}

/** The sample grids of one task's arms on the first held-out images. */
export function samples(task: TaskName, results: RunResult[], seed: number, args: DemoArgs, file: string): RenderJob['grids'][number] {
  const plane = args.size * args.size;
  const shown = Array.from({ length: Math.min(SHOWN, args.testImages) }, (_, i) => i);
  const tiles = (bytes: (i: number) => Buffer) => shown.map((i) => bytes(i).toString('base64'));
  if (task === 'seg') {
    const test = testSet(seed, args.testImages, args.size);
    return {
      file,
      size: args.size,
      legend: 'classes',
      panels: [
        { title: 'input', tiles: tiles((i) => imageBytes(test.images, i * plane, plane)) },
        { title: 'ground truth', tiles: tiles((i) => colourLabels(test.labels, i * plane, plane)) },
        ...results.map((r) => ({ title: r.spec.name, tiles: tiles((i) => colourLabels(r.predictions as Int32Array, i * plane, plane)) })),
      ],
    };
  }
  const test = depthTestSet(seed, args.testImages, args.size);
  const valid = Uint8Array.from(test.depth, (d) => (d > 0 ? 1 : 0));
  const range: [number, number] = [DEPTH_MIN, DEPTH_MAX];
  return {
    file,
    size: args.size,
    legend: { depth: range, error: ERROR_TOP },
    panels: [
      { title: 'input', tiles: tiles((i) => imageBytes(test.images, i * plane, plane)) },
      { title: 'ground truth', tiles: tiles((i) => colourDepth(test.depth, valid, i * plane, plane, ...range)) },
      ...results.map((r) => ({ title: r.spec.name, tiles: tiles((i) => colourDepth(r.predictions!, null, i * plane, plane, ...range)) })),
      ...results.map((r) => ({ title: `error, ${PIXEL_LOSS[task]}${r.spec.lambda > 0 ? ' + perc.' : ' only'}`, tiles: tiles((i) => colourError(r.predictions!, test.depth, valid, i * plane, plane, ERROR_TOP)) })),
    ],
  };
}

async function demo(args: DemoArgs, start: number): Promise<void> {
  const seed = args.seed;
  // Read before training: a commit made while the demo runs must not be credited with its numbers.
  const prov = provenance();
  console.log(`Seed ${seed}, ${args.size}x${args.size} images, ${args.steps} steps of ${BATCH} images per arm, Adam ${LEARNING_RATE}; ${args.workers} worker threads.`);
  for (const task of args.tasks) console.log(`  ${task}: ${TASK_TITLE[task]}; lambda ${args.lambda[task]}.`);
  console.log(`Perceptual loss: random-weight ${JSON.stringify(PERCEPTUAL.arch)}, taps ${PERCEPTUAL.layers.join(', ')}, l2, seeded by --seed.\n`);

  const specs = args.tasks.flatMap((task) => [runSpec(args, task, seed, 0, null, true), runSpec(args, task, seed, args.lambda[task], PERCEPTUAL, true)]);
  const results = await trainWithProgress(specs, args);
  const byTask = (task: TaskName) => results.filter((r) => r.spec.task === task);
  for (const task of args.tasks) printTable(task, byTask(task), args);

  const out = path.resolve(args.out);
  const files: Record<string, string> = {};
  const job: RenderJob = { plots: [], grids: [] };
  for (const task of args.tasks) {
    files[`curves-${task}`] = `curves-${task}.png`;
    files[`samples-${task}`] = `samples-${task}.png`;
    job.plots.push(curves(task, byTask(task), args.steps, path.join(out, `curves-${task}.png`)));
    job.grids.push(samples(task, byTask(task), seed, args, path.join(out, `samples-${task}.png`)));
  }
  const seconds = (performance.now() - start) / 1000;
  writeJson(path.join(out, 'report.json'), {
    // Everything but `timing` and `provenance` depends on the flags alone: two runs with one seed match.
    demo: 'pixel loss vs pixel loss + lambda x random-weight perceptual loss, on segmentation and depth',
    config: { seed, steps: args.steps, size: args.size, testImages: args.testImages, lambda: args.lambda, tasks: args.tasks, ...setup(args) },
    tasks: Object.fromEntries(
      args.tasks.map((task) => [
        task,
        {
          arms: byTask(task).map((r) => ({
            name: r.spec.name,
            lambda: r.spec.lambda,
            final: r.final,
            perClass: r.perClass,
            evals: r.evals,
            curve: r.curve,
            perceptual: r.perceptualOptions,
            parameters: r.parameterCount,
          })),
        },
      ]),
    ),
    files,
    timing: {
      totalSeconds: seconds,
      arms: results.map((r) => ({ task: r.spec.task, name: r.spec.name, seconds: r.seconds, stepsPerSecond: r.spec.steps / r.seconds })),
    },
    provenance: prov,
  });
  render(job);
  console.log(`\nWrote ${path.join(args.out, 'report.json')} and ${Object.values(files).join(', ')}.`);
  console.log(`Done in ${((performance.now() - start) / 1000).toFixed(1)} s.`);
}

async function main(): Promise<void> {
  let args: DemoArgs | null;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (args === null) {
    console.log(USAGE);
    return;
  }
  const start = performance.now();
  if (args.study) await runStudy(args, start);
  else await demo(args, start);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}

