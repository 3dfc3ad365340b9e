// Summaries over seeds: the mean with a 95% confidence interval from Student's t.

/** Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom. */
const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074,
  2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];

export interface Interval {
  mean: number;
  /** Sample standard deviation (n - 1). */
  sd: number;
  lo: number;
  hi: number;
  n: number;
}

/** Mean and 95% t-interval of `values` (at least 2). */
export function interval(values: readonly number[]): Interval {
  const n = values.length;
  if (n < 2) throw new Error(`An interval needs at least 2 values; got ${n}.`);
  const mean = values.reduce((s, v) => s + v, 0) / n;
  const sd = Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1));
  const t = T975[Math.min(n - 1, T975.length) - 1];
  const half = (t * sd) / Math.sqrt(n);
  return { mean, sd, lo: mean - half, hi: mean + half, n };
}
