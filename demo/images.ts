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
