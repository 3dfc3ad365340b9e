// The binary loader (lib/loader.ts) with real broken binaries, fake and real libtorch folders and
// stale local builds in temporary folders, and each row of the README's troubleshooting table:
// the message a user sees for each way the package can fail to load.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findLibtorch, type LibtorchCandidate } from '../../lib/libtorch';
import { LOCAL_BUILD, PREBUILDS, STABLE_ABI_FLAVOUR, libtorchError, loadNative, planLoad, testLoad, type BinaryChoice } from '../../lib/loader';
import { repoRoot } from '../helpers/package-copy';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-loader-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** The libtorch this process uses (the system's, or python3's). */
let real: LibtorchCandidate;
beforeAll(() => {
  real = findLibtorch().chosen!;
  expect(real?.usable).toBe(true);
});

/** Compiles C source into a shared object named `name`; the compiler is the one the build uses. */
function compile(name: string, source: string): string {
  const src = path.join(scratch, `${name}.c`);
  const out = path.join(scratch, name);
  fs.writeFileSync(src, source);
  execFileSync('cc', ['-shared', '-fPIC', '-o', out, src]);
  return out;
}

/**
 * A libtorch folder of an unknown version (9.9.0, which has no prebuild): headers that only state
 * the version, and the real libtorch's libraries, so that a test load can open them.
 */
function libtorchFolder(name: string, version = [9, 9, 0]): string {
  const root = path.join(scratch, name);
  const header = path.join(root, 'include', 'torch', 'csrc', 'api', 'include', 'torch', 'version.h');
  fs.mkdirSync(path.dirname(header), { recursive: true });
  fs.mkdirSync(path.join(root, 'include', 'ATen'), { recursive: true });
  fs.writeFileSync(path.join(root, 'include', 'ATen', 'ATen.h'), '#pragma once\n');
  const [major, minor, patch] = version;
  fs.writeFileSync(header, `#define TORCH_VERSION_MAJOR ${major}\n#define TORCH_VERSION_MINOR ${minor}\n#define TORCH_VERSION_PATCH ${patch}\n`);
  fs.symlinkSync(real.libraryDir!, path.join(root, 'lib'));
  return root;
}

/**
 * A python3 stand-in that answers discovery's probe as python3 would, with `origin` as the torch
 * package's file ('' = no torch) and no sys.path folders to watch.
 */
function fakePython(name: string, origin: string): string {
  const file = path.join(scratch, name);
  const answer = JSON.stringify({ origin: origin || null, path: [] });
  fs.writeFileSync(file, `#!/bin/sh\necho '${answer}'\n`, { mode: 0o755 });
  return file;
}

const env = (extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, ...extra });

// ------------------------------------------------------------------ the test load

describe('the test load (a child process) and its cache', () => {
  let tmpdir: string | undefined;
  beforeAll(() => {
    // The cache lives in os.tmpdir(): a private one here, so the user's cache is left alone.
    tmpdir = process.env.TMPDIR;
    process.env.TMPDIR = fs.mkdtempSync(path.join(scratch, 'tmp-'));
  });
  afterAll(() => {
    if (tmpdir === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = tmpdir;
  });
  const cacheFile = () => path.join(os.tmpdir(), `generic-perceptual-loss-${process.getuid!()}-loadcheck.json`);
  const choice = (file: string): BinaryChoice => ({ file, libtorch: real, reason: 'test binary' });

  it('passes the working binary, and remembers it by path, size and modification time', () => {
    const file = path.join(scratch, 'good.node');
    fs.copyFileSync(findWorkingBinary(), file);
    const stamp = Math.floor(Date.now() / 1000) - 60; // whole seconds, so that it can be set back exactly
    fs.utimesSync(file, stamp, stamp);
    expect(fs.existsSync(cacheFile())).toBe(false);
    expect(testLoad(choice(file))).toEqual({ ok: true });
    const keys = Object.keys(JSON.parse(fs.readFileSync(cacheFile(), 'utf8')) as Record<string, unknown>);
    expect(keys).toHaveLength(1);
    expect(keys[0].startsWith(`${file}:${fs.statSync(file).size}:${fs.statSync(file).mtimeMs}|`)).toBe(true);

    // Remembered: the same path, size and time are not loaded again, even though the bytes now
    // are not a binary at all.
    fs.writeFileSync(file, Buffer.alloc(fs.statSync(file).size));
    fs.utimesSync(file, stamp, stamp);
    expect(testLoad(choice(file))).toEqual({ ok: true });

    // A new modification time is a new binary: it is test-loaded, and fails.
    fs.utimesSync(file, stamp, stamp + 1);
    const check = testLoad(choice(file));
    expect(check.ok).toBe(false);
    expect((check as { why: string }).why).toMatch(/^Error: .*good\.node: (invalid ELF header|file too short)$/);
  });

  it('reports an undefined symbol (a binary for another libtorch build), and does not remember a failure', () => {
    // A data reference is bound at load time, as the addon's references into libtorch are.
    const file = compile('undefined-symbol.node', 'extern int pl_missing_symbol;\nint *pl_use = &pl_missing_symbol;\n');
    for (let attempt = 0; attempt < 2; attempt++) {
      expect(testLoad(choice(file))).toEqual({ ok: false, why: `Error: ${file}: undefined symbol: pl_missing_symbol` });
    }
    const cached = fs.existsSync(cacheFile()) ? Object.keys(JSON.parse(fs.readFileSync(cacheFile(), 'utf8')) as Record<string, unknown>) : [];
    expect(cached.some((k) => k.startsWith(`${file}:`))).toBe(false);
  });

  it('survives a binary that crashes as it loads, and says so', () => {
    const file = compile('crash.node', '#include <signal.h>\n__attribute__((constructor)) static void crash(void) { raise(SIGSEGV); }\n');
    expect(testLoad(choice(file))).toEqual({ ok: false, why: 'crashed with SIGSEGV' });
  });

  it('a cache that cannot be written costs a test load next time, and no error', () => {
    // A directory where the cache file would be: neither readable as JSON nor writable, even as root.
    fs.rmSync(cacheFile(), { force: true });
    fs.mkdirSync(cacheFile());
    try {
      const file = path.join(scratch, 'good-uncached.node');
      fs.copyFileSync(findWorkingBinary(), file);
      expect(testLoad(choice(file))).toEqual({ ok: true });
      expect(fs.statSync(cacheFile()).isDirectory()).toBe(true);
      // Nothing was remembered: a broken binary at the same path is test-loaded again, and fails.
      const stat = fs.statSync(file);
      fs.writeFileSync(file, Buffer.alloc(stat.size));
      fs.utimesSync(file, stat.atime, stat.mtime);
      expect(testLoad(choice(file)).ok).toBe(false);
    } finally {
      fs.rmdirSync(cacheFile());
    }
  });

  it('reports a binary that loads but is no Node-API module', () => {
    const file = compile('not-an-addon.node', 'int pl_nothing = 0;\n');
    const check = testLoad(choice(file));
    expect(check.ok).toBe(false);
    expect((check as { why: string }).why).toMatch(/Module did not self-register|runtimeInfo is not a function/);
  });
});

/** The binary this process loaded: the local build, or a prebuild. */
function findWorkingBinary(): string {
  const plan = planLoad();
  expect(plan.choices.length).toBeGreaterThan(0);
  return plan.choices[0].file;
}

// ------------------------------------------------------------------ troubleshooting, row by row

describe("the README's troubleshooting rows: the message says", () => {
  const message = (extra: NodeJS.ProcessEnv) => libtorchError(planLoad(env(extra)), []).message;

  it('`LIBTORCH: /x: no libtorch headers (ATen/ATen.h) under /x/include` for a folder that is not libtorch', () => {
    const x = fs.mkdtempSync(path.join(scratch, 'not-libtorch-'));
    const search = findLibtorch(env({ LIBTORCH: x }));
    expect(search.chosen).toBeUndefined(); // never skipped silently
    expect(message({ LIBTORCH: x })).toContain(`\n  - LIBTORCH: ${x}: no libtorch headers (ATen/ATen.h) under ${x}/include\n`);
  });

  it('`unset LIBTORCH or point it at a libtorch folder (with include/ and lib/)` first, for a LIBTORCH that is no libtorch', () => {
    const lines = message({ LIBTORCH: '/nonexistent' }).split('\n');
    const fixes = lines.slice(lines.indexOf('Fix it with one of:') + 1);
    expect(fixes[0]).toBe(
      '  - unset LIBTORCH or point it at a libtorch folder (with include/ and lib/): it is /nonexistent, and while it is set no other libtorch is looked for, so the fixes below need it unset',
    );
    expect(lines).toContain('  - LIBTORCH: /nonexistent: /nonexistent does not exist');
  });

  it('no `unset LIBTORCH` fix where LIBTORCH is a libtorch (its binaries are what failed)', () => {
    const x = libtorchFolder('libtorch-9.9-usable');
    expect(message({ LIBTORCH: x })).not.toContain('unset LIBTORCH');
  });

  it('`no libtorch_cpu.so / libc10.so in /x/lib` for headers without the libraries', () => {
    const x = fs.mkdtempSync(path.join(scratch, 'headers-only-'));
    fs.mkdirSync(path.join(x, 'include', 'ATen'), { recursive: true });
    fs.writeFileSync(path.join(x, 'include', 'ATen', 'ATen.h'), '');
    fs.mkdirSync(path.join(x, 'lib'));
    expect(message({ LIBTORCH: x })).toContain(`\n  - LIBTORCH: ${x}: no libtorch_cpu.so / libc10.so in ${x}/lib\n`);
  });

  it('`python: python3 has no torch package` for an interpreter without torch', () => {
    const python = fakePython('python3-without-torch', '');
    const lines = message({ LIBTORCH_PYTHON: python }).split('\n');
    expect(lines).toContain(`  - python: ${python}: ${python} has no torch package`);
  });

  // Only where the system has no libtorch (not Debian with libtorch-dev): the system folders are fixed.
  it.skipIf(findLibtorch(env({ LIBTORCH_USE_PYTORCH: '0' })).chosen !== undefined)(
    '`system: no TorchConfig.cmake in the system folders` where the system has no libtorch',
    () => {
      expect(message({ LIBTORCH_USE_PYTORCH: '0' })).toMatch(/\n {2}- system: .*: no TorchConfig\.cmake in the system folders\n/);
    },
  );

  it('`torch X ships no C++ library` for a torch package without include/ and lib/', () => {
    const torch = path.join(scratch, 'site-packages', 'torch');
    fs.mkdirSync(torch, { recursive: true });
    fs.writeFileSync(path.join(torch, '__init__.py'), '');
    fs.writeFileSync(path.join(torch, 'version.py'), "__version__ = '2.5.1+cpu'\ncuda = None\n");
    const python = fakePython('python3-bare-torch', path.join(torch, '__init__.py'));
    expect(message({ LIBTORCH_PYTHON: python })).toMatch(
      new RegExp(`\\n {2}- python: ${torch}: torch 2\\.5\\.1 ships no C\\+\\+ library: no libtorch headers \\(ATen/ATen\\.h\\) under ${torch}/include\\n`),
    );
  });

  it('`no prebuild torchX.Y-FLAVOUR-ABI for ...` for a libtorch without a prebuild', () => {
    const x = libtorchFolder('libtorch-9.9');
    const plan = planLoad(env({ LIBTORCH: x }));
    expect(plan.search.chosen).toMatchObject({ source: 'LIBTORCH', version: '9.9.0', usable: true });
    // No exact prebuild; the stable-ABI one (every torch >= 2.10) is what is left to offer.
    expect(plan.choices.filter((c) => c.reason.startsWith('prebuild '))).toEqual([]);
    expect(plan.notes).toContain(`no prebuild torch9.9-cpu-cxx11 for LIBTORCH: libtorch 9.9.0 at ${x}/lib, CPU only, C++ ABI cxx11, C++20`);
    expect(libtorchError(plan, []).message).toContain('  - npm rebuild generic-perceptual-loss --build-from-source');
  });

  it.runIf(fs.existsSync(path.join(PREBUILDS, STABLE_ABI_FLAVOUR)))('offers the stable-ABI prebuild to a torch >= 2.10 that has no exact prebuild, saying so (where the stable-ABI prebuild is built)', () => {
    const x = libtorchFolder('libtorch-9.9-stable');
    const plan = planLoad(env({ LIBTORCH: x }));
    expect(plan.choices.map((c) => c.reason)).toEqual([`stable-ABI prebuild (every torch >= 2.10; no exact prebuild) for LIBTORCH: libtorch 9.9.0 at ${x}/lib, CPU only, C++ ABI cxx11, C++20`]);
    expect(plan.choices[0].file).toBe(path.join(PREBUILDS, STABLE_ABI_FLAVOUR, 'prebuilds', `${process.platform}-${process.arch}`, 'generic-perceptual-loss.glibc.node'));
  });

  it.runIf(fs.existsSync(path.join(PREBUILDS, STABLE_ABI_FLAVOUR)))('never offers the stable-ABI prebuild to a torch below 2.10, and says why (where the stable-ABI prebuild is built)', () => {
    const x = libtorchFolder('libtorch-2.9-old', [2, 9, 0]);
    const plan = planLoad(env({ LIBTORCH: x }));
    expect(plan.choices).toEqual([]);
    expect(plan.notes).toContain(`the stable-ABI prebuild serves torch 2.10 and later with the C++11 ABI, not LIBTORCH: libtorch 2.9.0 at ${x}/lib, CPU only, C++ ABI cxx11, C++17`);
  });

  it('PL_BINARY takes exact or stable-abi only: ERR_OPTIONS naming the setting', () => {
    expect(() => planLoad(env({ PL_BINARY: 'fast' }))).toThrow(/^Invalid environment setting PL_BINARY: got "fast"; allowed: exact, stable-abi, or unset\.$/);
  });

  it('PL_STABLE_ABI_SHIMS takes 0 or 1 only: ERR_OPTIONS naming the setting', () => {
    expect(() => planLoad(env({ PL_STABLE_ABI_SHIMS: 'off' }))).toThrow(/^Invalid environment setting PL_STABLE_ABI_SHIMS: got "off"; allowed: 0, 1, or unset\.$/);
  });

  it('PL_STABLE_ABI_SHIMS=0 is noted in the plan', () => {
    expect(planLoad(env({ PL_STABLE_ABI_SHIMS: '0' })).notes).toContain('PL_STABLE_ABI_SHIMS=0: the stable-ABI binary reaches every op through the dispatcher by name');
  });

  // Where this checkout has a local build; the package copy below checks the same without one.
  it.runIf(fs.existsSync(LOCAL_BUILD))('`the local build ... is for /a, not the LIBTORCH folder` for a local build made for another libtorch (where this checkout has a local build)', () => {
    const x = libtorchFolder('libtorch-other');
    const notes = planLoad(env({ LIBTORCH: x })).notes;
    expect(notes.some((n) => n.startsWith(`the local build ${LOCAL_BUILD} is for `) && n.endsWith(', not the LIBTORCH folder'))).toBe(true);
  });

  it('`no prebuild can be matched to ...: its version or CUDA version is unknown` for a libtorch whose headers state no version', () => {
    const x = libtorchFolder('libtorch-unversioned');
    fs.writeFileSync(path.join(x, 'include', 'torch', 'csrc', 'api', 'include', 'torch', 'version.h'), '#pragma once\n');
    const plan = planLoad(env({ LIBTORCH: x }));
    expect(plan.choices.filter((c) => c.reason.startsWith('prebuild'))).toEqual([]);
    expect(plan.notes.some((n) => n.startsWith('no prebuild can be matched to LIBTORCH: ') && n.endsWith(': its version or CUDA version is unknown'))).toBe(true);
  });

  it('`python: skipped (LIBTORCH_USE_PYTORCH=0)` when the python probe is turned off', () => {
    const lines = message({ LIBTORCH: path.join(scratch, 'no-such-libtorch'), LIBTORCH_USE_PYTORCH: '0' }).split('\n');
    expect(lines).toContain('  - python: skipped (LIBTORCH_USE_PYTORCH=0)');
    expect(lines.some((l) => l.startsWith('  - python:') && !l.includes('skipped'))).toBe(false);
  });

  // Where this package has the 1.13 prebuild (npm run setup makes it): a libtorch folder that
  // claims 1.13 but whose libraries are not ELF files matches it, and its test load fails.
  it.runIf(fs.existsSync(path.join(repoRoot, 'prebuilds', 'torch1.13-cpu-cxx11')))(
    'loadNative() reports a prebuild that fails its test load in this process, and loads nothing (where the package has the torch1.13-cpu-cxx11 prebuild)',
    () => {
      const x = path.join(scratch, 'libtorch-broken');
      const header = path.join(x, 'include', 'torch', 'csrc', 'api', 'include', 'torch', 'version.h');
      fs.mkdirSync(path.dirname(header), { recursive: true });
      fs.mkdirSync(path.join(x, 'include', 'ATen'), { recursive: true });
      fs.mkdirSync(path.join(x, 'lib'));
      fs.writeFileSync(path.join(x, 'include', 'ATen', 'ATen.h'), '#pragma once\n');
      fs.writeFileSync(header, '#define TORCH_VERSION_MAJOR 1\n#define TORCH_VERSION_MINOR 13\n#define TORCH_VERSION_PATCH 0\n');
      // The cxx11 ABI's mangled std::string, as discovery reads it from libc10; no ELF header.
      for (const lib of ['c10', 'torch_cpu', 'torch']) fs.writeFileSync(path.join(x, 'lib', `lib${lib}.so`), 'NSt7__cxx1112basic_string\n');
      const saved = process.env.LIBTORCH;
      process.env.LIBTORCH = x;
      try {
        let error: unknown;
        try {
          loadNative();
        } catch (e) {
          error = e;
        }
        expect((error as { code?: string }).code).toBe('ERR_LIBTORCH');
        expect((error as Error).message).toMatch(
          /\n {2}- prebuild torch1\.13-cpu-cxx11 for LIBTORCH: .*\.node failed its test load: Error: .*libc10\.so: (invalid ELF header|file too short)\n/,
        );
      } finally {
        if (saved === undefined) delete process.env.LIBTORCH;
        else process.env.LIBTORCH = saved;
      }
    },
  );

  it('loadNative() throws ERR_LIBTORCH with the whole story, and loads nothing', () => {
    const saved = process.env.LIBTORCH;
    const missing = path.join(scratch, 'no-such-libtorch');
    process.env.LIBTORCH = missing;
    try {
      loadNative();
      expect.unreachable();
    } catch (error) {
      expect((error as { code: string }).code).toBe('ERR_LIBTORCH');
      const text = (error as Error).message;
      expect(text.split('\n')[0]).toBe('generic-perceptual-loss could not load a native binary for the libtorch on this machine.');
      expect(text).toContain(`\n  - LIBTORCH: ${missing}: ${missing} does not exist\n`);
      expect(text).toMatch(/\nBinaries:\n {2}- prebuilds in this package: /);
      expect(text).toContain('\nFix it with one of:\n');
    } finally {
      if (saved === undefined) delete process.env.LIBTORCH;
      else process.env.LIBTORCH = saved;
    }
  });
});

// ------------------------------------------------------------------ in a package copy

/**
 * A copy of the compiled package with its own build/ and prebuilds/ folders, loaded in a child
 * process: the loader looks for binaries beside itself.
 */
describe('a package copy with its own local build and prebuilds (child processes)', () => {
  let pkg: string;
  beforeAll(() => {
    pkg = path.join(scratch, 'package');
    fs.mkdirSync(pkg);
    for (const entry of ['package.json', 'dist']) fs.cpSync(path.join(repoRoot, entry), path.join(pkg, entry), { recursive: true });
    fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(pkg, 'node_modules'));
  });
  afterEach(() => {
    fs.rmSync(path.join(pkg, 'build'), { recursive: true, force: true });
    fs.rmSync(path.join(pkg, 'prebuilds'), { recursive: true, force: true });
  });

  /** Runs `body` (JavaScript, with `loader` and `index` paths) in a child; returns its JSON output. */
  function child(body: string, extra: NodeJS.ProcessEnv = {}): { status: number | null; out: unknown; stderr: string } {
    const script = `const loader = require(${JSON.stringify(path.join(pkg, 'dist', 'loader.js'))});\n${body}`;
    const result = spawnSync(process.execPath, ['-e', script], {
      encoding: 'utf8',
      env: { ...process.env, TMPDIR: fs.mkdtempSync(path.join(scratch, 'tmp-')), ...extra },
    });
    let out: unknown;
    try {
      out = JSON.parse(result.stdout);
    } catch {
      out = result.stdout;
    }
    return { status: result.status, out, stderr: result.stderr };
  }

  function localBuild(record: unknown): string {
    const release = path.join(pkg, 'build', 'Release');
    fs.mkdirSync(release, { recursive: true });
    fs.copyFileSync(findWorkingBinary(), path.join(release, 'generic_perceptual_loss.node'));
    if (record !== undefined) fs.writeFileSync(path.join(release, 'libtorch.json'), JSON.stringify(record));
    return path.join(release, 'generic_perceptual_loss.node');
  }

  it('uses a local build recorded against the libtorch found', () => {
    const file = localBuild(real);
    const { out } = child('const p = loader.planLoad(); console.log(JSON.stringify(p.choices.map((c) => [c.file, c.reason])));');
    expect((out as string[][])[0][0]).toBe(file);
    expect((out as string[][])[0][1]).toMatch(/^local source build against /);
  });

  it('passes over a local build whose libtorch is gone: `... which is gone; rebuild it`', () => {
    const gone = path.join(scratch, 'deleted-libtorch', 'lib');
    localBuild({ ...real, libraryDir: gone });
    const { out } = child('const p = loader.planLoad(); console.log(JSON.stringify({ files: p.choices.map((c) => c.file), notes: p.notes }));');
    const { files, notes } = out as { files: string[]; notes: string[] };
    expect(files.some((f) => f.includes(path.join(pkg, 'build')))).toBe(false);
    expect(notes).toContain(`the local build was made for the libtorch in ${gone}, which is gone; rebuild it`);
  });

  it('passes over a local build made for another libtorch than LIBTORCH: `... is for /a, not the LIBTORCH folder`', () => {
    const file = localBuild(real);
    const x = libtorchFolder('libtorch-for-copy');
    const { out } = child('console.log(JSON.stringify(loader.planLoad().notes));', { LIBTORCH: x });
    expect(out).toContain(`the local build ${file} is for ${real.libraryDir}, not the LIBTORCH folder`);
  });

  it('a prebuild that fails its test load: `... failed its test load: undefined symbol ...`, and ERR_LIBTORCH', () => {
    const x = libtorchFolder('libtorch-with-broken-prebuild');
    const dir = path.join(pkg, 'prebuilds', 'torch9.9-cpu-cxx11', 'prebuilds', `${process.platform}-${process.arch}`);
    fs.mkdirSync(dir, { recursive: true });
    const bad = compile('broken-prebuild.node', 'extern int pl_missing_symbol;\nint *pl_use = &pl_missing_symbol;\n');
    fs.copyFileSync(bad, path.join(dir, 'generic-perceptual-loss.glibc.node'));
    const { status, out } = child(
      'try { loader.loadNative(); console.log("null"); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }',
      { LIBTORCH: x },
    );
    expect(status).toBe(0); // the child itself did not crash
    const { code, message } = out as { code: string; message: string };
    expect(code).toBe('ERR_LIBTORCH');
    expect(message).toContain('  - prebuilds in this package: torch9.9-cpu-cxx11\n');
    expect(message).toMatch(
      /\n {2}- prebuild torch9\.9-cpu-cxx11 for LIBTORCH: libtorch 9\.9\.0 at .*: .*generic-perceptual-loss\.glibc\.node failed its test load: Error: .*: undefined symbol: pl_missing_symbol\n/,
    );
  });

  it('the prebuild of a flavour without a binary for this platform is reported, not used', () => {
    const x = libtorchFolder('libtorch-other-platform');
    fs.mkdirSync(path.join(pkg, 'prebuilds', 'torch9.9-cpu-cxx11', 'prebuilds', 'win32-arm64'), { recursive: true });
    const { out } = child('const p = loader.planLoad(); console.log(JSON.stringify({ n: p.choices.length, notes: p.notes }));', { LIBTORCH: x });
    const { n, notes } = out as { n: number; notes: string[] };
    expect(n).toBe(0);
    expect(notes.some((note) => note.startsWith(`prebuild torch9.9-cpu-cxx11 has no binary for ${process.platform}-${process.arch}: `))).toBe(true);
  });
});
