#!/usr/bin/env node
// How far dtype 'bfloat16' is from float32 on the CPU, at the benchmark's shapes (bench/bench.js's
// grid) and the defaults (vgg19, five taps, l2, mean), for a few seeds: the loss's relative error
// |L_bf16 - L_f32| / |L_f32|, and the gradient's relative L2 error ||g_bf16 - g_f32|| / ||g_f32||
// and cosine with the float32 gradient (with --float64, float32's own error against float64 too,
// for scale; slow at the larger shapes). Two kinds of inputs:
//   independent  pred and target drawn independently, uniform [0, 1) (the benchmark's inputs)
//   near         target = pred + uniform noise of +-0.05: a prediction close to its target, late in
//                training, where pred's and target's features nearly cancel
// Each libtorch route runs in a child process of its own: the one this checkout loads as it is, and
// pip torch 2.13 (.venv/torch2.13-cpu, through LIBTORCH_PYTHON) where it exists. Accuracy does not
// depend on the machine's load, so it may run beside other work; each child uses one thread.
//   node bench/bf16-accuracy.js [--seeds 1,2,3] [--shapes 1x3x32x32,...] [--float64] [--package DIR | --commit REF] [--out FILE]
// --package: the package to measure (a folder with dist/ and its binaries: an installed or unpacked
// copy), instead of this checkout. --commit REF: the package as committed at REF, while the
// checkout holds uncommitted work: dist/ compiled from REF's lib/ in a temporary folder, with this
// checkout's prebuilds/ (binaries are not tracked; no local build/ is used). Writes bench/results/bf16-accuracy-DATE.json with the machine (bench/machine.js) and the commit.
// On a CPU without AVX512-BF16 or AMX-BF16 (runtime().cpu.bfloat16 false) it says so and exits 0
// without writing anything: there is nothing to measure.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { substream } = require('../tools/random.js');

const ROOT = path.resolve(__dirname, '..');
const SHAPES = ['1x3x32x32', '2x3x64x64', '4x3x64x64', '2x1x128x128', '2x19x64x64'];
const INPUTS = ['independent', 'near'];
const say = (/** @type {string} */ line) => console.error(`bf16-accuracy: ${line}`);

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '1,2,3' },
    shapes: { type: 'string', default: SHAPES.join(',') },
    out: { type: 'string' },
    float64: { type: 'boolean', default: false },
    package: { type: 'string', default: ROOT },
    commit: { type: 'string' },
    child: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log('usage: node bench/bf16-accuracy.js [--seeds 1,2,3] [--shapes 1x3x32x32,...] [--float64] [--package DIR | --commit REF] [--out FILE]');
  process.exit(0);
}
const seeds = values.seeds.split(',').map(Number);
let PKG = path.resolve(values.package);
const shapes = values.shapes.split(',').map((s) => s.trim().split('x').map(Number));
if (!seeds.every((s) => Number.isInteger(s) && s >= 0) || !shapes.every((s) => s.length === 4 && s.every((d) => Number.isInteger(d) && d > 0))) {
  console.error('usage: node bench/bf16-accuracy.js [--seeds 1,2,3] [--shapes NxCxHxW,...] [--float64] [--package DIR | --commit REF] [--out FILE]');
  process.exit(2);
}

/** pred and target for one case, from the seed alone (the same for every dtype and route). */
function inputs(shape, seed, kind) {
  const n = shape.reduce((a, b) => a * b, 1);
  const rp = substream(seed, 1);
  const rt = substream(seed, kind === 'near' ? 3 : 2);
  const pred = new Float32Array(n);
  const target = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    pred[i] = rp();
    target[i] = kind === 'near' ? pred[i] + 0.1 * (rt() - 0.5) : rt();
  }
  return { pred, target };
}

/** @param {ArrayLike<number>} a @param {ArrayLike<number>} b ||a - b|| / ||b||, and the cosine of a and b. */
function compare(a, b) {
  let diff = 0;
  let nb = 0;
  let na = 0;
  let dot = 0;
  for (let i = 0; i < b.length; i++) {
    diff += (a[i] - b[i]) ** 2;
    nb += b[i] ** 2;
    na += a[i] ** 2;
    dot += a[i] * b[i];
  }
  return { relL2: Math.sqrt(diff / nb), cosine: dot / Math.sqrt(na * nb) };
}

/** In a child: every case on the libtorch this process loads; one JSON object on stdout. */
function measure() {
  const pkg = require(path.join(PKG, 'dist', 'index.js'));
  const info = pkg.runtime();
  const about = { libtorch: info.libtorch, binary: path.relative(PKG, info.binary), binaryReason: info.binaryReason, cpu: info.cpu };
  if (!info.cpu.bfloat16) {
    console.log(JSON.stringify({ ...about, skipped: `this CPU lacks ${info.cpu.bfloat16Missing}: dtype 'bfloat16' is refused on it` }));
    return;
  }
  pkg.setNumThreads(1);
  const cases = [];
  for (const shape of shapes) {
    const dtypes = values.float64 ? ['float32', 'bfloat16', 'float64'] : ['float32', 'bfloat16'];
    const losses = Object.fromEntries(dtypes.map((dtype) => [dtype, new pkg.PerceptualLoss({ inChannels: shape[1], device: 'cpu', dtype })]));
    for (const kind of INPUTS) {
      for (const seed of seeds) {
        const { pred, target } = inputs(shape, seed, kind);
        const run = (/** @type {string} */ dtype) => {
          const f64 = dtype === 'float64';
          return losses[dtype].lossAndGrad({ data: f64 ? Float64Array.from(pred) : pred, shape }, { data: f64 ? Float64Array.from(target) : target, shape });
        };
        const [f32, bf16] = [run('float32'), run('bfloat16')];
        const bfVsF32 = compare(bf16.grad, f32.grad);
        const row = {
          shape: shape.join('x'),
          inputs: kind,
          seed,
          loss: { float32: f32.loss, bfloat16: bf16.loss },
          bf16VsFloat32: { lossRelError: Math.abs(bf16.loss - f32.loss) / Math.abs(f32.loss), gradRelL2: bfVsF32.relL2, gradCosine: bfVsF32.cosine },
        };
        if (values.float64) {
          const f64 = run('float64');
          const f32VsF64 = compare(f32.grad, f64.grad);
          row.loss.float64 = f64.loss;
          row.float32VsFloat64 = { lossRelError: Math.abs(f32.loss - f64.loss) / Math.abs(f64.loss), gradRelL2: f32VsF64.relL2, gradCosine: f32VsF64.cosine };
        }
        cases.push(row);
        const e = row.bf16VsFloat32;
        console.error(
          `  ${row.shape.padEnd(12)} ${kind.padEnd(11)} seed ${seed}  loss ${e.lossRelError.toExponential(2)}  grad L2 ${e.gradRelL2.toExponential(2)}  cosine ${e.gradCosine.toFixed(5)}`,
        );
      }
    }
    for (const loss of Object.values(losses)) loss.dispose();
  }
  console.log(JSON.stringify({ ...about, threads: 1, cases }));
}

/** The routes to a libtorch that this checkout has. */
function routes() {
  const env = { ...process.env };
  for (const name of ['LIBTORCH', 'LIBTORCH_PYTHON', 'LIBTORCH_USE_PYTORCH', 'PL_BINARY', 'PL_TEST_FLAVOUR']) delete env[name];
  const list = [{ name: 'default', note: 'the libtorch the package loads with nothing set', env }];
  const python = path.join(ROOT, '.venv/torch2.13-cpu/bin/python');
  if (fs.existsSync(python)) list.push({ name: 'pip-torch2.13-cpu', note: 'LIBTORCH_PYTHON=.venv/torch2.13-cpu/bin/python', env: { ...env, LIBTORCH_PYTHON: python } });
  return list;
}

/** The largest of a figure over the cases, and the smallest cosine. */
function summary(cases) {
  const out = {};
  for (const kind of INPUTS) {
    const mine = cases.filter((c) => c.inputs === kind).map((c) => c.bf16VsFloat32);
    if (mine.length === 0) continue;
    out[kind] = {
      maxLossRelError: Math.max(...mine.map((e) => e.lossRelError)),
      maxGradRelL2: Math.max(...mine.map((e) => e.gradRelL2)),
      minGradRelL2: Math.min(...mine.map((e) => e.gradRelL2)),
      minGradCosine: Math.min(...mine.map((e) => e.gradCosine)),
    };
  }
  return out;
}

/** The package as committed at `ref`, built in a temporary folder (removed at exit): its folder and what it is. */
function packageAt(ref) {
  const commit = execFileSync('git', ['rev-parse', ref], { cwd: ROOT, encoding: 'utf8' }).trim();
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'pl-bf16-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  execFileSync('sh', ['-c', `git archive ${commit} lib tools tsconfig.json package.json | tar -x -C "${dir}"`], { cwd: ROOT });
  fs.cpSync(path.join(ROOT, 'prebuilds'), path.join(dir, 'prebuilds'), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(dir, 'tsconfig.json')], { cwd: dir, stdio: 'inherit' });
  execFileSync(process.execPath, [path.join(dir, 'tools', 'esm-wrapper.js')], { cwd: dir, stdio: 'inherit' });
  return { dir, about: { commit, dist: `compiled from lib/ at ${commit}`, binaries: "this checkout's prebuilds/ (no local build)" } };
}

async function main() {
  if (values.child) return measure();
  let packageAbout = PKG === ROOT ? 'this checkout' : PKG;
  if (values.commit) {
    const built = packageAt(values.commit);
    [PKG, packageAbout] = [built.dir, built.about];
    say(`the package as committed at ${built.about.commit.slice(0, 7)}, in ${PKG}`);
  }
  if (!fs.existsSync(path.join(PKG, 'dist', 'index.js'))) {
    console.error(`bf16-accuracy: ${path.join(PKG, 'dist')} is missing: run \`npm run build:ts\` (or \`npm run setup\`) first`);
    process.exit(1);
  }
  const started = Date.now();
  const results = [];
  for (const route of routes()) {
    say(`${route.name} (${route.note})`);
    const args = [__filename, '--child', '--package', PKG, '--seeds', seeds.join(','), '--shapes', shapes.map((s) => s.join('x')).join(','), ...(values.float64 ? ['--float64'] : [])];
    const out = execFileSync(process.execPath, args, { cwd: ROOT, env: route.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
    const result = JSON.parse(out.trim().split('\n').pop());
    if (result.skipped) {
      say(`skipped: ${result.skipped} (runtime().cpu.bfloat16 is false); nothing is written`);
      return;
    }
    results.push({ route: route.name, note: route.note, ...result, summary: summary(result.cases) });
  }
  const { gitInfo, machineInfo } = require('./machine.js');
  const machine = await machineInfo(2);
  const date = new Date().toISOString().slice(0, 10);
  const report = {
    schema: 1,
    date,
    git: gitInfo(true),
    package: packageAbout,
    machine,
    versions: { node: process.version, package: JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version },
    settings: {
      options: 'the defaults: vgg19, taps relu1_2 relu2_2 relu3_4 relu4_4 relu5_4, l2, reduction mean, seed 0, device cpu',
      shapes: shapes.map((s) => s.join('x')),
      seeds,
      float64: values.float64,
      inputs: {
        independent: 'pred and target independent, uniform [0, 1) (substreams 1 and 2 of tools/random.js for the seed)',
        near: 'pred uniform [0, 1), target = pred + uniform [-0.05, 0.05)',
      },
      figures: 'lossRelError |L_a - L_b| / |L_b|; gradRelL2 ||g_a - g_b||_2 / ||g_b||_2; gradCosine <g_a, g_b> / (||g_a|| ||g_b||); bf16VsFloat32: a = bfloat16, b = float32',
    },
    routes: results,
    summary: Object.fromEntries(results.map((r) => [r.route, r.summary])),
    elapsedSeconds: (Date.now() - started) / 1000,
  };
  const file = values.out ?? path.join(ROOT, 'bench', 'results', `bf16-accuracy-${date}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  for (const r of results) {
    for (const [kind, s] of Object.entries(r.summary)) {
      console.log(
        `${r.route.padEnd(18)} ${kind.padEnd(11)} loss rel. error <= ${s.maxLossRelError.toExponential(2)}  gradient rel. L2 ${s.minGradRelL2.toExponential(2)} to ${s.maxGradRelL2.toExponential(2)}  cosine >= ${s.minGradCosine.toFixed(5)}`,
      );
    }
  }
  say(`written to ${path.relative(process.cwd(), file)} in ${report.elapsedSeconds.toFixed(0)} s`);
}

main().catch((e) => {
  console.error(`bf16-accuracy: error: ${(e && e.message) || e}`);
  process.exit(1);
});
