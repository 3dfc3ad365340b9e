// eslint 9 flat config: eslint's and typescript-eslint's recommended rules, with the type-aware
// ones for the TypeScript (lib/ with tsconfig.json; the tests and the demo with test/tsconfig.json).
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['dist/', 'dist-demo/', 'build/', 'coverage/', 'demo-out/', 'prebuilds/', 'prebuilds-tmp/', '.venv/', 'node_modules/'],
  },
  // A disable comment that suppresses nothing is an error: it points at nothing.
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  {
    files: ['**/*.js'],
    languageOptions: { sourceType: 'commonjs', globals: globals.node },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { sourceType: 'module', globals: globals.node },
  },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      globals: globals.node,
      parserOptions: {
        project: ['./tsconfig.json', './test/tsconfig.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // `const { dropped: _dropped, ...kept } = x` leaves a key out on purpose.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true, argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
);
