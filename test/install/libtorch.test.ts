// libtorch discovery: $LIBTORCH, then python3's torch, the bundled runtime, then the system's CMake config.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cxxStandardFor, findLibtorch } from '../../lib/libtorch';
import { flavour } from '../helpers/flavours';
import { repoRoot } from '../helpers/package-copy';

const SYSTEM_LIB = '/usr/lib/x86_64-linux-gnu';
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-discovery-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** A libtorch folder laid out like the official zip, pointing at the system's files. */
function fakeLibtorchFolder(): string {
  const dir = path.join(scratch, 'libtorch');
  fs.mkdirSync(dir, { recursive: true });
  if (!fs.existsSync(path.join(dir, 'include'))) {
    fs.symlinkSync('/usr/include', path.join(dir, 'include'));
    fs.symlinkSync(SYSTEM_LIB, path.join(dir, 'lib'));
  }
  return dir;
}

const base = { PATH: process.env.PATH } as NodeJS.ProcessEnv;

describe('libtorch discovery', () => {
  it("finds Debian's libtorch 1.13 (CPU, C++11 ABI, C++17) through the system CMake config", () => {
    const { chosen } = findLibtorch({ ...base, LIBTORCH_USE_PYTORCH: '0' });
    expect(chosen).toMatchObject({
      source: 'system',
      version: '1.13.0',
      cuda: false,
      cxx11Abi: true,
      cxxStandard: 17,
      flavour: 'torch1.13-cpu-cxx11',
      libraryDir: SYSTEM_LIB,
    });
    expect(chosen!.libraries).toEqual(['c10', 'torch_cpu']);
  });

  it('looks at LIBTORCH first, then python3, then the bundled runtime, then the system', () => {
    const { candidates } = findLibtorch({ ...base, LIBTORCH: fakeLibtorchFolder() });
    expect(candidates.map((c) => c.source)).toEqual(['LIBTORCH', 'python', 'bundled', 'system']);
  });

  it('uses a libtorch folder given in LIBTORCH', () => {
    const folder = fakeLibtorchFolder();
    const { chosen } = findLibtorch({ ...base, LIBTORCH: folder });
    expect(chosen).toMatchObject({ source: 'LIBTORCH', location: folder, version: '1.13.0', usable: true });
  });

  it('never falls back past a LIBTORCH that holds no libtorch', () => {
    const empty = fs.mkdtempSync(path.join(scratch, 'empty-'));
    const search = findLibtorch({ ...base, LIBTORCH: empty });
    expect(search.chosen).toBeUndefined();
    expect(search.candidates[0].problem).toContain(empty);
  });

  it('skips python3 with LIBTORCH_USE_PYTORCH=0', () => {
    const { candidates } = findLibtorch({ ...base, LIBTORCH_USE_PYTORCH: '0' });
    expect(candidates.map((c) => c.source)).toEqual(['bundled', 'system']);
  });

  it("takes the torch package of python3 before the system (Debian's python3-torch links the system's files)", () => {
    const { chosen } = findLibtorch({ ...base, LIBTORCH_PYTHON: '/usr/bin/python3' });
    expect(chosen).toMatchObject({ source: 'python', location: '/usr/lib/python3/dist-packages/torch', version: '1.13.0', cuda: false, cxx11Abi: true });
  });

  it('reports a python3 without torch and moves on', () => {
    const { candidates, chosen } = findLibtorch({ ...base, LIBTORCH_PYTHON: path.join(scratch, 'no-such-python') });
    expect(candidates[0]).toMatchObject({ source: 'python', usable: false });
    expect(candidates[0].problem).toContain('not found');
    expect(chosen?.source).toBe('system');
  });

  it('prints what it found, and fails with the fixes when nothing fits', () => {
    const script = path.join(repoRoot, 'install/find-libtorch.js');
    const found = execFileSync(process.execPath, [script], { encoding: 'utf8', env: { ...base, LIBTORCH_USE_PYTORCH: '0' } });
    expect(found).toContain('* system: libtorch 1.13.0 at /usr/lib/x86_64-linux-gnu, CPU only, C++ ABI cxx11, C++17');
    expect(found).toContain('  flavour: torch1.13-cpu-cxx11');
    const empty = fs.mkdtempSync(path.join(scratch, 'none-'));
    const missing = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...base, LIBTORCH: empty } });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain(`LIBTORCH: ${empty}`);
    expect(missing.stderr).toContain('apt-get install libtorch-dev');
  });

  it("reads a pip wheel's torch 2.13 (CPU): version from torch/version.py, C++17 from its headers", () => {
    const f = flavour('torch2.13-cpu-cxx11');
    const { chosen } = findLibtorch({ ...base, ...f.env });
    expect(chosen).toMatchObject({ source: 'python', version: '2.13.0', cuda: false, cxx11Abi: true, cxxStandard: 17, flavour: 'torch2.13-cpu-cxx11' });
    expect(chosen!.libraries).toEqual(['c10', 'torch_cpu']);
  });

  it("reads a pip wheel's torch 2.14.1 for CUDA 13.0 through LIBTORCH: C++20, the CUDA libraries, the nvidia wheels' headers", () => {
    const f = flavour('torch2.14-cu130-cxx11');
    const { chosen } = findLibtorch({ ...base, ...f.env });
    expect(chosen).toMatchObject({ source: 'LIBTORCH', version: '2.14.1', cuda: true, cudaVersion: '13.0', cxx11Abi: true, cxxStandard: 20, flavour: 'torch2.14-cu130-cxx11' });
    expect(chosen!.libraries).toEqual(['c10', 'torch_cpu', 'c10_cuda', 'torch_cuda']);
    // No CUDA toolkit needed: cuda_runtime.h and crt/ come from the wheels beside torch.
    expect(chosen!.includeDirs).toContain(path.resolve(f.env.LIBTORCH!, '../nvidia/cu13/include'));
  });

  it('reads an unpacked libtorch zip: version and CUDA from build-version, C++20 from ATen.h, the ABI from TorchConfig.cmake', () => {
    const zip = path.join(repoRoot, 'test/fixtures/libtorch-zip');
    const { chosen } = findLibtorch({ ...base, LIBTORCH: zip });
    expect(chosen).toMatchObject({ source: 'LIBTORCH', version: '2.11.0', cuda: true, cudaVersion: '13.0', cxx11Abi: true, cxxStandard: 20, flavour: 'torch2.11-cu130-cxx11' });
  });

  it('takes the version from TorchConfigVersion.cmake when a zip has no build-version, and then matches no prebuild for an unknown CUDA', () => {
    const copy = path.join(scratch, 'zip-no-build-version');
    fs.cpSync(path.join(repoRoot, 'test/fixtures/libtorch-zip'), copy, { recursive: true });
    fs.rmSync(path.join(copy, 'build-version'));
    fs.writeFileSync(path.join(copy, 'share/cmake/Torch/TorchConfigVersion.cmake'), 'set(PACKAGE_VERSION "2.12.1")\n');
    const { chosen } = findLibtorch({ ...base, LIBTORCH: copy });
    expect(chosen).toMatchObject({ version: '2.12.1', cuda: true, usable: true });
    expect(chosen!.cudaVersion).toBeUndefined();
    expect(chosen!.flavour).toBeUndefined();
  });

  it('the C++ standard is the one ATen.h demands, at least C++17; without one, C++20 from 2.14 on', () => {
    const headers = (line: string) => {
      const dir = fs.mkdtempSync(path.join(scratch, 'aten-'));
      fs.mkdirSync(path.join(dir, 'ATen'));
      fs.writeFileSync(path.join(dir, 'ATen/ATen.h'), line);
      return dir;
    };
    expect(cxxStandardFor(headers('#if !defined(_MSC_VER) && __cplusplus < 202002L\n'), '2.14.1')).toBe(20);
    expect(cxxStandardFor(headers('#if !defined(_MSC_VER) && __cplusplus < 201703L\n'), '2.13.0')).toBe(17);
    expect(cxxStandardFor(headers('#if !defined(_MSC_VER) && __cplusplus < 201402L\n'), '1.13.0')).toBe(17);
    expect(cxxStandardFor(headers('#pragma once\n'), '2.14.0')).toBe(20);
    expect(cxxStandardFor(headers('#pragma once\n'), '2.13.0')).toBe(17);
    expect(cxxStandardFor('/usr/include', '1.13.0')).toBe(17);
  });

  it('asks a python interpreter once: the answer is cached by its path, real path and modification time', () => {
    const log = path.join(scratch, 'python-calls.log');
    const python = path.join(scratch, 'counting-python');
    fs.writeFileSync(python, `#!/bin/sh\necho call >> ${log}\nexec ${flavour('torch2.13-cpu-cxx11').python} "$@"\n`, { mode: 0o755 });
    const calls = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).length : 0);
    const first = findLibtorch({ ...base, LIBTORCH_PYTHON: python }).chosen;
    expect(first).toMatchObject({ source: 'python', flavour: 'torch2.13-cpu-cxx11' });
    expect(calls()).toBe(1);
    expect(findLibtorch({ ...base, LIBTORCH_PYTHON: python }).chosen).toEqual(first);
    expect(calls()).toBe(1);
    // Another interpreter in the same place (a new modification time) is asked again.
    const later = new Date(Date.now() + 5_000);
    fs.utimesSync(python, later, later);
    findLibtorch({ ...base, LIBTORCH_PYTHON: python });
    expect(calls()).toBe(2);
  });

  it('asks again when the cached torch package changed (its version.py)', () => {
    const log = path.join(scratch, 'python-calls-2.log');
    const python = path.join(scratch, 'counting-python-2');
    const pkg = path.join(scratch, 'site', 'torch');
    fs.mkdirSync(pkg, { recursive: true });
    fs.writeFileSync(path.join(pkg, '__init__.py'), '');
    fs.writeFileSync(path.join(pkg, 'version.py'), "__version__ = '9.9.0+cpu'\n");
    fs.writeFileSync(python, `#!/bin/sh\necho call >> ${log}\nPYTHONPATH=${path.dirname(pkg)} exec /usr/bin/python3 "$@"\n`, { mode: 0o755 });
    const calls = () => fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).length;
    const first = findLibtorch({ ...base, LIBTORCH_PYTHON: python, LIBTORCH_USE_PYTORCH: '1' }).candidates[0];
    expect(first.problem).toContain('torch 9.9.0 ships no C++ library');
    findLibtorch({ ...base, LIBTORCH_PYTHON: python });
    expect(calls()).toBe(1);
    const later = new Date(Date.now() + 5_000);
    fs.utimesSync(path.join(pkg, 'version.py'), later, later);
    findLibtorch({ ...base, LIBTORCH_PYTHON: python });
    expect(calls()).toBe(2);
  });
});
