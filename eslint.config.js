// Lint rules for the whole tree; the import zones below keep the layers running one way:
// contract < config < upstream < routing < api < http < bridge.ts < electron/ and renderer/.
import js from '@eslint/js';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import { importX } from 'eslint-plugin-import-x';
import reactHooks from 'eslint-plugin-react-hooks';
import globals from 'globals';
import tseslint from 'typescript-eslint';

/** The parts below the client surfaces: they talk to Ollama, GPUs and files, never to HTTP clients. */
const LOWER_LAYERS = ['config', 'upstream', 'routing', 'gpu', 'history', 'metrics', 'ollama'].map((folder) => `./src/${folder}`);

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'release/**', 'bench/results.*'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  { files: ['**/*.js', '**/*.mjs'], languageOptions: { globals: globals.node } },
  {
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: ['tsconfig.test.json', 'renderer/tsconfig.json'], noWarnOnMultipleProjects: true })],
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      'import-x/no-restricted-paths': [
        'error',
        {
          zones: [
            {
              target: './src/contract',
              from: './src',
              except: ['./contract'],
              message: 'The contract is the bottom layer: it imports nothing of the project.',
            },
            {
              target: LOWER_LAYERS,
              from: ['./src/api', './src/http', './src/control', './src/bridge.ts', './src/cli.ts'],
              message: 'Lower layers never import client surfaces, the HTTP server or the control API.',
            },
            {
              target: './src/api',
              from: ['./src/http', './src/control', './src/bridge.ts'],
              message: 'The HTTP server mounts the API surfaces, never the reverse.',
            },
            { target: './src', from: ['./electron', './renderer'], message: 'src/ runs with plain Node: it never imports the desktop app or the dashboard.' },
          ],
        },
      ],
    },
  },
  {
    files: ['renderer/src/**'],
    plugins: { 'react-hooks': reactHooks },
    rules: { 'react-hooks/rules-of-hooks': 'error', 'react-hooks/exhaustive-deps': 'error' },
  },
  {
    files: ['src/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['electron', 'electron/*', 'react', 'react/*', 'react-dom', 'react-dom/*'], message: 'src/ never imports electron or react.' }] },
      ],
    },
  },
  {
    files: LOWER_LAYERS.map((folder) => `${folder.slice(2)}/**`),
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: 'express', message: 'Only the API surfaces and the HTTP server use express.' }],
          patterns: [{ group: ['electron', 'electron/*', 'react', 'react/*', 'react-dom', 'react-dom/*'], message: 'src/ never imports electron or react.' }],
        },
      ],
    },
  },
  {
    files: ['src/contract/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ regex: '^[^.]', message: 'The contract is Node-free and dependency-free: relative imports inside src/contract only.' }] },
      ],
    },
  },
);
