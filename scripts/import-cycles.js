#!/usr/bin/env node
// Fails when the package's modules import each other in a circle (npm run lint). Reads the import
// and export-from lines of lib/*.ts with TypeScript's own pre-parser, type-only imports included:
// a circle of types is still a tangle of concerns.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const root = path.join(__dirname, '..');
const dirs = process.argv.slice(2).length ? process.argv.slice(2) : ['lib'];

/** @type {Map<string, string[]>} module -> the local modules it imports */
const graph = new Map();
for (const dir of dirs) {
  for (const name of fs.readdirSync(path.join(root, dir))) {
    if (!name.endsWith('.ts') || name.endsWith('.d.ts')) continue;
    const file = path.join(dir, name);
    const { importedFiles } = ts.preProcessFile(fs.readFileSync(path.join(root, file), 'utf8'), true, true);
    const local = importedFiles.map((i) => i.fileName).filter((f) => f.startsWith('.'));
    graph.set(file, local.map((f) => path.join(path.dirname(file), `${f.replace(/\.js$/, '')}.ts`)));
  }
}

/** Depth-first search; a module met again on the current path closes a circle. */
/** @type {string[][]} */
const cycles = [];
const done = new Set();
function visit(/** @type {string} */ file, /** @type {string[]} */ trail) {
  const at = trail.indexOf(file);
  if (at >= 0) return void cycles.push([...trail.slice(at), file]);
  if (done.has(file) || !graph.has(file)) return;
  for (const next of graph.get(file) ?? []) visit(next, [...trail, file]);
  done.add(file);
}
for (const file of graph.keys()) visit(file, []);

if (cycles.length > 0) {
  for (const cycle of cycles) console.error(`import circle: ${cycle.join(' -> ')}`);
  process.exit(1);
}
console.log(`import-cycles: no circles among the ${graph.size} modules of ${dirs.join(', ')}`);
