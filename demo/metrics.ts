// Held-out scores: mean IoU, pixel accuracy, and boundary F1, which looks only at where the
// boundaries of each class are, and so at thin parts and shapes rather than at area.

export interface Scores {
  /** Mean over classes of |pred ∩ gt| / |pred ∪ gt|, from the confusion matrix of the whole set. */
  miou: number;
  pixelAccuracy: number;
  /** Mean over foreground classes of the F1 of boundary pixels matched within `BOUNDARY_TOLERANCE`. */
  boundaryF1: number;
  /** Per class: IoU and boundary F1 (NaN where a class never occurs in pred or gt). */
  perClass: { iou: number[]; boundaryF1: number[] };
}

/** Boundary pixels match if they are at most this many pixels apart (Chebyshev distance). */
export const BOUNDARY_TOLERANCE = 1;

/** Pixels of class `c` with a 4-neighbour (inside the image) of another class. */
function boundary(labels: Int32Array, offset: number, size: number, c: number, out: Uint8Array): number {
  let count = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = offset + y * size + x;
      let edge = 0;
      if (labels[p] === c) {
        const differs = (yy: number, xx: number) => labels[offset + yy * size + xx] !== c;
        edge = (y > 0 && differs(y - 1, x)) || (y < size - 1 && differs(y + 1, x)) || (x > 0 && differs(y, x - 1)) || (x < size - 1 && differs(y, x + 1)) ? 1 : 0;
      }
      out[y * size + x] = edge;
      count += edge;
    }
  }
  return count;
}

/** How many pixels of `a` lie within the tolerance of a pixel of `b`. */
export function matched(a: Uint8Array, b: Uint8Array, size: number, tolerance: number): number {
  let count = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      if (!a[y * size + x]) continue;
      search: for (let yy = Math.max(0, y - tolerance); yy <= Math.min(size - 1, y + tolerance); yy++) {
        for (let xx = Math.max(0, x - tolerance); xx <= Math.min(size - 1, x + tolerance); xx++) {
          if (b[yy * size + xx]) {
            count++;
            break search;
          }
        }
      }
    }
  }
  return count;
}

/**
 * Scores of predicted label maps against the ground truth, `n` square maps of side `size`.
 * Boundary F1 per class pools its counts over the whole set (precision: predicted boundary pixels
 * near a true one; recall: true boundary pixels near a predicted one), then averages the classes.
 */
export function score(pred: Int32Array, gt: Int32Array, n: number, size: number, classes: number): Scores {
  const confusion = Array.from({ length: classes }, () => new Float64Array(classes));
  for (let i = 0; i < gt.length; i++) confusion[gt[i]][pred[i]]++;
  const iou = confusion.map((row, c) => {
    const tp = row[c];
    const fn = row.reduce((s, v) => s + v, 0) - tp;
    const fp = confusion.reduce((s, r) => s + r[c], 0) - tp;
    return tp + fn + fp === 0 ? NaN : tp / (tp + fn + fp);
  });
  const correct = confusion.reduce((s, row, c) => s + row[c], 0);

  const plane = size * size;
  const bp = new Uint8Array(plane);
  const bg = new Uint8Array(plane);
  const counts = Array.from({ length: classes }, () => ({ predEdges: 0, gtEdges: 0, predMatched: 0, gtMatched: 0 }));
  for (let k = 0; k < n; k++) {
    for (let c = 1; c < classes; c++) {
      const np = boundary(pred, k * plane, size, c, bp);
      const ng = boundary(gt, k * plane, size, c, bg);
      const count = counts[c];
      count.predEdges += np;
      count.gtEdges += ng;
      if (np > 0 && ng > 0) {
        count.predMatched += matched(bp, bg, size, BOUNDARY_TOLERANCE);
        count.gtMatched += matched(bg, bp, size, BOUNDARY_TOLERANCE);
      }
    }
  }
  const boundaryF1 = counts.map((c, i) => {
    if (i === 0 || c.predEdges + c.gtEdges === 0) return NaN;
    const precision = c.predEdges === 0 ? 0 : c.predMatched / c.predEdges;
    const recall = c.gtEdges === 0 ? 0 : c.gtMatched / c.gtEdges;
    return precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  });
  const mean = (values: number[]) => {
    const present = values.filter((v) => !Number.isNaN(v));
    return present.reduce((s, v) => s + v, 0) / present.length;
  };
  return {
    miou: mean(iou),
    pixelAccuracy: correct / gt.length,
    boundaryF1: mean(boundaryF1),
    perClass: { iou, boundaryF1 },
  };
}
