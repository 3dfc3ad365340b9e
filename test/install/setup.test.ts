// scripts/setup.sh explains what to install, and stops, where it cannot install it itself.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/package-copy';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-setup-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** A PATH holding only the given fake commands and the real tools the script needs. */
function fakePath(name: string, fakes: Record<string, string>): string {
  const bin = path.join(scratch, name);
  fs.mkdirSync(bin);
  for (const tool of ['grep', 'dirname', 'id']) fs.symlinkSync(`/usr/bin/${tool}`, path.join(bin, tool));
  for (const [tool, body] of Object.entries(fakes)) {
    fs.rmSync(path.join(bin, tool), { force: true });
    fs.writeFileSync(path.join(bin, tool), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  }
  return bin;
}

// Every package reads as not installed.
const NOTHING_INSTALLED = 'exit 1';

function setup(pathDir: string) {
  return spawnSync('/bin/bash', [path.join(repoRoot, 'scripts/setup.sh')], { encoding: 'utf8', env: { PATH: pathDir } });
}

describe('scripts/setup.sh', () => {
  it('without apt-get, names the missing packages and stops with a non-zero code', () => {
    const result = setup(fakePath('no-apt', { 'dpkg-query': NOTHING_INSTALLED }));
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('missing Debian packages: libtorch-dev python3-torch python3-torchvision');
    expect(result.stderr).toContain('apt-get is not available');
  });

  it('when not root, gives the exact apt-get command and stops with a non-zero code', () => {
    const result = setup(
      fakePath('not-root', { 'dpkg-query': NOTHING_INSTALLED, id: 'echo 1000', 'apt-get': 'echo "apt-get must not run" >&2; exit 99' }),
    );
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('sudo apt-get update && sudo apt-get install -y libtorch-dev python3-torch python3-torchvision');
    expect(result.stderr).not.toContain('must not run');
  });
});
