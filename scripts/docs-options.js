#!/usr/bin/env node
// Writes docs/api.md's options table from the options' one declaration (lib/options.ts, read
// from the compiled dist/): `npm run docs:options` after adding or changing an option.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const { optionsTable } = require('../dist/options.js');
const file = path.join(__dirname, '..', 'docs', 'api.md');
const begin = '<!-- options-table:begin -->';
const end = '<!-- options-table:end -->';
const text = fs.readFileSync(file, 'utf8');
const from = text.indexOf(begin);
const to = text.indexOf(end);
if (from < 0 || to < from) throw new Error(`${file}: the markers ${begin} and ${end} are missing`);
fs.writeFileSync(file, `${text.slice(0, from + begin.length)}\n${optionsTable()}\n${text.slice(to)}`);
console.log(`docs-options: wrote the options table of ${path.relative(process.cwd(), file)}`);
