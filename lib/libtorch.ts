// Finds libtorch, for the builds (CMake and node-gyp) and the loader alike, in one order:
// $LIBTORCH, the `torch` package of the python3 on PATH, the bundled runtime (the npm package
// @generic-perceptual-loss/libtorch-linux-x64, libraries only), then the system's CMake config.
// It also says what each libtorch is (version, device flavour, C++ ABI) and how code must be
// compiled against it (the C++ standard): the one place that knows how libtorch versions differ
// for the build.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export type LibtorchSource = 'LIBTORCH' | 'python' | 'bundled' | 'system';

export interface LibtorchCandidate {
  source: LibtorchSource;
  /** Where this source pointed, whether or not a usable libtorch is there. */
  location: string;
  usable: boolean;
  /** Why the candidate cannot be used. */
  problem?: string;
  version?: string;
  includeDirs: string[];
  libraryDir?: string;
  /** Libraries to link, without the `lib` prefix and `.so` suffix. */
  libraries: string[];
  /** Whether this is a CUDA build of libtorch (not whether a GPU is usable). */
  cuda: boolean;
  cudaVersion?: string;
  cxx11Abi?: boolean;
  /** The C++ standard to compile against these headers: 17, or 20 where they demand it. */
  cxxStandard?: number;
  /** The prebuild flavour, e.g. `torch2.14-cu130-cxx11`; absent when the version or CUDA version is unknown. */
  flavour?: string;
  /** The bundled runtime only: its npm package, `name@version`. */
  runtimePackage?: string;
}

export interface FindOptions {
  /**
   * For a source build: a libtorch without headers (the bundled runtime) cannot be built
   * against, so it is listed but not usable.
   */
  forBuild?: boolean;
}

export interface LibtorchSearch {
  chosen?: LibtorchCandidate;
  candidates: LibtorchCandidate[];
}

const SYSTEM_CMAKE_DIRS = [
  `/usr/lib/${multiarch()}/cmake/Torch`,
  '/usr/lib/cmake/Torch',
  '/usr/local/lib/cmake/Torch',
  '/usr/local/share/cmake/Torch',
  '/usr/share/cmake/Torch',
];

function multiarch(): string {
  const cpu = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
  return `${cpu}-linux-gnu`;
}

function readIfExists(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** "2.14.1+cu130", "1.13.0a0" -> "2.14.1", "1.13.0". */
function releaseOf(version: string | undefined): string | undefined {
  return version?.match(/^(\d+\.\d+\.\d+)/)?.[1];
}

function versionFromHeader(includeDir: string): string | undefined {
  const header = readIfExists(path.join(includeDir, 'torch/csrc/api/include/torch/version.h'));
  if (!header) return undefined;
  const part = (name: string) => header.match(new RegExp(`#define TORCH_VERSION_${name} (\\d+)`))?.[1];
  const [major, minor, patch] = [part('MAJOR'), part('MINOR'), part('PATCH')];
  return major && minor && patch ? `${major}.${minor}.${patch}` : undefined;
}

/** TorchConfigVersion.cmake: `set(PACKAGE_VERSION "2.13.0")`. */
function versionFromCmake(cmakeDir: string): string | undefined {
  return releaseOf(readIfExists(path.join(cmakeDir, 'TorchConfigVersion.cmake'))?.match(/set\(PACKAGE_VERSION "([^"]+)"\)/)?.[1]);
}

/**
 * The C++ standard these headers need. ATen.h states its minimum (`__cplusplus < 202002L` in
 * 2.14); the package's own code needs C++17. Never more than the minimum: libtorch 1.13 built as
 * C++20 compiles but crashes at load.
 */
export function cxxStandardFor(includeDir: string, version: string | undefined): number {
  const required = readIfExists(path.join(includeDir, 'ATen/ATen.h'))?.match(/__cplusplus < (\d{4})\d\dL/)?.[1];
  if (required) return Math.max(17, Number(required.slice(2)));
  // Headers that do not say: libtorch 1.x is C++17, and 2.x from 2.14 on asks for C++20.
  const [major, minor] = (version ?? '1.0').split('.').map(Number);
  return major > 2 || (major === 2 && minor >= 14) ? 20 : 17;
}

function abiFromCmake(cmakeDir: string): boolean | undefined {
  const config = readIfExists(path.join(cmakeDir, 'TorchConfig.cmake'));
  const flag = config?.match(/_GLIBCXX_USE_CXX11_ABI=(\d)/)?.[1];
  return flag === undefined ? undefined : flag === '1';
}

function abiFromLibrary(file: string): boolean | undefined {
  try {
    return fs.readFileSync(file).includes('NSt7__cxx1112basic_string');
  } catch {
    return undefined;
  }
}

/** The CUDA runtime headers that ATen's CUDA headers include (cuda_runtime_api.h). */
function cudaIncludeDir(libraryDir: string): string | undefined {
  const site = path.resolve(libraryDir, '../..'); // .../site-packages for pip's torch/lib
  const roots = [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda'].filter((d): d is string => !!d);
  // The nvidia wheels beside pip's torch match it exactly, and need no CUDA toolkit.
  const dirs = [
    ...['cu13', 'cu12', 'cuda_runtime'].map((d) => path.join(site, 'nvidia', d, 'include')),
    ...roots.map((d) => path.join(d, 'include')),
  ];
  // cuda_runtime.h includes crt/host_config.h, which pip ships apart (nvidia-cuda-crt).
  return dirs.find((d) => fs.existsSync(path.join(d, 'cuda_runtime_api.h')) && fs.existsSync(path.join(d, 'crt/host_config.h')));
}

/** Fills in and checks a candidate from its include and library folders. */
function inspect(
  base: Omit<LibtorchCandidate, 'usable' | 'includeDirs' | 'libraries' | 'cuda'>,
  includeDir: string,
  libraryDir: string,
  extra: Partial<LibtorchCandidate> = {},
): LibtorchCandidate {
  const has = (lib: string) => fs.existsSync(path.join(libraryDir, `lib${lib}.so`));
  const cuda = extra.cuda ?? (has('torch_cuda') && has('c10_cuda'));
  const version = extra.version ?? versionFromHeader(includeDir);
  const candidate: LibtorchCandidate = {
    ...base,
    usable: false,
    version,
    includeDirs: [includeDir, path.join(includeDir, 'torch/csrc/api/include')],
    libraryDir,
    libraries: cuda ? ['c10', 'torch_cpu', 'c10_cuda', 'torch_cuda'] : ['c10', 'torch_cpu'],
    cuda,
    cudaVersion: extra.cudaVersion,
    cxx11Abi: extra.cxx11Abi,
  };
  if (cuda) {
    const cudaInclude = cudaIncludeDir(libraryDir);
    if (cudaInclude) candidate.includeDirs.push(cudaInclude);
  }
  // Without a CMake config, libc10's mangled names tell the ABI: std::__cxx11::basic_string.
  if (candidate.cxx11Abi === undefined && has('c10')) candidate.cxx11Abi = abiFromLibrary(path.join(libraryDir, 'libc10.so'));
  if (!fs.existsSync(path.join(includeDir, 'ATen/ATen.h'))) {
    candidate.problem = `no libtorch headers (ATen/ATen.h) under ${includeDir}`;
  } else if (!has('torch_cpu') || !has('c10')) {
    candidate.problem = `no libtorch_cpu.so / libc10.so in ${libraryDir}`;
  } else {
    candidate.usable = true;
    candidate.cxxStandard = cxxStandardFor(includeDir, version);
    candidate.flavour = flavourTag(candidate);
  }
  return candidate;
}

/**
 * A libtorch root as pip's `torch/` package or an unpacked libtorch zip lays it out: `include/`,
 * `lib/`, `share/cmake/Torch/`, and `version.py` (pip: `__version__ = '2.14.1+cu130'`,
 * `cuda = '13.0'`) or `build-version` (zip: `2.11.0+cu130`).
 */
function fromRoot(base: { source: LibtorchSource; location: string }, root: string): LibtorchCandidate {
  const cmakeDir = path.join(root, 'share/cmake/Torch');
  const versionPy = readIfExists(path.join(root, 'version.py')) ?? '';
  const pyVersion = versionPy.match(/^__version__\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]/m)?.[1];
  const pyCuda = versionPy.match(/^cuda\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]/m)?.[1];
  const build = readIfExists(path.join(root, 'build-version'))?.trim();
  const full = pyVersion ?? build;
  const cudaTag = full?.match(/\+cu(\d+)/)?.[1];
  const cudaVersion = pyCuda ?? (cudaTag ? `${cudaTag.slice(0, -1)}.${cudaTag.slice(-1)}` : undefined);
  const includeDir = path.join(root, 'include');
  return inspect(base, includeDir, path.join(root, 'lib'), {
    version: releaseOf(full) ?? versionFromCmake(cmakeDir) ?? versionFromHeader(includeDir),
    // A version that names its device is the truth; otherwise the CUDA libraries tell.
    ...(full && /\+cpu$/.test(full) ? { cuda: false } : {}),
    ...(cudaVersion ? { cuda: true } : {}),
    cudaVersion,
    cxx11Abi: abiFromCmake(cmakeDir),
  });
}

function fromFolder(root: string): LibtorchCandidate {
  const base = { source: 'LIBTORCH' as const, location: root };
  if (!fs.existsSync(root)) {
    return { ...base, usable: false, problem: `${root} does not exist`, includeDirs: [], libraries: [], cuda: false };
  }
  return fromRoot(base, root);
}

// Locates the torch package without importing it (importing torch takes seconds), and lists the
// interpreter's import folders, whose modification times tell when the answer may have changed.
const PYTHON_PROBE =
  'import importlib.util, json, sys; s = importlib.util.find_spec("torch"); ' +
  'print(json.dumps({"origin": s.origin if s else None, "path": [p for p in sys.path if p]}))';

interface ProbeResult {
  origin: string | null;
  /** Files and folders whose [path, mtime] must be unchanged for the cached answer to hold. */
  stamps: Array<[string, number]>;
}

function mtime(file: string): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

/** The interpreter a name resolves to on PATH, as the spawn would find it. */
function resolveExecutable(name: string, env: NodeJS.ProcessEnv): string | undefined {
  if (name.includes('/')) return fs.existsSync(name) ? path.resolve(name) : undefined;
  for (const dir of (env.PATH ?? '').split(':').filter(Boolean)) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return path.resolve(file);
    } catch {
      // Not here.
    }
  }
  return undefined;
}

function discoveryCacheFile(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return path.join(os.tmpdir(), `generic-perceptual-loss-${uid}-discovery.json`);
}

/**
 * Where the interpreter's torch package is. The answer is cached per interpreter (the path it is
 * reached by, its real path and modification time), and holds while the torch package's
 * version.py, or for "no torch" every import folder, is unchanged: after the first time a
 * require spawns no process.
 */
function probePython(python: string, env: NodeJS.ProcessEnv): { origin: string | null } | { failed: string } {
  const resolved = resolveExecutable(python, env);
  if (!resolved) return { failed: 'not found' };
  let key: string;
  try {
    const real = fs.realpathSync(resolved);
    key = `${resolved}|${real}|${fs.statSync(real).mtimeMs}`;
  } catch {
    return { failed: 'not found' };
  }
  const cacheFile = discoveryCacheFile();
  let cache: Record<string, ProbeResult> = {};
  try {
    cache = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as Record<string, ProbeResult>;
  } catch {
    // No cache yet.
  }
  const hit = cache[key];
  if (hit && hit.stamps.every(([file, time]) => mtime(file) === time)) return { origin: hit.origin };
  let answer: { origin: string | null; path: string[] };
  try {
    const out = execFileSync(resolved, ['-c', PYTHON_PROBE], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 30_000, env });
    answer = JSON.parse(out.trim().split('\n').pop()!) as { origin: string | null; path: string[] };
  } catch {
    return { failed: 'failed to run' };
  }
  const watched = answer.origin ? [path.join(path.dirname(answer.origin), 'version.py'), answer.origin] : answer.path;
  cache[key] = { origin: answer.origin, stamps: watched.map((file) => [file, mtime(file)]) };
  try {
    fs.writeFileSync(cacheFile, JSON.stringify(cache));
  } catch {
    // A read-only tmpdir only costs a child process next time.
  }
  return { origin: answer.origin };
}

function fromPython(python: string, env: NodeJS.ProcessEnv): LibtorchCandidate {
  const base = { source: 'python' as const, location: python };
  const none = { usable: false, includeDirs: [], libraries: [], cuda: false };
  const probe = probePython(python, env);
  if ('failed' in probe) return { ...base, ...none, problem: `${python} ${probe.failed}` };
  if (!probe.origin) return { ...base, ...none, problem: `${python} has no torch package` };
  const root = path.dirname(probe.origin);
  const candidate = fromRoot({ ...base, location: root }, root);
  candidate.source = 'python';
  if (!candidate.usable) candidate.problem = `torch ${candidate.version ?? ''} ships no C++ library: ${candidate.problem}`;
  return candidate;
}

function fromSystem(): LibtorchCandidate {
  const cmakeDir = SYSTEM_CMAKE_DIRS.find((dir) => fs.existsSync(path.join(dir, 'TorchConfig.cmake')));
  if (!cmakeDir) {
    return {
      source: 'system',
      location: SYSTEM_CMAKE_DIRS.join(', '),
      usable: false,
      problem: 'no TorchConfig.cmake in the system folders',
      includeDirs: [],
      libraries: [],
      cuda: false,
    };
  }
  // <prefix>/lib/<triple>/cmake/Torch or <prefix>/lib/cmake/Torch: the libraries sit two levels up.
  const libraryDir = path.resolve(cmakeDir, '../..');
  const prefix = libraryDir.includes(`/lib/${multiarch()}`)
    ? libraryDir.slice(0, libraryDir.indexOf(`/lib/${multiarch()}`))
    : path.resolve(libraryDir, '..');
  return inspect({ source: 'system', location: cmakeDir }, path.join(prefix, 'include'), libraryDir, {
    version: versionFromCmake(cmakeDir),
    cxx11Abi: abiFromCmake(cmakeDir),
  });
}

/** The npm package that carries libtorch's CPU libraries for this platform (sharp's way). */
export const RUNTIME_PACKAGE = '@generic-perceptual-loss/libtorch-linux-x64';
/** The platform npm installs RUNTIME_PACKAGE on: its package.json's os, cpu and libc. */
const RUNTIME_PLATFORM = { platform: 'linux', arch: 'x64', libc: 'glibc' };

/** This package's folder (dist/.. once built, lib/.. under the tests). */
const packageRoot = path.resolve(__dirname, '..');

/** The runtime package's version that this package asks for (its optionalDependencies entry). */
export function runtimePackageVersion(): string | undefined {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { optionalDependencies?: Record<string, string> };
    return pkg.optionalDependencies?.[RUNTIME_PACKAGE];
  } catch {
    return undefined;
  }
}

/**
 * The bundled runtime as a candidate, from the runtime package's package.json (its `libtorch`
 * field says the version, device and C++ ABI) and the libraries in its lib/. It has no headers:
 * prebuilds load against it, source builds cannot use it.
 */
export function bundledCandidate(manifestFile: string, options: FindOptions = {}): LibtorchCandidate {
  const root = path.dirname(manifestFile);
  const libraryDir = path.join(root, 'lib');
  let pkg: { name?: string; version?: string; libtorch?: { version?: string; cuda?: boolean; cxx11Abi?: boolean } } = {};
  try {
    pkg = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as typeof pkg;
  } catch {
    // Described below as a package without its libraries.
  }
  const has = (lib: string) => fs.existsSync(path.join(libraryDir, `lib${lib}.so`));
  const candidate: LibtorchCandidate = {
    source: 'bundled',
    location: root,
    usable: false,
    version: releaseOf(pkg.libtorch?.version ?? pkg.version),
    includeDirs: [],
    libraryDir,
    libraries: ['c10', 'torch_cpu'],
    cuda: pkg.libtorch?.cuda ?? false,
    cxx11Abi: pkg.libtorch?.cxx11Abi ?? (has('c10') ? abiFromLibrary(path.join(libraryDir, 'libc10.so')) : undefined),
    runtimePackage: `${pkg.name ?? RUNTIME_PACKAGE}@${pkg.version ?? '(no version)'}`,
  };
  if (!has('torch_cpu') || !has('c10')) {
    candidate.problem = `${candidate.runtimePackage}: no libtorch_cpu.so / libc10.so in ${libraryDir}`;
  } else if (options.forBuild) {
    candidate.problem = `${candidate.runtimePackage} holds libraries only, no headers: a source build needs a libtorch with its headers (pip install torch, apt-get install libtorch-dev, or LIBTORCH)`;
  } else {
    candidate.usable = true;
    candidate.cxxStandard = cxxStandardFor(path.join(root, 'include'), candidate.version);
    candidate.flavour = flavourTag(candidate);
  }
  return candidate;
}

/** The runtime package as npm installed it beside this package (or not), resolved from here. */
function fromBundled(options: FindOptions): LibtorchCandidate {
  let manifest: string;
  try {
    // From this package's own folder, as Node resolves its dependencies (hoisted or nested).
    manifest = require.resolve(`${RUNTIME_PACKAGE}/package.json`, { paths: [packageRoot] });
  } catch {
    return { source: 'bundled', location: RUNTIME_PACKAGE, usable: false, problem: runtimeMissing(), includeDirs: [], libraries: [], cuda: false };
  }
  return bundledCandidate(manifest, options);
}

/** Why there is no bundled runtime here, and what to do: the platform decides. */
export function runtimeMissing(platform: string = process.platform, arch: string = process.arch, libc: string = libcFamily()): string {
  const { platform: p, arch: a, libc: l } = RUNTIME_PLATFORM;
  if (platform === p && arch === a && libc === l) {
    return `not installed: npm installs it with this package unless optional dependencies are omitted (npm install ${RUNTIME_PACKAGE}@${runtimePackageVersion() ?? 'latest'})`;
  }
  return `none for ${platform}-${arch}${libc ? ` (${libc})` : ''}: the runtime package and the prebuilds are for ${p}-${a} with ${l}`;
}

/**
 * The fix the ERR_LIBTORCH message offers for a missing runtime: install it where npm has it for
 * this platform; elsewhere, a libtorch of one's own and a source build.
 */
export function runtimeAdvice(platform: string = process.platform, arch: string = process.arch, libc: string = libcFamily()): string {
  const { platform: p, arch: a, libc: l } = RUNTIME_PLATFORM;
  if (platform === p && arch === a && libc === l) {
    return `npm install ${RUNTIME_PACKAGE}@${runtimePackageVersion() ?? 'latest'}   (libtorch 2.13 for the CPU, 117 MB; npm installs it with this package unless optional dependencies are omitted)`;
  }
  return `on ${platform}-${arch}${libc ? ` (${libc})` : ''}, with no bundled runtime or prebuild: pip install torch (or an unpacked libtorch and LIBTORCH=/path/to/libtorch), then the source build below`;
}

/** 'glibc' or 'musl' on Linux, as node-gyp-build and npm tell them apart; '' elsewhere. */
export function libcFamily(): string {
  if (process.platform !== 'linux') return '';
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return report?.header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

/**
 * The prebuild folder name for a libtorch: version (major.minor), device flavour (cpu or cuNNN)
 * and C++ ABI. Undefined when any of them is unknown: such a libtorch matches no prebuild.
 */
export function flavourTag(c: Pick<LibtorchCandidate, 'version' | 'cuda' | 'cudaVersion' | 'cxx11Abi'>): string | undefined {
  const [major, minor] = (c.version ?? '').split('.');
  if (!major || !minor || c.cxx11Abi === undefined || (c.cuda && !c.cudaVersion)) return undefined;
  const device = c.cuda ? `cu${c.cudaVersion!.replace('.', '')}` : 'cpu';
  return `torch${major}.${minor}-${device}-${c.cxx11Abi ? 'cxx11' : 'precxx11'}`;
}

/**
 * All candidates in order; the first usable one is chosen. The order: an explicit LIBTORCH; the
 * user's own PyTorch (the libtorch their Python code uses, perhaps a CUDA one); the bundled
 * runtime (pinned, tested with this version, and always matched by a prebuild); the system's
 * (Debian's libtorch 1.13, often there for other reasons: skip the runtime to use it).
 */
export function findLibtorch(env: NodeJS.ProcessEnv = process.env, options: FindOptions = {}): LibtorchSearch {
  const candidates: LibtorchCandidate[] = [];
  if (env.LIBTORCH) candidates.push(fromFolder(path.resolve(env.LIBTORCH)));
  if (env.LIBTORCH_USE_PYTORCH !== '0') candidates.push(fromPython(env.LIBTORCH_PYTHON ?? 'python3', env));
  candidates.push(fromBundled(options));
  candidates.push(fromSystem());
  // An explicit LIBTORCH is a decision: never fall back silently past it.
  const chosen = env.LIBTORCH ? (candidates[0].usable ? candidates[0] : undefined) : candidates.find((c) => c.usable);
  return { chosen, candidates };
}

export function describeCandidate(c: LibtorchCandidate): string {
  if (!c.usable) return `${c.source}: ${c.location}: ${c.problem}`;
  const abi = c.cxx11Abi === undefined ? 'unknown' : c.cxx11Abi ? 'cxx11' : 'pre-cxx11';
  const cuda = c.cuda ? `CUDA ${c.cudaVersion ?? '(version unknown)'}` : 'CPU only';
  if (c.source === 'bundled') return `bundled: libtorch ${c.version ?? '(version unknown)'} at ${c.libraryDir}, ${cuda}, C++ ABI ${abi}, from ${c.runtimePackage} (libraries only)`;
  return `${c.source}: libtorch ${c.version ?? '(version unknown)'} at ${c.libraryDir}, ${cuda}, C++ ABI ${abi}, C++${c.cxxStandard}`;
}
