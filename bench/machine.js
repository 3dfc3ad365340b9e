// Machine info for the CPU benchmark: the CPU, its cores and clock (measured where a C compiler is
// at hand), and the fp32 (FMA) and bf16 (AMX or AVX512-BF16) peaks the "share of peak" figures use.
'use strict';

const { execFile, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** The commit measured, and whether the tree had uncommitted changes (then it cannot be rebuilt). */
function gitInfo(allowDirty) {
  const root = path.resolve(__dirname, '..');
  const git = (...args) => execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const status = git('status', '--porcelain');
    return { commit: git('rev-parse', 'HEAD'), dirty: status.length > 0, dirtyFiles: status ? status.split('\n').slice(0, 50) : [], allowDirty };
  } catch {
    return { commit: null, dirty: null, dirtyFiles: [], allowDirty };
  }
}

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
    bf16: bf16Peak(flags, cores, useMeasured ? measured.ghz : reportedGHz, fmaUnits),
  };
}

/**
 * The bf16 peak, from the same cores and clock as the fp32 one. AMX (amx_bf16): one TDPBF16PS
 * multiplies a 16x32 by a 32x16 bf16 tile (16*16*32 multiply-adds) every 16 cycles, 1024 flops per
 * cycle per core, as Intel states it. AVX512-BF16 (avx512_bf16): one VDPBF16PS does 32
 * multiply-adds (64 flops) and issues on the FMA units: 64 x fmaUnits flops per cycle per core.
 * Both rates are assumptions from the vendors' documents, like the FMA-unit count.
 */
function bf16Peak(flags, cores, ghz, fmaUnits) {
  let perCycle = null;
  let unit = null;
  let note;
  if (flags.has('amx_bf16')) {
    [perCycle, unit] = [1024, 'AMX-BF16'];
    note = `AMX-BF16: 16x16x32 multiply-adds per TDPBF16PS per 16 cycles = 1024 flops/cycle/core [assumed, Intel's figure]`;
  } else if (flags.has('avx512_bf16')) {
    [perCycle, unit] = [64 * fmaUnits, 'AVX512-BF16'];
    note = `AVX512-BF16: 32 multiply-adds per VDPBF16PS x ${fmaUnits} FMA units = ${64 * fmaUnits} flops/cycle/core [assumed]`;
  } else {
    return { unit: null, peakGflops: null, derivation: 'no AMX-BF16 or AVX512-BF16 in the CPU flags: no bf16 peak' };
  }
  const peakGflops = cores * ghz * perCycle;
  return { unit, flopsPerCycle: cores * perCycle, peakGflops, derivation: `${cores} cores x ${ghz.toFixed(3)} GHz x ${note} = ${peakGflops.toFixed(0)} GFLOP/s` };
}


module.exports = { gitInfo, machineInfo, readText };
