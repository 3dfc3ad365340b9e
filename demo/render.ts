// Renders the demo's PNGs, in a process of its own (see report.ts for why): the plot of the
// training curves and held-out scores (vega-lite -> SVG -> PNG) and the grid of test images.
import * as fs from 'node:fs';
import sharp from 'sharp';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import { CLASS_NAMES } from './data';
import { colourDepth, colourError, PALETTE } from './images';
import type { RenderJob, SamplePanel, Swatch } from './report';

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * A grid: one row per test image, one column per panel (input, ground truth, each arm), scaled up
 * without smoothing so single pixels stay visible; column titles and a class legend as SVG text.
 */
export async function writeSamples(file: string, panels: SamplePanel[], size: number, legendKind: RenderJob['grids'][number]['legend'], tileHeight = size): Promise<void> {
  const scale = Math.max(1, Math.round(192 / Math.max(size, tileHeight)));
  const tile = size * scale;
  const tall = tileHeight * scale;
  const gap = 8;
  const header = 40;
  const legend = 36;
  const rows = panels[0].tiles.length;
  const width = panels.length * (tile + gap) + gap;
  const height = header + rows * (tall + gap) + legend;
  const layers: sharp.OverlayOptions[] = [];
  for (const [col, panel] of panels.entries()) {
    for (const [row, base64] of panel.tiles.entries()) {
      const input = await sharp(Buffer.from(base64, 'base64'), { raw: { width: size, height: tileHeight, channels: 3 } })
        .resize(tile, tall, { kernel: 'nearest' })
        .png()
        .toBuffer();
      layers.push({ input, left: gap + col * (tile + gap), top: header + row * (tall + gap) });
    }
  }
  const titles = panels
    .map((p, col) => `<text x="${gap + col * (tile + gap) + tile / 2}" y="26" text-anchor="middle">${escapeXml(p.title)}</text>`)
    .join('');
  const y = height - legend + 8;
  const swatch = (x: number, rgb: ArrayLike<number>, label: string) =>
    `<rect x="${x}" y="${y}" width="18" height="18" fill="rgb(${Array.from(rgb).join(',')})" stroke="#888"/><text x="${x + 24}" y="${y + 14}">${escapeXml(label)}</text>`;
  // A row of swatches, each as wide as its label (~8 px a character at this font size).
  const row = (entries: Swatch[]) => {
    let x = gap;
    return entries
      .map((e) => {
        const svg = swatch(x, e.rgb, e.label);
        x += 24 + 8 * e.label.length + 24;
        return svg;
      })
      .join('');
  };
  const swatches =
    legendKind === 'classes'
      ? CLASS_NAMES.map((name, c) => swatch(gap + c * 120, PALETTE[c], name)).join('')
      : 'swatches' in legendKind
        ? row(legendKind.swatches)
        : [
          swatch(gap, colourDepth([legendKind.depth[0]], null, 0, 1, ...legendKind.depth), `near ${legendKind.depth[0]} m`),
          swatch(gap + 130, colourDepth([legendKind.depth[1]], null, 0, 1, ...legendKind.depth), `far ${legendKind.depth[1]} m`),
          swatch(gap + 260, colourError([0], [0], Uint8Array.of(1), 0, 1, legendKind.error), 'error 0'),
          swatch(gap + 390, colourError([legendKind.error], [0], Uint8Array.of(1), 0, 1, legendKind.error), `error >= ${legendKind.error} m`),
          swatch(gap + 550, colourError([0], [0], Uint8Array.of(0), 0, 1, 1), 'no depth'),
        ].join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, sans-serif" font-size="14" fill="#222">${titles}${swatches}</svg>`;
  layers.push({ input: Buffer.from(svg), left: 0, top: 0 });
  await sharp({ create: { width, height, channels: 3, background: { r: 255, g: 255, b: 255 } } })
    .composite(layers)
    .png()
    .toFile(file);
}

/** A vega-lite spec -> SVG -> PNG. */
export async function writePlot(file: string, spec: TopLevelSpec): Promise<void> {
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  await sharp(Buffer.from(svg), { density: 144 }).png().toFile(file);
}

/** `node render.js job.json`: renders what the job describes. */
async function main(jobFile: string): Promise<void> {
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8')) as RenderJob;
  for (const plot of job.plots) await writePlot(plot.file, plot.spec as TopLevelSpec);
  for (const grid of job.grids) await writeSamples(grid.file, grid.panels, grid.size, grid.legend, grid.height);
}

if (require.main === module) {
  main(process.argv[2]).catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
