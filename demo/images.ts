// Label maps and images as RGB bytes, for the PNGs.

/** Okabe–Ito colours (distinguishable with colour-blindness), background dark grey. */
export const PALETTE: ReadonlyArray<readonly [number, number, number]> = [
  [40, 40, 40],
  [230, 159, 0],
  [86, 180, 233],
  [0, 158, 115],
  [204, 121, 167],
];

/** Label ids -> RGB bytes, one pixel per label. */
export function colourLabels(labels: Int32Array, offset: number, count: number): Buffer {
  const out = Buffer.alloc(count * 3);
  for (let i = 0; i < count; i++) {
    const [r, g, b] = PALETTE[labels[offset + i]] ?? [255, 255, 255];
    out[3 * i] = r;
    out[3 * i + 1] = g;
    out[3 * i + 2] = b;
  }
  return out;
}

/** Float RGB in [0, 1] -> bytes (clipped). */
export function imageBytes(images: Float32Array, offset: number, count: number): Buffer {
  const out = Buffer.alloc(count * 3);
  for (let i = 0; i < count * 3; i++) out[i] = Math.round(255 * Math.min(1, Math.max(0, images[offset * 3 + i])));
  return out;
}

/** Colour stops of viridis, from near (0) to far (1). */
const VIRIDIS: ReadonlyArray<readonly [number, number, number]> = [
  [253, 231, 37],
  [94, 201, 98],
  [33, 145, 140],
  [59, 82, 139],
  [68, 1, 84],
];
/** Error map stops: 0 black, then red, yellow, white at the scale's top. */
const HOT: ReadonlyArray<readonly [number, number, number]> = [
  [0, 0, 0],
  [180, 20, 20],
  [255, 200, 0],
  [255, 255, 255],
];
/** Pixels without a measurement. */
const INVALID: readonly [number, number, number] = [150, 150, 150];

function ramp(stops: ReadonlyArray<readonly [number, number, number]>, t: number): [number, number, number] {
  const u = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(u));
  const f = u - i;
  return [0, 1, 2].map((c) => Math.round(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]))) as [number, number, number];
}

function paint(count: number, colour: (i: number) => readonly [number, number, number]): Buffer {
  const out = Buffer.alloc(count * 3);
  for (let i = 0; i < count; i++) out.set(colour(i), 3 * i);
  return out;
}

/** Depth maps (metres, from `offset`) -> RGB bytes, viridis from `min` (near) to `max` (far); holes grey. */
export function colourDepth(depth: ArrayLike<number>, valid: Uint8Array | null, offset: number, count: number, min: number, max: number): Buffer {
  return paint(count, (i) => (valid && !valid[offset + i] ? INVALID : ramp(VIRIDIS, (depth[offset + i] - min) / (max - min))));
}

/** |pred - gt| -> RGB bytes, black (0) to white (`top` metres and above); pixels without gt grey. */
export function colourError(pred: ArrayLike<number>, gt: ArrayLike<number>, valid: Uint8Array, offset: number, count: number, top: number): Buffer {
  return paint(count, (i) => (valid[offset + i] ? ramp(HOT, Math.abs(pred[offset + i] - gt[offset + i]) / top) : INVALID));
}

/** Values from `offset` -> grey RGB bytes, black at `lo` to white at `hi` (clipped). */
export function greyBytes(values: ArrayLike<number>, offset: number, count: number, lo: number, hi: number): Buffer {
  return paint(count, (i) => {
    const v = Math.round(255 * Math.min(1, Math.max(0, (values[offset + i] - lo) / (hi - lo))));
    return [v, v, v];
  });
}

/** Maximum-intensity projection along D of volume `index` of [n, D, H, W] values: H x W values. */
export function mip(values: ArrayLike<number>, index: number, [d, h, w]: readonly [number, number, number]): Float32Array {
  const plane = h * w;
  const out = new Float32Array(plane).fill(-Infinity);
  const offset = index * d * plane;
  for (let z = 0; z < d; z++) {
    for (let p = 0; p < plane; p++) out[p] = Math.max(out[p], values[offset + z * plane + p]);
  }
  return out;
}

/** Colours of a prediction's errors against the truth (Okabe–Ito vermillion, blue and reddish purple). */
export const OUTCOME = {
  background: [0, 0, 0] as const,
  hit: [215, 215, 215] as const,
  falsePositive: [213, 94, 0] as const,
  falseNegative: [0, 114, 178] as const,
  both: [204, 121, 167] as const,
};

/** Which outcome a pixel shows: a missed and a spurious part at once, either one, a correct foreground, or none. */
function outcome(missed: boolean, spurious: boolean, hit: boolean): readonly [number, number, number] {
  if (missed && spurious) return OUTCOME.both;
  if (missed) return OUTCOME.falseNegative;
  if (spurious) return OUTCOME.falsePositive;
  return hit ? OUTCOME.hit : OUTCOME.background;
}

/**
 * The errors of volume `index` of binary [n, D, H, W] predictions, projected along D: a column
 * with a missed vessel voxel is blue, one with a spurious voxel vermillion, one with both reddish
 * purple, one whose vessel voxels are all found light grey.
 */
export function colourVolumeErrors(pred: ArrayLike<number>, truth: ArrayLike<number>, index: number, [d, h, w]: readonly [number, number, number]): Buffer {
  const plane = h * w;
  const offset = index * d * plane;
  return paint(plane, (p) => {
    let [missed, spurious, hit] = [false, false, false];
    for (let z = 0; z < d; z++) {
      const v = offset + z * plane + p;
      if (truth[v] && !pred[v]) missed = true;
      else if (!truth[v] && pred[v]) spurious = true;
      else if (truth[v]) hit = true;
    }
    return outcome(missed, spurious, hit);
  });
}

/** Instances' colours (Okabe–Ito, without the error colours' vermillion and blue). */
export const INSTANCE_PALETTE: ReadonlyArray<readonly [number, number, number]> = [
  [230, 159, 0],
  [86, 180, 233],
  [0, 158, 115],
  [240, 228, 66],
  [204, 121, 167],
  [150, 150, 150],
];
/** A pixel that two or more predicted masks claim. */
export const CLAIMED_TWICE: readonly [number, number, number] = [255, 255, 255];

/**
 * The instance masks of one image (`masks[k]` reads mask k at a pixel: 0/1 or a probability,
 * counted above 0.5) as one picture: each instance in its colour, a pixel claimed by two white.
 */
export function colourInstances(masks: Array<(p: number) => number>, count: number): Buffer {
  return paint(count, (p) => {
    const on = masks.flatMap((m, k) => (m(p) > 0.5 ? [k] : []));
    if (on.length === 0) return [30, 30, 30];
    return on.length > 1 ? CLAIMED_TWICE : INSTANCE_PALETTE[on[0] % INSTANCE_PALETTE.length];
  });
}

/** The errors of one image's predicted instance masks (probabilities, counted above 0.5) against the truth. */
export function colourInstanceErrors(pred: Array<(p: number) => number>, truth: Array<(p: number) => number>, count: number): Buffer {
  return paint(count, (p) => {
    let [missed, spurious, hit] = [false, false, false];
    pred.forEach((m, k) => {
      const [predicted, real] = [m(p) > 0.5, truth[k](p) > 0.5];
      if (real && !predicted) missed = true;
      else if (!real && predicted) spurious = true;
      else if (real) hit = true;
    });
    return outcome(missed, spurious, hit);
  });
}
