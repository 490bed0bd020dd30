/**
 * The replica store: state of replica-semantics §1 in SQLite plus the blob
 * store. This file holds the core (open, transactions, lookups, reports,
 * blobs, staged values, shared mailbox helpers); the handlers of each command
 * group are functions over it: ./get.ts (GET), ./mailbox-apply.ts (APPLY
 * MAILBOX), ./mailbox-ops.ts (UNMAILBOX, RENAME, EXPUNGE), ./usermeta.ts
 * (QUOTA, SUB, SEEN, ANNOTATION, UNUSER), ./sieve.ts, ./restore.ts (RESTORE
 * MAILBOX), with ./records.ts for the record form and its CRCs.
 *
 * Concurrency: better-sqlite3 is synchronous, so each APPLY's checks and its
 * commit run inside one synchronous transaction; no other session can
 * interleave between them, which gives the per-user-namespace serialisation
 * of §7 without explicit locks (IMAP_MAILBOX_LOCKED is never needed inside
 * one process). Anything asynchronous (reading staged literals, renaming
 * blobs) happens before the transaction starts.
 *
 * Invariant: mailbox.crc_basic / crc_annot are the XOR of the per-record
 * crc_basic / crc_annot columns (annot without the 12345678 INIT), kept in
 * step in the same transaction as every record change.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { Statement } from 'better-sqlite3';
import type { Logger } from 'pino';
import { CommandError } from '../../transforms/errors.js';
import type { DlistItem } from '../../transforms/dlist-types.js';
import type { Annot, BinaryValue } from '../../src/protocol/types.js';
import { ANNOT_CRC_INIT, recordAnnotCrc, recordBasicCrc } from '../../src/protocol/crc.js';
import {
  ancestors,
  compareMailboxNames,
  deletedUserPrefix,
  mailboxOwner,
  parseMailboxName,
  useridToInbox,
  type NameOptions,
} from '../../src/protocol/names.js';
import {
  LIVE,
  PLACEHOLDER,
  RECORD_COLUMNS,
  TOMBSTONE,
  fromDb64,
  mailboxFromRow,
  num,
  openDatabase,
  recordFromRow,
  toDb64,
  type AnnotRow,
  type DB,
  type MailboxRow,
} from './db.js';
import { BlobStore, IO_CONCURRENCY, ioError, isStagedRef, pool, type BlobFs, type StagedRef } from './blobs.js';
import { liveReport, placeholderReport } from './reports.js';
import { bad, crcRecord, type ResolvedAnnot } from './records.js';

export interface ReplicaStoreOptions {
  configdirectory: string;
  partitions: Record<string, string>;
  logger?: Logger;
  /** fsync blobs, directories and SQLite commits (default true) */
  fsync?: boolean;
  /** imapd.conf deletedprefix (default DELETED) */
  deletedPrefix?: string;
  defaultDomain?: string | null;
  /** allow RENAME of a user INBOX to another user's INBOX (user moves) */
  allowUserMoves?: boolean;
  /** emit USERFLAGS in mailbox reports (Cyrus 3.6.1 does not) */
  reportUserflags?: boolean;
  /**
   * Answer OK to an APPLY MESSAGE with a file whose bytes do not match its
   * GUID (the file is dropped either way), as the real sync_server does.
   * Default false: such an upload is refused.
   */
  acceptMismatchedUploads?: boolean;
  /** file-system operations, replaceable in tests to inject faults */
  fs?: BlobFs;
}

/** Per-connection switches the store consults. */
export interface SessionFlags {
  sieveMailboxMode: boolean;
  forceMode: boolean;
}

export type Out = (item: DlistItem) => Promise<void> | void;

/**
 * [lo, hi) bounds of every string starting with `prefix`, so that prefix
 * searches use the name index (SQLite compares TEXT by octets).
 */
export function prefixRange(prefix: string): [string, string] {
  const last = prefix.charCodeAt(prefix.length - 1);
  return [prefix, prefix.slice(0, -1) + String.fromCharCode(last + 1)];
}

const TYPE_LETTERS = new Set(['a', 'b', 'c', 'e', 'j', 'n', 'p', 's']);

/** §1.11 parsing of MBOXTYPE. */
export function parseMboxtype(s: string | null | undefined): { type: string; placeholder: boolean; tombstone: boolean } {
  if (!s) return { type: 'e', placeholder: false, tombstone: false };
  let type = 'e';
  const first = s[0]!.toLowerCase();
  if (TYPE_LETTERS.has(first)) type = first;
  const lower = s.toLowerCase();
  if (lower.includes('f')) type = 'f';
  return { type, placeholder: lower.includes('i'), tombstone: lower.includes('d') };
}

export class ReplicaStore {
  readonly db: DB;
  readonly blobs: BlobStore;
  readonly log: Logger | undefined;
  readonly names: NameOptions;
  readonly allowUserMoves: boolean;
  readonly reportUserflags: boolean;
  readonly acceptMismatchedUploads: boolean;
  private closed = false;
  private readonly stmts = new Map<string, Statement>();

  /** Prepared statements are cached: APPLY MAILBOX runs a few per record. */
  q(sql: string): Statement {
    let st = this.stmts.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.stmts.set(sql, st);
    }
    return st;
  }

  private constructor(db: DB, blobs: BlobStore, opts: ReplicaStoreOptions) {
    this.db = db;
    this.blobs = blobs;
    this.log = opts.logger;
    this.names = { deletedPrefix: opts.deletedPrefix ?? 'DELETED', defaultDomain: opts.defaultDomain ?? null };
    this.allowUserMoves = opts.allowUserMoves ?? false;
    this.reportUserflags = opts.reportUserflags ?? false;
    this.acceptMismatchedUploads = opts.acceptMismatchedUploads ?? false;
  }

  /**
   * Opens an existing store for reading only (dumps, inspection next to a
   * running server): no staging cleanup, no schema changes, no writes.
   */
  static openReadonly(opts: ReplicaStoreOptions): ReplicaStore {
    const blobs = new BlobStore({ partitions: opts.partitions, fsync: false });
    const db = openDatabase(opts.configdirectory, false, true);
    return new ReplicaStore(db, blobs, opts);
  }

  static async open(opts: ReplicaStoreOptions): Promise<ReplicaStore> {
    const fsync = opts.fsync ?? true;
    const blobs = new BlobStore({ partitions: opts.partitions, fsync, ...(opts.fs ? { fs: opts.fs } : {}) });
    await blobs.open();
    const db = openDatabase(opts.configdirectory, fsync);
    opts.logger?.info(
      { configdirectory: opts.configdirectory, partitions: opts.partitions, fsync },
      'replica store open',
    );
    return new ReplicaStore(db, blobs, opts);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.db.readonly) {
      this.db.close();
      return;
    }
    try {
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } catch {
      /* a checkpoint is an optimisation */
    }
    this.db.close();
  }

  /** Runs fn in one transaction; SQLite storage errors become clear refusals. */
  tx<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (err) {
      if (err instanceof CommandError) throw err;
      const e = err as { code?: string; message?: string };
      if (e?.code === 'SQLITE_BUSY' || e?.code === 'SQLITE_LOCKED') {
        // another process holds the write lock longer than busy_timeout: the client retries later
        throw new CommandError('IMAP_MAILBOX_LOCKED', 'The replica store is busy; try again later', { cause: err });
      }
      if (e?.code === 'SQLITE_FULL') {
        throw new CommandError('IMAP_NOSPACE', 'No space left on the replica disk for the metadata database', { cause: err });
      }
      if (typeof e?.code === 'string' && e.code.startsWith('SQLITE_')) {
        throw new CommandError('IMAP_IOERROR', `Metadata database error: ${e.code}`, { cause: err });
      }
      throw err;
    }
  }

  // ------------------------------------------------------------------ lookups

  mailboxByName(name: string): MailboxRow | null {
    const r = this.q('SELECT * FROM mailbox WHERE name = ?').get(name) as Record<string, unknown> | undefined;
    return r ? mailboxFromRow(r) : null;
  }

  mailboxByUniqueid(uniqueid: string): MailboxRow | null {
    const r = this.q('SELECT * FROM mailbox WHERE uniqueid = ? AND state < 2').get(uniqueid) as
      | Record<string, unknown>
      | undefined;
    return r ? mailboxFromRow(r) : null;
  }

  /** Live mailboxes and placeholders of a user (INBOX, descendants, DELETED copies), Cyrus order. */
  userMailboxes(userid: string): MailboxRow[] {
    const inbox = useridToInbox(userid, this.names);
    const del = deletedUserPrefix(userid, this.names);
    const rows = this.q(
      `SELECT * FROM mailbox WHERE state < 2 AND (name = ? OR (name >= ? AND name < ?) OR (name >= ? AND name < ?))`,
    ).all(inbox, ...prefixRange(`${inbox}.`), ...prefixRange(del)) as Record<string, unknown>[];
    const mbs = rows.map(mailboxFromRow);
    const group = (m: MailboxRow): number => (m.name === inbox ? 0 : m.name.startsWith(del) ? 2 : 1);
    return mbs.sort((a, b) => group(a) - group(b) || compareMailboxNames(a.name, b.name));
  }

  visible(mb: MailboxRow, flags: SessionFlags): boolean {
    return mb.state !== TOMBSTONE && (mb.mbtype !== 'f' || flags.sieveMailboxMode);
  }

  userExists(userid: string, flags: SessionFlags): boolean {
    return this.userMailboxes(userid).some((m) => m.state === LIVE && (m.mbtype !== 'f' || flags.sieveMailboxMode));
  }

  quotaRootOf(name: string): string | null {
    const stmt = this.q('SELECT root FROM quota WHERE root = ?');
    for (const n of [name, ...ancestors(name)]) {
      if (stmt.get(n)) return n;
    }
    return null;
  }

  mailboxAnnots(id: number): AnnotRow[] {
    return (
      this.db
        .prepare('SELECT entry, userid, value, modseq FROM mailbox_annot WHERE mailbox_id = ? ORDER BY entry, userid')
        .all(id) as Record<string, unknown>[]
    ).map((r) => ({ entry: r.entry as string, userid: r.userid as string, value: r.value as Buffer, modseq: fromDb64(r.modseq) }));
  }

  recordAnnots(id: number, uid: number): AnnotRow[] {
    return (
      this.db
        .prepare('SELECT entry, userid, value, modseq FROM record_annot WHERE mailbox_id = ? AND uid = ? ORDER BY entry, userid')
        .all(id, uid) as Record<string, unknown>[]
    ).map((r) => ({ entry: r.entry as string, userid: r.userid as string, value: r.value as Buffer, modseq: fromDb64(r.modseq) }));
  }

  groupsOf(userid: string | null): string | null {
    if (!userid) return null;
    const r = this.q('SELECT groups FROM user_groups WHERE userid = ?').get(userid) as { groups: string } | undefined;
    return r && r.groups.length > 0 ? r.groups : null;
  }

  report(mb: MailboxRow, withRecords = false): DlistItem {
    if (mb.state === PLACEHOLDER) return placeholderReport(mb);
    const extras = {
      crcAnnotInit: ANNOT_CRC_INIT,
      quotaRoot: this.quotaRootOf(mb.name),
      groups: this.groupsOf(mailboxOwner(mb.name, this.names)),
      annotations: this.mailboxAnnots(mb.id),
      userflags: this.reportUserflags,
    };
    if (!withRecords) return liveReport(mb, extras);
    const recs = (
      this.q(`SELECT ${RECORD_COLUMNS} FROM record WHERE mailbox_id = ? ORDER BY uid`)
        .safeIntegers(false)
        .all(mb.id) as Record<string, unknown>[]
    ).map(recordFromRow);
    // All per-message annotations in one pass (a query per record dominates big mailboxes).
    const byUid = new Map<number, AnnotRow[]>();
    const annotRows = this.q(
      'SELECT uid, entry, userid, value, CAST(modseq AS TEXT) AS modseq FROM record_annot WHERE mailbox_id = ? ORDER BY uid, entry, userid',
    )
      .safeIntegers(false)
      .all(mb.id) as Record<string, unknown>[];
    for (const r of annotRows) {
      const uid = num(r.uid);
      let list = byUid.get(uid);
      if (!list) byUid.set(uid, (list = []));
      list.push({ entry: r.entry as string, userid: r.userid as string, value: r.value as Buffer, modseq: fromDb64(r.modseq) });
    }
    const none: AnnotRow[] = [];
    return liveReport(mb, { ...extras, records: recs.map((rec) => ({ rec, annots: byUid.get(rec.uid) ?? none })) });
  }

  // ------------------------------------------------------------------ blobs

  blobKnown(guid: string): { partition: string; size: number } | null {
    const r = this.q('SELECT partition, size FROM blob WHERE guid = ?').get(guid) as
      | { partition: string; size: bigint }
      | undefined;
    return r ? { partition: r.partition, size: num(r.size) } : null;
  }

  async locateBlob(guid: string): Promise<{ path: string; size: number } | null> {
    const known = this.blobKnown(guid);
    if (known && this.blobs.partitions[known.partition] !== undefined) {
      const p = this.blobs.blobPath(known.partition, guid);
      try {
        const st = await fsp.stat(p);
        return { path: p, size: st.size };
      } catch {
        /* fall through to a search */
      }
    }
    return this.blobs.find(guid);
  }

  /**
   * APPLY MESSAGE: moves every verified staged file into the blob store,
   * fsyncs the directories, then records the blobs. Returns the GUIDs now
   * available.
   *
   * A file whose bytes do not hash to its GUID is never stored. The good
   * files of the same command are stored all the same (a retry only needs the
   * bad one), then the command is refused with IMAP_IOERROR unless
   * `acceptMismatchedUploads` is set. The real 3.6.1 sync_server (and
   * replica-semantics §5.2) answer `OK` here and let the APPLY MAILBOX that
   * needs the GUID fail instead; cyrsync refuses at the upload so the error
   * is reported where it happened.
   */
  async storeMessages(
    files: { guid: string; sha1?: string; size: number; body?: { ref: unknown } | null }[],
    onStored?: (guid: string) => void,
  ): Promise<string[]> {
    const good: { guid: string; ref: StagedRef; size: number }[] = [];
    const drop: StagedRef[] = [];
    const mismatched: { guid: string; sha1: string }[] = [];
    for (const f of files) {
      const ref = f.body?.ref;
      if (!isStagedRef(ref)) continue;
      const guid = typeof f.guid === 'string' ? f.guid.toLowerCase() : '';
      const sha1 = (f.sha1 ?? ref.sha1 ?? '').toLowerCase();
      if (ref.kind !== 'file' || !/^[0-9a-f]{40}$/.test(guid) || sha1 !== guid || ref.sha1 !== guid) {
        if (ref.live) drop.push(ref);
        mismatched.push({ guid, sha1 });
        this.log?.warn({ guid, sha1 }, 'message file does not match its GUID; not stored');
        continue;
      }
      if (!ref.live) throw new CommandError('IMAP_IOERROR', `The staged copy of message ${guid} is gone`);
      good.push({ guid, ref, size: f.size });
    }
    for (const r of drop) await this.blobs.discard(r);
    const dirs: string[] = [];
    const stored: { guid: string; partition: string; size: number }[] = [];
    // Renames run a few at a time: each is a metadata round trip through the thread pool.
    await pool(good, IO_CONCURRENCY, async (g) => {
      const known = this.blobKnown(g.guid);
      if (known && (await this.locateBlob(g.guid))) {
        await this.blobs.discard(g.ref);
        stored.push({ guid: g.guid, partition: known.partition, size: known.size });
        return;
      }
      dirs.push(...(await this.blobs.commit(g.ref, g.guid)));
      stored.push({ guid: g.guid, partition: g.ref.partition, size: g.size });
    });
    await this.blobs.syncDirs(dirs);
    const now = Math.floor(Date.now() / 1000);
    this.tx(() => {
      const ins = this.q('INSERT OR REPLACE INTO blob (guid, partition, size, stored_at) VALUES (?, ?, ?, ?)');
      for (const s of stored) {
        // Under the write lock: garbage collection (housekeeping.ts) removes a file only while
        // holding it, so a file seen here stays until this row commits.
        if (!fs.existsSync(this.blobs.blobPath(s.partition, s.guid))) {
          throw new CommandError('IMAP_IOERROR', `Message ${s.guid} vanished from the blob store while being stored`);
        }
        ins.run(s.guid, s.partition, s.size, now);
      }
    });
    if (onStored) for (const x of stored) onStored(x.guid);
    if (mismatched.length > 0 && !this.acceptMismatchedUploads) {
      const m = mismatched[0]!;
      throw new CommandError(
        'IMAP_IOERROR',
        `Message ${m.guid} was not stored: its bytes hash to ${m.sha1}` +
          (mismatched.length > 1 ? ` (and ${mismatched.length - 1} more mismatched)` : '') +
          (stored.length > 0 ? `; the other ${stored.length} messages were stored` : ''),
      );
    }
    return stored.map((s) => s.guid);
  }

  /**
   * APPLY RESERVE step 2: GUIDs held by some verified blob of this store. A
   * hit is marked as recently wanted, so garbage collection spares it while
   * the session that reserved it goes on to reference it.
   */
  reserve(guids: string[]): { available: string[]; missing: string[] } {
    const available: string[] = [];
    const missing: string[] = [];
    const lost: string[] = [];
    for (const g of guids) {
      const known = this.blobKnown(g);
      // A row whose file has gone (removed by hand, lost disk) is forgotten, so the client uploads it again.
      if (known && this.blobs.partitions[known.partition] !== undefined && !fs.existsSync(this.blobs.blobPath(known.partition, g))) {
        lost.push(g);
        missing.push(g);
        continue;
      }
      (known ? available : missing).push(g);
    }
    if (available.length > 0 || lost.length > 0) {
      const now = Math.floor(Date.now() / 1000);
      this.tx(() => {
        const touch = this.q('UPDATE blob SET stored_at = ? WHERE guid = ?');
        for (const g of available) touch.run(now, g);
        const forget = this.q('DELETE FROM blob WHERE guid = ?');
        for (const g of lost) forget.run(g);
      });
      if (lost.length > 0) this.log?.warn({ guids: lost }, 'blob files missing from the store; asking for them again');
    }
    return { available, missing };
  }

  // ------------------------------------------------------------------ staged values

  /** Reads a binary value (small: in memory; big: from its staging file). */
  async binary(v: BinaryValue | null | undefined, what: string): Promise<Buffer> {
    if (!v) throw bad(`Missing ${what}`);
    if (v.kind === 'buffer') return v.value;
    const ref = v.body?.ref;
    if (!isStagedRef(ref) || !ref.live) throw new CommandError('IMAP_IOERROR', `The staged value of ${what} is gone`);
    try {
      return await fsp.readFile(ref.path);
    } catch (err) {
      throw ioError(err, `reading the staged value of ${what}`);
    } finally {
      await this.blobs.discard(ref);
    }
  }

  async resolveAnnots(list: Annot[] | null | undefined, what: string): Promise<ResolvedAnnot[] | null> {
    if (list === null || list === undefined) return null;
    const out: ResolvedAnnot[] = [];
    for (const a of list) {
      if (typeof a?.entry !== 'string') throw new CommandError('IMAP_PROTOCOL_ERROR', `Annotation without ENTRY in ${what}`);
      out.push({
        entry: a.entry,
        userid: typeof a.userid === 'string' ? a.userid : '',
        modseq: typeof a.modseq === 'bigint' ? a.modseq : 0n,
        value: await this.binary(a.value, `annotation ${a.entry}`),
      });
    }
    return out;
  }

  // ------------------------------------------------------------------ mailbox content helpers

  deleteContent(id: number): void {
    this.q('DELETE FROM record WHERE mailbox_id = ?').run(id);
    this.q('DELETE FROM record_annot WHERE mailbox_id = ?').run(id);
    this.q('DELETE FROM mailbox_annot WHERE mailbox_id = ?').run(id);
  }

  deleteEntry(id: number): void {
    this.deleteContent(id);
    this.q('DELETE FROM mailbox WHERE id = ?').run(id);
  }

  hasLiveDescendant(name: string): boolean {
    return !!this.q('SELECT 1 FROM mailbox WHERE state = 0 AND name >= ? AND name < ? LIMIT 1').get(...prefixRange(`${name}.`));
  }

  /**
   * Empties an entry and leaves it in `state` (PLACEHOLDER or TOMBSTONE): its
   * content and live fields go, the remembered fields (name, uniqueid,
   * uidvalidity, createdmodseq) stay, with `foldermodseq`.
   */
  private clearEntry(mb: MailboxRow, state: typeof PLACEHOLDER | typeof TOMBSTONE, foldermodseq: bigint): void {
    this.deleteContent(mb.id);
    this.q(
      `UPDATE mailbox SET state = ?, partition = NULL, acl = NULL, options = '', last_uid = 0, highestmodseq = 0,
       recentuid = 0, recenttime = 0, last_appenddate = 0, pop3_last_login = 0, pop3_show_after = 0,
       xconvmodseq = 0, raclmodseq = 0, userflags = '[]', crc_basic = 0, crc_annot = 0, foldermodseq = ?
       WHERE id = ?`,
    ).run(state, toDb64(foldermodseq), mb.id);
  }

  /** Turns an entry into a tombstone keeping the remembered fields. */
  tombstone(mb: MailboxRow, foldermodseq: bigint): void {
    this.clearEntry(mb, TOMBSTONE, foldermodseq);
  }

  /** §5.5 removal of a live mailbox. */
  removeLive(mb: MailboxRow): void {
    const deleted = parseMailboxName(mb.name, this.names).deleted;
    if (deleted) {
      this.deleteEntry(mb.id);
      return;
    }
    if (this.hasLiveDescendant(mb.name)) {
      this.clearEntry(mb, PLACEHOLDER, mb.highestmodseq > mb.foldermodseq ? mb.highestmodseq : mb.foldermodseq);
      return;
    }
    this.tombstone(mb, mb.highestmodseq);
  }

  setAnnots(table: 'mailbox_annot' | 'record_annot', key: number[], wanted: ResolvedAnnot[]): void {
    const where = table === 'mailbox_annot' ? 'mailbox_id = ?' : 'mailbox_id = ? AND uid = ?';
    const cols = table === 'mailbox_annot' ? 'mailbox_id' : 'mailbox_id, uid';
    const marks = table === 'mailbox_annot' ? '?' : '?, ?';
    const existing = new Map<string, AnnotRow>();
    for (const r of this.q(`SELECT entry, userid, value, modseq FROM ${table} WHERE ${where}`).all(...key) as Record<
      string,
      unknown
    >[]) {
      existing.set(`${r.entry as string}\x00${r.userid as string}`, {
        entry: r.entry as string,
        userid: r.userid as string,
        value: r.value as Buffer,
        modseq: fromDb64(r.modseq),
      });
    }
    this.q(`DELETE FROM ${table} WHERE ${where}`).run(...key);
    const ins = this.q(`INSERT OR REPLACE INTO ${table} (${cols}, entry, userid, value, modseq) VALUES (${marks}, ?, ?, ?, ?)`);
    for (const a of wanted) {
      if (a.value.length === 0) continue;
      const old = existing.get(`${a.entry}\x00${a.userid}`);
      const modseq = old && old.value.equals(a.value) ? old.modseq : a.modseq;
      ins.run(...key, a.entry, a.userid, a.value, toDb64(modseq));
    }
  }

  nextModseq(): bigint {
    const r = this.q("SELECT value FROM meta WHERE key = 'modseq'").get() as { value: string } | undefined;
    let m = r ? BigInt(r.value) : 0n;
    const hw = this.q('SELECT max(modseq) AS m FROM modseq_highwater').get() as { m: bigint | null };
    if (hw.m !== null && fromDb64(hw.m) > m) m = fromDb64(hw.m);
    const qm = this.q('SELECT max(modseq) AS m FROM quota').get() as { m: bigint | null };
    if (qm.m !== null && fromDb64(qm.m) > m) m = fromDb64(qm.m);
    m += 1n;
    this.q("INSERT OR REPLACE INTO meta (key, value) VALUES ('modseq', ?)").run(m.toString());
    return m;
  }

  /** For diagnostics and tests: a from-scratch recomputation of a mailbox's CRCs. */
  recomputeCrcs(name: string): { basic: number; annot: number } | null {
    const mb = this.mailboxByName(name);
    if (!mb || mb.state !== LIVE) return null;
    let basic = 0;
    let annot = ANNOT_CRC_INIT;
    const rows = this.q('SELECT * FROM record WHERE mailbox_id = ?').all(mb.id) as Record<string, unknown>[];
    for (const row of rows) {
      const r = recordFromRow(row);
      const c = crcRecord(
        { ...r, expunged: r.expunged },
        this.recordAnnots(mb.id, r.uid),
      );
      basic ^= recordBasicCrc(c);
      annot ^= recordAnnotCrc(c);
    }
    return { basic: basic >>> 0, annot: annot >>> 0 };
  }
}
