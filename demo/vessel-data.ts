// A synthetic volumetric task with thin tubular structures, as in angiography: small volumes in
// which 2 or 3 vessel trees (smooth random 3-D curves of radius 0.9 to 1.5 voxels, branching) and
// 0 to 2 bright blobs that are not vessels lie on a smoothly varying background; the image is
// blurred by a point-spread function and noisy, so the faint branches fade in and out of the noise.
// The label is 1 inside a vessel (voxel centre within its radius of the centre line), 0 elsewhere.
// Everything is drawn from a seed, so a (seed, index) pair always gives the same volume.
import { normal, substream, uniform, type Random } from '../tools/random';

/** Stream ids, distinct from the other tasks', so no two tasks share draws. */
export const VESSEL_STREAM = { train: 21, test: 22, init: 23 } as const;

/** [D, H, W] in voxels. */
export type VolumeShape = readonly [number, number, number];

export interface VesselBatch {
  /** NDHWC volumes (1 channel), [n, D, H, W]. */
  volumes: Float32Array;
  /** 1 inside a vessel, [n, D, H, W]. */
  labels: Uint8Array;
  n: number;
  shape: VolumeShape;
}

type Vec = [number, number, number];

interface Segment {
  a: Vec;
  b: Vec;
  radius: number;
  contrast: number;
}

/** Centre-line step, in voxels. */
const STEP = 0.5;
/** Standard deviation of the blur (the imaging system's point-spread function), in voxels. */
const BLUR = 0.7;

const add = (a: Vec, b: Vec, s = 1): Vec => [a[0] + s * b[0], a[1] + s * b[1], a[2] + s * b[2]];
const unit = (v: Vec): Vec => {
  const n = Math.hypot(...v) || 1;
  return [v[0] / n, v[1] / n, v[2] / n];
};
const gaussian3 = (random: Random): Vec => [normal(random), normal(random), normal(random)];

/**
 * A point on one of the four side faces of the volume (by area) and a direction into it, mostly
 * across the slab: as in an angiogram's slab, vessels run mainly across H and W, and a vessel
 * along D would leave the thin volume at once.
 */
function entry(random: Random, [d, h, w]: VolumeShape): { at: Vec; dir: Vec } {
  const face = Math.floor(random() * 4);
  const at: Vec = [uniform(random, 0.2, 0.8) * d, uniform(random, 0.15, 0.85) * h, uniform(random, 0.15, 0.85) * w];
  const axis = 1 + (face >> 1);
  const low = face % 2 === 0;
  at[axis] = low ? 0 : [d, h, w][axis];
  const inward: Vec = [0, 0, 0];
  inward[axis] = low ? 1 : -1;
  return { at, dir: flatten(unit(add(inward, gaussian3(random), 0.6))) };
}

/** Damps a direction's D component: vessels cross the slab slowly. */
const flatten = (v: Vec): Vec => unit([0.35 * v[0], v[1], v[2]]);

/**
 * One vessel from `at` along `dir`: a walk whose direction turns smoothly, until it leaves the
 * volume or reaches `length`; it may spawn branches (at most `branches` in its tree) at 35-75
 * degrees, thinner and fainter than itself.
 */
function vessel(random: Random, shape: VolumeShape, at: Vec, dir: Vec, radius: number, contrast: number, length: number, budget: { branches: number }, depth: number, out: Segment[]): void {
  const [d, h, w] = shape;
  const outside = (p: Vec) => p[0] < -2 || p[1] < -2 || p[2] < -2 || p[0] > d + 2 || p[1] > h + 2 || p[2] > w + 2;
  let p = at;
  let v = dir;
  for (let walked = 0; walked < length; walked += STEP) {
    v = flatten(add(v, gaussian3(random), 0.09));
    const q = add(p, v, STEP);
    out.push({ a: p, b: q, radius, contrast });
    p = q;
    if (outside(p)) return;
    if (depth < 2 && budget.branches > 0 && walked > 4 && random() < STEP / 14) {
      budget.branches--;
      // A direction at 35-75 degrees from v: v plus a perpendicular of length tan(angle).
      const g = gaussian3(random);
      const across = unit(add(g, v, -(g[0] * v[0] + g[1] * v[1] + g[2] * v[2])));
      const angle = (uniform(random, 35, 75) * Math.PI) / 180;
      const branchDir = flatten(add(v, across, Math.tan(angle)));
      vessel(random, shape, p, branchDir, Math.max(0.9, radius * uniform(random, 0.7, 0.9)), contrast * uniform(random, 0.6, 0.9), length * 0.6, budget, depth + 1, out);
    }
  }
}

/** Distance from p to the segment a-b. */
function segmentDistance(p: Vec, a: Vec, b: Vec): number {
  const ab: Vec = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
  const ap: Vec = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
  const len2 = ab[0] ** 2 + ab[1] ** 2 + ab[2] ** 2;
  const t = len2 === 0 ? 0 : Math.min(1, Math.max(0, (ap[0] * ab[0] + ap[1] * ab[1] + ap[2] * ab[2]) / len2));
  return Math.hypot(ap[0] - t * ab[0], ap[1] - t * ab[1], ap[2] - t * ab[2]);
}

/** In-place separable Gaussian blur of a [D, H, W] volume. */
function blur(volume: Float32Array, [d, h, w]: VolumeShape, sigma: number): void {
  const radius = Math.ceil(3 * sigma);
  const kernel = Array.from({ length: 2 * radius + 1 }, (_, i) => Math.exp(-((i - radius) ** 2) / (2 * sigma * sigma)));
  const sum = kernel.reduce((s, v) => s + v, 0);
  const weights = kernel.map((v) => v / sum);
  const line = new Float32Array(Math.max(d, h, w));
  const strides = [h * w, w, 1];
  const sizes = [d, h, w];
  for (let axis = 0; axis < 3; axis++) {
    const size = sizes[axis];
    const stride = strides[axis];
    for (let start = 0; start < volume.length; start++) {
      // One line per start point whose coordinate along `axis` is 0.
      if (Math.floor(start / stride) % size !== 0) continue;
      for (let i = 0; i < size; i++) line[i] = volume[start + i * stride];
      for (let i = 0; i < size; i++) {
        let acc = 0;
        for (let k = -radius; k <= radius; k++) {
          // Edges: the nearest voxel repeats.
          const j = Math.min(size - 1, Math.max(0, i + k));
          acc += weights[k + radius] * line[j];
        }
        volume[start + i * stride] = acc;
      }
    }
  }
}

/** Draws one volume and its labels into the batch at volume `index`. */
function drawSample(random: Random, batch: VesselBatch, index: number): void {
  const shape = batch.shape;
  const [d, h, w] = shape;
  const voxels = d * h * w;
  const offset = index * voxels;
  const segments: Segment[] = [];
  const trees = 2 + Math.floor(random() * 2);
  for (let t = 0; t < trees; t++) {
    const { at, dir } = entry(random, shape);
    vessel(random, shape, at, dir, uniform(random, 1.1, 1.5), uniform(random, 0.6, 1), 3 * Math.max(d, h, w), { branches: 3 }, 0, segments);
  }
  // The signal: vessels with a soft (partial-volume) edge, label where the centre is inside.
  const signal = new Float32Array(voxels);
  const labels = batch.labels;
  for (const s of segments) {
    const lo = [0, 1, 2].map((k) => Math.max(0, Math.floor(Math.min(s.a[k], s.b[k]) - s.radius - 1)));
    const hi = [0, 1, 2].map((k) => Math.min(shape[k] - 1, Math.ceil(Math.max(s.a[k], s.b[k]) + s.radius + 1)));
    for (let z = lo[0]; z <= hi[0]; z++) {
      for (let y = lo[1]; y <= hi[1]; y++) {
        for (let x = lo[2]; x <= hi[2]; x++) {
          const dist = segmentDistance([z + 0.5, y + 0.5, x + 0.5], s.a, s.b);
          const v = (z * h + y) * w + x;
          if (dist <= s.radius) labels[offset + v] = 1;
          const edge = s.contrast * Math.min(1, Math.max(0, s.radius + 0.5 - dist));
          if (edge > signal[v]) signal[v] = edge;
        }
      }
    }
  }
  // Blobs: bright, round, not vessels (label 0), 2 to 3 voxels in radius.
  const blobs = Math.floor(random() * 3);
  for (let k = 0; k < blobs; k++) {
    const c: Vec = [uniform(random, 0.2, 0.8) * d, uniform(random, 0.15, 0.85) * h, uniform(random, 0.15, 0.85) * w];
    const r = uniform(random, 2, 3);
    const contrast = uniform(random, 0.5, 1);
    for (let z = 0; z < d; z++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const dist = Math.hypot(z + 0.5 - c[0], y + 0.5 - c[1], x + 0.5 - c[2]);
          const v = (z * h + y) * w + x;
          const edge = contrast * Math.min(1, Math.max(0, r + 0.5 - dist));
          if (edge > signal[v]) signal[v] = edge;
        }
      }
    }
  }
  blur(signal, shape, BLUR);
  // Background: a level and two slow waves; then noise of a level drawn per volume.
  const level = uniform(random, 0, 0.2);
  const waves = [0, 1].map(() => ({ k: unit(gaussian3(random)).map((v) => (v * 2 * Math.PI) / uniform(random, 12, 30)), phase: uniform(random, 0, 2 * Math.PI), amp: uniform(random, 0.03, 0.1) }));
  const noise = uniform(random, 0.12, 0.25);
  for (let z = 0; z < d; z++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = (z * h + y) * w + x;
        let background = level;
        for (const wave of waves) background += wave.amp * Math.cos(wave.k[0] * z + wave.k[1] * y + wave.k[2] * x + wave.phase);
        batch.volumes[offset + v] = signal[v] + background + noise * normal(random);
      }
    }
  }
}

function draw(random: Random, n: number, shape: VolumeShape): VesselBatch {
  const voxels = shape[0] * shape[1] * shape[2];
  const batch: VesselBatch = { volumes: new Float32Array(n * voxels), labels: new Uint8Array(n * voxels), n, shape };
  for (let i = 0; i < n; i++) drawSample(random, batch, i);
  return batch;
}

/** Training batch number `step`: the same for every arm of a run with this seed. */
export function vesselTrainingBatch(seed: number, step: number, n: number, shape: VolumeShape): VesselBatch {
  return draw(substream(seed * 100_003 + step, VESSEL_STREAM.train), n, shape);
}

/** The held-out set: a stream of its own, never used for training. */
export function vesselTestSet(seed: number, n: number, shape: VolumeShape): VesselBatch {
  return draw(substream(seed, VESSEL_STREAM.test), n, shape);
}
