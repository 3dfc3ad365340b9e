// Held-out scores of instance masks: the IoU of each predicted mask with its instance's, and the
// boundary F1 of each mask (its outline matched within BOUNDARY_TOLERANCE px, and exactly), which
// looks at where an instance ends, most of all where it touches another; averaged over the
// instances. With instances 3-5 px in radius, a 1 px tolerance forgives most of what goes wrong
// (a one-pixel leak into the neighbour): the exact boundary F1 still tells those apart.
import { BOUNDARY_TOLERANCE, matched } from './metrics';

export interface InstanceScores {
  /** Mean over instances of |P ∩ G| / |P ∪ G|. */
  maskIoU: number;
  /** Mean over instances of the F1 of boundary pixels matched within BOUNDARY_TOLERANCE px. */
  boundaryF1: number;
  /** The same, boundary pixels matched only where both masks have one. */
  boundaryF1Exact: number;
}

/** Pixels of a binary mask with a 4-neighbour (inside the image) outside it. */
export function maskBoundary(mask: Uint8Array, offset: number, size: number, out: Uint8Array): number {
  let count = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = offset + y * size + x;
      const off = (yy: number, xx: number) => !mask[offset + yy * size + xx];
      const edge = mask[p] && ((y > 0 && off(y - 1, x)) || (y < size - 1 && off(y + 1, x)) || (x > 0 && off(y, x - 1)) || (x < size - 1 && off(y, x + 1))) ? 1 : 0;
      out[y * size + x] = edge;
      count += edge;
    }
  }
  return count;
}

/** Scores of `m` predicted binary masks against the truth, square of side `size`. */
export function scoreInstances(pred: Uint8Array, truth: Uint8Array, m: number, size: number): InstanceScores {
  const plane = size * size;
  const bp = new Uint8Array(plane);
  const bt = new Uint8Array(plane);
  let iouSum = 0;
  const f1Sums = [0, 0];
  for (let k = 0; k < m; k++) {
    const offset = k * plane;
    let both = 0;
    let either = 0;
    for (let p = offset; p < offset + plane; p++) {
      both += pred[p] & truth[p];
      either += pred[p] | truth[p];
    }
    iouSum += either === 0 ? 1 : both / either;
    const np = maskBoundary(pred, offset, size, bp);
    const nt = maskBoundary(truth, offset, size, bt);
    [BOUNDARY_TOLERANCE, 0].forEach((tolerance, i) => {
      if (np + nt === 0) {
        f1Sums[i] += 1;
        return;
      }
      const precision = np === 0 ? 0 : matched(bp, bt, size, tolerance) / np;
      const recall = nt === 0 ? 0 : matched(bt, bp, size, tolerance) / nt;
      f1Sums[i] += precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
    });
  }
  return { maskIoU: iouSum / m, boundaryF1: f1Sums[0] / m, boundaryF1Exact: f1Sums[1] / m };
}
