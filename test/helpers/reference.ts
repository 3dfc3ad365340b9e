// Runs reference/cases.py (the test oracle over reference/perceptual.py, the PyTorch reference
// implementation of docs/api.md) on a batch of cases and reads its results back. One Python process
// serves all cases because importing torch is slow.

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

// Debian's interpreter carries torch; the python3 on PATH may not.
export const PYTHON = process.env.PL_REFERENCE_PYTHON ?? '/usr/bin/python3';
// vitest (vite-node) defines __dirname in test modules, as CommonJS does.
const SCRIPT = path.resolve(__dirname, '../../reference/cases.py');

export type Arch = 'vgg11' | 'vgg13' | 'vgg16' | 'vgg19' | readonly (number | 'M')[];
export type Init =
  | 'kaiming_normal'
  | 'kaiming_uniform'
  | 'xavier_normal'
  | 'xavier_uniform'
  | { readonly normal: number };

/**
 * The loss options, as a user gives them to `new PerceptualLoss` (docs/api.md), of those that change the
 * result on the CPU. The reference fills in every default itself: the taps of the architecture,
 * per-tap weights from a `{ [tap]: weight }` object, and the scalar options. Pass the user's options,
 * never a loss's resolved `options`, so that the package's own resolution is under test too.
 * `device` and `checkFinite` are accepted and ignored; any other key makes the reference fail.
 * The reference computes in float32 or float64 only.
 */
export interface ReferenceOptions {
  inChannels: number;
  arch?: Arch;
  layers?: readonly string[];
  layerWeights?: readonly number[] | Readonly<Record<string, number>>;
  criterion?: 'l1' | 'l2' | 'smooth_l1';
  featureWeight?: number;
  styleWeight?: number;
  reduction?: 'mean' | 'sum' | 'none';
  init?: Init;
  seed?: number;
  pool?: 'max' | 'avg';
  dtype?: 'float32' | 'float64';
  /** 3: volumes, with the 'ncdhw' / 'ndhwc' layouts. */
  spatialDims?: 2 | 3;
  layout?: 'nchw' | 'nhwc' | 'ncdhw' | 'ndhwc';
  device?: string;
  checkFinite?: boolean;
}

export type RefOutput = 'weights' | 'features' | 'loss' | 'grad';

export interface RefCase {
  /** Unique within a run; used in file names, so letters, digits, '_', '-' and '.' only. */
  id: string;
  /** The user's options; see ReferenceOptions. */
  options: ReferenceOptions;
  /** In the layout of the options: [N, C, H, W] for nchw, [N, H, W, C] for nhwc, 5-D for volumes. */
  shape: readonly number[];
  /** Row-major in `shape`; the logits of a segmentation case. */
  pred: Float32Array;
  /** Ignored in a segmentation case (one with `labels`). */
  target: Float32Array;
  /** pred and target are multiplied by it ([N, *spatial], one value per pixel or voxel). */
  mask?: Float32Array;
  /** Makes this an instance-mask case: pred holds the mask logits, `masks` the truth. */
  instance?: { masks: Float32Array; weights?: readonly number[] };
  /** Class ids [N, *spatial]; makes this a segmentation case. */
  labels?: Int32Array;
  /** Defaults to 255. */
  ignoreIndex?: number;
  /** Run the float32 network under torch.autocast('cpu', torch.bfloat16), as a PyTorch user would. */
  autocast?: 'bfloat16';
  /**
   * 'onednn': PyTorch's oneDNN CPU conv route, the one it takes by itself for batches of 16 and more
   * (and the one this package takes at every batch size); see reference/cases.py. At batch 1
   * PyTorch's default CPU route is im2col + BLAS, which rounds differently.
   */
  route?: 'onednn';
  /**
   * Every kept conv's weight and bias by its state-dict name (`features.{k}.weight`), used instead
   * of drawing them: the weights a loss loaded from a file, biases not 0 included.
   */
  stateDict?: Readonly<Record<string, { readonly shape: readonly number[]; readonly data: Float32Array }>>;
  outputs: readonly RefOutput[];
}

export interface RefFeature {
  name: string;
  /** In the case's layout. */
  shape: number[];
  data: Float64Array;
}

export interface RefResult {
  stateDictNames: string[];
  /** sha256 of the float32 state-dict tensors, concatenated in `stateDictNames` order. */
  weightsSha256?: string;
  /** A Float64Array of per-sample values for reduction 'none'. */
  loss?: number | Float64Array;
  /** Features of pred, one per tap in `layers` order. */
  features?: RefFeature[];
  /** d loss / d pred (of the sum of the per-sample losses for 'none'), in the case's layout. */
  grad?: Float64Array;
  gradShape?: number[];
}

interface RawResult {
  id: string;
  stateDictNames: string[];
  weightsSha256?: string;
  loss?: number | number[];
  features?: { name: string; shape: number[]; file: string }[];
  grad?: string;
  gradShape?: number[];
}

/** Runs the PyTorch reference on all cases at once. */
export async function runReference(cases: readonly RefCase[]): Promise<Map<string, RefResult>> {
  // Raw files are written and read in host byte order; the reference uses little-endian.
  if (os.endianness() !== 'LE') throw new Error('runReference needs a little-endian host');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-ref-'));
  try {
    const outDir = path.join(dir, 'out');
    const seen = new Set<string>();
    const json = cases.map((c) => {
      if (!/^[A-Za-z0-9_.-]+$/.test(c.id) || seen.has(c.id)) {
        throw new Error(`reference case id ${JSON.stringify(c.id)} is not a unique file-safe name`);
      }
      seen.add(c.id);
      const count = c.shape.reduce((a, b) => a * b, 1);
      if (c.pred.length !== count || (!c.labels && !c.instance && c.target.length !== count)) {
        throw new Error(`reference case ${c.id}: pred/target lengths do not match shape [${c.shape.join(',')}]`);
      }
      const entry: Record<string, unknown> = {
        id: c.id,
        options: c.options,
        shape: c.shape,
        pred: writeRaw(dir, `${c.id}.pred.f32`, c.pred),
        outputs: c.outputs,
      };
      if (c.autocast) entry.autocast = c.autocast;
      if (c.route) entry.route = c.route;
      if (c.stateDict) {
        entry.stateDict = Object.fromEntries(
          Object.entries(c.stateDict).map(([name, t], k) => [name, { file: writeRaw(dir, `${c.id}.state${k}.f32`, t.data), shape: t.shape }]),
        );
      }
      if (c.mask) entry.mask = writeRaw(dir, `${c.id}.mask.f32`, c.mask);
      if (c.instance) {
        entry.instance = { masks: writeRaw(dir, `${c.id}.masks.f32`, c.instance.masks), weights: c.instance.weights };
      } else if (c.labels) {
        entry.labels = writeRaw(dir, `${c.id}.labels.i32`, c.labels);
        if (c.ignoreIndex !== undefined) entry.ignoreIndex = c.ignoreIndex;
      } else {
        entry.target = writeRaw(dir, `${c.id}.target.f32`, c.target);
      }
      return entry;
    });
    const casesFile = path.join(dir, 'cases.json');
    fs.writeFileSync(casesFile, JSON.stringify({ cases: json }));

    try {
      await execFileAsync(PYTHON, [SCRIPT, casesFile, outDir], {
        maxBuffer: 64 * 1024 * 1024,
        timeout: 10 * 60 * 1000,
      });
    } catch (err) {
      const e = err as { code?: number | string | null; signal?: NodeJS.Signals | null; stderr?: string; message: string };
      const how = e.signal ? `signal ${e.signal}` : `exit ${String(e.code)}`;
      throw new Error(`${PYTHON} ${SCRIPT} failed (${how}):\n${e.stderr?.trim() || e.message}`);
    }

    const results = new Map<string, RefResult>();
    for (const c of cases) {
      const raw = JSON.parse(fs.readFileSync(path.join(outDir, `${c.id}.json`), 'utf8')) as RawResult;
      const result: RefResult = { stateDictNames: raw.stateDictNames };
      if (raw.weightsSha256 !== undefined) result.weightsSha256 = raw.weightsSha256;
      if (raw.loss !== undefined) {
        result.loss = typeof raw.loss === 'number' ? raw.loss : Float64Array.from(raw.loss);
      }
      if (raw.features) {
        result.features = raw.features.map((f) => ({
          name: f.name,
          shape: f.shape,
          data: readF64(path.join(outDir, f.file)),
        }));
      }
      if (raw.grad !== undefined) {
        result.grad = readF64(path.join(outDir, raw.grad));
        result.gradShape = raw.gradShape;
      }
      results.set(c.id, result);
    }
    return results;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes the array's bytes and returns the file name (relative to cases.json). */
function writeRaw(dir: string, name: string, data: Float32Array | Int32Array): string {
  fs.writeFileSync(path.join(dir, name), new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return name;
}

function readF64(file: string): Float64Array {
  const bytes = fs.readFileSync(file);
  // Copy: a Buffer's offset into its pool need not be 8-byte aligned.
  const out = new Float64Array(bytes.byteLength / 8);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

/** ||a - b||_2 / ||b||_2 (the denominator kept above zero). */
export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) {
    throw new Error(`relError: lengths differ (${actual.length} vs ${expected.length})`);
  }
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    diff += d * d;
    norm += expected[i] * expected[i];
  }
  return Math.sqrt(diff) / Math.max(Math.sqrt(norm), Number.MIN_VALUE);
}

/**
 * max_i |a_i - b_i| / max_i |b_i| (the denominator kept above zero): an elementwise comparison of
 * a whole array (a gradient), which a permuted or sign-flipped array fails by the order of 1 where
 * a comparison of norms would pass it.
 */
export function maxElementError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) {
    throw new Error(`maxElementError: lengths differ (${actual.length} vs ${expected.length})`);
  }
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  // (A NaN makes `worst`, and so the error, NaN, which fails every bound.)
  return worst / Math.max(scale, Number.MIN_VALUE);
}

/** |a - b| / |b| (the denominator kept above zero). */
export function relErrorScalar(actual: number, expected: number): number {
  return Math.abs(actual - expected) / Math.max(Math.abs(expected), Number.MIN_VALUE);
}

/** sha256 (hex) of the arrays' little-endian bytes, concatenated in order. */
export function sha256OfFloat32(arrays: readonly Float32Array[]): string {
  if (os.endianness() !== 'LE') throw new Error('sha256OfFloat32 needs a little-endian host');
  const hash = createHash('sha256');
  for (const a of arrays) hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return hash.digest('hex');
}
