// @ts-check
import tseslint from 'typescript-eslint'

const sdkImports = [
  '@aws-sdk/*',
  '@platformatic/kafka',
  'pg',
  '@electric-sql/pglite',
  'pino',
  'prom-client',
  'commander',
]

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', '.services/', '.data/', 'bench/results/'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          // node:test registers tests synchronously; the promise it returns needs no await.
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      // An async function without await still returns a promise, as the ports require.
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-restricted-syntax': [
        'error',
        { selector: 'TSEnumDeclaration', message: 'Use an `as const` object and a union type.' },
        { selector: 'TSModuleDeclaration', message: 'No namespaces.' },
        { selector: 'TSParameterProperty', message: 'No parameter properties.' },
      ],
    },
  },
  {
    // The pure core and the logic talk to ports only: no SDKs, no node:* I/O.
    files: [
      'src/core/**/*.ts',
      'src/event-store/**/*.ts',
      'src/sequencing/**/*.ts',
      'src/publisher/**/*.ts',
      'src/registry/**/*.ts',
      'src/worker/**/*.ts',
      'src/domain/**/*.ts',
      'src/http/**/*.ts',
    ],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: sdkImports, message: 'SDKs belong in src/adapters/.' },
            {
              group: [
                'node:fs',
                'node:fs/*',
                'node:net',
                'node:http',
                'node:https',
                'node:child_process',
              ],
              message: 'I/O goes through a port.',
            },
          ],
        },
      ],
    },
  },
  {
    // HTTP tests read fields of JSON replies freely; a wrong field fails the assertion instead.
    files: ['test/http/**/*.ts', 'test/e2e/**/*.ts', 'test/cli/**/*.ts', 'test/support/oms-*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  {
    files: ['eslint.config.js'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // The console's script runs in the browser as it is (no build): linted without types.
    files: ['src/http/console/**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
)
