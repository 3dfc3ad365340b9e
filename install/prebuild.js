#!/usr/bin/env node
// npm run prebuild: a Node-API binary for the libtorch found here, stored as
//   prebuilds/<torchX.Y>-<cpu|cuNNN>-<cxx11|precxx11>/prebuilds/<platform>-<arch>/generic-perceptual-loss.<libc>.node
// The outer folder is the libtorch flavour (chosen by lib/loader.ts); the inner one is
// node-gyp-build's own layout (platform, arch, libc and Node-API tags).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { findLibtorch, flavourTag, describeCandidate } = require('../dist/libtorch.js');

const root = path.resolve(__dirname, '..');
const { chosen } = findLibtorch();
if (!chosen) {
  console.error('prebuild: no libtorch found; run `node install/find-libtorch.js` for details');
  process.exit(1);
}
const tag = flavourTag(chosen);
const out = path.join(root, 'prebuilds', tag);
console.log(`prebuild: ${tag} for ${describeCandidate(chosen)}`);
fs.rmSync(out, { recursive: true, force: true });
const prebuildify = require.resolve('prebuildify/bin.js', { paths: [root] });
execFileSync(
  process.execPath,
  [prebuildify, '--napi', '--strip', '--tag-libc', '--out', out, '--node-gyp', path.join(__dirname, 'prebuild-cmake.js')],
  { cwd: root, stdio: 'inherit' },
);
for (const file of fs.readdirSync(out, { recursive: true })) console.log(`prebuild: wrote prebuilds/${tag}/${file}`);
// prebuildify moved the binary out of build/Release: relink the local build the loader prefers.
require('./build-native.js').buildNative();
