// Runs commands in a private mount namespace (`unshare --mount`, as root) in which every libtorch
// on this machine but the ones kept is hidden: Debian's libraries (each bound over by /dev/null),
// its CMake config and headers (an empty tmpfs over each folder), the torch package of every
// python on PATH, and the repository's .venv. Nothing changes outside the namespace.
import { execFileSync, spawnSync, type ExecFileOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './package-copy';
import { run } from './run';

export interface Hiding {
  /** Folders covered by an empty tmpfs. */
  dirs: string[];
  /** Files covered by /dev/null (reads give nothing, dlopen fails). */
  files: string[];
}

const LIBRARY_DIRS = ['/usr/lib/x86_64-linux-gnu', '/lib/x86_64-linux-gnu', '/usr/lib', '/usr/local/lib', '/usr/lib64'];
const LIBTORCH_LIBRARY = /^lib(torch|c10|caffe2|shm)[\w.-]*\.so(\.[\d.]+)?$/;
const CMAKE_DIRS = ['/usr/lib/x86_64-linux-gnu/cmake', '/usr/lib/cmake', '/usr/local/lib/cmake', '/usr/local/share/cmake', '/usr/share/cmake'].flatMap((d) =>
  ['Torch', 'Caffe2', 'ATen'].map((n) => path.join(d, n)),
);
const HEADER_DIRS = ['/usr/include', '/usr/local/include'].flatMap((d) => ['torch', 'ATen', 'c10', 'caffe2'].map((n) => path.join(d, n)));

/** The python interpreters on PATH (python, python3, python3.N), and Debian's. */
export function pythonsOnPath(env: NodeJS.ProcessEnv = process.env): string[] {
  const found = new Set<string>(fs.existsSync('/usr/bin/python3') ? ['/usr/bin/python3'] : []);
  for (const dir of (env.PATH ?? '').split(':').filter(Boolean)) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names.filter((n) => /^python(3(\.\d+)?)?$/.test(n))) found.add(path.join(dir, name));
  }
  return [...found];
}

/** The folder of the torch package `python` imports, or undefined. */
export function torchOf(python: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  try {
    const origin = execFileSync(python, ['-c', 'import importlib.util as u; s = u.find_spec("torch"); print(s.origin if s else "")'], {
      encoding: 'utf8',
      env,
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    return origin ? path.dirname(origin) : undefined;
  } catch {
    return undefined;
  }
}

/** Every libtorch here except those under `keep` (folders). */
export function otherLibtorches(options: { keep?: string[]; env?: NodeJS.ProcessEnv } = {}): Hiding {
  const kept = (p: string) => (options.keep ?? []).some((k) => p === k || p.startsWith(`${k}/`));
  const files = new Set<string>();
  for (const dir of LIBRARY_DIRS) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names.filter((n) => LIBTORCH_LIBRARY.test(n))) {
      try {
        const real = fs.realpathSync(path.join(dir, name));
        if (fs.statSync(real).isFile()) files.add(real);
      } catch {
        // A dangling link loads nothing.
      }
    }
  }
  const dirs = new Set<string>([...CMAKE_DIRS, ...HEADER_DIRS].filter((d) => fs.existsSync(d)));
  for (const python of pythonsOnPath(options.env)) {
    const torch = torchOf(python, options.env);
    if (torch) dirs.add(fs.realpathSync(torch));
  }
  const venv = path.join(repoRoot, '.venv');
  if (fs.existsSync(venv)) dirs.add(venv);
  return { dirs: [...dirs].filter((d) => !kept(d)).sort(), files: [...files].filter((f) => !kept(f)).sort() };
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The command line that runs `command args` with `hiding` in effect. */
function wrap(hiding: Hiding, command: string, args: string[]): [string, string[]] {
  const mounts = [
    ...hiding.dirs.map((d) => `mount -t tmpfs -o size=1m,mode=0755 pl-hidden ${quote(d)}`),
    ...hiding.files.map((f) => `mount --bind /dev/null ${quote(f)}`),
  ];
  const script = `set -e\n${mounts.join('\n')}\nexec "$@"`;
  return ['unshare', ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', script, 'sh', command, ...args]];
}

/** Runs `command args` in the namespace; resolves with its stdout, rejects with its output on failure. */
export function runHidden(hiding: Hiding, command: string, args: string[], options: ExecFileOptions = {}): Promise<string> {
  const [cmd, argv] = wrap(hiding, command, args);
  return run(cmd, argv, options);
}

/** The same, synchronously, with the exit status (for commands whose failure is the point). */
export function spawnHidden(hiding: Hiding, command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const [cmd, argv] = wrap(hiding, command, args);
  return spawnSync(cmd, argv, { encoding: 'utf8', ...options });
}
