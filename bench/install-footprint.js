#!/usr/bin/env node
// What `npm install generic-perceptual-loss --omit=optional` puts in a user's node_modules, for two
// commits of this repository: how many packages, which, and how many MB. For each commit: its
// tracked files (git archive), its dist/ compiled from its lib/, and this checkout's prebuilds/
// (binaries are not tracked: the same for both), packed with `npm pack --ignore-scripts`, then
// installed into a new project by npm
// with --omit=optional (no runtime package; Debian's libtorch serves, as on the development
// machines), install script included. Packages come from npm's cache or the registry.
//   node bench/install-footprint.js [--before REF] [--after REF] [--out FILE]
// REF defaults: --before HEAD~1, --after HEAD. Writes bench/results/install-footprint-DATE.json.
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { gitInfo } = require('./machine.js');

const ROOT = path.resolve(__dirname, '..');
const { values } = parseArgs({
  options: { before: { type: 'string', default: 'HEAD~1' }, after: { type: 'string', default: 'HEAD' }, out: { type: 'string' } },
});
const say = (/** @type {string} */ line) => console.error(`install-footprint: ${line}`);
const git = (/** @type {string[]} */ ...args) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();

if (!fs.existsSync(path.join(ROOT, 'prebuilds'))) {
  console.error('install-footprint: prebuilds/ is missing: run `npm run setup` (or npm run prebuilds) first');
  process.exit(1);
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-footprint-'));
process.on('exit', () => fs.rmSync(scratch, { recursive: true, force: true }));

/** Bytes of the files under `dir` (symlinks not followed) and their count. */
function sizeOf(dir) {
  let bytes = 0;
  let files = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    bytes += fs.lstatSync(path.join(entry.parentPath ?? entry.path, entry.name)).size;
    files++;
  }
  return { bytes, files };
}

/** One commit: packed, installed, counted. */
function measure(label, ref) {
  const commit = git('rev-parse', ref);
  const src = path.join(scratch, `${label}-src`);
  fs.mkdirSync(src);
  execFileSync('sh', ['-c', `git archive ${commit} | tar -x -C "${src}"`], { cwd: ROOT });
  fs.cpSync(path.join(ROOT, 'prebuilds'), path.join(src, 'prebuilds'), { recursive: true });
  // dist/ as `npm run build:ts` makes it, from this commit's lib/ (the compiler and types: this checkout's).
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(src, 'node_modules'));
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(src, 'tsconfig.json')], { cwd: src, stdio: 'inherit' });
  execFileSync(process.execPath, [path.join(src, 'tools', 'esm-wrapper.js')], { cwd: src, stdio: 'inherit' });
  fs.unlinkSync(path.join(src, 'node_modules'));
  const pkg = JSON.parse(fs.readFileSync(path.join(src, 'package.json'), 'utf8'));
  const packed = JSON.parse(execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', scratch], { cwd: src, encoding: 'utf8' }))[0];
  const tarball = path.join(scratch, packed.filename);
  const renamed = path.join(scratch, `${label}-${packed.filename}`);
  fs.renameSync(tarball, renamed);

  const app = path.join(scratch, `${label}-app`);
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: `footprint-${label}`, version: '1.0.0', private: true }));
  const env = { ...process.env };
  for (const name of ['LIBTORCH', 'LIBTORCH_PYTHON', 'LIBTORCH_USE_PYTORCH', 'PL_BINARY', 'PL_TEST_FLAVOUR']) delete env[name];
  const started = process.hrtime.bigint();
  const install = spawnSync('npm', ['install', renamed, '--omit=optional', '--no-audit', '--no-fund', '--foreground-scripts'], { cwd: app, env, encoding: 'utf8' });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (install.status !== 0) throw new Error(`npm install of ${label} (${commit.slice(0, 7)}) failed:\n${install.stdout}\n${install.stderr}`);
  const log = `${install.stdout}\n${install.stderr}`;
  const lock = JSON.parse(fs.readFileSync(path.join(app, 'node_modules', '.package-lock.json'), 'utf8'));
  const packages = Object.keys(lock.packages).filter((p) => p.startsWith('node_modules/')).map((p) => p.slice('node_modules/'.length).replace(/\/node_modules\//g, ' > '));
  const all = sizeOf(path.join(app, 'node_modules'));
  const own = sizeOf(path.join(app, 'node_modules', 'generic-perceptual-loss'));
  const result = {
    ref,
    commit,
    dependencies: pkg.dependencies ?? {},
    tarball: { size: packed.size, unpackedSize: packed.unpackedSize, entryCount: packed.entryCount },
    installSeconds: seconds,
    installScript: (/generic-perceptual-loss: .*/.exec(log) ?? ['(no line from the install script)'])[0],
    allowScriptsWarning: /npm warn install-scripts/.test(log),
    packageCount: packages.length,
    packages: packages.sort(),
    nodeModules: { bytes: all.bytes, MB: all.bytes / 1e6, files: all.files },
    thisPackage: { bytes: own.bytes, MB: own.bytes / 1e6, files: own.files },
    othersMB: (all.bytes - own.bytes) / 1e6,
  };
  say(`${label} ${commit.slice(0, 7)}: ${result.packageCount} packages, node_modules ${result.nodeModules.MB.toFixed(2)} MB (this package ${result.thisPackage.MB.toFixed(2)} MB), npm install ${seconds.toFixed(1)} s`);
  say(`  ${result.installScript}`);
  return result;
}

const before = measure('before', values.before);
const after = measure('after', values.after);
const date = new Date().toISOString().slice(0, 10);
const report = {
  schema: 1,
  date,
  git: gitInfo(true),
  versions: { node: process.version, npm: execFileSync('npm', ['--version'], { encoding: 'utf8' }).trim() },
  method:
    "git archive of each commit, its dist/ compiled from its lib/, this checkout's prebuilds/; npm pack --ignore-scripts; npm install <tarball> --omit=optional --no-audit --no-fund --foreground-scripts into a new project; packages: the entries of node_modules/.package-lock.json; MB: the sizes of the files under node_modules (1 MB = 1e6 bytes)",
  before,
  after,
  removed: before.packages.filter((p) => !after.packages.includes(p)),
  added: after.packages.filter((p) => !before.packages.includes(p)),
};
const file = values.out ?? path.join(ROOT, 'bench', 'results', `install-footprint-${date}.json`);
fs.mkdirSync(path.dirname(file), { recursive: true });
fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
console.log(`before ${before.commit.slice(0, 7)}: ${before.packageCount} packages, ${before.nodeModules.MB.toFixed(2)} MB in node_modules`);
console.log(`after  ${after.commit.slice(0, 7)}: ${after.packageCount} packages, ${after.nodeModules.MB.toFixed(2)} MB in node_modules`);
say(`written to ${path.relative(process.cwd(), file)}`);
