// libtorch discovery: $LIBTORCH, then python3's torch, then the system's CMake config.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findLibtorch } from '../lib/libtorch';
import { repoRoot } from './helpers/package-copy';

const SYSTEM_LIB = '/usr/lib/x86_64-linux-gnu';
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'gpl-discovery-'));
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
  it("finds Debian's libtorch 1.13 (CPU, C++11 ABI) through the system CMake config", () => {
    const { chosen } = findLibtorch({ ...base, LIBTORCH_USE_PYTORCH: '0' });
    expect(chosen).toMatchObject({ source: 'system', version: '1.13.0', cuda: false, cxx11Abi: true, libraryDir: SYSTEM_LIB });
    expect(chosen!.libraries).toEqual(['c10', 'torch_cpu']);
  });

  it('looks at LIBTORCH first, then python3, then the system', () => {
    const { candidates } = findLibtorch({ ...base, LIBTORCH: fakeLibtorchFolder() });
    expect(candidates.map((c) => c.source)).toEqual(['LIBTORCH', 'python', 'system']);
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
    expect(candidates.map((c) => c.source)).toEqual(['system']);
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
    expect(found).toContain('* system: libtorch 1.13.0 at /usr/lib/x86_64-linux-gnu, CPU only, C++ ABI cxx11');
    const empty = fs.mkdtempSync(path.join(scratch, 'none-'));
    const missing = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...base, LIBTORCH: empty } });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain(`LIBTORCH: ${empty}`);
    expect(missing.stderr).toContain('apt-get install libtorch-dev');
  });
});
