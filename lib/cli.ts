#!/usr/bin/env node
// The `generic-perceptual-loss` command. `doctor` says what this machine has and whether the
// package works on it; exit code 0 when a binary loads and computes a tiny loss.
import * as os from 'node:os';
import { parseArgs } from 'node:util';
import { loadBinding } from './binding';
import { PerceptualLossError } from './errors';
import { describeCandidate, findLibtorch, type LibtorchCandidate, type LibtorchSource } from './libtorch';
import { availablePrebuilds } from './loader';
// Loads no binary by itself: the first PerceptualLoss does, after loadBinding() has succeeded.
import { PerceptualLoss } from './loss';

/** What `doctor --json` prints. */
export interface DoctorReport {
  node: { version: string; napi: string | undefined };
  libtorch: LibtorchCandidate[];
  prebuilds: string[];
  binary?: {
    file: string;
    reason: string;
    libtorch: string;
    /** Where that libtorch was found; `runtimePackage` names the bundled runtime when it is the one. */
    source: LibtorchSource;
    runtimePackage?: string;
    flavour?: string;
    torchVersion: string;
    cxx11Abi: boolean;
  };
  cpu: { threads: number; availableParallelism: number; parallelInfo?: string };
  /** build: a CUDA libtorch and binary; available: a GPU is usable. */
  cuda: { build: boolean; available: boolean; devices: Array<{ index: number; name: string; computeCapability: string; memoryBytes: number }> };
  check?: { loss: number; ms: number };
  error?: { code: string; message: string };
  ok: boolean;
  verdict: string;
}

function doctor(): DoctorReport {
  const report: DoctorReport = {
    node: { version: process.version, napi: process.versions.napi },
    libtorch: findLibtorch().candidates,
    prebuilds: availablePrebuilds(),
    cpu: { threads: 0, availableParallelism: os.availableParallelism() },
    cuda: { build: false, available: false, devices: [] },
    ok: false,
    verdict: '',
  };
  try {
    const { binding, choice } = loadBinding();
    const info = binding.runtimeInfo();
    report.binary = {
      file: choice.file,
      reason: choice.reason,
      libtorch: choice.libtorch.libraryDir ?? '',
      source: choice.libtorch.source,
      ...(choice.libtorch.runtimePackage ? { runtimePackage: choice.libtorch.runtimePackage } : {}),
      flavour: choice.libtorch.flavour,
      torchVersion: info.torchVersion,
      cxx11Abi: info.cxx11Abi,
    };
    report.cpu.threads = info.numThreads;
    report.cpu.parallelInfo = info.parallelInfo;
    report.cuda = { build: info.cudaBuild, available: info.cudaBuild && info.cudaDeviceCount > 0, devices: info.cudaDevices };
    // The smallest real computation: a one-conv network on an 8x8 input.
    const start = performance.now();
    const loss = new PerceptualLoss({ inChannels: 1, arch: [4], device: 'cpu' });
    const data = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    const value = loss.loss({ data, shape: [1, 1, 8, 8] }, { data: data.map((v) => v / 2), shape: [1, 1, 8, 8] });
    loss.dispose();
    if (!Number.isFinite(value) || value <= 0) throw new Error(`the tiny loss came out as ${value}`);
    report.check = { loss: value, ms: performance.now() - start };
    report.ok = true;
    const devices = report.cuda.devices.length
      ? `${report.cuda.devices.length} CUDA device(s)`
      : report.cuda.build
        ? 'CUDA build, no usable GPU: CPU only'
        : 'CPU only';
    report.verdict = `OK: libtorch ${info.torchVersion} via ${choice.reason.split(' for ')[0]}, ${devices}`;
  } catch (error) {
    const code = error instanceof PerceptualLossError ? error.code : 'ERR_LIBTORCH';
    report.error = { code, message: (error as Error).message };
    report.verdict = `NOT WORKING (${code}): ${(error as Error).message.split('\n')[0]}`;
  }
  return report;
}

const SOURCE_NAMES: Record<LibtorchSource, string> = {
  LIBTORCH: 'the LIBTORCH folder',
  python: "python3's torch",
  bundled: 'the bundled runtime',
  system: "the system's libtorch",
};

function print(r: DoctorReport): void {
  const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  console.log(`Node.js        ${r.node.version} (Node-API ${r.node.napi})`);
  console.log('libtorch       (search order; * = the one the binary uses)');
  for (const c of r.libtorch) {
    const used = r.binary && c.usable && c.libraryDir === r.binary.libtorch ? '*' : ' ';
    console.log(`  ${used} ${describeCandidate(c)}`);
  }
  console.log(`prebuilds      ${r.prebuilds.length ? r.prebuilds.join(', ') : 'none in this package'}`);
  if (r.binary) {
    console.log(`binary         ${r.binary.file}`);
    console.log(`  why          ${r.binary.reason}`);
    console.log(`  libtorch     ${SOURCE_NAMES[r.binary.source]}${r.binary.runtimePackage ? ` ${r.binary.runtimePackage}` : ''}`);
  }
  console.log(`CPU threads    ${r.cpu.threads || '-'} (machine: ${r.cpu.availableParallelism})`);
  if (r.binary) console.log(`flavour        ${r.binary.flavour ?? 'unknown'}`);
  if (r.cuda.devices.length === 0) {
    console.log(`CUDA           ${r.binary ? (r.cuda.build ? 'a CUDA build; no usable device' : 'no usable device (a CPU build)') : '-'}`);
  }
  for (const d of r.cuda.devices) {
    console.log(`CUDA cuda:${d.index}    ${d.name}, compute capability ${d.computeCapability}, ${gib(d.memoryBytes)}`);
  }
  if (r.check) console.log(`check          tiny loss ${r.check.loss.toPrecision(6)} in ${r.check.ms.toFixed(1)} ms`);
  if (r.error) console.log(`\n${r.error.message}\n`);
  console.log(`verdict        ${r.verdict}`);
}

const USAGE = 'usage: generic-perceptual-loss doctor [--json]';

/** Runs the command line `argv` (without node and the script); returns the exit code. */
export function main(argv: string[]): number {
  let args: { values: { json: boolean; help: boolean }; positionals: string[] };
  try {
    args = parseArgs({ args: argv, allowPositionals: true, options: { json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } } });
  } catch (error) {
    // Node's own text for an unknown option goes on about positional arguments after '--'; the
    // option's name and this command's usage say what is wrong and what is allowed.
    const { code, message } = error as { code?: string; message: string };
    const option = /'(-[^']*)'/.exec(message)?.[1];
    const what = code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option ? `Unknown option '${option}'.` : message;
    console.error(`${what}\n${USAGE}`);
    return 2;
  }
  const [command, ...extra] = args.positionals;
  if (args.values.help || command === undefined || command === 'help') {
    console.error(USAGE);
    return 0;
  }
  if (command !== 'doctor' || extra.length > 0) {
    console.error(USAGE);
    return 2;
  }
  const report = doctor();
  if (args.values.json) console.log(JSON.stringify(report, null, 2));
  else print(report);
  return report.ok ? 0 : 1;
}

// Run as the `generic-perceptual-loss` command, not when imported (the tests call main()).
if (require.main === module) process.exitCode = main(process.argv.slice(2));
