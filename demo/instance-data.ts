// A synthetic instance task: 3 to 5 discs and ellipses, each placed against another (touching or
// slightly overlapping, later ones in front), in grey levels that differ little from their
// neighbours' (0.6 to 0.8, under noise of 0.07), on a shaded, noisy background. The network is told which instance to segment by a
// seed channel (a Gaussian spot on the instance's innermost visible pixel) and predicts its
// visible mask: where one instance ends and the touching one begins is the hard part.
// Everything is drawn from a seed, so a (seed, index) pair always gives the same image.
import { normal, substream, uniform, type Random } from '../tools/random';

/** Stream ids, distinct from the other tasks', so no two tasks share draws. */
export const INSTANCE_STREAM = { train: 31, test: 32, init: 33 } as const;
/** Network input channels: the grey image and the seed spot. */
export const INSTANCE_CHANNELS = 2;
/** Instances per training image: a batch of 6 masks is 2 images. */
export const INSTANCES_PER_IMAGE = 3;
/** Standard deviation of the seed spot, in pixels. */
const SEED_SIGMA = 1.5;

export interface InstanceBatch {
  /** Grey images, [images, size, size]. */
  images: Float32Array;
  /** Network input per instance: image and seed spot, NHWC [m, size, size, 2]. */
  inputs: Float32Array;
  /** The instances' visible masks, [m, size, size]. */
  masks: Uint8Array;
  /** The image of each instance. */
  owner: Int32Array;
  /** The seed pixel (y * size + x) of each instance. */
  seeds: Int32Array;
  /** Number of images. */
  n: number;
  m: number;
  size: number;
}

interface Shape {
  cx: number;
  cy: number;
  a: number;
  b: number;
  angle: number;
  grey: number;
}

const inside = (s: Shape, x: number, y: number) => {
  const [c, sn] = [Math.cos(s.angle), Math.sin(s.angle)];
  const u = (x - s.cx) * c + (y - s.cy) * sn;
  const v = -(x - s.cx) * sn + (y - s.cy) * c;
  return (u / s.a) ** 2 + (v / s.b) ** 2 <= 1;
};

/** The distance from an ellipse's centre to its outline in direction `theta`. */
const reach = (s: Shape, theta: number) => {
  const phi = theta - s.angle;
  return (s.a * s.b) / Math.hypot(s.b * Math.cos(phi), s.a * Math.sin(phi));
};

/** Chamfer (3-4) distance of each pixel of `mask` to the nearest pixel outside it, in pixels. */
function depthInside(mask: Uint8Array, size: number): Float32Array {
  const big = 1e9;
  const dist = Float32Array.from(mask, (m) => (m ? big : 0));
  const at = (x: number, y: number) => (x < 0 || y < 0 || x >= size || y >= size ? 0 : dist[y * size + x]);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = y * size + x;
      if (dist[p] === 0) continue;
      dist[p] = Math.min(dist[p], at(x - 1, y) + 3, at(x, y - 1) + 3, at(x - 1, y - 1) + 4, at(x + 1, y - 1) + 4);
    }
  }
  for (let y = size - 1; y >= 0; y--) {
    for (let x = size - 1; x >= 0; x--) {
      const p = y * size + x;
      if (dist[p] === 0) continue;
      dist[p] = Math.min(dist[p], at(x + 1, y) + 3, at(x, y + 1) + 3, at(x + 1, y + 1) + 4, at(x - 1, y + 1) + 4);
    }
  }
  return dist.map((v) => v / 3);
}

interface Scene {
  image: Float32Array;
  /** Visible masks of the instances large enough to count, in drawing order. */
  masks: Uint8Array[];
}

/** One image; null if fewer than `INSTANCES_PER_IMAGE` instances are visible enough (redrawn). */
function scene(random: Random, size: number): Scene | null {
  const count = 3 + Math.floor(random() * 3);
  const shapes: Shape[] = [];
  const ellipse = (cx: number, cy: number, r: number): Shape => {
    const round = random() < 0.5;
    const a = r;
    return { cx, cy, a, b: round ? a : a * uniform(random, 0.55, 0.85), angle: uniform(random, 0, Math.PI), grey: uniform(random, 0.6, 0.8) };
  };
  shapes.push(ellipse(uniform(random, 0.35, 0.65) * size, uniform(random, 0.35, 0.65) * size, uniform(random, 0.13, 0.2) * size));
  for (let k = 1, tries = 0; k < count && tries < 40; tries++) {
    // Against a shape already drawn: centres (reach + reach) x 0.8-1.0 apart along a random direction.
    const other = shapes[Math.floor(random() * shapes.length)];
    const theta = uniform(random, 0, 2 * Math.PI);
    const candidate = ellipse(0, 0, uniform(random, 0.12, 0.2) * size);
    const gap = (reach(other, theta) + reach(candidate, theta + Math.PI)) * uniform(random, 0.8, 1);
    candidate.cx = other.cx + gap * Math.cos(theta);
    candidate.cy = other.cy + gap * Math.sin(theta);
    if (candidate.cx < 0.12 * size || candidate.cx > 0.88 * size || candidate.cy < 0.12 * size || candidate.cy > 0.88 * size) continue;
    shapes.push(candidate);
    k++;
  }
  const plane = size * size;
  const owner = new Int32Array(plane).fill(-1);
  const background = uniform(random, 0.1, 0.3);
  const shade = uniform(random, 0.05, 0.2);
  const dir = uniform(random, 0, 2 * Math.PI);
  const image = new Float32Array(plane);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = y * size + x;
      image[p] = background + (shade * (Math.cos(dir) * (x - size / 2) + Math.sin(dir) * (y - size / 2))) / size;
      shapes.forEach((s, k) => {
        if (inside(s, x + 0.5, y + 0.5)) owner[p] = k;
      });
      if (owner[p] >= 0) image[p] = shapes[owner[p]].grey;
    }
  }
  for (let p = 0; p < plane; p++) image[p] += 0.07 * normal(random);
  const masks = shapes.map((_, k) => Uint8Array.from(owner, (o) => (o === k ? 1 : 0))).filter((m) => m.reduce((s, v) => s + v, 0) >= Math.max(6, 0.012 * plane));
  return masks.length >= INSTANCES_PER_IMAGE ? { image, masks } : null;
}

/** `images` images drawn from one stream; `perImage` instances of each (all of them if null). */
function draw(random: Random, images: number, size: number, perImage: number | null): InstanceBatch {
  const scenes: Scene[] = [];
  while (scenes.length < images) {
    const s = scene(random, size);
    if (s) scenes.push(perImage === null ? s : { ...s, masks: pick(random, s.masks, perImage) });
  }
  const m = scenes.reduce((n, s) => n + s.masks.length, 0);
  const plane = size * size;
  const batch: InstanceBatch = {
    images: new Float32Array(images * plane),
    inputs: new Float32Array(m * plane * INSTANCE_CHANNELS),
    masks: new Uint8Array(m * plane),
    owner: new Int32Array(m),
    seeds: new Int32Array(m),
    n: images,
    m,
    size,
  };
  let i = 0;
  scenes.forEach((s, k) => {
    batch.images.set(s.image, k * plane);
    for (const mask of s.masks) {
      // The seed: the visible pixel deepest inside the mask (the first of equals).
      const depth = depthInside(mask, size);
      let seed = 0;
      for (let p = 1; p < plane; p++) if (depth[p] > depth[seed]) seed = p;
      const [sx, sy] = [seed % size, Math.floor(seed / size)];
      for (let p = 0; p < plane; p++) {
        const [x, y] = [p % size, Math.floor(p / size)];
        batch.inputs[(i * plane + p) * 2] = s.image[p] - 0.5;
        batch.inputs[(i * plane + p) * 2 + 1] = Math.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * SEED_SIGMA * SEED_SIGMA));
      }
      batch.masks.set(mask, i * plane);
      batch.owner[i] = k;
      batch.seeds[i] = seed;
      i++;
    }
  });
  return batch;
}

/** `count` of `items`, drawn without replacement, in their order. */
function pick<T>(random: Random, items: T[], count: number): T[] {
  const keys = items.map(() => random());
  const order = keys.map((_, i) => i).sort((a, b) => keys[a] - keys[b]).slice(0, count).sort((a, b) => a - b);
  return order.map((i) => items[i]);
}

/** Training batch number `step`: `masks / INSTANCES_PER_IMAGE` images, the same for every arm of a run with this seed. */
export function instanceTrainingBatch(seed: number, step: number, masks: number, size: number): InstanceBatch {
  return draw(substream(seed * 100_003 + step, INSTANCE_STREAM.train), Math.max(1, Math.round(masks / INSTANCES_PER_IMAGE)), size, INSTANCES_PER_IMAGE);
}

/** The held-out set: `images` images and every instance in them, from a stream of its own. */
export function instanceTestSet(seed: number, images: number, size: number): InstanceBatch {
  return draw(substream(seed, INSTANCE_STREAM.test), images, size, null);
}
