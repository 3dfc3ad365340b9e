// The CPU convs' weights stay in oneDNN's layout across steps (native/perceptual.h, OneDnnWeights):
// counted from oneDNN's own log (ONEDNN_VERBOSE=1), a run of several steps over the same shapes
// reorders no more weights than a run of their first occurrences. oneDNN picks a weight's layout
// for the input's shape; a weight packed for another shape is reordered again on every call (on
// AVX2 CPUs, blocked to blocked, 0.1 s for a 512x512 conv), which these counts would show.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runtime } from '../../lib/index';

const ROOT = path.resolve(__dirname, '../..');

interface WeightReorders {
  /** Every weight reorder oneDNN ran. */
  all: number;
  /** Those out of one of oneDNN's blocked layouts (a repack, not a first pack). */
  repacks: number;
}

/**
 * The weight reorders oneDNN logs in a child process (this flavour's binary: the environment is
 * inherited) that makes a loss with `options` and runs lossAndGrad once per shape in `shapes`.
 */
function weightReorders(options: object, shapes: number[][]): WeightReorders {
  const script = `
const { PerceptualLoss } = require('./dist/index.js');
const loss = new PerceptualLoss(${JSON.stringify(options)});
for (const shape of ${JSON.stringify(shapes)}) {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = { data: Float32Array.from({ length: n }, (_, i) => Math.sin(i)), shape };
  const y = { data: Float32Array.from({ length: n }, (_, i) => Math.cos(i)), shape };
  loss.lossAndGrad(x, y);
}`;
  const log = execFileSync(process.execPath, ['-e', script], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, ONEDNN_VERBOSE: '1', DNNL_VERBOSE: '1' },
    maxBuffer: 256 * 1024 * 1024,
  });
  const counts: WeightReorders = { all: 0, repacks: 0 };
  for (const line of log.split('\n')) {
    if (!line.includes(',exec,') || !line.includes(',reorder,')) continue;
    const fields = line.split(',');
    // The problem's dims: Cout x Cin x 3 x 3 (x 3) for a conv weight.
    if (!/^\d+x\d+(x3){2,3}$/.test(fields[fields.length - 2] ?? '')) continue;
    counts.all += 1;
    // oneDNN 2.x logs src_f32::blocked:<tag>:f0, 3.x src:f32::blocked:<tag>::f0; blocked tags have
    // capitals (Acdb24a), plain ones none (acdb).
    const source = /src[_:]\w+:\w*:blocked:([A-Za-z0-9]+)/.exec(line)?.[1] ?? '';
    if (/[A-Z]/.test(source)) counts.repacks += 1;
  }
  return counts;
}

const cpu = runtime().cpu;
// 'all': each weight is packed (per input shape) and never reordered again; 'wide' (1.13): the
// narrower convs keep a dense weight that oneDNN reorders per call, as PyTorch's own convs do.
const packsAll = cpu.prepackedWeights === 'all';
const A = [1, 3, 16, 16];
const B = [2, 3, 24, 20];

describe.skipIf(cpu.prepackedWeights === 'none')(`oneDNN weights on this CPU (prepacked: ${cpu.prepackedWeights})`, () => {
  it('a repeated shape: later steps reorder no weight (none out of a packed layout where weights are dense)', () => {
    const first = weightReorders({ inChannels: 3 }, [A]);
    const steps = weightReorders({ inChannels: 3 }, [A, A, A]);
    expect(first.all, 'the log counts reorders at all').toBeGreaterThan(0);
    expect(steps.repacks).toBe(first.repacks);
    if (packsAll) expect(steps.all).toBe(first.all);
  });

  it('two shapes in turn stay packed: alternating steps reorder no more than the first of each', () => {
    const first = weightReorders({ inChannels: 3 }, [A, B]);
    const steps = weightReorders({ inChannels: 3 }, [A, B, A, B, A]);
    expect(steps.repacks).toBe(first.repacks);
    if (packsAll) expect(steps.all).toBe(first.all);
  });

  it('a repeated volume shape: later steps reorder no weight', () => {
    const options = { inChannels: 1, spatialDims: 3 };
    const shape = [1, 1, 16, 16, 16];
    const first = weightReorders(options, [shape]);
    const steps = weightReorders(options, [shape, shape, shape]);
    expect(steps.repacks).toBe(first.repacks);
    // 1.13 prepacks every volume weight ('wide' covers images only).
    expect(steps.all).toBe(first.all);
  });
});
