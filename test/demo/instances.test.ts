// The instance task's pure parts: its data (touching shapes, one visible mask and seed per
// instance) and its scores (mask IoU and boundary F1 per instance).
import { describe, expect, it } from 'vitest';
import { INSTANCE_CHANNELS, INSTANCES_PER_IMAGE, instanceTestSet, instanceTrainingBatch } from '../../demo/instance-data';
import { scoreInstances } from '../../demo/instance-metrics';

describe('demo instance data', () => {
  it('is a function of (seed, index), on streams of its own', () => {
    const a = instanceTrainingBatch(1, 5, 6, 24);
    expect(instanceTrainingBatch(1, 5, 6, 24)).toEqual(a);
    expect(instanceTrainingBatch(2, 5, 6, 24).masks).not.toEqual(a.masks);
    expect(instanceTrainingBatch(1, 6, 6, 24).masks).not.toEqual(a.masks);
    expect(instanceTestSet(1, 2, 24).masks.subarray(0, a.masks.length)).not.toEqual(a.masks);
  });

  it('trains on batches of 2 images x 3 instances', () => {
    const b = instanceTrainingBatch(3, 1, 6, 24);
    expect(b).toMatchObject({ n: 2, m: 6, size: 24 });
    expect(Array.from(b.owner)).toEqual([0, 0, 0, 1, 1, 1]);
    expect(b.inputs).toHaveLength(6 * 24 * 24 * INSTANCE_CHANNELS);
  });

  it('gives every instance of an image a disjoint, non-empty mask with its seed inside, and many instances touch', () => {
    const size = 24;
    const plane = size * size;
    const set = instanceTestSet(1, 40, size);
    expect(set.m).toBeGreaterThanOrEqual(INSTANCES_PER_IMAGE * set.n);
    let touchingImages = 0;
    for (let image = 0; image < set.n; image++) {
      const mine = Array.from(set.owner.keys()).filter((k) => set.owner[k] === image);
      const owner = new Int32Array(plane).fill(-1);
      for (const k of mine) {
        const mask = set.masks.subarray(k * plane, (k + 1) * plane);
        expect(mask.reduce((s, v) => s + v, 0)).toBeGreaterThanOrEqual(6);
        expect(mask[set.seeds[k]]).toBe(1);
        // The seed channel peaks (at 1) on the seed pixel.
        expect(set.inputs[(k * plane + set.seeds[k]) * INSTANCE_CHANNELS + 1]).toBe(1);
        for (let p = 0; p < plane; p++) {
          if (!mask[p]) continue;
          expect(owner[p]).toBe(-1);
          owner[p] = k;
        }
      }
      // Two instances touch where 4-neighbouring pixels belong to different ones.
      let touching = false;
      for (let p = 0; p < plane && !touching; p++) {
        const right = p % size < size - 1 ? owner[p + 1] : -1;
        const below = p + size < plane ? owner[p + size] : -1;
        touching = owner[p] >= 0 && ((right >= 0 && right !== owner[p]) || (below >= 0 && below !== owner[p]));
      }
      if (touching) touchingImages++;
    }
    expect(touchingImages / set.n).toBeGreaterThan(0.8);
  });
});

describe('demo instance scores', () => {
  const size = 10;
  /** A w x h box at (x, y) in a size x size mask. */
  const box = (x: number, y: number, w: number, h: number) => Uint8Array.from({ length: size * size }, (_, p) => (p % size >= x && p % size < x + w && Math.floor(p / size) >= y && Math.floor(p / size) < y + h ? 1 : 0));
  const join = (...masks: Uint8Array[]) => {
    const out = new Uint8Array(masks.length * size * size);
    masks.forEach((m, k) => out.set(m, k * size * size));
    return out;
  };

  it('scores the truth 1 and empty masks 0', () => {
    const truth = join(box(1, 1, 4, 4), box(5, 1, 4, 4));
    expect(scoreInstances(truth, truth, 2, size)).toEqual({ maskIoU: 1, boundaryF1: 1, boundaryF1Exact: 1 });
    expect(scoreInstances(new Uint8Array(truth.length), truth, 2, size)).toEqual({ maskIoU: 0, boundaryF1: 0, boundaryF1Exact: 0 });
  });

  it('boundary F1 tolerates a 1 px shift, its exact form and mask IoU do not; all average over instances', () => {
    const truth = join(box(1, 1, 4, 4), box(5, 1, 4, 4));
    const shifted = join(box(2, 1, 4, 4), box(5, 1, 4, 4));
    const s = scoreInstances(shifted, truth, 2, size);
    expect(s.boundaryF1).toBe(1);
    expect(s.maskIoU).toBeCloseTo((12 / 20 + 1) / 2, 10);
    // The shifted box's 12 boundary pixels: 6 on the truth's (top and bottom rows, x = 2..4).
    expect(s.boundaryF1Exact).toBeCloseTo((6 / 12 + 1) / 2, 10);
  });

  it('a mask that spills into the touching instance loses IoU and boundary F1', () => {
    const truth = join(box(1, 1, 4, 6), box(5, 1, 4, 6));
    const spilled = join(box(1, 1, 8, 6), box(5, 1, 4, 6));
    const s = scoreInstances(spilled, truth, 2, size);
    expect(s.maskIoU).toBeCloseTo((0.5 + 1) / 2, 10);
    expect(s.boundaryF1).toBeLessThan(0.9);
  });
});
