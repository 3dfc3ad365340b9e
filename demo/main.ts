// `npm run demo`: does the random-weight perceptual loss help a network learn structure? For each
// task (segmentation, depth, vessels in 3-D volumes, instance masks), trains the same small
// TensorFlow.js network twice, with the same seed, data and steps: the pixel loss alone, and the
// pixel loss + lambda x the perceptual loss. The arms train side by side in worker threads; both
// are scored on a held-out set. `--study` runs the protocol of study.ts instead. See
// `node dist-demo/main.js --help`.
import * as path from 'node:path';
import { parseArgs, USAGE, UsageError, type DemoArgs, type TaskName } from './args';
import { curvesSpec, type CurvePoint } from './charts';
import { BATCH, LEARNING_RATE, METRICS, PIXEL_LOSS, perceptualFor, provenance, runSpec, TASK_TITLE } from './config';
import { CLASS_NAMES, testSet } from './data';
import { DEPTH_MAX, DEPTH_MIN, depthTestSet } from './depth-data';
import { EDGE_JUMP } from './depth-metrics';
import {
  CLAIMED_TWICE,
  colourDepth,
  colourError,
  colourInstanceErrors,
  colourInstances,
  colourLabels,
  colourVolumeErrors,
  greyBytes,
  imageBytes,
  INSTANCE_PALETTE,
  mip,
  OUTCOME,
} from './images';
import { instanceTestSet } from './instance-data';
import { BOUNDARY_TOLERANCE } from './metrics';
import { vesselTestSet } from './vessel-data';
import { setup, trainWithProgress } from './runs';
import { render, writeJson, type RenderJob, type Swatch } from './report';
import { runStudy } from './study';
import type { RunResult } from './train';

/** Test images shown in the sample grids. */
const SHOWN = 4;
/** The seed pixels on the instance task's input: black, on shapes of grey 0.6 to 0.8. */
const SEED_MARK = [0, 0, 0] as const;
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

/** What a task's held-out set is, and how its boundary or connectivity scores are defined. */
function heldOut(task: TaskName, args: DemoArgs): string {
  const images = `${args.testImages} images ${args.size}x${args.size}`;
  switch (task) {
    case 'seg':
      return `${images} (boundary F1 within ${BOUNDARY_TOLERANCE} px)`;
    case 'depth':
      return `${images} (edges: depth jumps > ${EDGE_JUMP * 100}%, matched within ${BOUNDARY_TOLERANCE} px)`;
    case 'vessels':
      return `${args.testVolumes} volumes ${args.volume.join('x')} (clDice and skeleton recall on 3-D thinning skeletons; β0 error: |26-connected pieces - true pieces| per volume)`;
    case 'instances':
      return `${images}, every instance in them (boundary F1 within ${BOUNDARY_TOLERANCE} px and exact, per instance)`;
  }
}

function printTable(task: TaskName, results: RunResult[], args: DemoArgs): void {
  const metrics = METRICS[task];
  const width = Math.max(...results.map((r) => r.spec.name.length), 3);
  const row = (cells: string[]) => console.log(`  ${cells[0].padEnd(width)}  ${cells.slice(1).map((c) => c.padStart(11)).join('  ')}`);
  console.log(`\n${task}: held-out set of ${heldOut(task, args)}, after ${args.steps[task]} steps:\n`);
  row(['arm', ...metrics.map((m) => m.label), 'steps/s']);
  for (const r of results) row([r.spec.name, ...metrics.map((m) => fmt(r.final[m.key])), fmt(r.spec.steps / r.seconds, 2)]);
  if (task === 'seg') {
    console.log('\n  IoU per class:');
    row(['arm', ...CLASS_NAMES]);
    for (const r of results) row([r.spec.name, ...r.perClass!.iou.map((v) => fmt(v))]);
  }
}

const TITLES: Record<TaskName, string> = { seg: 'Segmentation', depth: 'Depth', vessels: 'Vessels (3-D)', instances: 'Instance masks' };

function curves(task: TaskName, results: RunResult[], steps: number, file: string): RenderJob['plots'][number] {
  const window = Math.max(1, Math.round(steps / 25));
  const points: CurvePoint[] = [];
  const metrics = METRICS[task];
  const series = [`training ${PIXEL_LOSS[task]} (mean of ${window} steps)`, ...metrics.map((m) => `held-out ${m.label}`)];
  for (const r of results) {
    smooth(r.curve.pixel, window).forEach((value, i) => points.push({ arm: r.spec.name, step: i + 1, value, series: series[0] }));
    for (const e of r.evals) metrics.forEach((m, k) => points.push({ arm: r.spec.name, step: e.step, value: e.metrics[m.key], series: series[k + 1] }));
  }
  const title = `${TITLES[task]}, seed ${results[0].spec.seed}`;
  return { file, spec: curvesSpec(title, points, series, results.map((r) => r.spec.name)) };
}

/** The error colours' legend. */
const OUTCOME_SWATCHES = (thing: string): Swatch[] => [
  { rgb: OUTCOME.hit, label: `${thing} found` },
  { rgb: OUTCOME.falseNegative, label: `${thing} missed` },
  { rgb: OUTCOME.falsePositive, label: `spurious ${thing}` },
  { rgb: OUTCOME.both, label: 'both' },
];

/** "errors, BCE only" / "errors, BCE + perc." */
const errorTitle = (task: TaskName, r: RunResult) => `errors, ${PIXEL_LOSS[task]}${r.spec.lambda > 0 ? ' + perc.' : ' only'}`;

/** The sample grids of one task's arms on the first held-out images (volumes: projections). */
export function samples(task: TaskName, results: RunResult[], seed: number, args: DemoArgs, file: string): RenderJob['grids'][number] {
  const plane = args.size * args.size;
  const count = task === 'vessels' ? args.testVolumes : args.testImages;
  const shown = Array.from({ length: Math.min(SHOWN, count) }, (_, i) => i);
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
  if (task === 'vessels') {
    const shape = args.volume;
    const test = vesselTestSet(seed, args.testVolumes, shape);
    const pixels = shape[1] * shape[2];
    // The input's projection on a fixed scale: background near 0.1, vessels near 0.5 + noise.
    const inputTile = (i: number) => greyBytes(mip(test.volumes, i, shape), 0, pixels, 0, 1.5);
    const binary = (r: RunResult) => Uint8Array.from(r.predictions!, (p) => (p > 0.5 ? 1 : 0));
    return {
      file,
      size: shape[2],
      height: shape[1],
      legend: { swatches: OUTCOME_SWATCHES('vessel') },
      panels: [
        { title: 'input (MIP)', tiles: tiles(inputTile) },
        { title: 'ground truth (MIP)', tiles: tiles((i) => greyBytes(mip(test.labels, i, shape), 0, pixels, 0, 1)) },
        ...results.map((r) => ({ title: `${r.spec.name} (MIP)`, tiles: tiles((i) => greyBytes(mip(r.predictions!, i, shape), 0, pixels, 0, 1)) })),
        ...results.map((r) => {
          const pred = binary(r);
          return { title: errorTitle(task, r), tiles: tiles((i) => colourVolumeErrors(pred, test.labels, i, shape)) };
        }),
      ],
    };
  }
  if (task === 'instances') {
    const test = instanceTestSet(seed, args.testImages, args.size);
    // The instances of image i, as readers of a mask (truth) or of a prediction's probabilities.
    const ofImage = (i: number) => Array.from(test.owner.keys()).filter((k) => test.owner[k] === i);
    const reader = (values: ArrayLike<number>, k: number) => (p: number) => values[k * plane + p];
    const inputTile = (i: number) => {
      const bytes = greyBytes(test.images, i * plane, plane, 0, 1);
      for (const k of ofImage(i)) bytes.set(SEED_MARK, 3 * test.seeds[k]);
      return bytes;
    };
    const predicted = (r: RunResult, i: number) => ofImage(i).map((k) => reader(r.predictions!, k));
    const truth = (i: number) => ofImage(i).map((k) => reader(test.masks, k));
    return {
      file,
      size: args.size,
      legend: {
        swatches: [
          { rgb: SEED_MARK, label: 'seed (input)' },
          { rgb: INSTANCE_PALETTE[0], label: 'an instance' },
          { rgb: CLAIMED_TWICE, label: 'claimed twice' },
          ...OUTCOME_SWATCHES('mask').slice(1, 3),
        ],
      },
      panels: [
        { title: 'input and seeds', tiles: tiles(inputTile) },
        { title: 'ground truth', tiles: tiles((i) => colourInstances(truth(i), plane)) },
        ...results.map((r) => ({ title: r.spec.name, tiles: tiles((i) => colourInstances(predicted(r, i), plane)) })),
        ...results.map((r) => ({ title: errorTitle(task, r), tiles: tiles((i) => colourInstanceErrors(predicted(r, i), truth(i), plane)) })),
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
  console.log(`Seed ${seed}, Adam ${LEARNING_RATE}; ${args.workers} worker threads.`);
  for (const task of args.tasks) {
    const p = perceptualFor(task);
    const data = task === 'vessels' ? `${args.volume.join('x')} volumes` : `${args.size}x${args.size} images`;
    console.log(`  ${task}: ${TASK_TITLE[task]}.`);
    console.log(`    ${data}, ${args.steps[task]} steps of ${BATCH[task]}${task === 'instances' ? ' masks' : ''}; lambda ${args.lambda[task]}; perceptual loss: random-weight ${task === 'vessels' ? '3-D ' : ''}${JSON.stringify(p.arch)}, taps ${p.layers.join(', ')}, l2, seeded by --seed.`);
  }
  console.log('');

  const specs = args.tasks.flatMap((task) => [runSpec(args, task, seed, 0, null, true), runSpec(args, task, seed, args.lambda[task], perceptualFor(task), true)]);
  const results = await trainWithProgress(specs, args);
  const byTask = (task: TaskName) => results.filter((r) => r.spec.task === task);
  for (const task of args.tasks) printTable(task, byTask(task), args);

  const out = path.resolve(args.out);
  const files: Record<string, string> = {};
  const job: RenderJob = { plots: [], grids: [] };
  for (const task of args.tasks) {
    files[`curves-${task}`] = `curves-${task}.png`;
    files[`samples-${task}`] = `samples-${task}.png`;
    job.plots.push(curves(task, byTask(task), args.steps[task], path.join(out, `curves-${task}.png`)));
    job.grids.push(samples(task, byTask(task), seed, args, path.join(out, `samples-${task}.png`)));
  }
  const seconds = (performance.now() - start) / 1000;
  writeJson(path.join(out, 'report.json'), {
    // Everything but `timing` and `provenance` depends on the flags alone: two runs with one seed match.
    demo: 'pixel loss vs pixel loss + lambda x random-weight perceptual loss, on segmentation, depth, 3-D vessels and instance masks',
    config: {
      seed,
      steps: args.steps,
      size: args.size,
      volume: args.volume,
      testImages: args.testImages,
      testVolumes: args.testVolumes,
      lambda: args.lambda,
      tasks: args.tasks,
      ...setup(args),
    },
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

