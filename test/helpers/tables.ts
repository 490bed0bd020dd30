/**
 * Table-driven assertions: a list of inputs with what a function must give
 * for each, instead of one assertion line per case.
 */
import type { ExecutionContext } from 'ava';

/** An input, what the function must return for it, and what the row shows (the default names the input). */
export type Row<I, O> = readonly [input: I, expected: O, message?: string];

/** Asserts that `fn(input)` deep-equals `expected` for every row. */
export function expectEach<I, O>(t: ExecutionContext, fn: (input: I) => O, rows: readonly Row<I, O>[]): void {
  for (const [input, expected, message] of rows) t.deepEqual(fn(input), expected, message ?? JSON.stringify(input));
}
