// OpenMP's wait policy, set before libtorch loads.
//
// libtorch's CPU threads are OpenMP's (libgomp on Linux). Between parallel regions they spin,
// waiting for the next one, before they sleep; with OMP_WAIT_POLICY=ACTIVE they spin on and on.
// On a machine whose cores other processes also want, those spinning threads take the cores the
// working ones need: measured on a shared 2-core machine with a competing load, a 1x3x64x64
// vgg19 lossAndGrad took 150-1,500 ms instead of 73-82 ms (bench/wait-policy.js measures it).
// PASSIVE threads sleep at once and cost nothing while they wait, but on a quiet machine waking
// them for each of a step's ~150 parallel regions made it 20-30% slower. A short spin first
// (GOMP_SPINCOUNT=100000, about 1 ms, where libgomp's own default spins about 3 ms) bridges the
// gaps between a step's ops and sleeps soon after it: a quiet machine's step time and most of
// PASSIVE's gain under load (bench/wait-policy.js; a tenth of that spin left the quiet step up
// to 5% slower). So the package sets OMP_WAIT_POLICY=PASSIVE and GOMP_SPINCOUNT=100000 unless the
// user has chosen how OpenMP waits.
//
// libgomp reads its settings once, when it is loaded, from the process's environment: this must
// run before libtorch (and so libgomp) is opened, in the main thread (a worker thread's
// process.env is its own copy, which the C library's getenv does not see).
import * as fs from 'node:fs';
import { isMainThread } from 'node:worker_threads';

/** The spin before a PASSIVE thread sleeps, in libgomp's spins (about 1 ms). */
export const SPIN_COUNT = '100000';

/**
 * The settings by which a user chooses how OpenMP waits: libgomp's OMP_WAIT_POLICY and
 * GOMP_SPINCOUNT, and KMP_BLOCKTIME of LLVM's and Intel's OpenMP. Any of them, set and not empty,
 * leaves OpenMP's waiting as the user set it.
 */
export const WAIT_SETTINGS = ['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME'] as const;

export interface OpenMPInfo {
  /**
   * OMP_WAIT_POLICY when libtorch loaded: 'PASSIVE' where the package set it (with
   * GOMP_SPINCOUNT=100000: a short spin, then sleep), the user's value,
   * or undefined (OpenMP's own default: spin a while, then sleep).
   */
  waitPolicy: string | undefined;
  /**
   * Who chose it: 'package' (the user set none of OMP_WAIT_POLICY, GOMP_SPINCOUNT, KMP_BLOCKTIME;
   * the package set PASSIVE), 'user' (they set one, and all were left as they were), or
   * 'unchanged' (OpenMP was already loaded, or the package was first loaded in a worker thread,
   * whose process.env OpenMP does not read: nothing was changed, and waitPolicy is what the
   * environment says).
   */
  source: 'package' | 'user' | 'unchanged';
  /** The user's settings among OMP_WAIT_POLICY, GOMP_SPINCOUNT and KMP_BLOCKTIME. */
  settings: Record<string, string>;
}

/**
 * The decision for an environment: sets `env.OMP_WAIT_POLICY = 'PASSIVE'` and
 * `env.GOMP_SPINCOUNT = '100000'` where the package may and should. `mainThread`: whether `env` is the process's environment; `openmpLoaded`:
 * whether an OpenMP runtime is already in the process (it has read its settings then).
 */
export function decideWaitPolicy(env: Record<string, string | undefined>, mainThread: boolean, openmpLoaded: boolean): OpenMPInfo {
  const settings = Object.fromEntries(WAIT_SETTINGS.filter((name) => env[name]).map((name) => [name, env[name]!]));
  const waitPolicy = env.OMP_WAIT_POLICY || undefined;
  if (openmpLoaded) return { waitPolicy, source: 'unchanged', settings };
  if (Object.keys(settings).length > 0) return { waitPolicy, source: 'user', settings };
  if (!mainThread) return { waitPolicy, source: 'unchanged', settings };
  env.OMP_WAIT_POLICY = 'PASSIVE';
  env.GOMP_SPINCOUNT = SPIN_COUNT;
  return { waitPolicy: 'PASSIVE', source: 'package', settings };
}

/** Whether an OpenMP runtime (libgomp, LLVM's libomp, Intel's libiomp5) is mapped into this process. */
function openmpInProcess(): boolean {
  try {
    return /\/lib(gomp|omp|iomp5)[^/\n]*\.so/.test(fs.readFileSync('/proc/self/maps', 'utf8'));
  } catch {
    return false;
  }
}

let decided: OpenMPInfo | undefined;

/** Decides for this process once (per thread); call it before libtorch is loaded. */
export function setWaitPolicy(): OpenMPInfo {
  decided ??= decideWaitPolicy(process.env, isMainThread, openmpInProcess());
  return decided;
}

/** What setWaitPolicy() decided (deciding now if it has not yet). */
export function waitPolicy(): OpenMPInfo {
  return structuredClone(setWaitPolicy());
}
