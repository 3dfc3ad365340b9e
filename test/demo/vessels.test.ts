// The vessels task's pure parts: its data, the 3-D skeleton (simple points against the textbook
// characterisation, thinning of known shapes) and its scores (Dice, clDice, skeleton recall, β0).
import { describe, expect, it } from 'vitest';
import { colourVolumeErrors, mip, OUTCOME } from '../../demo/images';
import { vesselTestSet, vesselTrainingBatch, type VolumeShape } from '../../demo/vessel-data';
import { components, isSimple, scoreVessels, skeletonize, skeletons } from '../../demo/vessel-metrics';
import { mulberry32 } from '../../tools/random';

const SHAPE: VolumeShape = [12, 20, 20];
const voxels = (s: VolumeShape) => s[0] * s[1] * s[2];

/** A binary volume of `shape` with 1 where `inside(z, y, x)` holds at the voxel centre. */
function volume(shape: VolumeShape, inside: (z: number, y: number, x: number) => boolean): Uint8Array {
  const [d, h, w] = shape;
  const out = new Uint8Array(d * h * w);
  for (let z = 0; z < d; z++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[(z * h + y) * w + x] = inside(z + 0.5, y + 0.5, x + 0.5) ? 1 : 0;
  return out;
}

/** A tube of radius r along x at (z0, y0), from x0 to x1. */
const tube = (z0: number, y0: number, r: number, x0 = 0, x1 = Infinity) => (z: number, y: number, x: number) => Math.hypot(z - z0, y - y0) <= r && x >= x0 && x <= x1;

/** How many 26-neighbours of voxel v are set. */
function neighbours(mask: Uint8Array, shape: VolumeShape, v: number): number {
  const [d, h, w] = shape;
  const [z, y, x] = [Math.floor(v / (h * w)), Math.floor(v / w) % h, v % w];
  let n = 0;
  for (let dz = -1; dz <= 1; dz++)
    for (let dy = -1; dy <= 1; dy++)
      for (let dx = -1; dx <= 1; dx++) {
        const [zz, yy, xx] = [z + dz, y + dy, x + dx];
        if ((dz || dy || dx) && zz >= 0 && yy >= 0 && xx >= 0 && zz < d && yy < h && xx < w) n += mask[(zz * h + yy) * w + xx];
      }
  return n;
}

describe('demo vessel data', () => {
  it('is a function of (seed, index), on streams of its own', () => {
    const a = vesselTrainingBatch(1, 5, 2, SHAPE);
    expect(vesselTrainingBatch(1, 5, 2, SHAPE)).toEqual(a);
    expect(vesselTrainingBatch(2, 5, 2, SHAPE).labels).not.toEqual(a.labels);
    expect(vesselTrainingBatch(1, 6, 2, SHAPE).labels).not.toEqual(a.labels);
    expect(vesselTestSet(1, 2, SHAPE).labels).not.toEqual(a.labels);
  });

  it('holds thin, bright, branching tubes: a few per cent of the voxels, skeletons much smaller than the tubes', () => {
    const shape: VolumeShape = [16, 32, 32];
    const set = vesselTestSet(1, 6, shape);
    const n = voxels(shape);
    const sk = skeletons(set.labels, set.n, shape);
    for (let k = 0; k < set.n; k++) {
      const labels = set.labels.subarray(k * n, (k + 1) * n);
      const image = set.volumes.subarray(k * n, (k + 1) * n);
      const count = labels.reduce((s, v) => s + v, 0);
      expect(count / n).toBeGreaterThan(0.005);
      expect(count / n).toBeLessThan(0.08);
      // Radius 0.9-1.5: a tube's cross-section has ~3 to ~9 voxels per voxel of centre line.
      const centre = sk.subarray(k * n, (k + 1) * n).reduce((s, v) => s + v, 0);
      expect(count / centre).toBeGreaterThan(2.5);
      expect(count / centre).toBeLessThan(12);
      let [inside, outside] = [0, 0];
      for (let v = 0; v < n; v++) {
        if (labels[v]) inside += image[v];
        else outside += image[v];
      }
      expect(inside / count - outside / (n - count)).toBeGreaterThan(0.15);
    }
    // Some volume has a branch: its skeleton has a voxel with 3 or more neighbours.
    const branching = Array.from({ length: set.n }, (_, k) => Array.from({ length: n }, (_, v) => v).some((v) => sk[k * n + v] && neighbours(sk.subarray(k * n), shape, v) >= 3));
    expect(branching.some(Boolean)).toBe(true);
  });
});

describe('demo 3-D skeleton', () => {
  /**
   * The textbook test (Bertrand and Malandain 1994): a voxel is simple for 26-connected objects
   * and 6-connected background iff its object 26-neighbours form one 26-connected piece and its
   * background 18-neighbours have exactly one 6-connected piece that touches it by a face.
   */
  function bertrand(nb: Uint8Array): boolean {
    const offsets: Array<[number, number, number]> = [];
    for (let dz = -1; dz <= 1; dz++) for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) if (dz || dy || dx) offsets.push([dz, dy, dx]);
    const cheb = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i])));
    const manhattan = (a: number[], b: number[]) => a.reduce((s, v, i) => s + Math.abs(v - b[i]), 0);
    const pieces = (members: number[], adjacent: (i: number, j: number) => boolean) => {
      const label = new Map<number, number>();
      let count = 0;
      for (const start of members) {
        if (label.has(start)) continue;
        label.set(start, count);
        const stack = [start];
        while (stack.length) {
          const i = stack.pop()!;
          for (const j of members) {
            if (label.has(j) || !adjacent(i, j)) continue;
            label.set(j, count);
            stack.push(j);
          }
        }
        count++;
      }
      return { count, label };
    };
    const object = offsets.flatMap((_, i) => (nb[i] ? [i] : []));
    const objectPieces = pieces(object, (i, j) => cheb(offsets[i], offsets[j]) === 1).count;
    const n18 = offsets.flatMap((o, i) => (!nb[i] && manhattan(o, [0, 0, 0]) <= 2 ? [i] : []));
    const background = pieces(n18, (i, j) => manhattan(offsets[i], offsets[j]) === 1);
    const touching = new Set(n18.filter((i) => manhattan(offsets[i], [0, 0, 0]) === 1).map((i) => background.label.get(i)));
    return objectPieces === 1 && touching.size === 1;
  }

  it('finds the simple points of 4000 random neighbourhoods as the textbook test does', () => {
    const random = mulberry32(7);
    let simple = 0;
    for (let trial = 0; trial < 4000; trial++) {
      const density = 0.1 + 0.8 * random();
      const nb = Uint8Array.from({ length: 26 }, () => (random() < density ? 1 : 0));
      const expected = bertrand(nb);
      expect(isSimple(nb), `neighbourhood ${nb.join('')}`).toBe(expected);
      if (expected) simple++;
    }
    // Both answers occur often enough to mean something.
    expect(simple).toBeGreaterThan(400);
    expect(simple).toBeLessThan(3600);
  });

  it('thins a straight tube to a one-voxel line of about its length, inside it', () => {
    const shape: VolumeShape = [9, 9, 24];
    const t = volume(shape, tube(4.5, 4.5, 1.5, 2, 22));
    const s = skeletonize(t, shape);
    const count = s.reduce((a, v) => a + v, 0);
    expect(components(s, shape)).toBe(1);
    expect(count).toBeGreaterThanOrEqual(15);
    expect(count).toBeLessThanOrEqual(21);
    for (let v = 0; v < s.length; v++) {
      if (!s[v]) continue;
      expect(t[v]).toBe(1);
      expect(neighbours(s, shape, v)).toBeLessThanOrEqual(2);
    }
  });

  it('keeps the hole of a torus (a closed loop, no ends) and shrinks a ball to a point', () => {
    const shape: VolumeShape = [8, 24, 24];
    const torus = volume(shape, (z, y, x) => Math.hypot(Math.hypot(y - 12, x - 12) - 7, z - 4) <= 1.6);
    const ring = skeletonize(torus, shape);
    expect(components(ring, shape)).toBe(1);
    const ringVoxels = Array.from(ring.keys()).filter((v) => ring[v]);
    expect(ringVoxels.length).toBeGreaterThan(0.7 * 2 * Math.PI * 7);
    for (const v of ringVoxels) expect(neighbours(ring, shape, v)).toBeGreaterThanOrEqual(2);
    const ballShape: VolumeShape = [12, 12, 12];
    const ball = skeletonize(volume(ballShape, (z, y, x) => Math.hypot(z - 6, y - 6, x - 6) <= 4.5), ballShape);
    expect(ball.reduce((a, v) => a + v, 0)).toBeLessThanOrEqual(2);
    expect(components(ball, ballShape)).toBe(1);
  });
});

describe('demo vessel scores', () => {
  const shape: VolumeShape = [10, 10, 30];
  const truth = volume(shape, (z, y, x) => tube(5, 5, 1.5)(z, y, x) || (Math.hypot(z - 5, x - 15) <= 1.5 && y <= 5));

  it('scores the truth 1 (and β0 error 0), and an empty prediction 0', () => {
    expect(scoreVessels(truth, truth, 1, shape)).toEqual({ dice: 1, clDice: 1, skeletonRecall: 1, betti0Error: 0 });
    expect(scoreVessels(new Uint8Array(truth.length), truth, 1, shape)).toEqual({ dice: 0, clDice: 0, skeletonRecall: 0, betti0Error: 1 });
  });

  it('a vessel cut in two: Dice barely moves, skeleton recall drops and β0 counts the extra piece', () => {
    const cut = truth.map((v, i) => (i % 30 >= 24 && i % 30 < 26 ? 0 : v));
    const s = scoreVessels(cut, truth, 1, shape);
    expect(s.dice).toBeGreaterThan(0.9);
    expect(s.skeletonRecall).toBeLessThan(1);
    expect(s.betti0Error).toBe(1);
  });

  it('clDice ignores a thicker but whole vessel, which Dice penalises', () => {
    const thick = volume(shape, (z, y, x) => tube(5, 5, 2.5)(z, y, x) || (Math.hypot(z - 5, x - 15) <= 2.5 && y <= 5));
    const s = scoreVessels(thick, truth, 1, shape);
    expect(s.dice).toBeLessThan(0.8);
    expect(s.clDice).toBe(1);
    expect(s.betti0Error).toBe(0);
  });

  it('pools over volumes and takes the truth skeletons when given', () => {
    const two = new Uint8Array(2 * truth.length);
    two.set(truth, 0);
    two.set(truth, truth.length);
    const pred = two.slice();
    pred.fill(0, truth.length);
    const s = scoreVessels(pred, two, 2, shape);
    expect(s.dice).toBeCloseTo(2 / 3, 10);
    expect(s.skeletonRecall).toBeCloseTo(0.5, 10);
    expect(s.betti0Error).toBe(0.5);
    expect(scoreVessels(pred, two, 2, shape, skeletons(two, 2, shape))).toEqual(s);
  });
});

describe('demo vessel pictures', () => {
  it('projects along D, and colours missed, spurious and found vessel columns', () => {
    const shape: VolumeShape = [2, 1, 4];
    const values = Float32Array.of(0, 5, 1, 0, 2, 1, 3, 0);
    expect(Array.from(mip(values, 0, shape))).toEqual([2, 5, 3, 0]);
    // Columns: found; missed; spurious; missed in one slice and spurious in the other.
    const truth = Uint8Array.of(1, 1, 0, 1, 0, 0, 0, 0);
    const pred = Uint8Array.of(1, 0, 1, 0, 0, 0, 0, 1);
    const rgb = colourVolumeErrors(pred, truth, 0, shape);
    expect([0, 1, 2, 3].map((p) => Array.from(rgb.subarray(3 * p, 3 * p + 3)))).toEqual([OUTCOME.hit, OUTCOME.falseNegative, OUTCOME.falsePositive, OUTCOME.both].map((c) => [...c]));
  });
});
