/**
 * The per-backup SQLite index (BackupIndex) `<data file>.index` (backup-format §6), with
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
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { CommandError, CyrsyncError } from '../../transforms/errors.js';
import type { DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import { serializeValue } from '../../transforms/serializer.js';
import { parseU64, scalarText } from '../../src/protocol/commands/fields.js';
import { DATAFILE_MODE } from './datafile.js';
import { openSqliteReadOnly } from '../sqlite-readonly.js';
import {
  INDEX_VERSION,
  INIT_SQL,
  UPGRADES,
  SQL,
  type ChunkRow,
  type MailboxRow,
  type RecordRow,
  type MessageRow,
  type SeenRow,
  type SubscriptionRow,
  type SieveRow,
  toDbText,
  rowFromDb,
} from './index-schema.js';

// ---------------------------------------------------------------------------
// Dlist field access (dlist_getatom / dlist_getnum32 / dlist_getnum64 / dlist_getdate)
//
// Numbers and text are read by the protocol module's readers (parseU64,
// scalarText). The index keeps what a data file holds, whoever wrote it (a
// real backupd too), so a literal holding NUL is kept as text here where the
// wire decoder refuses it, and a kvlist counts as a list (Cyrus's
// dlist_getlist) where the wire decoder takes NIL.

export function findItem(items: DlistItem[], key: string): DlistValue | undefined {
  for (const it of items) if (it.key === key) return it.value;
  return undefined;
}

/** The string a value carries (atom, quoted, literal, builder string), or undefined. NIL is undefined. */
export function dlistText(v: DlistValue | undefined): string | undefined {
  return v === undefined ? undefined : (scalarText(v, 'keep') ?? undefined);
}

/** An unsigned decimal (64-bit at most): number when safe, BigInt above 2^53. */
export function dlistNumber(v: DlistValue | undefined, bits: 32 | 64 = 64): number | bigint | undefined {
  const n = parseU64(v);
  if (n === null || (bits === 32 && n > 0xffffffffn)) return undefined;
  // SQLite integers are signed 64-bit: modseqs beyond that are stored wrapped, as Cyrus's C cast does.
  const signed = n > 0x7fffffffffffffffn ? n - 0x10000000000000000n : n;
  return signed <= BigInt(Number.MAX_SAFE_INTEGER) && signed >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(signed) : signed;
}

export function kvItems(v: DlistValue | undefined): DlistItem[] | null {
  return v !== undefined && v.kind === 'kvlist' ? v.items : null;
}

export function listItems(v: DlistValue | undefined): DlistValue[] | null {
  if (v === undefined) return null;
  if (v.kind === 'list') return v.items;
  // dlist_getlist accepts a kvlist too (both are lists in Cyrus).
  if (v.kind === 'kvlist') return v.items.map((i) => i.value);
  return null;
}

export function badParams(what: string): CommandError {
  return new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', what);
}

/** Canonical text of a list value, as dlist_printbuf(list, 0) (no key). */
export function canonicalListText(v: DlistValue): string {
  return serializeValue(v, DATAFILE_MODE).toString('latin1');
}

/** The canonical text of an ANNOTATIONS list, '' when there is none. */
function annotationsText(v: DlistValue | undefined): string {
  return v !== undefined && listItems(v) !== null ? canonicalListText(v) : '';
}

/** A record's FLAGS without `\Expunged`, which becomes the expunge time instead. */
function recordFlags(v: DlistValue | undefined, ts: number): { flagsText: string; expunged: number | null } {
  const flags = listItems(v);
  if (flags === null) return { flagsText: '()', expunged: null };
  let expunged: number | null = null;
  const kept: DlistValue[] = [];
  for (const f of flags) {
    if (dlistText(f) === '\\Expunged') expunged = ts;
    else kept.push(f);
  }
  return { flagsText: canonicalListText({ kind: 'list', items: kept }), expunged };
}

/** The mailbox row a MAILBOX record gives (lcb_indexw.c), and its RECORD list; refuses one that lacks a required field. */
function mailboxParams(chunk: number, items: DlistItem[]) {
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
  const records = listItems(g('RECORD'));
  const required: [string, unknown][] = [
    ['UNIQUEID', uniqueid], ['MBOXNAME', mboxname], ['LAST_UID', last_uid], ['HIGHESTMODSEQ', highestmodseq],
    ['RECENTUID', recentuid], ['RECENTTIME', recenttime], ['LAST_APPENDDATE', last_appenddate],
    ['POP3_LAST_LOGIN', pop3_last_login], ['UIDVALIDITY', uidvalidity], ['PARTITION', partition],
    ['ACL', acl], ['OPTIONS', options], ['RECORD', records],
  ];
  for (const [k, val] of required) if (val === undefined || val === null) throw badParams(`MAILBOX without a valid ${k}`);
  const mboxtype = dlistText(g('MBOXTYPE'));
  const params = {
    last_chunk_id: chunk,
    uniqueid: toDbText(uniqueid!),
    mboxname: toDbText(mboxname!),
    mboxtype: mboxtype === undefined ? null : toDbText(mboxtype),
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
    annotations: toDbText(annotationsText(g('ANNOTATIONS'))),
    deleted: null,
  };
  return { mboxname: mboxname!, params, records: records! };
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

  /** MAILBOX: the mailbox row and each of its records, all or nothing. */
  private indexMailbox(chunk: number, ts: number, v: DlistValue): void {
    const items = kvItems(v);
    if (!items) throw badParams('MAILBOX needs a kvlist');
    const { mboxname, params, records } = mailboxParams(chunk, items);
    const run = this.db.transaction(() => {
      const r = this.stmt(SQL.mailboxUpdate).run(params);
      if (r.changes === 0) this.stmt(SQL.mailboxInsert).run(params);
      const mb = this.stmt('SELECT id FROM mailbox WHERE uniqueid = ?').get(params.uniqueid) as { id: number } | undefined;
      if (!mb) throw new CommandError('IMAP_INTERNAL', `mailbox ${mboxname} vanished from the index`);
      for (const ri of records) this.indexMailboxRecord(chunk, ts, mboxname, mb.id, ri);
    });
    run();
  }

  /** One RECORD of a MAILBOX; a record whose message the index does not hold is passed over. */
  private indexMailboxRecord(chunk: number, ts: number, mboxname: string, mailboxId: number, ri: DlistValue): void {
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
    if (!msg) return;
    const { flagsText, expunged } = recordFlags(rg('FLAGS'), ts);
    const p = {
      mailbox_id: mailboxId,
      message_id: msg.id,
      last_chunk_id: chunk,
      uid,
      modseq,
      last_updated,
      flags: toDbText(flagsText),
      internaldate,
      annotations: toDbText(annotationsText(rg('ANNOTATIONS'))),
      expunged,
    };
    const u = this.stmt(SQL.mmUpdate).run(p);
    if (u.changes === 0) this.stmt(SQL.mmInsert).run(p);
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

