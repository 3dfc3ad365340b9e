// A synthetic segmentation task where structure matters: overlapping shapes, four of them with
// thin parts, in colours that say nothing about the class, on a shaded, noisy background.
// Everything is drawn from a seed, so a (seed, index) pair always gives the same image.
import { normal, substream, uniform, type Random } from '../tools/random';

export const CLASS_NAMES = ['background', 'disc', 'ring', 'cross', 'racket'] as const;
export const CLASSES = CLASS_NAMES.length;
/** Input channels: RGB. */
export const CHANNELS = 3;

/** Stream ids, so the training batches, the held-out set and the weights never share draws. */
export const STREAM = { train: 1, test: 2, init: 3 } as const;

export interface Batch {
  /** NHWC images in [0, 1] (before noise), [n, size, size, 3]. */
  images: Float32Array;
  /** Class ids, [n, size, size]. */
  labels: Int32Array;
  n: number;
  size: number;
}

/** A shape as an inside test on pixel centres, in image coordinates. */
type Inside = (x: number, y: number) => boolean;

/** A bar from (x0, y0) in direction angle, length `length`, full width `width`. */
function bar(x0: number, y0: number, angle: number, from: number, to: number, width: number): Inside {
  const c = Math.cos(angle);
  const s = Math.sin(angle);
  return (x, y) => {
    const u = (x - x0) * c + (y - y0) * s;
    const v = -(x - x0) * s + (y - y0) * c;
    return u >= from && u <= to && Math.abs(v) <= width / 2;
  };
}

/** Thin parts are 1.2 to 2.2 px wide whatever the image size: they are what CE tends to lose. */
const thin = (random: Random) => uniform(random, 1.2, 2.2);

/** One random shape of class 1..4, with sizes relative to the image. */
function shape(random: Random, size: number): { label: number; inside: Inside } {
  const label = 1 + Math.floor(random() * (CLASSES - 1));
  const cx = uniform(random, 0.12, 0.88) * size;
  const cy = uniform(random, 0.12, 0.88) * size;
  const angle = uniform(random, 0, Math.PI);
  switch (label) {
    case 1: {
      const r = uniform(random, 0.07, 0.16) * size;
      return { label, inside: (x, y) => (x - cx) ** 2 + (y - cy) ** 2 <= r * r };
    }
    case 2: {
      const r = uniform(random, 0.09, 0.19) * size;
      const half = thin(random) / 2;
      return { label, inside: (x, y) => Math.abs(Math.hypot(x - cx, y - cy) - r) <= half };
    }
    case 3: {
      const arm = uniform(random, 0.1, 0.2) * size;
      const width = thin(random);
      const a = bar(cx, cy, angle, -arm, arm, width);
      const b = bar(cx, cy, angle + Math.PI / 2, -arm, arm, width);
      return { label, inside: (x, y) => a(x, y) || b(x, y) };
    }
    default: {
      // A filled rectangle (a racket's head) with a thin handle along its long axis.
      const a = uniform(random, 0.06, 0.13) * size;
      const b = uniform(random, 0.04, a / size) * size;
      const head = bar(cx - a * Math.cos(angle), cy - a * Math.sin(angle), angle, 0, 2 * a, 2 * b);
      const handle = bar(cx, cy, angle, a, a + uniform(random, 0.1, 0.22) * size, thin(random));
      return { label, inside: (x, y) => head(x, y) || handle(x, y) };
    }
  }
}

/** Draws one image and its labels into the batch at `offset` (in pixels). */
function drawSample(random: Random, size: number, images: Float32Array, labels: Int32Array, offset: number): void {
  // Background: a base colour and a linear shading in a random direction.
  const base = [0, 1, 2].map(() => uniform(random, 0.25, 0.75));
  const shade = uniform(random, 0.1, 0.35);
  const dir = uniform(random, 0, 2 * Math.PI);
  const [gx, gy] = [Math.cos(dir) * shade, Math.sin(dir) * shade];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = offset + y * size + x;
      const g = (gx * (x - size / 2) + gy * (y - size / 2)) / size;
      for (let c = 0; c < 3; c++) images[p * 3 + c] = base[c] + g;
      labels[p] = 0;
    }
  }
  // 5 to 8 shapes, later ones on top; each in a colour well away from the background's.
  const count = 5 + Math.floor(random() * 4);
  for (let k = 0; k < count; k++) {
    const { label, inside } = shape(random, size);
    const colour = base.map((b) => b + (random() < 0.5 ? -1 : 1) * uniform(random, 0.25, 0.5));
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        if (!inside(x + 0.5, y + 0.5)) continue;
        const p = offset + y * size + x;
        labels[p] = label;
        for (let c = 0; c < 3; c++) images[p * 3 + c] = colour[c];
      }
    }
  }
  // Sensor noise.
  for (let i = offset * 3; i < (offset + size * size) * 3; i++) images[i] += 0.06 * normal(random);
}

/** `n` images drawn from one stream. */
function draw(random: Random, n: number, size: number): Batch {
  const images = new Float32Array(n * size * size * CHANNELS);
  const labels = new Int32Array(n * size * size);
  for (let i = 0; i < n; i++) drawSample(random, size, images, labels, i * size * size);
  return { images, labels, n, size };
}

/** Training batch number `step`: the same for every arm of a run with this seed. */
export function trainingBatch(seed: number, step: number, n: number, size: number): Batch {
  return draw(substream(seed * 100_003 + step, STREAM.train), n, size);
}

/** The held-out set: a stream of its own, never used for training. */
export function testSet(seed: number, n: number, size: number): Batch {
  return draw(substream(seed, STREAM.test), n, size);
}
