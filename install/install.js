#!/usr/bin/env node
// npm install hook. Uses a matching prebuild if there is one; otherwise builds from source with
// cmake-js if libtorch, CMake and a compiler are there; otherwise explains what is missing and
// finishes without failing the install, so the full message comes again at require time.
// `npm install --build-from-source` (or `npm rebuild generic-perceptual-loss --build-from-source`) forces a build.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const say = (/** @type {string} */ line) => console.log(`generic-perceptual-loss: ${line}`);

if (!fs.existsSync(path.join(root, 'dist', 'loader.js'))) {
  // A git checkout: `npm run setup` compiles the TypeScript and builds the addon.
  say('development checkout, nothing to install (run `npm run setup`)');
  process.exit(0);
}

const { planLoad, testLoad, libtorchError } = require('../dist/loader.js');
const { findLibtorch } = require('../dist/libtorch.js');
const forced = ['true', '1', ''].includes(process.env.npm_config_build_from_source ?? 'unset') ||
  process.argv.includes('--build-from-source');

const plan = planLoad();
if (!forced) {
  for (const choice of plan.choices) {
    if (testLoad(choice).ok) {
      say(`using the ${choice.reason}`);
      process.exit(0);
    }
  }
}

const has = (/** @type {string} */ tool) => {
  try {
    execFileSync(tool, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
// A source build needs headers: the bundled runtime has none, so the build's own search decides.
const chosen = findLibtorch(process.env, { forBuild: true }).chosen;
const missing = [
  ...(chosen ? [] : ['libtorch']),
  ...(has('cmake') ? [] : ['cmake']),
  ...(has('c++') || has('g++') ? [] : ['a C++ compiler (g++)']),
];
if (!chosen || missing.length > 0) {
  say(`no prebuild fits and a source build needs ${missing.join(', ')}.`);
  console.log(libtorchError(plan, []).message);
  process.exit(forced ? 1 : 0);
}

say(`building from source against ${chosen.libraryDir}${forced ? ' (--build-from-source)' : ''}`);
try {
  require('./build-native.js').buildNative();
} catch (error) {
  say(`the source build failed: ${/** @type {Error} */ (error).message}`);
  process.exit(forced ? 1 : 0);
}
