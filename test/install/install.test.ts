// The user's path: `npm pack`, then `npm install` of the tarball in a new folder outside the
// repository, and `require` / `import` of the package from there.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss } from '../../lib/index';
import { FLAVOURS, PREBUILD_FOLDERS, STABLE_ABI_PREBUILD, flavour, flavourSeesGpu, type Flavour } from '../helpers/flavours';
import { repoRoot } from '../helpers/package-copy';
import { pathWithoutCompilers } from '../helpers/install';
import { maxElementError } from '../helpers/reference';
import { run } from '../helpers/run';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-install-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

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
  const info = runtime();
  console.log(JSON.stringify({ loss: r.loss, grad: Array.from(r.grad), binary: info.binary, libtorch: info.libtorch, reason: info.binaryReason }));
`;

interface ProbeResult {
  loss: number;
  grad: number[];
  binary: string;
  libtorch: { version: string; flavour?: string; cuda: boolean; gpu: boolean };
  reason: string;
}

function probe(app: string, mode: 'require' | 'import', env: NodeJS.ProcessEnv = process.env, from = 'generic-perceptual-loss'): ProbeResult {
  const args =
    mode === 'require'
      ? ['-e', `const { PerceptualLoss, runtime } = require(${JSON.stringify(from)});${PROBE}`]
      : ['--input-type=module', '-e', `import { PerceptualLoss, runtime } from ${JSON.stringify(from)};${PROBE}`];
  return JSON.parse(execFileSync(process.execPath, args, { cwd: app, env, encoding: 'utf8' })) as ProbeResult;
}

/** The environment that reaches a flavour by its own route, with no compiler on PATH. */
function flavourEnv(f: Flavour, noCompilers: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: noCompilers };
  for (const name of ['LIBTORCH', 'LIBTORCH_PYTHON', 'LIBTORCH_USE_PYTORCH']) delete env[name];
  if (f.flavour === 'torch2.13-cpu-cxx11') {
    // python3 on PATH is the 2.13 environment's, as after `source .venv/torch2.13-cpu/bin/activate`.
    env.PATH = `${path.dirname(f.python)}:${noCompilers}`;
  } else if (f.flavour === 'torch2.14-cu130-cxx11') {
    env.LIBTORCH = f.env.LIBTORCH;
  } else {
    // The system's libtorch: a python3 on PATH that has no torch of its own.
    env.LIBTORCH_USE_PYTORCH = '0';
  }
  return env;
}


/** The same computation in the repository. */
function inRepo(): { loss: number; grad: number[] } {
  const pred = Float32Array.from({ length: N }, (_, i) => Math.sin(i * 0.37));
  const target = Float32Array.from({ length: N }, (_, i) => Math.cos(i * 0.11));
  const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11' });
  const r = loss.lossAndGrad({ data: pred, shape: [2, 3, 16, 16] }, { data: target, shape: [2, 3, 16, 16] });
  return { loss: r.loss, grad: Array.from(r.grad) };
}

let tarball: string;

beforeAll(async () => {
  // npm pack runs prepack: the prebuild of every flavour from the current sources (incremental builds).
  const out = await run('npm', ['pack', '--pack-destination', scratch, '--json'], { cwd: repoRoot });
  // prepack's build log comes first; npm's JSON report is last.
  const [{ filename }] = JSON.parse(out.slice(out.lastIndexOf('[\n  {'))) as Array<{ filename: string }>;
  tarball = path.join(scratch, filename);
}, 1_800_000);

describe('npm install of the packed tarball', () => {
  it('packs a prebuild for each of the three flavours and the stable-ABI one, and no libtorch library', () => {
    const listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n');
    expect(listing.filter((f) => f.endsWith('.node'))).toEqual(
      PREBUILD_FOLDERS.map((tag) => `package/prebuilds/${tag}/prebuilds/linux-x64/generic-perceptual-loss.glibc.node`),
    );
    expect(listing.filter((f) => /lib(torch|c10)[^/]*\.so/.test(f))).toEqual([]);
  });

  describe('with no compiler or CMake on PATH', () => {
    let app: string;
    let env: NodeJS.ProcessEnv;

    beforeAll(async () => {
      app = newApp('prebuilt-app');
      env = { ...process.env, PATH: pathWithoutCompilers(scratch) };
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
      expect(text.stdout).toContain('* system: libtorch 1.13.0 at /usr/lib/x86_64-linux-gnu, CPU only, C++ ABI cxx11, C++17');
      expect(text.stdout).toContain('why          prebuild torch1.13-cpu-cxx11');
      expect(text.stdout).toMatch(/^verdict +OK: libtorch 1\.13\.0 via prebuild torch1\.13-cpu-cxx11, CPU only$/m);
      const json = JSON.parse(spawnSync(bin, ['doctor', '--json'], { cwd: app, env, encoding: 'utf8' }).stdout) as { binary: { reason: string }; check: { loss: number } };
      expect(json).toMatchObject({ ok: true, node: { version: process.version }, prebuilds: PREBUILD_FOLDERS, cuda: { devices: [] } });
      expect(json.binary.reason).toMatch(/^prebuild torch1\.13-cpu-cxx11/);
      expect(json.check.loss).toBeGreaterThan(0);
    });

    // The stable-ABI prebuild alone: the installed copy with its exact prebuilds deleted, still no
    // compiler, so nothing else could serve.
    describe('the stable-ABI prebuild, with the exact prebuilds deleted', () => {
      let stableApp: string;
      const stableBinary = () =>
        path.join(fs.realpathSync(stableApp), `node_modules/generic-perceptual-loss/prebuilds/${STABLE_ABI_PREBUILD}/prebuilds/linux-x64/generic-perceptual-loss.glibc.node`);

      beforeAll(() => {
        stableApp = path.join(scratch, 'stable-abi-app');
        fs.cpSync(app, stableApp, { recursive: true, verbatimSymlinks: true });
        const prebuilds = path.join(stableApp, 'node_modules/generic-perceptual-loss/prebuilds');
        for (const tag of Object.keys(FLAVOURS)) fs.rmSync(path.join(prebuilds, tag), { recursive: true, force: true });
        expect(fs.readdirSync(prebuilds)).toEqual([STABLE_ABI_PREBUILD]);
      });

      it('serves torch 2.13 (CPU) reached through python3, as the exact 2.13 build computes', () => {
        const result = probe(stableApp, 'require', flavourEnv(flavour('torch2.13-cpu-cxx11'), env.PATH!));
        expect(result.binary).toBe(stableBinary());
        expect(result.reason).toMatch(/^stable-ABI prebuild \(every torch >= 2\.10; no exact prebuild\) for python: libtorch 2\.13\.0 /);
        expect(result.libtorch).toMatchObject({ version: '2.13.0', flavour: 'torch2.13-cpu-cxx11' });
        const exact = probe(app, 'require', flavourEnv(flavour('torch2.13-cpu-cxx11'), env.PATH!));
        expect(exact.reason).toMatch(/^prebuild torch2\.13-cpu-cxx11 /);
        expect(Math.abs(result.loss - exact.loss) / Math.abs(exact.loss)).toBeLessThan(1e-6);
        expect(maxElementError(result.grad, exact.grad), 'the largest elementwise difference of the gradient, relative to its largest magnitude').toBeLessThanOrEqual(1e-6);
      });

      it.runIf(!flavourSeesGpu(FLAVOURS['torch2.14-cu130-cxx11']))('serves torch 2.14.1 (CUDA 13.0) reached through LIBTORCH: without a GPU, warns PL_NO_GPU and computes on the CPU within 1e-5 of torch 2.13', () => {
        const cudaEnv = flavourEnv(flavour('torch2.14-cu130-cxx11'), env.PATH!);
        const script = `
          const warnings = [];
          process.on('warning', (w) => warnings.push(w.code));
          const { PerceptualLoss, runtime } = require('generic-perceptual-loss');
          const device = new PerceptualLoss({ inChannels: 3 }).options.device;
          setImmediate(() => console.log(JSON.stringify({ warnings, device, reason: runtime().binaryReason, gpu: runtime().libtorch.gpu })));`;
        const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: stableApp, env: cudaEnv, encoding: 'utf8' })) as {
          warnings: string[];
          device: string;
          reason: string;
          gpu: boolean;
        };
        expect(out.reason).toMatch(/^stable-ABI prebuild .* for LIBTORCH: libtorch 2\.14\.1 /);
        expect(out.warnings).toContain('PL_NO_GPU');
        expect(out.device).toBe('cpu');
        const result = probe(stableApp, 'require', cudaEnv);
        const cpu = probe(stableApp, 'require', flavourEnv(flavour('torch2.13-cpu-cxx11'), env.PATH!));
        expect(Math.abs(result.loss - cpu.loss) / Math.abs(cpu.loss)).toBeLessThan(1e-5);
        expect(maxElementError(result.grad, cpu.grad), 'the largest elementwise difference of the gradient, relative to its largest magnitude').toBeLessThanOrEqual(1e-5);
      });

      it('is never offered to a torch below 2.10 (the system libtorch 1.13): ERR_LIBTORCH, saying why', () => {
        const script = `try { require('generic-perceptual-loss'); console.log('loaded'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
        const out = execFileSync(process.execPath, ['-e', script], { cwd: stableApp, env: flavourEnv(FLAVOURS['torch1.13-cpu-cxx11'], env.PATH!), encoding: 'utf8' });
        const error = JSON.parse(out) as { code: string; message: string };
        expect(error.code).toBe('ERR_LIBTORCH');
        expect(error.message).toMatch(/the stable-ABI prebuild serves torch 2\.10 and later with the C\+\+11 ABI, not system: libtorch 1\.13\.0/);
      });
    });

    // Each flavour by its own route, from the same installed package: its prebuild, not a source build.
    const cpuReference: Record<string, ProbeResult> = {};
    for (const tag of Object.keys(FLAVOURS)) {
      describe(`flavour ${tag} (${FLAVOURS[tag].route})`, () => {
        const f = () => flavour(tag);
        const prebuild = () => path.join(fs.realpathSync(app), `node_modules/generic-perceptual-loss/prebuilds/${tag}/prebuilds/linux-x64/generic-perceptual-loss.glibc.node`);

        it('require() and import load its prebuild and compute what the repository computes with that libtorch', () => {
          const flavourEnvironment = flavourEnv(f(), env.PATH!);
          const viaRequire = probe(app, 'require', flavourEnvironment);
          expect(viaRequire.binary).toBe(prebuild());
          expect(viaRequire.reason).toMatch(new RegExp(`^prebuild ${tag} for `));
          // Whether a GPU is usable: PyTorch's own answer with that libtorch, not an assumption.
          expect(viaRequire.libtorch).toMatchObject({ version: f().version, flavour: tag, cuda: f().cuda, gpu: flavourSeesGpu(f()) });
          expect(probe(app, 'import', flavourEnvironment)).toEqual(viaRequire);
          // The repository's own build for this libtorch (build/Release for 1.13, otherwise
          // the flavour's build in build/flavours/, of which the prebuild is a stripped copy).
          const repoEnv = flavourEnv(f(), process.env.PATH!);
          const inRepository = probe(repoRoot, 'require', repoEnv, path.join(repoRoot, 'dist/index.js'));
          expect(inRepository.libtorch.flavour).toBe(tag);
          expect(viaRequire.loss).toBe(inRepository.loss);
          expect(viaRequire.grad).toEqual(inRepository.grad);
          if (!f().cuda) cpuReference[tag] = viaRequire;
        });

        it('`doctor` names the prebuild and why', () => {
          const bin = path.join(app, 'node_modules/.bin/generic-perceptual-loss');
          const text = spawnSync(bin, ['doctor'], { cwd: app, env: flavourEnv(f(), env.PATH!), encoding: 'utf8' });
          expect(text.status).toBe(0);
          expect(text.stdout).toContain(`binary         ${prebuild()}`);
          expect(text.stdout).toMatch(new RegExp(`^  why          prebuild ${tag} for \\S+: libtorch ${f().version.replace(/\./g, '\\.')} at `, 'm'));
          expect(text.stdout).toContain(`flavour        ${tag}`);
          expect(text.stdout).toMatch(new RegExp(`^verdict +OK: libtorch ${f().version.replace(/\./g, '\\.')} via prebuild ${tag}, `, 'm'));
        });

        // Where PyTorch with this libtorch sees no usable GPU (elsewhere the run lists it as skipped).
        if (FLAVOURS[tag].cuda) {
          it.runIf(!flavourSeesGpu(FLAVOURS[tag]))('without a GPU: warns PL_NO_GPU, computes on the CPU within 1e-5 of the CPU flavour, and device cuda is ERR_DEVICE naming the cause', () => {
            const script = `
              const warnings = [];
              process.on('warning', (w) => warnings.push(w.code));
              const { PerceptualLoss } = require('generic-perceptual-loss');
              const loss = new PerceptualLoss({ inChannels: 3 });
              let error;
              try { new PerceptualLoss({ inChannels: 3, device: 'cuda' }); } catch (e) { error = { code: e.code, message: e.message }; }
              setImmediate(() => console.log(JSON.stringify({ device: loss.options.device, warnings, error })));`;
            const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: app, env: flavourEnv(f(), env.PATH!), encoding: 'utf8' })) as { device: string; warnings: string[]; error: { code: string; message: string } };
            expect(out.warnings).toContain('PL_NO_GPU');
            expect(out.device).toBe('cpu');
            expect(out.error.code).toBe('ERR_DEVICE');
            expect(out.error.message).toContain('sees no CUDA device');
            const cuda = probe(app, 'require', flavourEnv(f(), env.PATH!));
            const cpu = cpuReference['torch2.13-cpu-cxx11'] ?? probe(app, 'require', flavourEnv(flavour('torch2.13-cpu-cxx11'), env.PATH!));
            expect(Math.abs(cuda.loss - cpu.loss) / Math.abs(cpu.loss)).toBeLessThan(1e-5);
            const norm = (g: number[]) => Math.sqrt(g.reduce((s, v) => s + v * v, 0));
            const diff = norm(cuda.grad.map((g, i) => g - cpu.grad[i]));
            expect(diff / norm(cpu.grad)).toBeLessThan(1e-5);
            expect(maxElementError(cuda.grad, cpu.grad), 'the largest elementwise difference of the gradient, relative to its largest magnitude').toBeLessThanOrEqual(1e-5);
          });
        }

        // Where PyTorch with this libtorch sees a usable GPU (elsewhere the run lists it as skipped).
        if (FLAVOURS[tag].cuda) {
          it.runIf(flavourSeesGpu(FLAVOURS[tag]))("with a GPU: no PL_NO_GPU, device 'auto' is cuda:0, and the GPU's loss and gradient (TF32 off) are within 1e-4 of the CPU flavour's", () => {
            const script = `
              const warnings = [];
              process.on('warning', (w) => warnings.push(w.code));
              const { PerceptualLoss } = require('generic-perceptual-loss');
              const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', allowTF32: false });
              const pred = Float32Array.from({ length: ${N} }, (_, i) => Math.sin(i * 0.37));
              const target = Float32Array.from({ length: ${N} }, (_, i) => Math.cos(i * 0.11));
              const r = loss.lossAndGrad({ data: pred, shape: [2, 3, 16, 16] }, { data: target, shape: [2, 3, 16, 16] });
              const explicit = new PerceptualLoss({ inChannels: 3, device: 'cuda' }).options.device;
              setImmediate(() => console.log(JSON.stringify({ device: loss.options.device, explicit, warnings, loss: r.loss, grad: Array.from(r.grad) })));`;
            const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: app, env: flavourEnv(f(), env.PATH!), encoding: 'utf8' })) as {
              device: string;
              explicit: string;
              warnings: string[];
              loss: number;
              grad: number[];
            };
            expect(out.warnings).not.toContain('PL_NO_GPU');
            expect([out.device, out.explicit]).toEqual(['cuda:0', 'cuda:0']);
            const cpu = cpuReference['torch2.13-cpu-cxx11'] ?? probe(app, 'require', flavourEnv(flavour('torch2.13-cpu-cxx11'), env.PATH!));
            expect(Math.abs(out.loss - cpu.loss) / Math.abs(cpu.loss)).toBeLessThan(1e-4);
            expect(maxElementError(out.grad, cpu.grad), 'the largest elementwise difference of the gradient, relative to its largest magnitude').toBeLessThanOrEqual(1e-4);
          });
        }
      });
    }

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
      expect(error.message).toContain(`prebuilds in this package: ${PREBUILD_FOLDERS.join(', ')}`);
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
    expect(maxElementError(result.grad, expected.grad), 'the largest elementwise difference of the gradient, relative to its largest magnitude').toBeLessThanOrEqual(1e-5);
  }, 600_000);
});
