// Held-out scores of depth maps, over the valid pixels only: the usual AbsRel, RMSE and
// delta < 1.25, and the F1 of depth discontinuities, which looks at where the edges are and so at
// object boundaries and thin structures rather than at area.
import { BOUNDARY_TOLERANCE, matched } from './metrics';

export interface DepthScores {
  /** Mean of |pred - gt| / gt. Lower is better. */
  absRel: number;
  /** sqrt(mean (pred - gt)^2), in metres. Lower is better. */
  rmse: number;
  /** Fraction of pixels with max(pred / gt, gt / pred) < 1.25. */
  delta1: number;
  /** F1 of depth-edge pixels matched within BOUNDARY_TOLERANCE px, pooled over the set. */
  edgeF1: number;
}

/** Neighbouring depths that differ by more than this fraction of the nearer one make an edge. */
export const EDGE_JUMP = 0.1;
/** Predictions are clipped to this before the ratios (a depth is > 0). */
const MIN_DEPTH = 0.01;

/**
 * Pixels with a valid 4-neighbour whose depth differs by more than EDGE_JUMP (relative). Slanted
 * planes change by ~1% per pixel here, so only real discontinuities count.
 */
function edges(depth: ArrayLike<number>, valid: Uint8Array, offset: number, size: number, out: Uint8Array): number {
  let count = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = offset + y * size + x;
      let edge = 0;
      if (valid[p]) {
        const d = Math.max(depth[p], MIN_DEPTH);
        const jump = (yy: number, xx: number) => {
          const q = offset + yy * size + xx;
          if (!valid[q]) return false;
          const e = Math.max(depth[q], MIN_DEPTH);
          return Math.abs(d - e) > EDGE_JUMP * Math.min(d, e);
        };
        edge = (y > 0 && jump(y - 1, x)) || (y < size - 1 && jump(y + 1, x)) || (x > 0 && jump(y, x - 1)) || (x < size - 1 && jump(y, x + 1)) ? 1 : 0;
      }
      out[y * size + x] = edge;
      count += edge;
    }
  }
  return count;
}

/** Scores of predicted depth (metres) against the ground truth, `n` square maps of side `size`. */
export function scoreDepth(pred: ArrayLike<number>, gt: Float32Array, valid: Uint8Array, n: number, size: number): DepthScores {
  let count = 0;
  let absRel = 0;
  let squared = 0;
  let within = 0;
  for (let i = 0; i < gt.length; i++) {
    if (!valid[i]) continue;
    const p = Math.max(pred[i], MIN_DEPTH);
    const g = gt[i];
    count++;
    absRel += Math.abs(p - g) / g;
    squared += (p - g) ** 2;
    if (Math.max(p / g, g / p) < 1.25) within++;
  }
  const plane = size * size;
  const ep = new Uint8Array(plane);
  const eg = new Uint8Array(plane);
  let [predEdges, gtEdges, predMatched, gtMatched] = [0, 0, 0, 0];
  for (let k = 0; k < n; k++) {
    const np = edges(pred, valid, k * plane, size, ep);
    const ng = edges(gt, valid, k * plane, size, eg);
    predEdges += np;
    gtEdges += ng;
    if (np > 0 && ng > 0) {
      predMatched += matched(ep, eg, size, BOUNDARY_TOLERANCE);
      gtMatched += matched(eg, ep, size, BOUNDARY_TOLERANCE);
    }
  }
  const precision = predEdges === 0 ? 0 : predMatched / predEdges;
  const recall = gtEdges === 0 ? 0 : gtMatched / gtEdges;
  return {
    absRel: absRel / count,
    rmse: Math.sqrt(squared / count),
    delta1: within / count,
    edgeF1: precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall),
  };
}
