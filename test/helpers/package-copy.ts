// A copy of the package's build inputs in a temporary folder, sharing the repo's node_modules.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '../..');

const BUILD_INPUTS = ['package.json', 'CMakeLists.txt', 'binding.gyp', 'native', 'install', 'scripts', 'dist'];

export function copyPackage(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  for (const entry of BUILD_INPUTS) fs.cpSync(path.join(repoRoot, entry), path.join(dir, entry), { recursive: true });
  fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}
