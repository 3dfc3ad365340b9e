#!/usr/bin/env node
// Fills the ignored .device/ folder with what the GPU machine lacks, for scripts/gpu-suite.sh
// (`npm run gpu:pack`, after `npm run build:ts`):
//   node.xz                       this machine's node binary, xz-compressed (it needs only glibc and libstdc++)
//   node_modules/node-api-headers the Node-API C headers
//   node_modules/node-addon-api   the C++ wrapper headers
//   node_modules/node-gyp-build   how the loader finds a prebuild's file
//   package/                      the package's build inputs (package.json, CMakeLists.txt, native/, install/)
//                                 and its compiled JavaScript (dist/)
//   test/gpu/, bench/gpu-*, tools/random.js
//                                 the GPU tests (node:test), the benchmark, the shared seeded generator
//   reference/perceptual.py       the PyTorch reference that test/gpu/torch_ref.py and bench/gpu_torch.py
//                                 import, at the same path relative to them as in the repository
//   manifest.json                 the commit, the node version and a sha256 of every file
// Options: --out DIR (default .device), --no-node (leave node out: the CPU dry run uses the local one).
'use strict';
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const LIMIT = 64 * 2 ** 20;

/** @param {string[]} argv @returns {{ out: string, node: boolean }} */
function parseArgs(argv) {
  const args = { out: path.join(root, '.device'), node: true };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') args.out = path.resolve(argv[++i]);
    else if (argv[i] === '--no-node') args.node = false;
    else throw new Error(`gpu-pack: unknown argument ${argv[i]} (--out DIR, --no-node)`);
  }
  return args;
}

/** @param {string} from a path in the repository @param {string} to */
function copy(from, to) {
  fs.cpSync(path.join(root, from), to, { recursive: true });
}

/** @param {string} dir @returns {string[]} every file under dir */
function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    /** @type {string[]} */
    const files = e.isDirectory() ? walk(p) : [p];
    return files;
  });
}

/** @param {{ out: string, node: boolean }} args */
function pack({ out, node }) {
  if (!fs.existsSync(path.join(root, 'dist/index.js'))) throw new Error('gpu-pack: no dist/; run `npm run build:ts` first');
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });

  if (node) {
    // -9: about 24 MB (-9e saves little and takes far longer); unpacked in about a second.
    const xz = execFileSync('xz', ['-9', '-T0', '-c', process.execPath], { maxBuffer: 256 * 2 ** 20 });
    fs.writeFileSync(path.join(out, 'node.xz'), xz);
  }
  const modules = (/** @type {string} */ name) => path.dirname(require.resolve(`${name}/package.json`, { paths: [root] }));
  const skipDocs = (/** @type {string} */ src) => !/\.(md)$/.test(src) && !/[/\\](test|tools|def|doc)$/.test(src);
  fs.cpSync(modules('node-api-headers'), path.join(out, 'node_modules/node-api-headers'), { recursive: true, filter: skipDocs });
  fs.cpSync(modules('node-addon-api'), path.join(out, 'node_modules/node-addon-api'), { recursive: true, filter: skipDocs });
  // The loader picks a prebuild's file with it (the stable-ABI phase).
  fs.cpSync(modules('node-gyp-build'), path.join(out, 'node_modules/node-gyp-build'), { recursive: true, filter: skipDocs });

  for (const entry of ['package.json', 'CMakeLists.txt', 'native', 'install', 'dist']) copy(entry, path.join(out, 'package', entry));
  // The stable-ABI prebuild exactly as npm pack ships it: the suite runs it with no build there.
  const stable = path.join('prebuilds', 'stable-abi-torch2.10');
  if (fs.existsSync(path.join(root, stable))) copy(stable, path.join(out, 'package', stable));
  else console.warn(`gpu-pack: no ${stable} (run npm run prebuilds): the suite's stable-ABI phase will fail`);
  copy('test/gpu', path.join(out, 'test/gpu'));
  fs.mkdirSync(path.join(out, 'bench'), { recursive: true });
  for (const file of fs.readdirSync(path.join(root, 'bench')).filter((f) => f.startsWith('gpu'))) {
    if (fs.statSync(path.join(root, 'bench', file)).isFile()) copy(`bench/${file}`, path.join(out, 'bench', file));
  }
  copy('tools/random.js', path.join(out, 'tools/random.js'));
  copy('reference/perceptual.py', path.join(out, 'reference/perceptual.py'));

  let commit = 'unknown';
  let dirty = false;
  try {
    commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
    dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8' }).trim() !== '';
  } catch {
    // not a git checkout
  }
  const files = walk(out).map((/** @type {string} */ file) => ({
    path: path.relative(out, file),
    bytes: fs.statSync(file).size,
    sha256: crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex'),
  }));
  const total = files.reduce((n, f) => n + f.bytes, 0);
  const manifest = { commit, dirty, packedAt: new Date().toISOString(), node: process.version, withNode: node, bytes: total, files };
  fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  if (total > LIMIT) throw new Error(`gpu-pack: ${out} holds ${total} bytes, over the 64 MiB that may travel`);
  console.log(`gpu-pack: ${out}: ${files.length} files, ${(total / 2 ** 20).toFixed(1)} MiB, commit ${commit.slice(0, 12)}${dirty ? ' (with uncommitted changes)' : ''}`);
  return manifest;
}

module.exports = { pack };
if (require.main === module) {
  try {
    pack(parseArgs(process.argv.slice(2)));
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  }
}
