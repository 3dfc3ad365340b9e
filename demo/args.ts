// Command-line flags of `npm run demo`, read with Node's own util.parseArgs; the values are
// checked here, so a bad flag is a UsageError with the flag's name, not a crash mid-run.
import { parseArgs as parseNodeArgs } from 'node:util';
import type { DeviceSpec } from 'generic-perceptual-loss';

export type TaskName = 'seg' | 'depth';
export const TASKS: readonly TaskName[] = ['seg', 'depth'];

export interface DemoArgs {
  tasks: TaskName[];
  steps: number;
  size: number;
  /** Weight of the perceptual term per task; --lambda sets both. */
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
  /** Images in the held-out set. */
  testImages: number;
}

/**
 * The default run: 4 arms (2 tasks x 2 losses) on 2 workers, 2 arms per core in turn. 24x24 and
 * 400 steps: at 24x24 a step costs ~0.2 s of CPU, so the run fits 240 s on 2 cores; segmentation
 * predicts background alone for the first ~170 steps at this size (seed 1), so fewer steps would
 * compare two trivial answers.
 */
export const DEFAULTS = {
  steps: 400,
  size: 24,
  lambda: { seg: 3, depth: 1 } as Record<TaskName, number>,
  seed: 1,
  device: 'auto' as DeviceSpec,
  out: 'demo-out',
  testImages: 48,
  threads: 1,
  workers: 2,
};
/** --quick: a shorter run, a check that everything works (segmentation is still all background); --steps and --size still apply. */
export const QUICK = { steps: 100, size: 24, testImages: 24 };

export const USAGE = `Usage: npm run demo -- [flags]   (or node dist-demo/main.js [flags])

Trains small networks (TensorFlow.js, CPU backend) on two synthetic dense tasks, each twice with
the same seed, data and steps: the pixel loss alone, and the pixel loss + lambda x the
random-weight perceptual loss. Segmentation: cross-entropy, scored by mIoU, pixel accuracy and
boundary F1. Depth: masked L1, scored by AbsRel, RMSE, delta < 1.25 and depth-edge F1. The arms
train side by side in worker threads. Writes a report and PNGs.

  --task T       seg | depth | all (default all)
  --steps N      training steps per arm (default ${DEFAULTS.steps}; ${QUICK.steps} with --quick)
  --size N       image side in pixels, a multiple of 4, >= 16 (default ${DEFAULTS.size}; ${QUICK.size} with --quick)
  --lambda X     weight of the perceptual term, both tasks (default seg ${DEFAULTS.lambda.seg}, depth ${DEFAULTS.lambda.depth})
  --seed N       seeds the data, the networks' initial weights and the perceptual loss (default ${DEFAULTS.seed})
  --device D     where the perceptual loss runs: auto | cpu | cuda | cuda:N (default auto)
  --quick        a short run: ${QUICK.size}x${QUICK.size} images, ${QUICK.steps} steps, ${QUICK.testImages} held-out images
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
  const args: DemoArgs = { ...base, lambda: { ...base.lambda }, tasks: [...TASKS], quick, study: values.study ?? false };
  if (values.task !== undefined) {
    if (values.task === 'all') args.tasks = [...TASKS];
    else if ((TASKS as readonly string[]).includes(values.task)) args.tasks = [values.task as TaskName];
    else throw new UsageError(`--task needs seg, depth or all; got ${values.task}.`);
  }
  if (values.steps !== undefined) args.steps = integer('steps', values.steps, 1);
  if (values.size !== undefined) {
    const size = integer('size', values.size, 16);
    if (size % 4 !== 0) throw new UsageError(`--size must be a multiple of 4 (the network halves it twice); got ${size}.`);
    args.size = size;
  }
  if (values.seed !== undefined) args.seed = integer('seed', values.seed, 0);
  if (values.threads !== undefined) args.threads = integer('threads', values.threads, 1);
  if (values.workers !== undefined) args.workers = integer('workers', values.workers, 1);
  if (values.lambda !== undefined) {
    const lambda = Number(values.lambda);
    if (values.lambda.trim() === '' || !Number.isFinite(lambda) || lambda <= 0) throw new UsageError(`--lambda needs a number > 0; got ${values.lambda}.`);
    args.lambda = { seg: lambda, depth: lambda };
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
