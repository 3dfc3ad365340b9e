#!/usr/bin/env node
// Builds the addon with cmake-js into build/Release, against the libtorch that
// install/find-libtorch.js reports. Extra arguments go to cmake-js (e.g. --debug).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
/** @param {string} cmd @param {string[]} args */
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });

/** @param {string[]} [cmakeJsArgs] passed on to cmake-js */
function buildNative(cmakeJsArgs = []) {
  run(process.execPath, [path.join(__dirname, 'find-libtorch.js')]);
  const outFlag = cmakeJsArgs.findIndex((a) => a === '--out' || a === '-O');
  const release = path.join(outFlag >= 0 ? path.resolve(root, cmakeJsArgs[outFlag + 1]) : path.join(root, 'build'), 'Release');
  // Unlink, never overwrite: a process that has the old binary loaded keeps its (now nameless)
  // file, while tools that write in place (strip, some linkers) would change it under its feet.
  fs.rmSync(path.join(release, 'generic_perceptual_loss.node'), { force: true });
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  run(process.execPath, [cmakeJs, 'compile', '--log-level', 'warn', ...cmakeJsArgs]);
  // The loader reads which libtorch this build is for, to open the same libraries.
  const { findLibtorch } = require('../dist/libtorch.js');
  const record = path.join(release, 'libtorch.json');
  fs.writeFileSync(record, JSON.stringify(findLibtorch().chosen, null, 2) + '\n');
}

module.exports = { buildNative };
if (require.main === module) buildNative(process.argv.slice(2));
