/**
 * The location database backups.db (backup-format §2.2): owner id -> data
 * file path, no terminators, raw byte order. Shared with the real Cyrus
 * tools, so it uses the backend they use (`backup_db`, default twoskip) at
 * `backup_db_path` or `<configdirectory>/backups.db`.
 */
import * as path from 'node:path';
import { CyrsyncError } from '../../transforms/errors.js';
import * as fs from 'node:fs';
import { SkiplistReader, isSkiplistFile } from './skiplist.js';
import { TwoskipDb, isTwoskipFile, type TwoskipTxn } from './twoskip.js';

export interface BackupsDbSettings {
  configdirectory: string;
  /** cyrusdb backend name; '' or undefined means twoskip */
  backup_db?: string;
  /** '' or undefined means `<configdirectory>/backups.db` */
  backup_db_path?: string;
}

export interface BackupsDb {
  readonly path: string;
  readonly backend: string;
  /** Data file path of `owner`, or null. */
  get(owner: string): string | null;
  set(owner: string, dataPath: string): void;
  delete(owner: string): void;
  /** Every entry in raw key order. */
  list(): [string, string][];
  /**
   * Look up `owner` and, when absent, call `create()` for a new data file
   * path and store it, all under one exclusive lock (lcb.c
   * backup_get_paths). If `create` throws, nothing is stored; if storing
   * fails, `discard(path)` is called so the new file can be removed.
   */
  getOrCreate(owner: string, create: () => string, discard: (p: string) => void): { path: string; created: boolean };
  close(): void;
}

/** Backends Cyrus accepts for backup_db, and what cyrsync does with them (skiplist: read only). */
const SUPPORTED = new Set(['twoskip', 'skiplist']);
const KNOWN = new Set(['twoskip', 'skiplist', 'sql', 'zeroskip', 'lmdb', 'flat', 'quotalegacy']);

export function backupsDbPath(settings: BackupsDbSettings): string {
  const p = settings.backup_db_path && settings.backup_db_path.length > 0
    ? settings.backup_db_path
    : path.join(settings.configdirectory, 'backups.db');
  return path.resolve(p);
}

export function openBackupsDb(settings: BackupsDbSettings): BackupsDb {
  const backend = (settings.backup_db && settings.backup_db.length > 0 ? settings.backup_db : 'twoskip').toLowerCase();
  if (!SUPPORTED.has(backend)) {
    const why = KNOWN.has(backend)
      ? `the ${backend} backend is not supported by cyrsync (twoskip, the Cyrus default, and skiplist read-only); convert it with "cvt_cyrusdb <file> ${backend} <new file> twoskip" and set backup_db: twoskip`
      : `unknown cyrusdb backend ${JSON.stringify(backend)}`;
    throw new CyrsyncError('IMAP_INTERNAL', `backup_db: ${why}`);
  }
  const file = backupsDbPath(settings);
  if (backend === 'skiplist') {
    if (fs.existsSync(file) && !isSkiplistFile(file)) throw new CyrsyncError('IMAP_INTERNAL', `backup_db is skiplist but ${file} is not a skiplist file`);
    return new SkiplistBackupsDb(file);
  }
  if (fs.existsSync(file) && fs.statSync(file).size > 0 && !isTwoskipFile(file)) {
    const what = isSkiplistFile(file) ? 'a skiplist file: set backup_db: skiplist (read only in cyrsync) or convert it with cvt_cyrusdb' : 'not a twoskip file';
    throw new CyrsyncError('IMAP_INTERNAL', `backup_db is twoskip but ${file} is ${what}`);
  }
  const db = TwoskipDb.open(file, { create: true });
  return new TwoskipBackupsDb(file, db);
}

/**
 * A skiplist backups.db, read only: existing owners resolve, new owners
 * cannot be registered (the server answers with an error naming the fix).
 */
class SkiplistBackupsDb implements BackupsDb {
  readonly backend = 'skiplist';
  constructor(readonly path: string) {}

  private reader(): SkiplistReader | null {
    return fs.existsSync(this.path) ? SkiplistReader.open(this.path) : null;
  }

  get(owner: string): string | null {
    const v = this.reader()?.get(key(owner)) ?? null;
    return v === null ? null : v.toString('latin1');
  }

  set(owner: string): void {
    throw readOnly(this.path, owner);
  }

  delete(owner: string): void {
    throw readOnly(this.path, owner);
  }

  list(): [string, string][] {
    return (this.reader()?.entries() ?? []).map(([k, v]) => [k.toString('latin1'), v.toString('latin1')]);
  }

  getOrCreate(owner: string): { path: string; created: boolean } {
    const cur = this.get(owner);
    if (cur !== null && cur.length > 0) return { path: cur, created: false };
    throw readOnly(this.path, owner);
  }

  close(): void {
    /* nothing held between calls */
  }
}

function readOnly(file: string, owner: string): CyrsyncError {
  return new CyrsyncError(
    'IMAP_IOERROR',
    `cannot register ${JSON.stringify(owner)} in ${file}: cyrsync reads skiplist location databases but does not write them; convert with "cvt_cyrusdb ${file} skiplist <new file> twoskip" and set backup_db: twoskip`,
  );
}

function key(owner: string): Buffer {
  if (owner.length === 0) throw new CyrsyncError('IMAP_INTERNAL', 'backups.db keys must not be empty');
  return Buffer.from(owner, 'latin1');
}

class TwoskipBackupsDb implements BackupsDb {
  readonly backend = 'twoskip';
  constructor(readonly path: string, private readonly db: TwoskipDb) {}

  get(owner: string): string | null {
    const v = this.db.get(key(owner));
    return v === null ? null : v.toString('latin1');
  }

  set(owner: string, dataPath: string): void {
    this.db.set(key(owner), Buffer.from(dataPath, 'latin1'));
  }

  delete(owner: string): void {
    this.db.delete(key(owner));
  }

  list(): [string, string][] {
    const out: [string, string][] = [];
    for (const [k, v] of this.db.entries()) out.push([k.toString('latin1'), v.toString('latin1')]);
    return out;
  }

  getOrCreate(owner: string, create: () => string, discard: (p: string) => void): { path: string; created: boolean } {
    const k = key(owner);
    let made: string | null = null;
    try {
      return this.db.transaction((tx: TwoskipTxn) => {
        const cur = tx.get(k);
        if (cur !== null && cur.length > 0) return { path: cur.toString('latin1'), created: false };
        made = create();
        tx.set(k, Buffer.from(made, 'latin1'));
        return { path: made, created: true };
      });
    } catch (err) {
      if (made !== null) discard(made);
      throw err;
    }
  }

  close(): void {
    this.db.close();
  }
}
