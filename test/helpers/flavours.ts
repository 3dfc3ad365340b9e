// The libtorch flavours the package is prebuilt and tested against, each with the route a user
// would reach it by and the PyTorch that serves as its reference. `PL_TEST_FLAVOUR=<flavour>`
// runs suites against one of them (test/helpers/flavour-setup.ts).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '../..');

export interface Flavour {
  flavour: string;
  version: string;
  cuda: boolean;
  cxxStandard: number;
  /** How a user reaches it. */
  route: string;
  /** Discovery settings that reach it. */
  env: NodeJS.ProcessEnv;
  /** The python whose torch is this libtorch (the PyTorch reference). */
  python: string;
  /** How runtime().binaryReason must begin: this flavour's exact prebuild, or the stable-ABI one. */
  reason: RegExp;
}

const venv = (name: string) => path.join(ROOT, '.venv', name);

/**
 * The site-packages folder of a virtual environment (or of the environment a venv's python
 * belongs to: `<env>/lib/python3.X/site-packages`), whatever its Python version. Where there is
 * none yet, a path under `lib/python3` that does not exist (flavour() then says how to make it).
 */
export function sitePackages(envDir: string): string {
  const lib = path.join(envDir, 'lib');
  let versions: string[] = [];
  try {
    versions = fs.readdirSync(lib).filter((d) => /^python3\.\d+$/.test(d) && fs.existsSync(path.join(lib, d, 'site-packages')));
  } catch {
    // No environment yet.
  }
  if (versions.length > 1) throw new Error(`${envDir} holds several Pythons (${versions.join(', ')}); expected one`);
  return path.join(lib, versions[0] ?? 'python3', 'site-packages');
}

const site = (name: string) => path.join(sitePackages(venv(name)), 'torch');

export const FLAVOURS: Record<string, Flavour> = {
  'torch1.13-cpu-cxx11': {
    flavour: 'torch1.13-cpu-cxx11',
    version: '1.13.0',
    cuda: false,
    cxxStandard: 17,
    route: "the system's libtorch-dev",
    env: { LIBTORCH_USE_PYTORCH: '0' },
    python: '/usr/bin/python3',
    reason: /^prebuild torch1\.13-cpu-cxx11 /,
  },
  'torch2.13-cpu-cxx11': {
    flavour: 'torch2.13-cpu-cxx11',
    version: '2.13.0',
    cuda: false,
    cxxStandard: 17,
    route: "python3 on PATH being the 2.13 environment's",
    env: { LIBTORCH_PYTHON: path.join(venv('torch2.13-cpu'), 'bin/python') },
    python: path.join(venv('torch2.13-cpu'), 'bin/python'),
    reason: /^prebuild torch2\.13-cpu-cxx11 /,
  },
  'torch2.14-cu130-cxx11': {
    flavour: 'torch2.14-cu130-cxx11',
    version: '2.14.1',
    cuda: true,
    cxxStandard: 20,
    route: "LIBTORCH at the 2.14 environment's torch/",
    env: { LIBTORCH: site('torch2.14-cu130'), LIBTORCH_USE_PYTORCH: '0' },
    python: path.join(venv('torch2.14-cu130'), 'bin/python'),
    reason: /^prebuild torch2\.14-cu130-cxx11 /,
  },
};

/** The stable-ABI prebuild's folder in prebuilds/ (lib/loader.ts). */
export const STABLE_ABI_PREBUILD = 'stable-abi-torch2.10';

/** Every prebuild folder that `npm run prebuilds` makes here. */
export const PREBUILD_FOLDERS = [...Object.keys(FLAVOURS), STABLE_ABI_PREBUILD].sort();

/**
 * The stable-ABI prebuild (one binary for every torch >= 2.10) on each pip torch, by the same
 * routes, with PL_BINARY=stable-abi so that the exact prebuild is not offered first:
 * `PL_TEST_FLAVOUR=stable-abi:torch2.13-cpu-cxx11`.
 */
export const STABLE_ABI_FLAVOURS: Record<string, Flavour> = Object.fromEntries(
  ['torch2.13-cpu-cxx11', 'torch2.14-cu130-cxx11'].map((name) => {
    const exact = FLAVOURS[name];
    const flavour: Flavour = {
      ...exact,
      env: { ...exact.env, PL_BINARY: 'stable-abi' },
      route: `${exact.route}, through the stable-ABI prebuild`,
      reason: /^stable-ABI prebuild /,
    };
    return [`stable-abi:${name}`, flavour];
  }),
);

/** The flavour, failing with the fix when its environment is missing. */
export function flavour(name: string): Flavour {
  const f = FLAVOURS[name] ?? STABLE_ABI_FLAVOURS[name];
  if (!f) throw new Error(`unknown flavour ${name}; one of ${[...Object.keys(FLAVOURS), ...Object.keys(STABLE_ABI_FLAVOURS)].join(', ')}`);
  if (!fs.existsSync(f.python)) throw new Error(`no ${name} at ${f.python}: run \`bash scripts/torch-envs.sh\``);
  return f;
}

/** The flavour that PL_TEST_FLAVOUR selects, if any. */
export function selectedFlavour(): Flavour | undefined {
  const name = process.env.PL_TEST_FLAVOUR;
  return name ? flavour(name) : undefined;
}

const gpuAnswers = new Map<string, boolean>();

/**
 * Whether the torch of `python` sees a usable CUDA GPU on this machine (torch.cuda.is_available()),
 * asked once per interpreter: the tests take this fact from PyTorch rather than assume a machine
 * with or without a GPU.
 */
export function torchSeesGpu(python: string): boolean {
  let answer = gpuAnswers.get(python);
  if (answer === undefined) {
    const out = execFileSync(python, ['-c', 'import torch; print(torch.cuda.is_available())'], { encoding: 'utf8', timeout: 300_000 });
    answer = out.trim().split('\n').pop() === 'True';
    gpuAnswers.set(python, answer);
  }
  return answer;
}

/** Whether a flavour can use a GPU here: a CUDA build whose torch sees one (false where its environment is missing). */
export function flavourSeesGpu(f: Flavour): boolean {
  return f.cuda && fs.existsSync(f.python) && torchSeesGpu(f.python);
}
