// The bundled runtime (@generic-perceptual-loss/libtorch-linux-x64) in libtorch discovery
// (lib/libtorch.ts): how it is read, where it stands in the search order, what the error says
// where it is missing, and the package metadata that makes npm install it on Linux x64 glibc only.
// The end-to-end install is test/install/runtime-package.test.ts.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bundledCandidate, describeCandidate, findLibtorch, runtimeAdvice, runtimeMissing, type LibtorchSearch } from '../../lib/libtorch';
import { libtorchError, planLoad } from '../../lib/loader';
import { flavour } from '../helpers/flavours';
import { repoRoot } from '../helpers/package-copy';

const RUNTIME = '@generic-perceptual-loss/libtorch-linux-x64';
const TEMPLATE = path.join(repoRoot, 'npm/libtorch-linux-x64');
const scratch = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'pl-runtime-search-')));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

const readJson = <T>(file: string) => JSON.parse(fs.readFileSync(file, 'utf8')) as T;

/** The runtime package as npm unpacks it, under `dir`: the template's package.json and lib/ (empty stand-ins). */
function fakeRuntime(dir: string, libs = ['libc10.so', 'libtorch_cpu.so', 'libgomp.so.1']): string {
  const root = path.join(dir, 'node_modules', RUNTIME);
  fs.mkdirSync(path.join(root, 'lib'), { recursive: true });
  fs.copyFileSync(path.join(TEMPLATE, 'package.json'), path.join(root, 'package.json'));
  for (const lib of libs) fs.writeFileSync(path.join(root, 'lib', lib), '');
  return path.join(root, 'package.json');
}

describe('the bundled runtime as a candidate', () => {
  it('is usable, with the version, device and C++ ABI its package.json states, the 2.13 CPU flavour, and no headers', () => {
    const manifest = fakeRuntime(path.join(scratch, 'usable'));
    const libraryDir = path.join(path.dirname(manifest), 'lib');
    expect(bundledCandidate(manifest)).toMatchObject({
      source: 'bundled',
      usable: true,
      version: '2.13.0',
      cuda: false,
      cxx11Abi: true,
      flavour: 'torch2.13-cpu-cxx11',
      libraryDir,
      libraries: ['c10', 'torch_cpu'],
      includeDirs: [],
      runtimePackage: `${RUNTIME}@2.13.0`,
    });
  });

  it('is described by its package, as libraries only', () => {
    const manifest = fakeRuntime(path.join(scratch, 'described'));
    const libraryDir = path.join(path.dirname(manifest), 'lib');
    expect(describeCandidate(bundledCandidate(manifest))).toBe(`bundled: libtorch 2.13.0 at ${libraryDir}, CPU only, C++ ABI cxx11, from ${RUNTIME}@2.13.0 (libraries only)`);
  });

  it('is not usable for a source build, which needs headers, and says so', () => {
    const candidate = bundledCandidate(fakeRuntime(path.join(scratch, 'for-build')), { forBuild: true });
    expect(candidate.usable).toBe(false);
    expect(candidate.problem).toBe(`${RUNTIME}@2.13.0 holds libraries only, no headers: a source build needs a libtorch with its headers (pip install torch, apt-get install libtorch-dev, or LIBTORCH)`);
  });

  it('is not usable without libtorch_cpu.so, and names the folder', () => {
    const manifest = fakeRuntime(path.join(scratch, 'no-torch-cpu'), ['libc10.so']);
    const candidate = bundledCandidate(manifest);
    expect(candidate.usable).toBe(false);
    expect(candidate.problem).toBe(`${RUNTIME}@2.13.0: no libtorch_cpu.so / libc10.so in ${path.join(path.dirname(manifest), 'lib')}`);
  });
});

describe('the search order', () => {
  it('in this checkout (no runtime package installed): listed after python3 and before the system, as not installed', () => {
    const { candidates } = findLibtorch({ PATH: process.env.PATH });
    expect(candidates.map((c) => c.source)).toEqual(['python', 'bundled', 'system']);
    expect(candidates[1]).toMatchObject({ usable: false, location: RUNTIME, problem: runtimeMissing() });
  });

  // The package as npm installs it (dist/ in node_modules/generic-perceptual-loss), with the runtime
  // package beside it: discovery resolves the runtime from the package's own folder.
  function installedSearch(layout: 'hoisted' | 'nested', env: NodeJS.ProcessEnv): LibtorchSearch {
    const app = path.join(scratch, `app-${layout}-${Object.keys(env).join('-') || 'plain'}`);
    const pkg = path.join(app, 'node_modules/generic-perceptual-loss');
    fs.mkdirSync(pkg, { recursive: true });
    fs.cpSync(path.join(repoRoot, 'dist'), path.join(pkg, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(repoRoot, 'package.json'), path.join(pkg, 'package.json'));
    fakeRuntime(layout === 'hoisted' ? app : pkg);
    const script = `process.stdout.write(JSON.stringify(require(${JSON.stringify(path.join(pkg, 'dist/libtorch.js'))}).findLibtorch(process.env)))`;
    return JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: app, encoding: 'utf8', env: { PATH: process.env.PATH, TMPDIR: scratch, ...env } })) as LibtorchSearch;
  }

  it.each(['hoisted', 'nested'] as const)('found %s beside the installed package, and chosen before the system', (layout) => {
    const search = installedSearch(layout, { LIBTORCH_USE_PYTORCH: '0' });
    expect(search.candidates.map((c) => [c.source, c.usable])).toEqual([
      ['bundled', true],
      ['system', true],
    ]);
    expect(search.chosen).toMatchObject({ source: 'bundled', flavour: 'torch2.13-cpu-cxx11' });
    expect(search.chosen!.libraryDir).toContain(`/node_modules/${RUNTIME}/lib`);
  });

  it("comes after python3's torch", () => {
    const search = installedSearch('hoisted', { LIBTORCH_PYTHON: flavour('torch2.13-cpu-cxx11').python });
    expect(search.candidates.map((c) => [c.source, c.usable])).toEqual([
      ['python', true],
      ['bundled', true],
      ['system', true],
    ]);
    expect(search.chosen?.source).toBe('python');
  });

  it('comes after LIBTORCH', () => {
    const search = installedSearch('hoisted', { LIBTORCH: path.resolve(flavour('torch2.13-cpu-cxx11').python, '../../lib/python3.11/site-packages/torch') });
    expect(search.candidates.map((c) => c.source)).toEqual(['LIBTORCH', 'python', 'bundled', 'system']);
    expect(search.chosen?.source).toBe('LIBTORCH');
  });
});

describe('what to install where the runtime is missing', () => {
  it('on Linux x64 with glibc: the runtime package, at exactly the version this package asks for', () => {
    expect(runtimeMissing('linux', 'x64', 'glibc')).toBe(`not installed: npm installs it with this package unless optional dependencies are omitted (npm install ${RUNTIME}@2.13.0)`);
    expect(runtimeAdvice('linux', 'x64', 'glibc')).toMatch(new RegExp(`^npm install ${RUNTIME}@2\\.13\\.0 `));
  });

  it.each([
    ['darwin', 'arm64', '', 'darwin-arm64'],
    ['win32', 'x64', '', 'win32-x64'],
    ['linux', 'x64', 'musl', 'linux-x64 (musl)'],
    ['linux', 'arm64', 'glibc', 'linux-arm64 (glibc)'],
  ])('on %s %s %s: that there is none, and a libtorch of your own with a source build', (platform, arch, libc, named) => {
    expect(runtimeMissing(platform, arch, libc)).toBe(`none for ${named}: the runtime package and the prebuilds are for linux-x64 with glibc`);
    const advice = runtimeAdvice(platform, arch, libc);
    expect(advice).toContain(`on ${named}, with no bundled runtime or prebuild`);
    expect(advice).toContain('pip install torch');
    expect(advice).toContain('LIBTORCH=/path/to/libtorch');
    expect(advice).not.toContain(RUNTIME);
  });

  it('ERR_LIBTORCH lists the runtime package as not installed, with the command that installs it', () => {
    const message = libtorchError(planLoad({ PATH: process.env.PATH, LIBTORCH: path.join(scratch, 'no-such-libtorch') }), []).message;
    expect(message.split('\n')).toContain(`  - bundled: ${RUNTIME}: not installed: npm installs it with this package unless optional dependencies are omitted (npm install ${RUNTIME}@2.13.0)`);
  });

  it("ERR_LIBTORCH's fixes offer this platform's runtime package, or say there is none", () => {
    const message = libtorchError(planLoad({ PATH: process.env.PATH, LIBTORCH: path.join(scratch, 'no-such-libtorch') }), []).message;
    expect(message.split('\n')).toContain(`  - ${runtimeAdvice()}`);
  });
});

describe('the package metadata', () => {
  interface Manifest {
    name: string;
    version: string;
    os?: string[];
    cpu?: string[];
    libc?: string[];
    scripts?: Record<string, string>;
    libtorch?: { version: string };
    optionalDependencies?: Record<string, string>;
    files?: string[];
  }
  const template = () => readJson<Manifest>(path.join(TEMPLATE, 'package.json'));

  it("the runtime's template is for Linux x64 with glibc, has no scripts, and is versioned as the torch it carries", () => {
    const pkg = template();
    expect(pkg).toMatchObject({ name: RUNTIME, os: ['linux'], cpu: ['x64'], libc: ['glibc'] });
    expect(pkg.scripts).toBeUndefined();
    expect(pkg.version).toBe(pkg.libtorch?.version);
  });

  it('the main package asks for it in optionalDependencies at exactly its version, and does not publish it', () => {
    const main = readJson<Manifest>(path.join(repoRoot, 'package.json'));
    expect(main.optionalDependencies).toEqual({ [RUNTIME]: template().version });
    expect(main.files).not.toContain('npm/');
  });

  it('package-lock.json records it as optional, for Linux x64 with glibc: `npm ci` installs it there and skips it elsewhere or when it cannot be fetched', () => {
    const lock = readJson<{ packages: Record<string, Manifest & { optional?: boolean; optionalDependencies?: Record<string, string> }> }>(path.join(repoRoot, 'package-lock.json'));
    expect(lock.packages[''].optionalDependencies).toEqual({ [RUNTIME]: template().version });
    expect(lock.packages[`node_modules/${RUNTIME}`]).toMatchObject({ version: template().version, optional: true, os: ['linux'], cpu: ['x64'], libc: ['glibc'] });
  });
});
