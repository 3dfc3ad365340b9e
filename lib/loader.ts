// Chooses, checks and loads the native binary for the libtorch on this machine.
//
// The order: a local source build (build/Release, recorded against the libtorch it was built
// for; made only when no prebuild fitted, or on request), then for each libtorch candidate in the
// search order of lib/libtorch.ts its exact-flavour prebuild, then the stable-ABI prebuild where
// the candidate is a torch of its target version or later (one binary for them all, through
// libtorch's stable C ABI; an exact build stays first, being built for those very headers). node-gyp-build cannot tell a CPU build from a CUDA one, so the flavour
// folder is chosen here and node-gyp-build only picks the platform/arch/libc file inside it.
// Every binary is first loaded in a child process, so an ABI mismatch that would crash cannot
// take the user's process down. libtorch's shared libraries are opened by absolute path before
// the addon, so the addon's dependencies resolve without LD_LIBRARY_PATH or a fixed RPATH.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PerceptualLossError } from './errors';
import { describeCandidate, findLibtorch, flavourTag, runtimeAdvice, type LibtorchCandidate, type LibtorchSearch } from './libtorch';

export const packageRoot = path.resolve(__dirname, '..');
export const LOCAL_BUILD = path.join(packageRoot, 'build', 'Release', 'generic_perceptual_loss.node');
/** Written next to the local build by install/build-native.js: the libtorch it was built against. */
export const LOCAL_BUILD_LIBTORCH = path.join(packageRoot, 'build', 'Release', 'libtorch.json');
export const PREBUILDS = path.join(packageRoot, 'prebuilds');
/** The stable-ABI prebuild's folder: one binary for every torch from STABLE_ABI_TARGET on, CPU and CUDA builds. */
export const STABLE_ABI_FLAVOUR = 'stable-abi-torch2.10';
/** The oldest torch the stable-ABI binary loads on (its TORCH_TARGET_VERSION). */
export const STABLE_ABI_TARGET = '2.10';

export interface BinaryChoice {
  file: string;
  libtorch: LibtorchCandidate;
  /** Why this binary: "local source build" or "prebuild torch1.13-cpu-cxx11". */
  reason: string;
}

export interface LoadPlan {
  search: LibtorchSearch;
  /** Binaries to try, best first. */
  choices: BinaryChoice[];
  /** What was looked at and passed over, for the error message and doctor. */
  notes: string[];
}

export function availablePrebuilds(): string[] {
  try {
    return fs.readdirSync(PREBUILDS).filter((d) => fs.statSync(path.join(PREBUILDS, d)).isDirectory()).sort();
  } catch {
    return [];
  }
}

/** Whether two candidates are the same libtorch files (Debian's python3-torch links the system's). */
function sameLibtorch(a: LibtorchCandidate, b: LibtorchCandidate): boolean {
  const real = (c: LibtorchCandidate) => {
    try {
      return fs.realpathSync(path.join(c.libraryDir ?? '', 'libtorch_cpu.so'));
    } catch {
      return undefined;
    }
  };
  const ra = real(a);
  return ra !== undefined && ra === real(b);
}

function readLocalBuild(search: LibtorchSearch, notes: string[]): BinaryChoice | undefined {
  if (!fs.existsSync(LOCAL_BUILD)) {
    notes.push(`no local source build at ${LOCAL_BUILD}`);
    return undefined;
  }
  let libtorch: LibtorchCandidate | undefined;
  try {
    libtorch = JSON.parse(fs.readFileSync(LOCAL_BUILD_LIBTORCH, 'utf8')) as LibtorchCandidate;
  } catch {
    // node-gyp builds leave no record; they found libtorch the way this search does (the test load checks it).
    libtorch = search.chosen;
  }
  if (!libtorch) {
    notes.push(`the local build ${LOCAL_BUILD} has no libtorch to load with`);
    return undefined;
  }
  if (!libtorch.libraryDir || !fs.existsSync(path.join(libtorch.libraryDir, 'libtorch_cpu.so'))) {
    notes.push(`the local build was made for the libtorch in ${libtorch.libraryDir}, which is gone; rebuild it`);
    return undefined;
  }
  // The same folder can hold another libtorch since (a pip upgrade): compare what it is now.
  // The candidate found at the recorded folder comes first: another route (a LIBTORCH folder that
  // links to the same libraries) may name the same files with other headers.
  const usable = search.candidates.filter((c) => c.usable);
  const now = usable.find((c) => c.libraryDir === libtorch.libraryDir) ?? usable.find((c) => sameLibtorch(c, libtorch));
  const then = flavourTag(libtorch);
  if (now && then !== now.flavour) {
    notes.push(`the local build ${LOCAL_BUILD} was made for ${then ?? 'an unknown libtorch'} in ${libtorch.libraryDir}, which now holds ${now.flavour ?? 'an unknown libtorch'}; rebuild it`);
    return undefined;
  }
  return { file: LOCAL_BUILD, libtorch: now ?? libtorch, reason: `local source build against ${describeCandidate(now ?? libtorch)}` };
}

function prebuildFor(candidate: LibtorchCandidate, notes: string[]): BinaryChoice | undefined {
  const tag = candidate.flavour;
  if (!tag) {
    // Never guess: a binary for another version or flavour would crash or misbehave.
    notes.push(`no prebuild can be matched to ${describeCandidate(candidate)}: its version or CUDA version is unknown`);
    return undefined;
  }
  const folder = path.join(PREBUILDS, tag);
  if (!fs.existsSync(folder)) {
    notes.push(`no prebuild ${tag} for ${describeCandidate(candidate)}`);
    return undefined;
  }
  try {
    // Only this flavour's folder: node-gyp-build matches platform, arch, libc and Node-API there.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when a prebuild is considered
    const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
    const file = nodeGypBuild.path(folder);
    return { file, libtorch: candidate, reason: `prebuild ${tag} for ${describeCandidate(candidate)}` };
  } catch (error) {
    notes.push(`prebuild ${tag} has no binary for ${process.platform}-${process.arch}: ${(error as Error).message.split('\n')[0]}`);
    return undefined;
  }
}

/** Whether `candidate` is a torch the stable-ABI binary serves: 2.10 or later, with the C++11 ABI. */
export function servedByStableAbi(candidate: LibtorchCandidate): boolean {
  const [major, minor] = (candidate.version ?? '').split('.').map(Number);
  const [wantMajor, wantMinor] = STABLE_ABI_TARGET.split('.').map(Number);
  const recent = major > wantMajor || (major === wantMajor && minor >= wantMinor);
  return recent && candidate.cxx11Abi !== false;
}

function stableAbiPrebuildFor(candidate: LibtorchCandidate, notes: string[]): BinaryChoice | undefined {
  const folder = path.join(PREBUILDS, STABLE_ABI_FLAVOUR);
  if (!fs.existsSync(folder)) return undefined;
  if (!servedByStableAbi(candidate)) {
    notes.push(`the stable-ABI prebuild serves torch ${STABLE_ABI_TARGET} and later with the C++11 ABI, not ${describeCandidate(candidate)}`);
    return undefined;
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when a prebuild is considered
    const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
    const file = nodeGypBuild.path(folder);
    const why = candidate.flavour && fs.existsSync(path.join(PREBUILDS, candidate.flavour)) ? 'after the exact prebuild' : 'no exact prebuild';
    return { file, libtorch: candidate, reason: `stable-ABI prebuild (every torch >= ${STABLE_ABI_TARGET}; ${why}) for ${describeCandidate(candidate)}` };
  } catch (error) {
    notes.push(`the stable-ABI prebuild has no binary for ${process.platform}-${process.arch}: ${(error as Error).message.split('\n')[0]}`);
    return undefined;
  }
}

export function planLoad(env: NodeJS.ProcessEnv = process.env): LoadPlan {
  const search = findLibtorch(env);
  const notes: string[] = [];
  const choices: BinaryChoice[] = [];
  // PL_BINARY=stable-abi takes no source build either: the stable-ABI binary or nothing.
  const local = env.PL_BINARY === 'stable-abi' ? undefined : readLocalBuild(search, notes);
  // A local build made for another libtorch than the one chosen is passed over, never offered
  // to it: an explicit LIBTORCH, or python3's torch, decides which libtorch this process uses.
  if (local && !(search.chosen && sameLibtorch(local.libtorch, search.chosen) && flavourTag(local.libtorch) === search.chosen.flavour)) {
    const where = env.LIBTORCH ? 'the LIBTORCH folder' : search.chosen ? describeCandidate(search.chosen) : 'no libtorch found now';
    notes.push(`the local build ${LOCAL_BUILD} is for ${local.libtorch.libraryDir}, not ${where}`);
  } else if (local) {
    choices.push(local);
  }
  const candidates = env.LIBTORCH ? search.candidates.slice(0, 1) : search.candidates;
  // PL_BINARY=exact or stable-abi keeps to that kind of prebuild (to compare them, or to try the
  // stable-ABI binary where an exact one exists); unset, both are offered.
  const only = env.PL_BINARY;
  if (only !== undefined && only !== 'exact' && only !== 'stable-abi') {
    throw new PerceptualLossError('ERR_OPTIONS', `Invalid environment setting PL_BINARY: got ${JSON.stringify(only)}; allowed: exact, stable-abi, or unset.`);
  }
  if (only) notes.push(`PL_BINARY=${only}: only ${only === 'exact' ? 'exact-flavour prebuilds are' : 'the stable-ABI prebuild is'} offered`);
  // PL_STABLE_ABI_SHIMS=0: the stable-ABI binary reaches every op through the dispatcher by name,
  // none through libtorch's AOTI CPU shims (native/ops_stable.h reads it); for comparing the two.
  const shims = env.PL_STABLE_ABI_SHIMS;
  if (shims !== undefined && shims !== '0' && shims !== '1') {
    throw new PerceptualLossError('ERR_OPTIONS', `Invalid environment setting PL_STABLE_ABI_SHIMS: got ${JSON.stringify(shims)}; allowed: 0, 1, or unset.`);
  }
  if (shims === '0') notes.push('PL_STABLE_ABI_SHIMS=0: the stable-ABI binary reaches every op through the dispatcher by name');
  for (const candidate of candidates.filter((c) => c.usable)) {
    const prebuild = only === 'stable-abi' ? undefined : prebuildFor(candidate, notes);
    if (prebuild) choices.push(prebuild);
    const stable = only === 'exact' ? undefined : stableAbiPrebuildFor(candidate, notes);
    if (stable) choices.push(stable);
  }
  return { search, choices, notes };
}

/** libtorch's libraries by absolute path, dependencies first. */
export function libraryFiles(libtorch: LibtorchCandidate): string[] {
  return libtorch.libraries.map((lib) => path.join(libtorch.libraryDir!, `lib${lib}.so`));
}

function preload(libtorch: LibtorchCandidate): void {
  const flags = os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL;
  for (const file of libraryFiles(libtorch)) {
    try {
      process.dlopen({ exports: {} }, file, flags);
    } catch (error) {
      // A plain shared library is not a Node module: Node says so after loading it, and it stays loaded.
      if (!/did not self-register/.test((error as Error).message)) throw error;
    }
  }
}

const TEST_LOAD = `
const [file, libs] = JSON.parse(process.argv[1]);
const os = require('os');
for (const lib of libs) {
  try { process.dlopen({ exports: {} }, lib, os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL); }
  catch (e) { if (!/did not self-register/.test(e.message)) throw e; }
}
const binding = require(file);
const info = binding.runtimeInfo();
process.stdout.write(JSON.stringify(info));
`;

function cacheFile(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return path.join(os.tmpdir(), `generic-perceptual-loss-${uid}-loadcheck.json`);
}

function fingerprint(choice: BinaryChoice): string {
  const stamp = (file: string) => {
    const s = fs.statSync(file);
    return `${file}:${s.size}:${s.mtimeMs}`;
  };
  return [choice.file, ...libraryFiles(choice.libtorch)].map(stamp).join('|');
}

/** Loads the binary in a child process first; remembers binaries that passed. */
export function testLoad(choice: BinaryChoice): { ok: true } | { ok: false; why: string } {
  const key = fingerprint(choice);
  let cache: Record<string, true> = {};
  try {
    cache = JSON.parse(fs.readFileSync(cacheFile(), 'utf8')) as Record<string, true>;
  } catch {
    // No cache yet.
  }
  if (cache[key]) return { ok: true };
  const args = JSON.stringify([choice.file, libraryFiles(choice.libtorch)]);
  const child = spawnSync(process.execPath, ['-e', TEST_LOAD, args], { encoding: 'utf8', timeout: 120_000 });
  if (child.status !== 0) {
    const detail = child.signal ? `crashed with ${child.signal}` : (child.stderr.split('\n').find((l) => /Error/.test(l)) ?? child.stderr.trim());
    return { ok: false, why: detail || `exited with code ${child.status}` };
  }
  cache[key] = true;
  try {
    fs.writeFileSync(cacheFile(), JSON.stringify(cache));
  } catch {
    // A read-only tmpdir only costs a child process next time.
  }
  return { ok: true };
}

export function libtorchError(plan: LoadPlan, failures: string[]): PerceptualLossError {
  const prebuilds = availablePrebuilds();
  // A LIBTORCH that is no libtorch is the whole problem: discovery never looks past it, so the
  // other fixes only help once it is unset.
  const [first] = plan.search.candidates;
  const badLibtorchVariable = first?.source === 'LIBTORCH' && !first.usable;
  const lines = [
    'generic-perceptual-loss could not load a native binary for the libtorch on this machine.',
    'Looked for libtorch (in this order):',
    ...plan.search.candidates.map((c) => `  - ${describeCandidate(c)}`),
    ...(plan.search.candidates.some((c) => c.source === 'python')
      ? []
      : ['  - python: skipped (LIBTORCH_USE_PYTORCH=0)']),
    'Binaries:',
    `  - prebuilds in this package: ${prebuilds.length ? prebuilds.join(', ') : 'none'}`,
    ...plan.notes.map((n) => `  - ${n}`),
    ...failures.map((f) => `  - ${f}`),
    'Fix it with one of:',
    ...(badLibtorchVariable
      ? [`  - unset LIBTORCH or point it at a libtorch folder (with include/ and lib/): it is ${first.location}, and while it is set no other libtorch is looked for, so the fixes below need it unset`]
      : []),
    // The bundled runtime where npm has one for this platform (unless it is here and failed), or that there is none.
    ...(plan.search.candidates.some((c) => c.source === 'bundled' && c.usable) ? [] : [`  - ${runtimeAdvice()}`]),
    '  - apt-get install libtorch-dev                            (Debian: libtorch 1.13 for the CPU; a prebuild matches it)',
    '  - pip install torch                                       (then, unless a prebuild matches it, the rebuild below)',
    '  - LIBTORCH=/path/to/libtorch                              (an unpacked libtorch folder with include/ and lib/)',
    '  - npm rebuild generic-perceptual-loss --build-from-source (compile against the libtorch found; needs CMake and g++)',
  ];
  return new PerceptualLossError('ERR_LIBTORCH', lines.join('\n'));
}

export interface Loaded<B> {
  binding: B;
  choice: BinaryChoice;
  plan: LoadPlan;
}

/** Picks the first binary that passes the test load, and loads it into this process. */
export function loadNative<B>(): Loaded<B> {
  const plan = planLoad();
  const failures: string[] = [];
  for (const choice of plan.choices) {
    const check = testLoad(choice);
    if (!check.ok) {
      failures.push(`${choice.reason}: ${choice.file} failed its test load: ${check.why}`);
      continue;
    }
    preload(choice.libtorch);
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the binary is chosen at run time
    return { binding: require(choice.file) as B, choice, plan };
  }
  throw libtorchError(plan, failures);
}
