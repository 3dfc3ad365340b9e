#!/usr/bin/env node
// What the bundled runtime costs a user, against today's route through Debian's libtorch, on this
// machine, in one run (routes interleaved, medians of --runs):
//   bundled  `npm install` of the main tarball, which brings @generic-perceptual-loss/libtorch-linux-x64
//            (the release tarball, standing in for the registry through `overrides`)
//   debian   `npm install --omit=optional` of the main tarball alone; Debian's libtorch-dev serves
// For each: the install's wall time; the size of node_modules on disk; `require` + runtime() in a
// new process, cold (a fresh TMPDIR: no remembered test load or python probe, so the loader's
// child-process test load runs) and warm (the install's TMPDIR, where the install script already
// remembered the test load, as after a user's npm install); the RSS after that, and after one
// 2x3x64x64 lossAndGrad step (vgg19, the defaults).
//   node bench/install.js [--runs 3] [--warm 5] [--out bench/results/install-<date>.json]
// The tarballs come from release/ (`node scripts/pack-release.js --if-stale` first). Run it alone:
// other work on the CPUs slows every figure; the load that other processes put on the machine
// meanwhile is recorded. The page cache is not dropped, so a "cold" require reads libtorch from
// memory as on a machine that has just installed it.
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const util = require('node:util');
const { gitInfo, readText } = require('./machine.js');
const { median } = require('./timing.js');

const root = path.resolve(__dirname, '..');
const RUNTIME = '@generic-perceptual-loss/libtorch-linux-x64';

const { values } = util.parseArgs({
  options: { runs: { type: 'string', default: '3' }, warm: { type: 'string', default: '5' }, out: { type: 'string' }, 'allow-dirty': { type: 'boolean', default: false } },
});
const runs = Number(values.runs);
const warmRuns = Number(values.warm);
if (!(Number.isInteger(runs) && runs >= 1 && Number.isInteger(warmRuns) && warmRuns >= 1)) {
  console.error('usage: node bench/install.js [--runs N>=1] [--warm N>=1] [--out FILE] [--allow-dirty]');
  process.exit(2);
}
const say = (/** @type {string} */ line) => console.error(`bench:install: ${line}`);

say('release tarballs (pack:release --if-stale)');
execFileSync(process.execPath, [path.join(root, 'scripts/pack-release.js'), '--if-stale'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
const release = JSON.parse(fs.readFileSync(path.join(root, 'release/release.json'), 'utf8'));
const tarball = (name) => release.tarballs.find((t) => t.name === name);
const mainTgz = path.join(root, 'release', tarball('generic-perceptual-loss').filename);
const runtimeTgz = path.join(root, 'release', tarball(RUNTIME).filename);

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-bench-install-'));
process.on('exit', () => fs.rmSync(scratch, { recursive: true, force: true }));

/** The user's environment: nothing set for libtorch, python3 on PATH as it is (without torch here). */
function userEnv(tmp) {
  const env = { ...process.env, TMPDIR: tmp };
  for (const v of ['LIBTORCH', 'LIBTORCH_PYTHON', 'LIBTORCH_USE_PYTORCH', 'LD_LIBRARY_PATH', 'PL_TEST_FLAVOUR']) delete env[v];
  return env;
}

const ROUTES = {
  bundled: { npmArgs: [], pkg: { overrides: { [RUNTIME]: `file:${runtimeTgz}` } }, source: 'bundled' },
  debian: { npmArgs: ['--omit=optional'], pkg: {}, source: 'system' },
};

// require + runtime() (which loads the binary), then one step; times and RSS from inside.
const PROBE = `
const t0 = process.hrtime.bigint();
const { PerceptualLoss, runtime } = require('generic-perceptual-loss');
const info = runtime();
const t1 = process.hrtime.bigint();
const rssRequire = process.memoryUsage().rss;
const n = 2 * 3 * 64 * 64;
const pred = { data: Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37)), shape: [2, 3, 64, 64] };
const target = { data: Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11)), shape: [2, 3, 64, 64] };
const loss = new PerceptualLoss({ inChannels: 3 });
const t2 = process.hrtime.bigint();
loss.lossAndGrad(pred, target);
const t3 = process.hrtime.bigint();
const maps = require('node:fs').readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/')).map((l) => l.slice(l.indexOf('/')));
const libraries = [...new Set(maps.filter((f) => /\\.so(\\.|$)/.test(f)))];
console.log(JSON.stringify({ requireMs: Number(t1 - t0) / 1e6, stepMs: Number(t3 - t2) / 1e6, rssRequire, rssStep: process.memoryUsage().rss, source: info.libtorch.source, version: info.libtorch.version, binary: info.binary, libraries }));
`;

/** The shared libraries a bare node process maps: not counted as libtorch's. */
const BARE = new Set(
  JSON.parse(
    execFileSync(process.execPath, ['-e', "const m = require('node:fs').readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/')).map((l) => l.slice(l.indexOf('/'))); console.log(JSON.stringify([...new Set(m)]))"], { encoding: 'utf8' }),
  ),
);

/** Bytes of these shared libraries on disk. */
function librariesBytes(libraries) {
  return libraries.reduce((sum, f) => sum + fs.statSync(f).size, 0);
}

function probe(app, env) {
  const child = spawnSync(process.execPath, ['-e', PROBE], { cwd: app, env, encoding: 'utf8' });
  if (child.status !== 0) throw new Error(`probe failed in ${app}: ${child.stderr}`);
  return JSON.parse(child.stdout.trim().split('\n').pop());
}

/** Bytes on disk (allocated blocks) and apparent bytes of a folder. */
function diskUsage(dir) {
  const [disk] = execFileSync('du', ['-s', '--block-size=1', dir], { encoding: 'utf8' }).split('\t');
  const [apparent] = execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t');
  return { disk: Number(disk), apparent: Number(apparent) };
}

/** Machine-wide busy CPU ticks and those of this process and its waited-for children. */
function cpuTicks() {
  const [user, nice, system, , , irq, softirq] = readText('/proc/stat').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const rest = readText('/proc/self/stat').slice(readText('/proc/self/stat').lastIndexOf(')') + 2).split(' ');
  return { busy: user + nice + system + irq + softirq, own: Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]), at: process.hrtime.bigint() };
}

function oneRun(name, i) {
  const route = ROUTES[name];
  const app = path.join(scratch, `${name}-${i}`);
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: `bench-${name}`, version: '1.0.0', private: true, dependencies: { 'generic-perceptual-loss': `file:${mainTgz}` }, ...route.pkg }, null, 2));
  const tmp = fs.mkdtempSync(path.join(scratch, `tmp-${name}-${i}-`));
  const env = userEnv(tmp);
  const t0 = process.hrtime.bigint();
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...route.npmArgs], { cwd: app, env, stdio: 'ignore' });
  const installS = Number(process.hrtime.bigint() - t0) / 1e9;
  const size = diskUsage(path.join(app, 'node_modules'));
  // The install script test-loads the binary and remembers it in TMPDIR: a cold require gets a
  // fresh TMPDIR (nothing remembered: the test load in a child process and the python probe run).
  const installScriptRan = fs.existsSync(path.join(tmp, `generic-perceptual-loss-${process.getuid()}-loadcheck.json`));
  const cold = probe(app, userEnv(fs.mkdtempSync(path.join(scratch, `cold-${name}-${i}-`))));
  if (cold.source !== route.source) throw new Error(`${name}: the loaded libtorch came from ${cold.source}, not ${route.source}`);
  // What the process maps beyond a bare node: libtorch, the libraries it links, the addon.
  cold.libraries = cold.libraries.filter((f) => !BARE.has(f));
  cold.librariesBytes = librariesBytes(cold.libraries);
  // eslint-disable-next-line no-unused-vars -- the list is kept once per run, from the cold probe
  const warm = Array.from({ length: warmRuns }, () => probe(app, env)).map(({ libraries: _libraries, ...w }) => w);
  fs.rmSync(app, { recursive: true, force: true });
  return { installS, installScriptRan, size, cold, warm };
}

const git = gitInfo(values['allow-dirty']);
if (git.dirty && !values['allow-dirty']) say(`warning: the tree has uncommitted changes (${git.dirtyFiles.length} files); the figures are for them too`);
const start = cpuTicks();
const samples = { bundled: [], debian: [] };
for (let i = 0; i < runs; i++) {
  for (const name of Object.keys(ROUTES)) {
    say(`run ${i + 1}/${runs}: ${name}`);
    samples[name].push(oneRun(name, i));
  }
}
const end = cpuTicks();
const wallS = Number(end.at - start.at) / 1e9;
const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
const otherShare = (end.busy - start.busy - (end.own - start.own)) / (wallS * os.availableParallelism() * ticks);

const summary = Object.fromEntries(
  Object.entries(samples).map(([name, rs]) => [
    name,
    {
      installS: median(rs.map((r) => r.installS)),
      nodeModulesDiskBytes: median(rs.map((r) => r.size.disk)),
      nodeModulesApparentBytes: median(rs.map((r) => r.size.apparent)),
      coldRequireMs: median(rs.map((r) => r.cold.requireMs)),
      warmRequireMs: median(rs.flatMap((r) => r.warm.map((w) => w.requireMs))),
      rssAfterRequireBytes: median(rs.flatMap((r) => r.warm.map((w) => w.rssRequire))),
      rssAfterStepBytes: median(rs.flatMap((r) => r.warm.map((w) => w.rssStep))),
      stepMs: median(rs.flatMap((r) => r.warm.map((w) => w.stepMs))),
      loadedLibrariesBytes: median(rs.map((r) => r.cold.librariesBytes)),
      loadedLibraries: rs[0].cold.libraries.length,
      libtorch: { source: rs[0].cold.source, version: rs[0].cold.version },
    },
  ]),
);

const cpuModel = (readText('/proc/cpuinfo').match(/model name\s*:\s*(.*)/) ?? [])[1] ?? os.cpus()[0]?.model;
const result = {
  date: new Date().toISOString(),
  git,
  machine: { cpu: cpuModel, cpus: os.availableParallelism(), memoryBytes: os.totalmem(), node: process.version, npm: execFileSync('npm', ['--version'], { encoding: 'utf8' }).trim(), os: readText('/etc/debian_version').trim() ? `Debian ${readText('/etc/debian_version').trim()}` : os.release() },
  settings: { runs, warmRuns, step: '2x3x64x64 lossAndGrad, vgg19 defaults', npm: 'npm install --prefer-offline --no-audit --no-fund (debian: --omit=optional)' },
  tarballs: release.tarballs.map(({ name, filename, size, unpackedSize }) => ({ name, filename, size, unpackedSize })),
  otherProcessesCpuShare: otherShare,
  wallSeconds: wallS,
  summary,
  samples,
};
const date = result.date.slice(0, 10);
const out = path.resolve(values.out ?? path.join(root, 'bench', 'results', `install-${date}.json`));
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);

const mb = (n) => (n == null ? '-' : `${(n / 1e6).toFixed(1)} MB`);
const ms = (n) => `${n.toFixed(0)} ms`;
const b = summary.bundled;
const d = summary.debian;
const rows = [
  ['tarballs downloaded (packed)', mb(tarball('generic-perceptual-loss').size + tarball(RUNTIME).size), mb(tarball('generic-perceptual-loss').size)],
  ['npm install', `${b.installS.toFixed(1)} s`, `${d.installS.toFixed(1)} s`],
  ['node_modules on disk', mb(b.nodeModulesDiskBytes), mb(d.nodeModulesDiskBytes)],
  ['shared libraries loaded (beyond node)', `${mb(b.loadedLibrariesBytes)} (${b.loadedLibraries} files)`, `${mb(d.loadedLibrariesBytes)} (${d.loadedLibraries} files, from apt)`],
  ['require + runtime(), cold', ms(b.coldRequireMs), ms(d.coldRequireMs)],
  ['require + runtime(), warm', ms(b.warmRequireMs), ms(d.warmRequireMs)],
  ['RSS after require', mb(b.rssAfterRequireBytes), mb(d.rssAfterRequireBytes)],
  ['RSS after one 2x3x64x64 step', mb(b.rssAfterStepBytes), mb(d.rssAfterStepBytes)],
  ['that step (warm process)', ms(b.stepMs), ms(d.stepMs)],
  ['libtorch loaded', `${b.libtorch.source} ${b.libtorch.version}`, `${d.libtorch.source} ${d.libtorch.version}`],
];
console.log(`\nmedians of ${runs} installs (${warmRuns} warm requires each); ${cpuModel}, ${os.availableParallelism()} CPUs; other processes used ${(otherShare * 100).toFixed(0)}% of the CPUs meanwhile`);
console.log(`| | bundled runtime | Debian libtorch-dev |\n| --- | --- | --- |`);
for (const [what, x, y] of rows) console.log(`| ${what} | ${x} | ${y} |`);
console.log(`\nwrote ${path.relative(root, out)}`);
