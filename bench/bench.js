#!/usr/bin/env node
// CPU benchmark of generic-perceptual-loss against PyTorch, on the same machine, in the same run.
//
//   npm run bench [-- --threads N --steps N --quick ...]   (--help lists every option)
//   npm run bench -- --only 3d                             only the volume (3-D) rows
//
// Every side runs in a persistent child process (bench/child.js): the package as built against
// Debian's libtorch and, where it is built, against pip torch 2.x's libtorch (LIBTORCH), and
// PyTorch itself, Debian's 1.13 and pip torch 2.x, in its float32, channels-last, bf16-autocast and
// torch.compile forms (bench/bench_torch.py). Volumes (3-D rows, [N, C, D, H, W]) run the package's
// default 3-D loss (spatialDims 3: its documented arch and taps) against pip torch 2.x's Conv3d network
// of the same arch, taps and weights (reference/perceptual.py), in float32, channels_last_3d, bf16
// autocast and both; lossAndGrad only. Steps are interleaved side by side, so that drifts of
// the machine (other load, clocks, heat) hit every side alike; each side times only its own call.
// Memory is measured in fresh processes (bench/memory.js); the machine and its fp32 and bf16 peaks
// in bench/machine.js; the timing and the load that other processes put on the CPUs meanwhile in
// bench/timing.js.
//
// Progress goes to stderr; the tables go to stdout; the figures go to bench/results/cpu-DATE.json.
// It refuses to record from a git tree with uncommitted changes unless given --allow-dirty.
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { Child } = require('./child.js');
const { gitInfo, machineInfo } = require('./machine.js');
const { measureMemory } = require('./memory.js');
const { competingLoad, cpuSnapshot, median, summarize, timeChecked } = require('./timing.js');

const ROOT = path.resolve(__dirname, '..');
const TORCH_SCRIPT = path.join(__dirname, 'bench_torch.py');
const PACKAGE_CHILD = path.join(__dirname, 'package_child.js');
const DEFAULT_TORCH2_VENV = path.join(ROOT, '.venv', 'torch2.13-cpu');

const ALL_SHAPES = ['1x3x32x32', '2x3x64x64', '4x3x64x64', '2x1x128x128', '2x19x64x64'];
// Volumes: a batch of two single-channel 32x64x64 stacks, and one 4-channel 48^3 volume.
const SHAPES_3D = ['2x1x32x64x64', '1x4x48x48x48'];
const QUICK_SHAPES_3D = ['1x4x48x48x48']; // the cheaper of the two
const DEFAULT_SHAPE = '2x3x64x64'; // the out-of-the-box comparison
const MEMORY_SHAPES = ['2x3x64x64', '4x3x64x64'];
// Paths; `passes` is the step's FLOPs in units of one forward pass over one input (see convLayers).
const PATHS = [
  { name: 'lossAndGrad', passes: 3, what: 'lossAndGrad(pred, target)' },
  { name: 'prepared', passes: 2, what: 'lossAndGrad(pred, prepareTarget(target))' },
  { name: 'loss', passes: 2, what: 'loss(pred, target)' },
  { name: 'features', passes: 1, what: 'features(pred)' },
];
// The PyTorch steps a user who knows the tricks would pick from; the fastest is the bar for bf16.
const TORCH_FAST_VARIANTS = ['float32', 'channels_last', 'bf16', 'bf16_channels_last'];
const TORCH_COMPILE_VARIANTS = ['compile', 'compile_bf16_channels_last'];
// The same for volumes: channels-last is torch.channels_last_3d there.
const TORCH_FAST_VARIANTS_3D = ['float32', 'channels_last_3d', 'bf16', 'bf16_channels_last_3d'];
const BF16_VARIANTS = new Set(['bfloat16', 'bf16', 'bf16_channels_last', 'compile_bf16_channels_last', 'bf16_channels_last_3d']);
// The targets, as ratios measured in the same run.
const TARGETS = { float32VsTorch: 0.9, bf16VsFastestTorch: 0.75 };

// ---------------------------------------------------------------------------------------------
// Command line

const OPTIONS = {
  threads: { type: 'string', help: `threads on every side (default: this machine's cores, ${os.availableParallelism()})` },
  steps: { type: 'string', help: 'timed steps per path and side; the median is reported (default 9)' },
  warmup: { type: 'string', help: 'untimed steps first (default 3)' },
  quick: { type: 'boolean', help: `smoke test: 3 timed steps, 1 warm-up, only ${[...ALL_SHAPES.slice(0, 2), ...QUICK_SHAPES_3D].join(', ')}, no torch.compile` },
  only: { type: 'string', help: `2d or 3d: only the image rows (${ALL_SHAPES.join(', ')}) or only the volume rows (${SHAPES_3D.join(', ')})` },
  shapes: { type: 'string', help: 'comma-separated NxCxHxW (images) or NxCxDxHxW (volumes) shapes instead of the default grid' },
  'fma-units': { type: 'string', help: 'FMA units per core for the peaks (default 2, an assumption for x86)' },
  'settle-ms': { type: 'string', help: "idle pause before each timed step, so the other side's OpenMP threads stop spinning first (default 20; 0 to disable)" },
  retries: { type: 'string', help: 'time a path again (up to N times, default 2) when other processes used more than --max-load of the CPUs while it ran' },
  'max-load': { type: 'string', help: 'share of the CPUs other processes may use while a path is timed (default 0.1)' },
  'retry-budget': { type: 'string', help: 'seconds that retries may take in all (default 240), so a run ends in bounded time' },
  'torch1-python': { type: 'string', help: "python with Debian's torch 1.13 (default /usr/bin/python3, not PATH's python3)" },
  'torch2-python': { type: 'string', help: `python with pip torch 2.x (default ${path.relative(ROOT, DEFAULT_TORCH2_VENV)}/bin/python; bash scripts/torch-envs.sh cpu makes it)` },
  'no-torch2': { type: 'boolean', help: 'leave out pip torch 2.x and the package built against it' },
  'no-compile': { type: 'boolean', help: 'leave out torch.compile' },
  'no-memory': { type: 'boolean', help: 'skip the memory measurement' },
  'package-env': { type: 'string', help: "KEY=VALUE[,KEY=VALUE...]: one more side, the package as built against Debian's libtorch run with this environment, timed beside the default one in mirrored rounds, --steps rounded up to even (GOMP_SPINCOUNT=300000: libgomp's own wait, the package's setting's cost side by side)" },
  'allow-dirty': { type: 'boolean', help: 'record even from a git tree with uncommitted changes (the JSON says so)' },
  out: { type: 'string', help: 'JSON output (default bench/results/cpu-<YYYY-MM-DD>[-2d|-3d][-quick].json)' },
  help: { type: 'boolean', short: 'h', help: 'this text' },
};

function usage() {
  const lines = Object.entries(OPTIONS).map(([name, o]) => `  --${name}${o.type === 'string' ? ' VALUE' : ''}`.padEnd(26) + o.help);
  return `usage: npm run bench -- [options]   (node bench/bench.js [options])\n${lines.join('\n')}`;
}

function fail(message) {
  console.error(`bench: ${message}`);
  process.exit(2);
}

function positiveInt(flag, v) {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) fail(`--${flag} needs a positive integer; got ${JSON.stringify(v)}`);
  return n;
}

function number(flag, v, ok, what) {
  const n = Number(v);
  if (!ok(n)) fail(`--${flag} needs ${what}; got ${JSON.stringify(v)}`);
  return n;
}

function parseShape(s) {
  const dims = String(s).split('x').map(Number);
  if ((dims.length !== 4 && dims.length !== 5) || !dims.every((d) => Number.isSafeInteger(d) && d >= 1)) fail(`bad shape ${JSON.stringify(s)}; want NxCxHxW (images) or NxCxDxHxW (volumes)`);
  return dims;
}

/** A volume: [N, C, D, H, W]. */
const is3d = (shape) => shape.length === 5;

function readOptions(argv) {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: Object.fromEntries(Object.entries(OPTIONS).map(([k, o]) => [k, o.short ? { type: o.type, short: o.short } : { type: o.type }])), strict: true }));
  } catch (e) {
    fail(`${e.message}\n${usage()}`);
  }
  if (values.help) {
    console.log(usage());
    process.exit(0);
  }
  const quick = Boolean(values.quick);
  const only = values.only;
  if (only !== undefined && only !== '2d' && only !== '3d') fail(`--only needs 2d or 3d; got ${JSON.stringify(only)}`);
  let shapes = values.shapes
    ? values.shapes.split(',').map((s) => s.trim()).filter(Boolean).map(parseShape)
    : [...(quick ? ALL_SHAPES.slice(0, 2) : ALL_SHAPES), ...(quick ? QUICK_SHAPES_3D : SHAPES_3D)].map(parseShape);
  if (only) shapes = shapes.filter((sh) => is3d(sh) === (only === '3d'));
  if (!shapes.length) fail(`no ${only} shape among --shapes ${values.shapes}`);
  const torch2Python = values['torch2-python'] ?? path.join(DEFAULT_TORCH2_VENV, 'bin', 'python');
  const packageEnv = values['package-env'] === undefined ? null : parseEnv(values['package-env']);
  let steps = values.steps === undefined ? (quick ? 3 : 9) : positiveInt('steps', values.steps);
  // The side with --package-env is timed in pairs of mirrored rounds (bench/timing.js).
  if (packageEnv && steps % 2) steps += 1;
  return {
    threads: values.threads === undefined ? os.availableParallelism() : positiveInt('threads', values.threads),
    steps,
    warmup: values.warmup === undefined ? (quick ? 1 : 3) : positiveInt('warmup', values.warmup),
    quick,
    only: only ?? null,
    shapes,
    fmaUnits: values['fma-units'] === undefined ? 2 : positiveInt('fma-units', values['fma-units']),
    settleMs: values['settle-ms'] === undefined ? 20 : number('settle-ms', values['settle-ms'], (n) => n >= 0, 'a number >= 0'),
    retries: values.retries === undefined ? 2 : number('retries', values.retries, (n) => Number.isSafeInteger(n) && n >= 0, 'an integer >= 0'),
    maxLoad: values['max-load'] === undefined ? 0.1 : number('max-load', values['max-load'], (n) => n >= 0 && n <= 1, 'a share from 0 to 1'),
    retryBudget: values['retry-budget'] === undefined ? 240 : number('retry-budget', values['retry-budget'], (n) => n >= 0, 'seconds >= 0'),
    torch1Python: values['torch1-python'] ?? '/usr/bin/python3',
    torch2Python: values['no-torch2'] ? null : torch2Python,
    compile: !values['no-compile'] && !quick,
    memory: !values['no-memory'],
    allowDirty: Boolean(values['allow-dirty']),
    packageEnv,
    out: values.out ? path.resolve(values.out) : null,
  };
}

/** 'A=1,B=2' as { A: '1', B: '2' }. */
function parseEnv(text) {
  const env = {};
  for (const pair of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) fail(`--package-env needs KEY=VALUE pairs; got ${JSON.stringify(pair)}\n${usage()}`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  if (!Object.keys(env).length) fail(`--package-env needs at least one KEY=VALUE\n${usage()}`);
  return env;
}
const envText = (env) => Object.entries(env).map(([k, v]) => `${k}=${v}`).join(',');

const shapeName = (shape) => shape.join('x');
const f1 = (x) => (x === null || x === undefined ? '-' : x.toFixed(1));
const f2 = (x) => (x === null || x === undefined ? '-' : x.toFixed(2));
const pct = (x) => (x === null || x === undefined ? '-' : `${(100 * x).toFixed(1)}%`);

function progress(msg) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function table(headers, rows, align) {
  const cells = [headers, ...rows].map((r) => r.map(String));
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => ((align && align[i] === 'l') ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// The network and its FLOPs

/** The package's default loss for the shape's channels, resolved as a CPU float32 loss; for a 5-D shape a volume's (spatialDims 3). */
function resolveDefault(shape) {
  const { resolveOptions } = require(path.join(ROOT, 'dist', 'options.js'));
  // The cut network does not depend on the dtype or the CPU. The 2-D options are those of the rows
  // before volumes existed (no spatialDims), so the 2-D rows stay comparable with older runs.
  return resolveOptions(is3d(shape) ? { inChannels: shape[1], spatialDims: 3, device: 'cpu' } : { inChannels: shape[1], device: 'cpu' }, 0, '');
}

/**
 * The conv FLOPs of one forward pass, from the network the package builds: describeNetwork's
 * modules as the options resolve them (cut after the deepest tap), each conv at the spatial size
 * left by the pools before it (floor). A 3x3, stride 1, pad 1 conv costs 2*Cin*Cout*9*H*W*N; a
 * 3x3x3 one (volumes) 2*Cin*Cout*27*D*H*W*N.
 */
function convLayers(shape) {
  const [n, , ...spatial0] = shape;
  const kernel = 3 ** spatial0.length;
  return resolveDefault(shape).kept
    .filter((m) => m.kind === 'conv')
    .map((m) => {
      const spatial = spatial0.map((s) => Math.floor(s / 2 ** m.poolsSoFar));
      return { name: m.name, cin: m.inChannels, cout: m.outChannels, spatial, flops: 2 * m.inChannels * m.outChannels * kernel * spatial.reduce((a, b) => a * b, 1) * n };
    });
}

/** The package's default 3-D network, which the PyTorch sides build too: arch (pools as 'M') and taps. */
function network3d() {
  const r = resolveDefault([1, 1, 1, 1, 1]);
  return {
    spatialDims: 3,
    arch: r.native.arch.map((v) => (v === 0 ? 'M' : v)),
    layers: r.options.layers,
    layout: r.options.layout,
    convs: r.kept.filter((m) => m.kind === 'conv').length,
    minSize: r.minSize,
  };
}

const FLOP_COUNTING =
  'Only the 3x3 convs kept in the network (cut after relu5_4) are counted: 2*Cin*Cout*9*H*W*N per conv ' +
  'per forward pass (F = the sum over kept convs); for volumes the 3x3x3 convs of the default 3-D network ' +
  '(cut after its deepest tap): 2*Cin*Cout*27*D*H*W*N. Backward with respect to the input of a conv costs the ' +
  'same as its forward, and it is counted for every kept conv, the first included (d loss / d pred needs it); ' +
  'no weight gradient is computed on either side. lossAndGrad = 3F (forward pred, forward target, backward pred); ' +
  'prepared = 2F (forward pred, backward pred); loss = 2F (two forwards); features = 1F. ' +
  'ReLU, pooling, bias, loss-term and copy flops are ignored. fp32 steps are set against the fp32 peak, ' +
  'bf16 steps against the bf16 peak.';


// ---------------------------------------------------------------------------------------------
// Sides

// `extraEnv`: the side differs from another of its build only by `env` (--package-env).
async function startSide(name, kind, cmd, args, env, extraEnv = false) {
  const child = new Child(name, cmd, args, env);
  try {
    const hello = await child.request({ cmd: 'hello' }, 180_000);
    return { name, kind, child, hello, env, extraEnv };
  } catch (e) {
    child.kill();
    return { name, kind, child: null, error: e.message.split('\n')[0], env, extraEnv };
  }
}

function torch2LibtorchDir(python) {
  return execFileSync(python, ['-c', 'import os, torch; print(os.path.dirname(torch.__file__))'], { encoding: 'utf8', timeout: 120_000 }).trim();
}

/** Both sides must compute the same loss and gradient on the same inputs, or the timing is moot. */
async function checkSameLoss(pkgSide, torchSide, shape) {
  const { mulberry32 } = require('../tools/random.js');
  const rng = mulberry32(99);
  const data = () => Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng());
  const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
  const req = { cmd: 'check', shape, pred: b64(data()), target: b64(data()), variant: 'float32' };
  const [got, ref] = [await pkgSide.child.request(req), await torchSide.child.request(req)];
  const rel = (a, b) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
  if (rel(got.loss, ref.loss) > 1e-3 || rel(got.gradSumSq, ref.gradSumSq) > 1e-3) {
    throw new Error(
      `${pkgSide.name} and ${torchSide.name} disagree on ${shapeName(shape)}: loss ${got.loss} vs ${ref.loss}, ` +
        `sum of squared gradient ${got.gradSumSq} vs ${ref.gradSumSq}; they are not the same computation`,
    );
  }
  progress(`check: ${pkgSide.name} and ${torchSide.name} agree on ${shapeName(shape)} (loss ${got.loss.toPrecision(6)} vs ${ref.loss.toPrecision(6)})`);
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const opts = readOptions(process.argv.slice(2));
  const git = gitInfo(opts.allowDirty);
  if (git.dirty && !opts.allowDirty) {
    fail(`the git tree has uncommitted changes, so the measured code could not be reproduced:\n  ${git.dirtyFiles.join('\n  ')}\ncommit them, or pass --allow-dirty (the JSON records it)`);
  }
  const started = Date.now();
  const machine = await machineInfo(opts.fmaUnits);
  const pkgVersion = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;

  // ---- the sides
  const sides = [];
  sides.push(await startSide('package@system', 'package', process.execPath, [PACKAGE_CHILD, 'serve'], {}));
  if (opts.packageEnv) sides.push(await startSide('package@system+env', 'package', process.execPath, [PACKAGE_CHILD, 'serve'], opts.packageEnv, true));
  sides.push(await startSide('torch@debian', 'torch', opts.torch1Python, [TORCH_SCRIPT, 'serve'], {}));
  let libtorch2 = null;
  if (opts.torch2Python) {
    try {
      libtorch2 = torch2LibtorchDir(opts.torch2Python);
      sides.push(await startSide('torch@pip', 'torch', opts.torch2Python, [TORCH_SCRIPT, 'serve'], {}));
      sides.push(await startSide('package@pip', 'package', process.execPath, [PACKAGE_CHILD, 'serve'], { LIBTORCH: libtorch2 }));
    } catch (e) {
      sides.push({ name: 'torch@pip', kind: 'torch', child: null, error: `${opts.torch2Python}: ${e.message.split('\n')[0]}` });
    }
  }
  const live = sides.filter((s) => s.child);
  for (const s of sides) {
    if (s.child) s.name = s.kind === 'package' ? `package@${s.hello.libtorch}${s.extraEnv ? ` ${envText(s.env)}` : ''}` : `torch ${s.hello.torch}`;
    progress(s.child ? `${s.name}: ${s.kind === 'package' ? s.hello.binary : s.hello.executable}` : `${s.name}: not available: ${s.error}`);
  }
  process.on('exit', () => live.forEach((s) => s.child.kill()));
  const pkgSides = live.filter((s) => s.kind === 'package');
  // --package-env: that side, and the one it is set against (the same Debian build, as it ships).
  const envSide = pkgSides.find((s) => s.extraEnv);
  const envBaseSide = pkgSides.find((s) => !s.extraEnv && !s.env?.LIBTORCH);
  const torchSides = live.filter((s) => s.kind === 'torch');
  if (!pkgSides.length || !torchSides.length) throw new Error(`need a package side and a PyTorch side; ${sides.filter((s) => !s.child).map((s) => `${s.name}: ${s.error}`).join('; ')}`);
  const bf16 = pkgSides[0].hello.cpu.bfloat16;
  if (!bf16) progress(`bfloat16: not on this CPU (${pkgSides[0].hello.cpu.bfloat16Missing}); only float32 rows`);
  const torch2 = torchSides.find((s) => !s.hello.torch.startsWith('1.'));
  const shapes2d = opts.shapes.filter((sh) => !is3d(sh));
  const shapes3d = opts.shapes.filter(is3d);
  // Volumes run against pip torch 2.x (the issue's bar); Debian's 1.13 only where there is no 2.x.
  const torchSides3d = torch2 ? [torch2] : torchSides;
  const net3d = shapes3d.length ? network3d() : null;
  if (net3d) {
    progress(`3-D rows: the package's default 3-D loss: arch ${JSON.stringify(net3d.arch)}, taps ${net3d.layers.join(', ')}, layout ${net3d.layout}; PyTorch: the same Conv3d network (${torchSides3d.map((s) => s.name).join(', ')})`);
    for (const t of torchSides3d) await t.child.request({ cmd: 'network', spatialDims: 3, arch: net3d.arch, layers: net3d.layers });
  }

  if (shapes2d.length) for (const p of pkgSides) for (const t of torchSides) await checkSameLoss(p, t, [1, 3, 32, 32]);
  if (net3d) for (const p of pkgSides) for (const t of torchSides3d) await checkSameLoss(p, t, [1, 2, net3d.minSize, net3d.minSize, net3d.minSize]);
  const defaultThreads = Object.fromEntries(live.map((s) => [s.name, s.hello.defaultThreads]));
  for (const s of live) {
    const r = await s.child.request({ cmd: 'threads', n: opts.threads });
    if (r.threads !== opts.threads) throw new Error(`${s.name}: ${opts.threads} threads asked, ${r.threads} set`);
  }

  // ---- timing
  const ctx = {
    settleMs: opts.settleMs, retries: opts.retries, maxLoad: opts.maxLoad, retryBudgetMs: opts.retryBudget * 1000, progress,
    pids: () => live.map((s) => s.child.proc.pid),
  };
  const rounds = { warmup: opts.warmup, steps: opts.steps };
  const cpuAtStart = cpuSnapshot(ctx.pids());
  if (Number(cpuAtStart.loadavg.split(' ')[0]) > 0.5) progress(`warning: load average ${cpuAtStart.loadavg} before the timing starts: other processes may compete for the CPUs`);

  // --package-env: each entry of the side with the environment is timed as the twin of the same
  // variant on the default side (bench/timing.js swaps them in mirrored rounds).
  const withTwins = (entries) => {
    for (const e of entries) {
      if (e.side === envSide) e.twin = entries.find((d) => d.variant === e.variant && d.side === envBaseSide)?.key;
    }
    return entries;
  };
  const entriesFor = (pathName, compile, shape) => {
    const out = [];
    if (is3d(shape)) {
      // Volumes: lossAndGrad, host float32 and bfloat16 against PyTorch's four eager forms.
      for (const s of pkgSides) {
        out.push({ side: s, variant: 'float32' });
        if (bf16) out.push({ side: s, variant: 'bfloat16' });
      }
      for (const s of torchSides3d) for (const v of TORCH_FAST_VARIANTS_3D) if (bf16 || !BF16_VARIANTS.has(v)) out.push({ side: s, variant: v });
      return withTwins(out.map((e) => ({ ...e, key: `${e.side.name} ${e.variant}`, child: e.side.child })));
    }
    for (const s of pkgSides) {
      out.push({ side: s, variant: 'float32' });
      if (pathName === 'lossAndGrad' || s === pkgSides[0]) out.push({ side: s, variant: 'float32-tensor' });
      if (bf16 && (pathName === 'lossAndGrad' || compile)) out.push({ side: s, variant: 'bfloat16' });
    }
    for (const s of torchSides) {
      if (compile) {
        if (s.hello.torch.startsWith('1.')) continue;
        for (const v of TORCH_COMPILE_VARIANTS) if (bf16 || !BF16_VARIANTS.has(v)) out.push({ side: s, variant: v });
      } else if (pathName === 'lossAndGrad') {
        for (const v of TORCH_FAST_VARIANTS) if (bf16 || !BF16_VARIANTS.has(v)) out.push({ side: s, variant: v });
      } else out.push({ side: s, variant: 'float32' });
    }
    return withTwins(out.map((e) => ({ ...e, key: `${e.side.name} ${e.variant}`, child: e.side.child })));
  };

  const results = [];
  const unavailable = [];
  const runPath = async (shape, p, compile) => {
    const entries = [];
    for (const e of entriesFor(p.name, compile, shape)) {
      const r = await e.child.request({ cmd: 'setup', shape, variant: e.variant }, 1_800_000);
      if (r.error) {
        unavailable.push({ shape: shapeName(shape), key: e.key, error: r.error });
        progress(`${shapeName(shape)} ${e.key}: not available: ${r.error}`);
      } else entries.push(e);
    }
    const t0 = Date.now();
    const { samples, load, attempts } = await timeChecked(ctx, entries, p.name, shape, rounds);
    const forwardFlops = convLayers(shape).reduce((a, c) => a + c.flops, 0);
    const gflop = (p.passes * forwardFlops) / 1e9;
    for (const e of entries) {
      const isBf16 = BF16_VARIANTS.has(e.variant);
      const peak = isBf16 ? machine.bf16.peakGflops : machine.peakGflops;
      results.push({
        shape: shapeName(shape), spatialDims: shape.length - 2, path: p.name, call: p.what, compile, side: e.side.name, kind: e.side.kind, variant: e.variant,
        precision: isBf16 ? 'bf16' : 'fp32', gflop, ...summarize(samples[e.key], gflop, peak), otherLoad: load.otherProcessesShare, attempts,
      });
    }
    const brief = entries.map((e) => `${e.key} ${f1(results.find((r) => r.shape === shapeName(shape) && r.path === p.name && r.compile === compile && `${r.side} ${r.variant}` === e.key).medianMs)}`);
    progress(`${shapeName(shape)} ${p.name}${compile ? ' (torch.compile)' : ''}: ${brief.join(', ')} ms  [${((Date.now() - t0) / 1000).toFixed(0)} s]`);
  };
  for (const shape of shapes2d) for (const p of PATHS) await runPath(shape, p, false);
  if (opts.compile && torch2) for (const shape of shapes2d) await runPath(shape, PATHS[0], true);
  // Volumes: lossAndGrad only (a step there costs about a second on two cores).
  for (const shape of shapes3d) await runPath(shape, PATHS[0], false);

  // Out of the box: each side at the thread count it picks by itself, float32 lossAndGrad (2-D).
  let oob = null;
  let oobGflop = null;
  let outOfTheBox = [];
  if (shapes2d.length) {
    for (const s of live) await s.child.request({ cmd: 'threads', n: defaultThreads[s.name] });
    const oobShape = parseShape(DEFAULT_SHAPE);
    const oobEntries = live.map((s) => ({ side: s, variant: 'float32', key: `${s.name} float32`, child: s.child }));
    for (const e of oobEntries) await e.child.request({ cmd: 'setup', shape: oobShape, variant: 'float32' });
    oob = await timeChecked(ctx, oobEntries, 'lossAndGrad', oobShape, rounds);
    oobGflop = (3 * convLayers(oobShape).reduce((a, c) => a + c.flops, 0)) / 1e9;
    outOfTheBox = oobEntries.map((e) => ({ side: e.side.name, threads: defaultThreads[e.side.name], ...summarize(oob.samples[e.key], oobGflop, machine.peakGflops) }));
  }

  const load = competingLoad(cpuAtStart, cpuSnapshot(ctx.pids()));
  for (const s of live) await s.child.close();

  // ---- memory (fresh processes)
  // The PyTorch bf16 form whose memory is set against the package's bfloat16: autocast, channels-last.
  const torchBf16Memory = (volumes) => (volumes ? 'bf16_channels_last_3d' : 'bf16_channels_last');
  const memSidesFor = (volumes) => {
    const list = [];
    for (const s of pkgSides) {
      for (const v of bf16 ? ['float32', 'bfloat16'] : ['float32']) {
        list.push({ name: `${s.name} ${v}`, cmd: process.execPath, args: (sh, th) => [PACKAGE_CHILD, 'memory', '--shape', sh, '--threads', String(th), '--variant', v], env: s.env });
      }
    }
    // Volumes: the Conv3d network the timing used, named on the command line.
    const net = volumes ? ['--arch', net3d.arch.join(','), '--layers', net3d.layers.join(',')] : [];
    for (const s of volumes ? torchSides3d : torchSides) {
      const python = s.hello.executable;
      for (const v of bf16 ? ['float32', torchBf16Memory(volumes)] : ['float32']) {
        list.push({ name: `${s.name} ${v}`, cmd: python, args: (sh, th) => [TORCH_SCRIPT, 'memory', '--shape', sh, '--threads', String(th), '--variant', v, ...net], env: {} });
      }
    }
    return list;
  };
  const memShapes = [
    ...MEMORY_SHAPES.filter((m) => shapes2d.some((sh) => shapeName(sh) === m)),
    ...shapes3d.map(shapeName), // every volume row: the issue's bar is memory at or below PyTorch's
  ];
  const memory = [];
  if (opts.memory) {
    const mem2d = memShapes.filter((m) => !is3d(parseShape(m)));
    const mem3d = memShapes.filter((m) => is3d(parseShape(m)));
    if (mem2d.length) memory.push(...measureMemory(memSidesFor(false), mem2d, opts.threads, progress));
    if (mem3d.length) memory.push(...measureMemory(memSidesFor(true), mem3d, opts.threads, progress));
  }

  // ---- targets: ratios from this run, at every shape
  const find = (shape, side, variant, compile = false) => results.find((r) => r.shape === shape && r.path === 'lossAndGrad' && r.side === side && r.variant === variant && r.compile === compile);
  const targets = [];
  for (const sh of opts.shapes) {
    if (!torch2) break;
    const shape = shapeName(sh);
    const t32 = find(shape, torch2.name, 'float32');
    const fastest = (is3d(sh) ? TORCH_FAST_VARIANTS_3D : TORCH_FAST_VARIANTS).map((v) => find(shape, torch2.name, v)).filter(Boolean).sort((a, b) => a.medianMs - b.medianMs)[0];
    for (const s of pkgSides) {
      const p32 = find(shape, s.name, 'float32');
      const pbf = find(shape, s.name, 'bfloat16');
      targets.push({
        shape, spatialDims: sh.length - 2, package: s.name, torch: torch2.name,
        float32: p32 && t32 ? { packageMs: p32.medianMs, torchMs: t32.medianMs, ratio: p32.medianMs / t32.medianMs, target: TARGETS.float32VsTorch, met: p32.medianMs / t32.medianMs <= TARGETS.float32VsTorch } : null,
        bfloat16: pbf && fastest ? { packageMs: pbf.medianMs, fastestTorch: fastest.variant, torchMs: fastest.medianMs, ratio: pbf.medianMs / fastest.medianMs, target: TARGETS.bf16VsFastestTorch, met: pbf.medianMs / fastest.medianMs <= TARGETS.bf16VsFastestTorch } : null,
      });
    }
  }
  const memTargets = [];
  for (const shape of memShapes) {
    const get = (name) => memory.find((m) => m.shape === shape && m.mode === 'clean' && m.side === name && !m.error);
    for (const s of pkgSides) {
      for (const [pv, tv] of [['float32', 'float32'], ['bfloat16', torchBf16Memory(is3d(parseShape(shape)))]]) {
        const p = get(`${s.name} ${pv}`);
        const t = torch2 && get(`${torch2.name} ${tv}`);
        if (p && t) memTargets.push({ shape, spatialDims: parseShape(shape).length - 2, package: `${s.name} ${pv}`, torch: `${torch2.name} ${tv}`, packageMiB: p.stepPeakMiB, torchMiB: t.stepPeakMiB, met: p.stepPeakMiB <= t.stepPeakMiB });
      }
    }
  }

  // ---- the package with --package-env against itself as it ships: every step both timed
  const envComparison = [];
  if (envSide) {
    for (const r of results.filter((x) => x.side === envSide.name)) {
      const b = results.find((x) => x.shape === r.shape && x.path === r.path && x.compile === r.compile && x.variant === r.variant && x.side === envBaseSide.name);
      if (b) envComparison.push({ shape: r.shape, path: r.path, variant: r.variant, defaultMs: b.medianMs, withEnvMs: r.medianMs, defaultOverWithEnv: b.medianMs / r.medianMs });
    }
  }

  // ---- report
  const date = new Date().toISOString().slice(0, 10);
  const lines = [];
  const say = (s = '') => lines.push(s);
  say(`generic-perceptual-loss ${pkgVersion} vs PyTorch — CPU benchmark, ${date}, commit ${git.commit ? git.commit.slice(0, 12) : '?'}${git.dirty ? ' (DIRTY tree, --allow-dirty)' : ''}`);
  say(`CPU: ${machine.cpuModel} (${machine.vendor}, family ${machine.family} model ${machine.model}${machine.hypervisor ? `, under ${machine.hypervisor}` : ''}); node ${process.version}`);
  for (const s of sides) say(s.child ? `  ${s.name}: ${s.kind === 'package' ? `${s.hello.binary} (libtorch at ${s.hello.libtorchPath})` : `${s.hello.executable}, oneDNN ${s.hello.onednn ?? '?'}`}` : `  ${s.name}: not available: ${s.error}`);
  say(`threads: ${opts.threads} on every side; median of ${opts.steps} timed steps after ${opts.warmup} warm-up; steps interleaved side by side, ${opts.settleMs} ms idle before each`);
  say(`peak fp32: ${machine.peakDerivation[0]}`);
  for (const l of machine.peakDerivation.slice(1)) say(`  ${l}`);
  say(`peak bf16: ${machine.bf16.derivation}`);
  say(
    `competing load during the timing (${load.seconds.toFixed(0)} s): other processes used ${pct(load.otherProcessesShare)} of the CPUs, ` +
      `hypervisor steal ${pct(load.stealShare)}; load average at start ${load.loadAverageAtStart}` +
      (load.otherProcessesShare > 0.05 || load.stealShare > 0.05 ? '  <-- WARNING: the machine was not quiet; the timings are not reliable' : ''),
  );
  say(`FLOPs: ${FLOP_COUNTING}`);
  if (net3d) {
    say(
      `Volumes (3-D rows, ${shapes3d.map(shapeName).join(', ')}): the package's default 3-D loss (spatialDims 3, layout ${net3d.layout}): arch ${JSON.stringify(net3d.arch)}, ` +
        `taps ${net3d.layers.join(', ')} (${net3d.convs} 3x3x3 convs); PyTorch (${torchSides3d.map((s) => s.name).join(', ')}): the same Conv3d/MaxPool3d network and weights ` +
        `(reference/perceptual.py), float32, channels_last_3d, bf16 autocast and both; lossAndGrad only`,
    );
  }
  say();
  say(`Every step, side by side. %peak: of the fp32 or the bf16 peak above. other load: CPU share used by other processes while that path ran ("!": over ${pct(opts.maxLoad)})`);
  say(table(
    ['shape', 'path', 'side', 'variant', 'ms', 'GFLOP/s', '%peak', 'other load'],
    results.map((r) => [r.shape, r.path + (r.compile ? ' (compile)' : ''), r.side, r.variant, f1(r.medianMs), f1(r.gflops), pct(r.peakShare), pct(r.otherLoad) + (r.otherLoad > opts.maxLoad ? ' !' : '')]),
    'llll',
  ));
  if (unavailable.length) {
    say();
    say('Not available here:');
    for (const u of unavailable) say(`  ${u.shape} ${u.key}: ${u.error}`);
  }
  if (targets.length) {
    say();
    say(
      `Targets (ratios in this run): package float32 <= ${TARGETS.float32VsTorch} x ${torch2.name} float32; package bfloat16 <= ${TARGETS.bf16VsFastestTorch} x the fastest ${torch2.name} step ` +
        `(${TORCH_FAST_VARIANTS.join(', ')}; volumes: ${TORCH_FAST_VARIANTS_3D.join(', ')})`,
    );
    say(table(
      ['shape', 'package', 'f32 ms', 'torch f32 ms', 'ratio', 'met', 'bf16 ms', 'fastest torch', 'ms', 'ratio', 'met'],
      targets.map((t) => [
        t.shape, t.package, f1(t.float32?.packageMs), f1(t.float32?.torchMs), f2(t.float32?.ratio), t.float32 ? (t.float32.met ? 'yes' : 'NO') : '-',
        f1(t.bfloat16?.packageMs), t.bfloat16?.fastestTorch ?? '-', f1(t.bfloat16?.torchMs), f2(t.bfloat16?.ratio), t.bfloat16 ? (t.bfloat16.met ? 'yes' : 'NO') : '-',
      ]),
      'll',
    ));
  }
  if (envComparison.length) {
    say();
    say(`The package as it ships against the same build with ${envText(envSide.env)} (steps side by side): default / with that environment`);
    say(table(['shape', 'path', 'variant', 'default ms', 'with env ms', 'ratio'], envComparison.map((c) => [c.shape, c.path, c.variant, f1(c.defaultMs), f1(c.withEnvMs), c.defaultOverWithEnv.toFixed(3)]), 'lll'));
    const ratios = envComparison.map((c) => c.defaultOverWithEnv);
    say(`ratio: median ${median(ratios).toFixed(3)}, from ${Math.min(...ratios).toFixed(3)} to ${Math.max(...ratios).toFixed(3)}, over ${ratios.length} kinds of step`);
  }
  if (outOfTheBox.length) {
    say();
    say(`Out of the box (no thread setting on any side), float32 lossAndGrad at ${DEFAULT_SHAPE}:`);
    say(table(['side', 'threads', 'median ms', 'GFLOP/s'], outOfTheBox.map((o) => [o.side, o.threads, f1(o.medianMs), f1(o.gflops)]), 'l'));
  }
  if (memory.length) {
    say();
    say(
      `Memory of one lossAndGrad step, fresh process per figure, ${opts.threads} thread(s): VmHWM after the step minus VmRSS before it ` +
        '(after load + build + one warm-up step, VmHWM reset just before the step). "clean": MALLOC_MMAP_THRESHOLD_=65536 so freed ' +
        'tensors leave RSS; "glibc default": as shipped.',
    );
    const rows = [];
    for (const shape of memShapes) {
      for (const s of memSidesFor(is3d(parseShape(shape)))) {
        const get = (mode) => memory.find((m) => m.shape === shape && m.side === s.name && m.mode === mode);
        const [c, d] = [get('clean'), get('glibcDefault')];
        rows.push([shape, s.name, c.error ? 'failed' : f1(c.stepPeakMiB), d.error ? 'failed' : f1(d.stepPeakMiB)]);
      }
    }
    say(table(['shape', 'side', 'step peak +MiB (clean)', 'step peak +MiB (glibc default)'], rows, 'll'));
    if (memTargets.length) say(`peak memory <= PyTorch's (clean): ${memTargets.map((m) => `${m.shape} ${m.package} ${f1(m.packageMiB)} vs ${f1(m.torchMiB)} MiB ${m.met ? 'yes' : 'NO'}`).join('; ')}`);
  }
  const elapsed = (Date.now() - started) / 1000;
  say();
  say(`total run time ${elapsed.toFixed(0)} s`);

  const report = {
    // 3: volume rows (results[].spatialDims, network3d), --only; outOfTheBox is null without 2-D rows.
    schema: 3,
    date,
    quick: opts.quick,
    git,
    machine,
    versions: { node: process.version, package: pkgVersion },
    sides: sides.map((s) => (s.child ? { name: s.name, kind: s.kind, ...s.hello, env: s.env } : { name: s.name, kind: s.kind, error: s.error })),
    threads: opts.threads,
    competingLoad: load,
    defaultThreads,
    settings: {
      steps: opts.steps, warmup: opts.warmup, settleMs: opts.settleMs, retries: opts.retries, maxLoad: opts.maxLoad, retryBudgetSeconds: opts.retryBudget,
      shapes: opts.shapes.map(shapeName), only: opts.only, compile: opts.compile, statistic: 'median', inputs: 'uniform [0, 1) float32, fresh each step',
    },
    network3d: net3d && { ...net3d, torchSides: torchSides3d.map((s) => s.name) },
    flopCounting: FLOP_COUNTING,
    results,
    unavailable,
    targets,
    memoryTargets: memTargets,
    packageEnv: envSide ? { env: envSide.env, side: envSide.name, comparison: envComparison } : null,
    outOfTheBox: oob && { shape: DEFAULT_SHAPE, gflop: oobGflop, otherLoad: oob.load.otherProcessesShare, sides: outOfTheBox },
    memory,
    elapsedSeconds: elapsed,
  };
  const outFile = opts.out ?? path.join(ROOT, 'bench', 'results', `cpu-${date}${opts.only ? `-${opts.only}` : ''}${opts.quick ? '-quick' : ''}.json`);
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, JSON.stringify(report, null, 2) + '\n');
  say(`results written to ${path.relative(process.cwd(), outFile) || outFile}`);
  console.log(lines.join('\n'));
}

main().catch((e) => {
  // The message says what failed; the stack only helps when debugging this script.
  console.error(`bench: error: ${process.env.BENCH_DEBUG && e && e.stack ? e.stack : (e && e.message) || e}`);
  process.exit(1);
});
