#!/usr/bin/env node
// Builds the addon with cmake-js into build/Release (or --out DIR), against the libtorch that
// install/find-libtorch.js reports. Extra arguments go to cmake-js (e.g. --debug).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

/**
 * Builds; `env` chooses the libtorch (LIBTORCH, LIBTORCH_PYTHON, ...). Returns the binary's path.
 * @param {string[]} [cmakeJsArgs] passed on to cmake-js
 * @param {NodeJS.ProcessEnv} [env]
 */
function buildNative(cmakeJsArgs = [], env = process.env) {
  /** @param {string} cmd @param {string[]} args */
  const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env });
  run(process.execPath, [path.join(__dirname, 'find-libtorch.js')]);
  const outFlag = cmakeJsArgs.findIndex((a) => a === '--out' || a === '-O');
  const buildDir = outFlag >= 0 ? path.resolve(root, cmakeJsArgs[outFlag + 1]) : path.join(root, 'build');
  const release = path.join(buildDir, 'Release');
  const record = path.join(release, 'libtorch.json');
  const { findLibtorch } = require('../dist/libtorch.js');
  const chosen = findLibtorch(env, { forBuild: true }).chosen;
  // CMake reads libtorch's paths and flags when it configures: another libtorch than last time
  // needs a fresh configure, not an incremental build.
  let previous;
  try {
    previous = JSON.parse(fs.readFileSync(record, 'utf8'));
  } catch {
    previous = undefined;
  }
  const changed = previous && chosen && (previous.libraryDir !== chosen.libraryDir || previous.flavour !== chosen.flavour);
  // Unlink, never overwrite: a process that has the old binary loaded keeps its (now nameless)
  // file, while tools that write in place (strip, some linkers) would change it under its feet.
  fs.rmSync(path.join(release, 'generic_perceptual_loss.node'), { force: true });
  fs.rmSync(record, { force: true });
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  run(process.execPath, [cmakeJs, changed ? 'rebuild' : 'compile', '--log-level', 'warn', ...cmakeJsArgs]);
  // The loader reads which libtorch this build is for, to open the same libraries and to pass
  // the build over for any other libtorch.
  fs.writeFileSync(record, JSON.stringify(chosen, null, 2) + '\n');
  return path.join(release, 'generic_perceptual_loss.node');
}

module.exports = { buildNative };
if (require.main === module) buildNative(process.argv.slice(2));
