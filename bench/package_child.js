#!/usr/bin/env node
// The package side of the CPU benchmark, in its own process (see bench/child.js for the protocol):
// one per build of the package (the libtorch it loads is chosen by LIBTORCH, as for any user).
//
//   node bench/package_child.js serve
//       {"cmd": "hello"}                              versions, the binary and the CPU features
//       {"cmd": "threads", "n": N}                    setNumThreads(N)
//       {"cmd": "setup", "shape": [...], "variant": V}  build the loss and take one warm step (not
//                                                     timed); {"error": ...} where V cannot run here
//     A shape [N, C, H, W] is an image batch (the default loss, vgg19); [N, C, D, H, W] a batch of
//     volumes: spatialDims 3 with its defaults (the documented 3-D arch and taps, layout 'ncdhw').
//       {"cmd": "prepare", "shape": [...], "variant": V}  prepareTarget of one random target
//       {"cmd": "step", "path": P, "shape": [...], "variant": V}  one timed step: {"ms": ...}
//       {"cmd": "check", "shape": [...], "pred": B64, "target": B64, "variant": V}
//       {"cmd": "quit"}
//     V: float32 (host Float32Arrays) | float32-tensor (resident Tensors, made outside the timing)
//        | bfloat16 (dtype 'bfloat16', host Float32Arrays)
//     P: lossAndGrad | prepared | loss | features
//   node bench/package_child.js steps --shape NxCxHxW --threads N --steps S --variant V
//       For bench/profile.js: one warm-up step, then S lossAndGrad steps, each announced on stdout
//       by a line "profile-step I" (where oneDNN's verbose lines go too); the step times go to
//       stderr as one line "profile-json: {...}".
//   node bench/package_child.js memory --shape NxCxHxW --threads N --variant V
//       In this fresh process: the peak resident memory of one lossAndGrad step; one JSON line.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..');
const { mulberry32 } = require('../tools/random.js');
const { readStatusKiB, resetHwm } = require('./memory.js');

const VARIANTS = {
  float32: { dtype: 'float32', input: 'host' },
  'float32-tensor': { dtype: 'float32', input: 'tensor' },
  bfloat16: { dtype: 'bfloat16', input: 'host' },
};

function loadPackage() {
  // dist/ is the package as built; the benchmark measures what a user would load.
  return require(path.join(ROOT, 'dist', 'index.js'));
}

function randomHost(shape, rng) {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng();
  return { data, shape };
}

/** 2 for [N, C, H, W], 3 for [N, C, D, H, W]. */
function spatialDimsOf(shape) {
  if (shape.length !== 4 && shape.length !== 5) throw new Error(`shape ${JSON.stringify(shape)} is neither [N, C, H, W] nor [N, C, D, H, W]`);
  return shape.length - 2;
}

function variantOf(name) {
  const v = VARIANTS[name];
  if (!v) throw new Error(`unknown package variant ${JSON.stringify(name)}; known: ${Object.keys(VARIANTS).join(', ')}`);
  return v;
}

class Side {
  constructor(pkg) {
    this.pkg = pkg;
    this.rng = mulberry32(12345);
    this.losses = new Map(); // `${spatialDims}/${inChannels}/${dtype}` -> PerceptualLoss
    this.prepared = new Map(); // `${shape}/${variant}` -> PreparedTarget
  }

  lossFor(shape, variant) {
    const { dtype } = variantOf(variant);
    const spatialDims = spatialDimsOf(shape);
    const key = `${spatialDims}/${shape[1]}/${dtype}`;
    if (!this.losses.has(key)) {
      // 2-D: the options as they were before volumes existed, so the 2-D rows stay comparable.
      const options = spatialDims === 3 ? { inChannels: shape[1], spatialDims: 3, device: 'cpu', dtype } : { inChannels: shape[1], device: 'cpu', dtype };
      this.losses.set(key, new this.pkg.PerceptualLoss(options));
    }
    return this.losses.get(key);
  }

  prepare(shape, variant) {
    const key = `${shape.join('x')}/${variant}`;
    this.prepared.get(key)?.dispose();
    this.prepared.set(key, this.lossFor(shape, variant).prepareTarget(randomHost(shape, this.rng)));
  }

  /** One step of `pathName` on fresh random inputs; only the call is timed. */
  step(pathName, shape, variant) {
    const { input } = variantOf(variant);
    const loss = this.lossFor(shape, variant);
    const pred = randomHost(shape, this.rng);
    const target = pathName === 'lossAndGrad' || pathName === 'loss' ? randomHost(shape, this.rng) : null;
    const resident = [];
    const operand = (host) => {
      if (!host || input === 'host') return host;
      const t = this.pkg.Tensor.from(host.data, host.shape, { device: 'cpu' });
      resident.push(t);
      return t;
    };
    const p = operand(pred);
    const t = operand(target);
    const prepared = pathName === 'prepared' ? this.prepared.get(`${shape.join('x')}/${variant}`) : null;
    if (pathName === 'prepared' && !prepared) throw new Error(`no prepared target for ${shape.join('x')}/${variant}: send "prepare" first`);
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
    return Number(t1 - t0) / 1e6;
  }
}

function hello(pkg) {
  const rt = pkg.runtime();
  const version = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
  const binary = rt.binary;
  const sha256 = require('node:crypto').createHash('sha256').update(fs.readFileSync(binary)).digest('hex');
  return {
    package: version, libtorch: rt.libtorch.version, libtorchPath: rt.libtorch.path, binary, binarySha256: sha256,
    binaryMtime: fs.statSync(binary).mtime.toISOString(), defaultThreads: rt.numThreads, cpu: rt.cpu, openmp: rt.openmp, node: process.version,
  };
}

function serve() {
  const out = process.stdout;
  let pkg;
  let side;
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    line = line.trim();
    if (!line) return;
    let reply;
    try {
      const req = JSON.parse(line);
      if (!pkg && req.cmd !== 'quit') {
        pkg = loadPackage();
        side = new Side(pkg);
      }
      switch (req.cmd) {
        case 'hello': reply = hello(pkg); break;
        case 'threads': pkg.setNumThreads(req.n); reply = { threads: pkg.runtime().numThreads }; break;
        case 'setup':
          // As the PyTorch side does: a variant that cannot run here (a dtype this libtorch lacks
          // for an op) is reported by one warm step, not fatal to the run.
          try {
            side.step('lossAndGrad', req.shape, req.variant);
            reply = {};
          } catch (e) {
            reply = { error: `${e.code ? `${e.code}: ` : ''}${e.message.split('\n')[0]}` };
          }
          break;
        case 'prepare': side.prepare(req.shape, req.variant); reply = {}; break;
        case 'step': reply = { ms: side.step(req.path, req.shape, req.variant) }; break;
        case 'check': {
          const data = (key) => ({ data: new Float32Array(new Uint8Array(Buffer.from(req[key], 'base64')).buffer), shape: req.shape });
          const r = side.lossFor(req.shape, req.variant).lossAndGrad(data('pred'), data('target'));
          reply = { loss: r.loss, gradSumSq: r.grad.reduce((a, g) => a + g * g, 0) };
          break;
        }
        case 'quit':
          out.write(JSON.stringify({ ok: true }) + '\n', () => process.exit(0));
          return;
        default: throw new Error(`unknown command ${JSON.stringify(req.cmd)}`);
      }
      reply.ok = true;
    } catch (e) {
      reply = { ok: false, error: `${e.code ? `${e.code}: ` : ''}${e.message}`, traceback: e.stack };
    }
    out.write(JSON.stringify(reply) + '\n');
  });
}

/** Peak resident memory of one lossAndGrad step in this fresh process (see bench/memory.js). */
function memory(argv) {
  const { values } = parseArgs({ args: argv, options: { shape: { type: 'string' }, threads: { type: 'string' }, variant: { type: 'string', default: 'float32' } } });
  const shape = values.shape.split('x').map(Number);
  const pkg = loadPackage();
  pkg.setNumThreads(Number(values.threads));
  const side = new Side(pkg);
  const loss = side.lossFor(shape, values.variant);
  const rng = mulberry32(7);
  loss.lossAndGrad(randomHost(shape, rng), randomHost(shape, rng)); // warm-up: one-time costs
  const pred = randomHost(shape, rng);
  const target = randomHost(shape, rng);
  const rssBefore = readStatusKiB('VmRSS');
  const reset = resetHwm();
  const hwmAtReset = readStatusKiB('VmHWM');
  const { loss: value, grad } = loss.lossAndGrad(pred, target);
  const hwmAfter = readStatusKiB('VmHWM');
  const rssAfter = readStatusKiB('VmRSS');
  console.log(JSON.stringify({
    side: 'package', variant: values.variant, libtorch: pkg.runtime().libtorch.version, shape, threads: pkg.runtime().numThreads,
    rssBeforeKiB: rssBefore, hwmAtResetKiB: hwmAtReset, hwmAfterKiB: hwmAfter, rssAfterKiB: rssAfter, hwmReset: reset, loss: value, gradNumel: grad.length,
  }));
}

function steps(argv) {
  const { values } = parseArgs({
    args: argv,
    options: { shape: { type: 'string' }, threads: { type: 'string' }, steps: { type: 'string' }, variant: { type: 'string', default: 'float32' } },
  });
  const shape = values.shape.split('x').map(Number);
  const pkg = loadPackage();
  pkg.setNumThreads(Number(values.threads));
  const side = new Side(pkg);
  side.step('lossAndGrad', shape, values.variant);
  const ms = [];
  // fs.writeSync: in order with what oneDNN prints to the same descriptor.
  for (let i = 0; i < Number(values.steps); i++) {
    fs.writeSync(1, `profile-step ${i}\n`);
    ms.push(side.step('lossAndGrad', shape, values.variant));
  }
  fs.writeSync(1, `profile-step ${values.steps}\n`);
  const rt = pkg.runtime();
  const info = { side: 'package', libtorch: rt.libtorch.version, variant: values.variant, threads: rt.numThreads, prepackedWeights: rt.cpu.prepackedWeights };
  fs.writeSync(2, `profile-json: ${JSON.stringify({ ...info, ms })}\n`);
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'serve') serve();
else if (mode === 'memory') memory(rest);
else if (mode === 'steps') steps(rest);
else {
  console.error('usage: node bench/package_child.js serve | memory --shape NxCxHxW --threads N [--variant V] | steps --shape NxCxHxW --threads N --steps S [--variant V]\n(NxCxDxHxW: a volume, spatialDims 3)');
  process.exit(2);
}
