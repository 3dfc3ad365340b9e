import * as path from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // The demo imports the package by its name, as a user would; under test that name is lib/.
    alias: [
      { find: /^generic-perceptual-loss\/tfjs$/, replacement: path.resolve(__dirname, 'lib/tfjs.ts') },
      { find: /^generic-perceptual-loss$/, replacement: path.resolve(__dirname, 'lib/index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // dist/ (and a local addon build) rebuilt from the sources when older: no suite runs stale code.
    globalSetup: ['test/global-setup.ts'],
    // PL_TEST_FLAVOUR=<flavour>: the suites against that libtorch flavour's prebuild and PyTorch.
    setupFiles: ['test/helpers/flavour-setup.ts'],
    // Each test file gets its own process: the addon and libtorch load once per file.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 600_000,
    reporters: ['default'],
    // `npm run coverage` (or `vitest run --coverage`): the package's own code, lib/, measured in the
    // test processes. Code that runs only in child processes or worker threads (dist/) is not counted.
    coverage: {
      provider: 'v8',
      include: ['lib/**/*.ts'],
      reporter: ['text', 'json-summary'],
      reportsDirectory: 'coverage',
      // The figures are written even when a test fails (CI prints them either way).
      reportOnFailure: true,
      thresholds: {
        lines: 90,
        'lib/loader.ts': { lines: 85 },
        'lib/tasks.ts': { lines: 85 },
        'lib/tfjs.ts': { lines: 85 },
        'lib/cli.ts': { lines: 85 },
      },
    },
  },
});
