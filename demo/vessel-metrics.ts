// Held-out scores of vessel segmentations: Dice, which counts voxels and so barely notices a
// vessel broken in two, and two that look at connectivity: clDice (Shit et al., CVPR 2021), the
// Dice of centre lines (each mask's skeleton against the other mask), and the error in the number
// of connected pieces (Betti number 0). The skeleton is a 3-D topological thinning in the manner
// of Lee, Kashyap and Chu (1994), which removes simple points border by border and keeps the ends
// of curves, so a tube becomes a one-voxel curve with the tube's connectivity.

/** [D, H, W] in voxels. */
type Shape = readonly [number, number, number];

/** The 26 neighbours' offsets (dz, dy, dx), in the order of the 3x3x3 cube without its centre. */
const OFFSETS: ReadonlyArray<readonly [number, number, number]> = (() => {
  const out: Array<[number, number, number]> = [];
  for (let dz = -1; dz <= 1; dz++) for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) if (dz || dy || dx) out.push([dz, dy, dx]);
  return out;
})();
const indexOf = (dz: number, dy: number, dx: number) => OFFSETS.findIndex((o) => o[0] === dz && o[1] === dy && o[2] === dx);

/** For each neighbour, the neighbours 26-adjacent to it (within the cube, centre excluded). */
const ADJACENT: number[][] = OFFSETS.map((a) =>
  OFFSETS.flatMap((b, j) => (a !== b && Math.max(Math.abs(a[0] - b[0]), Math.abs(a[1] - b[1]), Math.abs(a[2] - b[2])) <= 1 ? [j] : [])),
);

/**
 * The cells on the surface of the centre voxel's cube (8 corners, 12 edges, 6 faces), each with
 * the neighbours whose cubes contain it: 7 for a corner, 3 for an edge, 1 for a face.
 */
const CELLS: { corners: number[][]; edges: number[][]; faces: number[][] } = (() => {
  const corners: number[][] = [];
  for (const sz of [-1, 1]) {
    for (const sy of [-1, 1]) {
      for (const sx of [-1, 1]) {
        const list: number[] = [];
        for (const z of [0, sz]) for (const y of [0, sy]) for (const x of [0, sx]) if (z || y || x) list.push(indexOf(z, y, x));
        corners.push(list);
      }
    }
  }
  const edges: number[][] = [];
  for (let axis = 0; axis < 3; axis++) {
    for (const s1 of [-1, 1]) {
      for (const s2 of [-1, 1]) {
        const list: number[] = [];
        for (const u of [0, s1]) {
          for (const v of [0, s2]) {
            if (!u && !v) continue;
            const o = [0, 0, 0];
            o[(axis + 1) % 3] = u;
            o[(axis + 2) % 3] = v;
            list.push(indexOf(o[0], o[1], o[2]));
          }
        }
        edges.push(list);
      }
    }
  }
  const faces: number[][] = [];
  for (let axis = 0; axis < 3; axis++) {
    for (const s of [-1, 1]) {
      const o = [0, 0, 0];
      o[axis] = s;
      faces.push([indexOf(o[0], o[1], o[2])]);
    }
  }
  return { corners, edges, faces };
})();

const present = (nb: Uint8Array, list: number[]) => list.some((i) => nb[i] === 1);

/**
 * The Euler characteristic of the part of the centre cube's surface that touches the object
 * (V - E + F of the cells shared with object neighbours). Removing the centre voxel keeps the
 * object's Euler characteristic (26-connectivity) exactly when this is 1.
 */
export function surfaceEuler(nb: Uint8Array): number {
  const count = (cells: number[][]) => cells.reduce((n, list) => n + (present(nb, list) ? 1 : 0), 0);
  return count(CELLS.corners) - count(CELLS.edges) + count(CELLS.faces);
}

/** Whether the object neighbours (nb[i] = 1) form exactly one 26-connected piece. */
function oneComponent(nb: Uint8Array, stack: number[], seen: Uint8Array): boolean {
  seen.fill(0);
  let start = -1;
  let total = 0;
  for (let i = 0; i < 26; i++) {
    if (nb[i]) {
      total++;
      if (start < 0) start = i;
    }
  }
  if (start < 0) return false;
  stack.length = 0;
  stack.push(start);
  seen[start] = 1;
  let reached = 1;
  while (stack.length > 0) {
    const i = stack.pop()!;
    for (const j of ADJACENT[i]) {
      if (nb[j] && !seen[j]) {
        seen[j] = 1;
        reached++;
        stack.push(j);
      }
    }
  }
  return reached === total;
}

/**
 * Whether the centre voxel is simple (removing it changes no topology, 26-connected object and
 * 6-connected background): the surface it shares with the object is non-empty, connected and of
 * Euler characteristic 1, that is, contractible.
 */
export function isSimple(nb: Uint8Array, stack: number[] = [], seen: Uint8Array = new Uint8Array(26)): boolean {
  return oneComponent(nb, stack, seen) && surfaceEuler(nb) === 1;
}

/** Topological thinning of a binary [D, H, W] volume to a curve skeleton; returns a new mask. */
export function skeletonize(mask: Uint8Array, shape: Shape, offset = 0): Uint8Array {
  const [d, h, w] = shape;
  // Padded by one background voxel on every side: no bounds checks.
  const [pd, ph, pw] = [d + 2, h + 2, w + 2];
  const img = new Uint8Array(pd * ph * pw);
  for (let z = 0; z < d; z++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) img[((z + 1) * ph + y + 1) * pw + x + 1] = mask[offset + (z * h + y) * w + x];
  const delta = OFFSETS.map(([dz, dy, dx]) => (dz * ph + dy) * pw + dx);
  // The six borders: a voxel is on one when its neighbour that way is background.
  const borders = [indexOf(-1, 0, 0), indexOf(1, 0, 0), indexOf(0, -1, 0), indexOf(0, 1, 0), indexOf(0, 0, -1), indexOf(0, 0, 1)].map((i) => delta[i]);
  const nb = new Uint8Array(26);
  const seen = new Uint8Array(26);
  const stack: number[] = [];
  const gather = (p: number) => {
    let count = 0;
    for (let i = 0; i < 26; i++) count += nb[i] = img[p + delta[i]];
    return count;
  };
  // Deletable: simple and not the end of a curve (exactly one neighbour).
  const deletable = (p: number) => gather(p) > 1 && isSimple(nb, stack, seen);
  const objects: number[] = [];
  for (let p = 0; p < img.length; p++) if (img[p]) objects.push(p);
  let changed = true;
  while (changed) {
    changed = false;
    for (const border of borders) {
      const candidates = objects.filter((p) => img[p] && !img[p + border] && deletable(p));
      // Deleting the candidates at once could cut a two-voxel-thick part: each is checked again
      // against the volume as it is when its turn comes.
      for (const p of candidates) {
        if (deletable(p)) {
          img[p] = 0;
          changed = true;
        }
      }
    }
  }
  const out = new Uint8Array(d * h * w);
  for (let z = 0; z < d; z++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[(z * h + y) * w + x] = img[((z + 1) * ph + y + 1) * pw + x + 1];
  return out;
}

/** The number of 26-connected pieces of a binary [D, H, W] volume (at `offset`). */
export function components(mask: Uint8Array, shape: Shape, offset = 0): number {
  const [d, h, w] = shape;
  const seen = new Uint8Array(d * h * w);
  const stack: number[] = [];
  let count = 0;
  for (let start = 0; start < seen.length; start++) {
    if (!mask[offset + start] || seen[start]) continue;
    count++;
    seen[start] = 1;
    stack.push(start);
    while (stack.length > 0) {
      const v = stack.pop()!;
      const z = Math.floor(v / (h * w));
      const y = Math.floor(v / w) % h;
      const x = v % w;
      for (const [dz, dy, dx] of OFFSETS) {
        const [zz, yy, xx] = [z + dz, y + dy, x + dx];
        if (zz < 0 || yy < 0 || xx < 0 || zz >= d || yy >= h || xx >= w) continue;
        const u = (zz * h + yy) * w + xx;
        if (mask[offset + u] && !seen[u]) {
          seen[u] = 1;
          stack.push(u);
        }
      }
    }
  }
  return count;
}

export interface VesselScores {
  /** 2|P ∩ G| / (|P| + |G|), pooled over the set. */
  dice: number;
  /**
   * 2 Tprec Tsens / (Tprec + Tsens), with Tprec = |S(P) ∩ G| / |S(P)| and Tsens = |S(G) ∩ P| / |S(G)|
   * (S: skeleton), pooled over the set.
   */
  clDice: number;
  /** Tsens alone: the fraction of the true centre lines that the prediction covers. */
  skeletonRecall: number;
  /** Mean over volumes of |pieces(P) - pieces(G)|. Lower is better. */
  betti0Error: number;
}

/**
 * Scores of predicted masks against the truth, `n` volumes of `shape`. `truthSkeletons` (the
 * skeletons of the truth, which do not change during a run) may be passed to save the work.
 */
export function scoreVessels(pred: Uint8Array, truth: Uint8Array, n: number, shape: Shape, truthSkeletons?: Uint8Array): VesselScores {
  const voxels = shape[0] * shape[1] * shape[2];
  let [both, sizes] = [0, 0];
  let [skelPred, skelPredIn, skelTruth, skelTruthIn] = [0, 0, 0, 0];
  let betti = 0;
  for (let k = 0; k < n; k++) {
    const offset = k * voxels;
    const sp = skeletonize(pred, shape, offset);
    const st = truthSkeletons ? truthSkeletons.subarray(offset, offset + voxels) : skeletonize(truth, shape, offset);
    for (let v = 0; v < voxels; v++) {
      const p = pred[offset + v];
      const t = truth[offset + v];
      both += p & t;
      sizes += p + t;
      skelPred += sp[v];
      skelPredIn += sp[v] & t;
      skelTruth += st[v];
      skelTruthIn += st[v] & p;
    }
    betti += Math.abs(components(pred, shape, offset) - components(truth, shape, offset));
  }
  const tprec = skelPred === 0 ? 0 : skelPredIn / skelPred;
  const tsens = skelTruth === 0 ? 0 : skelTruthIn / skelTruth;
  return {
    dice: sizes === 0 ? 1 : (2 * both) / sizes,
    clDice: tprec + tsens === 0 ? 0 : (2 * tprec * tsens) / (tprec + tsens),
    skeletonRecall: tsens,
    betti0Error: betti / n,
  };
}

/** The skeletons of `n` volumes, one after the other. */
export function skeletons(masks: Uint8Array, n: number, shape: Shape): Uint8Array {
  const voxels = shape[0] * shape[1] * shape[2];
  const out = new Uint8Array(masks.length);
  for (let k = 0; k < n; k++) out.set(skeletonize(masks, shape, k * voxels), k * voxels);
  return out;
}
