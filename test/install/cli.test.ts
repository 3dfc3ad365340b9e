// The `generic-perceptual-loss` command (lib/cli.ts): usage, `doctor` as text and as JSON, and
// its exit codes: 0 when a binary loads and computes a tiny loss, 1 when not, 2 for a bad command.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main, type DoctorReport } from '../../lib/cli';
import { PerceptualLoss, runtime } from '../../lib/index';

const ROOT = path.resolve(__dirname, '../..');
const USAGE = 'usage: generic-perceptual-loss doctor [--json]';

/** main(argv) with its console output captured. */
function run(argv: string[], cli: typeof main = main): { code: number; stdout: string; stderr: string } {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
  const error = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' ')));
  try {
    return { code: cli(argv), stdout: out.join('\n'), stderr: err.join('\n') };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}

/** doctor's check, computed here: a one-conv network on an 8x8 input. */
function tinyLoss(): number {
  const loss = new PerceptualLoss({ inChannels: 1, arch: [4], device: 'cpu' });
  const data = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
  const value = loss.loss({ data, shape: [1, 1, 8, 8] }, { data: data.map((v) => v / 2), shape: [1, 1, 8, 8] });
  loss.dispose();
  return value;
}

describe('usage', () => {
  it.each([[[]], [['--help']], [['-h']], [['help']], [['doctor', '--help']]])('%j prints the usage and exits 0', (argv) => {
    expect(run(argv)).toEqual({ code: 0, stdout: '', stderr: USAGE });
  });

  it.each([[['doctr']], [['doctor', 'now']], [['train', 'doctor']]])('%j prints the usage and exits 2', (argv) => {
    expect(run(argv)).toEqual({ code: 2, stdout: '', stderr: USAGE });
  });

  it("`doctor --bogus` prints the option's name and the command's own usage, not Node's text about positional arguments, and exits 2", () => {
    expect(run(['doctor', '--bogus'])).toEqual({ code: 2, stdout: '', stderr: `Unknown option '--bogus'.\n${USAGE}` });
  });

  it('refuses an unknown option by name, with the usage, and exits 2', () => {
    const { code, stdout, stderr } = run(['doctor', '--jsn']);
    expect([code, stdout]).toEqual([2, '']);
    expect(stderr).toMatch(/^Unknown option '--jsn'/);
    expect(stderr.endsWith(`\n${USAGE}`)).toBe(true);
  });
});

describe('doctor, with a working binary', () => {
  it('prints what it sees, the tiny check and an OK verdict, and exits 0', () => {
    const info = runtime();
    const { code, stdout, stderr } = run(['doctor']);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    const lines = stdout.split('\n');
    const field = (name: string) => lines.find((l) => l.startsWith(name.padEnd(15)))?.slice(15);
    expect(field('Node.js')).toBe(`${process.version} (Node-API ${process.versions.napi})`);
    expect(field('binary')).toBe(info.binary);
    expect(lines.find((l) => l.startsWith('  why'))).toBe(`  why          ${info.binaryReason}`);
    // Exactly one libtorch is marked as the one the binary uses: the one this process loaded.
    const marked = lines.filter((l) => l.startsWith('  * '));
    expect(marked).toHaveLength(1);
    expect(marked[0]).toContain(`libtorch ${info.libtorch.version} at ${info.libtorch.path}`);
    expect(field('CPU threads')).toMatch(/^\d+ \(machine: \d+\)$/);
    expect(field('check')).toMatch(new RegExp(`^tiny loss ${tinyLoss().toPrecision(6).replace('.', '\\.')} in \\d+\\.\\d ms$`));
    expect(field('verdict')).toMatch(new RegExp(`^OK: libtorch ${info.libtorch.version.replace(/\./g, '\\.')} via `));
    if (info.devices.length === 1) expect(field('CUDA')).toBe(info.libtorch.cuda ? 'a CUDA build; no usable device' : 'no usable device (a CPU build)');
    else expect(lines.filter((l) => l.startsWith('CUDA cuda:'))).toHaveLength(info.devices.length - 1);
  });

  it('--json says the same as an object, and exits 0', () => {
    const info = runtime();
    const { code, stdout } = run(['doctor', '--json']);
    expect(code).toBe(0);
    const report = JSON.parse(stdout) as DoctorReport;
    expect(report.ok).toBe(true);
    expect(report.error).toBeUndefined();
    expect(report.node).toEqual({ version: process.version, napi: process.versions.napi });
    expect(report.binary?.file).toBe(info.binary);
    expect(report.binary?.reason).toBe(info.binaryReason);
    expect(report.binary?.torchVersion).toBe(info.libtorch.version);
    expect(report.cuda.available).toBe(info.devices.length > 1);
    expect(report.libtorch.some((c) => c.usable)).toBe(true);
    expect(report.check?.loss).toBe(tinyLoss());
    expect(report.verdict).toMatch(/^OK: libtorch /);
  });
});

describe('doctor, when no binary fits', () => {
  afterEach(() => {
    vi.doUnmock('../../lib/binding');
    vi.resetModules();
  });

  /** A fresh lib/cli.ts whose loadBinding throws `error` (made by `make` with the fresh error class). */
  async function cliFailingWith(make: (cls: typeof import('../../lib/errors').PerceptualLossError) => Error): Promise<typeof main> {
    vi.resetModules();
    vi.doMock('../../lib/binding', async () => {
      const { PerceptualLossError } = await import('../../lib/errors');
      return {
        loadBinding: () => {
          throw make(PerceptualLossError);
        },
      };
    });
    return (await import('../../lib/cli')).main;
  }

  it('prints the whole explanation and a NOT WORKING verdict, and exits 1', async () => {
    const cli = await cliFailingWith((E) => new E('ERR_LIBTORCH', 'could not load a native binary.\nLooked for libtorch: here'));
    const { code, stdout } = run(['doctor'], cli);
    expect(code).toBe(1);
    expect(stdout).toContain('\ncould not load a native binary.\nLooked for libtorch: here\n');
    expect(stdout).toMatch(/\nverdict {8}NOT WORKING \(ERR_LIBTORCH\): could not load a native binary\.$/);
    expect(stdout).not.toMatch(/^binary /m);
    expect(stdout).toMatch(/^CUDA {11}-$/m);
  });

  it('--json gives ok: false with the error code and message, and exits 1', async () => {
    const cli = await cliFailingWith((E) => new E('ERR_LIBTORCH', 'no libtorch\nat all'));
    const { code, stdout } = run(['doctor', '--json'], cli);
    expect(code).toBe(1);
    const report = JSON.parse(stdout) as DoctorReport;
    expect(report.ok).toBe(false);
    expect(report.error).toEqual({ code: 'ERR_LIBTORCH', message: 'no libtorch\nat all' });
    expect(report.verdict).toBe('NOT WORKING (ERR_LIBTORCH): no libtorch');
    expect(report.binary).toBeUndefined();
    expect(report.check).toBeUndefined();
  });

  it('reports any other failure as ERR_LIBTORCH', async () => {
    const cli = await cliFailingWith(() => new Error('libc10.so: cannot open shared object file'));
    const report = JSON.parse(run(['doctor', '--json'], cli).stdout) as DoctorReport;
    expect(report.error).toEqual({ code: 'ERR_LIBTORCH', message: 'libc10.so: cannot open shared object file' });
  });
});

describe('the command itself (dist/cli.js, as npm links it)', () => {
  const bin = path.join(ROOT, 'dist', 'cli.js');

  it('exits 0 with a JSON report of a working binary', () => {
    const result = spawnSync(process.execPath, [bin, 'doctor', '--json'], { encoding: 'utf8' });
    expect(result.status).toBe(0);
    expect((JSON.parse(result.stdout) as DoctorReport).ok).toBe(true);
  });

  it('exits 1 with ok: false and the loader\'s explanation when LIBTORCH points at nothing', () => {
    const missing = path.join(ROOT, 'no-such-libtorch');
    const result = spawnSync(process.execPath, [bin, 'doctor', '--json'], { encoding: 'utf8', env: { ...process.env, LIBTORCH: missing } });
    expect(result.status).toBe(1);
    const report = JSON.parse(result.stdout) as DoctorReport;
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe('ERR_LIBTORCH');
    expect(report.error?.message).toContain(`  - LIBTORCH: ${missing}: ${missing} does not exist\n`);
    expect(report.verdict).toBe('NOT WORKING (ERR_LIBTORCH): generic-perceptual-loss could not load a native binary for the libtorch on this machine.');
  });

  it('exits 2 on an unknown command', () => {
    const result = spawnSync(process.execPath, [bin, 'train'], { encoding: 'utf8' });
    expect([result.status, result.stdout, result.stderr]).toEqual([2, '', `${USAGE}\n`]);
  });
});
