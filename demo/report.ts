// The demo's outputs: report.json here, and the PNGs through a child process.
//
// Why a child process: Debian's libtorch links the system's GLib, pango and cairo, and sharp
// bundles its own copies. Once the addon is loaded, sharp's text rendering (the plot's labels,
// the titles of the sample grid) meets the other GLib and floods stderr with GLib-GObject-CRITICAL
// warnings. render.js never loads libtorch.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface CurvePoint {
  arm: string;
  step: number;
  value: number;
  series: string;
}

export interface SamplePanel {
  title: string;
  /** RGB bytes (base64) of each row's tile, size x size (size x height when the grid has a height). */
  tiles: string[];
}

/** A legend entry: a colour swatch and its label. */
export interface Swatch {
  rgb: readonly [number, number, number];
  label: string;
}

export interface RenderJob {
  /** vega-lite specs (see charts.ts), each to a PNG. */
  plots: Array<{ file: string; spec: unknown }>;
  /**
   * Grids of tiles `size` wide and `height` (default `size`) high; `legend` adds the class colours
   * (seg), the depth and error scales (depth), or the swatches given.
   */
  grids: Array<{ file: string; size: number; height?: number; panels: SamplePanel[]; legend: 'classes' | { depth: [number, number]; error: number } | { swatches: Swatch[] } }>;
}

/** Renders the job's PNGs in a fresh Node process; throws if it fails. */
export function render(job: RenderJob): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-demo-'));
  const jobFile = path.join(dir, 'job.json');
  try {
    fs.writeFileSync(jobFile, JSON.stringify(job));
    const result = spawnSync(process.execPath, [path.join(__dirname, 'render.js'), jobFile], { stdio: 'inherit' });
    if (result.status !== 0) throw new Error(`Rendering the PNGs failed (exit ${result.status ?? result.signal}).`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  // NaN (a class absent from the set) is not JSON: write null.
  fs.writeFileSync(file, `${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
}
