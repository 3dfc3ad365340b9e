// `npm run demo`: does the random-weight perceptual loss help a segmentation network learn
// structure? Trains the same small TensorFlow.js network twice, with the same seed, data and
// steps, with cross-entropy alone and with cross-entropy + lambda x perceptual loss (through the
// tfjs adapter), then scores both on a held-out set. See `node dist-demo/main.js --help`.
import * as path from 'node:path';
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { PerceptualLoss, runtime, setNumThreads } from 'generic-perceptual-loss';
import type { ArchSpec } from 'generic-perceptual-loss';
import { DEFAULTS, parseArgs, SWEEP, USAGE, UsageError, type DemoArgs } from './args';
import { CLASS_NAMES, CLASSES, testSet, type Batch } from './data';
import { ensureGradients } from './gradients';
import { BOUNDARY_TOLERANCE } from './metrics';
import { colourLabels, imageBytes } from './images';
import { render, writeJson, type CurvePoint } from './report';
import { trainArm, type Arm, type ArmResult, type TrainConfig } from './train';

/**
 * The perceptual network: VGG-style, three blocks, random weights (kaiming normal, seeded), taps
 * at the last ReLU of each block. Narrower than vgg19 so a step costs ~10% of the network's own
 * step on two CPU cores; three blocks see ~40 px, the scale of the shapes.
 */
const PERCEPTUAL_ARCH: ArchSpec = [32, 32, 'M', 64, 64, 'M', 128, 128, 'M'];
const BATCH = 6;
const LEARNING_RATE = 1e-2;
/** Channels at full resolution of the segmentation network. */
const WIDTH = 8;
/** Test images shown in samples.png. */
const SHOWN = 4;

const fmt = (v: number, digits = 3) => (Number.isFinite(v) ? v.toFixed(digits) : '-');

function armName(lambda: number): string {
  return lambda === 0 ? 'CE only' : `CE + ${lambda} x perceptual`;
}

/** Trailing mean over `window` steps: the per-step training loss is noisy. */
function smooth(values: number[], window: number): number[] {
  let sum = 0;
  return values.map((v, i) => {
    sum += v - (i >= window ? values[i - window] : 0);
    return sum / Math.min(i + 1, window);
  });
}

function printTable(results: ArmResult[], args: DemoArgs): void {
  const width = Math.max(...results.map((r) => r.name.length), 3);
  const row = (cells: string[]) => console.log(`  ${cells[0].padEnd(width)}  ${cells.slice(1).map((c) => c.padStart(11)).join('  ')}`);
  console.log(`\nHeld-out set: ${args.testImages} images ${args.size}x${args.size}, after ${args.steps} steps (boundary F1 within ${BOUNDARY_TOLERANCE} px):\n`);
  row(['arm', 'mIoU', 'pixel acc', 'boundary F1', 'steps/s']);
  for (const r of results) {
    row([r.name, fmt(r.final.miou), fmt(r.final.pixelAccuracy), fmt(r.final.boundaryF1), fmt(args.steps / r.seconds, 2)]);
  }
  console.log('\n  IoU per class:');
  row(['arm', ...CLASS_NAMES]);
  for (const r of results) row([r.name, ...r.final.perClass.iou.map((v) => fmt(v))]);
}

function writeOutputs(results: ArmResult[], args: DemoArgs, config: TrainConfig, test: Batch, perceptual: PerceptualLoss, seconds: number): void {
  const out = path.resolve(args.out);
  const info = runtime();
  writeJson(path.join(out, 'report.json'), {
    // Everything here but `timing` depends on the flags alone: two runs with one seed match.
    demo: 'segmentation: cross-entropy vs cross-entropy + lambda x random-weight perceptual loss',
    libtorch: info.libtorch.version,
    config: {
      ...config,
      lambdas: results.filter((r) => r.lambda > 0).map((r) => r.lambda),
      testImages: args.testImages,
      classes: CLASS_NAMES,
      boundaryTolerance: BOUNDARY_TOLERANCE,
      network: { kind: 'two-level U-Net, tfjs-core CPU backend', width: WIDTH, parameters: results[0].parameterCount },
      perceptual: perceptual.options,
    },
    arms: results.map((r) => ({ name: r.name, lambda: r.lambda, final: r.final, evals: r.evals, curve: r.curve })),
    timing: {
      totalSeconds: seconds,
      arms: results.map((r) => ({ name: r.name, seconds: r.seconds, stepsPerSecond: args.steps / r.seconds })),
    },
    files: { curves: 'curves.png', samples: 'samples.png' },
  });

  const window = Math.max(1, Math.round(args.steps / 25));
  const points: CurvePoint[] = [];
  const series = [`training CE (mean of ${window} steps)`, 'held-out mIoU', 'held-out boundary F1', 'held-out pixel accuracy'];
  for (const r of results) {
    smooth(r.curve.ce, window).forEach((value, i) => points.push({ arm: r.name, step: i + 1, value, series: series[0] }));
    for (const e of r.evals) {
      points.push({ arm: r.name, step: e.step, value: e.miou, series: series[1] });
      points.push({ arm: r.name, step: e.step, value: e.boundaryF1, series: series[2] });
      points.push({ arm: r.name, step: e.step, value: e.pixelAccuracy, series: series[3] });
    }
  }
  const plane = args.size * args.size;
  const shown = Array.from({ length: Math.min(SHOWN, test.n) }, (_, i) => i);
  const tiles = (bytes: (i: number) => Buffer) => shown.map((i) => bytes(i).toString('base64'));
  render({
    plot: { file: path.join(out, 'curves.png'), points, series, arms: results.map((r) => r.name) },
    samples: {
      file: path.join(out, 'samples.png'),
      size: args.size,
      panels: [
        { title: 'input', tiles: tiles((i) => imageBytes(test.images, i * plane, plane)) },
        { title: 'ground truth', tiles: tiles((i) => colourLabels(test.labels, i * plane, plane)) },
        ...results.map((r) => ({ title: r.name, tiles: tiles((i) => colourLabels(r.predictions, i * plane, plane)) })),
      ],
    },
  });
  console.log(`\nWrote ${path.join(args.out, 'report.json')}, curves.png and samples.png.`);
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
  await tf.setBackend('cpu');
  tf.enableProdMode(); // also quiets tfjs' "install tfjs-node" banner: this demo runs on tfjs-core alone
  ensureGradients();
  // tfjs' CPU backend is single-threaded and the two libraries take turns, so libtorch gains
  // little from a second thread, and its OpenMP workers stall badly whenever the cores are shared.
  setNumThreads(args.threads);

  const perceptual = new PerceptualLoss({ inChannels: CLASSES, arch: PERCEPTUAL_ARCH, seed: args.seed, device: args.device });
  const info = runtime();
  const config: TrainConfig = {
    seed: args.seed,
    steps: args.steps,
    size: args.size,
    batch: BATCH,
    learningRate: LEARNING_RATE,
    width: WIDTH,
    evalEvery: Math.max(1, Math.round(args.steps / 10)),
  };
  const lambdas = args.sweep ? SWEEP : [args.lambda];
  if (args.sweep && args.lambda !== DEFAULTS.lambda) console.log(`--sweep: lambda = ${SWEEP.join(', ')}; --lambda ${args.lambda} is not used.`);
  const arms: Arm[] = [0, ...lambdas].map((lambda) => ({ name: armName(lambda), lambda }));
  const test = testSet(args.seed, args.testImages, args.size);
  const opts = perceptual.options;

  console.log(`Segmentation of synthetic shapes (${CLASS_NAMES.join(', ')}), ${args.size}x${args.size}, seed ${args.seed}.`);
  console.log(`Network: tfjs-core ${tf.version_core}, CPU backend; ${args.steps} steps of ${BATCH} images per arm, Adam ${LEARNING_RATE}.`);
  console.log(
    `Perceptual loss: random-weight ${JSON.stringify(opts.arch)}, taps ${opts.layers.join(', ')}, ${opts.criterion}, ` +
      `seed ${opts.seed}, on ${opts.device} (libtorch ${info.libtorch.version}, ${info.numThreads} threads).\n`,
  );

  const nameWidth = Math.max(...arms.map((a) => a.name.length));
  const results = arms.map((arm) => trainArm(arm, config, test, perceptual, nameWidth));
  if (!process.stderr.isTTY) {
    // No progress bars without a terminal: say what each arm did instead.
    for (const r of results) console.log(`${r.name}: ${args.steps} steps in ${r.seconds.toFixed(1)} s (${(args.steps / r.seconds).toFixed(2)} steps/s)`);
  }
  printTable(results, args);
  writeOutputs(results, args, config, test, perceptual, (performance.now() - start) / 1000);
  perceptual.dispose();
  console.log(`Done in ${((performance.now() - start) / 1000).toFixed(1)} s.`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
