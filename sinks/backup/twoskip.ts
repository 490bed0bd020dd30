/**
 * Cyrus "twoskip" key/value databases, read and written byte-compatibly
 * with lib/cyrusdb_twoskip.c of Cyrus 3.6.1 (the default backend of
 * backups.db, backup-format §2.2).
 *
 * Split by concern: the record codec (twoskip-format), the file under its
 * lock with its reads, appends and walks (twoskip-file), the skiplist
 * algorithms ported from cyrusdb_twoskip.c (twoskip-list) and the
 * checkpoint (twoskip-repack). This module is the database API: handles
 * shared per file, reads under a shared lock, transactions under an
 * exclusive one, recovery of a file a crashed writer left dirty. The API is
 * synchronous: backups.db transactions are short.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CyrsyncError } from '../../transforms/errors.js';
import { TwoskipFile } from './twoskip-file.js';
import { DEFAULT_LOCK_TIMEOUT_MS, MAGIC, fileStartsWith, toBuf } from './twoskip-format.js';
import { abort, commit, initialise, recovery1, relocate, skipwrite } from './twoskip-list.js';
import { needsRepack, repack } from './twoskip-repack.js';

export { compareRaw } from './twoskip-format.js';

export interface TwoskipOpenOptions {
  /** Create the file (and its directory) when missing. */
  create?: boolean;
  /** How long to wait for another process's lock (default 20 s). */
  lockTimeoutMs?: number;
}

export interface TwoskipTxn {
  get(key: Buffer | string): Buffer | null;
  set(key: Buffer | string, value: Buffer | string): void;
  delete(key: Buffer | string): void;
}

/** Open handles by resolved path: one descriptor per file per process. */
const openDbs = new Map<string, TwoskipDb>();

export class TwoskipDb {
  private refs = 1;
  private closed = false;

  private constructor(private readonly file: TwoskipFile) {}

  get path(): string {
    return this.file.path;
  }

  /**
   * Opens (and with `create`, creates) a database. A second open of the same
   * file in this process returns the same handle (reference counted), as
   * Cyrus's open_twoskip list does.
   */
  static open(file: string, opts: TwoskipOpenOptions = {}): TwoskipDb {
    const abs = path.resolve(file);
    const existing = openDbs.get(abs);
    if (existing && !existing.closed) {
      existing.refs++;
      return existing;
    }
    let fd: number;
    try {
      fd = fs.openSync(abs, fs.constants.O_RDWR);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !opts.create) {
        throw new CyrsyncError('IMAP_IOERROR', `cannot open ${abs}: ${(err as Error).message}`, { cause: err });
      }
      fs.mkdirSync(path.dirname(abs), { recursive: true, mode: 0o755 });
      fd = fs.openSync(abs, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    }
    const db = new TwoskipDb(new TwoskipFile(abs, fd, opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS));
    try {
      initialise(db.file);
    } catch (err) {
      db.dispose();
      throw err;
    }
    openDbs.set(abs, db);
    return db;
  }

  get(key: Buffer | string): Buffer | null {
    const k = toBuf(key);
    this.readLock();
    try {
      relocate(this.file, k);
      return this.file.loc.isExact ? this.file.valueOf(this.file.loc.record) : null;
    } finally {
      this.file.unlock();
    }
  }

  /** Create or replace (CYRUSDB force semantics). Empty keys are refused, as by cyrusdb. */
  set(key: Buffer | string, value: Buffer | string): void {
    const k = toBuf(key);
    const v = toBuf(value);
    this.transaction((tx) => tx.set(k, v));
  }

  /** Remove; a missing key is not an error (force). */
  delete(key: Buffer | string): void {
    const k = toBuf(key);
    this.transaction((tx) => tx.delete(k));
  }

  /** Every live record in key order (a snapshot taken under one read lock). */
  entries(): Iterable<[Buffer, Buffer]> {
    this.readLock();
    try {
      return this.file.walk();
    } finally {
      this.file.unlock();
    }
  }

  /** Number of live records (header count). */
  count(): number {
    this.readLock();
    try {
      return this.file.header.numRecords;
    } finally {
      this.file.unlock();
    }
  }

  /**
   * Several changes in one commit under one exclusive lock. A throw aborts:
   * everything appended is cut off again (recovery1), as myabort does.
   */
  transaction<T>(fn: (tx: TwoskipTxn) => T): T {
    const f = this.file;
    this.writeLock();
    let result: T;
    try {
      const tx: TwoskipTxn = {
        get: (k) => {
          relocate(f, toBuf(k));
          return f.loc.isExact ? f.valueOf(f.loc.record) : null;
        },
        set: (k, v) => skipwrite(f, toBuf(k), toBuf(v)),
        delete: (k) => skipwrite(f, toBuf(k), null),
      };
      result = fn(tx);
      commit(f);
    } catch (err) {
      try {
        abort(f);
      } finally {
        f.unlock();
      }
      throw err;
    }
    f.unlock();
    this.maybeCheckpoint();
    return result;
  }

  /** Full structural check (myconsistent): order, linkage, record count. */
  checkConsistency(): void {
    this.readLock();
    try {
      this.file.consistent();
    } finally {
      this.file.unlock();
    }
  }

  /** A transaction or read of this handle is in progress. */
  get isLocked(): boolean {
    return this.file.locked !== 'none';
  }

  close(): void {
    if (this.closed) return;
    if (--this.refs > 0) return;
    this.dispose();
  }

  private dispose(): void {
    if (this.closed) return;
    this.closed = true;
    if (openDbs.get(this.path) === this) openDbs.delete(this.path);
    fs.closeSync(this.file.fd);
  }

  private assertOpen(): void {
    if (this.closed) throw new CyrsyncError('IMAP_INTERNAL', `twoskip ${this.path} is closed`);
  }

  /** lock_reopen_ex: exclusive lock, then the inode check; reread and recover. */
  private writeLock(): void {
    this.assertOpen();
    this.file.lock(true);
    if (this.file.size > 0) {
      this.file.readHeader();
      if (!this.file.isClean()) recovery1(this.file);
    }
  }

  private readLock(): void {
    this.assertOpen();
    this.file.lock(false);
    this.file.readHeader();
    if (!this.file.isClean()) {
      // A crashed writer left it dirty: fix it under an exclusive lock first.
      this.file.unlock();
      this.writeLock();
      this.file.unlock();
      this.file.lock(false);
      this.file.readHeader();
    }
  }

  /** mycheckpoint, after our lock was released, under a fresh one (twoskip-repack). */
  private maybeCheckpoint(): void {
    if (!needsRepack(this.file)) return;
    this.writeLock();
    try {
      if (!needsRepack(this.file)) return;
      repack(this.file);
      // Our descriptor now names the replaced file: switch to the new one.
      this.file.reopen();
    } finally {
      this.file.unlock();
    }
  }
}

/** True when the file starts with the twoskip magic. */
export function isTwoskipFile(file: string): boolean {
  // A descriptor opened and closed here would drop this process's lock.
  const open = openDbs.get(path.resolve(file));
  if (open && open.isLocked) return true;
  return fileStartsWith(file, MAGIC);
}
