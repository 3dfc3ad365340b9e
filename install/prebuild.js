#!/usr/bin/env node
// npm run prebuilds (and prepack): a Node-API binary for every libtorch flavour found here, stored as
//   prebuilds/<torchX.Y>-<cpu|cuNNN>-<cxx11|precxx11>/prebuilds/<platform>-<arch>/generic-perceptual-loss.<libc>.node
// The outer folder is the libtorch flavour (chosen by lib/loader.ts); the inner one is
// node-gyp-build's own layout (platform, arch, libc). Beside them, prebuilds/stable-abi-torch2.10/:
// one binary for every torch from 2.10 on (CPU and CUDA builds), built against the newest pip
// torch here through libtorch's stable C ABI (CMake's PL_STABLE_ABI).
//
// The libtorches: the system's (Debian's libtorch-dev), each pip environment in .venv/ (made by
// scripts/torch-envs.sh, which a checkout runs first), the torch of the python3 on PATH, and
// LIBTORCH if set. Each flavour builds incrementally in build/flavours/<flavour>, apart from the
// local build in build/Release. Flavour folders that were not built in this run are removed, so
// the package never ships a binary of older sources.
//   --no-envs       do not run scripts/torch-envs.sh (use the environments already there)
//   --only A,B      build only these flavours (the others are kept)
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const onlyAt = args.indexOf('--only');
const only = onlyAt >= 0 ? args[onlyAt + 1].split(',') : undefined;
const say = (/** @type {string} */ line) => console.log(`prebuild: ${line}`);

if (!fs.existsSync(path.join(root, 'dist', 'libtorch.js'))) {
  console.error('prebuild: dist/ is missing; run `npm run build:ts` first');
  process.exit(1);
}
const { findLibtorch, describeCandidate } = require('../dist/libtorch.js');
const { buildNative } = require('./build-native.js');

const envs = path.join(root, 'scripts', 'torch-envs.sh');
if (!args.includes('--no-envs') && process.env.PL_PREBUILD_ENVS !== '0' && fs.existsSync(envs)) {
  try {
    execFileSync('bash', [envs], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (error) {
    say(`scripts/torch-envs.sh failed (${/** @type {Error} */ (error).message.split('\n')[0]}); building for the libtorches already here`);
  }
}

const withEnv = (/** @type {NodeJS.ProcessEnv} */ changes) => {
  const env = { ...process.env };
  delete env.LIBTORCH;
  delete env.LIBTORCH_PYTHON;
  delete env.LIBTORCH_USE_PYTORCH;
  return { ...env, ...changes };
};
const venvRoot = path.join(root, '.venv');
const venvs = fs.existsSync(venvRoot)
  ? fs.readdirSync(venvRoot).sort().map((d) => path.join(venvRoot, d, 'bin', 'python')).filter((p) => fs.existsSync(p))
  : [];
const routes = [
  { name: 'the system', env: withEnv({ LIBTORCH_USE_PYTORCH: '0' }), source: 'system' },
  ...venvs.map((python) => ({ name: path.relative(root, python), env: withEnv({ LIBTORCH_PYTHON: python }), source: 'python' })),
  { name: 'python3 on PATH', env: withEnv({}), source: 'python' },
  ...(process.env.LIBTORCH ? [{ name: 'LIBTORCH', env: withEnv({ LIBTORCH: process.env.LIBTORCH }), source: 'LIBTORCH' }] : []),
];

function libcTag() {
  const report = /** @type {{ header?: { glibcVersionRuntime?: string } } | undefined} */ (process.report?.getReport?.());
  return report?.header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

const built = new Map();

/** Stores `binary` as the prebuild `tag` (node-gyp-build's layout inside), stripped. */
function store(/** @type {string} */ tag, /** @type {string} */ binary) {
  const dir = path.join(root, 'prebuilds', tag, 'prebuilds', `${process.platform}-${process.arch}`);
  fs.rmSync(path.join(root, 'prebuilds', tag), { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `generic-perceptual-loss.${libcTag()}.node`);
  fs.copyFileSync(binary, file);
  try {
    execFileSync('strip', ['--strip-unneeded', file]);
  } catch {
    say('strip is not available; the binary keeps its symbols');
  }
  built.set(tag, path.relative(root, file));
}
for (const route of routes) {
  const chosen = findLibtorch(route.env, { forBuild: true }).chosen;
  if (!chosen || chosen.source !== route.source) continue;
  if (!chosen.flavour) {
    say(`skipping ${describeCandidate(chosen)} (via ${route.name}): its flavour is unknown`);
    continue;
  }
  if (built.has(chosen.flavour) || (only && !only.includes(chosen.flavour))) continue;
  say(`${chosen.flavour} for ${describeCandidate(chosen)} (via ${route.name})`);
  store(chosen.flavour, buildNative(['--out', path.join('build', 'flavours', chosen.flavour)], route.env));
}

// The stable-ABI binary, from the newest torch >= 2.10 found above (its headers are a superset of
// 2.10's; TORCH_TARGET_VERSION hides what is newer).
const STABLE = 'stable-abi-torch2.10';
/** @param {{ version?: string } | undefined} c */
const minorOf = (c) => (/^2\.(\d+)\./.exec(c?.version ?? '') ? Number(/^2\.(\d+)\./.exec(c?.version ?? '')?.[1]) : -1);
const stableRoute = routes
  .map((route) => ({ route, chosen: findLibtorch(route.env, { forBuild: true }).chosen }))
  .filter(({ route, chosen }) => chosen && chosen.source === route.source && minorOf(chosen) >= 10)
  .sort((a, b) => minorOf(b.chosen) - minorOf(a.chosen) || Number(a.chosen?.cuda) - Number(b.chosen?.cuda))[0];
if (stableRoute?.chosen && (!only || only.includes(STABLE))) {
  say(`${STABLE} against ${describeCandidate(stableRoute.chosen)} (via ${stableRoute.route.name})`);
  store(STABLE, buildNative(['--out', path.join('build', 'flavours', STABLE), '--CDPL_STABLE_ABI=ON'], stableRoute.route.env));
} else if (!stableRoute) {
  say(`no torch >= 2.10 here: no ${STABLE} prebuild`);
}

if (built.size === 0) {
  console.error('prebuild: no libtorch found; run `node install/find-libtorch.js` for details');
  process.exit(1);
}
if (!only) {
  for (const stale of fs.readdirSync(path.join(root, 'prebuilds'))) {
    if (!built.has(stale)) {
      say(`removing prebuilds/${stale}: no libtorch of that flavour here`);
      fs.rmSync(path.join(root, 'prebuilds', stale), { recursive: true, force: true });
    }
  }
}
for (const [flavour, file] of built) say(`wrote ${file} (${flavour}, ${(fs.statSync(path.join(root, file)).size / 2 ** 20).toFixed(1)} MiB)`);
