#!/usr/bin/env node
// Builds the addon with cmake-js into build/Release, against the libtorch that
// scripts/find-libtorch.js reports. Extra arguments go to cmake-js (e.g. --debug).
'use strict';
const { execFileSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });

run(process.execPath, [path.join(__dirname, 'find-libtorch.js')]);
const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
run(process.execPath, [cmakeJs, 'compile', '--log-level', 'warn', ...process.argv.slice(2)]);
