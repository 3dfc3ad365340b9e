// Seeded, dependency-free random numbers for test inputs: the same seed gives the same data on
// every platform, so a failing case can be rerun exactly.

// The package's own seeded generator (tools/random.js), so tests and the demo share one.
import { mulberry32 } from '../../tools/random';

export { mulberry32 };

/** `n` standard normal values (Box–Muller), rounded to float32. */
export function randn(n: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    const r = Math.sqrt(-2 * Math.log(1 - next()));
    const theta = 2 * Math.PI * next();
    out[i] = r * Math.cos(theta);
    if (i + 1 < n) out[i + 1] = r * Math.sin(theta);
  }
  return out;
}

/** `n` integers drawn uniformly from [lo, hi) (hi exclusive, as numpy and torch do). */
export function randint(n: number, lo: number, hi: number, seed: number): Int32Array {
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || hi <= lo) {
    throw new RangeError(`randint needs integers lo < hi, got [${lo}, ${hi})`);
  }
  const next = mulberry32(seed);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + Math.floor(next() * (hi - lo));
  return out;
}
