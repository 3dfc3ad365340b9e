// Finds libtorch, for the builds (CMake and node-gyp) and the loader alike, in one order:
// $LIBTORCH, the `torch` package of the python3 on PATH, then the system's CMake config.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type LibtorchSource = 'LIBTORCH' | 'python' | 'system';

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
  cuda: boolean;
  cudaVersion?: string;
  cxx11Abi?: boolean;
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

function versionFromHeader(includeDir: string): string | undefined {
  const header = readIfExists(path.join(includeDir, 'torch/csrc/api/include/torch/version.h'));
  if (!header) return undefined;
  const part = (name: string) => header.match(new RegExp(`#define TORCH_VERSION_${name} (\\d+)`))?.[1];
  const [major, minor, patch] = [part('MAJOR'), part('MINOR'), part('PATCH')];
  return major && minor && patch ? `${major}.${minor}.${patch}` : undefined;
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
  const dirs = [
    ...roots.map((d) => path.join(d, 'include')),
    ...['cu13', 'cuda_runtime'].map((d) => path.join(site, 'nvidia', d, 'include')),
  ];
  return dirs.find((d) => fs.existsSync(path.join(d, 'cuda_runtime_api.h')));
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
  const candidate: LibtorchCandidate = {
    ...base,
    usable: false,
    version: extra.version ?? versionFromHeader(includeDir),
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
  }
  return candidate;
}

function fromFolder(root: string): LibtorchCandidate {
  const base = { source: 'LIBTORCH' as const, location: root };
  if (!fs.existsSync(root)) {
    return { ...base, usable: false, problem: `${root} does not exist`, includeDirs: [], libraries: [], cuda: false };
  }
  // libtorch zips record their build as e.g. "2.11.0+cu130".
  const build = readIfExists(path.join(root, 'build-version'))?.trim();
  const cudaTag = build?.match(/\+cu(\d+)/)?.[1];
  return inspect(base, path.join(root, 'include'), path.join(root, 'lib'), {
    cxx11Abi: abiFromCmake(path.join(root, 'share/cmake/Torch')),
    cudaVersion: cudaTag ? `${cudaTag.slice(0, -1)}.${cudaTag.slice(-1)}` : undefined,
  });
}

// Locates the torch package without importing it: importing torch takes seconds, and the
// loader runs this search on every require.
const PYTHON_PROBE = 'import importlib.util; s = importlib.util.find_spec("torch"); print(s.origin if s else "")';

/** torch/version.py: `__version__ = '2.11.0+cu130'` and `cuda = '13.0'` (or None). */
function readTorchVersionFile(root: string): { version?: string; cuda?: string } {
  const text = readIfExists(path.join(root, 'version.py')) ?? '';
  const version = text.match(/^__version__\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]/m)?.[1];
  const cuda = text.match(/^cuda\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]/m)?.[1];
  return { version: version?.split('+')[0], cuda };
}

function fromPython(python: string): LibtorchCandidate {
  const base = { source: 'python' as const, location: python };
  const none = { usable: false, includeDirs: [], libraries: [], cuda: false };
  let origin: string;
  try {
    origin = execFileSync(python, ['-c', PYTHON_PROBE], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 30_000 }).trim();
  } catch (error) {
    const reason = (error as { code?: string }).code === 'ENOENT' ? 'not found' : 'failed to run';
    return { ...base, ...none, problem: `${python} ${reason}` };
  }
  if (!origin) return { ...base, ...none, problem: `${python} has no torch package` };
  const root = path.dirname(origin);
  const { version, cuda } = readTorchVersionFile(root);
  const candidate = inspect({ ...base, location: root }, path.join(root, 'include'), path.join(root, 'lib'), {
    // The headers' version, as for the other sources ("1.13.0", not Debian's "1.13.0a0").
    version: versionFromHeader(path.join(root, 'include')) ?? version,
    cuda: cuda !== undefined,
    cudaVersion: cuda,
    cxx11Abi: abiFromCmake(path.join(root, 'share/cmake/Torch')),
  });
  if (!candidate.usable) candidate.problem = `torch ${version ?? ''} ships no C++ library: ${candidate.problem}`;
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
    cxx11Abi: abiFromCmake(cmakeDir),
  });
}

/** The prebuild folder name for a libtorch: version (major.minor), device flavour and C++ ABI. */
export function flavourTag(c: LibtorchCandidate): string {
  const [major, minor] = (c.version ?? '0.0').split('.');
  const device = c.cuda ? `cu${(c.cudaVersion ?? '').replace('.', '')}` : 'cpu';
  return `torch${major}.${minor}-${device}-${c.cxx11Abi === false ? 'precxx11' : 'cxx11'}`;
}

/** All candidates in order; the first usable one is chosen. */
export function findLibtorch(env: NodeJS.ProcessEnv = process.env): LibtorchSearch {
  const candidates: LibtorchCandidate[] = [];
  if (env.LIBTORCH) candidates.push(fromFolder(path.resolve(env.LIBTORCH)));
  if (env.LIBTORCH_USE_PYTORCH !== '0') candidates.push(fromPython(env.LIBTORCH_PYTHON ?? 'python3'));
  candidates.push(fromSystem());
  // An explicit LIBTORCH is a decision: never fall back silently past it.
  const chosen = env.LIBTORCH ? (candidates[0].usable ? candidates[0] : undefined) : candidates.find((c) => c.usable);
  return { chosen, candidates };
}

export function describeCandidate(c: LibtorchCandidate): string {
  if (!c.usable) return `${c.source}: ${c.location}: ${c.problem}`;
  const abi = c.cxx11Abi === undefined ? 'unknown' : c.cxx11Abi ? 'cxx11' : 'pre-cxx11';
  const cuda = c.cuda ? `CUDA ${c.cudaVersion ?? '(version unknown)'}` : 'CPU only';
  return `${c.source}: libtorch ${c.version ?? '(version unknown)'} at ${c.libraryDir}, ${cuda}, C++ ABI ${abi}`;
}
