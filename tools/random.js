// Seeded random numbers for the tests, the benchmark and the demo: one generator, so a seed fixes
// a dataset, a test input or a benchmark input on every platform (tfjs' own random ops are not used).
// Plain CommonJS with types in random.d.ts, so TypeScript (tests, demo) and JavaScript (bench) share it.
'use strict';

/** mulberry32: a small, fast 32-bit generator of floats in [0, 1). */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal draw (Box–Muller; one of the pair is dropped to keep the code simple). */
function normal(random) {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** A uniform draw from [lo, hi). */
function uniform(random, lo, hi) {
  return lo + (hi - lo) * random();
}

/** An independent stream for a named purpose, so adding draws to one does not shift another. */
function substream(seed, purpose) {
  // Mix the two with a multiplicative hash so nearby seeds give unrelated streams.
  return mulberry32(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(purpose + 1, 0xc2b2ae35));
}

module.exports = { mulberry32, normal, uniform, substream };
