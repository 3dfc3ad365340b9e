// Command-line flags of `npm run demo`.
import type { DeviceSpec } from 'generic-perceptual-loss';

export interface DemoArgs {
  steps: number;
  size: number;
  lambda: number;
  seed: number;
  device: DeviceSpec;
  quick: boolean;
  sweep: boolean;
  out: string;
  /** libtorch CPU threads for the perceptual loss. */
  threads: number;
  /** Images in the held-out set. */
  testImages: number;
}

/** The lambdas of --sweep. */
export const SWEEP = [0.1, 0.3, 1, 3];

export const DEFAULTS = { steps: 700, size: 40, lambda: 1, seed: 1, device: 'auto' as DeviceSpec, out: 'demo-out', testImages: 64, threads: 1 };
/** --quick: a smaller, shorter run (under 90 s on 2 CPU cores); --steps and --size still apply. */
export const QUICK = { steps: 120, size: 32, testImages: 32 };

export const USAGE = `Usage: npm run demo -- [flags]   (or node dist-demo/main.js [flags])

Trains a small segmentation network (TensorFlow.js, CPU backend) on synthetic shapes twice, with
the same seed, data and steps: cross-entropy alone, and cross-entropy + lambda x the random-weight
perceptual loss. Prints held-out mIoU, pixel accuracy and boundary F1, and writes a report.

  --steps N      training steps per arm (default ${DEFAULTS.steps}; ${QUICK.steps} with --quick)
  --size N       image side in pixels, a multiple of 4, >= 16 (default ${DEFAULTS.size}; ${QUICK.size} with --quick)
  --lambda X     weight of the perceptual term (default ${DEFAULTS.lambda})
  --seed N       seeds the data, the network's initial weights and the perceptual loss (default ${DEFAULTS.seed})
  --device D     where the perceptual loss runs: auto | cpu | cuda | cuda:N (default auto)
  --quick        a short run: ${QUICK.size}x${QUICK.size} images, ${QUICK.steps} steps, ${QUICK.testImages} held-out images
  --sweep        also train with lambda = ${SWEEP.join(', ')} (instead of --lambda) and report all
  --out DIR      output folder (default ${DEFAULTS.out})
  --threads N    libtorch CPU threads for the perceptual loss (default ${DEFAULTS.threads})
  --help         this text`;

export class UsageError extends Error {}

function integer(flag: string, text: string | undefined, min: number): number {
  const value = Number(text);
  if (text === undefined || !Number.isSafeInteger(value) || value < min) throw new UsageError(`${flag} needs an integer >= ${min}; got ${text ?? 'nothing'}.`);
  return value;
}

/** Parses argv (without node and the script); null for --help. */
export function parseArgs(argv: readonly string[]): DemoArgs | null {
  const given: Partial<DemoArgs> = {};
  let quick = false;
  let sweep = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case '--help':
      case '-h':
        return null;
      case '--quick':
        quick = true;
        break;
      case '--sweep':
        sweep = true;
        break;
      case '--steps':
        given.steps = integer(flag, value(), 1);
        break;
      case '--size': {
        const size = integer(flag, value(), 16);
        if (size % 4 !== 0) throw new UsageError(`--size must be a multiple of 4 (the network halves it twice); got ${size}.`);
        given.size = size;
        break;
      }
      case '--threads':
        given.threads = integer(flag, value(), 1);
        break;
      case '--seed':
        given.seed = integer(flag, value(), 0);
        break;
      case '--lambda': {
        const text = value();
        const lambda = Number(text);
        if (text === undefined || text.trim() === '' || !Number.isFinite(lambda) || lambda <= 0) {
          throw new UsageError(`--lambda needs a number > 0; got ${text ?? 'nothing'}.`);
        }
        given.lambda = lambda;
        break;
      }
      case '--device': {
        const device = value();
        if (device === undefined || !/^(auto|cpu|cuda(:\d+)?)$/.test(device)) throw new UsageError(`--device needs auto, cpu, cuda or cuda:N; got ${device ?? 'nothing'}.`);
        given.device = device as DeviceSpec;
        break;
      }
      case '--out': {
        const out = value();
        if (!out) throw new UsageError('--out needs a folder.');
        given.out = out;
        break;
      }
      default:
        throw new UsageError(`Unknown flag ${arg}.`);
    }
  }
  const base = quick ? { ...DEFAULTS, ...QUICK } : DEFAULTS;
  return { ...base, ...given, quick, sweep };
}
