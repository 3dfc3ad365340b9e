#!/usr/bin/env node
// The stable-ABI prebuild against the exact 2.13 prebuild, side by side on one libtorch (pip torch
// 2.13 CPU): lossAndGrad steps of the benchmark's shapes, float32 and bfloat16 (where the CPU has
// it), the two sides' steps interleaved, medians. The smallest shape's difference bounds what the
// dispatcher itself costs per step. Writes bench/results/stable-abi-DATE.json and prints a table.
//
// Two processes differ by a few per cent at a small shape even when they run the same binary
// (bench/bench.js's A/A control measured up to 1.05x at 1x3x32x32), and a process keeps its offset
// for its life. So the comparison is repeated with a fresh pair of processes (--repeat, the
// starting order alternating), and each row's ratio is the median of the pairs' ratios.
// --binaries exact,exact is that control here.
//   node bench/stable-abi.js [--steps N] [--warmup N] [--repeat R] [--shapes A,B]
//                            [--binaries exact,stable-abi] [--out FILE]
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
    repeat: { type: 'string', default: '3' },
    binaries: { type: 'string', default: 'exact,stable-abi' },
    out: { type: 'string' },
  },
});
const STEPS = Number(values.steps);
const WARMUP = Number(values.warmup);
const SHAPES = values.shapes.split(',').map((s) => s.split('x').map(Number));
const REPEAT = Number(values.repeat);
const BINARIES = values.binaries.split(',');
if (BINARIES.length !== 2) throw new Error(`--binaries needs two PL_BINARY values, such as exact,stable-abi; got ${values.binaries}`);
const PYTHON = path.join(ROOT, '.venv/torch2.13-cpu/bin/python');

/** One pair of fresh processes (started in `order`) over every shape and variant: each side's medians. */
async function timePair(order) {
  const sides = [];
  const hello = [];
  for (const i of order) {
    sides[i] = new Child(BINARIES[i], process.execPath, [path.join(__dirname, 'package_child.js'), 'serve'], { LIBTORCH_PYTHON: PYTHON, PL_BINARY: BINARIES[i] });
    hello[i] = await sides[i].request({ cmd: 'hello' });
  }
  for (const s of sides) await s.request({ cmd: 'threads', n: 2 });
  const bf16 = hello.every((h) => h.cpu.bfloat16);
  const variants = bf16 ? ['float32', 'bfloat16'] : ['float32'];
  const pids = sides.map((s) => s.proc.pid);
  const before = cpuSnapshot(pids);
  const medians = [];
  for (const shape of SHAPES) {
    for (const variant of variants) {
      for (const s of sides) await s.request({ cmd: 'setup', shape, variant });
      const samples = sides.map(() => []);
      for (let k = 0; k < WARMUP + STEPS; k++) {
        // Alternate which side goes first, so that a drift of the machine falls on both.
        const stepOrder = k % 2 === 0 ? [0, 1] : [1, 0];
        for (const i of stepOrder) {
          const { ms } = await sides[i].request({ cmd: 'step', path: 'lossAndGrad', shape, variant });
          if (k >= WARMUP) samples[i].push(ms);
        }
      }
      medians.push({ shape: shape.join('x'), variant, ms: samples.map(median), samplesMs: samples });
    }
  }
  const load = competingLoad(before, cpuSnapshot(pids));
  await Promise.all(sides.map((s) => s.close()));
  return { hello, medians, load };
}

async function main() {
  const pairs = [];
  for (let r = 0; r < REPEAT; r++) {
    const pair = await timePair(r % 2 === 0 ? [0, 1] : [1, 0]);
    pairs.push(pair);
    console.log(`pair ${r + 1}/${REPEAT} (other processes ${(100 * pair.load.otherProcessesShare).toFixed(1)}% of the CPUs): ${pair.medians.map((m) => `${m.shape} ${m.variant} ${(m.ms[1] / m.ms[0]).toFixed(3)}`).join(', ')}`);
  }
  const [a, b] = BINARIES;
  const rows = pairs[0].medians.map((m0, j) => {
    const per = pairs.map((p) => p.medians[j]);
    const firstMs = median(per.map((m) => m.ms[0]));
    const secondMs = median(per.map((m) => m.ms[1]));
    const ratios = per.map((m) => m.ms[1] / m.ms[0]);
    const ratio = median(ratios);
    console.log(`${m0.shape.padEnd(12)} ${m0.variant.padEnd(9)} ${a} ${firstMs.toFixed(2).padStart(8)} ms  ${b} ${secondMs.toFixed(2).padStart(8)} ms  ratio ${ratio.toFixed(3)} (pairs ${ratios.map((x) => x.toFixed(3)).join(', ')})`);
    return { shape: m0.shape, variant: m0.variant, [`${a}Ms`]: firstMs, [`${b === a ? `${b}2` : b}Ms`]: secondMs, ratio, pairRatios: ratios, samplesMs: per.map((m) => m.samplesMs) };
  });
  const date = new Date().toISOString().slice(0, 10);
  const out = values.out ?? path.join(__dirname, 'results', `stable-abi-${date}.json`);
  const smallest = pairs.map((p) => p.medians.find((m) => m.shape === SHAPES[0].join('x') && m.variant === 'float32'));
  const result = {
    what: `lossAndGrad, vgg19 defaults, PL_BINARY=${a} against PL_BINARY=${b} on pip torch 2.13 CPU, steps interleaved, medians; ${REPEAT} fresh process pairs, each row's ratio the median of theirs`,
    binaries: BINARIES, steps: STEPS, warmup: WARMUP, repeat: REPEAT, binaryPaths: pairs[0].hello.map((h) => h.binary), cpu: pairs[0].hello[0].cpu,
    competingLoad: pairs.map((p) => p.load),
    dispatcherCostPerStepMs: smallest.every(Boolean) ? median(smallest.map((m) => m.ms[1] - m.ms[0])) : null, rows,
  };
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`worst ratio ${Math.max(...rows.map((r) => r.ratio)).toFixed(3)}; at ${SHAPES[0].join('x')} float32 ${b} costs ${result.dispatcherCostPerStepMs?.toFixed(2)} ms more per step; ${path.relative(process.cwd(), out)}`);
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
