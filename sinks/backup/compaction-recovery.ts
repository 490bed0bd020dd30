/**
 * Finishing or undoing an interrupted compaction (`ctl-backups compact`,
 * src/client/backup/compact.ts). A compaction writes `<P>.index.new` and
 * `<P>.new`, fsyncs both, then renames `<P>.index.new` over `<P>.index` and
 * `<P>.new` over `<P>`. Whoever next opens the backup under its lock (the
 * backup tools, and backupd's own open) calls recoverCompaction first:
 * - both `.new` files present: the originals were never touched, so the
 *   `.new` files are removed;
 * - `<P>.new` alone: the index was already replaced, so `<P>.new` is renamed
 *   over `<P>`.
 * A crash therefore leaves either the old backup or the new one, and no
 * reader or writer ever pairs the new index with the old data file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** fsync of a directory, so that renames and removals in it outlive a crash. */
export function syncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Finishes or undoes an interrupted compaction of `fname`. Call with the
 * data file locked. Returns true when `<P>` was replaced (the caller's lock
 * is then on the old file: lock again).
 */
export function recoverCompaction(fname: string): boolean {
  const dataNew = `${fname}.new`;
  const indexNew = `${fname}.index.new`;
  const hasData = fs.existsSync(dataNew);
  const hasIndex = fs.existsSync(indexNew);
  if (hasIndex) {
    fs.rmSync(indexNew, { force: true });
    fs.rmSync(`${indexNew}-journal`, { force: true });
    if (hasData) fs.rmSync(dataNew, { force: true });
    syncDir(path.dirname(fname));
    return false;
  }
  if (!hasData) return false;
  fs.renameSync(dataNew, fname);
  syncDir(path.dirname(fname));
  return true;
}
