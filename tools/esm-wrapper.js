#!/usr/bin/env node
// Writes dist/index.mjs and dist/tfjs.mjs: the ES module faces of the CommonJS build, so `import` and `require`
// share one instance of the addon and its classes. Export names are read from tsc's output
// (not by loading it: the addon may not be built yet). Each gets its own types (.d.mts), so
// TypeScript reads the `import` face as an ES module with the same default export.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const dist = path.resolve(__dirname, '..', 'dist');
for (const name of ['index', 'tfjs']) {
  const source = fs.readFileSync(path.join(dist, `${name}.js`), 'utf8');
  const names = [...source.matchAll(/Object\.defineProperty\(exports, "(\w+)"|^exports\.(\w+) =/gm)]
    .map((m) => m[1] ?? m[2])
    .filter((n) => n !== '__esModule');
  const unique = [...new Set(names)];
  const body = [`import cjs from './${name}.js';`, `export const { ${unique.join(', ')} } = cjs;`, 'export default cjs;', ''];
  fs.writeFileSync(path.join(dist, `${name}.mjs`), body.join('\n'));
  const types = [`import * as cjs from './${name}.js';`, `export * from './${name}.js';`, 'export default cjs;', ''];
  fs.writeFileSync(path.join(dist, `${name}.d.mts`), types.join('\n'));
}
