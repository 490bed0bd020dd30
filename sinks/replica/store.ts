/**
 * The replica store: state of replica-semantics §1 in SQLite plus the blob
 * store, and every GET/APPLY of §4-§6.
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
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import type { Statement } from 'better-sqlite3';
import type { Logger } from 'pino';
import { CommandError } from '../../transforms/errors.js';
import type { DlistItem } from '../../transforms/dlist-types.js';
import type { Annot, BinaryValue, MailboxIn, QuotaIn, RecordIn, SeenIn } from '../../src/protocol/types.js';
import {
  ANNOT_BASETHRID,
  ANNOT_CREATEDMODSEQ,
  ANNOT_CRC_INIT,
  ANNOT_SAVEDATE,
  ANNOT_THRID,
  FLAG_ANSWERED,
  FLAG_DELETED,
  FLAG_DRAFT,
  FLAG_FLAGGED,
  FLAG_SEEN,
  asciiLower,
  crcMatch,
  recordAnnotCrc,
  recordBasicCrc,
  type CrcRecord,
} from '../../src/protocol/crc.js';
import {
  ancestors,
  compareMailboxNames,
  deletedUserPrefix,
  mailboxOwner,
  parseMailboxName,
  useridToInbox,
  validateFilename,
  validateGuid,
  validateMailboxName,
  validatePartition,
  validateUserid,
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
  type RecordRow,
} from './db.js';
import { BlobStore, IO_CONCURRENCY, ioError, isStagedRef, pool, type BlobFs, type StagedRef } from './blobs.js';
import { N, S, item, kv, liveReport, placeholderReport } from './reports.js';

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

const bad = (what: string): CommandError => new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', what);
const generic = (what: string): CommandError => new CommandError('IMAP_INTERNAL', what);

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

const SYSFLAG_BITS: Record<string, number> = {
  '\\deleted': FLAG_DELETED,
  '\\answered': FLAG_ANSWERED,
  '\\flagged': FLAG_FLAGGED,
  '\\draft': FLAG_DRAFT,
  '\\seen': FLAG_SEEN,
};

/** An IMAP atom: no atom-specials, no controls, not empty. */
// eslint-disable-next-line no-control-regex -- control octets are not atom characters
const ATOM_RE = /^[^\x00-\x20\x7f(){%*"\\\]]+$/;

function optionLetters(s: string | undefined): string {
  const up = (s ?? '').toUpperCase();
  return ['P', 'S', 'D', 'A'].filter((l) => up.includes(l)).join('');
}

interface ParsedRecord {
  uid: number;
  modseq: bigint;
  lastUpdated: number;
  internaldate: number;
  guid: string;
  sysflags: number;
  expunged: boolean;
  userflags: string[];
  thrid: bigint;
  basethrid: bigint;
  savedate: number;
  createdmodseq: bigint;
  annots: AnnotRow[];
}

export interface ResolvedAnnot {
  entry: string;
  userid: string;
  modseq: bigint;
  value: Buffer;
}

function isU32(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

function parseHex(v: Buffer): bigint | null {
  const s = v.toString('latin1');
  return /^[0-9a-fA-F]{1,16}$/.test(s) ? BigInt(`0x${s}`) : null;
}
function parseDec(v: Buffer): bigint | null {
  const s = v.toString('latin1');
  return /^[0-9]{1,20}$/.test(s) ? BigInt(s) : null;
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
  private q(sql: string): Statement {
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

  // ------------------------------------------------------------------ GET

  async getUser(userid: string, flags: SessionFlags, out: Out): Promise<void> {
    validateUserid(userid);
    // Each report is built and emitted in turn: a report is internally consistent, GETs need no snapshot.
    const mbs = this.userMailboxes(userid).filter((m) => this.visible(m, flags));
    const roots: string[] = [];
    for (const mb of mbs) {
      await out(this.report(mb));
      if (mb.state === LIVE) {
        const root = this.quotaRootOf(mb.name);
        if (root !== null && !roots.includes(root)) roots.push(root);
      }
    }
    for (const root of roots) {
      const q = this.quotaItem(root);
      if (q) await out(q);
    }
    if (this.userExists(userid, flags)) await this.getMeta(userid, flags, out);
  }

  async getMeta(userid: string, flags: SessionFlags, out: Out): Promise<void> {
    validateUserid(userid);
    const seen = this.db
      .prepare('SELECT * FROM seen WHERE userid = ? ORDER BY uniqueid')
      .all(userid) as Record<string, unknown>[];
    for (const s of seen) {
      await out(
        item(
          'SEEN',
          kv([
            item('UNIQUEID', S(s.uniqueid as string)),
            item('LASTREAD', N(num(s.lastread))),
            item('LASTUID', N(num(s.lastuid))),
            item('LASTCHANGE', N(num(s.lastchange))),
            item('SEENUIDS', S(s.seenuids as string)),
          ]),
        ),
      );
    }
    const subs = (this.q('SELECT mboxname FROM subscription WHERE userid = ?').all(userid) as { mboxname: string }[])
      .map((r) => r.mboxname)
      .sort(compareMailboxNames);
    if (subs.length > 0) await out(item('LSUB', { kind: 'list', items: subs.map((n) => S(n)) }));
    if (!flags.sieveMailboxMode) {
      const scripts = this.db
        .prepare('SELECT name, last_update, guid FROM sieve WHERE userid = ? ORDER BY name')
        .all(userid) as Record<string, unknown>[];
      for (const sc of scripts) {
        await out(
          item(
            'SIEVE',
            kv([
              item('FILENAME', S(`${sc.name as string}.script`)),
              item('LAST_UPDATE', N(num(sc.last_update))),
              item('GUID', { kind: 'atom', value: sc.guid as string }),
              item('ISACTIVE', N(0)),
            ]),
          ),
        );
      }
      const active = this.q('SELECT name FROM sieve_active WHERE userid = ?').get(userid) as { name: string } | undefined;
      if (active) {
        await out(
          item(
            'SIEVE',
            kv([
              item('FILENAME', S(`${active.name}.bc`)),
              item('LAST_UPDATE', N(0)),
              item('GUID', { kind: 'atom', value: '0'.repeat(40) }),
              item('ISACTIVE', N(1)),
            ]),
          ),
        );
      }
    }
  }

  async getMailboxes(names: string[], flags: SessionFlags, out: Out): Promise<void> {
    for (const n of names) {
      validateMailboxName(n);
      const mb = this.mailboxByName(n);
      if (mb && this.visible(mb, flags)) await out(this.report(mb));
    }
  }

  async getUniqueids(uniqueids: string[], flags: SessionFlags, out: Out): Promise<void> {
    for (const u of uniqueids) {
      if (typeof u !== 'string' || u.length === 0 || u.length > 256) throw bad('Invalid UNIQUEID');
      const mb = this.mailboxByUniqueid(u);
      if (mb && this.visible(mb, flags)) await out(this.report(mb));
    }
  }

  /**
   * Unlike the spec's visibility rule (§3.4), a sieve-store mailbox is
   * reported here without SIEVE-MAILBOX too: the real 3.6.1 sync_server does.
   */
  async getFullMailbox(name: string, _flags: SessionFlags, out: Out): Promise<void> {
    validateMailboxName(name);
    const mb = this.mailboxByName(name);
    if (!mb || mb.state !== LIVE) {
      throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No live mailbox ${name}`);
    }
    // One read transaction so the records and the CRCs reported agree.
    const report = this.db.transaction(() => this.report(mb, true))();
    await out(report);
  }

  quotaItem(root: string): DlistItem | null {
    const q = this.q('SELECT * FROM quota WHERE root = ?').get(root) as Record<string, unknown> | undefined;
    if (!q) return null;
    const lim = (v: unknown): number | null => (v === null || v === undefined ? null : num(v));
    const storage = lim(q.storage);
    const items: DlistItem[] = [item('ROOT', S(root)), item('LIMIT', N(storage ?? 4294967295))];
    if (storage !== null) items.push(item('STORAGE', N(storage)));
    const message = lim(q.message);
    if (message !== null) items.push(item('MESSAGE', N(message)));
    const annot = lim(q.annot_storage);
    if (annot !== null) items.push(item('X-ANNOTATION-STORAGE', N(annot)));
    const folders = lim(q.num_folders);
    if (folders !== null) items.push(item('X-NUM-FOLDERS', N(folders)));
    items.push(item('MODSEQ', N(fromDb64(q.modseq))));
    return item('QUOTA', kv(items));
  }

  async getQuota(root: string, out: Out): Promise<void> {
    const q = this.quotaItem(root);
    if (q) await out(q);
  }

  async getAnnotation(name: string, out: Out): Promise<void> {
    if (name === '') {
      const rows = this.q('SELECT entry, userid, value FROM server_annot ORDER BY entry, userid').all() as Record<
        string,
        unknown
      >[];
      for (const r of rows) {
        await out(
          item('ANNOTATION', kv([item('MBOXNAME', S('')), item('ENTRY', S(r.entry as string)), item('USERID', S(r.userid as string)), item('VALUE', S(r.value as Buffer))])),
        );
      }
      return;
    }
    // A mailbox name: no items, as the real 3.6.1 sync_server answers (its
    // annotatemore_findall_pattern() finds nothing for an internal name).
    // This is also what keeps a 3.6.1 client safe: its sync_do_annotation()
    // computes the master side the same way (always empty) and would send
    // APPLY UNANNOTATION for every mailbox annotation reported here.
    validateMailboxName(name);
  }

  async getFetch(
    req: { mboxname: string; partition: string; uniqueid: string; guid: string; uid: number },
    out: Out,
  ): Promise<void> {
    if ([req.mboxname, req.partition, req.uniqueid, req.guid].some((v) => typeof v !== 'string') || !isU32(req.uid)) {
      throw bad('GET FETCH needs MBOXNAME, PARTITION, UNIQUEID, GUID and UID');
    }
    const guid = validateGuid(req.guid);
    const notFound = (): CommandError =>
      new CommandError('IMAP_MAILBOX_NONEXISTENT', `No message ${guid} at UID ${req.uid} of ${req.mboxname}`);
    // As the real 3.6.1 sync_server, which reads the file at (PARTITION, UNIQUEID, UID):
    // the mailbox is found by UNIQUEID on that partition (MBOXNAME is not consulted), a
    // missing message is NONEXISTENT, and a message whose GUID differs from the one asked
    // for is answered `* MESSAGE NIL` (its printfile() refuses the mismatched file).
    const mb = this.mailboxByUniqueid(req.uniqueid);
    if (!mb || mb.state !== LIVE || mb.partition !== req.partition) throw notFound();
    const row = this.q('SELECT * FROM record WHERE mailbox_id = ? AND uid = ?').get(mb.id, req.uid) as
      | Record<string, unknown>
      | undefined;
    if (!row) throw notFound();
    const rec = recordFromRow(row);
    if (!rec.hasBlob) throw notFound();
    if (rec.guid !== guid) {
      await out(item('MESSAGE', { kind: 'nil' }));
      return;
    }
    const blob = await this.locateBlob(guid);
    if (!blob || blob.size !== rec.size) throw notFound();
    const file = blob.path;
    await out(
      item('MESSAGE', {
        kind: 'file',
        partition: req.partition,
        guid,
        size: blob.size,
        source: () => createReadStream(file),
      }),
    );
  }

  async getFetchSieve(userid: string, filename: string, out: Out): Promise<void> {
    if (typeof userid !== 'string' || typeof filename !== 'string') throw bad('GET FETCH_SIEVE needs USERID and FILENAME');
    validateUserid(userid);
    validateFilename(filename);
    const notFound = new CommandError('IMAP_MAILBOX_NONEXISTENT', `No sieve script ${filename} for ${userid}`);
    if (!filename.endsWith('.script')) throw notFound;
    const r = this.q('SELECT content FROM sieve WHERE userid = ? AND name = ?').get(userid, filename.slice(0, -7)) as
      | { content: Buffer }
      | undefined;
    if (!r) throw notFound;
    await out(item('SIEVE', kv([item('USERID', S(userid)), item('FILENAME', S(filename)), item('CONTENT', S(r.content))])));
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

  private deleteContent(id: number): void {
    this.q('DELETE FROM record WHERE mailbox_id = ?').run(id);
    this.q('DELETE FROM record_annot WHERE mailbox_id = ?').run(id);
    this.q('DELETE FROM mailbox_annot WHERE mailbox_id = ?').run(id);
  }

  deleteEntry(id: number): void {
    this.deleteContent(id);
    this.q('DELETE FROM mailbox WHERE id = ?').run(id);
  }

  private hasLiveDescendant(name: string): boolean {
    return !!this.q('SELECT 1 FROM mailbox WHERE state = 0 AND name >= ? AND name < ? LIMIT 1').get(...prefixRange(`${name}.`));
  }

  /** Turns an entry into a tombstone (or removes it) keeping the remembered fields. */
  private tombstone(mb: MailboxRow, foldermodseq: bigint): void {
    this.deleteContent(mb.id);
    this.db
      .prepare(
        `UPDATE mailbox SET state = 2, partition = NULL, acl = NULL, options = '', last_uid = 0, highestmodseq = 0,
         recentuid = 0, recenttime = 0, last_appenddate = 0, pop3_last_login = 0, pop3_show_after = 0,
         xconvmodseq = 0, raclmodseq = 0, userflags = '[]', crc_basic = 0, crc_annot = 0, foldermodseq = ?
         WHERE id = ?`,
      )
      .run(toDb64(foldermodseq), mb.id);
  }

  /** §5.5 removal of a live mailbox. */
  private removeLive(mb: MailboxRow): void {
    const deleted = parseMailboxName(mb.name, this.names).deleted;
    if (deleted) {
      this.deleteEntry(mb.id);
      return;
    }
    if (this.hasLiveDescendant(mb.name)) {
      this.deleteContent(mb.id);
      this.db
        .prepare(
          `UPDATE mailbox SET state = 1, partition = NULL, acl = NULL, options = '', last_uid = 0, highestmodseq = 0,
           recentuid = 0, recenttime = 0, last_appenddate = 0, pop3_last_login = 0, pop3_show_after = 0,
           xconvmodseq = 0, raclmodseq = 0, userflags = '[]', crc_basic = 0, crc_annot = 0, foldermodseq = ?
           WHERE id = ?`,
        )
        .run(toDb64(mb.highestmodseq > mb.foldermodseq ? mb.highestmodseq : mb.foldermodseq), mb.id);
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

  /** The record columns an update may change, in table order (modseq … createdmodseq). */
  private static mutableColumns(rec: ParsedRecord): (bigint | number | string)[] {
    return [
      toDb64(rec.modseq),
      rec.lastUpdated,
      rec.internaldate,
      rec.sysflags,
      rec.expunged ? 1 : 0,
      JSON.stringify(rec.userflags),
      toDb64(rec.thrid),
      toDb64(rec.basethrid),
      rec.savedate,
      toDb64(rec.createdmodseq),
    ];
  }

  /** [basic, annotation] CRC contributions of one record. */
  private static recordCrcs(rec: ParsedRecord): [number, number] {
    const c = ReplicaStore.crcRecord(rec, rec.annots);
    return [recordBasicCrc(c), recordAnnotCrc(c)];
  }

  private static crcRecord(r: Omit<ParsedRecord, 'annots'>, annots: { entry: string; userid: string; value: Buffer }[]): CrcRecord {
    return {
      uid: r.uid,
      modseq: r.modseq,
      lastUpdated: r.lastUpdated,
      internaldate: r.internaldate,
      guid: r.guid,
      systemFlags: r.sysflags,
      userFlags: r.userflags,
      expunged: r.expunged,
      annotations: annots,
      thrid: r.thrid,
      savedate: r.savedate,
      createdmodseq: r.createdmodseq,
    };
  }

  /** Inserts a new record and its annotations; returns its [basic, annotation] CRC contributions. */
  insertRecord(mailboxId: number, rec: ParsedRecord, size: number, hasBlob: boolean): [number, number] {
    const [b, a] = ReplicaStore.recordCrcs(rec);
    this.q(
      `INSERT INTO record (mailbox_id, uid, guid, size, modseq, last_updated, internaldate, sysflags, expunged, userflags,
       thrid, basethrid, savedate, createdmodseq, has_blob, crc_basic, crc_annot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(mailboxId, rec.uid, rec.guid, size, ...ReplicaStore.mutableColumns(rec), hasBlob ? 1 : 0, b, a);
    // a new UID has no stored annotations (a removed mailbox takes its annotations with it)
    if (rec.annots.length > 0) this.setAnnots('record_annot', [mailboxId, rec.uid], rec.annots);
    return [b, a];
  }

  // ------------------------------------------------------------------ APPLY MAILBOX (§6)

  parseRecord(r: RecordIn, annots: ResolvedAnnot[] | null): ParsedRecord {
    const perr = (why: string): CommandError => new CommandError('IMAP_PROTOCOL_ERROR', `Unparsable RECORD: ${why}`);
    if (!r || !isU32(r.uid) || r.uid === 0) throw perr('UID missing or not a positive 32-bit number');
    if (typeof r.modseq !== 'bigint') throw perr(`MODSEQ missing at UID ${r.uid}`);
    if (!isU32(r.lastUpdated) && !Number.isSafeInteger(r.lastUpdated)) throw perr(`LAST_UPDATED missing at UID ${r.uid}`);
    if (!Number.isSafeInteger(r.internaldate)) throw perr(`INTERNALDATE missing at UID ${r.uid}`);
    if (!Array.isArray(r.flags)) throw perr(`FLAGS missing at UID ${r.uid}`);
    if (typeof r.guid !== 'string' || !/^[0-9a-fA-F]{40}$/.test(r.guid)) throw perr(`GUID invalid at UID ${r.uid}`);
    let sysflags = 0;
    let expunged = false;
    const userflags: string[] = [];
    for (const f of r.flags) {
      if (typeof f !== 'string' || f.length === 0) throw perr(`bad flag at UID ${r.uid}`);
      if (f.startsWith('\\')) {
        const lf = asciiLower(f);
        if (lf === '\\expunged') expunged = true;
        else sysflags |= SYSFLAG_BITS[lf] ?? 0; // unknown system flags are ignored
        continue;
      }
      if (!ATOM_RE.test(f)) throw perr(`user flag ${JSON.stringify(f)} is not an atom at UID ${r.uid}`);
      if (!userflags.some((u) => asciiLower(u) === asciiLower(f))) userflags.push(f);
    }
    const rec: ParsedRecord = {
      uid: r.uid,
      modseq: r.modseq,
      lastUpdated: r.lastUpdated,
      internaldate: r.internaldate,
      guid: r.guid.toLowerCase(),
      sysflags,
      expunged,
      userflags,
      thrid: 0n,
      basethrid: 0n,
      savedate: 0,
      createdmodseq: 0n,
      annots: [],
    };
    for (const a of annots ?? []) {
      if (a.entry === ANNOT_THRID) {
        const v = parseHex(a.value);
        if (v === null) throw perr(`bad thrid at UID ${r.uid}`);
        rec.thrid = v;
        continue;
      }
      if (a.entry === ANNOT_SAVEDATE) {
        const v = parseDec(a.value);
        if (v === null) throw perr(`bad savedate at UID ${r.uid}`);
        rec.savedate = Number(v);
        continue;
      }
      if (a.entry === ANNOT_CREATEDMODSEQ) {
        const v = parseDec(a.value);
        if (v === null) throw perr(`bad createdmodseq at UID ${r.uid}`);
        rec.createdmodseq = v;
        continue;
      }
      if (a.entry === ANNOT_BASETHRID) {
        const v = parseHex(a.value);
        if (v !== null) rec.basethrid = v;
      }
      rec.annots.push({ entry: a.entry, userid: a.userid, value: a.value, modseq: a.modseq });
    }
    return rec;
  }

  /** Resolves every staged value of an APPLY MAILBOX before its transaction. */
  async prepareMailbox(m: MailboxIn): Promise<{ annots: ResolvedAnnot[] | null; recordAnnots: (ResolvedAnnot[] | null)[] }> {
    const annots = await this.resolveAnnots(m.annotations, 'MAILBOX');
    const recordAnnots: (ResolvedAnnot[] | null)[] = [];
    for (const r of m.records ?? []) recordAnnots.push(await this.resolveAnnots(r?.annotations, `RECORD ${r?.uid}`));
    return { annots, recordAnnots };
  }

  async applyMailbox(m: MailboxIn, flags: SessionFlags): Promise<void> {
    if (!m || typeof m.uniqueid !== 'string' || typeof m.mboxname !== 'string' || typeof m.highestmodseq !== 'bigint') {
      throw bad('APPLY MAILBOX needs UNIQUEID, MBOXNAME and HIGHESTMODSEQ');
    }
    const name = validateMailboxName(m.mboxname);
    // eslint-disable-next-line no-control-regex -- a UNIQUEID holds no control octets
    if (m.uniqueid.length === 0 || m.uniqueid.length > 256 || /[\x00-\x20\x7f]/.test(m.uniqueid)) {
      throw bad(`Invalid UNIQUEID ${JSON.stringify(m.uniqueid.slice(0, 60))}`);
    }
    const t = parseMboxtype(m.mboxtype);
    // Step 1: sieve gate.
    if (t.type === 'f' && !flags.sieveMailboxMode) {
      throw bad('A sieve-script mailbox (MBOXTYPE f) needs SIEVE-MAILBOX to be enabled first');
    }
    // Step 2: placeholder / tombstone stub.
    if (t.placeholder || t.tombstone) {
      this.applyStub(name, m, t.type, t.placeholder ? PLACEHOLDER : TOMBSTONE);
      return;
    }
    // Step 3: required fields.
    const missing: string[] = [];
    if (typeof m.partition !== 'string') missing.push('PARTITION');
    for (const [k, v] of [
      ['LAST_UID', m.lastUid],
      ['RECENTUID', m.recentUid],
      ['RECENTTIME', m.recentTime],
      ['LAST_APPENDDATE', m.lastAppenddate],
      ['POP3_LAST_LOGIN', m.pop3LastLogin],
      ['UIDVALIDITY', m.uidvalidity],
    ] as const) {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) missing.push(k);
    }
    if (typeof m.acl !== 'string') missing.push('ACL');
    if (typeof m.options !== 'string') missing.push('OPTIONS');
    if (!Array.isArray(m.records)) missing.push('RECORD');
    if (missing.length > 0) throw bad(`APPLY MAILBOX ${name}: missing or ill-typed ${missing.join(', ')}`);
    const partition = validatePartition(m.partition);
    const prepared = await this.prepareMailbox(m);
    this.commitMailbox(name, m, t.type, partition, prepared, flags);
  }

  private applyStub(name: string, m: MailboxIn, type: string, state: number): void {
    this.tx(() => {
      const e = this.mailboxByName(name);
      const other = this.mailboxByUniqueid(m.uniqueid);
      if (state === PLACEHOLDER && other && other.name !== name) {
        throw generic(`Uniqueid ${m.uniqueid} is already used by ${other.name}`);
      }
      if (e) this.deleteEntry(e.id);
      this.db
        .prepare(
          `INSERT INTO mailbox (name, state, uniqueid, mbtype, foldermodseq, createdmodseq, uidvalidity) VALUES (?, ?, ?, ?, ?, ?, 0)`,
        )
        .run(name, state, m.uniqueid, type, toDb64(m.highestmodseq), toDb64(m.createdmodseq ?? 0n));
    });
  }

  private commitMailbox(
    name: string,
    m: MailboxIn,
    type: string,
    partition: string,
    prepared: { annots: ResolvedAnnot[] | null; recordAnnots: (ResolvedAnnot[] | null)[] },
    flags: SessionFlags,
  ): void {
    let checksumAfter: CommandError | null = null;
    this.tx(() => {
      // Step 5: resolve the target.
      const byUid = this.mailboxByUniqueid(m.uniqueid);
      if (byUid && byUid.name !== name) {
        throw new CommandError('IMAP_MAILBOX_MOVED', `Uniqueid ${m.uniqueid} belongs to ${byUid.name}, not ${name}`);
      }
      const e = this.mailboxByName(name);
      let existing: MailboxRow | null = null;
      let replace: MailboxRow | null = null;
      if (e && e.state === LIVE) {
        if (e.uniqueid === m.uniqueid) existing = e;
        else if (flags.forceMode || e.lastUid === 0) replace = e;
        else throw new CommandError('IMAP_MAILBOX_MOVED', `${name} exists with uniqueid ${e.uniqueid}, not ${m.uniqueid}`);
      }
      if (!existing) {
        const p = parseMailboxName(name, this.names);
        if (p.userid !== null && !p.deleted && p.rest !== '') {
          const liveAncestor = ancestors(name).some((a) => this.mailboxByName(a)?.state === LIVE);
          if (!liveAncestor) throw generic(`Cannot create ${name}: no live parent mailbox`);
        }
      }
      const prior = {
        highestmodseq: existing?.highestmodseq ?? 0n,
        uidvalidity: existing?.uidvalidity ?? 0,
        lastUid: existing?.lastUid ?? 0,
        xconvmodseq: existing?.xconvmodseq ?? 0n,
        crcs: { basic: existing?.crcBasic ?? 0, annot: ((existing?.crcAnnot ?? 0) ^ ANNOT_CRC_INIT) >>> 0 },
      };
      // Step 6: SINCE check.
      const since = m.sinceModseq ?? 0n;
      if (
        since !== 0n &&
        (since !== prior.highestmodseq || !crcMatch({ basic: m.sinceCrc ?? 0, annot: m.sinceCrcAnnot ?? 0 }, prior.crcs))
      ) {
        throw new CommandError('IMAP_SYNC_CHANGED', `${name} changed since modseq ${since}`);
      }
      // Step 7: type.
      if (existing && existing.mbtype !== type) {
        throw generic(`${name} is of type ${existing.mbtype}, not ${type}`);
      }
      // Step 8: regressions.
      if (!flags.forceMode) {
        const xconv = m.xconvmodseq ?? 0n;
        if (
          m.highestmodseq < prior.highestmodseq ||
          m.uidvalidity! < prior.uidvalidity ||
          m.lastUid! < prior.lastUid ||
          (xconv !== 0n && xconv < prior.xconvmodseq)
        ) {
          throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: the replica is ahead of the master`);
        }
      }
      // Step 9: record validation.
      if (m.badRecord) throw new CommandError('IMAP_PROTOCOL_ERROR', `${name}: a RECORD could not be parsed`);
      const mbFlags = [...(existing?.userflags ?? [])];
      const flagKey = new Map(mbFlags.map((f) => [asciiLower(f), f]));
      const updates: { rec: ParsedRecord; old: RecordRow }[] = [];
      const appends: { rec: ParsedRecord; size: number; hasBlob: boolean }[] = [];
      const getRec = this.q('SELECT * FROM record WHERE mailbox_id = ? AND uid = ?');
      let lastSeen = 0;
      const records = m.records ?? [];
      for (let i = 0; i < records.length; i++) {
        const rec = this.parseRecord(records[i]!, prepared.recordAnnots[i] ?? null);
        for (const f of rec.userflags) {
          const k = asciiLower(f);
          if (!flagKey.has(k)) {
            if (flagKey.size >= 128) throw new CommandError('IMAP_PROTOCOL_ERROR', `${name}: more than 128 user flags`);
            flagKey.set(k, f);
            mbFlags.push(f);
          }
        }
        rec.userflags = rec.userflags.map((f) => flagKey.get(asciiLower(f))!);
        if (rec.uid <= lastSeen || rec.uid > m.lastUid!) {
          throw bad(`${name}: RECORD UIDs must ascend and not exceed LAST_UID (UID ${rec.uid})`);
        }
        lastSeen = rec.uid;
        const oldRow = existing ? (getRec.get(existing.id, rec.uid) as Record<string, unknown> | undefined) : undefined;
        if (oldRow) {
          const old = recordFromRow(oldRow);
          if (old.expunged && rec.expunged) continue;
          if (old.guid !== rec.guid) throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: UID ${rec.uid} has another GUID here`);
          if (old.modseq > rec.modseq && !flags.forceMode) {
            throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: UID ${rec.uid} has a newer modseq here`);
          }
          if (old.expunged && !rec.expunged) {
            throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: UID ${rec.uid} is expunged here`);
          }
          updates.push({ rec, old });
          continue;
        }
        if (rec.uid <= prior.lastUid) {
          if (rec.expunged) continue;
          throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: UID ${rec.uid} is unknown here`);
        }
        // A verified blob anywhere in the store serves (the replica's option in §6.2 step 9):
        // every blob row was inserted only after its bytes hashed to the GUID and were fsynced.
        const blob = this.blobKnown(rec.guid);
        if (blob) appends.push({ rec, size: blob.size, hasBlob: true });
        else if (rec.expunged) appends.push({ rec, size: records[i]!.size >>> 0, hasBlob: false });
        else throw new CommandError('IMAP_IOERROR', `${name}: message ${rec.guid} for UID ${rec.uid} was never uploaded`);
      }
      // Step 10: commit.
      let mb: MailboxRow;
      if (existing) {
        mb = existing;
      } else {
        if (replace) this.deleteEntry(replace.id);
        if (e && !replace) this.deleteEntry(e.id);
        const uidvalidity = m.uidvalidity! !== 0 ? m.uidvalidity! : Math.floor(Date.now() / 1000) >>> 0;
        const info = this.db
          .prepare(
            `INSERT INTO mailbox (name, state, uniqueid, mbtype, partition, acl, options, uidvalidity) VALUES (?, 0, ?, ?, ?, ?, ?, ?)`,
          )
          .run(name, m.uniqueid, type, partition, m.acl!, optionLetters(m.options), uidvalidity);
        mb = mailboxFromRow(this.q('SELECT * FROM mailbox WHERE id = ?').get(info.lastInsertRowid) as Record<string, unknown>);
      }
      for (const f of m.userflags ?? []) {
        if (typeof f !== 'string' || !ATOM_RE.test(f) || f.startsWith('\\')) continue;
        const k = asciiLower(f);
        if (!flagKey.has(k) && flagKey.size < 128) {
          flagKey.set(k, f);
          mbFlags.push(f);
        }
      }
      let crcBasic = mb.crcBasic;
      let crcAnnot = mb.crcAnnot;
      const upd = this.q(
        `UPDATE record SET modseq = ?, last_updated = ?, internaldate = ?, sysflags = ?, expunged = ?, userflags = ?,
         thrid = ?, basethrid = ?, savedate = ?, createdmodseq = ?, crc_basic = ?, crc_annot = ? WHERE mailbox_id = ? AND uid = ?`,
      );
      for (const { rec, old } of updates) {
        const [b, a] = ReplicaStore.recordCrcs(rec);
        crcBasic = (crcBasic ^ old.crcBasic ^ b) >>> 0;
        crcAnnot = (crcAnnot ^ old.crcAnnot ^ a) >>> 0;
        upd.run(
          ...ReplicaStore.mutableColumns(rec),
          b,
          a,
          mb.id,
          rec.uid,
        );
        this.setAnnots('record_annot', [mb.id, rec.uid], rec.annots);
      }
      const now = Math.floor(Date.now() / 1000);
      for (const { rec, size, hasBlob } of appends) {
        if (rec.internaldate === 0) rec.internaldate = now;
        const [b, a] = this.insertRecord(mb.id, rec, size, hasBlob);
        crcBasic = (crcBasic ^ b) >>> 0;
        crcAnnot = (crcAnnot ^ a) >>> 0;
      }
      this.setAnnots('mailbox_annot', [mb.id], prepared.annots ?? []);
      const fm = m.foldermodseq && m.foldermodseq !== 0n ? m.foldermodseq : m.highestmodseq;
      const xconv = m.xconvmodseq ?? 0n;
      const newXconv = flags.forceMode ? (xconv !== 0n ? xconv : mb.xconvmodseq) : xconv > mb.xconvmodseq ? xconv : mb.xconvmodseq;
      const racl = m.raclmodseq ?? 0n;
      this.db
        .prepare(
          `UPDATE mailbox SET acl = ?, foldermodseq = ?, userflags = ?, last_uid = ?, recentuid = ?, highestmodseq = ?,
           recenttime = ?, last_appenddate = ?, pop3_last_login = ?, pop3_show_after = ?, createdmodseq = ?, options = ?,
           uidvalidity = ?, xconvmodseq = ?, raclmodseq = ?, crc_basic = ?, crc_annot = ? WHERE id = ?`,
        )
        .run(
          m.acl!,
          toDb64(fm > mb.foldermodseq ? fm : mb.foldermodseq),
          JSON.stringify(mbFlags),
          m.lastUid!,
          m.recentUid!,
          toDb64(m.highestmodseq),
          m.recentTime!,
          m.lastAppenddate!,
          m.pop3LastLogin!,
          m.pop3ShowAfter ?? 0,
          toDb64(m.createdmodseq ?? 0n),
          optionLetters(m.options),
          m.uidvalidity! !== 0 ? m.uidvalidity! : mb.uidvalidity,
          toDb64(newXconv),
          toDb64(racl > mb.raclmodseq ? racl : mb.raclmodseq),
          crcBasic,
          crcAnnot,
          mb.id,
        );
      const owner = mailboxOwner(name, this.names);
      if (owner !== null) {
        if (typeof m.usergroups === 'string') {
          this.q('INSERT OR REPLACE INTO user_groups (userid, groups) VALUES (?, ?)').run(owner, m.usergroups);
        }
        const hw = this.q('SELECT modseq FROM modseq_highwater WHERE userid = ?').get(owner) as { modseq: bigint } | undefined;
        if (!hw || fromDb64(hw.modseq) < m.highestmodseq) {
          this.q('INSERT OR REPLACE INTO modseq_highwater (userid, modseq) VALUES (?, ?)').run(owner, toDb64(m.highestmodseq));
        }
      }
      // Step 11 (after the commit): compare with what the master computed.
      const computed = { basic: crcBasic, annot: (crcAnnot ^ ANNOT_CRC_INIT) >>> 0 };
      if (!crcMatch({ basic: m.syncCrc ?? 0, annot: m.syncCrcAnnot ?? 0 }, computed)) {
        this.log?.info({ mailbox: name, computed, sent: { basic: m.syncCrc ?? 0, annot: m.syncCrcAnnot ?? 0 } }, 'CRC differs after applying');
        checksumAfter = new CommandError(
          'IMAP_SYNC_CHECKSUM',
          `${name}: CRCs after applying are ${computed.basic}/${computed.annot}, the master sent ${m.syncCrc ?? 0}/${m.syncCrcAnnot ?? 0}`,
        );
      }
    });
    if (checksumAfter) throw checksumAfter as CommandError;
  }

  // ------------------------------------------------------------------ other APPLYs

  applyUnmailbox(name: string): void {
    validateMailboxName(name);
    this.tx(() => {
      const e = this.mailboxByName(name);
      if (!e) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No mailbox ${name}`);
      if (e.state === TOMBSTONE) return;
      if (e.state === PLACEHOLDER) {
        if (parseMailboxName(name, this.names).deleted) this.deleteEntry(e.id);
        else this.tombstone(e, e.foldermodseq);
        return;
      }
      this.removeLive(e);
    });
  }

  applyRename(oldname: string, newname: string, partitionIn: string): void {
    if (typeof oldname !== 'string' || typeof newname !== 'string' || typeof partitionIn !== 'string') {
      throw bad('APPLY RENAME needs OLDMBOXNAME, NEWMBOXNAME and PARTITION');
    }
    validateMailboxName(oldname, 'old mailbox name');
    validateMailboxName(newname, 'new mailbox name');
    const partition = validatePartition(partitionIn);
    this.tx(() => {
      const e = this.mailboxByName(oldname);
      if (!e || e.state === TOMBSTONE) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No mailbox ${oldname}`);
      if (oldname === newname) {
        if (e.state === PLACEHOLDER) return;
        if (e.partition === partition) throw generic(`${oldname} is already on partition ${partition}`);
        this.q('UPDATE mailbox SET partition = ? WHERE id = ?').run(partition, e.id);
        return;
      }
      const po = parseMailboxName(oldname, this.names);
      if (po.isInbox) {
        const pn = parseMailboxName(newname, this.names);
        const toOtherInbox = pn.isInbox && pn.userid !== po.userid;
        if (!pn.deleted && !(toOtherInbox && this.allowUserMoves)) {
          throw new CommandError('IMAP_MAILBOX_NOTSUPPORTED', `Renaming the INBOX ${oldname} to ${newname} is not supported`);
        }
      }
      const target = this.mailboxByName(newname);
      if (target && target.state === LIVE) {
        throw new CommandError('IMAP_MAILBOX_EXISTS', `Cannot rename ${oldname}: ${newname} already exists`);
      }
      if (target) this.deleteEntry(target.id);
      const fm = e.state === LIVE && e.highestmodseq > e.foldermodseq ? e.highestmodseq : e.foldermodseq;
      this.db
        .prepare('UPDATE mailbox SET name = ?, foldermodseq = ?, partition = CASE WHEN state = 0 THEN ? ELSE partition END WHERE id = ?')
        .run(newname, toDb64(fm), partition, e.id);
      this.db
        .prepare('INSERT INTO mailbox (name, state, uniqueid, mbtype, uidvalidity, createdmodseq, foldermodseq) VALUES (?, 2, ?, ?, ?, ?, ?)')
        .run(oldname, e.uniqueid, e.mbtype, e.uidvalidity, toDb64(e.createdmodseq), toDb64(fm));
    });
  }

  applyExpunge(name: string, uniqueid: string, uids: number[]): void {
    if (typeof name !== 'string' || typeof uniqueid !== 'string' || !Array.isArray(uids) || !uids.every(isU32)) {
      throw bad('APPLY EXPUNGE needs MBOXNAME, UNIQUEID and a UID list');
    }
    validateMailboxName(name);
    this.tx(() => {
      const mb = this.mailboxByName(name);
      if (!mb || mb.state !== LIVE) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No mailbox ${name}`);
      if (mb.uniqueid !== uniqueid) throw new CommandError('IMAP_MAILBOX_MOVED', `${name} has uniqueid ${mb.uniqueid}, not ${uniqueid}`);
      let crcBasic = mb.crcBasic;
      let crcAnnot = mb.crcAnnot;
      const get = this.q('SELECT crc_basic, crc_annot, expunged FROM record WHERE mailbox_id = ? AND uid = ?');
      const set = this.q('UPDATE record SET expunged = 1, crc_basic = 0, crc_annot = 0 WHERE mailbox_id = ? AND uid = ?');
      for (const uid of uids) {
        const r = get.get(mb.id, uid) as { crc_basic: bigint; crc_annot: bigint; expunged: bigint } | undefined;
        if (!r || num(r.expunged)) continue;
        crcBasic = (crcBasic ^ num(r.crc_basic)) >>> 0;
        crcAnnot = (crcAnnot ^ num(r.crc_annot)) >>> 0;
        set.run(mb.id, uid);
      }
      this.q('UPDATE mailbox SET crc_basic = ?, crc_annot = ? WHERE id = ?').run(crcBasic, crcAnnot, mb.id);
    });
  }

  private static validQuotaRoot(root: string): void {
    // eslint-disable-next-line no-control-regex -- a quota root holds no control octets
    if (root.length === 0 || root.startsWith('.') || /[/*%?]/.test(root) || /[\x00-\x1f\x7f]/.test(root) || root.length > 490) {
      throw new CommandError('IMAP_MAILBOX_BADNAME', `Invalid quota root ${JSON.stringify(root.slice(0, 60))}`);
    }
  }

  private nextModseq(): bigint {
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

  applyQuota(q: QuotaIn): void {
    if (!q || typeof q.root !== 'string') throw bad('APPLY QUOTA needs ROOT');
    ReplicaStore.validQuotaRoot(q.root);
    const limits = q.limits ?? {};
    const pick = (...keys: string[]): number | null => {
      for (const k of keys) {
        const v = limits[k];
        if (typeof v === 'number' && Number.isFinite(v)) return v < 0 || v >= 4294967295 ? null : Math.floor(v);
      }
      return null;
    };
    const want = {
      storage: pick('STORAGE', 'LIMIT'),
      message: pick('MESSAGE'),
      annot: pick('ANNOTATION-STORAGE', 'X-ANNOTATION-STORAGE'),
      folders: pick('MAILBOX', 'X-NUM-FOLDERS'),
    };
    this.tx(() => {
      const cur = this.q('SELECT * FROM quota WHERE root = ?').get(q.root) as Record<string, unknown> | undefined;
      const same = (a: unknown, b: number | null): boolean => (a === null || a === undefined ? b === null : num(a) === b);
      if (
        cur &&
        same(cur.storage, want.storage) &&
        same(cur.message, want.message) &&
        same(cur.annot_storage, want.annot) &&
        same(cur.num_folders, want.folders)
      ) {
        return;
      }
      const modseq = q.modseq && q.modseq !== 0n ? q.modseq : this.nextModseq();
      this.db
        .prepare('INSERT OR REPLACE INTO quota (root, storage, message, annot_storage, num_folders, modseq) VALUES (?, ?, ?, ?, ?, ?)')
        .run(q.root, want.storage, want.message, want.annot, want.folders, toDb64(modseq));
    });
  }

  applyUnquota(root: string): void {
    if (typeof root !== 'string') throw bad('APPLY UNQUOTA needs a root');
    ReplicaStore.validQuotaRoot(root);
    this.tx(() => {
      this.q('DELETE FROM quota WHERE root = ?').run(root);
    });
  }

  applySub(userid: string, mboxname: string, sub: boolean): void {
    if (typeof userid !== 'string' || typeof mboxname !== 'string') throw bad('USERID and MBOXNAME are required');
    validateUserid(userid);
    validateMailboxName(mboxname);
    this.tx(() => {
      if (sub) this.q('INSERT OR IGNORE INTO subscription (userid, mboxname) VALUES (?, ?)').run(userid, mboxname);
      else this.q('DELETE FROM subscription WHERE userid = ? AND mboxname = ?').run(userid, mboxname);
    });
  }

  applySeen(s: SeenIn): void {
    if (
      !s ||
      typeof s.userid !== 'string' ||
      typeof s.uniqueid !== 'string' ||
      !Number.isSafeInteger(s.lastread) ||
      !isU32(s.lastuid) ||
      !Number.isSafeInteger(s.lastchange) ||
      typeof s.seenuids !== 'string'
    ) {
      throw bad('APPLY SEEN needs USERID, UNIQUEID, LASTREAD, LASTUID, LASTCHANGE and SEENUIDS');
    }
    validateUserid(s.userid);
    if (s.uniqueid.length === 0 || s.uniqueid.length > 256) throw bad('Invalid UNIQUEID');
    this.tx(() => {
      this.db
        .prepare('INSERT OR REPLACE INTO seen (userid, uniqueid, lastread, lastuid, lastchange, seenuids) VALUES (?, ?, ?, ?, ?, ?)')
        .run(s.userid, s.uniqueid, s.lastread, s.lastuid, s.lastchange, s.seenuids);
    });
  }

  async applyAnnotation(name: string, entry: string, userid: string, value: BinaryValue | null): Promise<void> {
    if (typeof name !== 'string' || typeof entry !== 'string' || typeof userid !== 'string') {
      throw bad('MBOXNAME, ENTRY and USERID are required');
    }
    // eslint-disable-next-line no-control-regex -- an annotation entry holds no control octets
    if (entry.length === 0 || entry.length > 1024 || /[\x00-\x1f]/.test(entry)) throw bad('Invalid ENTRY');
    const v = value === null ? Buffer.alloc(0) : await this.binary(value, `annotation ${entry}`);
    if (name !== '') validateMailboxName(name);
    this.tx(() => {
      if (name === '') {
        if (v.length === 0) this.q('DELETE FROM server_annot WHERE entry = ? AND userid = ?').run(entry, userid);
        else this.q('INSERT OR REPLACE INTO server_annot (entry, userid, value) VALUES (?, ?, ?)').run(entry, userid, v);
        return;
      }
      const mb = this.mailboxByName(name);
      if (!mb || mb.state !== LIVE) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No mailbox ${name}`);
      if (v.length === 0) {
        this.q('DELETE FROM mailbox_annot WHERE mailbox_id = ? AND entry = ? AND userid = ?').run(mb.id, entry, userid);
      } else {
        this.db
          .prepare('INSERT OR REPLACE INTO mailbox_annot (mailbox_id, entry, userid, value, modseq) VALUES (?, ?, ?, ?, 0)')
          .run(mb.id, entry, userid, v);
      }
    });
  }

  async applySieve(userid: string, filename: string, lastUpdate: number, content: BinaryValue): Promise<void> {
    if (typeof userid !== 'string' || typeof filename !== 'string' || !Number.isSafeInteger(lastUpdate) || !content) {
      throw bad('APPLY SIEVE needs USERID, FILENAME, LAST_UPDATE and CONTENT');
    }
    validateUserid(userid);
    validateFilename(filename);
    const bytes = await this.binary(content, `sieve script ${filename}`);
    if (!filename.endsWith('.script')) return;
    const name = filename.slice(0, -7);
    const guid = createHash('sha1').update(bytes).digest('hex');
    this.tx(() => {
      this.db
        .prepare('INSERT OR REPLACE INTO sieve (userid, name, content, last_update, guid) VALUES (?, ?, ?, ?, ?)')
        .run(userid, name, bytes, lastUpdate, guid);
    });
  }

  applyUnsieve(userid: string, filename: string): void {
    if (typeof userid !== 'string' || typeof filename !== 'string') throw bad('USERID and FILENAME are required');
    validateUserid(userid);
    validateFilename(filename);
    this.tx(() => {
      const active = this.q('SELECT name FROM sieve_active WHERE userid = ?').get(userid) as { name: string } | undefined;
      if (filename.endsWith('.script')) {
        const name = filename.slice(0, -7);
        const r = this.q('DELETE FROM sieve WHERE userid = ? AND name = ?').run(userid, name);
        if (r.changes === 0) throw generic(`No sieve script ${filename} for ${userid}`);
        if (active?.name === name) this.q('DELETE FROM sieve_active WHERE userid = ?').run(userid);
      } else if (filename.endsWith('.bc')) {
        if (active?.name === filename.slice(0, -3)) this.q('DELETE FROM sieve_active WHERE userid = ?').run(userid);
      }
    });
  }

  applyActivateSieve(userid: string, filename: string): void {
    if (typeof userid !== 'string' || typeof filename !== 'string') throw bad('USERID and FILENAME are required');
    validateUserid(userid);
    validateFilename(filename);
    const name = filename.endsWith('.bc') ? filename.slice(0, -3) : filename.endsWith('.script') ? filename.slice(0, -7) : filename;
    this.tx(() => {
      if (!this.q('SELECT 1 FROM sieve WHERE userid = ? AND name = ?').get(userid, name)) {
        throw generic(`No sieve script ${name} for ${userid}`);
      }
      this.q('INSERT OR REPLACE INTO sieve_active (userid, name) VALUES (?, ?)').run(userid, name);
    });
  }

  applyUnactivateSieve(userid: string): void {
    if (typeof userid !== 'string') throw bad('USERID is required');
    validateUserid(userid);
    this.tx(() => {
      this.q('DELETE FROM sieve_active WHERE userid = ?').run(userid);
    });
  }

  applyUnuser(userid: string): void {
    if (typeof userid !== 'string') throw bad('APPLY UNUSER needs a userid');
    if (userid === '') return;
    validateUserid(userid);
    const inbox = useridToInbox(userid, this.names);
    this.tx(() => {
      const inboxEntry = this.mailboxByName(inbox);
      const hadInbox = !!inboxEntry && inboxEntry.state !== TOMBSTONE;
      this.q('DELETE FROM subscription WHERE userid = ?').run(userid);
      // Deepest first, so a parent never turns into a placeholder because of a child removed in the same step.
      const lives = (
        this.db
          .prepare('SELECT * FROM mailbox WHERE state = 0 AND (name = ? OR (name >= ? AND name < ?))')
          .all(inbox, ...prefixRange(`${inbox}.`)) as Record<string, unknown>[]
      )
        .map(mailboxFromRow)
        .sort((a, b) => b.name.length - a.name.length);
      for (const mb of lives) this.removeLive(mb);
      if (hadInbox) {
        this.q('DELETE FROM seen WHERE userid = ?').run(userid);
        this.q('DELETE FROM sieve WHERE userid = ?').run(userid);
        this.q('DELETE FROM sieve_active WHERE userid = ?').run(userid);
        this.q('DELETE FROM user_groups WHERE userid = ?').run(userid);
      }
      this.q('DELETE FROM quota WHERE root = ? OR (root >= ? AND root < ?)').run(inbox, ...prefixRange(`${inbox}.`));
    });
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
      const c = ReplicaStore.crcRecord(
        { ...r, expunged: r.expunged },
        this.recordAnnots(mb.id, r.uid),
      );
      basic ^= recordBasicCrc(c);
      annot ^= recordAnnotCrc(c);
    }
    return { basic: basic >>> 0, annot: annot >>> 0 };
  }
}
