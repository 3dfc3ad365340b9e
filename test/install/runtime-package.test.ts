// The runtime package @generic-perceptual-loss/libtorch-linux-x64, end to end: the two tarballs of
// `npm run pack:release`, installed by `npm install` into a fresh folder with no compiler, CMake or
// make on PATH. The app depends on the main package alone; npm brings the runtime because the main
// package lists it in optionalDependencies (an `overrides` entry stands in for the registry, which
// does not have it: it serves the release tarball for that name).
//
// "Nothing else could serve" is a private mount namespace (test/helpers/hide-libtorch.ts, as root):
// Debian's libtorch libraries are bound over by /dev/null, its CMake config and headers, every
// python's torch package and the repository's .venv are covered by empty tmpfs mounts. The first
// test checks that the hiding took effect inside.
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flavour } from '../helpers/flavours';
import { otherLibtorches, pythonsOnPath, runHidden, spawnHidden, type Hiding } from '../helpers/hide-libtorch';
import { pathWithoutCompilers, releaseTarballs, type Release } from '../helpers/install';
import { repoRoot } from '../helpers/package-copy';
import { run } from '../helpers/run';

const RUNTIME = '@generic-perceptual-loss/libtorch-linux-x64';
/** A binary's place among a package's prebuilds (`torch2.13-cpu-cxx11/prebuilds/linux-x64/...`), or undefined outside them. */
function prebuildOf(packageRoot: string, binary: string): string | undefined {
  const relative = path.relative(path.join(packageRoot, 'prebuilds'), binary);
  return relative.startsWith('..') ? undefined : relative;
}
const installedPackage = (app: string) => path.join(app, 'node_modules/generic-perceptual-loss');
const RUNTIME_LIBS = ['libc10.so', 'libgomp.so.1', 'libtorch_cpu.so'];

const scratch = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'pl-runtime-')));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

let release: Release;
let noCompilers: string;

beforeAll(async () => {
  // pack:release (its prepack builds every prebuild) unless release/ is newer than its sources.
  release = await releaseTarballs();
  noCompilers = pathWithoutCompilers(scratch);
}, 1_800_000);

const tarList = (tarball: string) => execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8', maxBuffer: 16 << 20 }).split('\n').filter(Boolean);
const tarJson = <T>(tarball: string, member: string) => JSON.parse(execFileSync('tar', ['-xzOf', tarball, member], { encoding: 'utf8' })) as T;
/** pip's torch 2.13 (CPU) of .venv/torch2.13-cpu: the torch/ folder. */
const pipTorch213 = () => path.resolve(flavour('torch2.13-cpu-cxx11').python, '../../lib/python3.11/site-packages/torch');
const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

interface RuntimeManifest {
  name: string;
  version: string;
  os: string[];
  cpu: string[];
  libc: string[];
  scripts?: Record<string, string>;
  libtorch: { version: string; cuda: boolean; cxx11Abi: boolean; wheel: string; sha256: Record<string, string> };
}

describe('the runtime tarball', () => {
  it('is for Linux x64 with glibc only, and is versioned as the torch it carries', () => {
    const pkg = tarJson<RuntimeManifest>(release.runtime, 'package/package.json');
    expect(pkg).toMatchObject({ name: RUNTIME, version: '2.13.0', os: ['linux'], cpu: ['x64'], libc: ['glibc'] });
    expect(pkg.libtorch).toMatchObject({ version: '2.13.0', cuda: false, cxx11Abi: true, wheel: 'torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl' });
  });

  it('runs nothing at install: no install script, and no binding.gyp (npm would run node-gyp for one)', () => {
    const pkg = tarJson<RuntimeManifest>(release.runtime, 'package/package.json');
    expect(Object.keys(pkg.scripts ?? {}).filter((s) => /install/.test(s))).toEqual([]);
    expect(tarList(release.runtime)).not.toContain('package/binding.gyp');
  });

  it("holds libc10, libtorch_cpu and libgomp, torch's LICENSE and third-party notices, and no headers", () => {
    const files = tarList(release.runtime);
    expect(files.filter((f) => f.startsWith('package/lib/')).sort()).toEqual(RUNTIME_LIBS.map((l) => `package/lib/${l}`));
    expect(files).toContain('package/LICENSE');
    expect(files).toContain('package/third_party/sleef/LICENSE.txt');
    expect(files).toContain('package/third_party/libgomp/COPYING.RUNTIME');
    expect(files.filter((f) => /\.(h|hpp|cuh)$/.test(f) || f.includes('/include/'))).toEqual([]);
  });

  it('packs to at most 150 MB', () => {
    const { size } = fs.statSync(release.runtime);
    console.log(`${path.basename(release.runtime)}: ${(size / 1e6).toFixed(1)} MB`);
    expect(size).toBeLessThanOrEqual(150e6);
  });

  it('the main tarball asks for it in optionalDependencies at exactly its version, and carries no libtorch itself', () => {
    const main = tarJson<{ optionalDependencies?: Record<string, string>; dependencies?: Record<string, string> }>(release.main, 'package/package.json');
    expect(main.optionalDependencies).toEqual({ [RUNTIME]: '2.13.0' });
    expect(Object.keys(main.dependencies ?? {})).not.toContain(RUNTIME);
    expect(tarList(release.main).filter((f) => /lib(torch|c10|gomp)[^/]*\.so/.test(f))).toEqual([]);
  });
});

/** A new app that depends on the main package only; the runtime comes through its optionalDependencies. */
function newApp(name: string): string {
  const dir = path.join(scratch, name);
  fs.mkdirSync(dir);
  const pkg = {
    name,
    version: '1.0.0',
    private: true,
    dependencies: { 'generic-perceptual-loss': `file:${release.main}` },
    // The registry's stand-in: what `npm install` would fetch for the runtime's name.
    overrides: { [RUNTIME]: `file:${release.runtime}` },
  };
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
  return dir;
}

const NPM_INSTALL = ['install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts'];

/** The environment of a user who set nothing: no LIBTORCH, no python setting, no compiler on PATH. */
function userEnv(name: string, pathPrefix?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: pathPrefix ? `${pathPrefix}:${noCompilers}` : noCompilers };
  for (const v of ['LIBTORCH', 'LIBTORCH_PYTHON', 'LIBTORCH_USE_PYTORCH', 'PL_TEST_FLAVOUR', 'LD_LIBRARY_PATH', 'LD_PRELOAD']) delete env[v];
  // A fresh temp folder: no remembered test load or python probe from another run.
  env.TMPDIR = fs.mkdtempSync(path.join(scratch, `tmp-${name}-`));
  return env;
}

const N = 2 * 3 * 16 * 16;
const PROBE = `
  const pred = Float32Array.from({ length: ${N} }, (_, i) => Math.sin(i * 0.37));
  const target = Float32Array.from({ length: ${N} }, (_, i) => Math.cos(i * 0.11));
  const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11' });
  const r = loss.lossAndGrad({ data: pred, shape: [2, 3, 16, 16] }, { data: target, shape: [2, 3, 16, 16] });
  const info = runtime();
  const mapped = process.getBuiltinModule('node:fs').readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/')).map((l) => l.slice(l.indexOf('/')));
  const libs = [...new Set(mapped.filter((f) => /\\/lib(torch|c10|gomp|omp|iomp)[^/]*\\.so/.test(f)))].sort();
  console.log(JSON.stringify({ loss: r.loss, grad: Array.from(r.grad), binary: info.binary, libtorch: info.libtorch, reason: info.binaryReason, libs }));
`;

interface ProbeResult {
  loss: number;
  grad: number[];
  binary: string;
  libtorch: { version: string; path: string; flavour?: string; cuda: boolean; source: string };
  reason: string;
  libs: string[];
}

function probeArgs(mode: 'require' | 'import', from = 'generic-perceptual-loss'): string[] {
  return mode === 'require'
    ? ['-e', `const { PerceptualLoss, runtime } = require(${JSON.stringify(from)});${PROBE}`]
    : ['--input-type=module', '-e', `import { PerceptualLoss, runtime } from ${JSON.stringify(from)};${PROBE}`];
}

async function probeHidden(hiding: Hiding, app: string, mode: 'require' | 'import', env: NodeJS.ProcessEnv): Promise<ProbeResult> {
  const out = await runHidden(hiding, process.execPath, probeArgs(mode), { cwd: app, env });
  return JSON.parse(out) as ProbeResult;
}

/**
 * The same computation in this process: the repository's build for pip's torch 2.13 (its
 * prebuild, from `npm run prebuilds`), reached by LIBTORCH as PL_TEST_FLAVOUR would. This file
 * loads the package nowhere else, so the setting holds.
 */
async function inRepoWithPipTorch213(): Promise<Pick<ProbeResult, 'loss' | 'grad' | 'libtorch' | 'binary'>> {
  for (const v of ['LIBTORCH_PYTHON', 'LIBTORCH_USE_PYTORCH']) delete process.env[v];
  process.env.LIBTORCH = pipTorch213();
  const { PerceptualLoss, runtime } = await import('../../lib/index');
  const pred = Float32Array.from({ length: N }, (_, i) => Math.sin(i * 0.37));
  const target = Float32Array.from({ length: N }, (_, i) => Math.cos(i * 0.11));
  const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11' });
  const r = loss.lossAndGrad({ data: pred, shape: [2, 3, 16, 16] }, { data: target, shape: [2, 3, 16, 16] });
  const info = runtime();
  return { loss: r.loss, grad: Array.from(r.grad), libtorch: { ...info.libtorch, path: info.libtorch.path ?? '' }, binary: info.binary };
}

interface DoctorJson {
  ok: boolean;
  libtorch: Array<{ source: string; usable: boolean; version?: string; libraryDir?: string }>;
  binary: { file: string; reason: string; source: string; runtimePackage?: string; flavour?: string };
}

describe('installed with no compiler and no other libtorch (a private mount namespace)', () => {
  let app: string;
  let env: NodeJS.ProcessEnv;
  let hiding: Hiding;
  let runtimeLib: string;

  beforeAll(async () => {
    hiding = otherLibtorches();
    app = newApp('bundled-app');
    env = userEnv('bundled');
    runtimeLib = path.join(app, 'node_modules', RUNTIME, 'lib');
    await runHidden(hiding, 'npm', NPM_INSTALL, { cwd: app, env });
  }, 600_000);

  it("hides every other libtorch: Debian's libraries, CMake config and headers, each python's torch, the repository's .venv", () => {
    expect(hiding.files).toContain('/usr/lib/x86_64-linux-gnu/libtorch_cpu.so.1.13.0');
    expect(hiding.dirs).toEqual(expect.arrayContaining(['/usr/lib/x86_64-linux-gnu/cmake/Torch', '/usr/include/torch', '/usr/lib/python3/dist-packages/torch', path.join(repoRoot, '.venv')]));
    const check = `
      const fs = require('node:fs');
      const { execFileSync } = require('node:child_process');
      const [files, dirs, pythons] = JSON.parse(process.argv[1]);
      // A covered torch/ folder still imports, as an empty namespace package: a torch has a version.
      const torch = (py) => { try { return execFileSync(py, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return null; } };
      console.log(JSON.stringify({
        bytes: files.map((f) => fs.readFileSync(f).length),
        entries: dirs.map((d) => fs.readdirSync(d).length),
        torches: pythons.map(torch),
      }));`;
    const pythons = pythonsOnPath(env);
    const inside = spawnHidden(hiding, process.execPath, ['-e', check, JSON.stringify([hiding.files, hiding.dirs, pythons])], { env });
    expect(inside.status, inside.stderr).toBe(0);
    const seen = JSON.parse(inside.stdout) as { bytes: number[]; entries: number[]; torches: Array<string | null> };
    expect(seen.bytes).toEqual(hiding.files.map(() => 0));
    expect(seen.entries).toEqual(hiding.dirs.map(() => 0));
    expect(pythons.length).toBeGreaterThan(0);
    expect(seen.torches).toEqual(pythons.map(() => null));
    // Outside the namespace nothing changed.
    expect(fs.statSync('/usr/lib/x86_64-linux-gnu/libtorch_cpu.so.1.13.0').size).toBeGreaterThan(0);
  });

  it('npm installed the runtime package from its release tarball, as an optional dependency of the main package', () => {
    const lock = JSON.parse(fs.readFileSync(path.join(app, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string; resolved?: string; optional?: boolean; dependencies?: Record<string, string> }> };
    expect(lock.packages[''].dependencies).toEqual({ 'generic-perceptual-loss': `file:${release.main}` });
    expect(lock.packages[`node_modules/${RUNTIME}`]).toMatchObject({ version: '2.13.0', optional: true });
    expect(path.resolve(app, lock.packages[`node_modules/${RUNTIME}`].resolved!.replace(/^file:/, ''))).toBe(release.runtime);
  });

  it("its libraries are pip's torch 2.13 libraries, byte for byte", () => {
    const pip = path.join(pipTorch213(), 'lib');
    for (const lib of RUNTIME_LIBS) expect(sha256(path.join(runtimeLib, lib)), lib).toBe(sha256(path.join(pip, lib)));
  });

  it("require() loads the 2.13 prebuild against the bundled runtime and computes what the repository's build computes with pip's torch 2.13", async () => {
    const result = await probeHidden(hiding, app, 'require', env);
    expect(result.libtorch).toMatchObject({ source: 'bundled', version: '2.13.0', flavour: 'torch2.13-cpu-cxx11', cuda: false, path: runtimeLib });
    expect(result.reason).toMatch(/^prebuild \S+ for bundled: /);
    const expected = await inRepoWithPipTorch213();
    expect(expected.libtorch).toMatchObject({ source: 'LIBTORCH', flavour: 'torch2.13-cpu-cxx11' });
    // The same prebuild: the installed package's copy of the one the repository chose for torch 2.13.
    expect(prebuildOf(installedPackage(app), result.binary)).toBeDefined();
    expect(prebuildOf(installedPackage(app), result.binary)).toBe(prebuildOf(repoRoot, expected.binary));
    expect(result.loss).toBe(expected.loss);
    expect(result.grad).toEqual(expected.grad);
  });

  it('every libtorch library the process maps is the runtime package’s: the prebuild needs no other', async () => {
    const { libs } = await probeHidden(hiding, app, 'require', env);
    expect(libs).toEqual(RUNTIME_LIBS.map((l) => path.join(runtimeLib, l)));
  });

  it('import loads it too, with the same results', async () => {
    const viaImport = await probeHidden(hiding, app, 'import', env);
    const viaRequire = await probeHidden(hiding, app, 'require', env);
    expect(viaImport).toEqual(viaRequire);
  });

  it('`doctor` exits 0 and names the bundled runtime as the libtorch in use', () => {
    const bin = path.join(app, 'node_modules/.bin/generic-perceptual-loss');
    const text = spawnHidden(hiding, bin, ['doctor'], { cwd: app, env });
    expect(text.status, text.stdout + text.stderr).toBe(0);
    expect(text.stdout).toContain(`  * bundled: libtorch 2.13.0 at ${runtimeLib}, CPU only, C++ ABI cxx11, from ${RUNTIME}@2.13.0 (libraries only)`);
    expect(text.stdout).toContain(`  libtorch     the bundled runtime ${RUNTIME}@2.13.0`);
    expect(text.stdout).toMatch(/^verdict +OK: libtorch 2\.13\.0 via prebuild \S+, CPU only$/m);
    const json = JSON.parse(spawnHidden(hiding, bin, ['doctor', '--json'], { cwd: app, env }).stdout) as DoctorJson;
    expect(json.ok).toBe(true);
    expect(json.binary).toMatchObject({ source: 'bundled', runtimePackage: `${RUNTIME}@2.13.0`, flavour: 'torch2.13-cpu-cxx11' });
    expect(json.libtorch.map((c) => [c.source, c.usable])).toEqual([
      ['python', false],
      ['bundled', true],
      ['system', false],
    ]);
  });
});

describe("installed, with the user's own PyTorch as python3 on PATH", () => {
  it("python3's torch comes before the bundled runtime: its prebuild loads against it", async () => {
    // python3 is the 2.14 (CUDA 13.0) environment's; Debian's libtorch stays hidden, .venv does not.
    const hiding = otherLibtorches({ keep: [path.join(repoRoot, '.venv')] });
    const shims = path.join(scratch, 'python-shims');
    fs.mkdirSync(shims);
    fs.writeFileSync(path.join(shims, 'python3'), `#!/bin/sh\nexec ${flavour('torch2.14-cu130-cxx11').python} "$@"\n`, { mode: 0o755 });
    const app = newApp('python-app');
    const env = userEnv('python', shims);
    await runHidden(hiding, 'npm', NPM_INSTALL, { cwd: app, env });
    expect(fs.existsSync(path.join(app, 'node_modules', RUNTIME, 'lib/libtorch_cpu.so'))).toBe(true);

    const result = await probeHidden(hiding, app, 'require', env);
    expect(result.libtorch).toMatchObject({ source: 'python', version: '2.14.1', flavour: 'torch2.14-cu130-cxx11', cuda: true });
    expect(result.reason).toMatch(/^prebuild \S+ for python: libtorch 2\.14\.1 /);
    expect(prebuildOf(installedPackage(app), result.binary)).toBeDefined();
    expect(result.libs.filter((l) => l.includes(`/node_modules/${RUNTIME}/`))).toEqual([]);
    const doctor = JSON.parse(spawnHidden(hiding, path.join(app, 'node_modules/.bin/generic-perceptual-loss'), ['doctor', '--json'], { cwd: app, env }).stdout) as DoctorJson;
    expect(doctor.libtorch.map((c) => [c.source, c.usable])).toEqual([
      ['python', true],
      ['bundled', true],
      ['system', false],
    ]);
    expect(doctor.binary.source).toBe('python');
  }, 600_000);
});

describe("installed, with Debian's libtorch there too", () => {
  it("the bundled runtime comes before the system's libtorch", async () => {
    // Only the pythons' torches (and .venv) are hidden: /usr/lib/x86_64-linux-gnu keeps Debian's libtorch.
    const hiding = otherLibtorches({ keep: ['/usr/lib/x86_64-linux-gnu', '/usr/include'] });
    const app = newApp('system-app');
    const env = userEnv('system');
    await runHidden(hiding, 'npm', NPM_INSTALL, { cwd: app, env });
    const doctor = JSON.parse(spawnHidden(hiding, path.join(app, 'node_modules/.bin/generic-perceptual-loss'), ['doctor', '--json'], { cwd: app, env }).stdout) as DoctorJson;
    expect(doctor.libtorch.map((c) => [c.source, c.usable])).toEqual([
      ['python', false],
      ['bundled', true],
      ['system', true],
    ]);
    expect(doctor.binary).toMatchObject({ source: 'bundled', flavour: 'torch2.13-cpu-cxx11' });
  }, 600_000);
});

describe('on another platform', () => {
  // npm's own platform settings stand in for the machine: it filters optional packages by them.
  it.each([['--os=darwin'], ['--cpu=arm64'], ['--libc=musl']])('`npm install %s` skips the runtime package and succeeds', async (flag) => {
    const app = newApp(`other-${flag.replace(/\W/g, '')}`);
    await run('npm', [...NPM_INSTALL, '--ignore-scripts', flag], { cwd: app, env: userEnv('other') });
    expect(fs.existsSync(path.join(app, 'node_modules/generic-perceptual-loss/package.json'))).toBe(true);
    expect(fs.existsSync(path.join(app, 'node_modules', RUNTIME))).toBe(false);
  }, 600_000);
});
