#!/usr/bin/env node
// npm run bench:profile: where the time of one float32 lossAndGrad step goes, per side, from
// oneDNN's own verbose log (ONEDNN_VERBOSE / DNNL_VERBOSE): its convolutions, the reorders of
// weights (4-d O x I x kH x kW tensors) and of activations, its other primitives, and the rest of
// the step (ATen's own kernels: ReLU, pooling, the loss and its gradient, copies; and overhead).
//
// Each side runs twice in fresh processes: once quiet, for the step time (the median), and once
// with the verbose log on, whose per-primitive times are summed per step (the median over steps).
// The log's own cost inflates that second run, so the rest is the quiet step minus oneDNN's share.
//
//   node bench/profile.js [--shape 2x3x64x64] [--steps 7] [--threads N] [--out FILE]
//
// Sides: the package as built here (Debian's libtorch 1.13), the package against pip torch 2.13
// (LIBTORCH=.venv/torch2.13-cpu/...; bash scripts/torch-envs.sh cpu makes it), and PyTorch 1.13
// and 2.13 doing the same step (bench/bench_torch.py).
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { gitInfo } = require('./machine.js');
const { median } = require('./timing.js');

const ROOT = path.resolve(__dirname, '..');
const TORCH2_ENV = path.join(ROOT, '.venv', 'torch2.13-cpu');
const TORCH2_PYTHON = path.join(TORCH2_ENV, 'bin', 'python');
const TORCH2_LIBTORCH = path.join(TORCH2_ENV, 'lib', 'python3.11', 'site-packages', 'torch');

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: '2x3x64x64' },
    steps: { type: 'string', default: '7' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    out: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(fs.readFileSync(__filename, 'utf8').split('\n').slice(1, 16).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
  process.exit(0);
}
const shape = values.shape;
const steps = Number(values.steps);
const threads = Number(values.threads);
if (!/^\d+x\d+x\d+x\d+$/.test(shape) || !(steps >= 1) || !(threads >= 1)) {
  console.error('profile: --shape NxCxHxW, --steps >= 1 and --threads >= 1');
  process.exit(2);
}

const sides = [
  { label: 'package@1.13', cmd: process.execPath, args: [path.join(__dirname, 'package_child.js')], env: {} },
  ...(fs.existsSync(TORCH2_LIBTORCH)
    ? [{ label: 'package@2.13', cmd: process.execPath, args: [path.join(__dirname, 'package_child.js')], env: { LIBTORCH: TORCH2_LIBTORCH } }]
    : []),
  { label: 'torch 1.13', cmd: '/usr/bin/python3', args: [path.join(__dirname, 'bench_torch.py')], env: {} },
  ...(fs.existsSync(TORCH2_PYTHON) ? [{ label: 'torch 2.13', cmd: TORCH2_PYTHON, args: [path.join(__dirname, 'bench_torch.py')], env: {} }] : []),
];

function run(side, verbose) {
  const env = { ...process.env, ...side.env, OMP_NUM_THREADS: String(threads) };
  delete env.ONEDNN_VERBOSE;
  delete env.DNNL_VERBOSE;
  // oneDNN 2.x (Debian's libdnnl2, under libtorch 1.13) reads DNNL_VERBOSE, 3.x ONEDNN_VERBOSE.
  if (verbose) Object.assign(env, { ONEDNN_VERBOSE: '1', DNNL_VERBOSE: '1' });
  const args = [...side.args, 'steps', '--shape', shape, '--threads', String(threads), '--steps', String(steps), '--variant', 'float32'];
  const r = spawnSync(side.cmd, args, { cwd: ROOT, env, encoding: 'utf8', maxBuffer: 1 << 30 });
  const json = (r.stderr || '').split('\n').find((l) => l.startsWith('profile-json: '));
  if (r.status !== 0 || !json) throw new Error(`${side.label}: ${side.cmd} ${args.join(' ')} failed (${r.status}):\n${(r.stderr || '').slice(-2000)}`);
  return { info: JSON.parse(json.slice('profile-json: '.length)), stdout: r.stdout };
}

/** The category of one verbose exec line, and its milliseconds. */
function classify(line) {
  const f = line.split(',');
  const at = f.indexOf('exec');
  if (at < 0 || f[at + 1] !== 'cpu') return null;
  const kind = f[at + 2];
  const ms = Number(f[f.length - 1]);
  const dims = f[f.length - 2];
  if (kind === 'convolution') return { category: 'convolution', ms };
  // A conv weight: O x I x 3 x 3 (activations here are never 3 x 3).
  if (kind === 'reorder') return { category: /^\d+x\d+x3x3$/.test(dims) ? 'weight reorder' : 'activation reorder', ms };
  return { category: `other oneDNN (${kind})`, ms };
}

function breakdown(stdout) {
  const perStep = [];
  let current = null;
  for (const line of stdout.split('\n')) {
    const marker = /^profile-step (\d+)$/.exec(line);
    if (marker) {
      if (current) perStep.push(current);
      current = Number(marker[1]) < steps ? {} : null;
      continue;
    }
    const c = current && classify(line);
    if (c) current[c.category] = (current[c.category] ?? 0) + c.ms;
  }
  const categories = [...new Set(perStep.flatMap((s) => Object.keys(s)))].sort();
  return Object.fromEntries(categories.map((k) => [k, median(perStep.map((s) => s[k] ?? 0))]));
}

const rows = [];
for (const side of sides) {
  console.error(`profile: ${side.label} ...`);
  const quiet = run(side, false);
  const loud = run(side, true);
  const oneDnn = breakdown(loud.stdout);
  const stepMs = median(quiet.info.ms);
  const oneDnnMs = Object.values(oneDnn).reduce((a, b) => a + b, 0);
  if (oneDnnMs === 0) throw new Error(`${side.label}: no oneDNN verbose lines were seen; is this libtorch built with oneDNN?`);
  rows.push({ ...quiet.info, side: side.label, stepMs, verboseStepMs: median(loud.info.ms), oneDnnMs: oneDnn, restMs: stepMs - oneDnnMs });
}

const categories = [...new Set(rows.flatMap((r) => Object.keys(r.oneDnnMs)))].sort();
const fmt = (x) => x.toFixed(1);
console.log(`float32 lossAndGrad at ${shape}, ${threads} threads; median of ${steps} steps (ms)`);
const header = ['side', 'step', ...categories, 'rest of the step'];
const table = rows.map((r) => [r.side, fmt(r.stepMs), ...categories.map((k) => fmt(r.oneDnnMs[k] ?? 0)), fmt(r.restMs)]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => t[i].length)));
const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const t of table) console.log(line(t));
console.log('(oneDNN columns: from the verbose run; step and rest: from the quiet run. The rest is ATen\'s own kernels and overhead.)');

const date = new Date().toISOString().slice(0, 10);
const out = values.out ?? path.join(ROOT, 'bench', 'results', `profile-${date}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), git: gitInfo(true), cpu: os.cpus()[0]?.model, shape, threads, steps, rows }, null, 2) + '\n');
console.log(`written to ${path.relative(process.cwd(), out)}`);
