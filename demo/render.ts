// Renders the demo's PNGs, in a process of its own (see report.ts for why): the plot of the
// training curves and held-out scores (vega-lite -> SVG -> PNG) and the grid of test images.
import * as fs from 'node:fs';
import sharp from 'sharp';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import { CLASS_NAMES } from './data';
import { PALETTE } from './images';
import type { CurvePoint, RenderJob, SamplePanel } from './report';

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * A grid: one row per test image, one column per panel (input, ground truth, each arm), scaled up
 * without smoothing so single pixels stay visible; column titles and a class legend as SVG text.
 */
export async function writeSamples(file: string, panels: SamplePanel[], size: number): Promise<void> {
  const scale = Math.max(1, Math.round(192 / size));
  const tile = size * scale;
  const gap = 8;
  const header = 40;
  const legend = 36;
  const rows = panels[0].tiles.length;
  const width = panels.length * (tile + gap) + gap;
  const height = header + rows * (tile + gap) + legend;
  const layers: sharp.OverlayOptions[] = [];
  for (const [col, panel] of panels.entries()) {
    for (const [row, base64] of panel.tiles.entries()) {
      const input = await sharp(Buffer.from(base64, 'base64'), { raw: { width: size, height: size, channels: 3 } })
        .resize(tile, tile, { kernel: 'nearest' })
        .png()
        .toBuffer();
      layers.push({ input, left: gap + col * (tile + gap), top: header + row * (tile + gap) });
    }
  }
  const titles = panels
    .map((p, col) => `<text x="${gap + col * (tile + gap) + tile / 2}" y="26" text-anchor="middle">${escapeXml(p.title)}</text>`)
    .join('');
  const swatches = CLASS_NAMES.map((name, c) => {
    const x = gap + c * 120;
    const y = height - legend + 8;
    return `<rect x="${x}" y="${y}" width="18" height="18" fill="rgb(${PALETTE[c].join(',')})"/><text x="${x + 24}" y="${y + 14}">${name}</text>`;
  }).join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, sans-serif" font-size="14" fill="#222">${titles}${swatches}</svg>`;
  layers.push({ input: Buffer.from(svg), left: 0, top: 0 });
  await sharp({ create: { width, height, channels: 3, background: { r: 255, g: 255, b: 255 } } })
    .composite(layers)
    .png()
    .toFile(file);
}

/** Line charts side by side, one per series (training CE, then the held-out scores), coloured by arm. */
export async function writePlot(file: string, points: CurvePoint[], series: string[], arms: string[]): Promise<void> {
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    data: { values: points },
    config: { background: 'white', font: 'DejaVu Sans', view: { stroke: '#ddd' } },
    hconcat: series.map((name) => ({
      title: name,
      width: 260,
      height: 200,
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
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  await sharp(Buffer.from(svg), { density: 144 }).png().toFile(file);
}

/** `node render.js job.json`: renders what the job describes. */
async function main(jobFile: string): Promise<void> {
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8')) as RenderJob;
  await writePlot(job.plot.file, job.plot.points, job.plot.series, job.plot.arms);
  await writeSamples(job.samples.file, job.samples.panels, job.samples.size);
}

if (require.main === module) {
  main(process.argv[2]).catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
