#!/usr/bin/env node
// Makes the runtime package @generic-perceptual-loss/libtorch-linux-x64 (sharp's
// @img/sharp-libvips-<platform>, for libtorch): the CPU libraries of PyTorch's pip wheel, in an
// npm package that npm installs only on Linux x64 with glibc, with no install script.
//
//   node scripts/make-runtime-package.js [--wheel FILE] [--pack-destination DIR] [--prebuild FILE]
//
// 1. The wheel: --wheel, else `pip download --no-deps torch==<version>+cpu` (the version is the
//    template's, npm/libtorch-linux-x64/package.json) into build/runtime-package/wheel/. The
//    wheel, not an installed environment: it is the published artifact, its RECORD gives every
//    file's SHA-256, it carries the license files, and it needs no .venv.
// 2. build/runtime-package/libtorch-linux-x64/: the template, plus lib/ with the libraries the
//    addon loads (libc10.so, libtorch_cpu.so, and libgomp.so.1, which libtorch_cpu.so links
//    through its $ORIGIN run path), torch's LICENSE and third_party/ notices, each checked
//    against the wheel's RECORD; package.json gains the wheel's name and the SHA-256s.
// 3. A load test: the torch2.13-cpu-cxx11 prebuild (or --prebuild) loads against that lib/ alone, the way
//    lib/loader.ts loads it, and the libraries the process then maps are exactly those in lib/.
// 4. `npm pack` into --pack-destination (default release/). Skipped when the inputs and the
//    tarball are unchanged since the last run.
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');

const root = path.resolve(__dirname, '..');
const template = path.join(root, 'npm', 'libtorch-linux-x64');
const work = path.join(root, 'build', 'runtime-package');
const stage = path.join(work, 'libtorch-linux-x64');
const say = (/** @type {string} */ line) => console.log(`runtime-package: ${line}`);
const fail = (/** @type {string} */ line) => {
  console.error(`runtime-package: ${line}`);
  process.exit(1);
};

/** The wheel's tags: one fixed wheel, whatever python runs pip. */
const WHEEL_TAGS = ['--platform', 'manylinux_2_28_x86_64', '--python-version', '3.11', '--implementation', 'cp', '--abi', 'cp311'];
/** Wheel member -> path in the package. */
const LIBRARIES = { 'torch/lib/libc10.so': 'lib/libc10.so', 'torch/lib/libtorch_cpu.so': 'lib/libtorch_cpu.so', 'torch/lib/libgomp.so.1': 'lib/libgomp.so.1' };
/** @type {{ wheel?: string, 'pack-destination'?: string, prebuild?: string }} */
let args;
try {
  args = util.parseArgs({ options: { wheel: { type: 'string' }, 'pack-destination': { type: 'string' }, prebuild: { type: 'string' } } }).values;
} catch (error) {
  fail(`${/** @type {Error} */ (error).message}\nusage: node scripts/make-runtime-package.js [--wheel FILE] [--pack-destination DIR] [--prebuild FILE]`);
  throw error;
}
const PREBUILD = path.resolve(args.prebuild ?? path.join(root, 'prebuilds', 'torch2.13-cpu-cxx11', 'prebuilds', 'linux-x64', 'generic-perceptual-loss.glibc.node'));
const destination = path.resolve(args['pack-destination'] ?? path.join(root, 'release'));

/** @typedef {{ name: string, version: string, license: string, libtorch: { version: string, cuda: boolean, cxx11Abi: boolean, wheel?: string, wheelSha256?: string, sha256?: Record<string, string> } }} RuntimeManifest */
const manifest = /** @type {RuntimeManifest} */ (JSON.parse(fs.readFileSync(path.join(template, 'package.json'), 'utf8')));
const main = /** @type {{ optionalDependencies?: Record<string, string> }} */ (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')));
if (main.optionalDependencies?.[manifest.name] !== manifest.version) {
  fail(`package.json's optionalDependencies must list ${manifest.name} at exactly ${manifest.version} (it has ${main.optionalDependencies?.[manifest.name] ?? 'none'})`);
}
const spec = `torch==${manifest.libtorch.version}+cpu`;

/** @param {string} file */
function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function findWheel() {
  if (args.wheel) return path.resolve(args.wheel);
  const dir = path.join(work, 'wheel');
  const cached = () => (fs.existsSync(dir) ? fs.readdirSync(dir).find((f) => f.startsWith(`torch-${manifest.libtorch.version}+cpu-`) && f.endsWith('.whl')) : undefined);
  if (!cached()) {
    const python = process.env.PYTHON ?? 'python3';
    say(`pip download ${spec}`);
    // An index that cannot be reached fails at once (scripts/torch-envs.sh does the same).
    const retries = process.env.PIP_RETRIES ?? '0';
    execFileSync(python, ['-m', 'pip', 'download', '--no-deps', '--retries', retries, '--only-binary=:all:', ...WHEEL_TAGS, spec, '--dest', dir], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  const name = cached();
  if (!name) fail(`pip download left no torch-${manifest.libtorch.version}+cpu wheel in ${dir}`);
  return path.join(dir, /** @type {string} */ (name));
}

// Extracts the members, checking each against RECORD (sha256, urlsafe base64 without padding), and
// reads torch/version.py and METADATA's license expression. Prints JSON.
const EXTRACT = `
import base64, hashlib, json, os, sys, zipfile
wheel, out, libraries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
z = zipfile.ZipFile(wheel)
info = [n for n in z.namelist() if n.endswith('.dist-info/RECORD')][0].rsplit('/', 1)[0]
record = {}
for line in z.read(info + '/RECORD').decode().splitlines():
    parts = line.rsplit(',', 2)
    if len(parts) == 3 and parts[1].startswith('sha256='):
        record[parts[0]] = parts[1][7:]
members = dict(libraries)
members[info + '/licenses/LICENSE'] = 'LICENSE'
prefix = info + '/licenses/third_party/'
for n in z.namelist():
    if n.startswith(prefix) and not n.endswith('/'):
        members[n] = 'third_party/' + n[len(prefix):]
files = {}
for member, dest in sorted(members.items()):
    target = os.path.join(out, dest)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    h = hashlib.sha256()
    with z.open(member) as src, open(target, 'wb') as dst:
        for chunk in iter(lambda: src.read(1 << 20), b''):
            h.update(chunk)
            dst.write(chunk)
    digest = base64.urlsafe_b64encode(h.digest()).rstrip(b'=').decode()
    if record.get(member) != digest:
        sys.exit('%s: sha256 %s, RECORD says %s' % (member, digest, record.get(member)))
    files[dest] = h.hexdigest()
version = {}
exec(z.read('torch/version.py').decode(), version)
license = [l.split(':', 1)[1].strip() for l in z.read(info + '/METADATA').decode().splitlines() if l.startswith('License-Expression:')]
print(json.dumps({'version': version['__version__'], 'cuda': version.get('cuda'), 'license': license[0] if license else None, 'files': files}))
`;

// Loads the prebuild against lib/ alone, as lib/loader.ts does (libc10 and libtorch_cpu by
// absolute path, RTLD_GLOBAL, then the addon), and lists the libtorch-side libraries mapped.
const LOAD_TEST = `
const [dir, prebuild] = JSON.parse(process.argv[1]);
const os = require('node:os');
const fs = require('node:fs');
for (const lib of ['libc10.so', 'libtorch_cpu.so']) {
  try { process.dlopen({ exports: {} }, dir + '/' + lib, os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL); }
  catch (e) { if (!/did not self-register/.test(e.message)) throw e; }
}
const info = require(prebuild).runtimeInfo();
const mapped = fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/')).map((l) => l.slice(l.indexOf('/')));
const libs = [...new Set(mapped.filter((f) => /\\/lib(torch|c10|gomp|omp|iomp)[^/]*\\.so/.test(f)))].sort();
process.stdout.write(JSON.stringify({ torchVersion: info.torchVersion, libs }));
`;

/** The libraries a process maps once the prebuild has loaded against `dir`. */
function loadTest(/** @type {string} */ dir) {
  const env = { ...process.env };
  delete env.LD_LIBRARY_PATH;
  delete env.LD_PRELOAD;
  const child = spawnSync(process.execPath, ['-e', LOAD_TEST, JSON.stringify([dir, PREBUILD])], { encoding: 'utf8', env });
  if (child.status !== 0) fail(`the prebuild failed to load against ${dir}: ${child.stderr.trim() || child.signal}`);
  return /** @type {{ torchVersion: string, libs: string[] }} */ (JSON.parse(child.stdout));
}

/** The load test of the staged lib/: the libraries mapped must be exactly those shipped. */
function checkLoad() {
  const loaded = loadTest(path.join(stage, 'lib'));
  const shipped = Object.values(LIBRARIES).map((f) => path.join(stage, f)).sort();
  if (JSON.stringify(loaded.libs) !== JSON.stringify(shipped)) {
    fail(`the load test mapped ${loaded.libs.join(', ')}; the package ships ${shipped.join(', ')}`);
  }
  say(`load test: ${path.relative(root, PREBUILD)} loads libtorch ${loaded.torchVersion} from lib/ alone (${loaded.libs.map((l) => path.basename(l)).join(', ')})`);
}

const wheel = findWheel();
const wheelSha256 = sha256(wheel);
/** What the package is made from: this script, the template and the wheel. */
function inputsDigest() {
  const h = crypto.createHash('sha256').update(fs.readFileSync(__filename)).update(wheelSha256);
  const files = fs.readdirSync(template, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
  for (const file of files.sort()) h.update(path.relative(template, file)).update(fs.readFileSync(file));
  return h.digest('hex');
}
if (!fs.existsSync(PREBUILD)) fail(`no prebuild at ${path.relative(root, PREBUILD)}: run \`npm run prebuilds\` first`);
const inputs = inputsDigest();
const stampFile = path.join(work, 'stamp.json');
const tarball = path.join(destination, `${manifest.name.replace(/^@/, '').replace('/', '-')}-${manifest.version}.tgz`);
/** @type {{ inputs?: string, tarball?: string, sha256?: string, report?: object }} */
let stamp = {};
try {
  stamp = JSON.parse(fs.readFileSync(stampFile, 'utf8'));
} catch {
  // First run.
}
if (stamp.inputs === inputs && stamp.tarball === tarball && fs.existsSync(tarball) && stamp.report && sha256(tarball) === stamp.sha256 && fs.existsSync(path.join(stage, 'package.json'))) {
  // The prebuild may be newer: the load test runs again all the same.
  checkLoad();
  say(`${path.relative(root, tarball)} is up to date`);
  process.exit(0);
}
say(`staging ${path.relative(root, stage)} from ${path.basename(wheel)}`);
fs.rmSync(stage, { recursive: true, force: true });
fs.cpSync(template, stage, { recursive: true });
const python = process.env.PYTHON ?? 'python3';
const extracted = /** @type {{ version: string, cuda: string | null, license: string | null, files: Record<string, string> }} */ (
  JSON.parse(execFileSync(python, ['-c', EXTRACT, wheel, stage, JSON.stringify(LIBRARIES)], { encoding: 'utf8', maxBuffer: 16 << 20 }))
);

// The template says what the package carries; the wheel must agree.
if (extracted.version !== `${manifest.libtorch.version}+cpu` || extracted.cuda !== null) {
  fail(`the wheel is torch ${extracted.version} (cuda ${extracted.cuda}), the template says ${manifest.libtorch.version}+cpu`);
}
if (!extracted.license || !manifest.license.startsWith(`(${extracted.license}) AND `)) {
  fail(`the template's license (${manifest.license}) does not start with the wheel's (${extracted.license})`);
}
const cxx11Abi = fs.readFileSync(path.join(stage, 'lib', 'libc10.so')).includes('NSt7__cxx1112basic_string');
if (cxx11Abi !== manifest.libtorch.cxx11Abi) fail(`libc10.so's C++ ABI is ${cxx11Abi ? 'cxx11' : 'pre-cxx11'}, the template says otherwise`);

checkLoad();

manifest.libtorch.wheel = path.basename(wheel);
manifest.libtorch.wheelSha256 = wheelSha256;
manifest.libtorch.sha256 = Object.fromEntries(Object.values(LIBRARIES).map((f) => [f, extracted.files[f]]));
fs.writeFileSync(path.join(stage, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);

fs.mkdirSync(destination, { recursive: true });
say(`npm pack into ${path.relative(root, destination) || '.'}`);
const out = execFileSync('npm', ['pack', '--json', '--pack-destination', destination], { cwd: stage, encoding: 'utf8', maxBuffer: 64 << 20 });
const [report] = /** @type {Array<{ name: string, version: string, filename: string, size: number, unpackedSize: number, entryCount: number, integrity: string }>} */ (JSON.parse(out));
const packed = path.join(destination, report.filename);
if (packed !== tarball) fail(`npm pack wrote ${packed}, expected ${tarball}`);
const { name, version, filename, size, unpackedSize, entryCount, integrity } = report;
fs.writeFileSync(stampFile, JSON.stringify({ inputs, tarball, sha256: sha256(tarball), report: { name, version, filename, size, unpackedSize, entryCount, integrity } }));
const mb = (/** @type {number} */ n) => `${(n / 1e6).toFixed(1)} MB`;
say(`wrote ${path.relative(root, tarball)}: ${mb(report.size)} packed, ${mb(report.unpackedSize)} unpacked, ${report.entryCount} files`);
