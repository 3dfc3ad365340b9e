// What the demo trains: the networks' sizes, the perceptual losses compared, and the arms.
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import type { DemoArgs, TaskName } from './args';
import type { PerceptualSpec, RunSpec } from './train';

/**
 * The perceptual network: VGG-style, three blocks, random weights (kaiming normal, seeded), taps
 * at the last ReLU of each block. Narrower than vgg19 so a step costs ~10% of the network's own
 * step on one CPU core; three blocks see ~40 px, the scale of the shapes.
 */
export const PERCEPTUAL: PerceptualSpec = { arch: [32, 32, 'M', 64, 64, 'M', 128, 128, 'M'], layers: ['relu1_2', 'relu2_2', 'relu3_2'] };
/** The paper's ablation: the same structure and weights' law, depth removed (one conv block). */
export const ONE_BLOCK: PerceptualSpec = { arch: [32, 32, 'M'], layers: ['relu1_2'] };
export const BATCH = 6;
export const LEARNING_RATE = 1e-2;
/** Channels at full resolution of the networks. */
export const WIDTH = 8;

export const PIXEL_LOSS: Record<TaskName, string> = { seg: 'CE', depth: 'L1' };
export const TASK_TITLE: Record<TaskName, string> = {
  seg: 'Segmentation of synthetic shapes (background, disc, ring, cross, racket)',
  depth: 'Depth of synthetic scenes (ground plane, discs, boxes, thin poles and bars; sensor holes masked)',
};
/** Held-out metrics per task, with their labels and which way is better. */
export const METRICS: Record<TaskName, Array<{ key: string; label: string; higher: boolean }>> = {
  seg: [
    { key: 'miou', label: 'mIoU', higher: true },
    { key: 'pixelAccuracy', label: 'pixel acc', higher: true },
    { key: 'boundaryF1', label: 'boundary F1', higher: true },
  ],
  depth: [
    { key: 'absRel', label: 'AbsRel', higher: false },
    { key: 'rmse', label: 'RMSE (m)', higher: false },
    { key: 'delta1', label: 'δ<1.25', higher: true },
    { key: 'edgeF1', label: 'edge F1', higher: true },
  ],
};

export function armName(task: TaskName, lambda: number, perceptual: PerceptualSpec | null = PERCEPTUAL): string {
  if (lambda === 0 || perceptual === null) return `${PIXEL_LOSS[task]} only`;
  const which = perceptual === ONE_BLOCK ? 'one-block perceptual' : perceptual.layers.length === PERCEPTUAL.layers.length ? 'perceptual' : `perceptual (${perceptual.layers.join(',')})`;
  return `${PIXEL_LOSS[task]} + ${lambda} x ${which}`;
}

export function runSpec(args: DemoArgs, task: TaskName, seed: number, lambda: number, perceptual: PerceptualSpec | null, keepPredictions: boolean): RunSpec {
  return {
    task,
    name: armName(task, lambda, perceptual),
    seed,
    steps: args.steps,
    size: args.size,
    batch: BATCH,
    learningRate: LEARNING_RATE,
    width: WIDTH,
    testImages: args.testImages,
    evalEvery: Math.max(1, Math.round(args.steps / 10)),
    lambda: perceptual ? lambda : 0,
    perceptual,
    device: args.device,
    keepPredictions,
  };
}

/** The machine and the code a report comes from. */
export function provenance(): { machine: { cpu: string; cores: number; platform: string; node: string }; commit: string | null; dirty: boolean | null } {
  const cpus = os.cpus();
  const root = path.resolve(__dirname, '..');
  let commit: string | null = null;
  let dirty: boolean | null = null;
  try {
    commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== '';
  } catch {
    // Not a git checkout: the report says so with nulls.
  }
  return {
    machine: { cpu: cpus[0]?.model ?? 'unknown', cores: os.availableParallelism(), platform: `${os.platform()} ${os.release()}`, node: process.version },
    commit,
    dirty,
  };
}
