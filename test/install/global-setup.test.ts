// The global setup (test/global-setup.ts) keeps the compiled package in step with its sources,
// so the suites that run dist/ (child processes, workers, package copies) run the current code.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { distStaleness, ensureBuilt, nativeStaleness, ROOT } from '../global-setup';

const temps: string[] = [];
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-setup-'));
  temps.push(dir);
  return dir;
}
afterAll(() => temps.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** A copy of the TypeScript build's inputs and of this checkout's dist/, timestamps kept. */
function copyOfTsBuild(): string {
  const dir = tempDir();
  for (const name of ['lib', 'dist', 'tsconfig.json', 'package.json', path.join('tools', 'esm-wrapper.js')]) {
    fs.cpSync(path.join(ROOT, name), path.join(dir, name), { recursive: true, preserveTimestamps: true });
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

/** Sets a file's modification time `seconds` from now. */
function touch(file: string, seconds = 0): void {
  const t = new Date(Date.now() + seconds * 1000);
  fs.utimesSync(file, t, t);
}

describe('the global setup', () => {
  it('has left this checkout with dist/ as new as lib/ and no stale local addon build', () => {
    expect(distStaleness()).toBeUndefined();
    expect(nativeStaleness()).toBeUndefined();
  });

  it('rebuilds dist/ after an edit to lib/, and dist/ then holds the edited code', () => {
    const dir = copyOfTsBuild();
    expect(distStaleness(dir)).toBeUndefined();
    expect(ensureBuilt(dir)).toEqual([]);

    const marker = `edited-${process.pid}-${Date.now()}`;
    fs.appendFileSync(path.join(dir, 'lib', 'errors.ts'), `\nexport const EDIT_MARKER = '${marker}';\n`);
    // (Written now: newer than the copied dist/, which keeps the build's timestamps.)
    expect(distStaleness(dir)).toMatch(/^lib\/errors\.ts is newer than dist\/\S+$/);

    expect(ensureBuilt(dir)).toEqual([expect.stringMatching(/^dist\/ rebuilt: lib\/errors\.ts is newer than dist\//)]);
    const requireCopy = createRequire(path.join(dir, 'package.json'));
    expect((requireCopy(path.join(dir, 'dist', 'errors.js')) as { EDIT_MARKER?: string }).EDIT_MARKER).toBe(marker);
    expect(distStaleness(dir)).toBeUndefined();
    expect(ensureBuilt(dir)).toEqual([]); // nothing to do the second time
  }, 300_000);

  it('calls dist/ stale when an output is missing, has no source, or is older than tsconfig or the ESM wrapper', () => {
    const dir = copyOfTsBuild();
    fs.rmSync(path.join(dir, 'dist', 'index.mjs'));
    expect(distStaleness(dir)).toBe('dist/index.mjs is missing');
    fs.cpSync(path.join(ROOT, 'dist', 'index.mjs'), path.join(dir, 'dist', 'index.mjs'), { preserveTimestamps: true });
    expect(distStaleness(dir)).toBeUndefined();

    fs.writeFileSync(path.join(dir, 'dist', 'renamed.js'), '');
    expect(distStaleness(dir)).toBe('dist/renamed.js has no source in lib/');
    fs.rmSync(path.join(dir, 'dist', 'renamed.js'));

    touch(path.join(dir, 'tools', 'esm-wrapper.js'), 5);
    expect(distStaleness(dir)).toMatch(/^tools\/esm-wrapper\.js is newer than dist\//);
    touch(path.join(dir, 'tsconfig.json'), 10);
    expect(distStaleness(dir)).toMatch(/^tsconfig\.json is newer than dist\//);
  });

  it('calls a local addon build stale when a native source or CMakeLists.txt is newer, and ignores a missing one', () => {
    const dir = tempDir();
    fs.mkdirSync(path.join(dir, 'native'));
    fs.writeFileSync(path.join(dir, 'native', 'perceptual.cc'), '');
    fs.writeFileSync(path.join(dir, 'CMakeLists.txt'), '');
    touch(path.join(dir, 'native', 'perceptual.cc'), -20);
    touch(path.join(dir, 'CMakeLists.txt'), -20);
    expect(nativeStaleness(dir)).toBeUndefined(); // no local build: the loader uses a prebuild

    const binary = path.join(dir, 'build', 'Release', 'generic_perceptual_loss.node');
    fs.mkdirSync(path.dirname(binary), { recursive: true });
    fs.writeFileSync(binary, '');
    touch(binary, -10);
    expect(nativeStaleness(dir)).toBeUndefined();

    touch(path.join(dir, 'native', 'perceptual.cc'));
    expect(nativeStaleness(dir)).toBe('native/perceptual.cc is newer than build/Release/generic_perceptual_loss.node');
    touch(binary, 5);
    touch(path.join(dir, 'CMakeLists.txt'), 10);
    expect(nativeStaleness(dir)).toBe('CMakeLists.txt is newer than build/Release/generic_perceptual_loss.node');
  });
});
