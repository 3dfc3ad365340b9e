// The GPU benchmark of scripts/gpu-suite.sh: this package against PyTorch (bench/gpu_torch.py) on
// the same GPU, in the same run. Grid: 16x3x256x256, 8x19x512x512 (segmentation), 64x3x64x64
// (launch overhead), vgg19 with five taps, l2, mean; volumes 2x1x64x64x64 and 4x1x96x96x96
// (spatialDims 3, the package's default 3-D arch and taps; fewer variants and steps, to stay within
// the suite's time budget; PyTorch there without torch.compile). Each package variant turns on one more
// performance switch; inputs are resident Tensors (and host arrays once, for the boundary's cost).
// Fresh random inputs every step (a pool of distinct inputs, drawn before the run); warm-up first;
// the median of the timed steps; a step returns only once its result is on the host, so the wall
// clock around it is the step's time. Writes $OUT/bench.json, gpu-<card>-<date>.json, table.txt.
//   node bench/gpu-bench.mjs --mode gpu|cpu --out DIR
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CUDA, DEVICE, PYTHON, perceptual, native, numel, rand, resolveOptions } from '../test/gpu/common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { PerceptualLoss, Tensor } = perceptual;
const args = process.argv.slice(2);
const out = path.resolve(args[args.indexOf('--out') + 1] ?? 'gpu-out');
fs.mkdirSync(out, { recursive: true });

const GRID = CUDA ? [[16, 3, 256, 256], [8, 19, 512, 512], [64, 3, 64, 64]] : [[1, 3, 16, 16], [1, 19, 16, 16], [2, 3, 16, 16]];
const WARMUP = Number(process.env.PL_BENCH_WARMUP ?? (CUDA ? 5 : 1));
const STEPS = Number(process.env.PL_BENCH_STEPS ?? (CUDA ? 20 : 3));
// Volumes, [N, C, D, H, W]: the default 3-D arch pools four times, so 16 is the least side here.
const GRID_3D = CUDA ? [[2, 1, 64, 64, 64], [4, 1, 96, 96, 96]] : [[1, 1, 16, 16, 16], [2, 1, 16, 16, 16]];
const WARMUP_3D = Number(process.env.PL_BENCH_WARMUP_3D ?? (CUDA ? 3 : 1));
const STEPS_3D = Number(process.env.PL_BENCH_STEPS_3D ?? (CUDA ? 10 : 3));
const POOL = 3;

const fast = { cudnnBenchmark: true, channelsLast: true };
const VARIANTS = [
  { name: 'default', options: {} },
  { name: 'default, host arrays', options: {}, host: true },
  { name: 'cudnnBenchmark', options: { cudnnBenchmark: true } },
  { name: '+channelsLast', options: fast },
  { name: '+channelsLast +cudaGraphs', options: { ...fast, cudaGraphs: true } },
  { name: 'bf16 +channelsLast', options: { ...fast, dtype: 'bfloat16' }, cudaOnly: true },
  { name: 'bf16 +targetStream', options: { ...fast, dtype: 'bfloat16', targetStream: true }, cudaOnly: true },
  { name: 'bf16 +cudaGraphs', options: { ...fast, dtype: 'bfloat16', cudaGraphs: true }, cudaOnly: true },
  { name: 'bf16 +cudaGraphs, host arrays', options: { ...fast, dtype: 'bfloat16', cudaGraphs: true }, host: true, cudaOnly: true },
];

// Volumes: fewer variants (one more switch each), as a user would try them.
const VARIANTS_3D = [
  { name: 'default', options: {} },
  { name: '+channelsLast', options: fast },
  { name: 'bf16 +channelsLast', options: { ...fast, dtype: 'bfloat16' }, cudaOnly: true },
  { name: 'bf16 +cudaGraphs', options: { ...fast, dtype: 'bfloat16', cudaGraphs: true }, cudaOnly: true },
];

/** The package's default loss for a shape: vgg19 for [N, C, H, W], the default 3-D network for [N, C, D, H, W]. */
const defaultOptions = (shape) => (shape.length === 5 ? { inChannels: shape[1], spatialDims: 3 } : { inChannels: shape[1] });

/** The network the package builds by default for a 3-D loss: arch (pools as 'M') and taps. */
function network3d() {
  const r = resolveOptions({ inChannels: 1, spatialDims: 3, device: 'cpu' }, 0, '');
  return { arch: r.native.arch.map((v) => (v === 0 ? 'M' : v)), layers: r.options.layers };
}

/** 3 x the forward FLOPs of the convs the package keeps: 2*Cin*Cout*9*H*W*N each (27*D*H*W for volumes). */
function stepFlops(shape) {
  const [n, , ...spatial] = shape;
  const { kept } = resolveOptions({ ...defaultOptions(shape), device: 'cpu' }, 0, '');
  let flops = 0;
  for (const m of kept) {
    if (m.kind !== 'conv') continue;
    const voxels = spatial.reduce((a, s) => a * Math.floor(s / 2 ** m.poolsSoFar), 1);
    flops += 2 * m.inChannels * m.outChannels * 3 ** spatial.length * voxels * n;
  }
  return 3 * flops;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function measure(shape, variant, warmup, steps) {
  const loss = new PerceptualLoss({ ...defaultOptions(shape), device: DEVICE, ...variant.options });
  const pool = Array.from({ length: POOL }, (_, i) => {
    const p = { data: rand(numel(shape), 100 + i), shape };
    const t = { data: rand(numel(shape), 200 + i), shape };
    if (variant.host) return { p, t };
    return { p: Tensor.from(p.data, shape, { device: DEVICE }), t: Tensor.from(t.data, shape, { device: DEVICE }) };
  });
  const step = (i) => {
    const { p, t } = pool[i % POOL];
    const r = loss.lossAndGrad(p, t);
    if (!(r.grad instanceof Float32Array)) r.grad.dispose();
    return r.loss;
  };
  let value = 0;
  const t0 = performance.now();
  for (let i = 0; i < warmup; i++) value = step(i);
  const warmupMs = performance.now() - t0;
  const before = CUDA ? native.cudaMemory(0).allocated : 0;
  if (CUDA) native.cudaResetPeakMemory(0);
  const times = [];
  for (let i = 0; i < steps; i++) {
    const start = performance.now();
    value = step(warmup + i);
    times.push(performance.now() - start);
  }
  const peak = CUDA ? native.cudaMemory(0).peakAllocated - before : null;
  for (const { p, t } of pool) if (!variant.host) (p.dispose(), t.dispose());
  loss.dispose();
  if (CUDA) native.cudaEmptyCache();
  times.sort((a, b) => a - b);
  return {
    median_ms: median(times),
    p10_ms: times[Math.floor(times.length / 10)],
    p90_ms: times[Math.floor((times.length * 9) / 10)],
    warmup_ms: warmupMs,
    peak_bytes: peak,
    loss: value,
    tflops: stepFlops(shape) / (median(times) * 1e-3) / 1e12,
  };
}

const machine = fs.existsSync(path.join(out, 'machine.json')) ? JSON.parse(fs.readFileSync(path.join(out, 'machine.json'), 'utf8')) : {};
const startedAt = new Date().toISOString();
const pkg = {};
const ROWS = [
  ...GRID.map((shape) => ({ shape, variants: VARIANTS, warmup: WARMUP, steps: STEPS })),
  ...GRID_3D.map((shape) => ({ shape, variants: VARIANTS_3D, warmup: WARMUP_3D, steps: STEPS_3D })),
];
const net3d = network3d();
for (const { shape, variants, warmup, steps } of ROWS) {
  const key = shape.join('x');
  pkg[key] = {};
  for (const variant of variants) {
    if (variant.cudaOnly && !CUDA) continue;
    try {
      pkg[key][variant.name] = { options: variant.options, host: Boolean(variant.host), ...measure(shape, variant, warmup, steps) };
    } catch (error) {
      pkg[key][variant.name] = { options: variant.options, error: `${error.code ?? ''} ${error.message}`.trim() };
    }
    const r = pkg[key][variant.name];
    console.log(`package ${key} ${variant.name}: ${r.error ?? `${r.median_ms.toFixed(2)} ms`}`);
  }
}

// PyTorch, in the same run, after the package (one process: importing torch takes seconds).
const torchFile = path.join(out, 'torch.json');
let torch = null;
try {
  execFileSync(PYTHON, [path.join(here, 'gpu_torch.py'), '--mode', CUDA ? 'gpu' : 'cpu', '--grid', GRID.map((s) => s.join('x')).join(','),
    '--warmup', String(WARMUP), '--steps', String(STEPS), '--out', torchFile, '--compile-budget', process.env.PL_COMPILE_BUDGET ?? (CUDA ? '90' : '0'),
    '--grid3d', GRID_3D.map((s) => s.join('x')).join(','), '--arch3d', net3d.arch.join(','), '--layers3d', net3d.layers.join(','),
    '--warmup3d', String(WARMUP_3D), '--steps3d', String(STEPS_3D)],
  { stdio: 'inherit', timeout: 280_000 });
  torch = JSON.parse(fs.readFileSync(torchFile, 'utf8'));
} catch (error) {
  console.log(`PyTorch side failed: ${error.message}`);
  // It writes its JSON after every row: keep what it measured before it failed or ran out of time.
  if (fs.existsSync(torchFile)) {
    torch = { ...JSON.parse(fs.readFileSync(torchFile, 'utf8')), failed: error.message.split('\n')[0] };
    console.log(`PyTorch side: keeping the ${Object.keys(torch.shapes).length} rows it measured`);
  }
}

const summary = {};
for (const { shape } of ROWS) {
  const key = shape.join('x');
  const rows = Object.entries(pkg[key]).filter(([, r]) => r.median_ms !== undefined && !r.host);
  if (!rows.length) {
    summary[key] = { error: Object.values(pkg[key]).map((r) => r.error).find(Boolean) ?? 'no package variant ran' };
    continue;
  }
  const [bestName, best] = rows.reduce((a, b) => (b[1].median_ms < a[1].median_ms ? b : a));
  const bf16 = rows.filter(([name]) => name.startsWith('bf16')).reduce((a, b) => (!a || b[1].median_ms < a[1].median_ms ? b : a), undefined);
  const t = torch?.shapes?.[key];
  const def = pkg[key].default;
  const hostDefault = pkg[key]['default, host arrays'];
  summary[key] = {
    best: bestName,
    best_ms: best.median_ms,
    default_ms: def?.median_ms ?? null,
    torch_typical_ms: t?.typical?.median_ms ?? null,
    torch_expert_ms: t?.expert?.median_ms ?? null,
    torch_expert_which: t?.expert?.which ?? null,
    vs_typical: t ? best.median_ms / t.typical.median_ms : null,
    vs_expert: t ? best.median_ms / t.expert.median_ms : null,
    default_vs_typical: t && def?.median_ms ? def.median_ms / t.typical.median_ms : null,
    bf16_share_of_matmul_peak: bf16 && torch?.bf16_matmul ? bf16[1].tflops / torch.bf16_matmul.tflops : null,
    peak_bytes: best.peak_bytes,
    torch_typical_peak_bytes: t?.typical?.peak_bytes ?? null,
    torch_expert_peak_bytes: t?.expert?.peak_bytes ?? null,
    boundary_share: hostDefault?.median_ms && def?.median_ms ? (hostDefault.median_ms - def.median_ms) / hostDefault.median_ms : null,
  };
}

const parityFile = path.join(out, 'parity.json');
const result = {
  kind: CUDA ? 'gpu' : 'cpu-dry-run',
  startedAt,
  machine,
  method: {
    order: 'every package variant, then PyTorch (typical, expert eager, expert compiled), in one suite run',
    warmup: WARMUP,
    steps: STEPS,
    volumes: {
      shapes: GRID_3D.map((s) => s.join('x')),
      warmup: WARMUP_3D,
      steps: STEPS_3D,
      network: net3d,
      variants: VARIANTS_3D.filter((v) => CUDA || !v.cudaOnly).map((v) => v.name),
      torch: 'typical and expert eager (bfloat16 autocast, channels_last_3d, cudnn.benchmark); no torch.compile',
    },
    inputs: `a pool of ${POOL} distinct uniform [-1, 1) input pairs per shape and variant, cycled; PyTorch draws torch.randn per step`,
    timing: 'package: wall clock around a synchronous step (it returns after the result reached the host); PyTorch: CUDA events',
    flops: '3 x the forward FLOPs of the convs up to the deepest tap: the 16 of vgg19 up to relu5_4 (2*Cin*Cout*9*H*W*N each); for volumes those of the default 3-D network (2*Cin*Cout*27*D*H*W*N each)',
    peak: 'caching-allocator peak above the resident model and inputs',
  },
  package: pkg,
  torch,
  summary,
  parity: fs.existsSync(parityFile) ? JSON.parse(fs.readFileSync(parityFile, 'utf8')) : null,
};
fs.writeFileSync(path.join(out, 'bench.json'), JSON.stringify(result, null, 2) + '\n');
const card = (machine.card ?? (CUDA ? 'gpu' : 'cpu')).toLowerCase().replace(/^nvidia\s+/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
const recordName = `${CUDA ? 'gpu' : 'dry-run'}-${card}-${startedAt.slice(0, 10)}.json`;
fs.writeFileSync(path.join(out, recordName), JSON.stringify(result, null, 2) + '\n');

const f = (x, d = 1) => (x === null || x === undefined ? '—' : x.toFixed(d));
const pct = (x) => (x === null || x === undefined ? '—' : `${(x * 100).toFixed(0)}%`);
const mib = (x) => (x === null || x === undefined ? '—' : (x / 2 ** 20).toFixed(0));
const lines = [
  `${CUDA ? machine.card ?? 'GPU' : 'CPU dry run (tiny shapes)'}; torch ${torch?.torch ?? '—'}; bf16 matmul ${f(torch?.bf16_matmul?.tflops)} TFLOP/s; commit ${(machine.commit ?? '').slice(0, 12)}`,
  '| shape | package ms (best variant) | default ms | torch typical ms | torch expert ms | vs typical | vs expert | bf16 % of matmul | peak MiB (torch typ.) | host boundary |',
  '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...Object.entries(summary).map(([key, s]) => s.error ? `| ${key} | failed: ${s.error} | | | | | | | | |` :
    `| ${key} | ${f(s.best_ms, 2)} (${s.best}) | ${f(s.default_ms, 2)} | ${f(s.torch_typical_ms, 2)} | ${f(s.torch_expert_ms, 2)} ${s.torch_expert_which ?? ''} | ${f(s.vs_typical, 2)} | ${f(s.vs_expert, 2)} | ${pct(s.bf16_share_of_matmul_peak)} | ${mib(s.peak_bytes)} (${mib(s.torch_typical_peak_bytes)}) | ${pct(s.boundary_share)} |`),
];
lines.push(`volumes (${GRID_3D.map((s) => s.join('x')).join(', ')}): the default 3-D arch ${JSON.stringify(net3d.arch)}, taps ${net3d.layers.join(', ')}; ${STEPS_3D} steps after ${WARMUP_3D} warm-up; PyTorch without torch.compile`);
if (result.parity) {
  const worst = {};
  for (const p of result.parity) worst[p.bound] = Math.max(worst[p.bound] ?? 0, p.lossRelErr, p.gradRelErr);
  lines.push(`parity (worst relative error per bound): ${Object.entries(worst).map(([b, e]) => `${e.toExponential(1)} <= ${b}`).join(', ')}`);
}
if (torch?.failed) lines.push(`PyTorch side failed (${torch.failed}); the rows it measured before are kept`);
const failed = Object.entries(pkg).flatMap(([key, variants]) => Object.entries(variants).filter(([, r]) => r.error).map(([name, r]) => `${key} ${name}: ${r.error}`));
if (failed.length) lines.push(`package variants that failed: ${failed.join('; ')}`);
lines.push(`full results: ${path.join(out, 'bench.json')} and ${recordName}`);
fs.writeFileSync(path.join(out, 'table.txt'), lines.join('\n') + '\n');
console.log(lines.join('\n'));
// No PyTorch figures, or a shape where no package variant ran: the bench failed.
if (!torch || torch.failed || Object.values(summary).some((r) => r.error)) process.exit(1);
