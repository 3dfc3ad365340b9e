// The user's path: `npm pack`, then `npm install` of the tarball in a new folder outside the
// repository, and `require` / `import` of the package from there.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss } from '../lib/index';
import { repoRoot } from './helpers/package-copy';
import { run } from './helpers/run';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'gpl-install-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

const COMPILERS = /^(cmake|make|gmake|ninja|cc|c\+\+|gcc|g\+\+|clang|clang\+\+|x86_64-linux-gnu-(gcc|g\+\+|cpp)(-\d+)?|(gcc|g\+\+|cpp)-\d+|nvcc)$/;

/** A PATH with every tool of the current one except compilers and build tools. */
function pathWithoutCompilers(): string {
  const bin = path.join(scratch, 'no-compilers-bin');
  fs.mkdirSync(bin, { recursive: true });
  for (const dir of (process.env.PATH ?? '').split(':')) {
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of entries) {
      const link = path.join(bin, name);
      if (COMPILERS.test(name) || fs.existsSync(link)) continue;
      fs.symlinkSync(path.join(dir, name), link);
    }
  }
  return bin;
}

function newApp(name: string, allowScriptsFor?: string): string {
  const dir = path.join(scratch, name);
  fs.mkdirSync(dir);
  const pkg: Record<string, unknown> = { name, version: '1.0.0', private: true };
  // npm 11 runs a dependency's install script only once the project allows it.
  if (allowScriptsFor) pkg.allowScripts = { [`file:${allowScriptsFor}`]: true };
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
  return dir;
}

function npmInstall(app: string, tarball: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts'], { cwd: app, env });
}

const N = 2 * 3 * 16 * 16;
const PROBE = `
  const pred = Float32Array.from({ length: ${N} }, (_, i) => Math.sin(i * 0.37));
  const target = Float32Array.from({ length: ${N} }, (_, i) => Math.cos(i * 0.11));
  const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11' });
  const r = loss.lossAndGrad({ data: pred, shape: [2, 3, 16, 16] }, { data: target, shape: [2, 3, 16, 16] });
  console.log(JSON.stringify({ loss: r.loss, grad: Array.from(r.grad), binary: runtime().binary }));
`;

interface ProbeResult {
  loss: number;
  grad: number[];
  binary: string;
}

function probe(app: string, mode: 'require' | 'import', env: NodeJS.ProcessEnv = process.env): ProbeResult {
  const args =
    mode === 'require'
      ? ['-e', `const { PerceptualLoss, runtime } = require('generic-perceptual-loss');${PROBE}`]
      : ['--input-type=module', '-e', `import { PerceptualLoss, runtime } from 'generic-perceptual-loss';${PROBE}`];
  return JSON.parse(execFileSync(process.execPath, args, { cwd: app, env, encoding: 'utf8' })) as ProbeResult;
}

/** The same computation in the repository. */
function inRepo(): { loss: number; grad: number[] } {
  const pred = Float32Array.from({ length: N }, (_, i) => Math.sin(i * 0.37));
  const target = Float32Array.from({ length: N }, (_, i) => Math.cos(i * 0.11));
  const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11' });
  const r = loss.lossAndGrad({ data: pred, shape: [2, 3, 16, 16] }, { data: target, shape: [2, 3, 16, 16] });
  return { loss: r.loss as number, grad: Array.from(r.grad) };
}

let tarball: string;

beforeAll(async () => {
  // The prebuild of the current sources (an incremental build): a stale one would not match the repository.
  await run(process.execPath, ['install/prebuild.js'], { cwd: repoRoot });
  const out = await run('npm', ['pack', '--pack-destination', scratch, '--json'], { cwd: repoRoot });
  const [{ filename, files }] = JSON.parse(out) as Array<{ filename: string; files: Array<{ path: string }> }>;
  tarball = path.join(scratch, filename);
  expect(files.map((f) => f.path).some((p) => p.startsWith('prebuilds/torch1.13-cpu-cxx11/'))).toBe(true);
}, 600_000);

describe('npm install of the packed tarball', () => {
  it('packs the prebuilds and no libtorch library', () => {
    const listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n');
    expect(listing).toContain('package/prebuilds/torch1.13-cpu-cxx11/prebuilds/linux-x64/generic-perceptual-loss.glibc.node');
    expect(listing.filter((f) => /lib(torch|c10)[^/]*\.so/.test(f))).toEqual([]);
  });

  describe('with no compiler or CMake on PATH', () => {
    let app: string;
    let env: NodeJS.ProcessEnv;

    beforeAll(async () => {
      app = newApp('prebuilt-app');
      env = { ...process.env, PATH: pathWithoutCompilers() };
      expect(spawnSync('cmake', ['--version'], { env }).error).toBeDefined();
      expect(spawnSync('g++', ['--version'], { env }).error).toBeDefined();
      await npmInstall(app, tarball, env);
    }, 600_000);

    it('require() loads the matching prebuild and computes what the repository computes', () => {
      const result = probe(app, 'require', env);
      expect(result.binary).toBe(
        path.join(fs.realpathSync(app), 'node_modules/generic-perceptual-loss/prebuilds/torch1.13-cpu-cxx11/prebuilds/linux-x64/generic-perceptual-loss.glibc.node'),
      );
      const expected = inRepo();
      expect(result.loss).toBe(expected.loss);
      expect(result.grad).toEqual(expected.grad);
    });

    it('import loads it too, with the same results', () => {
      const viaImport = probe(app, 'import', env);
      const viaRequire = probe(app, 'require', env);
      expect(viaImport).toEqual(viaRequire);
    });

    it('`doctor` reports the binary and exits 0; `--json` says the same', () => {
      const bin = path.join(app, 'node_modules/.bin/generic-perceptual-loss');
      const text = spawnSync(bin, ['doctor'], { cwd: app, env, encoding: 'utf8' });
      expect(text.status).toBe(0);
      expect(text.stdout).toMatch(/^Node.js +v20/m);
      expect(text.stdout).toContain('* system: libtorch 1.13.0 at /usr/lib/x86_64-linux-gnu, CPU only, C++ ABI cxx11');
      expect(text.stdout).toContain('why          prebuild torch1.13-cpu-cxx11');
      expect(text.stdout).toMatch(/^verdict +OK: libtorch 1\.13\.0 via prebuild torch1\.13-cpu-cxx11, CPU only$/m);
      const json = JSON.parse(spawnSync(bin, ['doctor', '--json'], { cwd: app, env, encoding: 'utf8' }).stdout) as { binary: { reason: string }; check: { loss: number } };
      expect(json).toMatchObject({ ok: true, node: { version: process.version }, prebuilds: ['torch1.13-cpu-cxx11'], cuda: { devices: [] } });
      expect(json.binary.reason).toMatch(/^prebuild torch1\.13-cpu-cxx11/);
      expect(json.check.loss).toBeGreaterThan(0);
    });

    it('`doctor` exits non-zero and explains when no binary fits', () => {
      const bin = path.join(app, 'node_modules/.bin/generic-perceptual-loss');
      const empty = fs.mkdtempSync(path.join(scratch, 'doctor-empty-'));
      const result = spawnSync(bin, ['doctor'], { cwd: app, env: { ...env, LIBTORCH: empty }, encoding: 'utf8' });
      expect(result.status).toBe(1);
      expect(result.stdout).toContain('verdict        NOT WORKING (ERR_LIBTORCH)');
      expect(result.stdout).toContain('npm rebuild generic-perceptual-loss --build-from-source');
    });

    it('with LIBTORCH at an empty folder, require() fails with ERR_LIBTORCH and the fixes', () => {
      const empty = fs.mkdtempSync(path.join(scratch, 'empty-libtorch-'));
      const child = spawnSync(
        process.execPath,
        ['-e', "try { require('generic-perceptual-loss') } catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })) }"],
        { cwd: app, env: { ...env, LIBTORCH: empty }, encoding: 'utf8' },
      );
      const error = JSON.parse(child.stdout) as { name: string; code: string; message: string };
      expect(error.name).toBe('PerceptualLossError');
      expect(error.code).toBe('ERR_LIBTORCH');
      expect(error.message).toContain(`LIBTORCH: ${empty}: no libtorch headers`);
      expect(error.message).toContain('prebuilds in this package: torch1.13-cpu-cxx11');
      for (const fix of [
        'apt-get install libtorch-dev',
        'pip install torch',
        'LIBTORCH=/path/to/libtorch',
        'npm rebuild generic-perceptual-loss --build-from-source',
      ]) {
        expect(error.message).toContain(fix);
      }
    });
  });

  it('without a prebuild, the install builds from source', async () => {
    // The same tarball, less its prebuilds.
    const unpacked = path.join(scratch, 'unpacked');
    fs.mkdirSync(unpacked);
    execFileSync('tar', ['-xzf', tarball, '-C', unpacked]);
    fs.rmSync(path.join(unpacked, 'package/prebuilds'), { recursive: true });
    const bare = path.join(scratch, 'no-prebuilds.tgz');
    execFileSync('tar', ['-czf', bare, '-C', unpacked, 'package']);

    const app = newApp('source-build-app', bare);
    const log = await npmInstall(app, bare);
    expect(log).toContain('generic-perceptual-loss: building from source');
    const result = probe(app, 'require');
    expect(result.binary).toBe(path.join(fs.realpathSync(app), 'node_modules/generic-perceptual-loss/build/Release/generic_perceptual_loss.node'));
    const expected = inRepo();
    expect(result.loss).toBeCloseTo(expected.loss, 6);
  }, 600_000);
});
