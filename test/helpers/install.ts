// What the install tests share: a PATH without compilers, and the release tarballs.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './package-copy';
import { run } from './run';

const COMPILERS = /^(cmake|make|gmake|ninja|cc|c\+\+|gcc|g\+\+|clang|clang\+\+|x86_64-linux-gnu-(gcc|g\+\+|cpp)(-\d+)?|(gcc|g\+\+|cpp)-\d+|nvcc)$/;

/** A folder (in `scratch`) for PATH with every tool of the current PATH except compilers and build tools. */
export function pathWithoutCompilers(scratch: string): string {
  const bin = path.join(scratch, 'no-compilers-bin');
  fs.mkdirSync(bin, { recursive: true });
  for (const dir of (process.env.PATH ?? '').split(':')) {
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of entries) {
      const link = path.join(bin, name);
      if (COMPILERS.test(name) || fs.existsSync(link)) continue;
      fs.symlinkSync(path.join(dir, name), link);
    }
  }
  return bin;
}

export interface Release {
  /** The main package's tarball. */
  main: string;
  /** The runtime package's tarball (@generic-perceptual-loss/libtorch-linux-x64). */
  runtime: string;
}

/**
 * The tarballs of `npm run pack:release` in release/, packed again first if any of their sources
 * is newer (CI packs once, before the tests; two test files asking at once take turns).
 */
export async function releaseTarballs(): Promise<Release> {
  await run(process.execPath, [path.join(repoRoot, 'scripts/pack-release.js'), '--if-stale'], { cwd: repoRoot });
  const { tarballs } = JSON.parse(fs.readFileSync(path.join(repoRoot, 'release/release.json'), 'utf8')) as { tarballs: Array<{ name: string; filename: string }> };
  const file = (name: string) => path.join(repoRoot, 'release', tarballs.find((t) => t.name === name)!.filename);
  return { main: file('generic-perceptual-loss'), runtime: file('@generic-perceptual-loss/libtorch-linux-x64') };
}
