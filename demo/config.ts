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
/**
 * The vessels task's 3-D perceptual network: five 3x3x3 convs in three blocks (Pfaehler et al.,
 * PLOS ONE 2025, found about five conv layers best for random-weight 3-D losses, and small
 * networks at least as good as VGG), taps at the last ReLU of each block. The package's default
 * 3-D arch, [64, 'M', 128, 'M', 256, 'M', 512, 'M', 512], has one conv at full resolution and
 * costs ~50k multiply-adds per voxel; this one has two convs at full resolution, where a vessel
 * 2-3 voxels wide is seen, at a quarter of the cost, and needs each side >= 4 voxels.
 */
export const PERCEPTUAL_3D: PerceptualSpec = { arch: [16, 16, 'M', 32, 32, 'M', 64], layers: ['relu1_2', 'relu2_2', 'relu3_1'] };
/** The ablation in 3-D: the first block alone. */
export const ONE_BLOCK_3D: PerceptualSpec = { arch: [16, 16, 'M'], layers: ['relu1_2'] };

/** The perceptual network of a task, and its one-block ablation. */
export const perceptualFor = (task: TaskName): PerceptualSpec => (task === 'vessels' ? PERCEPTUAL_3D : PERCEPTUAL);
export const oneBlockFor = (task: TaskName): PerceptualSpec => (task === 'vessels' ? ONE_BLOCK_3D : ONE_BLOCK);

/** Samples per training step: images (seg, depth), volumes (vessels), instance masks (instances, 3 per image). */
export const BATCH: Record<TaskName, number> = { seg: 6, depth: 6, vessels: 2, instances: 6 };
export const LEARNING_RATE = 1e-2;
/** Channels at full resolution of the networks. */
export const WIDTH: Record<TaskName, number> = { seg: 8, depth: 8, vessels: 4, instances: 8 };

export const PIXEL_LOSS: Record<TaskName, string> = { seg: 'CE', depth: 'L1', vessels: 'BCE', instances: 'BCE' };
export const TASK_TITLE: Record<TaskName, string> = {
  seg: 'Segmentation of synthetic shapes (background, disc, ring, cross, racket)',
  depth: 'Depth of synthetic scenes (ground plane, discs, boxes, thin poles and bars; sensor holes masked)',
  vessels: 'Vessels in synthetic 3-D angiograms (branching tubes of radius 0.9-1.5 voxels, blobs that are not vessels, blur and noise)',
  instances: 'Instance masks of touching discs and ellipses (one mask per instance, given a seed point)',
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
  vessels: [
    { key: 'dice', label: 'Dice', higher: true },
    { key: 'clDice', label: 'clDice', higher: true },
    { key: 'skeletonRecall', label: 'skel. recall', higher: true },
    { key: 'betti0Error', label: 'β0 error', higher: false },
  ],
  instances: [
    { key: 'maskIoU', label: 'mask IoU', higher: true },
    { key: 'boundaryF1', label: 'boundary F1', higher: true },
    { key: 'boundaryF1Exact', label: 'exact bd. F1', higher: true },
  ],
};

export function armName(task: TaskName, lambda: number, perceptual: PerceptualSpec | null = perceptualFor(task)): string {
  if (lambda === 0 || perceptual === null) return `${PIXEL_LOSS[task]} only`;
  const full = perceptualFor(task);
  const which =
    perceptual.arch.length === oneBlockFor(task).arch.length && perceptual.arch.length < full.arch.length
      ? 'one-block perceptual'
      : perceptual.layers.length === full.layers.length
        ? 'perceptual'
        : `perceptual (${perceptual.layers.join(',')})`;
  return `${PIXEL_LOSS[task]} + ${lambda} x ${which}`;
}

export function runSpec(args: DemoArgs, task: TaskName, seed: number, lambda: number, perceptual: PerceptualSpec | null, keepPredictions: boolean): RunSpec {
  const steps = args.steps[task];
  return {
    task,
    name: armName(task, lambda, perceptual),
    seed,
    steps,
    size: args.size,
    // Only the vessels task has volumes: the other tasks' specs (and the study's cache keys) stay as they were.
    ...(task === 'vessels' ? { volume: args.volume } : {}),
    batch: BATCH[task],
    learningRate: LEARNING_RATE,
    width: WIDTH[task],
    testImages: task === 'vessels' ? args.testVolumes : args.testImages,
    evalEvery: Math.max(1, Math.round(steps / 10)),
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
