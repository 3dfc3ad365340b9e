#!/usr/bin/env node
// prebuildify calls this in place of node-gyp (`--node-gyp`): it ignores node-gyp's arguments
// (`rebuild --target=... --devdir=...`: a Node-API build needs no per-version headers) and
// builds with cmake-js into build/Release, where prebuildify picks the binary up.
'use strict';
require('./build-native.js').buildNative();
