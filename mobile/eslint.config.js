// Expo's flat config (React, hooks, import rules) plus the project's own.
const { defineConfig } = require('eslint/config');
const expoConfig = require('eslint-config-expo/flat');

module.exports = defineConfig([
  expoConfig,
  {
    ignores: ['dist/*', 'node_modules/*', 'src/api/schema.d.ts'],
  },
  {
    rules: {
      'no-console': ['warn', { allow: ['warn', 'error'] }],
      eqeqeq: 'error',
    },
  },
  {
    // Command-line scripts and the end-to-end test report on the console.
    files: ['scripts/**', 'e2e/**'],
    rules: { 'no-console': 'off' },
  },
]);
