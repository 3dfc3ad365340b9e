#!/usr/bin/env node
// OpenMP's wait policy and the step time: vgg19 lossAndGrad on 1x3x64x64 and 2x3x64x64 with the
// package's default (OMP_WAIT_POLICY=PASSIVE, set before libtorch loads: lib/openmp.ts) against
// libgomp's own default (what the package did before: threads spin a while between parallel
// regions, then sleep), on a quiet machine and beside a competing load (2 busy-loop processes).
//
//   node bench/wait-policy.js [--runs N] [--warmup N] [--repeat N] [--threads N] [--quick] [--quiet-only] [--out FILE]
//
// libgomp's default is reached through a setting the package honours as the user's own choice:
// GOMP_SPINCOUNT=300000, libgomp's spin count when OMP_WAIT_POLICY is not set, so the package
// leaves OMP_WAIT_POLICY unset (test/install/openmp.test.ts checks that libgomp then reads what
// it reads with nothing set). Each measurement runs in a fresh child process, since OpenMP reads
// its settings once, as libtorch loads; the child times `runs` steps after `warmup` and the median
// is reported. The arms alternate within each condition and shape, so drifts hit both alike.
//
// Progress goes to stderr, the table to stdout, the figures to bench/results/wait-policy-DATE.json
// (or --out). Runs the compiled package (dist/): `npm run build:ts` first.
'use strict';

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { gitInfo } = require('./machine.js');

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist', 'index.js');
const SHAPES = [
  [1, 3, 64, 64],
  [2, 3, 64, 64],
];
const ARMS = [
  { name: 'passive', what: 'the package default: OMP_WAIT_POLICY=PASSIVE after a short spin (GOMP_SPINCOUNT=100000)', env: {} },
  { name: 'passive-no-spin', what: 'OMP_WAIT_POLICY=PASSIVE alone (spin count 0: sleep at once)', env: { OMP_WAIT_POLICY: 'PASSIVE' } },
  { name: 'libgomp-default', what: "libgomp's own default (the package's old behaviour): GOMP_SPINCOUNT=300000", env: { GOMP_SPINCOUNT: '300000' } },
];
const CONDITIONS = [
  { name: 'quiet', busy: 0 },
  { name: 'competing load', busy: 2 },
];

const USAGE = `usage: node bench/wait-policy.js [--runs N] [--warmup N] [--repeat N] [--threads N] [--quick] [--quiet-only] [--out FILE]
  --runs N      timed steps per child, the median reported (default 15; --quick: 3)
  --warmup N    untimed steps first (default 3; --quick: 1)
  --repeat N    children per arm, condition and shape, the arms taking turns; the median of their medians is reported (default 1)
  --threads N   setNumThreads in the children (default: os.availableParallelism(), ${os.availableParallelism()})
  --quick       smoke test: 3 runs, 1 warm-up, 1x3x64x64 only
  --quiet-only  the quiet machine alone (to settle the quiet cost with more --repeat in the time)
  --out FILE    where the JSON goes (default bench/results/wait-policy-DATE.json)`;

function options(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        runs: { type: 'string' },
        warmup: { type: 'string' },
        repeat: { type: 'string' },
        threads: { type: 'string' },
        quick: { type: 'boolean', default: false },
        'quiet-only': { type: 'boolean', default: false },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (error) {
    console.error(`${error.message.split('.')[0]}.\n${USAGE}`);
    process.exit(2);
  }
  if (parsed.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const count = (flag, value, fallback, min) => {
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min) {
      console.error(`--${flag} must be an integer >= ${min}; got ${value}\n${USAGE}`);
      process.exit(2);
    }
    return n;
  };
  const quick = parsed.quick;
  return {
    quick,
    runs: count('runs', parsed.runs, quick ? 3 : 15, 1),
    warmup: count('warmup', parsed.warmup, quick ? 1 : 3, 0),
    repeat: count('repeat', parsed.repeat, 1, 1),
    threads: count('threads', parsed.threads, os.availableParallelism(), 1),
    shapes: quick ? SHAPES.slice(0, 1) : SHAPES,
    conditions: parsed['quiet-only'] ? CONDITIONS.filter((c) => c.busy === 0) : CONDITIONS,
    out: parsed.out ?? path.join(ROOT, 'bench', 'results', `wait-policy-${new Date().toISOString().slice(0, 10)}.json`),
  };
}

// The child: loads the package fresh (OpenMP reads its settings as libtorch loads), then times
// lossAndGrad on one shape.
const CHILD = `
const [dist, shape, runs, warmup, threads] = JSON.parse(process.argv[1]);
const { PerceptualLoss, runtime, setNumThreads } = require(dist);
setNumThreads(threads);
const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg19', device: 'cpu' });
const n = shape.reduce((a, b) => a * b, 1);
const pred = { data: Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37)), shape };
const target = { data: Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11)), shape };
const samples = [];
for (let i = 0; i < warmup + runs; i++) {
  const t0 = process.hrtime.bigint();
  loss.lossAndGrad(pred, target);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (i >= warmup) samples.push(ms);
}
const info = runtime();
process.stdout.write(JSON.stringify({ samples, openmp: info.openmp, libtorch: info.libtorch.version, binary: info.binary, numThreads: info.numThreads }));
`;

/** The environment less every OpenMP wait setting, plus the arm's. */
function armEnv(arm) {
  const env = { ...process.env };
  for (const name of ['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME']) delete env[name];
  return { ...env, ...arm.env };
}

/** `count` processes that spin on a core each until stopped. */
function busyLoops(count) {
  const children = Array.from({ length: count }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
  return () => {
    for (const child of children) child.kill('SIGKILL');
  };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function measure(arm, shape, opts) {
  const args = JSON.stringify([DIST, shape, opts.runs, opts.warmup, opts.threads]);
  const child = spawnSync(process.execPath, ['-e', CHILD, args], { env: armEnv(arm), encoding: 'utf8', timeout: 600_000 });
  if (child.status !== 0) throw new Error(`the ${arm.name} child failed (${child.signal ?? child.status}): ${child.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  const result = JSON.parse(child.stdout);
  // The arm must be what the package did in that child.
  const expected = arm.name === 'passive' ? { waitPolicy: 'PASSIVE', source: 'package' } : { waitPolicy: arm.env.OMP_WAIT_POLICY, source: 'user' };
  if (result.openmp.waitPolicy !== expected.waitPolicy || result.openmp.source !== expected.source) {
    throw new Error(`the ${arm.name} child ran with ${JSON.stringify(result.openmp)}, not ${JSON.stringify(expected)}`);
  }
  return { ...result, medianMs: median(result.samples), minMs: Math.min(...result.samples), maxMs: Math.max(...result.samples) };
}

function main() {
  const opts = options(process.argv.slice(2));
  if (!fs.existsSync(DIST)) {
    console.error(`no ${DIST}: run npm run build:ts first`);
    process.exit(1);
  }
  const started = Date.now();
  const results = [];
  for (const condition of opts.conditions) {
    const stop = busyLoops(condition.busy);
    try {
      for (const shape of opts.shapes) {
        const children = new Map(ARMS.map((arm) => [arm.name, []]));
        for (let k = 0; k < opts.repeat; k++) {
          for (const arm of ARMS) {
            process.stderr.write(`wait-policy: ${condition.name}, ${shape.join('x')}, ${arm.name} (${k + 1}/${opts.repeat}) ... `);
            const r = measure(arm, shape, opts);
            process.stderr.write(`median ${r.medianMs.toFixed(1)} ms\n`);
            children.get(arm.name).push(r);
          }
        }
        for (const arm of ARMS) {
          const runs = children.get(arm.name);
          const medianMs = median(runs.map((r) => r.medianMs));
          results.push({ condition: condition.name, busyProcesses: condition.busy, shape, arm: arm.name, ...runs[0], medianMs, childMediansMs: runs.map((r) => r.medianMs) });
        }
      }
    } finally {
      stop();
    }
  }
  const rows = [];
  for (const condition of opts.conditions) {
    for (const shape of opts.shapes) {
      const of = (arm) => results.find((r) => r.condition === condition.name && r.arm === arm && r.shape.join('x') === shape.join('x'));
      const [passive, noSpin, old] = [of('passive'), of('passive-no-spin'), of('libgomp-default')];
      rows.push([
        condition.name,
        shape.join('x'),
        passive.medianMs.toFixed(1),
        noSpin.medianMs.toFixed(1),
        old.medianMs.toFixed(1),
        `${(passive.medianMs / old.medianMs).toFixed(3)}x`,
      ]);
    }
  }
  const header = ['condition', 'shape', 'package (short spin) ms', 'PASSIVE, no spin ms', 'libgomp default (old) ms', 'package / old'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  console.log(`vgg19 lossAndGrad, median of ${opts.runs} after ${opts.warmup} warm-up (the median over ${opts.repeat} child(ren) per cell), ${opts.threads} thread(s), ${results[0].libtorch}`);
  console.log(line(header));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of rows) console.log(line(row));

  const record = {
    what: 'vgg19 lossAndGrad with the package default (OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=100000), PASSIVE with no spin, and libgomp default (GOMP_SPINCOUNT=300000), quiet and beside 2 busy-loop processes',
    date: new Date().toISOString(),
    seconds: (Date.now() - started) / 1000,
    git: gitInfo(true),
    machine: { cpu: os.cpus()[0]?.model, logicalCpus: os.availableParallelism(), loadAverage: os.loadavg(), node: process.version },
    options: { runs: opts.runs, warmup: opts.warmup, repeat: opts.repeat, threads: opts.threads, quick: opts.quick, conditions: opts.conditions.map((c) => c.name) },
    arms: ARMS.map(({ name, what, env }) => ({ name, what, env })),
    results,
  };
  fs.mkdirSync(path.dirname(opts.out), { recursive: true });
  fs.writeFileSync(opts.out, `${JSON.stringify(record, null, 2)}\n`);
  console.error(`wait-policy: ${record.seconds.toFixed(0)} s; figures in ${opts.out}`);
}

main();
