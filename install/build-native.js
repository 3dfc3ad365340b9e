#!/usr/bin/env node
// Builds the addon with cmake-js into build/Release (or --out DIR), against the libtorch that
// install/find-libtorch.js reports. Extra arguments go to cmake-js (e.g. --debug).
//
// cmake-js is not a dependency of the package: a user whose prebuild matches never builds, so
// never installs it (with its ~40 packages). It is taken from where it is installed (this
// repository's devDependencies, or the user's project), else fetched by `npm exec` only now, when a
// source build happens; if neither works (offline), the error says what to install and how to retry.
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

/** The cmake-js range the build is written for: package.json's devDependencies (published with it). */
function cmakeJsRange() {
  return JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).devDependencies?.['cmake-js'] ?? '8';
}

/**
 * npm itself: the one running this script's lifecycle (npm_execpath), else the npm on PATH.
 * @returns {[string, string[]]} the command and its leading arguments
 */
function npmCommand() {
  const cli = process.env.npm_execpath;
  return cli && /\.[cm]?js$/.test(cli) && fs.existsSync(cli) ? [process.execPath, [cli]] : [process.platform === 'win32' ? 'npm.cmd' : 'npm', []];
}

/**
 * How to run cmake-js: `[command, leading arguments]`. An installed cmake-js (found from the
 * package's folder up, so a user's `npm install cmake-js` counts) comes first; else `npm exec`
 * fetches the pinned version into npm's cache, checked once with `cmake-js --version`.
 * @param {NodeJS.ProcessEnv} env
 * @returns {[string, string[]]}
 */
function cmakeJsCommand(env) {
  try {
    return [process.execPath, [require.resolve('cmake-js/bin/cmake-js', { paths: [root] })]];
  } catch {
    // not installed: fetch it below
  }
  const spec = `cmake-js@${cmakeJsRange()}`;
  const major = /\d+/.exec(cmakeJsRange())?.[0] ?? '8';
  const [npm, npmArgs] = npmCommand();
  const viaNpm = [...npmArgs, 'exec', '--yes', `--package=${spec}`, '--', 'cmake-js'];
  console.log(`generic-perceptual-loss: cmake-js is not installed; fetching ${spec} for the source build (npm exec)`);
  const probe = spawnSync(npm, [...viaNpm, '--version'], { cwd: root, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], shell: npm.endsWith('.cmd') });
  if (probe.status !== 0) {
    const why = (probe.error?.message ?? probe.stderr ?? '').trim().split('\n').filter((l) => l && !/complete log of this run/.test(l)).slice(-3).join(' / ') || `exit code ${probe.status}`;
    const fixes = [
      [`npm install --save-dev cmake-js@${major}`, 'in your project'],
      ['apt-get install cmake g++ make', "or your system's CMake and C++17 compiler"],
      ['npm rebuild generic-perceptual-loss --build-from-source', 'build again'],
    ];
    const width = Math.max(...fixes.map(([command]) => command.length)) + 2;
    throw new Error(
      [
        `the source build needs cmake-js (${spec}), which is not installed and could not be fetched with npm exec: ${why}`,
        'Install it where the package finds it, with CMake and a C++17 compiler, then build again:',
        ...fixes.map(([command, note]) => `    ${command.padEnd(width)}# ${note}`),
      ].join('\n'),
    );
  }
  return [npm, viaNpm];
}

/**
 * Builds; `env` chooses the libtorch (LIBTORCH, LIBTORCH_PYTHON, ...). Returns the binary's path.
 * @param {string[]} [cmakeJsArgs] passed on to cmake-js
 * @param {NodeJS.ProcessEnv} [env]
 */
function buildNative(cmakeJsArgs = [], env = process.env) {
  /** @param {string} cmd @param {string[]} args */
  const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env, shell: cmd.endsWith('.cmd') });
  // First: without cmake-js nothing is built, and the previous build stays as it was.
  const [cmakeJs, cmakeJsLead] = cmakeJsCommand(env);
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
  run(cmakeJs, [...cmakeJsLead, changed ? 'rebuild' : 'compile', '--log-level', 'warn', ...cmakeJsArgs]);
  // The loader reads which libtorch this build is for, to open the same libraries and to pass
  // the build over for any other libtorch.
  fs.writeFileSync(record, JSON.stringify(chosen, null, 2) + '\n');
  return path.join(release, 'generic_perceptual_loss.node');
}

module.exports = { buildNative };
if (require.main === module) {
  try {
    buildNative(process.argv.slice(2));
  } catch (error) {
    // The build's own output is above; what is left to say is why it stopped.
    console.error(`generic-perceptual-loss: ${/** @type {Error} */ (error).message}`);
    process.exit(1);
  }
}
