// Command-line flags of `npm run demo`, read with Node's own util.parseArgs; the values are
// checked here, so a bad flag is a UsageError with the flag's name, not a crash mid-run.
import { parseArgs as parseNodeArgs } from 'node:util';
import type { DeviceSpec } from 'generic-perceptual-loss';
import type { VolumeShape } from './vessel-data';

export type TaskName = 'seg' | 'depth' | 'vessels' | 'instances';
export const TASKS: readonly TaskName[] = ['seg', 'depth', 'vessels', 'instances'];

export interface DemoArgs {
  tasks: TaskName[];
  /** Training steps per arm, per task; --steps sets all. */
  steps: Record<TaskName, number>;
  /** Image side of the 2-D tasks (seg, depth, instances). */
  size: number;
  /** [D, H, W] of the vessels task's volumes. */
  volume: VolumeShape;
  /** Weight of the perceptual term per task; --lambda sets all. */
  lambda: Record<TaskName, number>;
  seed: number;
  device: DeviceSpec;
  quick: boolean;
  study: boolean;
  out: string;
  /** libtorch CPU threads for the perceptual loss, in each worker. */
  threads: number;
  /** Worker threads training arms side by side. */
  workers: number;
  /** Images in the held-out set (seg, depth, instances). */
  testImages: number;
  /** Volumes in the vessels task's held-out set. */
  testVolumes: number;
}

/**
 * What a run without --task trains: segmentation, the vessels in 3-D and the instance masks, one
 * task of each kind the package serves (2-D class maps, volumes, instance masks). All four tasks
 * did not fit 240 s on every 2-core machine (275 s on an AMD EPYC Zen 3, 176 s on an Intel Xeon;
 * docs/demo-results.md). Depth, a second dense 2-D map on the same U-Net as segmentation, shows
 * the least that the others do not, and runs with --task all or --task depth. --study, the
 * evidence, runs all four unless --task says otherwise.
 */
export const DEFAULT_TASKS: readonly TaskName[] = ['seg', 'vessels', 'instances'];

/**
 * The default run: 6 arms (3 tasks x 2 losses) on 2 workers, which fits 240 s on 2 cores (see
 * docs/demo-results.md for the timings). seg and depth: 24x24 and 400 steps; segmentation
 * predicts background alone for the first ~170 steps at this size (seed 1), so fewer steps would
 * compare two trivial answers. vessels: 16x32x32 volumes and 200 steps of 2 (a step costs ~0.2 s
 * of CPU; both arms leave the all-background answer by step ~100). instances: 24x24 and 300
 * steps (held-out mask IoU stops rising at ~240).
 */
export const DEFAULTS = {
  steps: { seg: 400, depth: 400, vessels: 200, instances: 300 } as Record<TaskName, number>,
  size: 24,
  volume: [16, 32, 32] as VolumeShape,
  lambda: { seg: 3, depth: 1, vessels: 1, instances: 1 } as Record<TaskName, number>,
  seed: 1,
  device: 'auto' as DeviceSpec,
  out: 'demo-out',
  testImages: 48,
  testVolumes: 8,
  threads: 1,
  workers: 2,
};
/**
 * --quick: a shorter run, a check that everything works (segmentation and vessels still predict
 * background alone); --steps, --size and --volume still apply.
 */
export const QUICK = { steps: { seg: 100, depth: 100, vessels: 60, instances: 100 } as Record<TaskName, number>, size: 24, testImages: 24, testVolumes: 4 };

const perTask = (values: Record<TaskName, number>) => TASKS.map((t) => `${t} ${values[t]}`).join(', ');
const shape = (v: VolumeShape) => v.join('x');

export const USAGE = `Usage: npm run demo -- [flags]   (or node dist-demo/main.js [flags])

Trains small networks (TensorFlow.js, CPU backend) on synthetic tasks, each twice with the
same seed, data and steps: the pixel loss alone, and the pixel loss + lambda x the random-weight
perceptual loss. Segmentation: cross-entropy, scored by mIoU, pixel accuracy and boundary F1.
Depth: masked L1, scored by AbsRel, RMSE, delta < 1.25 and depth-edge F1. Vessels (3-D volumes,
a 3-D network and a 3-D perceptual loss): binary cross-entropy, scored by Dice, clDice, skeleton
recall and the error in the number of pieces. Instances (one mask per instance, given a seed
point): binary cross-entropy, scored by mask IoU and boundary F1 (within 1 px, and exact). The
arms train side by side in worker threads. Writes a report and PNGs.

  --task T       seg | depth | vessels | instances | all, or a comma-separated list (default
                 ${DEFAULT_TASKS.join(',')}; all with --study)
  --steps N      training steps per arm, every task (default ${perTask(DEFAULTS.steps)};
                 with --quick ${perTask(QUICK.steps)})
  --size N       image side of seg, depth and instances, a multiple of 4, >= 16 (default ${DEFAULTS.size})
  --volume DxHxW the vessels volumes, each side a multiple of 4, >= 8 (default ${shape(DEFAULTS.volume)})
  --lambda X     weight of the perceptual term, every task (default ${perTask(DEFAULTS.lambda)})
  --seed N       seeds the data, the networks' initial weights and the perceptual loss (default ${DEFAULTS.seed})
  --device D     where the perceptual loss runs: auto | cpu | cuda | cuda:N (default auto)
  --quick        a short run: ${QUICK.size}x${QUICK.size} images, the steps above, ${QUICK.testImages} held-out images, ${QUICK.testVolumes} held-out volumes
  --study        the protocol: lambda and taps chosen on validation seeds, then 5 held-out seeds
                 with the one-block ablation; mean, 95% CI and paired differences (long)
  --out DIR      output folder (default ${DEFAULTS.out})
  --workers N    worker threads, one arm each at a time (default ${DEFAULTS.workers})
  --threads N    libtorch CPU threads for the perceptual loss, per worker (default ${DEFAULTS.threads})
  --help         this text`;

export class UsageError extends Error {}

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  quick: { type: 'boolean' },
  study: { type: 'boolean' },
  task: { type: 'string' },
  steps: { type: 'string' },
  size: { type: 'string' },
  volume: { type: 'string' },
  lambda: { type: 'string' },
  seed: { type: 'string' },
  device: { type: 'string' },
  out: { type: 'string' },
  workers: { type: 'string' },
  threads: { type: 'string' },
} as const;

function integer(flag: string, text: string, min: number): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isSafeInteger(value) || value < min) throw new UsageError(`--${flag} needs an integer >= ${min}; got ${text}.`);
  return value;
}

/** Parses argv (without node and the script); null for --help. */
export function parseArgs(argv: readonly string[]): DemoArgs | null {
  let values: ReturnType<typeof parseNodeArgs<{ args: string[]; options: typeof OPTIONS; strict: true; allowPositionals: false }>>['values'];
  try {
    ({ values } = parseNodeArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (error) {
    // Unknown flags, a missing value, a stray positional: Node's message names the culprit.
    throw new UsageError((error as Error).message);
  }
  if (values.help) return null;
  const quick = values.quick ?? false;
  const base = quick ? { ...DEFAULTS, ...QUICK } : DEFAULTS;
  const args: DemoArgs = { ...base, steps: { ...base.steps }, lambda: { ...base.lambda }, tasks: values.study ? [...TASKS] : [...DEFAULT_TASKS], quick, study: values.study ?? false };
  if (values.task !== undefined) {
    const names = values.task.split(',').map((t) => t.trim());
    if (names.length === 1 && names[0] === 'all') args.tasks = [...TASKS];
    else {
      const unknown = names.find((t) => !(TASKS as readonly string[]).includes(t));
      if (unknown !== undefined || names.length === 0) throw new UsageError(`--task needs ${TASKS.join(', ')} or all, or a comma-separated list of tasks; got ${values.task}.`);
      // In the tasks' own order, once each.
      args.tasks = TASKS.filter((t) => names.includes(t));
    }
  }
  if (values.steps !== undefined) {
    const steps = integer('steps', values.steps, 1);
    args.steps = Object.fromEntries(TASKS.map((t) => [t, steps])) as Record<TaskName, number>;
  }
  if (values.size !== undefined) {
    const size = integer('size', values.size, 16);
    if (size % 4 !== 0) throw new UsageError(`--size must be a multiple of 4 (the network halves it twice); got ${size}.`);
    args.size = size;
  }
  if (values.volume !== undefined) {
    const sides = values.volume.split('x');
    const numbers = sides.map(Number);
    if (sides.length !== 3 || sides.some((t) => t.trim() === '') || numbers.some((v) => !Number.isSafeInteger(v) || v < 8 || v % 4 !== 0)) {
      throw new UsageError(`--volume needs DxHxW, each side a multiple of 4 and >= 8 (the network halves it, the perceptual network pools it twice); got ${values.volume}.`);
    }
    args.volume = numbers as unknown as VolumeShape;
  }
  if (values.seed !== undefined) args.seed = integer('seed', values.seed, 0);
  if (values.threads !== undefined) args.threads = integer('threads', values.threads, 1);
  if (values.workers !== undefined) args.workers = integer('workers', values.workers, 1);
  if (values.lambda !== undefined) {
    const lambda = Number(values.lambda);
    if (values.lambda.trim() === '' || !Number.isFinite(lambda) || lambda <= 0) throw new UsageError(`--lambda needs a number > 0; got ${values.lambda}.`);
    args.lambda = Object.fromEntries(TASKS.map((t) => [t, lambda])) as Record<TaskName, number>;
  }
  if (values.device !== undefined) {
    if (!/^(auto|cpu|cuda(:\d+)?)$/.test(values.device)) throw new UsageError(`--device needs auto, cpu, cuda or cuda:N; got ${values.device}.`);
    args.device = values.device as DeviceSpec;
  }
  if (values.out !== undefined) {
    if (values.out === '') throw new UsageError('--out needs a folder.');
    args.out = values.out;
  }
  return args;
}
