/**
 * The replica's metadata database (better-sqlite3) and its row types.
 *
 * Durability: journal_mode=WAL with synchronous=FULL. In WAL mode FULL syncs
 * the WAL at every commit, so a commit that returned survives power loss;
 * NORMAL would only guarantee consistency, and a client that saw `OK` must
 * never find the change gone (it uses what it sent as SINCE_* next time).
 * Consistency after a crash comes from SQLite's atomic commit; blobs are
 * durable before any commit that references them.
 *
 * Unsigned 64-bit modseqs are stored as the signed 64-bit integer with the
 * same bits (SQLite has no u64); they are only compared in JavaScript.
 */
import Database from 'better-sqlite3';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openSqliteReadOnly } from '../sqlite-readonly.js';

export type DB = Database.Database;

export const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- state: 0 live, 1 placeholder, 2 tombstone
CREATE TABLE IF NOT EXISTS mailbox (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  state INTEGER NOT NULL,
  uniqueid TEXT NOT NULL,
  mbtype TEXT NOT NULL DEFAULT 'e',
  partition TEXT,
  acl TEXT,
  options TEXT NOT NULL DEFAULT '',
  uidvalidity INTEGER NOT NULL DEFAULT 0,
  last_uid INTEGER NOT NULL DEFAULT 0,
  highestmodseq INTEGER NOT NULL DEFAULT 0,
  recentuid INTEGER NOT NULL DEFAULT 0,
  recenttime INTEGER NOT NULL DEFAULT 0,
  last_appenddate INTEGER NOT NULL DEFAULT 0,
  pop3_last_login INTEGER NOT NULL DEFAULT 0,
  pop3_show_after INTEGER NOT NULL DEFAULT 0,
  createdmodseq INTEGER NOT NULL DEFAULT 0,
  foldermodseq INTEGER NOT NULL DEFAULT 0,
  xconvmodseq INTEGER NOT NULL DEFAULT 0,
  raclmodseq INTEGER NOT NULL DEFAULT 0,
  userflags TEXT NOT NULL DEFAULT '[]',
  crc_basic INTEGER NOT NULL DEFAULT 0,
  crc_annot INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS mailbox_uniqueid ON mailbox(uniqueid) WHERE state < 2;
CREATE TABLE IF NOT EXISTS record (
  mailbox_id INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  guid TEXT NOT NULL,
  size INTEGER NOT NULL,
  modseq INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  internaldate INTEGER NOT NULL,
  sysflags INTEGER NOT NULL,
  expunged INTEGER NOT NULL,
  userflags TEXT NOT NULL,
  thrid INTEGER NOT NULL,
  basethrid INTEGER NOT NULL,
  savedate INTEGER NOT NULL,
  createdmodseq INTEGER NOT NULL,
  has_blob INTEGER NOT NULL,
  crc_basic INTEGER NOT NULL,
  crc_annot INTEGER NOT NULL,
  PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS record_guid ON record(guid);
CREATE TABLE IF NOT EXISTS record_annot (
  mailbox_id INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  entry TEXT NOT NULL,
  userid TEXT NOT NULL,
  value BLOB NOT NULL,
  modseq INTEGER NOT NULL,
  PRIMARY KEY (mailbox_id, uid, entry, userid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailbox_annot (
  mailbox_id INTEGER NOT NULL,
  entry TEXT NOT NULL,
  userid TEXT NOT NULL,
  value BLOB NOT NULL,
  modseq INTEGER NOT NULL,
  PRIMARY KEY (mailbox_id, entry, userid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS server_annot (
  entry TEXT NOT NULL, userid TEXT NOT NULL, value BLOB NOT NULL,
  PRIMARY KEY (entry, userid)
) WITHOUT ROWID;
-- a row exists only for a file that hashed to its guid and was fsynced; stored_at: last upload or RESERVE hit
CREATE TABLE IF NOT EXISTS blob (guid TEXT PRIMARY KEY, partition TEXT NOT NULL, size INTEGER NOT NULL, stored_at INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscription (userid TEXT NOT NULL, mboxname TEXT NOT NULL, PRIMARY KEY (userid, mboxname)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
  userid TEXT NOT NULL, uniqueid TEXT NOT NULL,
  lastread INTEGER NOT NULL, lastuid INTEGER NOT NULL, lastchange INTEGER NOT NULL, seenuids TEXT NOT NULL,
  PRIMARY KEY (userid, uniqueid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sieve (
  userid TEXT NOT NULL, name TEXT NOT NULL, content BLOB NOT NULL, last_update INTEGER NOT NULL, guid TEXT NOT NULL,
  PRIMARY KEY (userid, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sieve_active (userid TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;
-- limits: NULL = unlimited
CREATE TABLE IF NOT EXISTS quota (
  root TEXT PRIMARY KEY,
  storage INTEGER, message INTEGER, annot_storage INTEGER, num_folders INTEGER,
  modseq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_groups (userid TEXT PRIMARY KEY, groups TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS modseq_highwater (userid TEXT PRIMARY KEY, modseq INTEGER NOT NULL) WITHOUT ROWID;
`;

export const DATABASE_FILE = 'replica.sqlite3';

export function openDatabase(configdirectory: string, fsync: boolean, readonly = false): DB {
  if (readonly) {
    // next to a live server (busy timeout), and after a crash (WAL recovery first)
    const db = openSqliteReadOnly(path.join(configdirectory, DATABASE_FILE), { timeoutMs: 5000 });
    db.defaultSafeIntegers(true);
    return db;
  }
  fs.mkdirSync(configdirectory, { recursive: true });
  const db = new Database(path.join(configdirectory, DATABASE_FILE));
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${fsync ? 'FULL' : 'OFF'}`);
  db.pragma('foreign_keys = OFF');
  db.pragma('busy_timeout = 5000');
  db.defaultSafeIntegers(true);
  db.exec(SCHEMA);
  migrate(db);
  return db;
}

/** Brings a store written by an earlier version up to SCHEMA_VERSION, in one transaction. */
function migrate(db: DB): void {
  // Every process serving the store opens it: take the write lock only when there is work.
  const v = db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string } | undefined;
  if (v?.value === String(SCHEMA_VERSION)) return;
  db.transaction(() => {
    const cols = (db.prepare('PRAGMA table_info(blob)').all() as { name: string }[]).map((c) => c.name);
    // version 1 -> 2: blob.stored_at (garbage collection age)
    if (!cols.includes('stored_at')) db.exec('ALTER TABLE blob ADD COLUMN stored_at INTEGER NOT NULL DEFAULT 0');
    db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run('schema_version', String(SCHEMA_VERSION));
  }).immediate();
}

export const toDb64 = (v: bigint): bigint => BigInt.asIntN(64, v);
export const fromDb64 = (v: unknown): bigint => {
  if (v === '0' || v === 0 || v === 0n) return 0n;
  return BigInt.asUintN(64, BigInt(v as bigint | string | number));
};
export const num = (v: unknown): number => Number(v as bigint);

export const LIVE = 0;
export const PLACEHOLDER = 1;
export const TOMBSTONE = 2;

export interface MailboxRow {
  id: number;
  name: string;
  state: number;
  uniqueid: string;
  mbtype: string;
  partition: string | null;
  acl: string | null;
  options: string;
  uidvalidity: number;
  lastUid: number;
  highestmodseq: bigint;
  recentuid: number;
  recenttime: number;
  lastAppenddate: number;
  pop3LastLogin: number;
  pop3ShowAfter: number;
  createdmodseq: bigint;
  foldermodseq: bigint;
  xconvmodseq: bigint;
  raclmodseq: bigint;
  userflags: string[];
  crcBasic: number;
  crcAnnot: number;
}

export function mailboxFromRow(r: Record<string, unknown>): MailboxRow {
  return {
    id: num(r.id),
    name: r.name as string,
    state: num(r.state),
    uniqueid: r.uniqueid as string,
    mbtype: r.mbtype as string,
    partition: (r.partition as string | null) ?? null,
    acl: (r.acl as string | null) ?? null,
    options: r.options as string,
    uidvalidity: num(r.uidvalidity),
    lastUid: num(r.last_uid),
    highestmodseq: fromDb64(r.highestmodseq),
    recentuid: num(r.recentuid),
    recenttime: num(r.recenttime),
    lastAppenddate: num(r.last_appenddate),
    pop3LastLogin: num(r.pop3_last_login),
    pop3ShowAfter: num(r.pop3_show_after),
    createdmodseq: fromDb64(r.createdmodseq),
    foldermodseq: fromDb64(r.foldermodseq),
    xconvmodseq: fromDb64(r.xconvmodseq),
    raclmodseq: fromDb64(r.raclmodseq),
    userflags: JSON.parse(r.userflags as string) as string[],
    crcBasic: num(r.crc_basic),
    crcAnnot: num(r.crc_annot),
  };
}

export interface AnnotRow {
  entry: string;
  userid: string;
  value: Buffer;
  modseq: bigint;
}

/** A message record's own fields: as stored (RecordRow) and as parsed from the wire (records.ts ParsedRecord). */
export interface RecordFields {
  uid: number;
  guid: string;
  modseq: bigint;
  lastUpdated: number;
  internaldate: number;
  sysflags: number;
  expunged: boolean;
  userflags: string[];
  thrid: bigint;
  basethrid: bigint;
  savedate: number;
  createdmodseq: bigint;
}

export interface RecordRow extends RecordFields {
  size: number;
  hasBlob: boolean;
  crcBasic: number;
  crcAnnot: number;
}

/**
 * Record columns for bulk reads with safeIntegers off: 64-bit columns come
 * back as text (exact), the rest as plain numbers, so a read of a big
 * mailbox does not allocate a BigInt per column.
 */
export const RECORD_COLUMNS =
  'uid, guid, size, CAST(modseq AS TEXT) AS modseq, last_updated, internaldate, sysflags, expunged, userflags, ' +
  'CAST(thrid AS TEXT) AS thrid, CAST(basethrid AS TEXT) AS basethrid, savedate, CAST(createdmodseq AS TEXT) AS createdmodseq, ' +
  'has_blob, crc_basic, crc_annot';

const NO_FLAGS: string[] = [];

export function recordFromRow(r: Record<string, unknown>): RecordRow {
  return {
    uid: num(r.uid),
    guid: r.guid as string,
    size: num(r.size),
    modseq: fromDb64(r.modseq),
    lastUpdated: num(r.last_updated),
    internaldate: num(r.internaldate),
    sysflags: num(r.sysflags),
    expunged: num(r.expunged) !== 0,
    userflags: r.userflags === '[]' ? NO_FLAGS : (JSON.parse(r.userflags as string) as string[]),
    thrid: fromDb64(r.thrid),
    basethrid: fromDb64(r.basethrid),
    savedate: num(r.savedate),
    createdmodseq: fromDb64(r.createdmodseq),
    hasBlob: num(r.has_blob) !== 0,
    crcBasic: num(r.crc_basic),
    crcAnnot: num(r.crc_annot),
  };
}
