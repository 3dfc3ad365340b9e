// vitest's global setup: before any suite runs, bring the compiled package up to date with its
// sources. Several suites run the compiled package rather than lib/ through vitest (child
// processes, worker threads, packed copies), so without this a suite could compare new code in
// lib/ with old code in dist/, or test an addon built from old native sources.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..');

/** Files below `dir` (recursively) whose names pass `keep`; none if `dir` is missing. */
function filesUnder(dir: string, keep: (name: string) => boolean): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && keep(e.name))
    .map((e) => path.join(e.parentPath ?? e.path, e.name));
}

function newest(files: readonly string[]): { file: string; mtimeMs: number } | undefined {
  let best: { file: string; mtimeMs: number } | undefined;
  for (const file of files) {
    const { mtimeMs } = fs.statSync(file);
    if (!best || mtimeMs > best.mtimeMs) best = { file, mtimeMs };
  }
  return best;
}

/** Why `root`'s dist/ does not match lib/ (a sentence), or undefined when it does. */
export function distStaleness(root: string = ROOT): string | undefined {
  const lib = path.join(root, 'lib');
  const dist = path.join(root, 'dist');
  const sources = filesUnder(lib, (n) => n.endsWith('.ts') && !n.endsWith('.d.ts'));
  const outputs = sources.map((s) => path.join(dist, path.relative(lib, s)).replace(/\.ts$/, '.js'));
  outputs.push(path.join(dist, 'index.mjs'), path.join(dist, 'tfjs.mjs'));
  const missing = outputs.find((o) => !fs.existsSync(o));
  if (missing) return `${path.relative(root, missing)} is missing`;
  // A source that was deleted or renamed leaves its old output behind.
  const orphan = filesUnder(dist, (n) => n.endsWith('.js')).find((o) => !outputs.includes(o));
  if (orphan) return `${path.relative(root, orphan)} has no source in lib/`;
  const inputs = [...sources, path.join(root, 'tsconfig.json'), path.join(root, 'tools', 'esm-wrapper.js')];
  const input = newest(inputs.filter((f) => fs.existsSync(f)))!;
  const oldest = outputs.map((file) => ({ file, mtimeMs: fs.statSync(file).mtimeMs })).sort((a, b) => a.mtimeMs - b.mtimeMs)[0];
  if (input.mtimeMs > oldest.mtimeMs) return `${path.relative(root, input.file)} is newer than ${path.relative(root, oldest.file)}`;
  return undefined;
}

/**
 * Why `root`'s local addon build (build/Release) is older than the native sources, or undefined
 * when it is not (or when there is no local build: the loader then uses a prebuild, which the
 * install and build suites make from the sources themselves).
 */
export function nativeStaleness(root: string = ROOT): string | undefined {
  const binary = path.join(root, 'build', 'Release', 'generic_perceptual_loss.node');
  if (!fs.existsSync(binary)) return undefined;
  const inputs = [
    ...filesUnder(path.join(root, 'native'), (n) => /\.(cc|cpp|h|hpp)$/.test(n)),
    path.join(root, 'CMakeLists.txt'),
  ].filter((f) => fs.existsSync(f));
  const input = newest(inputs);
  if (input && input.mtimeMs > fs.statSync(binary).mtimeMs) {
    return `${path.relative(root, input.file)} is newer than ${path.relative(root, binary)}`;
  }
  return undefined;
}

function npmRun(root: string, script: string): void {
  try {
    execFileSync('npm', ['run', '--silent', script], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(`npm run ${script} failed in ${root}; no test can run the current sources:\n${[e.stdout, e.stderr].filter(Boolean).join('\n').trim() || e.message}`);
  }
}

/** Rebuilds dist/ (and a stale local addon build) of `root`; returns what was rebuilt and why. */
export function ensureBuilt(root: string = ROOT): string[] {
  const done: string[] = [];
  const dist = distStaleness(root);
  if (dist) {
    npmRun(root, 'build:ts');
    done.push(`dist/ rebuilt: ${dist}`);
  }
  // After dist/: the native build script reads dist/libtorch.js.
  const native = nativeStaleness(root);
  if (native) {
    npmRun(root, 'build:native');
    done.push(`build/Release rebuilt: ${native}`);
  }
  return done;
}

export default function setup(): void {
  for (const line of ensureBuilt()) console.log(`global setup: ${line}`);
}
