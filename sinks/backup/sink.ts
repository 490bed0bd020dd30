/**
 * The backup store (backupd semantics, backup-format §4-§6, §9): one open
 * backup per owner and session, each a locked data file with its index and
 * one chunk in progress.
 *
 * Chunk lifecycle (§5.8): opening a backup takes the data-file lock without
 * waiting, verifies the last chunk (quick level), cuts off anything after
 * it (a chunk torn by a crash: its index transaction never committed),
 * starts a gzip member at the end of the file and inserts the chunk row in a
 * new transaction. Records are appended (full flush after each) and indexed
 * in that transaction. Closing finishes the member, fsyncs the data file and
 * only then commits, so a committed chunk row always describes bytes that are
 * on disk, and anything on disk past the last committed chunk is torn.
 *
 * Invariants:
 * - the lock's descriptor is the only descriptor this process holds on a
 *   data file (fcntl locks vanish when any descriptor of the file closes):
 *   every read and write goes through it;
 * - the index is opened only while the lock is held;
 * - a record whose bytes could not all be written poisons the member: the
 *   chunk is abandoned (rolled back, file truncated to the chunk's offset);
 * - record timestamps never go backwards, within a chunk or across chunks.
 */
import { createHash, type Hash } from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type { DlistItem } from '../../transforms/dlist-types.js';
import { CommandError, CyrsyncError } from '../../transforms/errors.js';
import { encodeLineParts, type BodyPart } from '../../transforms/serializer.js';
import { RECORD_MODE, IndexWriter, type StoredApply } from './apply.js';
import { lockExclusive, type FileLock } from './lock.js';
import { indexPathOf } from './paths.js';

export const CHUNK_HEADER = Buffer.from('# cyrus backup: chunk start\r\n', 'latin1');
export const EMPTY_SHA1 = 'da39a3ee5e6b4b0d3255bfef95601890afd80709';
/** A backup unused for longer than this is released when the next command arrives (§5.8). */
export const IDLE_RELEASE_MS = 300_000;

const READ_SIZE = 256 * 1024;

// ---------------------------------------------------------------------------
// Index database (§6.1, §6.2)

const SCHEMA = [
  'CREATE TABLE chunk( id INTEGER PRIMARY KEY ASC, ts_start INTEGER, ts_end INTEGER, offset INTEGER unique, length INTEGER, file_sha1 TEXT, data_sha1 TEXT );',
  'CREATE TABLE message( id INTEGER PRIMARY KEY ASC, guid CHAR UNIQUE NOT NULL, partition CHAR, chunk_id INTEGER REFERENCES chunk(id), offset INTEGER, size INTEGER );',
  'CREATE INDEX IF NOT EXISTS idx_msg_guid ON message(guid);',
  'CREATE TABLE mailbox( id INTEGER PRIMARY KEY ASC, last_chunk_id INTEGER NOT NULL REFERENCES chunk(id), uniqueid CHAR UNIQUE NOT NULL, mboxname CHAR NOT NULL, mboxtype CHAR, last_uid INTEGER, highestmodseq INTEGER, recentuid INTEGER, recenttime INTEGER, last_appenddate INTEGER, pop3_last_login INTEGER, pop3_show_after INTEGER, uidvalidity INTEGER, partition CHAR, acl CHAR, options CHAR, sync_crc INTEGER, sync_crc_annot INTEGER, quotaroot CHAR, xconvmodseq INTEGER, annotations CHAR, deleted INTEGER );',
  'CREATE INDEX IF NOT EXISTS idx_bmb_uid ON mailbox(uniqueid);',
  'CREATE TABLE mailbox_message( id INTEGER PRIMARY KEY ASC, mailbox_id INTEGER NOT NULL REFERENCES mailbox(id), message_id INTEGER NOT NULL REFERENCES message(id), last_chunk_id INTEGER NOT NULL REFERENCES chunk(id), uid INTEGER NOT NULL, modseq INTEGER, last_updated INTEGER, flags CHAR, internaldate INTEGER, annotations CHAR, expunged INTEGER, UNIQUE (mailbox_id, message_id) );',
  'CREATE INDEX IF NOT EXISTS idx_mbr_uid ON mailbox_message(uid);',
];
const SCHEMA_V2 = [
  'CREATE TABLE subscription( id INTEGER PRIMARY KEY ASC, last_chunk_id INTEGER NOT NULL REFERENCES chunk(id), mboxname CHAR UNIQUE NOT NULL, unsubscribed INTEGER );',
  'CREATE INDEX IF NOT EXISTS idx_sub_mbx ON subscription(mboxname);',
];
const SCHEMA_V3 = [
  'CREATE TABLE seen( id INTEGER PRIMARY KEY ASC, last_chunk_id INTEGER NOT NULL REFERENCES chunk(id), uniqueid CHAR UNIQUE NOT NULL, lastread INTEGER, lastuid INTEGER, lastchange INTEGER, seenuids CHAR );',
  'CREATE INDEX IF NOT EXISTS idx_seen_unq ON seen(uniqueid);',
];
const SCHEMA_V4 = [
  'CREATE TABLE sieve( id INTEGER PRIMARY KEY ASC, chunk_id INTEGER NOT NULL REFERENCES chunk(id), last_update INTEGER, filename CHAR NOT NULL, guid CHAR NOT NULL, offset INTEGER, deleted INTEGER );',
  'CREATE INDEX IF NOT EXISTS idx_siv_fn ON sieve(filename);',
];

/**
 * Opens (creating when new) the index of a locked data file. A non-empty
 * data file without an index needs a reindex: an empty index would claim
 * the backup holds nothing.
 */
export function openIndex(dataPath: string, dataSize: number): Database.Database {
  const p = indexPathOf(dataPath);
  let indexSize = -1;
  try {
    indexSize = fs.statSync(p).size;
  } catch {
    indexSize = -1;
  }
  if (dataSize > 0 && indexSize <= 0) {
    throw new CyrsyncError('IMAP_IOERROR', `${p} is missing or empty while ${dataPath} holds data: reindex needed (ctl_backups reindex)`);
  }
  const db = new Database(p, { timeout: 20000 });
  try {
    db.pragma('foreign_keys = ON');
    db.pragma('secure_delete = OFF');
    db.pragma('temp_store = 2');
    const v = db.pragma('user_version', { simple: true }) as number;
    if (v === 0) {
      db.transaction(() => {
        for (const sql of [...SCHEMA, ...SCHEMA_V2, ...SCHEMA_V3, ...SCHEMA_V4]) db.exec(sql);
        db.pragma('user_version = 3');
      })();
    } else if (v === 1 || v === 2) {
      db.transaction(() => {
        if (v < 2) for (const sql of SCHEMA_V2) db.exec(sql);
        for (const sql of [...SCHEMA_V3, ...SCHEMA_V4]) db.exec(sql);
        db.pragma('user_version = 4');
      })();
    } else if (v !== 3 && v !== 4) {
      throw new CyrsyncError('IMAP_IOERROR', `${p} has index version ${v}; versions 1 to 4 are known`);
    }
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Data file reading through the lock's descriptor

function readAt(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((res, rej) => fs.read(fd, buf, 0, buf.length, pos, (err, n) => (err ? rej(err) : res(n))));
}

/** Feeds octets [from, to) of the file to `hash`. */
async function hashRange(fd: number, hash: Hash, from: number, to: number): Promise<void> {
  const buf = Buffer.allocUnsafe(READ_SIZE);
  let pos = from;
  while (pos < to) {
    const n = await readAt(fd, buf.subarray(0, Math.min(READ_SIZE, to - pos)), pos);
    if (n === 0) throw new CyrsyncError('IMAP_IOERROR', `data file ended at ${pos} while ${to} octets were expected`);
    hash.update(buf.subarray(0, n));
    pos += n;
  }
}

export interface MemberInfo {
  /** offset just past the member's trailer */
  end: number;
  /** inflated length */
  length: number;
  /** SHA-1 of the inflated octets */
  sha1: string;
}

/**
 * Inflates the gzip member at `offset` (RFC 1952 header, raw deflate, 8-octet
 * trailer), streaming, and returns where it ends and what it holds. Null when
 * there is no complete, valid member there.
 */
export async function readMember(fd: number, offset: number, size: number, onData?: (b: Buffer) => void): Promise<MemberInfo | null> {
  const head = Buffer.alloc(Math.min(64 * 1024, Math.max(0, size - offset)));
  const got = head.length > 0 ? await readAt(fd, head, offset) : 0;
  const h = head.subarray(0, got);
  if (h.length < 18 || h[0] !== 0x1f || h[1] !== 0x8b || h[2] !== 8) return null;
  const flg = h[3]!;
  let p = 10;
  if (flg & 4) {
    if (p + 2 > h.length) return null;
    p += 2 + h.readUInt16LE(p);
  }
  if (flg & 8) {
    while (p < h.length && h[p] !== 0) p++;
    p++;
  }
  if (flg & 16) {
    while (p < h.length && h[p] !== 0) p++;
    p++;
  }
  if (flg & 2) p += 2;
  if (p >= h.length) return null;
  const start = offset + p;
  const hash = createHash('sha1');
  let length = 0;
  const inf = zlib.createInflateRaw();
  let ended = false;
  let failed = false;
  inf.on('data', (d: Buffer) => {
    length += d.length;
    hash.update(d);
    onData?.(d);
  });
  const done = new Promise<void>((res) => {
    inf.once('end', () => {
      ended = true;
      res();
    });
    inf.once('error', () => {
      failed = true;
      res();
    });
  });
  const buf = Buffer.allocUnsafe(READ_SIZE);
  let pos = start;
  while (!ended && !failed && pos < size) {
    const n = await readAt(fd, buf.subarray(0, Math.min(READ_SIZE, size - pos)), pos);
    if (n === 0) break;
    pos += n;
    if (!inf.write(Buffer.from(buf.subarray(0, n)))) {
      await Promise.race([once(inf, 'drain'), done]);
    }
  }
  if (!ended && !failed) inf.end();
  await done;
  if (failed || !ended) return null;
  const end = start + inf.bytesWritten + 8;
  if (end > size) return null;
  const trailer = Buffer.alloc(8);
  await readAt(fd, trailer, end - 8);
  if (trailer.readUInt32LE(4) !== length % 2 ** 32) return null;
  return { end, length, sha1: hash.digest('hex') };
}

interface ChunkRow {
  id: number;
  ts_start: number | null;
  ts_end: number | null;
  offset: number;
  length: number | null;
  file_sha1: string | null;
  data_sha1: string | null;
}

function verificationFailed(path: string, why: string): CyrsyncError {
  return new CyrsyncError('IMAP_IOERROR', `backup ${path} failed verification: ${why}`);
}

/**
 * Quick verification (§7.1 level 1) of the last chunk, and recovery of a
 * torn tail: anything after the last committed chunk is cut off. Returns
 * the end of the good data and the SHA-1 of the file up to there.
 */
async function verifyAndTrim(lock: FileLock, db: Database.Database, log: Logger | undefined): Promise<{ end: number; fileSha1: string; last: ChunkRow | null }> {
  const fd = lock.fd;
  const size = fs.fstatSync(fd).size;
  const last = db.prepare('SELECT * FROM chunk ORDER BY id DESC LIMIT 1').get() as ChunkRow | undefined;
  const hash = createHash('sha1');
  if (!last) {
    if (size > 0) {
      log?.warn({ path: lock.path, size }, 'data file holds no committed chunk: cutting the torn chunk off');
      fs.ftruncateSync(fd, 0);
      fs.fsyncSync(fd);
    }
    return { end: 0, fileSha1: EMPTY_SHA1, last: null };
  }
  if (last.offset > size) throw verificationFailed(lock.path, `last chunk starts at ${last.offset}, the file has ${size} octets`);
  await hashRange(fd, hash, 0, last.offset);
  if (hash.copy().digest('hex') !== last.file_sha1) throw verificationFailed(lock.path, `file checksum before chunk ${last.id} differs`);
  const m = await readMember(fd, last.offset, size);
  if (!m) throw verificationFailed(lock.path, `chunk ${last.id} at ${last.offset} is not a complete gzip member`);
  if (m.length !== last.length || m.sha1 !== last.data_sha1) {
    throw verificationFailed(lock.path, `chunk ${last.id} length or data checksum differs`);
  }
  await hashRange(fd, hash, last.offset, m.end);
  if (size > m.end) {
    log?.warn({ path: lock.path, end: m.end, size }, 'data after the last committed chunk: cutting the torn chunk off');
    fs.ftruncateSync(fd, m.end);
    fs.fsyncSync(fd);
  }
  return { end: m.end, fileSha1: hash.digest('hex'), last };
}

// ---------------------------------------------------------------------------
// Chunk writer: one gzip member appended through the lock's descriptor

/**
 * Appends to a descriptor (opened O_APPEND) without ever closing it; `idle()`
 * resolves once no write is in flight, so the descriptor may be truncated or
 * closed without a late write landing after that.
 */
class FdSink extends Writable {
  private inflight = 0;
  private waiters: (() => void)[] = [];

  constructor(private readonly fd: number) {
    super({ highWaterMark: 256 * 1024 });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.inflight++;
    const put = (b: Buffer): void => {
      fs.write(this.fd, b, 0, b.length, null, (err, n) => {
        if (!err && n < b.length) {
          put(b.subarray(n));
          return;
        }
        this.inflight--;
        if (this.inflight === 0) for (const w of this.waiters.splice(0)) w();
        cb(err);
      });
    };
    put(chunk);
  }

  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((res) => this.waiters.push(res));
  }
}

class ChunkWriter {
  length = 0;
  private readonly hash = createHash('sha1');
  private readonly gz = zlib.createGzip({ level: 6 });
  private readonly ws: FdSink;
  private error: Error | null = null;
  private readonly failed: Promise<never>;

  constructor(fd: number) {
    this.ws = new FdSink(fd);
    let reject!: (e: Error) => void;
    this.failed = new Promise<never>((_, rej) => {
      reject = rej;
    });
    this.failed.catch(() => {});
    const fail = (e: Error): void => {
      if (this.error) return;
      this.error = e;
      reject(e);
    };
    this.ws.on('error', fail);
    this.gz.on('error', fail);
    this.gz.pipe(this.ws);
  }

  private check(): void {
    if (this.error) throw this.error;
  }

  async write(b: Buffer): Promise<void> {
    this.check();
    if (b.length === 0) return;
    this.length += b.length;
    this.hash.update(b);
    if (!this.gz.write(b)) await Promise.race([once(this.gz, 'drain'), this.failed]);
  }

  /** Full flush: everything written so far is decodable from the file. */
  async flush(): Promise<void> {
    this.check();
    await Promise.race([new Promise<void>((res) => this.gz.flush(zlib.constants.Z_FULL_FLUSH, () => res())), this.failed]);
  }

  /** Finishes the member; resolves once every octet reached the descriptor. */
  async finish(): Promise<{ length: number; sha1: string }> {
    this.check();
    this.gz.end();
    await Promise.race([finished(this.ws), this.failed]);
    this.check();
    return { length: this.length, sha1: this.hash.digest('hex') };
  }

  /** Stops writing; resolves once no write is in flight any more. */
  async destroy(): Promise<void> {
    this.gz.unpipe(this.ws);
    this.gz.destroy();
    this.ws.destroy();
    await this.ws.idle();
  }
}

/** Streams one body from its source into the chunk, checking size and SHA-1 on the way. */
async function copyBody(w: ChunkWriter, b: BodyPart): Promise<void> {
  const expect = b.kind === 'file' ? b.guid.toLowerCase() : b.sha1.toLowerCase();
  if (!b.source) throw new CyrsyncError('IMAP_IOERROR', `body ${expect} has no staged source`);
  const src = b.source();
  const h = createHash('sha1');
  let n = 0;
  try {
    for await (const raw of src) {
      const c = raw as Buffer;
      n += c.length;
      if (n > b.size) throw new CyrsyncError('IMAP_IOERROR', `staged body ${expect} is longer than ${b.size} octets`);
      h.update(c);
      await w.write(c);
    }
  } finally {
    src.destroy();
  }
  if (n !== b.size || h.digest('hex') !== expect) {
    throw new CyrsyncError('IMAP_IOERROR', `staged body ${expect} changed on disk before it was copied`);
  }
}

// ---------------------------------------------------------------------------
// An open backup: lock + index + the chunk in progress

export class OpenBackup {
  lastUsed = Date.now();
  private closed = false;
  private lastTs: number;
  readonly index: IndexWriter;

  private constructor(
    readonly owner: string,
    readonly path: string,
    private readonly lock: FileLock,
    readonly db: Database.Database,
    private readonly chunkId: number,
    private readonly chunkOffset: number,
    private readonly writer: ChunkWriter,
    tsStart: number,
    private readonly log: Logger | undefined,
  ) {
    this.lastTs = tsStart;
    this.index = new IndexWriter(db);
  }

  /**
   * Locks (never waiting), verifies, trims a torn tail and starts a chunk.
   * Rejects with IMAP_MAILBOX_LOCKED when another process or session holds
   * the backup.
   */
  static async open(owner: string, path: string, log: Logger | undefined): Promise<OpenBackup> {
    const lock = await lockExclusive(path, { wait: false, create: true, append: true, mode: 0o600 });
    if (lock === null) throw new CommandError('IMAP_MAILBOX_LOCKED', `The backup of ${owner} is locked by another process`);
    let db: Database.Database | null = null;
    let inTxn = false;
    try {
      db = openIndex(path, lock.size());
      const { end, fileSha1, last } = await verifyAndTrim(lock, db, log);
      const now = Math.floor(Date.now() / 1000);
      const tsStart = Math.max(now, last?.ts_start ?? 0, last?.ts_end ?? 0);
      db.exec('BEGIN');
      inTxn = true;
      const r = db.prepare('INSERT INTO chunk (ts_start, offset, file_sha1) VALUES (?, ?, ?)').run(tsStart, end, fileSha1);
      const writer = new ChunkWriter(lock.fd);
      const b = new OpenBackup(owner, path, lock, db, Number(r.lastInsertRowid), end, writer, tsStart, log);
      await writer.write(CHUNK_HEADER);
      await writer.flush();
      return b;
    } catch (err) {
      if (db) {
        if (inTxn) {
          try {
            db.exec('ROLLBACK');
          } catch {
            /* nothing to roll back */
          }
        }
        db.close();
      }
      lock.release();
      throw err;
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private nextTs(): number {
    const now = Math.floor(Date.now() / 1000);
    if (now > this.lastTs) this.lastTs = now;
    return this.lastTs;
  }

  /**
   * Appends one record and indexes it. A failure while writing abandons the
   * chunk (and rejects); a failure of the index update leaves the record in
   * the file and rejects with the index error (§5.8).
   */
  async append(item: DlistItem, cmd: StoredApply): Promise<void> {
    if (this.closed) throw new CyrsyncError('IMAP_IOERROR', `backup of ${this.owner} is closed`);
    this.lastUsed = Date.now();
    const ts = this.nextTs();
    // Every part is built before the first octet is written: a value that
    // cannot be serialized refuses the command with nothing written.
    const parts = encodeLineParts(`${ts} APPLY `, item, RECORD_MODE);
    const offset = this.writer.length;
    try {
      for (const p of parts) {
        if (Buffer.isBuffer(p)) await this.writer.write(p);
        else await copyBody(this.writer, p);
      }
      await this.writer.flush();
    } catch (err) {
      this.log?.error({ err, owner: this.owner, path: this.path }, 'writing a record failed: abandoning the chunk');
      await this.abandon();
      throw err instanceof CyrsyncError ? err : new CyrsyncError('IMAP_IOERROR', `writing to ${this.path} failed: ${(err as Error).message}`, { cause: err });
    }
    this.index.index(cmd, { ts, chunkId: this.chunkId, offset });
  }

  /** Ends the chunk: finish the member, fsync, set the chunk row, commit, unlock. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      const { length, sha1 } = await this.writer.finish();
      await new Promise<void>((res, rej) => fs.fsync(this.lock.fd, (e) => (e ? rej(e) : res())));
      const tsEnd = Math.max(Math.floor(Date.now() / 1000), this.lastTs);
      this.db.prepare('UPDATE chunk SET ts_end = ?, length = ?, data_sha1 = ? WHERE id = ?').run(tsEnd, length, sha1, this.chunkId);
      this.db.exec('COMMIT');
    } catch (err) {
      this.log?.error({ err, owner: this.owner, path: this.path }, 'ending the chunk failed: abandoning it');
      await this.abandon();
      throw err;
    }
    this.closed = true;
    this.db.close();
    this.lock.release();
  }

  /** Drops the chunk in progress: roll back, cut the file back, unlock. */
  async abandon(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writer.destroy();
    try {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
    } catch (err) {
      this.log?.error({ err, path: this.path }, 'rolling back the index failed');
    }
    try {
      fs.ftruncateSync(this.lock.fd, this.chunkOffset);
    } catch (err) {
      this.log?.error({ err, path: this.path }, 'cutting the abandoned chunk off failed; the next open will');
    }
    try {
      this.db.close();
    } finally {
      this.lock.release();
    }
  }
}
