#!/usr/bin/env node
// Prints the libtorch that the builds use (see lib/libtorch.ts for the search order).
//   node install/find-libtorch.js            human-readable report
//   node install/find-libtorch.js --json     the whole search as JSON
//   node install/find-libtorch.js --cmake    set() lines for CMakeLists.txt
//   node install/find-libtorch.js --gyp KEY  one binding.gyp list: include_dirs | libraries | defines | ldflags | sources | cflags_cc
//   node install/find-libtorch.js --flavour  the prebuild flavour of the libtorch found (torch2.14-cu130-cxx11)
// The C++ standard comes from discovery too (cxxStandardFor in lib/libtorch.ts), for both builds.
'use strict';
const childProcess = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');
const { findLibtorch, describeCandidate } = require('../dist/libtorch.js');

/** A source list of native/, one path (from the package root) a line. */
function sourceList(/** @type {string} */ name) {
  return fs.readFileSync(path.join(__dirname, '..', 'native', name), 'utf8').split('\n').filter(Boolean);
}

/** Whether libtorch_cpu in `libraryDir` needs libgomp.so.1 (readelf comes with the linker). */
function needsLibgomp(/** @type {string | undefined} */ libraryDir) {
  if (!libraryDir) return false;
  try {
    const dynamic = childProcess.execFileSync('readelf', ['-d', path.join(libraryDir, 'libtorch_cpu.so')], { encoding: 'utf8' });
    return dynamic.includes('Shared library: [libgomp.so.1]');
  } catch {
    return false;
  }
}

/** @type {{ json?: boolean, cmake?: boolean, flavour?: boolean, gyp?: string }} */
let mode;
try {
  mode = util.parseArgs({ options: { json: { type: 'boolean' }, cmake: { type: 'boolean' }, flavour: { type: 'boolean' }, gyp: { type: 'string' } } }).values;
} catch (error) {
  console.error(`${/** @type {Error} */ (error).message}\nusage: node install/find-libtorch.js [--json | --cmake | --flavour | --gyp KEY]`);
  process.exit(2);
}

// For a build: the bundled runtime (libraries only, no headers) is listed but cannot be chosen.
const search = findLibtorch(process.env, { forBuild: true });
const chosen = search.chosen;

if (mode.json) {
  process.stdout.write(JSON.stringify(search, null, 2) + '\n');
  process.exit(chosen ? 0 : 1);
}

if (!chosen) {
  console.error('generic-perceptual-loss: no usable libtorch found. Looked at:');
  for (const c of search.candidates) console.error(`  - ${describeCandidate(c)}`);
  console.error('Install one of: apt-get install libtorch-dev | pip install torch | LIBTORCH=/path/to/libtorch');
  process.exit(1);
}

const abi = chosen.cxx11Abi === false ? 0 : 1;
const defines = [`_GLIBCXX_USE_CXX11_ABI=${abi}`, ...(chosen.cuda ? ['PL_WITH_CUDA'] : [])];
// ATen's at::parallel_for is an OpenMP loop inlined from its headers: the package's own CPU kernel
// for libtorch 1.x (native/max_pool3d_cpu.h) runs on libtorch's threads only when compiled with
// -fopenmp. That links libgomp.so.1, so it is done only where libtorch_cpu itself needs exactly
// that library (Debian's): one OpenMP runtime in the process, never two. Elsewhere the kernel
// is left out at compile time and ATen's own pool runs.
const openmpFlags = Number(chosen.version?.split('.')[0]) < 2 && needsLibgomp(chosen.libraryDir) ? ['-fopenmp'] : [];

if (mode.flavour) {
  if (!chosen.flavour) {
    console.error(`generic-perceptual-loss: the flavour of ${describeCandidate(chosen)} is unknown`);
    process.exit(1);
  }
  console.log(chosen.flavour);
} else if (mode.cmake) {
  const list = (/** @type {string[]} */ xs) => `"${xs.join(';')}"`;
  console.log(`set(PL_TORCH_VERSION "${chosen.version ?? ''}")`);
  console.log(`set(PL_TORCH_FLAVOUR "${chosen.flavour ?? ''}")`);
  console.log(`set(PL_CXX_STANDARD ${chosen.cxxStandard})`);
  console.log(`set(PL_TORCH_INCLUDE_DIRS ${list(chosen.includeDirs)})`);
  console.log(`set(PL_TORCH_LIBRARY_DIR "${chosen.libraryDir}")`);
  console.log(`set(PL_TORCH_LIBRARIES ${list(chosen.libraries)})`);
  console.log(`set(PL_TORCH_DEFINES ${list(defines)})`);
  console.log(`set(PL_OPENMP_FLAGS ${list(openmpFlags)})`);
} else if (mode.gyp !== undefined) {
  const key = mode.gyp;
  /** @type {Record<string, string[]>} */
  const lists = {
    include_dirs: chosen.includeDirs,
    libraries: [`-L${chosen.libraryDir}`, ...chosen.libraries.map((l) => `-l${l}`)],
    defines,
    ldflags: [`-Wl,-rpath,${chosen.libraryDir}`, ...openmpFlags],
    // The CUDA-only translation units (see native/cuda.h), listed in native/sources-cuda.txt.
    sources: chosen.cuda ? sourceList('sources-cuda.txt') : [],
    cflags_cc: [`-std=c++${chosen.cxxStandard}`, ...openmpFlags],
  };
  if (!(key in lists)) {
    console.error(`unknown --gyp key ${key}; one of ${Object.keys(lists).join(', ')}`);
    process.exit(2);
  }
  console.log(lists[key].join(' '));
} else {
  for (const c of search.candidates) console.log(`${c === chosen ? '*' : ' '} ${describeCandidate(c)}`);
  console.log(`  flavour: ${chosen.flavour ?? 'unknown (no prebuild can match; build from source)'}`);
}
