// Timing for the CPU benchmark: every side's steps interleaved, the median of the timed ones, and
// the CPU time that other processes took meanwhile (on a shared machine it says whether a figure
// can be trusted; a path is timed again when they took too much).
'use strict';

const { execFileSync } = require('node:child_process');
const os = require('node:os');
const { readText } = require('./machine.js');
const { mulberry32 } = require('../tools/random.js');

const hrms = (t0, t1) => Number(t1 - t0) / 1e6;

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

/** Machine-wide busy ticks, and those of this process and of the benchmark's children. */
function cpuSnapshot(childPids) {
  const [user, nice, system, , , irq, softirq, steal] = readText('/proc/stat').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const procTicks = (pid) => {
    const st = readText(`/proc/${pid}/stat`);
    if (!st) return 0;
    const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]); // utime + stime (fields 14 and 15)
  };
  return {
    at: process.hrtime.bigint(),
    busy: user + nice + system + irq + softirq,
    steal: steal || 0,
    own: procTicks('self') + childPids.reduce((a, pid) => a + procTicks(pid), 0),
    loadavg: readText('/proc/loadavg').split(' ').slice(0, 3).join(' '),
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

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function summarize(samples, gflop, peak) {
  const med = median(samples);
  const gflops = gflop / (med / 1000);
  return { medianMs: med, minMs: Math.min(...samples), maxMs: Math.max(...samples), samplesMs: samples, gflops, peakShare: peak ? gflops / peak : null };
}

// Every side runs libtorch on GNU OpenMP, whose idle worker threads spin (GOMP_SPINCOUNT, 300k
// pause loops, a few ms) before they sleep. Without a pause, the side that just finished would
// still be burning the cores while the next side's step starts.
const settle = (ms) => (ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve());

/**
 * One path at one shape for every entry ({ key, child, variant, twin? }), interleaved step by step,
 * in a new order each round (a seeded shuffle, the same in every run), so that no entry always
 * comes right after the same one. A shuffle alone is not fair between two entries compared
 * closely (`twin`: the key of the entry it is set against): what ran just before a step changes
 * it, and with identical settings on both sides a shuffled run still measured 1.21x at 1x3x32x32
 * (bench/results/cpu-2026-12-07-same-setting-shuffled.json). So each shuffled timed round is
 * followed by its mirror, the same order with every entry and its twin swapped: over the pair,
 * each twin steps in exactly the other's places and after the same kinds of step. `warmup`
 * rounds are thrown away, `steps` kept (even, where there are twins).
 */
async function timeEntries(ctx, entries, pathName, shape, rounds) {
  const samples = Object.fromEntries(entries.map((e) => [e.key, []]));
  if (pathName === 'prepared') for (const e of entries) await e.child.request({ cmd: 'prepare', shape, variant: e.variant });
  const random = mulberry32(20261207);
  const byKey = new Map(entries.map((e) => [e.key, e]));
  const twinOf = new Map();
  for (const e of entries) {
    if (e.twin && byKey.has(e.twin)) {
      twinOf.set(e, byKey.get(e.twin));
      twinOf.set(byKey.get(e.twin), e);
    }
  }
  let order = [];
  for (let i = 0; i < rounds.warmup + rounds.steps; i++) {
    const timed = i - rounds.warmup;
    if (timed > 0 && timed % 2 === 1 && twinOf.size) {
      order = order.map((e) => twinOf.get(e) ?? e);
    } else {
      order = [...entries];
      for (let k = order.length - 1; k > 0; k--) {
        const j = Math.floor(random() * (k + 1));
        [order[k], order[j]] = [order[j], order[k]];
      }
    }
    for (const e of order) {
      await settle(ctx.settleMs);
      const reply = await e.child.request({ cmd: 'step', path: pathName, shape, variant: e.variant });
      if (i >= rounds.warmup) samples[e.key].push(reply.ms);
    }
  }
  return samples;
}

/** Waits (up to maxMs) until other processes leave the CPUs alone for 2 s; says if they never did. */
async function waitForQuiet(ctx, maxMs) {
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) {
    const before = cpuSnapshot(ctx.pids());
    await settle(2000);
    if (competingLoad(before, cpuSnapshot(ctx.pids())).otherProcessesShare <= ctx.maxLoad / 2) return;
  }
  ctx.progress(`the machine stayed busy for ${maxMs / 1000} s; timing again anyway`);
}

/**
 * timeEntries, with a check on the machine: a burst of other work can spoil a whole path (every
 * interleaved step of it), which no median repairs. The CPU time other processes used is measured
 * around the path, which is timed again when it passes ctx.maxLoad, up to ctx.retries times, within
 * ctx.retryBudgetMs in all. The last attempt is kept either way, with its load.
 */
async function timeChecked(ctx, entries, pathName, shape, rounds) {
  const name = `${shape.join('x')} ${pathName}`;
  for (let attempt = 1; ; attempt++) {
    if (attempt > 1) {
      const t0 = Date.now();
      await waitForQuiet(ctx, 45_000);
      ctx.retryBudgetMs -= Date.now() - t0;
    }
    const before = cpuSnapshot(ctx.pids());
    const samples = await timeEntries(ctx, entries, pathName, shape, rounds);
    const load = competingLoad(before, cpuSnapshot(ctx.pids()));
    const spent = hrms(before.at, process.hrtime.bigint());
    if (attempt > 1) ctx.retryBudgetMs -= spent;
    if (load.otherProcessesShare <= ctx.maxLoad || attempt > ctx.retries) return { samples, load, attempts: attempt };
    if (ctx.retryBudgetMs < spent) {
      ctx.progress(`${name}: other processes used ${(100 * load.otherProcessesShare).toFixed(1)}% of the CPUs meanwhile; retry budget spent, keeping it`);
      return { samples, load, attempts: attempt };
    }
    ctx.progress(`${name}: other processes used ${(100 * load.otherProcessesShare).toFixed(1)}% of the CPUs meanwhile; timing it again`);
  }
}

module.exports = { competingLoad, cpuSnapshot, median, summarize, timeChecked };
