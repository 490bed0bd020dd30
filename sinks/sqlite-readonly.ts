/**
 * Read-only opens of the stores' SQLite files (the replica database, WAL;
 * a backup's .index, rollback journal as Cyrus writes it) that are correct
 * after a crash.
 *
 * A writer killed inside a transaction leaves a hot journal (rollback mode)
 * or a WAL whose shared-memory index must be rebuilt. A connection opened
 * with SQLITE_OPEN_READONLY cannot do either and fails at its first read with
 * SQLITE_READONLY_ROLLBACK (or SQLITE_READONLY_RECOVERY / _CANTINIT). SQLite
 * calls a journal hot only when no live connection holds the RESERVED lock,
 * so its writer is gone and rolling it back is what any read-write open
 * would do anyway: we open read-write once, let SQLite roll back or
 * recover, close, and open read-only again.
 *
 * What a concurrent reader sees: in rollback mode a reader holds SHARED and
 * sees the last committed state; while a writer commits, the reader waits
 * (busy timeout) and then sees the new state, never a half-written one. In
 * WAL mode a reader sees the snapshot of the last commit before its read
 * transaction began.
 */
import Database from 'better-sqlite3';
import { CyrsyncError } from '../transforms/errors.js';

const NEEDS_WRITER = new Set(['SQLITE_READONLY_ROLLBACK', 'SQLITE_READONLY_RECOVERY', 'SQLITE_READONLY_CANTINIT', 'SQLITE_READONLY_CANTLOCK']);

export interface ReadOnlyOpenOptions {
  /** How long a read waits for a writer's lock, in ms. */
  timeoutMs?: number;
}

function openAndRead(file: string, timeout: number): Database.Database {
  const db = new Database(file, { readonly: true, fileMustExist: true, timeout });
  try {
    // the hot-journal check and WAL recovery happen at the first read
    db.prepare('SELECT count(*) FROM sqlite_master').get();
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/** Runs SQLite's own crash recovery on `file` (hot journal rollback, WAL recovery) through a short read-write connection. */
export function recoverSqlite(file: string, timeoutMs = 20000): void {
  const rw = new Database(file, { fileMustExist: true, timeout: timeoutMs });
  try {
    rw.prepare('SELECT count(*) FROM sqlite_master').get();
  } finally {
    rw.close();
  }
}

/** Opens `file` read-only; after a writer's crash, first lets SQLite recover it (see above). */
export function openSqliteReadOnly(file: string, opts: ReadOnlyOpenOptions = {}): Database.Database {
  const timeout = opts.timeoutMs ?? 20000;
  try {
    return openAndRead(file, timeout);
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (!NEEDS_WRITER.has(code)) throw err;
    try {
      recoverSqlite(file, timeout);
    } catch (rwErr) {
      throw new CyrsyncError(
        'IMAP_IOERROR',
        `${file} needs crash recovery (${code}) and cannot be opened for writing: ${(rwErr as Error).message}`,
        { cause: rwErr },
      );
    }
    return openAndRead(file, timeout);
  }
}
