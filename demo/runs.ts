// Running the demo's arms with progress, and what every report says about the set-up.
import cliProgress from 'cli-progress';
import { runtime } from 'generic-perceptual-loss';
import type { DemoArgs, TaskName } from './args';
import { BATCH, LEARNING_RATE, ONE_BLOCK, ONE_BLOCK_3D, PERCEPTUAL, PERCEPTUAL_3D, WIDTH } from './config';
import { EDGE_JUMP } from './depth-metrics';
import { BOUNDARY_TOLERANCE } from './metrics';
import { runAll } from './pool';
import type { RunResult, RunSpec } from './train';

/**
 * CPU seconds per training step at the default sizes, without and with the perceptual term (the
 * default run at fbd6adf on the idle 2-core Xeon). Only the order in which runs are handed out
 * depends on them, never a result.
 */
const STEP_SECONDS: Record<TaskName, [number, number]> = { seg: [0.1, 0.118], depth: [0.08, 0.099], vessels: [0.207, 0.289], instances: [0.094, 0.104] };

/** A run's expected training time, in seconds, scaled from the default sizes by its pixels or voxels. */
export function expectedSeconds(spec: RunSpec): number {
  const scale = spec.volume ? (spec.volume[0] * spec.volume[1] * spec.volume[2]) / (16 * 32 * 32) : (spec.size / 24) ** 2;
  return spec.steps * STEP_SECONDS[spec.task][spec.lambda > 0 && spec.perceptual ? 1 : 0] * scale;
}

/**
 * Runs the specs on the worker pool, with one progress bar per run on a terminal, else a line per
 * finished run. The longest runs are handed out first, so that the workers finish together; the
 * results come back in the specs' order.
 */
export async function trainWithProgress(specs: RunSpec[], args: DemoArgs, onResult: (result: RunResult) => void = () => {}): Promise<RunResult[]> {
  const label = (s: RunSpec) => `${s.task} seed ${s.seed} ${s.name}`;
  const width = Math.max(...specs.map((s) => label(s).length));
  const tty = process.stderr.isTTY;
  const multi = tty
    ? new cliProgress.MultiBar(
        { format: '{arm} |{bar}| {value}/{total} | loss {loss} | {duration_formatted}', hideCursor: true, clearOnComplete: false },
        cliProgress.Presets.shades_classic,
      )
    : null;
  const bars = new Map<number, cliProgress.SingleBar>();
  // Longest first (a stable sort: equal runs keep their order).
  const order = specs.map((_, i) => i).sort((a, b) => expectedSeconds(specs[b]) - expectedSeconds(specs[a]));
  const sorted = order.map((i) => specs[i]);
  const results = await runAll(sorted, args.workers, args.threads, {
    onStart: (i, s) => {
      if (multi) bars.set(i, multi.create(s.steps, 0, { arm: label(s).padEnd(width), loss: '-' }));
    },
    onProgress: (i, step, loss) => bars.get(i)?.update(step, { loss: loss.toFixed(4) }),
    onResult: (i, r) => {
      onResult(r);
      if (multi) bars.get(i)?.stop();
      else console.log(`${label(sorted[i]).padEnd(width)}  ${r.spec.steps} steps in ${r.seconds.toFixed(1)} s (${(r.spec.steps / r.seconds).toFixed(2)} steps/s)`);
    },
  });
  multi?.stop();
  const back = new Array<RunResult>(specs.length);
  order.forEach((i, k) => (back[i] = results[k]));
  return back;
}

/** What every report says about the set-up. */
export function setup(args: DemoArgs): Record<string, unknown> {
  const info = runtime();
  return {
    libtorch: info.libtorch.version,
    perceptualDevice: args.device,
    network: {
      kind: 'two-level U-Net (2-D; 3-D for vessels), tfjs-core CPU backend, the demo\'s own conv loops',
      width: WIDTH,
      batch: BATCH,
      optimizer: `Adam ${LEARNING_RATE}, 5% linear warm-up`,
    },
    perceptual: PERCEPTUAL,
    ablation: ONE_BLOCK,
    perceptual3d: PERCEPTUAL_3D,
    ablation3d: ONE_BLOCK_3D,
    boundaryTolerance: BOUNDARY_TOLERANCE,
    depthEdgeJump: EDGE_JUMP,
    workers: args.workers,
    threadsPerWorker: args.threads,
  };
}

