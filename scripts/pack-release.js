#!/usr/bin/env node
// npm run pack:release: every tarball that would be published, in release/:
//   generic-perceptual-loss-<version>.tgz                      npm pack (prepack: dist/ and the prebuilds)
//   generic-perceptual-loss-libtorch-linux-x64-<version>.tgz   scripts/make-runtime-package.js
// and release/release.json, which lists each with its sizes and integrity. Other tarballs in
// release/ are removed. Two runs at once (two test files) take turns: release/.lock.
//   --if-stale   do nothing when release/release.json is newer than every source of the tarballs
//                (the tests call it this way: CI packs once, before them)
'use strict';
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');

/** @type {{ 'if-stale'?: boolean }} */
let args;
try {
  args = util.parseArgs({ options: { 'if-stale': { type: 'boolean' } } }).values;
} catch (error) {
  console.error(`${/** @type {Error} */ (error).message}\nusage: node scripts/pack-release.js [--if-stale]`);
  process.exit(2);
}

const root = path.resolve(__dirname, '..');
const release = path.join(root, 'release');
const lock = path.join(release, '.lock');
const say = (/** @type {string} */ line) => console.log(`pack:release: ${line}`);

/** @param {number} ms */
function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Takes release/.lock, waiting while another live process holds it. */
function takeLock() {
  fs.mkdirSync(release, { recursive: true });
  for (let waited = 0; ; waited += 2) {
    try {
      fs.mkdirSync(lock);
      fs.writeFileSync(path.join(lock, 'pid'), String(process.pid));
      return;
    } catch {
      let holder = NaN;
      try {
        holder = Number(fs.readFileSync(path.join(lock, 'pid'), 'utf8'));
      } catch {
        // Taken a moment ago; the pid file comes next.
      }
      let alive = true;
      if (Number.isInteger(holder)) {
        try {
          process.kill(holder, 0);
        } catch {
          alive = false;
        }
      }
      if (!alive) {
        say(`removing the lock of process ${holder}, which is gone`);
        fs.rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (waited % 60 === 0) say(`waiting for process ${holder}, which holds ${path.relative(root, lock)}`);
      sleep(2000);
    }
  }
}

/** What the tarballs are made from (tracked and untracked files, not ignored ones). */
const SOURCES = ['lib', 'native', 'install', 'tools', 'npm', 'scripts/pack-release.js', 'scripts/make-runtime-package.js', 'package.json', 'README.md', 'docs', 'examples', 'CMakeLists.txt', 'binding.gyp', 'tsconfig.json'];

/** Why release/ does not hold this checkout's tarballs (a sentence), or undefined when it does. */
function staleness() {
  const record = path.join(release, 'release.json');
  if (!fs.existsSync(record)) return 'there is no release/release.json';
  const { tarballs } = /** @type {{ tarballs: Array<{ filename: string }> }} */ (JSON.parse(fs.readFileSync(record, 'utf8')));
  const version = /** @type {{ version: string }} */ (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))).version;
  const runtimeVersion = /** @type {{ version: string }} */ (JSON.parse(fs.readFileSync(path.join(root, 'npm', 'libtorch-linux-x64', 'package.json'), 'utf8'))).version;
  const names = tarballs.map((t) => t.filename);
  for (const want of [`generic-perceptual-loss-${version}.tgz`, `generic-perceptual-loss-libtorch-linux-x64-${runtimeVersion}.tgz`]) {
    if (!names.includes(want) || !fs.existsSync(path.join(release, want))) return `release/${want} is missing`;
  }
  const since = fs.statSync(record).mtimeMs;
  let files;
  try {
    files = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '--', ...SOURCES], { cwd: root, encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    return 'this is not a git checkout: the sources cannot be listed';
  }
  const newer = files.find((f) => {
    try {
      return fs.statSync(path.join(root, f)).mtimeMs > since;
    } catch {
      return false; // deleted, not yet staged
    }
  });
  return newer ? `${newer} is newer than release/release.json` : undefined;
}

takeLock();
process.on('exit', () => fs.rmSync(lock, { recursive: true, force: true }));
if (args['if-stale']) {
  const why = staleness();
  if (!why) {
    say('release/ is up to date');
    process.exit(0);
  }
  say(`packing: ${why}`);
}

/** @typedef {{ name: string, version: string, filename: string, size: number, unpackedSize: number, entryCount: number, integrity: string }} PackReport */

// The main package first: its prepack builds the prebuilds, one of which the runtime package's
// load test loads.
say('npm pack (prepack: build:ts and the prebuilds)');
const out = execFileSync('npm', ['pack', '--json', '--pack-destination', release], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
// prepack's build log comes first on stdout; npm's JSON report is last.
const at = out.lastIndexOf('[\n  {');
process.stdout.write(out.slice(0, at));
const [main] = /** @type {PackReport[]} */ (JSON.parse(out.slice(at)));

say('the runtime package');
execFileSync(process.execPath, [path.join(__dirname, 'make-runtime-package.js'), '--pack-destination', release], { stdio: 'inherit' });
const stamp = /** @type {{ tarball: string, report: PackReport }} */ (JSON.parse(fs.readFileSync(path.join(root, 'build', 'runtime-package', 'stamp.json'), 'utf8')));
const runtime = stamp.report;

const keep = [main.filename, runtime.filename];
for (const file of fs.readdirSync(release)) {
  if (file.endsWith('.tgz') && !keep.includes(file)) {
    say(`removing ${file}: not made by this run`);
    fs.rmSync(path.join(release, file));
  }
}
const tarballs = [main, runtime].map((r) => {
  const file = path.join(release, r.filename);
  const bytes = fs.readFileSync(file);
  return {
    name: r.name,
    version: r.version,
    filename: r.filename,
    size: bytes.length,
    unpackedSize: r.unpackedSize,
    entryCount: r.entryCount,
    integrity: `sha512-${crypto.createHash('sha512').update(bytes).digest('base64')}`,
  };
});
fs.writeFileSync(path.join(release, 'release.json'), `${JSON.stringify({ tarballs }, null, 2)}\n`);

const mb = (/** @type {number} */ n) => `${(n / 1e6).toFixed(1)} MB`;
console.log('');
console.log(['tarball'.padEnd(60), 'packed'.padStart(10), 'unpacked'.padStart(10), 'files'.padStart(6)].join(' '));
for (const t of tarballs) {
  console.log([`release/${t.filename}`.padEnd(60), mb(t.size).padStart(10), mb(t.unpackedSize).padStart(10), String(t.entryCount).padStart(6)].join(' '));
}
