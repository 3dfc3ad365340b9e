// The demo's plots as vega-lite specs (plain data: render.js turns them into PNGs).
import type { TopLevelSpec } from 'vega-lite';

export interface CurvePoint {
  arm: string;
  step: number;
  value: number;
  series: string;
}

const CONFIG = { background: 'white', font: 'DejaVu Sans', view: { stroke: '#ddd' } };

/** Line charts side by side, one per series (the training loss, then the held-out scores), coloured by arm. */
export function curvesSpec(title: string, points: CurvePoint[], series: string[], arms: string[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: { values: points },
    config: CONFIG,
    hconcat: series.map((name) => ({
      title: name,
      width: 230,
      height: 180,
      transform: [{ filter: { field: 'series', equal: name } }],
      mark: { type: 'line', point: name.startsWith('held-out'), strokeWidth: 2 },
      encoding: {
        x: { field: 'step', type: 'quantitative', title: 'training step' },
        // The training loss falls by an order of magnitude: a log scale keeps its tail readable.
        y: { field: 'value', type: 'quantitative', title: null, scale: name.startsWith('training') ? { type: 'log', nice: false } : { zero: false } },
        color: { field: 'arm', type: 'nominal', title: null, sort: arms, legend: { orient: 'bottom', columns: 3, labelLimit: 300 } },
      },
    })),
    resolve: { scale: { y: 'independent' } },
  };
}

export interface PairedPoint {
  /** "seg: mIoU", "depth: AbsRel", ... */
  metric: string;
  /** "perceptual - pixel", "one block - pixel", ... */
  comparison: string;
  seed: number;
  diff: number;
  /** Mean over seeds and its 95% interval (the same on every point of a metric and comparison). */
  mean: number;
  lo: number;
  hi: number;
}

/**
 * One panel per metric: each held-out seed's paired difference as a dot, the mean as a tick and
 * its 95% interval as a bar, one row per comparison; a rule at 0.
 */
export function pairedSpec(title: string, points: PairedPoint[], metrics: string[], comparisons: string[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: { values: points },
    config: CONFIG,
    columns: 4,
    concat: metrics.map((metric) => ({
      title: metric,
      width: 200,
      height: 24 * comparisons.length,
      transform: [{ filter: { field: 'metric', equal: metric } }],
      layer: [
        { mark: { type: 'rule', color: '#999', strokeDash: [4, 3] }, encoding: { x: { datum: 0 } } },
        {
          mark: { type: 'rule', strokeWidth: 2 },
          encoding: {
            y: { field: 'comparison', type: 'nominal', sort: comparisons, title: null },
            x: { field: 'lo', type: 'quantitative', title: 'paired difference' },
            x2: { field: 'hi' },
            color: { field: 'comparison', type: 'nominal', sort: comparisons, legend: null },
          },
        },
        {
          mark: { type: 'tick', thickness: 3, size: 18 },
          encoding: {
            y: { field: 'comparison', type: 'nominal', sort: comparisons },
            x: { field: 'mean', type: 'quantitative' },
            color: { field: 'comparison', type: 'nominal', sort: comparisons, legend: null },
          },
        },
        {
          mark: { type: 'point', filled: true, size: 30, opacity: 0.7, color: '#333' },
          encoding: { y: { field: 'comparison', type: 'nominal', sort: comparisons }, x: { field: 'diff', type: 'quantitative' } },
        },
      ],
    })),
  };
}
