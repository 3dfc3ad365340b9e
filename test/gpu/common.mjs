// Shared by the GPU suite's tests and benchmark: the package under test (built by
// scripts/gpu-suite.sh in $PL_PACKAGE), the device, inputs, and the PyTorch reference.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
export const packageDir = process.env.PL_PACKAGE ?? path.resolve(here, '../..');

export const MODE = process.env.PL_SUITE_MODE ?? 'gpu';
export const CUDA = MODE === 'gpu';
export const DEVICE = CUDA ? 'cuda:0' : 'cpu';
export const OUT = process.env.PL_SUITE_OUT ?? fs.mkdtempSync(path.join(os.tmpdir(), 'pl-gpu-out-'));
// The GPU machine's python3 has its CUDA PyTorch; here Debian's python3-torch is the reference.
export const PYTHON = process.env.PL_PYTHON ?? (CUDA ? 'python3' : '/usr/bin/python3');

export const perceptual = require(path.join(packageDir, 'dist/index.js'));
export const native = require(path.join(packageDir, 'dist/binding.js')).native();
export const { resolveOptions } = require(path.join(packageDir, 'dist/options.js'));

// The CPU dry run shares a small machine: libtorch's spinning OpenMP threads would only compete.
if (!CUDA) perceptual.setNumThreads(1);

/** Fresh uniform values in [-1, 1): fast enough for 40M-element inputs, never all zeros. */
export function rand(n, seed) {
  const out = new Float32Array(n);
  let s = (seed * 2654435761 + 1) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s / 2147483648 - 1;
  }
  return out;
}

export const numel = (shape) => shape.reduce((a, b) => a * b, 1);

export function host(shape, seed) {
  return { data: rand(numel(shape), seed), shape };
}

/** ||a - b|| / ||b|| */
export function relErr(a, b) {
  if (typeof a === 'number') return Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
  let d = 0;
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-30);
}

export function cudaMemory() {
  return CUDA ? native.cudaMemory(0) : null;
}

/** The error's code, or 'no error'. */
export function codeOf(fn) {
  try {
    fn();
    return 'no error';
  } catch (error) {
    return error.code ?? String(error);
  }
}

export async function codeOfAsync(fn) {
  try {
    await fn();
    return 'no error';
  } catch (error) {
    return error.code ?? String(error);
  }
}

/**
 * PyTorch on the same device: each case gives the loss's stateDict, its options and inputs; the
 * answer holds the loss and the gradient (float32) computed by test/gpu/torch_ref.py.
 * Optional per case: `spatialDims` (default: the options', else 2), `nhwc` (channels last, 4-D or
 * 5-D), `instance: { weights? }` (pred holds mask logits, target the masks: the instance-mask loss;
 * the answer's `values` are the M per-instance values).
 */
export function torchReference(cases) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-ref-'));
  const spec = cases.map((c, i) => {
    const files = {};
    const write = (name, array) => {
      const file = path.join(dir, `${i}-${name}.bin`);
      fs.writeFileSync(file, Buffer.from(array.buffer, array.byteOffset, array.byteLength));
      files[name] = file;
    };
    write('pred', c.pred.data);
    // Masks may be Uint8Array: the reference reads float32.
    write('target', c.target.data instanceof Float32Array ? c.target.data : Float32Array.from(c.target.data));
    const weights = Object.entries(c.stateDict).map(([name, t]) => {
      write(name, t.data);
      return { name, shape: t.shape, file: files[name] };
    });
    const spatialDims = c.spatialDims ?? c.options.spatialDims ?? 2;
    const instance = c.instance ? { weights: c.instance.weights ? Array.from(c.instance.weights) : null } : undefined;
    return {
      id: i, device: c.device ?? DEVICE, shape: c.pred.shape, spatialDims, options: c.options, tf32: c.tf32 ?? false, nhwc: c.nhwc ?? false,
      ...(instance && { instance }), weights, pred: files.pred, target: files.target, out: path.join(dir, `${i}-grad.bin`),
    };
  });
  fs.writeFileSync(path.join(dir, 'cases.json'), JSON.stringify(spec));
  const text = execFileSync(PYTHON, [path.join(here, 'torch_ref.py'), path.join(dir, 'cases.json')], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const results = JSON.parse(text.trim().split('\n').pop());
  const answers = results.map((r, i) => {
    const bytes = fs.readFileSync(spec[i].out);
    return { loss: r.loss, values: r.values, grad: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice() };
  });
  fs.rmSync(dir, { recursive: true, force: true });
  return answers;
}

/** [N, C, ...spatial] (channels first) to [N, ...spatial, C] (channels last), for 4-D and 5-D host inputs. */
export function toChannelsLast(x) {
  const [n, c, ...spatial] = x.shape;
  const s = numel(spatial);
  const out = new x.data.constructor(x.data.length);
  for (let i = 0; i < n; i++) for (let k = 0; k < c; k++) for (let j = 0; j < s; j++) out[(i * s + j) * c + k] = x.data[(i * c + k) * s + j];
  return { data: out, shape: [n, ...spatial, c] };
}

/** Adds entries to $OUT/parity.json (the accuracy figures of the run). */
export function recordParity(entries) {
  const file = path.join(OUT, 'parity.json');
  const all = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : [];
  all.push(...entries);
  fs.writeFileSync(file, JSON.stringify(all, null, 2) + '\n');
}
