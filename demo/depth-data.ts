// A synthetic depth-estimation task with sharp object boundaries and thin structures: a slanted
// ground plane, then discs, boxes, thin poles and thin bars at nearer depths, each occluding what
// is behind it. The image is what a camera would see: each surface's own colour and texture,
// fogged towards grey with distance (the one monocular depth cue), with noise. Some pixels have no
// depth (sensor holes, stored as 0), and a valid mask leaves them out of training and scoring.
// Everything is drawn from a seed, so a (seed, index) pair always gives the same sample.
import { normal, substream, uniform, type Random } from '../tools/random';
import { CHANNELS } from './data';

/** Stream ids, distinct from the segmentation task's, so the two tasks never share draws. */
export const DEPTH_STREAM = { train: 11, test: 12, init: 13 } as const;

/** Depth range of the scenes, in metres. */
export const DEPTH_MIN = 1;
export const DEPTH_MAX = 10;
/** The network predicts depth / DEPTH_SCALE, so its targets lie in (0.1, 1]. */
export const DEPTH_SCALE = 10;

export interface DepthBatch {
  /** NHWC images in [0, 1] (before noise), [n, size, size, 3]. */
  images: Float32Array;
  /** Depth in metres, [n, size, size]; 0 where there is no measurement. */
  depth: Float32Array;
  n: number;
  size: number;
}

/** A fronto-parallel or slightly slanted surface: an inside test and its depth at (x, y). */
interface Surface {
  inside: (x: number, y: number) => boolean;
  depth: (x: number, y: number) => number;
  colour: number[];
  texture: number;
}

/** Thin parts are 1.2 to 2.2 px wide whatever the image size. */
const thin = (random: Random) => uniform(random, 1.2, 2.2);

function bar(x0: number, y0: number, angle: number, length: number, width: number) {
  const c = Math.cos(angle);
  const s = Math.sin(angle);
  return (x: number, y: number) => {
    const u = (x - x0) * c + (y - y0) * s;
    const v = -(x - x0) * s + (y - y0) * c;
    return u >= 0 && u <= length && Math.abs(v) <= width / 2;
  };
}

function object(random: Random, size: number, nearest: number): Surface {
  const kind = Math.floor(random() * 4);
  const cx = uniform(random, 0.1, 0.9) * size;
  const cy = uniform(random, 0.1, 0.9) * size;
  // Nearer than the nearest ground by at least 15%: every boundary is a real discontinuity.
  const d0 = uniform(random, DEPTH_MIN + 0.5, nearest * 0.85);
  // A gentle slant across the object (at most ~10% of its depth over the image).
  const [sx, sy] = [uniform(random, -0.1, 0.1), uniform(random, -0.1, 0.1)].map((v) => (v * d0) / size);
  const depth = (x: number, y: number) => d0 + sx * (x - cx) + sy * (y - cy);
  let inside: Surface['inside'];
  switch (kind) {
    case 0: {
      const r = uniform(random, 0.08, 0.18) * size;
      inside = (x, y) => (x - cx) ** 2 + (y - cy) ** 2 <= r * r;
      break;
    }
    case 1: {
      const [a, b] = [uniform(random, 0.08, 0.2) * size, uniform(random, 0.06, 0.16) * size];
      inside = (x, y) => Math.abs(x - cx) <= a && Math.abs(y - cy) <= b;
      break;
    }
    case 2: {
      // A thin pole, near vertical, from the object's centre downwards.
      inside = bar(cx, cy, Math.PI / 2 + uniform(random, -0.3, 0.3), uniform(random, 0.3, 0.6) * size, thin(random));
      break;
    }
    default: {
      // A thin bar at any angle.
      inside = bar(cx, cy, uniform(random, 0, 2 * Math.PI), uniform(random, 0.25, 0.5) * size, thin(random));
    }
  }
  const colour = [0, 1, 2].map(() => uniform(random, 0.15, 0.95));
  return { inside, depth, colour, texture: uniform(random, 0.02, 0.1) };
}

function drawSample(random: Random, size: number, batch: DepthBatch, index: number): void {
  const plane = size * size;
  const offset = index * plane;
  // The ground: far at the top of the image, near at the bottom, tilted sideways.
  const far = uniform(random, 7, DEPTH_MAX);
  const near = uniform(random, 3, 5);
  const tilt = uniform(random, -1, 1);
  const ground = (x: number, y: number) => far + ((near - far) * y) / size + (tilt * (x - size / 2)) / size;
  const groundColour = [0, 1, 2].map(() => uniform(random, 0.3, 0.7));
  const fog = uniform(random, 0.35, 0.65);
  const count = 4 + Math.floor(random() * 4);
  const objects = Array.from({ length: count }, () => object(random, size, near - 0.5));
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const [px, py] = [x + 0.5, y + 0.5];
      let d = ground(px, py);
      let colour = groundColour;
      let texture = 0.05;
      // A z-buffer: the nearest surface at this pixel wins.
      for (const o of objects) {
        if (!o.inside(px, py)) continue;
        const od = o.depth(px, py);
        if (od < d) [d, colour, texture] = [od, o.colour, o.texture];
      }
      const p = offset + y * size + x;
      batch.depth[p] = d;
      // Aerial perspective: colours fade towards the fog's grey with distance.
      const t = (0.6 * (d - DEPTH_MIN)) / (DEPTH_MAX - DEPTH_MIN);
      const grain = texture * normal(random);
      for (let c = 0; c < CHANNELS; c++) batch.images[p * CHANNELS + c] = (1 - t) * colour[c] + t * fog + grain + 0.04 * normal(random);
    }
  }
  // Sensor holes: 1 to 3 small ellipses without a measurement.
  const holes = 1 + Math.floor(random() * 3);
  for (let k = 0; k < holes; k++) {
    const [hx, hy] = [uniform(random, 0, size), uniform(random, 0, size)];
    const [rx, ry] = [uniform(random, 0.04, 0.1) * size, uniform(random, 0.04, 0.1) * size];
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        if (((x + 0.5 - hx) / rx) ** 2 + ((y + 0.5 - hy) / ry) ** 2 <= 1) batch.depth[offset + y * size + x] = 0;
      }
    }
  }
}

function draw(random: Random, n: number, size: number): DepthBatch {
  const batch = { images: new Float32Array(n * size * size * CHANNELS), depth: new Float32Array(n * size * size), n, size };
  for (let i = 0; i < n; i++) drawSample(random, size, batch, i);
  return batch;
}

/** Training batch number `step`: the same for every arm of a run with this seed. */
export function depthTrainingBatch(seed: number, step: number, n: number, size: number): DepthBatch {
  return draw(substream(seed * 100_003 + step, DEPTH_STREAM.train), n, size);
}

/** The held-out set: a stream of its own, never used for training. */
export function depthTestSet(seed: number, n: number, size: number): DepthBatch {
  return draw(substream(seed, DEPTH_STREAM.test), n, size);
}
