#!/usr/bin/env node
// Soak test: many steps mixing sync and async losses and gradients, features, segmentation,
// prepared targets, Tensors disposed and Tensors left to the garbage collector, refused calls,
// reseeds and save/load. Every --every steps it reports the RSS and the live native tensors
// (after a garbage collection). After the warm-up, the RSS may grow at most --max-growth (5%) over
// its value at the end of the warm-up, and the live tensors must be back at their baseline at
// every report. Exits 1 when a bound is violated. Uses the compiled package (dist/).
//
//   node scripts/soak.js [--steps 5000] [--every 500] [--warmup <steps, default 40%>] [--max-growth 0.05] [--threads N]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const util = require('node:util');
const v8 = require('node:v8');
const vm = require('node:vm');

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');

const { PerceptualLoss, PerceptualLossError, Tensor, setNumThreads } = require('../dist/index.js');
const { native } = require('../dist/binding.js');

const USAGE = 'usage: node scripts/soak.js [--steps 5000] [--every 500] [--warmup STEPS] [--max-growth 0.05] [--threads N]';

/**
 * @param {string[]} argv
 * @returns {{ steps: number, every: number, warmup: number, maxGrowth: number, threads: number | undefined, leak: boolean }}
 */
function parseArgs(argv) {
  const { values } = util.parseArgs({
    args: argv,
    options: {
      steps: { type: 'string' },
      every: { type: 'string' },
      warmup: { type: 'string' },
      'max-growth': { type: 'string' },
      threads: { type: 'string' },
      // For the test of this script: keep one Tensor alive per step, a leak it must report.
      'self-test-leak': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  /** @param {string} name @param {string | undefined} text */
  const number = (name, text) => {
    if (text === undefined) return undefined;
    const v = Number(text);
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} needs a number >= 0`);
    return v;
  };
  /** @param {string} name @param {string | undefined} text */
  const integer = (name, text) => {
    const v = number(name, text);
    return v === undefined ? undefined : Math.floor(v);
  };
  const steps = integer('steps', values.steps) ?? 5000;
  if (steps < 1) throw new Error('--steps needs at least 1');
  // Reports every 500 steps, or 10 reports for shorter runs. The first 40% of the steps warm up:
  // glibc's per-thread arenas (libuv's pool, libtorch's threads) keep growing to their working
  // size for a few thousand steps (a 20,000-step run plateaus after ~2,500).
  const every = Math.max(1, integer('every', values.every) ?? Math.min(500, Math.floor(steps / 10)));
  const warmup = integer('warmup', values.warmup) ?? Math.max(every, Math.floor((steps * 0.4) / every) * every);
  return {
    steps,
    every,
    warmup,
    maxGrowth: number('max-growth', values['max-growth']) ?? 0.05,
    threads: integer('threads', values.threads),
    leak: values['self-test-leak'],
  };
}

/** xorshift32: the same run every time. @param {number} seed */
function random(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

const mib = (/** @type {number} */ bytes) => bytes / 2 ** 20;

async function settle() {
  // Finalizers of collected objects run after the collection, on a later turn of the loop.
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.threads) setNumThreads(args.threads);
  const rand = random(20261126);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-soak-'));
  const shape = [2, 3, 32, 32];
  const count = shape.reduce((a, b) => a * b, 1);
  const data = (/** @type {number} */ n) => Float32Array.from({ length: n }, () => rand() * 2 - 1);
  /** @type {import('../dist/index.js').PerceptualLossOptions} */
  const options = { inChannels: 3, arch: [16, 'M', 32, 32, 'M', 32], layers: ['relu1_1', 'pool1', 'relu2_2', 'relu3_1'], styleWeight: 0.5, device: 'cpu' };

  let loss = new PerceptualLoss(options);
  const pred = { data: data(count), shape };
  const target = { data: data(count), shape };
  const labels = { data: Int32Array.from({ length: 2 * 32 * 32 }, () => (rand() < 0.1 ? 255 : Math.floor(rand() * 3))), shape: [2, 32, 32] };
  const nhwc = { data: data(count), shape: [2, 32, 32, 3] };
  // Resident for the whole run: part of the baseline.
  const residentPred = Tensor.from(pred.data, shape);
  const residentTarget = Tensor.from(target.data, shape);
  let prepared = loss.prepareTarget(target);
  const poisoned = { data: pred.data.slice(), shape };
  poisoned.data[7] = NaN;

  /** @type {Record<string, number>} */
  const counts = {};
  const did = (/** @type {string} */ what) => (counts[what] = (counts[what] ?? 0) + 1);
  /** @param {unknown} error @param {import('../dist/index.js').ErrorCode} code */
  const refused = (error, code) => {
    if (!(error instanceof PerceptualLossError) || error.code !== code) throw error;
  };

  /** @type {import('../dist/index.js').Tensor[]} */
  const leaked = [];
  /** @param {number} i */
  async function step(i) {
    if (args.leak) leaked.push(Tensor.from(pred.data, shape));
    const kind = i % 16;
    switch (kind) {
      case 0:
        loss.lossAndGrad(pred, target);
        return did('sync lossAndGrad (host)');
      case 1: {
        const r = await loss.lossAndGradAsync(residentPred, residentTarget);
        r.grad.dispose();
        return did('async lossAndGrad (Tensor)');
      }
      case 2:
        loss.features(pred);
        return did('sync features (host)');
      case 3: {
        for (const f of await loss.featuresAsync(residentPred)) f.data.dispose();
        return did('async features (Tensor)');
      }
      case 4:
        loss.lossAndGradSegmentation(pred, labels);
        return did('sync segmentation');
      case 5:
        await loss.lossAndGradSegmentationAsync(pred, labels, { ignoreIndex: 255 });
        return did('async segmentation');
      case 6:
        loss.loss(pred, prepared);
        await loss.lossAndGradAsync(pred, prepared);
        return did('prepared target, sync and async');
      case 7:
        await Promise.all([loss.lossAsync(pred, target), loss.lossAsync(nhwc, nhwc, { layout: 'nhwc' }), loss.featuresAsync(nhwc, { layout: 'nhwc' })]);
        return did('concurrent async, nhwc');
      case 8: {
        // Tensors never disposed: the finalizer must free them.
        const t = Tensor.from(pred.data, shape);
        loss.lossAndGrad(t, target);
        await loss.featuresAsync(t);
        return did('Tensors left to the garbage collector');
      }
      case 9: {
        const t = Tensor.from(pred.data, shape);
        t.dispose();
        try {
          loss.loss(t, target);
        } catch (error) {
          refused(error, 'ERR_DISPOSED');
        }
        try {
          await loss.lossAndGradAsync(poisoned, target);
        } catch (error) {
          refused(error, 'ERR_NONFINITE');
        }
        return did('refused calls');
      }
      case 10:
        if (i % 160 === 10) {
          prepared.dispose();
          prepared = loss.prepareTarget(target);
          return did('new prepared target');
        }
        loss.loss(pred, target);
        return did('sync loss');
      case 11:
        if (i % 800 === 11) {
          const file = path.join(dir, 'soak.safetensors');
          loss.save(file);
          const loaded = PerceptualLoss.load(file);
          loaded.lossAndGrad(pred, target);
          loaded.dispose();
          return did('save and load');
        }
        if (i % 800 === 219) {
          loss.reseed(i);
          return did('reseed');
        }
        if (i % 800 === 411) {
          // A whole new loss; the old one is disposed with a call still in flight.
          const old = loss;
          const pending = old.lossAndGradAsync(pred, target);
          old.dispose();
          await pending;
          prepared.dispose();
          loss = new PerceptualLoss(options);
          prepared = loss.prepareTarget(target);
          return did('new loss, old disposed in flight');
        }
        await loss.lossAsync(pred, target);
        return did('async loss');
      default: {
        const r = loss.lossAndGrad(residentPred, target);
        r.grad.dispose();
        return did('sync lossAndGrad (Tensor)');
      }
    }
  }

  await settle();
  const liveBaseline = native().liveTensors();
  /** @type {Array<{ step: number, rssMiB: number, liveTensors: number, heapMiB: number }>} */
  const reports = [];
  /** @type {number | undefined} */
  let rssBaseline;
  /** @type {string[]} */
  const violations = [];
  const started = Date.now();
  for (let i = 1; i <= args.steps; i++) {
    await step(i);
    if (i % args.every === 0 || i === args.steps) {
      await settle();
      const rss = process.memoryUsage().rss;
      const live = native().liveTensors();
      const report = { step: i, rssMiB: +mib(rss).toFixed(1), liveTensors: live, heapMiB: +mib(process.memoryUsage().heapUsed).toFixed(1) };
      reports.push(report);
      const phase = i <= args.warmup ? 'warm-up' : 'measured';
      if (i >= args.warmup && rssBaseline === undefined) rssBaseline = rss;
      let note = '';
      if (live !== liveBaseline) {
        violations.push(`step ${i}: ${live} live native tensors, baseline ${liveBaseline}`);
        note += ' LIVE TENSORS ABOVE BASELINE';
      }
      if (rssBaseline !== undefined && i > args.warmup && rss > rssBaseline * (1 + args.maxGrowth)) {
        violations.push(`step ${i}: RSS ${mib(rss).toFixed(1)} MiB grew ${((rss / rssBaseline - 1) * 100).toFixed(1)}% over ${mib(rssBaseline).toFixed(1)} MiB`);
        note += ' RSS GROWTH';
      }
      const growth = rssBaseline === undefined ? '' : `, ${((rss / rssBaseline - 1) * 100).toFixed(2)}% over step ${args.warmup}`;
      console.log(`step ${String(i).padStart(6)} (${phase}): rss ${mib(rss).toFixed(1)} MiB${growth}, live tensors ${live} (baseline ${liveBaseline}), heap ${report.heapMiB} MiB${note}`);
    }
  }
  prepared.dispose();
  loss.dispose();
  residentPred.dispose();
  residentTarget.dispose();
  await settle();
  const liveEnd = native().liveTensors();
  if (liveEnd !== liveBaseline - 2) violations.push(`after disposing everything: ${liveEnd} live native tensors, expected ${liveBaseline - 2}`);
  fs.rmSync(dir, { recursive: true, force: true });

  const measured = reports.filter((r) => r.step > args.warmup);
  const maxRss = Math.max(...measured.map((r) => r.rssMiB), rssBaseline === undefined ? 0 : mib(rssBaseline));
  const result = {
    ok: violations.length === 0,
    steps: args.steps,
    every: args.every,
    warmup: args.warmup,
    seconds: +((Date.now() - started) / 1000).toFixed(1),
    rssBaselineMiB: rssBaseline === undefined ? null : +mib(rssBaseline).toFixed(1),
    rssMaxMiB: +maxRss.toFixed(1),
    rssGrowth: rssBaseline === undefined ? null : +(maxRss / mib(rssBaseline) - 1).toFixed(4),
    maxGrowth: args.maxGrowth,
    liveBaseline,
    liveEnd,
    counts,
    violations,
  };
  console.log(`soak: ${result.ok ? 'PASS' : 'FAIL'} after ${args.steps} steps in ${result.seconds} s; RSS after warm-up ${result.rssBaselineMiB} MiB, max ${result.rssMaxMiB} MiB (${result.rssGrowth === null ? 'n/a' : (result.rssGrowth * 100).toFixed(2) + '%'}, bound ${args.maxGrowth * 100}%); live tensors ${liveBaseline} -> ${liveEnd} after disposing the 2 resident ones`);
  for (const v of violations) console.log(`  violation: ${v}`);
  console.log(`SOAK_RESULT ${JSON.stringify(result)}`);
  process.exitCode = result.ok ? 0 : 1;
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 2;
});
