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
