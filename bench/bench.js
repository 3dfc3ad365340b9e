#!/usr/bin/env node
// CPU benchmark of generic-perceptual-loss against PyTorch, on the same machine, in the same run.
//
//   node bench/bench.js [--threads N] [--steps N] [--quick] ...   (--help lists every option)
//
// The PyTorch side (bench/bench_torch.py) runs as ONE persistent child process that takes
// JSON-line commands on stdin, so its import cost is paid once. Package and torch steps are
// interleaved (package host, package Tensor, torch, package host, ...) so that drifts of the
// machine (other load, clocks, heat) hit both sides alike. Each side times only its own call,
// with its own clock; inputs are made outside the timed region, and the pipe is outside it too.
// Memory is measured in fresh processes (see measureMemory). This machine may be shared: the CPU
// time other processes take is measured around each path, which is timed again when they took too
// much (see timePathChecked), and the tables say how much they took.
//
// Progress goes to stderr; the tables go to stdout; the figures go to bench/results/cpu-DATE.json.
'use strict';

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.resolve(__dirname, '..');
const PYTHON = process.env.BENCH_PYTHON || '/usr/bin/python3'; // the Debian torch; not PATH's python3
const TORCH_SCRIPT = path.join(__dirname, 'bench_torch.py');

const ALL_SHAPES = ['1x3x32x32', '2x3x64x64', '4x3x64x64', '2x1x128x128', '2x19x64x64'];
const DEFAULT_SHAPE = '2x3x64x64'; // the out-of-the-box comparison
const MEMORY_SHAPES = ['2x3x64x64', '4x3x64x64'];
// Paths; `passes` is the step's FLOPs in units of one forward pass over one input (see convLayers).
const PATHS = [
  { name: 'lossAndGrad', passes: 3, what: 'lossAndGrad(pred, target)' },
  { name: 'prepared', passes: 2, what: 'lossAndGrad(pred, prepareTarget(target))' },
  { name: 'loss', passes: 2, what: 'loss(pred, target)' },
  { name: 'features', passes: 1, what: 'features(pred)' },
];
const INPUTS = ['host', 'tensor'];
// glibc keeps freed blocks once its dynamic mmap threshold has grown, which hides a step's peak
// behind memory retained from the warm-up step. A fixed threshold makes every block >= 64 KiB an
// mmap of its own, unmapped on free, so RSS tracks live memory (the "clean" figure).
const CLEAN_MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_TRIM_THRESHOLD_: '131072' };

// ---------------------------------------------------------------------------------------------
// Command line

function usage() {
  return `usage: node bench/bench.js [options]
  --threads N     threads on both sides (default: this machine's cores, ${os.availableParallelism()})
  --steps N       timed steps per path and side; the median is reported (default 9)
  --warmup N      untimed steps first (default 3)
  --quick         smoke test: 3 timed steps, 1 warm-up, only ${ALL_SHAPES.slice(0, 2).join(', ')}
  --shapes LIST   comma-separated NxCxHxW shapes instead of the default grid
  --fma-units N   FMA units per core for the peak (default 2, an assumption for x86)
  --settle-ms N   idle pause before each timed step, so the other side's OpenMP threads stop
                  spinning first (default 20; 0 to disable)
  --retries N     time a path again (up to N times, default 2), after waiting up to 45 s for the
                  machine to calm down, when other processes used more than --max-load (default
                  0.1 = 10%) of the CPUs while it ran; at most --retry-budget S seconds (default
                  240) go to retries in a run, so it ends in bounded time
  --no-memory     skip the memory measurement
  --out FILE      JSON output (default bench/results/cpu-<YYYY-MM-DD>[-quick].json)`;
}

function parseArgs(argv) {
  const opts = { threads: os.availableParallelism(), steps: 9, warmup: 3, quick: false, shapes: null, fmaUnits: 2, memory: true, out: null, settleMs: 20, retries: 2, maxLoad: 0.1, retryBudget: 240 };
  const positiveInt = (flag, v) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 1) fail(`${flag} needs a positive integer; got ${JSON.stringify(v)}`);
    return n;
  };
  const explicit = new Set();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--threads': opts.threads = positiveInt(arg, value()); break;
      case '--steps': opts.steps = positiveInt(arg, value()); explicit.add('steps'); break;
      case '--warmup': opts.warmup = positiveInt(arg, value()); explicit.add('warmup'); break;
      case '--fma-units': opts.fmaUnits = positiveInt(arg, value()); break;
      case '--retries': opts.retries = Number(value()); if (!(Number.isSafeInteger(opts.retries) && opts.retries >= 0)) fail('--retries needs an integer >= 0'); break;
      case '--retry-budget': opts.retryBudget = Number(value()); if (!(opts.retryBudget >= 0)) fail('--retry-budget needs seconds >= 0'); break;
      case '--max-load': opts.maxLoad = Number(value()); if (!(opts.maxLoad >= 0 && opts.maxLoad <= 1)) fail('--max-load needs a share from 0 to 1'); break;
      case '--settle-ms': opts.settleMs = Number(value()); if (!(opts.settleMs >= 0)) fail('--settle-ms needs a number >= 0'); break;
      case '--quick': opts.quick = true; break;
      case '--no-memory': opts.memory = false; break;
      case '--out': opts.out = path.resolve(value()); break;
      case '--shapes': opts.shapes = value().split(',').map((s) => s.trim()).filter(Boolean); break;
      case '-h': case '--help': console.log(usage()); process.exit(0); // eslint-disable-line no-fallthrough
      default: fail(`unknown argument ${arg}\n${usage()}`);
    }
  }
  if (opts.quick) {
    if (!explicit.has('steps')) opts.steps = 3;
    if (!explicit.has('warmup')) opts.warmup = 1;
    opts.shapes ??= ALL_SHAPES.slice(0, 2);
  }
  opts.shapes = (opts.shapes ?? ALL_SHAPES).map(parseShape);
  return opts;
}

function parseShape(s) {
  const dims = String(s).split('x').map(Number);
  if (dims.length !== 4 || !dims.every((d) => Number.isSafeInteger(d) && d >= 1)) fail(`bad shape ${JSON.stringify(s)}; want NxCxHxW`);
  return dims;
}

const shapeName = (shape) => shape.join('x');

function fail(message) {
  console.error(`bench: ${message}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// The package

function loadPackage() {
  try {
    return require('../dist/index.js');
  } catch (e) {
    console.error(
      'bench: cannot load ../dist/index.js. Build first: npx tsc -p tsconfig.json && node install/build-native.js\n' + (e && e.message),
    );
    process.exit(1);
  }
}

// The package's seeded generator (scripts/random.js): uniform [0, 1) numbers for the host inputs.
const { mulberry32: makeRng } = require('../scripts/random.js');

function randomHost(shape, rng) {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng();
  return { data, shape };
}

const hrms = (t0, t1) => Number(t1 - t0) / 1e6;

/**
 * One package step of `pathName` on fresh random inputs; returns its time in ms. Inputs (host
 * arrays, and for `input === 'tensor'` the resident Tensors made by Tensor.from) are created
 * before the clock starts; resident results are disposed after it stops.
 */
function packageStep(pkg, loss, pathName, input, shape, rng, prepared) {
  const pred = randomHost(shape, rng);
  const target = pathName === 'lossAndGrad' || pathName === 'loss' ? randomHost(shape, rng) : null;
  const resident = [];
  const operand = (host) => {
    if (!host || input === 'host') return host;
    const t = pkg.Tensor.from(host.data, host.shape, { device: 'cpu' });
    resident.push(t);
    return t;
  };
  const p = operand(pred);
  const t = operand(target);

  let out;
  const t0 = process.hrtime.bigint();
  switch (pathName) {
    case 'lossAndGrad': out = loss.lossAndGrad(p, t); break;
    case 'prepared': out = loss.lossAndGrad(p, prepared); break;
    case 'loss': out = loss.loss(p, t); break;
    case 'features': out = loss.features(p); break;
    default: throw new Error(`unknown path ${pathName}`);
  }
  const t1 = process.hrtime.bigint();

  if (input === 'tensor') {
    if (pathName === 'features') for (const f of out) f.data.dispose();
    else if (out && out.grad) out.grad.dispose();
  }
  for (const r of resident) r.dispose();
  return hrms(t0, t1);
}

// ---------------------------------------------------------------------------------------------
// The PyTorch child

class TorchChild {
  constructor() {
    this.stderrTail = '';
    this.pending = null; // { resolve, reject, cmd, timer }
    this.exited = null;
    this.proc = spawn(PYTHON, [TORCH_SCRIPT, 'serve'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr.on('data', (d) => {
      this.stderrTail = (this.stderrTail + d).slice(-4000);
    });
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => this.#onLine(line));
    // A dead child must end the run with a clear error, not a hang.
    this.proc.on('error', (err) => this.#die(`could not run ${PYTHON} ${TORCH_SCRIPT}: ${err.message}`));
    this.proc.on('exit', (code, signal) => this.#die(`the PyTorch child (pid ${this.proc.pid}) exited (${signal ? `signal ${signal}` : `code ${code}`})`));
    this.proc.stdin.on('error', (err) => this.#die(`cannot write to the PyTorch child: ${err.message}`));
  }

  #onLine(line) {
    const p = this.pending;
    if (!p) return; // nothing asked for: ignore (the protocol never sends unasked lines)
    this.pending = null;
    clearTimeout(p.timer);
    let reply;
    try {
      reply = JSON.parse(line);
    } catch {
      p.reject(new Error(`the PyTorch child answered ${p.cmd} with a line that is not JSON: ${line.slice(0, 300)}`));
      return;
    }
    if (!reply.ok) p.reject(new Error(`the PyTorch side failed on ${p.cmd}: ${reply.error}\n${reply.traceback || ''}`));
    else p.resolve(reply);
  }

  #die(why) {
    if (this.exited) return;
    this.exited = why;
    const p = this.pending;
    this.pending = null;
    if (p) {
      clearTimeout(p.timer);
      p.reject(new Error(`${why} while running ${p.cmd}.\nIts stderr ended with:\n${this.stderrTail || '(nothing)'}`));
    }
  }

  request(req, timeoutMs = 300_000) {
    const cmd = JSON.stringify(req);
    if (this.exited) return Promise.reject(new Error(`${this.exited}; cannot run ${cmd}.\nIts stderr ended with:\n${this.stderrTail || '(nothing)'}`));
    if (this.pending) return Promise.reject(new Error(`bench bug: ${cmd} sent while ${this.pending.cmd} is in flight`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = null;
        this.proc.kill('SIGKILL');
        reject(new Error(`the PyTorch child did not answer ${cmd} within ${timeoutMs / 1000} s; killed it`));
      }, timeoutMs);
      this.pending = { resolve, reject, cmd, timer };
      this.proc.stdin.write(cmd + '\n');
    });
  }

  async close() {
    if (this.exited) return;
    const gone = new Promise((resolve) => this.proc.once('exit', resolve));
    try {
      await this.request({ cmd: 'quit' }, 30_000);
    } catch {
      /* it is going anyway */
    }
    this.proc.stdin.end();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  }

  kill() {
    if (!this.exited) this.proc.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------
// Machine, peak and FLOPs

function readText(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function lscpu() {
  try {
    const text = execFileSync('lscpu', { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
    return Object.fromEntries(
      text.split('\n').filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')).trim(), l.slice(l.indexOf(':') + 1).trim()]),
    );
  } catch {
    return {};
  }
}

// In a VM /proc/cpuinfo's "cpu MHz" is the nominal (TSC) rate and no max MHz is exposed, while the
// cores boost well above it; a peak from that clock is too low and the "share of peak" passes
// 100%. So, where a C compiler is at hand, the clock is also measured: a chain of dependent
// integer adds retires one add per cycle on any x86-64 core, so adds per second = cycles per
// second. It runs on one core, best of 5 runs, like the max MHz that lscpu would give (the all-core
// clock can be lower; the peak stays an upper bound), and a single copy is less disturbed by other
// work on a shared machine than one copy per core.
const CLOCK_C = `
#include <stdio.h>
#include <time.h>
/* register + register: some cores fold chains of add-immediate at rename, not of these */
#define A "add %1,%0\\n\\t"
int main(void) {
  struct timespec a, b;
  unsigned long x = 0, one = 1;
  const long n = 50000000; /* x 20 adds: about 0.25 s at 4 GHz */
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++) __asm__ volatile(A A A A A A A A A A A A A A A A A A A A : "+r"(x) : "r"(one));
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
  printf("%.4f %lu\\n", (double)n * 20 / s / 1e9, x);
  return 0;
}
`;

async function measureClockGHz() {
  if (process.arch !== 'x64') return { ghz: null, note: 'not measured (the probe is x86-64 assembly)' };
  const { execFile } = require('node:child_process');
  const run = (file) =>
    new Promise((resolve, reject) =>
      execFile(file, { timeout: 20_000 }, (err, stdout) => (err ? reject(err) : resolve(Number(stdout.split(' ')[0])))),
    );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-clock-'));
  try {
    const src = path.join(dir, 'clock.c');
    const exe = path.join(dir, 'clock');
    fs.writeFileSync(src, CLOCK_C);
    execFileSync(process.env.CC || 'cc', ['-O2', '-o', exe, src], { stdio: 'ignore' });
    // Best of 5: a run that shared its core with another process reads low.
    let best = 0;
    for (let round = 0; round < 5; round++) best = Math.max(best, await run(exe));
    if (!(best > 0.3 && best < 7)) return { ghz: null, note: `not used: the probe read an implausible ${best} GHz` };
    return { ghz: best, note: 'measured: a chain of dependent adds on one core, best of 5' };
  } catch (e) {
    return { ghz: null, note: `not measured (no C compiler, or the probe failed: ${String(e.message).split('\n')[0]})` };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** CPU model, cores, clock, vector width and the fp32 FMA peak, each with where it came from. */
async function machineInfo(fmaUnits) {
  const ls = lscpu();
  const cpuinfo = readText('/proc/cpuinfo');
  const field = (name) => {
    const m = cpuinfo.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm'));
    return m ? m[1].trim() : undefined;
  };
  const flags = new Set((ls.Flags || field('flags') || '').split(/\s+/).filter(Boolean));
  const logical = os.availableParallelism();

  // Physical cores (SMT siblings share the FMA units) from lscpu, else the logical count.
  let cores = logical;
  let coresSource = 'os.availableParallelism() (lscpu gave no topology)';
  const perSocket = Number(ls['Core(s) per socket']);
  const sockets = Number(ls['Socket(s)']);
  if (perSocket > 0 && sockets > 0) {
    cores = Math.min(perSocket * sockets, logical);
    coresSource = `lscpu physical cores: ${perSocket} per socket x ${sockets} socket(s), ${ls['Thread(s) per core'] || '?'} thread(s) per core; os.availableParallelism() = ${logical}`;
  }

  // Clock: the max the CPU reports, else /proc/cpuinfo's "cpu MHz".
  let mhz = Number(ls['CPU max MHz']);
  let mhzSource = 'lscpu "CPU max MHz"';
  if (!(mhz > 0)) {
    const sysMax = Number(readText('/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq')) / 1000;
    if (sysMax > 0) {
      mhz = sysMax;
      mhzSource = 'cpufreq cpuinfo_max_freq';
    } else {
      const all = [...cpuinfo.matchAll(/^cpu MHz\s*:\s*([\d.]+)/gm)].map((m) => Number(m[1]));
      mhz = all.length ? Math.max(...all) : NaN;
      mhzSource = '/proc/cpuinfo "cpu MHz"; no max MHz is exposed';
    }
  }
  const measured = await measureClockGHz();

  let lanes = 4;
  let flagsUsed = ['sse'];
  if (flags.has('avx512f')) [lanes, flagsUsed] = [16, ['avx512f']];
  else if (flags.has('avx2') && flags.has('fma')) [lanes, flagsUsed] = [8, ['avx2', 'fma']];
  else if (flags.has('avx')) [lanes, flagsUsed] = [8, ['avx']];
  const fma = flags.has('fma');
  const perCycle = lanes * 2 * fmaUnits; // fp32 flops per core per cycle
  const peakAt = (ghz) => cores * ghz * perCycle;
  const reportedGHz = mhz / 1000;
  const peakReported = peakAt(reportedGHz);
  const peakMeasured = measured.ghz ? peakAt(measured.ghz) : null;
  // The peak is an upper bound: a measured clock above the reported one shows the reported one is
  // not the max, so the higher of the two is used for the "share of peak" columns.
  const useMeasured = peakMeasured !== null && peakMeasured > peakReported;
  const peak = useMeasured ? peakMeasured : peakReported;
  const base =
    `${cores} cores [${coresSource}] x GHz x ${lanes} fp32 lanes [${flagsUsed.join('+')}] x 2 flops per FMA ` +
    `x ${fmaUnits} FMA units per core [assumed${fmaUnits === 2 ? ': 2 per core on x86' : ' (--fma-units)'}${fma ? '' : '; NO fma flag'}] ` +
    `= ${perCycle * cores} flops/cycle`;
  const derivation = [
    base,
    `at the reported clock ${reportedGHz.toFixed(3)} GHz [${mhzSource}]: ${peakReported.toFixed(1)} GFLOP/s${useMeasured ? '' : '  <- used'}`,
    measured.ghz
      ? `at the measured clock ${measured.ghz.toFixed(3)} GHz [${measured.note}]: ${peakMeasured.toFixed(1)} GFLOP/s${useMeasured ? '  <- used (higher)' : ''}`
      : `clock ${measured.note}`,
  ];
  return {
    cpuModel: ls['Model name'] || field('model name') || 'unknown',
    vendor: ls['Vendor ID'] || field('vendor_id'),
    family: ls['CPU family'] || field('cpu family'),
    model: ls.Model || field('model'),
    hypervisor: ls['Hypervisor vendor'] || null,
    logicalCpus: logical,
    physicalCores: perSocket > 0 && sockets > 0 ? perSocket * sockets : null,
    coresForPeak: cores,
    coresSource,
    reportedMHz: mhz,
    reportedMHzSource: mhzSource,
    measuredGHz: measured.ghz,
    measuredClockNote: measured.note,
    flagsUsed,
    hasFma: fma,
    lanes,
    fmaUnits,
    fmaUnitsAssumed: true,
    flopsPerCycle: perCycle * cores,
    peakGflopsReportedClock: peakReported,
    peakGflopsMeasuredClock: peakMeasured,
    peakGflops: peak,
    peakClock: useMeasured ? 'measured' : 'reported',
    peakDerivation: derivation,
  };
}

/**
 * The conv FLOPs of one forward pass, derived from the network the package built: its stateDict
 * gives every kept conv's module index k and [Cout, Cin, 3, 3]. In a torchvision-style Sequential
 * a conv+ReLU takes two indices and a pool one, so the pools between two convs are the gap minus
 * 2; each pool halves H and W (floor). A 3x3, stride 1, pad 1 conv costs 2*Cin*Cout*9*H*W*N.
 */
function convLayers(loss, shape) {
  const [n, , h0, w0] = shape;
  const convs = Object.entries(loss.stateDict())
    .filter(([name]) => name.endsWith('.weight'))
    .map(([name, v]) => ({ k: Number(name.split('.')[1]), cout: v.shape[0], cin: v.shape[1] }))
    .sort((a, b) => a.k - b.k);
  let h = h0;
  let w = w0;
  let prevK = null;
  return convs.map((c) => {
    const pools = prevK === null ? c.k / 2 : c.k - prevK - 2; // before the first conv: none (k = 0)
    for (let i = 0; i < pools; i++) [h, w] = [Math.floor(h / 2), Math.floor(w / 2)];
    prevK = c.k;
    return { ...c, h, w, flops: 2 * c.cin * c.cout * 9 * h * w * n };
  });
}

const FLOP_COUNTING =
  'Only the 3x3 convs kept in the network (cut after relu5_4) are counted: 2*Cin*Cout*9*H*W*N per conv ' +
  'per forward pass (F = the sum over kept convs). Backward with respect to the input of a conv costs the ' +
  'same as its forward, and it is counted for every kept conv, the first included (d loss / d pred needs it); ' +
  'no weight gradient is computed on either side. lossAndGrad = 3F (forward pred, forward target, backward pred); ' +
  'prepared = 2F (forward pred, backward pred); loss = 2F (two forwards); features = 1F. ' +
  'ReLU, pooling, bias, loss-term and copy flops are ignored.';

// ---------------------------------------------------------------------------------------------
// Competing load: CPU time the whole machine used during the timing, minus this run's own (this
// process and the PyTorch child). On a shared machine this says whether the figures can be trusted.

let clockTicks;
function clkTck() {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

function cpuSnapshot(childPid) {
  const [user, nice, system, , , irq, softirq, steal] = readText('/proc/stat').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const procTicks = (pid) => {
    const st = readText(`/proc/${pid}/stat`);
    const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return st ? Number(rest[11]) + Number(rest[12]) : NaN; // utime + stime (fields 14 and 15)
  };
  return {
    at: process.hrtime.bigint(),
    busy: user + nice + system + irq + softirq,
    steal: steal || 0,
    own: procTicks('self') + procTicks(childPid),
  };
}

function competingLoad(a, b) {
  const wall = hrms(a.at, b.at) / 1000;
  const capacity = wall * os.availableParallelism() * clkTck();
  return {
    seconds: wall,
    otherProcessesShare: (b.busy - a.busy - (b.own - a.own)) / capacity,
    stealShare: (b.steal - a.steal) / capacity,
    loadAverageAtStart: a.loadavg,
  };
}

// ---------------------------------------------------------------------------------------------
// Statistics and printing

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function summarize(samples, gflop, peak) {
  const med = median(samples);
  const gflops = gflop / (med / 1000);
  return { medianMs: med, minMs: Math.min(...samples), maxMs: Math.max(...samples), samplesMs: samples, gflops, peakShare: gflops / peak };
}

function table(headers, rows, align) {
  const cells = [headers, ...rows].map((r) => r.map(String));
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => ((align && align[i] === 'l') ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

const f1 = (x) => x.toFixed(1);
const f2 = (x) => x.toFixed(2);
const pct = (x) => `${(100 * x).toFixed(1)}%`;

function progress(msg) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// Timing

// Both sides run libtorch on GNU OpenMP, whose idle worker threads spin (GOMP_SPINCOUNT, 300k
// pause loops, a few ms) before they sleep. Without a pause, the side that just finished would
// still be burning the cores while the other side's step starts.
const settle = (ms) => (ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve());

/**
 * Runs every variant of one path at one shape, interleaved step by step: package host, package
 * Tensor, torch, package host, ... `warmup` rounds are thrown away, `steps` rounds are kept.
 */
async function timePath(ctx, loss, pathName, shape, rounds) {
  const samples = { host: [], tensor: [], torch: [] };
  let prepared = null;
  if (pathName === 'prepared') {
    // Prepared once, outside the timing, on both sides.
    prepared = loss.prepareTarget(randomHost(shape, ctx.rng));
    await ctx.torch.request({ cmd: 'prepare', shape });
  }
  for (let i = 0; i < rounds.warmup + rounds.steps; i++) {
    const keep = i >= rounds.warmup;
    for (const input of INPUTS) {
      await settle(ctx.settleMs);
      const ms = packageStep(ctx.pkg, loss, pathName, input, shape, ctx.rng, prepared);
      if (keep) samples[input].push(ms);
    }
    await settle(ctx.settleMs);
    const reply = await ctx.torch.request({ cmd: 'step', path: pathName, shape });
    if (keep) samples.torch.push(reply.ms);
  }
  if (prepared) prepared.dispose();
  return samples;
}

/**
 * timePath, with a check on the machine: on a shared machine a burst of other work can spoil a
 * whole path (every interleaved step of it), which no median repairs. So the CPU time used by
 * other processes is measured around the path, and the path is timed again when it passes
 * ctx.maxLoad, up to ctx.retries times. The last attempt is kept either way, with its load.
 */
async function timePathChecked(ctx, loss, pathName, shape, rounds) {
  for (let attempt = 1; ; attempt++) {
    if (attempt > 1) {
      const t0 = Date.now();
      await waitForQuiet(ctx, 45_000);
      ctx.retryBudgetMs -= Date.now() - t0;
    }
    const before = cpuSnapshot(ctx.torch.proc.pid);
    const samples = await timePath(ctx, loss, pathName, shape, rounds);
    const load = competingLoad(before, cpuSnapshot(ctx.torch.proc.pid));
    const spent = hrms(before.at, process.hrtime.bigint());
    if (attempt > 1) ctx.retryBudgetMs -= spent;
    if (load.otherProcessesShare <= ctx.maxLoad || attempt > ctx.retries) return { samples, load, attempts: attempt };
    // A retry costs about as much as this attempt, plus the wait.
    if (ctx.retryBudgetMs < spent) {
      progress(`${shapeName(shape)} ${pathName}: other processes used ${pct(load.otherProcessesShare)} of the CPUs meanwhile; retry budget spent, keeping it`);
      return { samples, load, attempts: attempt };
    }
    progress(`${shapeName(shape)} ${pathName}: other processes used ${pct(load.otherProcessesShare)} of the CPUs meanwhile; timing it again`);
  }
}

/** Waits (up to maxMs) until other processes leave the CPUs alone for 2 s; says if they never did. */
async function waitForQuiet(ctx, maxMs) {
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) {
    const before = cpuSnapshot(ctx.torch.proc.pid);
    await settle(2000);
    if (competingLoad(before, cpuSnapshot(ctx.torch.proc.pid)).otherProcessesShare <= ctx.maxLoad / 2) return;
  }
  progress(`the machine stayed busy for ${maxMs / 1000} s; timing again anyway`);
}

/** Both sides must compute the same loss and gradient on the same inputs, or the timing is moot. */
async function checkSameLoss(ctx) {
  const shape = [1, 3, 32, 32];
  const pred = randomHost(shape, ctx.rng);
  const target = randomHost(shape, ctx.rng);
  const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
  const ref = await ctx.torch.request({ cmd: 'check', shape, pred: b64(pred.data), target: b64(target.data) });
  const loss = new ctx.pkg.PerceptualLoss({ inChannels: 3, device: 'cpu' });
  const got = loss.lossAndGrad(pred, target);
  loss.dispose();
  const gradSumSq = got.grad.reduce((a, g) => a + g * g, 0);
  const rel = (a, b) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
  if (rel(got.loss, ref.loss) > 1e-3 || rel(gradSumSq, ref.gradSumSq) > 1e-3) {
    throw new Error(
      `the package and the PyTorch side disagree on ${shapeName(shape)}: loss ${got.loss} vs ${ref.loss}, ` +
        `sum of squared gradient ${gradSumSq} vs ${ref.gradSumSq}; they are not the same computation`,
    );
  }
  progress(`check: both sides agree on ${shapeName(shape)} (loss ${got.loss.toPrecision(6)} vs ${ref.loss.toPrecision(6)})`);
}

// ---------------------------------------------------------------------------------------------
// Memory (fresh processes)

function readStatusKiB(field) {
  const m = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s*(\\d+)`, 'm'));
  if (!m) throw new Error(`${field} not in /proc/self/status`);
  return Number(m[1]);
}

function resetHwm() {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5'); // Linux >= 4.0: VmHWM := current RSS
    return true;
  } catch {
    return false;
  }
}

/** `--memory-child`: the package half of measureMemory, in this fresh process. Prints one JSON line. */
function memoryChild(argv) {
  const shape = parseShape(argv[argv.indexOf('--shape') + 1]);
  const threads = Number(argv[argv.indexOf('--threads') + 1]);
  const pkg = loadPackage();
  pkg.setNumThreads(threads);
  const loss = new pkg.PerceptualLoss({ inChannels: shape[1], device: 'cpu' });
  const rng = makeRng(7);
  loss.lossAndGrad(randomHost(shape, rng), randomHost(shape, rng)); // warm-up: one-time costs
  const pred = randomHost(shape, rng);
  const target = randomHost(shape, rng);
  const rssBefore = readStatusKiB('VmRSS');
  const reset = resetHwm();
  const hwmAtReset = readStatusKiB('VmHWM');
  const { loss: value, grad } = loss.lossAndGrad(pred, target);
  const hwmAfter = readStatusKiB('VmHWM');
  const rssAfter = readStatusKiB('VmRSS');
  console.log(
    JSON.stringify({
      side: 'package', shape, threads: pkg.runtime().numThreads, rssBeforeKiB: rssBefore, hwmAtResetKiB: hwmAtReset,
      hwmAfterKiB: hwmAfter, rssAfterKiB: rssAfter, hwmReset: reset, loss: value, gradNumel: grad.length,
    }),
  );
}

function runChild(cmd, args, env) {
  let stdout;
  try {
    stdout = execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new Error(`memory child ${cmd} ${args.join(' ')} failed (${e.signal || `code ${e.status}`}):\n${String(e.stderr || e.message).slice(-3000)}`);
  }
  const last = stdout.trim().split('\n').pop();
  try {
    return JSON.parse(last);
  } catch {
    throw new Error(`memory child ${cmd} ${args.join(' ')} printed no JSON: ${stdout.slice(-500)}`);
  }
}

/**
 * Peak resident memory of one lossAndGrad step, each side in a FRESH process: load, build the
 * loss, one warm-up step, fresh inputs, VmRSS; then VmHWM is reset to the current RSS (clear_refs)
 * so that it holds this step's peak only, one step runs, and VmHWM is read. Reported: VmHWM after
 * minus VmRSS before. Run twice: with glibc's defaults (as shipped) and with a fixed mmap
 * threshold (CLEAN_MALLOC_ENV), where freed tensors go back to the OS and the figure is the step's
 * live working set rather than what the warm-up left cached in malloc's arenas.
 */
function measureMemory(shapes, threads) {
  const out = [];
  for (const s of shapes) {
    for (const [mode, env] of [['clean', CLEAN_MALLOC_ENV], ['glibcDefault', {}]]) {
      const pkgRes = runChild(process.execPath, [__filename, '--memory-child', '--shape', s, '--threads', String(threads)], env);
      const torchRes = runChild(PYTHON, [TORCH_SCRIPT, 'memory', '--shape', s, '--threads', String(threads)], env);
      for (const r of [pkgRes, torchRes]) {
        out.push({ ...r, shape: s, mode, env, stepPeakMiB: (r.hwmAfterKiB - r.rssBeforeKiB) / 1024, baselineMiB: r.rssBeforeKiB / 1024 });
      }
      progress(`memory ${s} (${mode}): package +${f1((pkgRes.hwmAfterKiB - pkgRes.rssBeforeKiB) / 1024)} MiB, torch +${f1((torchRes.hwmAfterKiB - torchRes.rssBeforeKiB) / 1024)} MiB`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Main

function sha256File(file) {
  return require('node:crypto').createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function gitInfo() {
  const git = (...args) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    return { commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain').length > 0 };
  } catch {
    return { commit: null, dirty: null };
  }
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv.includes('--memory-child')) return memoryChild(argv);
  const opts = parseArgs(argv);
  const started = Date.now();

  const pkg = loadPackage();
  // Read before setNumThreads: the package's out-of-the-box thread count.
  const pkgDefaultThreads = pkg.runtime().numThreads;
  // The binary as loaded (hashed now: it may be rebuilt on disk while this runs).
  const binaryFile = pkg.runtime().binary;
  const binaryAtStart = { sha256: sha256File(binaryFile), mtime: fs.statSync(binaryFile).mtime.toISOString() };
  const pkgVersion = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
  const machine = await machineInfo(opts.fmaUnits);
  const peak = machine.peakGflops;

  const torch = new TorchChild();
  const ctx = { pkg, torch, rng: makeRng(12345), settleMs: opts.settleMs, retries: opts.retries, maxLoad: opts.maxLoad, retryBudgetMs: opts.retryBudget * 1000 };
  // Whatever happens, never leave the child behind.
  process.on('exit', () => torch.kill());

  try {
    const hello = await torch.request({ cmd: 'hello' }, 120_000);
    const rt = pkg.runtime();
    progress(`package ${pkgVersion} on libtorch ${rt.libtorch.version}; torch ${hello.torch}; ${opts.threads} thread(s) each; ${opts.steps} timed + ${opts.warmup} warm-up steps`);

    await checkSameLoss(ctx);

    pkg.setNumThreads(opts.threads);
    const tr = await torch.request({ cmd: 'threads', n: opts.threads });
    if (tr.threads !== opts.threads) throw new Error(`torch.set_num_threads(${opts.threads}) left ${tr.threads} threads`);

    const losses = new Map(); // inChannels -> PerceptualLoss
    const lossFor = (c) => {
      if (!losses.has(c)) losses.set(c, new pkg.PerceptualLoss({ inChannels: c, device: 'cpu' }));
      return losses.get(c);
    };

    const rounds = { warmup: opts.warmup, steps: opts.steps };
    const cpuAtStart = { ...cpuSnapshot(torch.proc.pid), loadavg: readText('/proc/loadavg').split(' ').slice(0, 3).join(' ') };
    if (Number(cpuAtStart.loadavg.split(' ')[0]) > 0.5) {
      progress(`warning: load average ${cpuAtStart.loadavg} before the timing starts: other processes may compete for the CPUs`);
    }
    const results = [];
    for (const shape of opts.shapes) {
      const loss = lossFor(shape[1]);
      await torch.request({ cmd: 'setup', shape });
      const convs = convLayers(loss, shape);
      const forwardFlops = convs.reduce((a, c) => a + c.flops, 0);
      for (const p of PATHS) {
        const t0 = Date.now();
        const { samples, load: pathLoad, attempts } = await timePathChecked(ctx, loss, p.name, shape, rounds);
        const gflop = (p.passes * forwardFlops) / 1e9;
        const host = summarize(samples.host, gflop, peak);
        const tensor = summarize(samples.tensor, gflop, peak);
        const tch = summarize(samples.torch, gflop, peak);
        results.push({
          shape: shapeName(shape), path: p.name, call: p.what, gflop, forwardGflop: forwardFlops / 1e9,
          package: { host, tensor }, torch: tch,
          ratio: { host: host.medianMs / tch.medianMs, tensor: tensor.medianMs / tch.medianMs },
          boundaryShare: (host.medianMs - tensor.medianMs) / host.medianMs,
          otherLoad: pathLoad.otherProcessesShare, attempts,
        });
        progress(`${shapeName(shape)} ${p.name}: package ${f1(host.medianMs)} ms (Tensor ${f1(tensor.medianMs)}), torch ${f1(tch.medianMs)} ms  [${((Date.now() - t0) / 1000).toFixed(0)} s]`);
      }
    }

    // Out of the box: each side at the thread count it picks by itself, one step kind, one shape.
    const oobShape = parseShape(DEFAULT_SHAPE);
    pkg.setNumThreads(pkgDefaultThreads);
    await torch.request({ cmd: 'threads', n: hello.defaultThreads });
    await torch.request({ cmd: 'setup', shape: oobShape });
    const oobLoss = lossFor(oobShape[1]);
    const oobGflop = (3 * convLayers(oobLoss, oobShape).reduce((a, c) => a + c.flops, 0)) / 1e9;
    const { samples: oobSamples, load: oobLoad, attempts: oobAttempts } = await timePathChecked(ctx, oobLoss, 'lossAndGrad', oobShape, rounds);
    const outOfTheBox = {
      shape: DEFAULT_SHAPE, path: 'lossAndGrad', gflop: oobGflop,
      package: { threads: pkg.runtime().numThreads, host: summarize(oobSamples.host, oobGflop, peak), tensor: summarize(oobSamples.tensor, oobGflop, peak) },
      torch: { threads: hello.defaultThreads, ...summarize(oobSamples.torch, oobGflop, peak) },
      otherLoad: oobLoad.otherProcessesShare, attempts: oobAttempts,
    };
    progress(`out of the box ${DEFAULT_SHAPE}: package (${outOfTheBox.package.threads} threads) ${f1(outOfTheBox.package.host.medianMs)} ms, torch (${hello.defaultThreads}) ${f1(outOfTheBox.torch.medianMs)} ms`);

    const load = competingLoad(cpuAtStart, cpuSnapshot(torch.proc.pid));
    const binaryReplaced = sha256File(binaryFile) !== binaryAtStart.sha256;
    if (binaryReplaced) progress(`warning: ${binaryFile} was rebuilt on disk during the run; the figures are those of the binary loaded at the start`);
    await torch.close();

    const memShapes = MEMORY_SHAPES.filter((s) => opts.shapes.some((sh) => shapeName(sh) === s));
    const memory = opts.memory ? measureMemory(memShapes, opts.threads) : [];

    // ---- report
    const git = gitInfo();
    const date = new Date().toISOString().slice(0, 10);
    const lines = [];
    const say = (s = '') => lines.push(s);
    say(`generic-perceptual-loss ${pkgVersion} vs PyTorch ${hello.torch} — CPU benchmark, ${date}, commit ${git.commit ? git.commit.slice(0, 12) : '?'}${git.dirty ? ' (dirty tree)' : ''}`);
    if (binaryReplaced) say(`WARNING: ${binaryFile} was rebuilt on disk during the run; figures are for the binary loaded at the start (sha256 ${binaryAtStart.sha256.slice(0, 12)})`);
    say(`CPU: ${machine.cpuModel} (${machine.vendor}, family ${machine.family} model ${machine.model}${machine.hypervisor ? `, under ${machine.hypervisor}` : ''}); node ${process.version}; libtorch ${rt.libtorch.version} (${rt.libtorch.path})`);
    say(`threads: ${opts.threads} on both sides; median of ${opts.steps} timed steps after ${opts.warmup} warm-up; steps interleaved package host / package Tensor / torch, ${opts.settleMs} ms idle before each`);
    say(`peak fp32: ${machine.peakDerivation[0]}`);
    for (const l of machine.peakDerivation.slice(1)) say(`  ${l}`);
    say(
      `competing load during the timing (${load.seconds.toFixed(0)} s): other processes used ${pct(load.otherProcessesShare)} of the CPUs, ` +
        `hypervisor steal ${pct(load.stealShare)}; load average at start ${load.loadAverageAtStart}` +
        (load.otherProcessesShare > 0.05 || load.stealShare > 0.05 ? '  <-- WARNING: the machine was not quiet; the timings are not reliable' : ''),
    );
    say(`FLOPs: ${FLOP_COUNTING}`);
    say();
    say(
      'Package vs PyTorch. pkg ms / torch ms: medians. input "host": Float32Array inputs and outputs; "tensor": resident Tensors ' +
        '(Tensor.from, made outside the timing). %peak: of the peak above. other load: CPU share used by other processes while ' +
        `that path ran ("!": over ${pct(opts.maxLoad)} after up to ${opts.retries} retries: do not trust that row)`,
    );
    say(
      table(
        ['shape', 'path', 'input', 'GFLOP', 'pkg ms', 'torch ms', 'pkg/torch', 'pkg GFLOP/s', 'pkg %peak', 'torch GFLOP/s', 'torch %peak', 'other load'],
        results.flatMap((r) =>
          INPUTS.map((input) => [
            r.shape, r.path, input, f2(r.gflop), f1(r.package[input].medianMs), f1(r.torch.medianMs), f2(r.ratio[input]),
            f1(r.package[input].gflops), pct(r.package[input].peakShare), f1(r.torch.gflops), pct(r.torch.peakShare),
            pct(r.otherLoad) + (r.otherLoad > opts.maxLoad ? ' !' : ''),
          ]),
        ),
        'lll',
      ),
    );
    say();
    say('Node boundary: share of the step spent crossing from host arrays = (host median - Tensor median) / host median');
    say(
      table(
        ['shape', 'path', 'host ms', 'tensor ms', 'boundary share'],
        results.map((r) => [r.shape, r.path, f1(r.package.host.medianMs), f1(r.package.tensor.medianMs), pct(r.boundaryShare)]),
        'll',
      ),
    );
    say();
    say(`Out of the box (no thread setting on either side), lossAndGrad at ${DEFAULT_SHAPE} (other load ${pct(outOfTheBox.otherLoad)}):`);
    const o = outOfTheBox;
    say(
      table(
        ['side', 'threads', 'median ms', 'GFLOP/s', '%peak', 'vs torch'],
        [
          ['package (host)', o.package.threads, f1(o.package.host.medianMs), f1(o.package.host.gflops), pct(o.package.host.peakShare), f2(o.package.host.medianMs / o.torch.medianMs)],
          ['package (Tensor)', o.package.threads, f1(o.package.tensor.medianMs), f1(o.package.tensor.gflops), pct(o.package.tensor.peakShare), f2(o.package.tensor.medianMs / o.torch.medianMs)],
          ['torch', o.torch.threads, f1(o.torch.medianMs), f1(o.torch.gflops), pct(o.torch.peakShare), '1.00'],
        ],
        'l',
      ),
    );
    if (memory.length) {
      say();
      say(
        `Memory of one lossAndGrad step (host inputs for the package), fresh process per figure, ${opts.threads} thread(s): ` +
          'VmHWM after the step minus VmRSS before it, after load + build + one warm-up step, with VmHWM reset ' +
          '(clear_refs 5) just before the step. "clean": MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave RSS; ' +
          '"glibc default": as shipped, where memory cached by malloc since the warm-up can hide part of the peak.',
      );
      const rows = [];
      for (const s of memShapes) {
        for (const side of ['package', 'torch']) {
          const get = (mode) => memory.find((m) => m.shape === s && m.side === side && m.mode === mode);
          const c = get('clean');
          const d = get('glibcDefault');
          rows.push([s, side, f1(c.baselineMiB), f1(c.stepPeakMiB), f1(d.baselineMiB), f1(d.stepPeakMiB), c.hwmReset && d.hwmReset ? 'yes' : 'NO']);
        }
      }
      say(table(['shape', 'side', 'RSS before MiB (clean)', 'step peak +MiB (clean)', 'RSS before MiB (glibc default)', 'step peak +MiB (glibc default)', 'HWM reset'], rows, 'll'));
    }
    const elapsed = (Date.now() - started) / 1000;
    say();
    say(`total run time ${elapsed.toFixed(0)} s`);

    const report = {
      schema: 1,
      date,
      quick: opts.quick,
      git,
      machine,
      versions: {
        node: process.version, package: pkgVersion, libtorch: rt.libtorch.version, libtorchPath: rt.libtorch.path, binary: rt.binary,
        // The native side may be rebuilt on an unchanged commit: say which binary ran.
        binarySha256: binaryAtStart.sha256, binaryMtime: binaryAtStart.mtime, binaryReplacedDuringRun: binaryReplaced,
        torch: hello.torch, torchvision: hello.torchvision, python: hello.python, pythonExecutable: PYTHON, torchMkldnn: hello.mkldnn,
      },
      threads: opts.threads,
      competingLoad: load,
      defaultThreads: { package: pkgDefaultThreads, torch: hello.defaultThreads },
      torchParallelInfo: hello.parallelInfo,
      settings: { steps: opts.steps, warmup: opts.warmup, settleMs: opts.settleMs, retries: opts.retries, maxLoad: opts.maxLoad, retryBudgetSeconds: opts.retryBudget, shapes: opts.shapes.map(shapeName), statistic: 'median', inputs: 'uniform [0, 1) float32, fresh each step' },
      flopCounting: FLOP_COUNTING,
      results,
      outOfTheBox,
      memory,
      elapsedSeconds: elapsed,
    };
    const outFile = opts.out ?? path.join(ROOT, 'bench', 'results', `cpu-${date}${opts.quick ? '-quick' : ''}.json`);
    fs.mkdirSync(path.dirname(outFile), { recursive: true });
    fs.writeFileSync(outFile, JSON.stringify(report, null, 2) + '\n');
    say(`results written to ${path.relative(process.cwd(), outFile) || outFile}`);
    console.log(lines.join('\n'));
  } catch (e) {
    torch.kill();
    throw e;
  }
}

main().catch((e) => {
  // The message says what failed; the stack only helps when debugging this script.
  console.error(`bench: error: ${process.env.BENCH_DEBUG && e && e.stack ? e.stack : (e && e.message) || e}`);
  process.exit(1);
});
