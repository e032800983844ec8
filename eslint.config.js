import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['dist/', 'node_modules/', 'image/', 'guest/', 'sdk/python/', 'sdk/typescript/dist/'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // Node's globals that the project's plain JavaScript files use.
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly', URL: 'readonly', Buffer: 'readonly' },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
);
