// cmake-js is fetched only when a source build happens (issue 23: a prebuild user installs only
// what runs). A user's install has no cmake-js; install/build-native.js takes an installed one if
// there is one, else `npm exec` fetches it; when that fails too (offline), the error says what to
// install and how to retry. The fetch itself, and the build after it, are covered by
// install.test.ts ("without a prebuild, the install builds from source").
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/package-copy';

const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
};

describe('package.json', () => {
  it('does not install cmake-js with the package: it is no dependency', () => {
    expect(Object.keys(pkg.dependencies ?? {})).not.toContain('cmake-js');
  });

  it("keeps cmake-js as a devDependency, whose range the fallback fetches (this repository's own builds use it)", () => {
    expect(pkg.devDependencies?.['cmake-js']).toMatch(/^\^\d+\.\d+\.\d+$/);
  });
});

describe('install/build-native.js where cmake-js is neither installed nor fetchable', () => {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-cmake-js-'));
  afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));
  const copy = path.join(scratch, 'package');
  const previousBuild = path.join(copy, 'build', 'Release', 'generic_perceptual_loss.node');
  let result: { status: number | null; stdout: string; stderr: string };

  beforeAll(() => {
    // The package as installed (no node_modules, so no cmake-js to resolve; nothing above it in
    // the temporary folder either), with a build from an earlier install.
    for (const entry of ['package.json', 'install']) fs.cpSync(path.join(repoRoot, entry), path.join(copy, entry), { recursive: true });
    fs.mkdirSync(path.dirname(previousBuild), { recursive: true });
    fs.writeFileSync(previousBuild, 'an earlier build');
    // npm offline, with an empty cache: npm exec cannot fetch anything.
    const env: NodeJS.ProcessEnv = { ...process.env, npm_config_offline: 'true', npm_config_cache: path.join(scratch, 'empty-cache') };
    delete env.npm_execpath; // the npm on PATH, as when a user runs the script by hand
    const child = spawnSync(process.execPath, [path.join(copy, 'install', 'build-native.js')], { cwd: copy, env, encoding: 'utf8', timeout: 120_000 });
    result = { status: child.status, stdout: child.stdout, stderr: child.stderr };
  }, 150_000);

  it('fails with exit code 1, saying that cmake-js could not be fetched and why', () => {
    expect(result.status).toBe(1);
    expect(result.stdout).toContain(`fetching cmake-js@${pkg.devDependencies!['cmake-js']} for the source build`);
    expect(result.stderr).toMatch(/the source build needs cmake-js \(cmake-js@\^\d+\.\d+\.\d+\), which is not installed and could not be fetched with npm exec: .*ENOTCACHED/);
  });

  it('names what to install (cmake-js of the pinned major, CMake, a C++17 compiler) and how to retry', () => {
    const major = /\d+/.exec(pkg.devDependencies!['cmake-js'])![0];
    expect(result.stderr).toContain(`npm install --save-dev cmake-js@${major}`);
    expect(result.stderr).toContain('apt-get install cmake g++ make');
    expect(result.stderr).toContain('C++17 compiler');
    expect(result.stderr).toContain('npm rebuild generic-perceptual-loss --build-from-source');
  });

  it('leaves the earlier build in place', () => {
    expect(fs.readFileSync(previousBuild, 'utf8')).toBe('an earlier build');
  });
});
