// The published types as a user's strict project sees them (issue 23): the package built from
// lib/ as `npm run build:ts` builds it (tsc, then tools/esm-wrapper.js) into the node_modules of
// temporary projects, one an ES module and one CommonJS, compiled with `strict` and
// `skipLibCheck: false` by the TypeScript the package pins and by the newest TypeScript on npm.
//
// What they compile: test/fixtures/types/ (a new user's first file: typed results, the task
// helpers, `using`, the tfjs adapter), and every ```ts block of README.md and docs/api.md. The
// README's blocks are fragments, not programs: each becomes a module of its own, given the
// package's imports it leaves out and, from globals.d.ts below, the names it uses without
// declaring (`logits`, `model`, ...); `@tensorflow/tfjs` is mapped to @tensorflow/tfjs-core,
// which is what this repository installs. In the CommonJS project a block's statements run
// inside an async function (CommonJS has no top-level await).
//
// Two settings each: the minimal project (no `lib`, `types: []`: no @types/node, the default of
// TypeScript 6 and later) compiles first-hour.ts; the settings docs/api.md gives for `using`
// (`lib: ["es2022", "esnext.disposable"]`, `types: ["node"]`) compile everything.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/package-copy';
import { run } from '../helpers/run';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-types-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

const pkg = path.join(scratch, 'node_modules', 'generic-perceptual-loss');
const FIXTURES = path.join(repoRoot, 'test', 'fixtures', 'types');

/** The ```ts blocks of a Markdown file, in order. */
function tsBlocks(file: string): string[] {
  const text = fs.readFileSync(path.join(repoRoot, file), 'utf8');
  return [...text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

const BLOCKS = [...tsBlocks('README.md').map((code, i) => ({ name: `readme-${i + 1}`, code })), ...tsBlocks('docs/api.md').map((code, i) => ({ name: `api-${i + 1}`, code }))];

/** What the README's fragments use without declaring: the user's own model, data and optimizer. */
const GLOBALS = `// The names the README's fragments use without declaring them (a user's own).
type Tf = typeof import('@tensorflow/tfjs-core');
declare const pred: { data: Float32Array; shape: number[] };
declare const target: { data: Float32Array; shape: number[] };
declare const logits: { data: Float32Array; shape: number[] };
declare const groundTruthDepth: Float32Array;
declare const validPixels: Uint8Array;
declare const classes: number;
declare const lambda: number;
declare const optimizer: import('@tensorflow/tfjs-core').Optimizer;
declare const model: { predict(x: import('@tensorflow/tfjs-core').Tensor): ReturnType<Tf['zeros']> | ReturnType<Tf['zeros']>[] };
declare const images: import('@tensorflow/tfjs-core').Tensor4D;
declare const labels: import('@tensorflow/tfjs-core').Tensor3D;
`;

/** A fragment as a module: the package's imports it leaves out, and for CommonJS its statements in a function. */
function moduleOf(code: string, exportsOfPackage: string[], kind: 'esm' | 'cjs'): string {
  const lines = code.split('\n');
  const imports = lines.filter((l) => /^import /.test(l));
  const body = lines.filter((l) => !/^import /.test(l));
  const imported = new Set(imports.flatMap((l) => [...l.matchAll(/\b(\w+)\b/g)].map((m) => m[1])));
  const missing = exportsOfPackage.filter((name) => !imported.has(name) && new RegExp(`\\b${name}\\b`).test(body.join('\n')));
  const head = [...imports, ...(missing.length ? [`import { ${missing.join(', ')} } from 'generic-perceptual-loss';`] : [])];
  const statements = kind === 'esm' ? body : ['export async function example(): Promise<void> {', ...body, '}'];
  return [...head, ...statements, 'export {};', ''].join('\n');
}

type Kind = 'esm' | 'cjs';
type Setting = 'minimal' | 'documented';

const COMPILERS: Record<string, () => string> = {
  // The TypeScript that package.json pins (node_modules/typescript).
  pinned: () => path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'),
  // The newest on npm, installed in beforeAll.
  latest: () => path.join(scratch, 'ts-latest', 'node_modules', 'typescript', 'bin', 'tsc'),
};

/** TypeScript's version behind a compiler of COMPILERS. */
function versionOf(tsc: string): string {
  return (JSON.parse(fs.readFileSync(path.join(path.dirname(tsc), '..', 'package.json'), 'utf8')) as { version: string }).version;
}

/** A project folder with the fixtures, the fragments and both tsconfigs. */
function project(kind: Kind, exportsOfPackage: string[]): string {
  const dir = path.join(scratch, kind);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `user-${kind}`, private: true, type: kind === 'esm' ? 'module' : 'commonjs' }));
  for (const file of fs.readdirSync(FIXTURES)) fs.copyFileSync(path.join(FIXTURES, file), path.join(dir, file));
  fs.writeFileSync(path.join(dir, 'globals.d.ts'), GLOBALS);
  for (const block of BLOCKS) fs.writeFileSync(path.join(dir, `${block.name}.ts`), moduleOf(block.code, exportsOfPackage, kind));
  const common = { strict: true, skipLibCheck: false, noEmit: true, target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext' };
  const minimal = { compilerOptions: { ...common, types: [] }, files: ['first-hour.ts'] };
  const documented = {
    compilerOptions: {
      ...common,
      lib: ['es2022', 'esnext.disposable'],
      types: ['node'],
      paths: { '@tensorflow/tfjs': ['../node_modules/@tensorflow/tfjs-core/dist/index.d.ts'] },
    },
    files: ['globals.d.ts', 'first-hour.ts', 'using.ts', 'tfjs.ts', ...BLOCKS.map((b) => `${b.name}.ts`)],
  };
  fs.writeFileSync(path.join(dir, 'tsconfig.minimal.json'), JSON.stringify(minimal, null, 2));
  fs.writeFileSync(path.join(dir, 'tsconfig.documented.json'), JSON.stringify(documented, null, 2));
  return dir;
}

/**
 * Declaration files of other packages that do not compile with `skipLibCheck: false` on their own
 * (tfjs-core's name a global `Long` it never declares, and its WebGPU types clash with newer
 * TypeScript's lib.dom). Their errors are left out; every other file, this package's .d.ts above
 * all, must compile without one.
 */
const THIRD_PARTY = /node_modules\/(@tensorflow|@webgpu|@types\/(long|offscreencanvas|seedrandom))\/|node_modules\/(@typescript|typescript)\/.*\/lib\.[\w.]+\.d\.ts/;

/** tsc's errors for a project, one a line, less those located in THIRD_PARTY files. */
async function compile(tsc: string, dir: string, setting: Setting): Promise<string[]> {
  let output: string;
  try {
    output = await run(process.execPath, [tsc, '-p', path.join(dir, `tsconfig.${setting}.json`), '--pretty', 'false'], { cwd: dir });
  } catch (error) {
    output = (error as { stdout: string }).stdout ?? String(error);
  }
  // A diagnostic starts a line with its file (or "error TS"); continuation lines are indented.
  const diagnostics = output.split('\n').filter((l) => /^\S.*error TS\d+/.test(l));
  const located = diagnostics.map((l) => {
    const at = l.indexOf('(');
    return at > 0 && !l.startsWith('error') ? path.resolve(dir, l.slice(0, at)) + l.slice(at) : l;
  });
  const left = located.filter((l) => THIRD_PARTY.test(l));
  if (left.length > 0) console.log(`${path.basename(dir)}, tsconfig.${setting}.json: ${left.length} error(s) in other packages' declarations left out, the first: ${left[0]}`);
  return located.filter((l) => !THIRD_PARTY.test(l));
}

let exportsOfPackage: string[] = [];
const projects: Partial<Record<Kind, string>> = {};

beforeAll(async () => {
  // The package as `npm run build:ts` makes it, from the sources of this checkout.
  fs.mkdirSync(pkg, { recursive: true });
  await run(process.execPath, [COMPILERS.pinned(), '-p', path.join(repoRoot, 'tsconfig.json'), '--outDir', path.join(pkg, 'dist')], { cwd: repoRoot });
  fs.mkdirSync(path.join(pkg, 'tools'));
  fs.copyFileSync(path.join(repoRoot, 'tools', 'esm-wrapper.js'), path.join(pkg, 'tools', 'esm-wrapper.js'));
  await run(process.execPath, [path.join(pkg, 'tools', 'esm-wrapper.js')]);
  for (const file of ['package.json', 'README.md']) fs.copyFileSync(path.join(repoRoot, file), path.join(pkg, file));
  // The user's other dependencies: @types/node (for the documented settings) and tfjs-core.
  for (const dep of ['@types/node', '@tensorflow/tfjs-core']) {
    fs.mkdirSync(path.dirname(path.join(scratch, 'node_modules', dep)), { recursive: true });
    fs.symlinkSync(path.join(repoRoot, 'node_modules', dep), path.join(scratch, 'node_modules', dep));
  }
  const mjs = fs.readFileSync(path.join(pkg, 'dist', 'index.mjs'), 'utf8');
  exportsOfPackage = /export const \{ ([^}]+) \} = cjs;/.exec(mjs)![1].split(', ');
  for (const kind of ['esm', 'cjs'] as const) projects[kind] = project(kind, exportsOfPackage);

  // The newest TypeScript: the registry must answer, or this suite fails saying so.
  const latest = path.join(scratch, 'ts-latest');
  fs.mkdirSync(latest);
  fs.writeFileSync(path.join(latest, 'package.json'), '{"private": true}');
  try {
    await run('npm', ['install', '--no-audit', '--no-fund', '--no-save', 'typescript@latest'], { cwd: latest, timeout: 300_000 });
  } catch (error) {
    throw new Error(
      `could not install typescript@latest from the npm registry (${(error as Error).message.split('\n')[0]}); this suite compiles the package's types with the newest TypeScript and needs the registry`,
    );
  }
}, 900_000);

describe('the shipped declarations', () => {
  /** The .d.ts files an entry reaches through its imports (relative ones: this package's own). */
  function reached(entry: string): string[] {
    const seen = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:from|import)\s+'(\.[^']+)'|import\('(\.[^']+)'\)/g)) {
        const spec = (m[1] ?? m[2]).replace(/\.js$/, '');
        visit(path.join(path.dirname(file), spec.endsWith('.mjs') ? spec.replace(/\.mjs$/, '.d.mts') : `${spec}.d.ts`));
      }
    };
    visit(path.join(pkg, 'dist', entry));
    return [...seen].map((f) => path.relative(path.join(pkg, 'dist'), f)).sort();
  }

  it.each(['index.d.ts', 'index.d.mts', 'tfjs.d.ts', 'tfjs.d.mts'])('%s reaches no internal module (binding, loader, libtorch, cli) and no NodeJS namespace', (entry) => {
    const files = reached(entry);
    expect(files).toContain(entry);
    expect(files.filter((f) => /^(binding|loader|libtorch|cli|persistence|safetensors)\.d\.ts$/.test(f))).toEqual([]);
    for (const file of files) expect(fs.readFileSync(path.join(pkg, 'dist', file), 'utf8'), file).not.toMatch(/\bNodeJS\.|implements Disposable/);
  });

  it("compiles every ```ts block of README.md and docs/api.md (and there are some)", () => {
    expect(tsBlocks('README.md').length).toBeGreaterThanOrEqual(5);
    expect(tsBlocks('docs/api.md').length).toBeGreaterThanOrEqual(1);
    const files = (JSON.parse(fs.readFileSync(path.join(projects.esm!, 'tsconfig.documented.json'), 'utf8')) as { files: string[] }).files;
    expect(files.filter((f) => /^(readme|api)-\d+\.ts$/.test(f))).toHaveLength(BLOCKS.length);
  });
});

for (const [compiler, tsc] of Object.entries(COMPILERS)) {
  describe(`TypeScript ${compiler === 'pinned' ? 'pinned by package.json' : 'latest on npm'}`, () => {
    it('is the expected compiler', () => {
      const version = versionOf(tsc());
      if (compiler === 'pinned') {
        const range = (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> }).devDependencies.typescript;
        expect(version.split('.')[0]).toBe(range.replace(/^\D+/, '').split('.')[0]);
      } else {
        expect(version).toMatch(/^\d+\.\d+\.\d+$/);
      }
    });

    for (const kind of ['esm', 'cjs'] as const) {
      for (const setting of ['minimal', 'documented'] as const) {
        const what = setting === 'minimal' ? 'first-hour.ts with no @types/node and no lib setting' : 'the fixtures, `using` and the docs\' blocks with the settings docs/api.md gives';
        it(`${kind === 'esm' ? 'an ES module' : 'a CommonJS'} project compiles ${what}, strict, skipLibCheck false`, async () => {
          const errors = await compile(tsc(), projects[kind]!, setting);
          expect(errors, `TypeScript ${versionOf(tsc())}, ${kind}, tsconfig.${setting}.json`).toEqual([]);
        }, 300_000);
      }
    }
  });
}
