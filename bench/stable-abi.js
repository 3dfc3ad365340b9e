#!/usr/bin/env node
// The stable-ABI prebuild against the exact 2.13 prebuild, side by side on one libtorch (pip torch
// 2.13 CPU): lossAndGrad steps of the benchmark's shapes, float32 and bfloat16 (where the CPU has
// it), the two sides' steps interleaved, medians. The smallest shape's difference bounds what the
// dispatcher itself costs per step. Writes bench/results/stable-abi-DATE.json and prints a table.
//   node bench/stable-abi.js [--steps N] [--warmup N] [--shapes A,B] [--out FILE]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { Child } = require('./child.js');
const { median, competingLoad, cpuSnapshot } = require('./timing.js');

const ROOT = path.resolve(__dirname, '..');
const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '15' },
    warmup: { type: 'string', default: '3' },
    shapes: { type: 'string', default: '1x3x32x32,2x3x64x64,4x3x64x64,2x1x128x128,2x19x64x64' },
    out: { type: 'string' },
  },
});
const STEPS = Number(values.steps);
const WARMUP = Number(values.warmup);
const SHAPES = values.shapes.split(',').map((s) => s.split('x').map(Number));
const PYTHON = path.join(ROOT, '.venv/torch2.13-cpu/bin/python');

async function main() {
  const sides = ['exact', 'stable-abi'].map(
    (binary) => new Child(binary, process.execPath, [path.join(__dirname, 'package_child.js'), 'serve'], { LIBTORCH_PYTHON: PYTHON, PL_BINARY: binary }),
  );
  const hello = await Promise.all(sides.map((s) => s.request({ cmd: 'hello' })));
  for (const s of sides) await s.request({ cmd: 'threads', n: 2 });
  const bf16 = hello.every((h) => JSON.stringify(h).includes('"bfloat16Missing":""'));
  const variants = bf16 ? ['float32', 'bfloat16'] : ['float32'];
  const rows = [];
  const pids = sides.map((s) => s.proc.pid);
  const before = cpuSnapshot(pids);
  for (const shape of SHAPES) {
    for (const variant of variants) {
      for (const s of sides) await s.request({ cmd: 'setup', shape, variant });
      const samples = sides.map(() => []);
      for (let k = 0; k < WARMUP + STEPS; k++) {
        // Alternate which side goes first, so that a drift of the machine falls on both.
        const order = k % 2 === 0 ? [0, 1] : [1, 0];
        for (const i of order) {
          const { ms } = await sides[i].request({ cmd: 'step', path: 'lossAndGrad', shape, variant });
          if (k >= WARMUP) samples[i].push(ms);
        }
      }
      const [exact, stable] = samples.map(median);
      rows.push({ shape: shape.join('x'), variant, exactMs: exact, stableMs: stable, ratio: stable / exact, samplesMs: { exact: samples[0], stable: samples[1] } });
      console.log(`${shape.join('x').padEnd(12)} ${variant.padEnd(9)} exact ${exact.toFixed(2).padStart(8)} ms  stable-ABI ${stable.toFixed(2).padStart(8)} ms  ratio ${(stable / exact).toFixed(3)}`);
    }
  }
  const load = competingLoad(before, cpuSnapshot(pids));
  await Promise.all(sides.map((s) => s.close()));
  const date = new Date().toISOString().slice(0, 10);
  const out = values.out ?? path.join(__dirname, 'results', `stable-abi-${date}.json`);
  const smallest = rows.filter((r) => r.shape === SHAPES[0].join('x') && r.variant === 'float32')[0];
  const result = {
    what: 'lossAndGrad, vgg19 defaults, the exact 2.13 prebuild and the stable-ABI prebuild on pip torch 2.13 CPU, interleaved, medians',
    steps: STEPS, warmup: WARMUP, binaries: hello.map((h) => h.binary ?? h), competingLoad: load,
    dispatcherCostPerStepMs: smallest ? smallest.stableMs - smallest.exactMs : null, rows,
  };
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`worst ratio ${Math.max(...rows.map((r) => r.ratio)).toFixed(3)}; at ${SHAPES[0].join('x')} float32 the stable-ABI step costs ${result.dispatcherCostPerStepMs?.toFixed(2)} ms more; ${path.relative(process.cwd(), out)}`);
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
