export type Random = () => number;
/** mulberry32: a small, fast 32-bit generator of floats in [0, 1). */
export function mulberry32(seed: number): Random;
/** A standard normal draw (Box–Muller). */
export function normal(random: Random): number;
/** A uniform draw from [lo, hi). */
export function uniform(random: Random, lo: number, hi: number): number;
/** An independent stream for a named purpose, so adding draws to one does not shift another. */
export function substream(seed: number, purpose: number): Random;
