// ESLint 9 flat config: typescript-eslint's type-aware recommended rules
// (recommendedTypeChecked) over every TypeScript file of the project, typed
// through tsconfig.test.json, with these deliberate departures:
// - no-unnecessary-type-assertion: off. The code marks in-bounds indexed
//   reads with `!` (`buf[i]!`, `rows[0]!`) as if noUncheckedIndexedAccess were
//   on; without that option the rule calls every such mark unnecessary.
// - require-await: off. An `async` method that implements a Promise-returning
//   interface without awaiting anything turns a throw into a rejection,
//   which callers rely on.
// - only-throw-error: the command decoder throws a Refusal (the reply line and
//   the error behind it, src/protocol/commands/fields.ts) to unwind to its caller;
//   it is caught there and never escapes as an exception.
// - no-unused-vars: a leading `_` marks a parameter, binding or caught error
//   that is unused on purpose (as tsc's noUnusedParameters does).
// Unused eslint-disable directives are errors, so none outlives its reason.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'var/**', 'benchmarks/results/**'] },
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { project: './tsconfig.test.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/only-throw-error': ['error', {
        allow: [{ from: 'file', name: 'Refusal', path: 'src/protocol/commands/fields.ts' }],
      }],
      '@typescript-eslint/no-unused-vars': ['error', {
        argsIgnorePattern: '^_',
        varsIgnorePattern: '^_',
        caughtErrorsIgnorePattern: '^_',
        destructuredArrayIgnorePattern: '^_',
      }],
    },
  },
  {
    files: ['**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
);
