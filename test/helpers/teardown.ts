/**
 * Resources a test opens are released in t.teardown, so that a failed
 * assertion or an exception part way through never leaves a store open, a
 * temp dir behind or a process alive (which would keep the worker running).
 */
import type { ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

interface Closable {
  close(): Promise<void>;
}

/**
 * Closes `sink` (once: a close() the test makes itself is the same close)
 * and removes `dir` when the test ends.
 */
export function storeTeardown(t: ExecutionContext, sink: Closable, dir?: string): void {
  const close = sink.close.bind(sink);
  let closing: Promise<void> | null = null;
  sink.close = () => (closing ??= close());
  t.teardown(async () => {
    await sink.close().catch(() => undefined);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });
}

/** Removes `dir` when the test ends. */
export function dirTeardown(t: ExecutionContext, dir: string): string {
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const tracked = new Set<string>();

/**
 * A temp dir made by a helper that has no test context: removed by
 * removeTrackedDirs, which such a file runs in test.after.always.
 */
export function trackedTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tracked.add(dir);
  return dir;
}

export function removeTrackedDirs(): void {
  for (const d of tracked) rmSync(d, { recursive: true, force: true });
  tracked.clear();
}
