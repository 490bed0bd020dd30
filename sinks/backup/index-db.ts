/**
 * The per-backup SQLite index `<data file>.index` (backup-format §6), with
 * Cyrus 3.6.1's schema text (backup/lcb_sqlconsts.c, whitespace collapsed
 * as its QUOTE() macro does), connection settings (lib/sqldb.c), version
 * handling and update rules (backup/lcb_indexw.c).
 *
 * Invariants:
 * - One transaction per chunk: beginChunk() opens it with the chunk row,
 *   endChunk() fills the row in and commits; every record indexed between
 *   them belongs to that chunk. A MAILBOX record is all-or-nothing inside
 *   its own savepoint.
 * - Storage classes are those the columns declare: integers are bound as
 *   integers (BigInt past 2^53), text as text; `flags` is never the empty
 *   string (some readers crash on it).
 * - Text is octets: values from the wire are latin1 strings (one char per
 *   octet) and are stored as the same octets (valid UTF-8 passes through
 *   unchanged); reads give latin1 strings back.
 * - The index is only opened while the data file's lock is held (§4); a
 *   non-empty data file without an index is an error ("reindex needed"),
 *   never a fresh empty index.
 */
import * as fs from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import Database from 'better-sqlite3';
import { CommandError, CyrsyncError } from '../../transforms/errors.js';
import type { DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import { serializeValue } from '../../transforms/serializer.js';
import {
  ChunkWriter,
  DATAFILE_MODE,
  checkTail,
  hashPrefix,
  readChunkRecords,
  truncateTo,
  type FileHash,
  type ChunkEnd,
  type ChunkWriterOptions,
  type RecordWritten,
  type TailCheck,
} from './datafile.js';
import { lockExclusive, type FileLock } from './lock.js';
import { openSqliteReadOnly } from '../sqlite-readonly.js';

/** `#define QUOTE(...) #__VA_ARGS__`: whitespace runs become one space. */
function quote(sql: string): string {
  return sql.replace(/\s+/g, ' ').trim();
}

export const INDEX_VERSION = 3;

export const INIT_SQL = quote(`
    CREATE TABLE chunk(
        id INTEGER PRIMARY KEY ASC,
        ts_start INTEGER,
        ts_end INTEGER,
        offset INTEGER unique,
        length INTEGER,
        file_sha1 TEXT,
        data_sha1 TEXT
    );

    CREATE TABLE message(
        id INTEGER PRIMARY KEY ASC,
        guid CHAR UNIQUE NOT NULL,
        partition CHAR,
        chunk_id INTEGER REFERENCES chunk(id),
        offset INTEGER,
        size INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_msg_guid ON message(guid);

    CREATE TABLE mailbox(
        id INTEGER PRIMARY KEY ASC,
        last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        uniqueid CHAR UNIQUE NOT NULL,
        mboxname CHAR NOT NULL,
        mboxtype CHAR,
        last_uid INTEGER,
        highestmodseq INTEGER,
        recentuid INTEGER,
        recenttime INTEGER,
        last_appenddate INTEGER,
        pop3_last_login INTEGER,
        pop3_show_after INTEGER,
        uidvalidity INTEGER,
        partition CHAR,
        acl CHAR,
        options CHAR,
        sync_crc INTEGER,
        sync_crc_annot INTEGER,
        quotaroot CHAR,
        xconvmodseq INTEGER,
        annotations CHAR,
        deleted INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_bmb_uid ON mailbox(uniqueid);

    CREATE TABLE mailbox_message(
        id INTEGER PRIMARY KEY ASC,
        mailbox_id INTEGER NOT NULL REFERENCES mailbox(id),
        message_id INTEGER NOT NULL REFERENCES message(id),
        last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        uid INTEGER NOT NULL,
        modseq INTEGER,
        last_updated INTEGER,
        flags CHAR,
        internaldate INTEGER,
        annotations CHAR,
        expunged INTEGER,
        UNIQUE (mailbox_id, message_id)
    );
    CREATE INDEX IF NOT EXISTS idx_mbr_uid ON mailbox_message(uid);

    CREATE TABLE subscription(
        id INTEGER PRIMARY KEY ASC,
        last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        mboxname CHAR UNIQUE NOT NULL,
        unsubscribed INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_sub_mbx ON subscription(mboxname);

    CREATE TABLE seen(
        id INTEGER PRIMARY KEY ASC,
        last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        uniqueid CHAR UNIQUE NOT NULL,
        lastread INTEGER,
        lastuid INTEGER,
        lastchange INTEGER,
        seenuids CHAR
    );
    CREATE INDEX IF NOT EXISTS idx_seen_unq ON seen(uniqueid);

    CREATE TABLE sieve(
        id INTEGER PRIMARY KEY ASC,
        chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        last_update INTEGER,
        filename CHAR NOT NULL,
        guid CHAR NOT NULL,
        offset INTEGER,
        deleted INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_siv_fn ON sieve(filename);
`);

const UPGRADES: { to: number; sql: string }[] = [
  {
    to: 2,
    sql: quote(`
    CREATE TABLE subscription(
        id INTEGER PRIMARY KEY ASC,
        last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        mboxname CHAR UNIQUE NOT NULL,
        unsubscribed INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_sub_mbx ON subscription(mboxname);`),
  },
  {
    to: 3,
    sql: quote(`
    CREATE TABLE seen(
        id INTEGER PRIMARY KEY ASC,
        last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        uniqueid CHAR UNIQUE NOT NULL,
        lastread INTEGER,
        lastuid INTEGER,
        lastchange INTEGER,
        seenuids CHAR
    );
    CREATE INDEX IF NOT EXISTS idx_seen_unq ON seen(uniqueid);`),
  },
  {
    to: 4,
    sql: quote(`
    CREATE TABLE sieve(
        id INTEGER PRIMARY KEY ASC,
        chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        last_update INTEGER,
        filename CHAR NOT NULL,
        guid CHAR NOT NULL,
        offset INTEGER,
        deleted INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_siv_fn ON sieve(filename);`),
  },
];

const SQL = {
  chunkStart: quote(`INSERT INTO chunk ( ts_start, offset, file_sha1 ) VALUES ( :ts_start, :offset, :file_sha1 );`),
  chunkEnd: quote(`UPDATE chunk SET ts_end = :ts_end, length = :length, data_sha1 = :data_sha1 WHERE id = :id;`),
  mailboxUpdate: quote(`
    UPDATE mailbox SET
        last_chunk_id = :last_chunk_id, mboxname = :mboxname, mboxtype = :mboxtype, last_uid = :last_uid,
        highestmodseq = :highestmodseq, recentuid = :recentuid, recenttime = :recenttime,
        last_appenddate = :last_appenddate, pop3_last_login = :pop3_last_login,
        pop3_show_after = :pop3_show_after, uidvalidity = :uidvalidity, partition = :partition,
        acl = :acl, options = :options, sync_crc = :sync_crc, sync_crc_annot = :sync_crc_annot,
        quotaroot = :quotaroot, xconvmodseq = :xconvmodseq, annotations = :annotations, deleted = :deleted
    WHERE uniqueid = :uniqueid;`),
  mailboxInsert: quote(`
    INSERT INTO mailbox (
        last_chunk_id, uniqueid, mboxname, mboxtype, last_uid,
        highestmodseq, recentuid, recenttime, last_appenddate,
        pop3_last_login, pop3_show_after, uidvalidity, partition,
        acl, options, sync_crc, sync_crc_annot, quotaroot,
        xconvmodseq, annotations, deleted
    ) VALUES (
        :last_chunk_id, :uniqueid, :mboxname, :mboxtype, :last_uid,
        :highestmodseq, :recentuid, :recenttime, :last_appenddate,
        :pop3_last_login, :pop3_show_after, :uidvalidity, :partition,
        :acl, :options, :sync_crc, :sync_crc_annot, :quotaroot,
        :xconvmodseq, :annotations, :deleted
    );`),
  mailboxRename: quote(`UPDATE mailbox SET mboxname = :newmboxname, partition = :partition, uidvalidity = :uidvalidity WHERE mboxname = :oldmboxname;`),
  mailboxDelete: quote(`UPDATE mailbox SET deleted = :deleted WHERE mboxname = :mboxname;`),
  mmUpdate: quote(`
    UPDATE mailbox_message SET
        last_chunk_id = :last_chunk_id, uid = :uid, modseq = :modseq, last_updated = :last_updated,
        flags = :flags, internaldate = :internaldate, annotations = :annotations,
        expunged = COALESCE(
            (SELECT expunged FROM mailbox_message WHERE mailbox_id = :mailbox_id AND message_id = :message_id),
            :expunged
        )
    WHERE mailbox_id = :mailbox_id AND message_id = :message_id;`),
  mmInsert: quote(`
    INSERT INTO mailbox_message (
        mailbox_id, message_id, last_chunk_id, uid, modseq, last_updated, flags, internaldate, annotations, expunged
    ) VALUES (
        :mailbox_id, :message_id, :last_chunk_id, :uid, :modseq, :last_updated, :flags, :internaldate, :annotations, :expunged
    );`),
  mmExpunge: quote(`UPDATE mailbox_message SET expunged = :expunged WHERE mailbox_id = :mailbox_id AND uid = :uid;`),
  messageUpdate: quote(`UPDATE message SET guid = :guid, partition = :partition, chunk_id = :chunk_id, offset = :offset, size = :size WHERE guid = :guid;`),
  messageInsert: quote(`INSERT INTO message ( guid, partition, chunk_id, offset, size ) VALUES ( :guid, :partition, :chunk_id, :offset, :size );`),
  seenUpdate: quote(`UPDATE seen SET last_chunk_id = :last_chunk_id, lastread = :lastread, lastuid = :lastuid, lastchange = :lastchange, seenuids = :seenuids WHERE uniqueid = :uniqueid;`),
  seenInsert: quote(`INSERT INTO seen ( last_chunk_id, uniqueid, lastread, lastuid, lastchange, seenuids ) VALUES ( :last_chunk_id, :uniqueid, :lastread, :lastuid, :lastchange, :seenuids );`),
  subUpdate: quote(`UPDATE subscription SET last_chunk_id = :last_chunk_id, unsubscribed = :unsubscribed WHERE mboxname = :mboxname;`),
  subInsert: quote(`INSERT INTO subscription ( last_chunk_id, mboxname, unsubscribed ) VALUES ( :last_chunk_id, :mboxname, :unsubscribed );`),
  sieveInsert: quote(`INSERT INTO sieve ( chunk_id, last_update, filename, guid, offset ) VALUES ( :chunk_id, :last_update, :filename, :guid, :offset );`),
  sieveDelete: quote(`UPDATE sieve SET deleted = :deleted WHERE filename = :filename AND deleted IS NULL;`),
};

// ---------------------------------------------------------------------------
// Row types (text columns as latin1 octet strings)

export interface ChunkRow {
  id: number;
  ts_start: number | null;
  ts_end: number | null;
  offset: number;
  length: number | null;
  file_sha1: string | null;
  data_sha1: string | null;
}

export interface MailboxRow {
  id: number;
  last_chunk_id: number;
  uniqueid: string;
  mboxname: string;
  mboxtype: string | null;
  last_uid: number | bigint | null;
  highestmodseq: number | bigint | null;
  recentuid: number | bigint | null;
  recenttime: number | bigint | null;
  last_appenddate: number | bigint | null;
  pop3_last_login: number | bigint | null;
  pop3_show_after: number | bigint | null;
  uidvalidity: number | bigint | null;
  partition: string | null;
  acl: string | null;
  options: string | null;
  sync_crc: number | bigint | null;
  sync_crc_annot: number | bigint | null;
  quotaroot: string | null;
  xconvmodseq: number | bigint | null;
  annotations: string | null;
  deleted: number | null;
}

/** A mailbox_message row joined with its message and mailbox. */
export interface RecordRow {
  id: number;
  mailbox_id: number;
  mailbox_uniqueid: string;
  message_id: number;
  last_chunk_id: number;
  uid: number;
  modseq: number | bigint | null;
  last_updated: number | bigint | null;
  flags: string | null;
  internaldate: number | bigint | null;
  guid: string;
  size: number | null;
  annotations: string | null;
  expunged: number | null;
}

export interface MessageRow {
  id: number;
  guid: string;
  partition: string | null;
  chunk_id: number | null;
  offset: number | null;
  size: number | null;
}

export interface SeenRow {
  id: number;
  last_chunk_id: number;
  uniqueid: string;
  lastread: number | null;
  lastuid: number | null;
  lastchange: number | null;
  seenuids: string | null;
}

export interface SubscriptionRow {
  id: number;
  last_chunk_id: number;
  mboxname: string;
  unsubscribed: number | null;
}

export interface SieveRow {
  id: number;
  chunk_id: number;
  last_update: number | null;
  filename: string;
  guid: string;
  offset: number | null;
  deleted: number | null;
}

// ---------------------------------------------------------------------------
// Octet text <-> SQLite text

/** latin1 octet string -> the JS string whose UTF-8 encoding is those octets (when they are valid UTF-8). */
export function toDbText(s: string): string {
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(s)) return s;
  const b = Buffer.from(s, 'latin1');
  const u = b.toString('utf8');
  return Buffer.from(u, 'utf8').equals(b) ? u : s;
}

/** SQLite text -> latin1 octet string. */
export function fromDbText(s: string): string;
export function fromDbText(s: string | null): string | null;
export function fromDbText(s: string | null): string | null {
  if (s === null) return null;
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(s)) return s;
  return Buffer.from(s, 'utf8').toString('latin1');
}

const TEXT_COLUMNS = new Set([
  'uniqueid', 'mailbox_uniqueid', 'mboxname', 'mboxtype', 'partition', 'acl', 'options', 'quotaroot',
  'annotations', 'flags', 'guid', 'seenuids', 'filename', 'file_sha1', 'data_sha1',
]);

function rowFromDb<T>(row: unknown): T {
  if (row === undefined || row === null) return row as T;
  const r = row as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    const v = r[k];
    if (typeof v === 'string' && TEXT_COLUMNS.has(k)) r[k] = fromDbText(v);
  }
  return r as T;
}

// ---------------------------------------------------------------------------
// Dlist field access (dlist_getatom / dlist_getnum32 / dlist_getnum64 / dlist_getdate)

function findItem(items: DlistItem[], key: string): DlistValue | undefined {
  for (const it of items) if (it.key === key) return it.value;
  return undefined;
}

/** The string a value carries (atom, quoted, literal, builder string), or undefined. NIL is undefined. */
export function dlistText(v: DlistValue | undefined): string | undefined {
  if (v === undefined) return undefined;
  switch (v.kind) {
    case 'atom':
    case 'quoted':
    case 'flag':
      return v.value;
    case 'literal':
      return v.value.toString('latin1');
    case 'string':
      return v.value === null ? undefined : typeof v.value === 'string' ? v.value : v.value.toString('latin1');
    case 'num':
      return v.value.toString(10);
    default:
      return undefined;
  }
}

/** An unsigned decimal (64-bit at most): number when safe, BigInt above 2^53. */
export function dlistNumber(v: DlistValue | undefined, bits: 32 | 64 = 64): number | bigint | undefined {
  if (v !== undefined && v.kind === 'num') return v.value;
  const s = dlistText(v);
  if (s === undefined || !/^[0-9]{1,20}$/.test(s)) return undefined;
  const n = BigInt(s);
  if (n > (bits === 32 ? 0xffffffffn : 0xffffffffffffffffn)) return undefined;
  // SQLite integers are signed 64-bit: modseqs beyond that are stored wrapped, as Cyrus's C cast does.
  const signed = n > 0x7fffffffffffffffn ? n - 0x10000000000000000n : n;
  return signed <= BigInt(Number.MAX_SAFE_INTEGER) && signed >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(signed) : signed;
}

function kvItems(v: DlistValue | undefined): DlistItem[] | null {
  return v !== undefined && v.kind === 'kvlist' ? v.items : null;
}

function listItems(v: DlistValue | undefined): DlistValue[] | null {
  if (v === undefined) return null;
  if (v.kind === 'list') return v.items;
  // dlist_getlist accepts a kvlist too (both are lists in Cyrus).
  if (v.kind === 'kvlist') return v.items.map((i) => i.value);
  return null;
}

function badParams(what: string): CommandError {
  return new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', what);
}

/** Canonical text of a list value, as dlist_printbuf(list, 0) (no key). */
export function canonicalListText(v: DlistValue): string {
  return serializeValue(v, DATAFILE_MODE).toString('latin1');
}

// ---------------------------------------------------------------------------

export interface OpenIndexOptions {
  /**
   * Size of the data file: when it is non-zero, a missing or empty index is
   * an error ("reindex needed") instead of being created.
   */
  dataFileSize: number;
  /** Open read-only (inspection). */
  readonly?: boolean;
}

/** A missing/empty index next to a non-empty data file: the data must be reindexed. */
export class ReindexNeededError extends CyrsyncError {
  constructor(readonly indexPath: string) {
    super('IMAP_IOERROR', `${indexPath} is missing or empty while its data file is not: reindex needed`);
  }
}

export class BackupIndex {
  readonly db: Database.Database;
  readonly userVersion: number;
  private chunkId: number | null = null;
  private readonly stmts = new Map<string, Database.Statement>();

  private constructor(readonly path: string, db: Database.Database, version: number) {
    this.db = db;
    this.userVersion = version;
  }

  static open(indexPath: string, opts: OpenIndexOptions): BackupIndex {
    let size = -1;
    try {
      size = fs.statSync(indexPath).size;
    } catch {
      size = -1;
    }
    if (opts.dataFileSize > 0 && size <= 0) throw new ReindexNeededError(indexPath);
    let db: Database.Database;
    try {
      // read-only after a crash: the hot journal is rolled back first (sqlite-readonly.ts)
      db = opts.readonly === true ? openSqliteReadOnly(indexPath) : new Database(indexPath, { timeout: 20000 });
    } catch (err) {
      throw new CyrsyncError('IMAP_IOERROR', `cannot open ${indexPath}: ${(err as Error).message}`, { cause: err });
    }
    try {
      db.pragma('foreign_keys = ON');
      db.pragma('secure_delete = OFF');
      db.pragma('temp_store = 2');
      // Rollback journal, as Cyrus writes it. A commit is the journal's
      // deletion; FULL fsyncs journal and database but not the directory
      // after the unlink, so after a power cut the journal could come back
      // and undo an acknowledged chunk. EXTRA fsyncs the directory too.
      if (opts.readonly !== true) db.pragma('synchronous = EXTRA');
      let version = db.pragma('user_version', { simple: true }) as number;
      if (version !== INDEX_VERSION && !opts.readonly) {
        db.exec('BEGIN EXCLUSIVE;');
        try {
          version = db.pragma('user_version', { simple: true }) as number;
          if (version !== INDEX_VERSION) {
            if (version > 4) throw new CyrsyncError('IMAP_IOERROR', `${indexPath} has index version ${version}; this software knows versions 1 to 4`);
            let target = INDEX_VERSION;
            if (version === 0) db.exec(INIT_SQL);
            else {
              for (const u of UPGRADES) {
                target = u.to;
                if (u.to <= version) continue;
                db.exec(u.sql);
              }
            }
            db.pragma(`user_version = ${target}`);
            version = target;
          }
          db.exec('COMMIT;');
        } catch (err) {
          if (db.inTransaction) db.exec('ROLLBACK;');
          throw err;
        }
      }
      if (version !== 3 && version !== 4) {
        throw new CyrsyncError('IMAP_IOERROR', `${indexPath} has index version ${version}; expected 3 or 4`);
      }
      return new BackupIndex(indexPath, db, version);
    } catch (err) {
      db.close();
      if (err instanceof CyrsyncError) throw err;
      throw new CyrsyncError('IMAP_IOERROR', `cannot open ${indexPath}: ${(err as Error).message}`, { cause: err });
    }
  }

  close(): void {
    if (this.db.inTransaction) this.db.exec('ROLLBACK;');
    this.chunkId = null;
    this.db.close();
  }

  private stmt(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  // ------------------------------------------------------------ chunks

  /** The open chunk's id, or null. */
  get currentChunk(): number | null {
    return this.chunkId;
  }

  /** BEGIN, then the chunk row (§6.4 chunk start). Returns the chunk id. */
  beginChunk(tsStart: number, offset: number, fileSha1: string): number {
    if (this.chunkId !== null || this.db.inTransaction) throw new CyrsyncError('IMAP_INTERNAL', 'a chunk transaction is already open');
    this.db.exec('BEGIN;');
    try {
      const r = this.stmt(SQL.chunkStart).run({ ts_start: tsStart, offset, file_sha1: fileSha1 });
      this.chunkId = Number(r.lastInsertRowid);
    } catch (err) {
      this.db.exec('ROLLBACK;');
      throw new CyrsyncError('IMAP_IOERROR', `index: cannot start a chunk: ${(err as Error).message}`, { cause: err });
    }
    return this.chunkId;
  }

  /** Fills in the chunk row and commits the chunk's transaction. */
  endChunk(tsEnd: number, length: number, dataSha1: string): void {
    const id = this.requireChunk();
    try {
      this.stmt(SQL.chunkEnd).run({ id, ts_end: tsEnd, length, data_sha1: dataSha1 });
      this.db.exec('COMMIT;');
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK;');
      throw new CyrsyncError('IMAP_IOERROR', `index: cannot end chunk ${id}: ${(err as Error).message}`, { cause: err });
    } finally {
      this.chunkId = null;
    }
  }

  /** Drops the open chunk and everything indexed in it. */
  rollbackChunk(): void {
    this.chunkId = null;
    if (this.db.inTransaction) this.db.exec('ROLLBACK;');
  }

  private requireChunk(): number {
    if (this.chunkId === null) throw new CyrsyncError('IMAP_INTERNAL', 'no chunk transaction is open');
    return this.chunkId;
  }

  /**
   * §6.4 for one record written at `offset` of the current chunk with
   * timestamp `ts`. Throws CommandError (IMAP_PROTOCOL_BAD_PARAMETERS for
   * missing fields, IMAP_PROTOCOL_ERROR for an unknown key, IMAP_INTERNAL for
   * database errors); the record stays in the data file either way.
   */
  indexRecord(ts: number, offset: number, item: DlistItem): void {
    const chunk = this.requireChunk();
    try {
      switch (item.key) {
        case 'EXPUNGE':
          return this.indexExpunge(ts, item.value);
        case 'MAILBOX':
          return this.indexMailbox(chunk, ts, item.value);
        case 'UNMAILBOX':
          return this.indexUnmailbox(ts, item.value);
        case 'MESSAGE':
          return this.indexMessage(chunk, offset, item.value);
        case 'RENAME':
          return this.indexRename(item.value);
        case 'RESERVE':
          return;
        case 'SEEN':
          return this.indexSeen(chunk, item.value);
        case 'SUB':
        case 'UNSUB':
          return this.indexSub(chunk, ts, item.key, item.value);
        case 'SIEVE':
        case 'UNSIEVE':
          return this.indexSieve(chunk, ts, offset, item.key, item.value);
        default:
          throw new CommandError('IMAP_PROTOCOL_ERROR', `cannot index an APPLY ${item.key}`);
      }
    } catch (err) {
      if (err instanceof CyrsyncError) throw err;
      throw new CommandError('IMAP_INTERNAL', `index update for ${item.key} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  private indexExpunge(ts: number, v: DlistValue): void {
    const items = kvItems(v);
    if (!items) throw badParams('EXPUNGE needs a kvlist');
    const mboxname = dlistText(findItem(items, 'MBOXNAME'));
    const uniqueid = dlistText(findItem(items, 'UNIQUEID'));
    const uids = listItems(findItem(items, 'UID'));
    if (mboxname === undefined || uniqueid === undefined || uids === null) throw badParams('EXPUNGE needs MBOXNAME, UNIQUEID and UID');
    const mb = this.mailboxByName(mboxname);
    if (!mb) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `no mailbox ${mboxname}`);
    if (mb.uniqueid !== uniqueid) throw badParams(`uniqueid mismatch for ${mboxname}: ${uniqueid} on the wire, ${mb.uniqueid} in the index`);
    const st = this.stmt(SQL.mmExpunge);
    for (const u of uids) {
      const uid = dlistNumber(u, 32);
      if (uid === undefined) throw badParams('EXPUNGE UID items must be numbers');
      st.run({ expunged: ts, mailbox_id: mb.id, uid });
    }
  }

  private indexMailbox(chunk: number, ts: number, v: DlistValue): void {
    const items = kvItems(v);
    if (!items) throw badParams('MAILBOX needs a kvlist');
    const g = (k: string): DlistValue | undefined => findItem(items, k);
    const uniqueid = dlistText(g('UNIQUEID'));
    const mboxname = dlistText(g('MBOXNAME'));
    const last_uid = dlistNumber(g('LAST_UID'), 32);
    const highestmodseq = dlistNumber(g('HIGHESTMODSEQ'));
    const recentuid = dlistNumber(g('RECENTUID'), 32);
    const recenttime = dlistNumber(g('RECENTTIME'));
    const last_appenddate = dlistNumber(g('LAST_APPENDDATE'));
    const pop3_last_login = dlistNumber(g('POP3_LAST_LOGIN'));
    const uidvalidity = dlistNumber(g('UIDVALIDITY'), 32);
    const partition = dlistText(g('PARTITION'));
    const acl = dlistText(g('ACL'));
    const options = dlistText(g('OPTIONS'));
    const record = listItems(g('RECORD'));
    const required: [string, unknown][] = [
      ['UNIQUEID', uniqueid], ['MBOXNAME', mboxname], ['LAST_UID', last_uid], ['HIGHESTMODSEQ', highestmodseq],
      ['RECENTUID', recentuid], ['RECENTTIME', recenttime], ['LAST_APPENDDATE', last_appenddate],
      ['POP3_LAST_LOGIN', pop3_last_login], ['UIDVALIDITY', uidvalidity], ['PARTITION', partition],
      ['ACL', acl], ['OPTIONS', options], ['RECORD', record],
    ];
    for (const [k, val] of required) if (val === undefined || val === null) throw badParams(`MAILBOX without a valid ${k}`);
    const annotationsV = g('ANNOTATIONS');
    const annotations = annotationsV !== undefined && listItems(annotationsV) !== null ? canonicalListText(annotationsV) : '';
    const params = {
      last_chunk_id: chunk,
      uniqueid: toDbText(uniqueid!),
      mboxname: toDbText(mboxname!),
      mboxtype: ((): string | null => {
        const t = dlistText(g('MBOXTYPE'));
        return t === undefined ? null : toDbText(t);
      })(),
      last_uid,
      highestmodseq,
      recentuid,
      recenttime,
      last_appenddate,
      pop3_last_login,
      pop3_show_after: dlistNumber(g('POP3_SHOW_AFTER')) ?? 0,
      uidvalidity,
      partition: toDbText(partition!),
      acl: toDbText(acl!),
      options: toDbText(options!),
      sync_crc: dlistNumber(g('SYNC_CRC'), 32) ?? 0,
      sync_crc_annot: dlistNumber(g('SYNC_CRC_ANNOT'), 32) ?? 0,
      quotaroot: null,
      xconvmodseq: dlistNumber(g('XCONVMODSEQ')) ?? 0,
      annotations: toDbText(annotations),
      deleted: null,
    };
    const run = this.db.transaction(() => {
      const r = this.stmt(SQL.mailboxUpdate).run(params);
      if (r.changes === 0) this.stmt(SQL.mailboxInsert).run(params);
      const mb = this.stmt('SELECT id FROM mailbox WHERE uniqueid = ?').get(params.uniqueid) as { id: number } | undefined;
      if (!mb) throw new CommandError('IMAP_INTERNAL', `mailbox ${mboxname} vanished from the index`);
      for (const ri of record!) {
        const rec = kvItems(ri);
        if (!rec) throw new CommandError('IMAP_INTERNAL', `MAILBOX ${mboxname}: a RECORD item is not a kvlist`);
        const rg = (k: string): DlistValue | undefined => findItem(rec, k);
        const uid = dlistNumber(rg('UID'), 32);
        const modseq = dlistNumber(rg('MODSEQ'));
        const last_updated = dlistNumber(rg('LAST_UPDATED'), 32);
        const internaldate = dlistNumber(rg('INTERNALDATE'), 32);
        const guid = dlistText(rg('GUID'));
        if (uid === undefined || modseq === undefined || last_updated === undefined || internaldate === undefined || guid === undefined) {
          throw new CommandError('IMAP_INTERNAL', `MAILBOX ${mboxname}: a RECORD lacks UID, MODSEQ, LAST_UPDATED, INTERNALDATE or GUID`);
        }
        const msg = this.stmt('SELECT id FROM message WHERE guid = ?').get(toDbText(guid)) as { id: number } | undefined;
        if (!msg) continue;
        let expunged: number | null = null;
        let flagsText = '()';
        const flagsV = rg('FLAGS');
        const flags = listItems(flagsV);
        if (flags !== null) {
          const kept: DlistValue[] = [];
          for (const f of flags) {
            if (dlistText(f) === '\\Expunged') expunged = ts;
            else kept.push(f);
          }
          flagsText = canonicalListText({ kind: 'list', items: kept });
        }
        const annV = rg('ANNOTATIONS');
        const ann = annV !== undefined && listItems(annV) !== null ? canonicalListText(annV) : '';
        const p = {
          mailbox_id: mb.id,
          message_id: msg.id,
          last_chunk_id: chunk,
          uid,
          modseq,
          last_updated,
          flags: toDbText(flagsText),
          internaldate,
          annotations: toDbText(ann),
          expunged,
        };
        const u = this.stmt(SQL.mmUpdate).run(p);
        if (u.changes === 0) this.stmt(SQL.mmInsert).run(p);
      }
    });
    run();
  }

  private indexUnmailbox(ts: number, v: DlistValue): void {
    const name = dlistText(v);
    if (name === undefined) throw badParams('UNMAILBOX needs a mailbox name');
    this.stmt(SQL.mailboxDelete).run({ mboxname: toDbText(name), deleted: ts });
  }

  private indexMessage(chunk: number, offset: number, v: DlistValue): void {
    const items = listItems(v);
    if (items === null) throw badParams('MESSAGE needs a list');
    for (const f of items) {
      if (f.kind !== 'file') continue;
      const p = { guid: f.guid.toLowerCase(), partition: toDbText(f.partition), chunk_id: chunk, offset, size: f.size };
      const r = this.stmt(SQL.messageUpdate).run(p);
      if (r.changes === 0) this.stmt(SQL.messageInsert).run(p);
    }
  }

  private indexRename(v: DlistValue): void {
    const items = kvItems(v);
    if (!items) throw badParams('RENAME needs a kvlist');
    const oldn = dlistText(findItem(items, 'OLDMBOXNAME'));
    const newn = dlistText(findItem(items, 'NEWMBOXNAME'));
    const partition = dlistText(findItem(items, 'PARTITION'));
    const uidvalidity = dlistNumber(findItem(items, 'UIDVALIDITY'), 32);
    if (oldn === undefined || newn === undefined || partition === undefined || uidvalidity === undefined) {
      throw badParams('RENAME needs OLDMBOXNAME, NEWMBOXNAME, PARTITION and UIDVALIDITY');
    }
    this.stmt(SQL.mailboxRename).run({ oldmboxname: toDbText(oldn), newmboxname: toDbText(newn), partition: toDbText(partition), uidvalidity });
  }

  private indexSeen(chunk: number, v: DlistValue): void {
    const items = kvItems(v);
    if (!items) throw badParams('SEEN needs a kvlist');
    const uniqueid = dlistText(findItem(items, 'UNIQUEID'));
    const lastread = dlistNumber(findItem(items, 'LASTREAD'));
    const lastuid = dlistNumber(findItem(items, 'LASTUID'), 32);
    const lastchange = dlistNumber(findItem(items, 'LASTCHANGE'));
    const seenuids = dlistText(findItem(items, 'SEENUIDS'));
    if (uniqueid === undefined || lastread === undefined || lastuid === undefined || lastchange === undefined || seenuids === undefined) {
      throw badParams('SEEN needs UNIQUEID, LASTREAD, LASTUID, LASTCHANGE and SEENUIDS');
    }
    const p = { last_chunk_id: chunk, uniqueid: toDbText(uniqueid), lastread, lastuid, lastchange, seenuids: toDbText(seenuids) };
    const r = this.stmt(SQL.seenUpdate).run(p);
    if (r.changes === 0) this.stmt(SQL.seenInsert).run(p);
  }

  private indexSub(chunk: number, ts: number, key: string, v: DlistValue): void {
    const items = kvItems(v);
    if (!items) throw badParams(`${key} needs a kvlist`);
    const mboxname = dlistText(findItem(items, 'MBOXNAME'));
    if (mboxname === undefined) throw badParams(`${key} needs MBOXNAME`);
    const p = { last_chunk_id: chunk, mboxname: toDbText(mboxname), unsubscribed: key === 'UNSUB' ? ts : null };
    const r = this.stmt(SQL.subUpdate).run(p);
    if (r.changes === 0) this.stmt(SQL.subInsert).run(p);
  }

  private indexSieve(chunk: number, ts: number, offset: number, key: string, v: DlistValue): void {
    const items = kvItems(v);
    if (!items) throw badParams(`${key} needs a kvlist`);
    const filename = dlistText(findItem(items, 'FILENAME'));
    if (filename === undefined) throw badParams(`${key} needs FILENAME`);
    this.stmt(SQL.sieveDelete).run({ filename: toDbText(filename), deleted: ts });
    if (key !== 'SIEVE') return;
    const last_update = dlistNumber(findItem(items, 'LAST_UPDATE'));
    const content = findItem(items, 'CONTENT');
    if (last_update === undefined) throw badParams('SIEVE needs LAST_UPDATE');
    let guid: string;
    if (content !== undefined && content.kind === 'literal') guid = createHash('sha1').update(content.value).digest('hex');
    else if (content !== undefined && content.kind === 'bigliteral') guid = content.sha1;
    else {
      const t = dlistText(content);
      if (t === undefined) throw badParams('SIEVE needs CONTENT');
      guid = createHash('sha1').update(Buffer.from(t, 'latin1')).digest('hex');
    }
    this.stmt(SQL.sieveInsert).run({ chunk_id: chunk, last_update, filename: toDbText(filename), guid, offset });
  }

  // ------------------------------------------------------------ queries

  chunks(): ChunkRow[] {
    return (this.stmt('SELECT id, ts_start, ts_end, offset, length, file_sha1, data_sha1 FROM chunk ORDER BY id').all() as ChunkRow[]).map((r) => rowFromDb<ChunkRow>(r));
  }

  latestChunk(): ChunkRow | null {
    const r = this.stmt('SELECT id, ts_start, ts_end, offset, length, file_sha1, data_sha1 FROM chunk WHERE id = (SELECT MAX(id) FROM chunk)').get();
    return r ? rowFromDb<ChunkRow>(r) : null;
  }

  chunk(id: number): ChunkRow | null {
    const r = this.stmt('SELECT id, ts_start, ts_end, offset, length, file_sha1, data_sha1 FROM chunk WHERE id = ?').get(id);
    return r ? rowFromDb<ChunkRow>(r) : null;
  }

  private static readonly MAILBOX_FIELDS =
    'm.id, m.last_chunk_id, uniqueid, mboxname, mboxtype, last_uid, highestmodseq, recentuid, recenttime, last_appenddate, ' +
    'pop3_last_login, pop3_show_after, uidvalidity, m.partition, acl, options, sync_crc, sync_crc_annot, quotaroot, xconvmodseq, m.annotations, deleted';

  /** Every mailbox row (deleted ones too unless `liveOnly`), in id order. */
  mailboxes(liveOnly = false): MailboxRow[] {
    const sql = `SELECT ${BackupIndex.MAILBOX_FIELDS} FROM mailbox AS m${liveOnly ? ' WHERE deleted IS NULL' : ''} ORDER BY m.id`;
    return (this.stmt(sql).all() as MailboxRow[]).map((r) => rowFromDb<MailboxRow>(r));
  }

  /** The mailbox currently named `name`: a live row first, else the newest deleted one. */
  mailboxByName(name: string): MailboxRow | null {
    const sql = `SELECT ${BackupIndex.MAILBOX_FIELDS} FROM mailbox AS m WHERE mboxname = ? ORDER BY (deleted IS NULL) DESC, m.id DESC LIMIT 1`;
    const r = this.stmt(sql).get(toDbText(name));
    return r ? rowFromDb<MailboxRow>(r) : null;
  }

  mailboxByUniqueid(uniqueid: string): MailboxRow | null {
    const r = this.stmt(`SELECT ${BackupIndex.MAILBOX_FIELDS} FROM mailbox AS m WHERE uniqueid = ?`).get(toDbText(uniqueid));
    return r ? rowFromDb<MailboxRow>(r) : null;
  }

  mailboxesInChunk(chunkId: number): MailboxRow[] {
    return (this.stmt(`SELECT ${BackupIndex.MAILBOX_FIELDS} FROM mailbox AS m WHERE last_chunk_id = ?`).all(chunkId) as MailboxRow[]).map((r) => rowFromDb<MailboxRow>(r));
  }

  private static readonly RECORD_SELECT =
    'SELECT r.id as id, mailbox_id, mb.uniqueid as mailbox_uniqueid, message_id, r.last_chunk_id, uid, modseq, last_updated, flags, ' +
    'internaldate, m.guid as guid, m.size as size, r.annotations, expunged ' +
    'FROM mailbox_message as r JOIN message as m ON r.message_id = m.id JOIN mailbox as mb on r.mailbox_id = mb.id';

  /** A mailbox's records in UID order (expunged ones included). */
  mailboxRecords(mailboxId: number): RecordRow[] {
    return (this.stmt(`${BackupIndex.RECORD_SELECT} WHERE mailbox_id = ? ORDER BY uid, r.id`).all(mailboxId) as RecordRow[]).map((r) => rowFromDb<RecordRow>(r));
  }

  recordsInChunk(chunkId: number): RecordRow[] {
    return (this.stmt(`${BackupIndex.RECORD_SELECT} WHERE r.last_chunk_id = ?`).all(chunkId) as RecordRow[]).map((r) => rowFromDb<RecordRow>(r));
  }

  messages(): MessageRow[] {
    return (this.stmt('SELECT m.id, guid, partition, chunk_id, offset, size FROM message AS m ORDER BY id').all() as MessageRow[]).map((r) => rowFromDb<MessageRow>(r));
  }

  messageByGuid(guid: string): MessageRow | null {
    const r = this.stmt('SELECT m.id, guid, partition, chunk_id, offset, size FROM message AS m WHERE guid = ?').get(guid.toLowerCase());
    return r ? rowFromDb<MessageRow>(r) : null;
  }

  hasMessage(guid: string): boolean {
    return this.stmt('SELECT 1 FROM message WHERE guid = ?').get(guid.toLowerCase()) !== undefined;
  }

  messagesInChunk(chunkId: number): MessageRow[] {
    return (this.stmt('SELECT m.id, guid, partition, chunk_id, offset, size FROM message AS m WHERE chunk_id = ?').all(chunkId) as MessageRow[]).map((r) => rowFromDb<MessageRow>(r));
  }

  seen(): SeenRow[] {
    return (this.stmt('SELECT seen.id, seen.last_chunk_id, uniqueid, lastread, lastuid, lastchange, seenuids FROM seen AS seen ORDER BY seen.id').all() as SeenRow[]).map((r) => rowFromDb<SeenRow>(r));
  }

  /** Subscription rows; `activeOnly` => those not unsubscribed. */
  subscriptions(activeOnly = true): SubscriptionRow[] {
    const sql = `SELECT sub.id, sub.last_chunk_id, mboxname, unsubscribed FROM subscription AS sub${activeOnly ? ' WHERE unsubscribed IS NULL' : ''} ORDER BY sub.id`;
    return (this.stmt(sql).all() as SubscriptionRow[]).map((r) => rowFromDb<SubscriptionRow>(r));
  }

  /** Sieve rows; `currentOnly` => the live version of each script. */
  sieve(currentOnly = true): SieveRow[] {
    const sql = `SELECT sieve.id, sieve.chunk_id, last_update, filename, guid, offset, deleted FROM sieve AS sieve${currentOnly ? ' WHERE deleted IS NULL' : ''} ORDER BY sieve.id`;
    return (this.stmt(sql).all() as SieveRow[]).map((r) => rowFromDb<SieveRow>(r));
  }
}

// ---------------------------------------------------------------------------
// A backup opened for appending: data file lock + index + chunk writer

export interface OpenBackupOptions {
  /** Wait for another process's lock (tools) or give up at once (server). */
  wait: boolean;
  /** Create the data file when missing. */
  create?: boolean;
  /** Check the last chunk and cut a torn tail back (default true). */
  repair?: boolean;
}

export interface OpenedBackup {
  dataPath: string;
  lock: FileLock;
  index: BackupIndex;
  /** What the tail check found (null when repair was off). */
  tail: TailCheck | null;
  /** Octets cut off the end of the data file (0 when it was intact). */
  truncated: number;
  /** SHA-1 of the whole (repaired) file, for the next chunk's file_sha1. */
  fileHash: FileHash | null;
}

/** The last chunk failed its checksum test (§7.1 bit 1): the client gets `NO Unknown error`. */
export class VerifyError extends CyrsyncError {
  constructor(message: string) {
    super('IMAP_IOERROR', message);
  }
}

/**
 * Opens a backup the way backupd does (§4, §5.8): exclusive lock on the data
 * file (null when `wait` is false and it is locked elsewhere), index opened
 * under the lock, then the quick verification of the last chunk. A torn tail
 * after the last indexed chunk (an unfinished or unindexed member) is cut
 * off, so the next chunk starts right after the last good one.
 */
export async function openBackup(dataPath: string, opts: OpenBackupOptions): Promise<OpenedBackup | null> {
  const lock = await lockExclusive(dataPath, { wait: opts.wait, create: opts.create === true, append: true, mode: 0o600 });
  if (lock === null) return null;
  let index: BackupIndex | null = null;
  try {
    index = BackupIndex.open(`${dataPath}.index`, { dataFileSize: lock.size() });
    let tail: TailCheck | null = null;
    let truncated = 0;
    let fileHash: FileHash | null = null;
    if (opts.repair !== false) {
      const last = index.latestChunk();
      if (last !== null && (last.length === null || last.data_sha1 === null)) {
        throw new VerifyError(`${dataPath}: chunk ${last.id} was never finished in the index`);
      }
      let hash: Hash;
      try {
        hash = await hashPrefix(lock.fd, last === null ? 0 : last.offset);
      } catch (err) {
        throw new VerifyError(`${dataPath}: chunk ${last?.id}: ${(err as Error).message}`);
      }
      if (last !== null && hash.copy().digest('hex') !== last.file_sha1) {
        throw new VerifyError(`${dataPath}: chunk ${last.id}: file_sha1 does not match the data before offset ${last.offset}`);
      }
      try {
        tail = await checkTail(lock.fd, last === null ? null : { offset: last.offset, length: last.length!, data_sha1: last.data_sha1! });
      } catch (err) {
        throw new VerifyError(`${dataPath}: ${(err as Error).message}`);
      }
      if (tail.goodEnd < tail.fileSize) {
        truncated = tail.fileSize - tail.goodEnd;
        truncateTo(lock.fd, tail.goodEnd);
      }
      fileHash = { hash: await hashPrefix(lock.fd, tail.goodEnd, hash, last === null ? 0 : last.offset), end: tail.goodEnd };
    }
    return { dataPath, lock, index, tail, truncated, fileHash };
  } catch (err) {
    index?.close();
    lock.release();
    throw err;
  }
}

/**
 * Writes records to the data file and indexes them in one go: the
 * composition of ChunkWriter and BackupIndex that §5.8 describes. A record
 * whose index update fails stays in the data file and in the checksum, and
 * the error is rethrown for the client's reply.
 */
export class BackupAppender {
  readonly writer: ChunkWriter;
  constructor(readonly backup: OpenedBackup, opts: ChunkWriterOptions = {}) {
    const last = backup.index.latestChunk();
    this.writer = new ChunkWriter(backup.lock.fd, last === null ? 0 : Math.max(last.ts_start ?? 0, last.ts_end ?? 0), opts);
    if (backup.fileHash !== null) this.writer.seedFileHash(backup.fileHash);
  }

  get active(): boolean {
    return this.writer.active;
  }

  async start(ts?: number): Promise<number> {
    const c = await this.writer.start(ts);
    try {
      return this.backup.index.beginChunk(c.tsStart, c.offset, c.fileSha1);
    } catch (err) {
      await this.writer.abort();
      throw err;
    }
  }

  async append(item: DlistItem, ts?: number): Promise<RecordWritten> {
    const w = await this.writer.append(item, ts);
    this.backup.index.indexRecord(w.ts, w.offset, item);
    return w;
  }

  async end(ts?: number): Promise<ChunkEnd> {
    let e: ChunkEnd;
    try {
      e = await this.writer.end(ts);
    } catch (err) {
      this.backup.index.rollbackChunk();
      await this.writer.abort();
      throw err;
    }
    try {
      this.backup.index.endChunk(e.tsEnd, e.length, e.dataSha1);
    } catch (err) {
      // The index does not know the chunk: cut it off so data and index agree.
      truncateTo(this.backup.lock.fd, e.offset);
      throw err;
    }
    return e;
  }

  async abort(): Promise<void> {
    this.backup.index.rollbackChunk();
    await this.writer.abort();
  }

  /** Ends an open chunk (if any), closes the index and releases the lock. */
  async close(ts?: number): Promise<void> {
    try {
      if (this.writer.active) await this.end(ts);
    } finally {
      this.backup.index.close();
      this.backup.lock.release();
    }
  }
}

// ---------------------------------------------------------------------------
// Verification (§7.1)

export const VERIFY_LAST_CHECKSUM = 1;
export const VERIFY_ALL_CHECKSUMS = 2;
export const VERIFY_MESSAGE_LINKS = 4;
export const VERIFY_MAILBOX_LINKS = 8;
export const VERIFY_MESSAGE_GUIDS = 16;
export const VERIFY_QUICK = VERIFY_LAST_CHECKSUM;
export const VERIFY_FULL = 31;

export interface VerifyResult {
  ok: boolean;
  /** One plain sentence per problem found (empty when ok). */
  problems: string[];
  chunksChecked: number;
}

function numEq(a: DlistValue | undefined, b: number | bigint | null): boolean {
  const x = dlistNumber(a) ?? 0;
  return BigInt(x) === BigInt(b ?? 0);
}

/**
 * Checks a backup at the levels of §7.1 (bit flags; VERIFY_FULL is what
 * `ctl_backups verify` does). Reads the data file through `fd` only.
 */
export async function verifyBackup(fd: number, index: BackupIndex, level: number = VERIFY_FULL): Promise<VerifyResult> {
  const problems: string[] = [];
  const all = index.chunks();
  const links = (level & (VERIFY_MESSAGE_LINKS | VERIFY_MAILBOX_LINKS | VERIFY_MESSAGE_GUIDS)) !== 0;
  const chunks = level & (VERIFY_ALL_CHECKSUMS) || links ? all : all.slice(-1);
  const checksums = (level & (VERIFY_LAST_CHECKSUM | VERIFY_ALL_CHECKSUMS)) !== 0;
  let hash: FileHash = { hash: createHash('sha1'), end: 0 };
  for (const c of chunks) {
    const checkSums = checksums && ((level & VERIFY_ALL_CHECKSUMS) !== 0 || c.id === all[all.length - 1]!.id);
    if (checkSums) {
      if (c.offset < hash.end) hash = { hash: createHash('sha1'), end: 0 };
      hash = { hash: await hashPrefix(fd, c.offset, hash.hash, hash.end), end: c.offset };
      if (hash.hash.copy().digest('hex') !== c.file_sha1) problems.push(`chunk ${c.id}: file_sha1 mismatch`);
    }
    if (!checkSums && !links) continue;
    let read: Awaited<ReturnType<typeof readChunkRecords>>;
    try {
      read = await readChunkRecords(fd, c.offset);
    } catch (err) {
      problems.push(`chunk ${c.id}: ${(err as Error).message}`);
      continue;
    }
    if (checkSums) {
      if (read.length !== c.length) problems.push(`chunk ${c.id}: data length mismatch: ${read.length} on disk, ${c.length} in index`);
      if (read.dataSha1 !== c.data_sha1) problems.push(`chunk ${c.id}: data_sha1 mismatch`);
    }
    if ((level & (VERIFY_MESSAGE_LINKS | VERIFY_MESSAGE_GUIDS)) !== 0) {
      const byOffset = new Map(read.records.map((r) => [r.offset, r]));
      for (const m of index.messagesInChunk(c.id)) {
        const r = byOffset.get(m.offset ?? -1);
        const files = r?.item?.key === 'MESSAGE' ? listItems(r.item.value) ?? [] : [];
        const f = files.find((x) => x.kind === 'file' && x.guid.toLowerCase() === m.guid) as { sha1?: string } | undefined;
        if (f === undefined) problems.push(`chunk ${c.id}: message ${m.guid} is not at offset ${m.offset}`);
        else if ((level & VERIFY_MESSAGE_GUIDS) !== 0 && f.sha1 !== m.guid) problems.push(`chunk ${c.id}: message ${m.guid} has the wrong content (SHA-1 ${f.sha1})`);
      }
    }
    if ((level & VERIFY_MAILBOX_LINKS) !== 0) {
      const mailboxes = read.records.filter((r) => r.item?.key === 'MAILBOX').map((r) => kvItems(r.item!.value) ?? []);
      for (const mb of index.mailboxesInChunk(c.id)) {
        const match = mailboxes.some((items) => {
          const g = (k: string): DlistValue | undefined => findItem(items, k);
          const txt = (k: string): string | null => dlistText(g(k)) ?? null;
          return txt('UNIQUEID') === mb.uniqueid && txt('MBOXNAME') === mb.mboxname && txt('PARTITION') === mb.partition &&
            txt('ACL') === mb.acl && txt('OPTIONS') === mb.options && numEq(g('LAST_UID'), mb.last_uid) &&
            numEq(g('HIGHESTMODSEQ'), mb.highestmodseq) && numEq(g('RECENTUID'), mb.recentuid) && numEq(g('RECENTTIME'), mb.recenttime) &&
            numEq(g('LAST_APPENDDATE'), mb.last_appenddate) && numEq(g('UIDVALIDITY'), mb.uidvalidity) &&
            numEq(g('XCONVMODSEQ'), mb.xconvmodseq) && numEq(g('SYNC_CRC'), mb.sync_crc) && numEq(g('SYNC_CRC_ANNOT'), mb.sync_crc_annot);
        });
        if (!match) problems.push(`chunk ${c.id}: missing mailbox data for ${mb.uniqueid} (${mb.mboxname})`);
      }
      for (const r of index.recordsInChunk(c.id)) {
        const match = mailboxes.some((items) => {
          if (dlistText(findItem(items, 'UNIQUEID')) !== r.mailbox_uniqueid) return false;
          return (listItems(findItem(items, 'RECORD')) ?? []).some((ri) => {
            const rec = kvItems(ri);
            if (!rec) return false;
            const g = (k: string): DlistValue | undefined => findItem(rec, k);
            return numEq(g('UID'), r.uid) && numEq(g('MODSEQ'), r.modseq) && numEq(g('LAST_UPDATED'), r.last_updated) &&
              numEq(g('INTERNALDATE'), r.internaldate) && numEq(g('SIZE'), r.size) && dlistText(g('GUID')) === r.guid;
          });
        });
        if (!match) problems.push(`chunk ${c.id}: missing mailbox_message data for ${r.mailbox_uniqueid} uid ${r.uid}`);
      }
    }
  }
  return { ok: problems.length === 0, problems, chunksChecked: chunks.length };
}

// ---------------------------------------------------------------------------
// Rebuilding the index (§7.3)

export interface ReindexOptions {
  wait: boolean;
  /** Keep the previous index as `<P>.index.<unixtime>` (backup_keep_previous). */
  keepPrevious?: boolean;
}

export interface ReindexResult {
  chunks: number;
  records: number;
  /** Records that could not be indexed (reported and skipped, as Cyrus does). */
  errors: string[];
}

/**
 * Rebuilds `<P>.index` from the data file under the data file's lock. One
 * chunk row per member that holds records (ts_start/ts_end from the first
 * and last record); members without records get none.
 *
 * Deliberate difference from Cyrus: `length` and `data_sha1` are computed
 * over the inflated octets actually in the file, not over a canonical
 * re-serialization. For files cyrsync wrote the two are the same; for any
 * other file this index verifies against the data it describes (Cyrus's
 * re-serialization writes `{N+}` literals, so its rebuilt index of a file
 * holding `{N}` literals no longer verifies).
 *
 * Returns null when `wait` is false and the backup is locked elsewhere.
 */
export async function reindexBackup(dataPath: string, opts: ReindexOptions): Promise<ReindexResult | null> {
  const lock = await lockExclusive(dataPath, { wait: opts.wait, append: true });
  if (lock === null) return null;
  const indexPath = `${dataPath}.index`;
  const previous = `${indexPath}.${Math.floor(Date.now() / 1000)}`;
  let moved = false;
  let index: BackupIndex | null = null;
  try {
    if (fs.existsSync(indexPath)) {
      fs.renameSync(indexPath, previous);
      moved = true;
    }
    index = BackupIndex.open(indexPath, { dataFileSize: 0 });
    const size = lock.size();
    const result: ReindexResult = { chunks: 0, records: 0, errors: [] };
    let pos = 0;
    let lastFirstTs = Number.NEGATIVE_INFINITY;
    const hash = createHash('sha1');
    while (pos < size) {
      const read = await readChunkRecords(lock.fd, pos);
      const applies = read.records;
      if (applies.length > 0) {
        const firstTs = applies[0]!.ts;
        if (firstTs < lastFirstTs) throw new CyrsyncError('IMAP_IOERROR', `${dataPath}: timestamps go backwards at the chunk at offset ${pos}`);
        lastFirstTs = firstTs;
        // `hash` covers [0, pos): every member before this one.
        const fileSha1 = hash.copy().digest('hex');
        index.beginChunk(firstTs, pos, fileSha1);
        let lastTs = firstTs;
        for (const r of applies) {
          if (r.ts < firstTs) throw new CyrsyncError('IMAP_IOERROR', `${dataPath}: timestamps go backwards inside the chunk at offset ${pos}`);
          lastTs = r.ts;
          if (r.item === null || r.command.toUpperCase() !== 'APPLY') {
            if (r.error) result.errors.push(`offset ${pos}+${r.offset}: ${r.error.message}`);
            continue;
          }
          try {
            index.indexRecord(r.ts, r.offset, { key: r.item.key.toUpperCase(), value: r.item.value });
            result.records++;
          } catch (err) {
            result.errors.push(`offset ${pos}+${r.offset}: ${(err as Error).message}`);
          }
        }
        index.endChunk(lastTs, read.length, read.dataSha1);
        result.chunks++;
      }
      await hashPrefix(lock.fd, read.end, hash, pos);
      pos = read.end;
    }
    index.close();
    index = null;
    if (moved && !opts.keepPrevious) fs.rmSync(previous, { force: true });
    return result;
  } catch (err) {
    index?.close();
    fs.rmSync(indexPath, { force: true });
    if (moved) fs.renameSync(previous, indexPath);
    throw err;
  } finally {
    lock.release();
  }
}
