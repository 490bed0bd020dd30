/**
 * Backup data files (backup-format §5): a concatenation of gzip members, one
 * per chunk, each inflating to the 29-octet header line and then records
 * `<ts> APPLY <dlist>` CRLF.
 *
 * Writing (ChunkWriter): every octet goes through one gzip stream into the
 * locked descriptor (O_APPEND), counted and SHA-1 hashed as it passes, so
 * `length` and `data_sha1` describe exactly what was written; `file_sha1`
 * is computed over the file as it is when the chunk starts. Records are
 * serialized canonically (§5.4) with one deliberate difference: literals
 * that are not file literals are written `{N}`, never `{N+}`. Cyrus 3.6.1
 * as packaged in Debian 12 (its backup readers behave as 3.6.5+) stops at
 * the first `{N+}` non-file literal, so a backup holding one (a `\Drafts`
 * special-use value, say) fails the real `ctl_backups verify`; `{N}` reads
 * in every release. File literal bodies are streamed from their sources,
 * never held whole. Each record is followed by a full flush so a crash
 * leaves decodable data; the member is finished (trailer written) and the
 * file fsynced when the chunk ends.
 *
 * Reading (readMember, readChunkRecords, scanMembers): a member is
 * inflated from its offset with a raw inflater after parsing the gzip
 * header; the inflater stops at the end of the deflate stream and its
 * consumed-octet count locates the 8-octet trailer (CRC32, ISIZE), which
 * is checked. Records are parsed with the project's dlist parser, which
 * reads `{N}`, `{N+}` and file literals; bodies go to an optional BodySink
 * (default: skipped by counting, SHA-1 still computed).
 *
 * Invariant: only the descriptor of the data file's lock is ever used; no
 * second descriptor is opened on a locked data file (closing it would drop
 * the fcntl lock).
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { Writable } from 'node:stream';
import * as zlib from 'node:zlib';
import { CyrsyncError } from '../../transforms/errors.js';
import { DlistParserCore } from '../../transforms/dlist-parser.js';
import { iterateLineParts, resolveMode, streamBody, type SerializeOptions } from '../../transforms/serializer.js';
import type { BodySink, CommandLine, DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import type { Limits } from '../../transforms/limits.js';

/** The chunk header line, exactly 29 octets. */
export const CHUNK_HEADER = Buffer.from('# cyrus backup: chunk start\r\n', 'latin1');
/** SHA-1 of nothing: the file_sha1 of a chunk at offset 0. */
export const EMPTY_SHA1 = 'da39a3ee5e6b4b0d3255bfef95601890afd80709';

/** Canonical dlist output (§5.4) with synchronizing `{N}` literals: see the file comment. */
export const DATAFILE_MODE: SerializeOptions = resolveMode('backup');

const READ_SIZE = 256 * 1024;

function ioError(message: string, cause?: unknown): CyrsyncError {
  return new CyrsyncError('IMAP_IOERROR', message, cause === undefined ? undefined : { cause });
}

// ---------------------------------------------------------------------------
// Positional I/O on the locked descriptor

function preadSync(fd: number, pos: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, b, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got === len ? b : b.subarray(0, got);
}

function pread(fd: number, pos: number, len: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const b = Buffer.allocUnsafe(len);
    fs.read(fd, b, 0, len, pos, (err, n) => (err ? reject(err) : resolve(n === len ? b : b.subarray(0, n))));
  });
}

/** SHA-1 (hex) of octets [0, end) of the file. */
export async function sha1OfPrefix(fd: number, end: number): Promise<string> {
  return (await hashPrefix(fd, end)).copy().digest('hex');
}

/**
 * A running SHA-1 over octets [from, end) added to `h` (a fresh hash over
 * [0, end) by default). The hash stays open, so it can go on past `end`.
 */
export async function hashPrefix(fd: number, end: number, h: Hash = createHash('sha1'), from = 0): Promise<Hash> {
  let pos = from;
  while (pos < end) {
    const b = await pread(fd, pos, Math.min(READ_SIZE, end - pos));
    if (b.length === 0) throw ioError(`data file ended at ${pos}, before ${end}`);
    h.update(b);
    pos += b.length;
  }
  return h;
}

/** A SHA-1 of the data file's first `end` octets that can be carried forward. */
export interface FileHash {
  hash: Hash;
  end: number;
}

/** Writes to a descriptor opened O_APPEND, counting octets; never closes it. */
class FdAppender extends Writable {
  written = 0;
  /** Running SHA-1 of the whole file, fed with every octet appended. */
  fileHash: Hash | null = null;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];
  constructor(private readonly fd: number) {
    super({ highWaterMark: 256 * 1024 });
  }

  /** Resolves once no write is in the kernel's hands (queued ones are dropped by destroy()). */
  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.writeAll(chunk, 0, cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.writeAll(Buffer.concat(chunks.map((c) => c.chunk)), 0, cb);
  }

  private writeAll(b: Buffer, from: number, cb: (err?: Error | null) => void): void {
    this.inflight++;
    fs.write(this.fd, b, from, b.length - from, null, (err, n) => {
      this.inflight--;
      if (this.inflight === 0) for (const w of this.idleWaiters.splice(0)) w();
      if (err) return cb(err);
      this.written += n;
      this.fileHash?.update(b.subarray(from, from + n));
      if (from + n < b.length) this.writeAll(b, from + n, cb);
      else cb();
    });
  }
}

// ---------------------------------------------------------------------------
// Writer

export interface ChunkStart {
  /** Offset of the chunk's gzip member (the file size when it started). */
  offset: number;
  /** SHA-1 of the file before the chunk. */
  fileSha1: string;
  /** The chunk's start time (unix seconds). */
  tsStart: number;
}

export interface ChunkEnd extends ChunkStart {
  tsEnd: number;
  /** Inflated octets: header plus records. */
  length: number;
  dataSha1: string;
  /** Octets of the gzip member. */
  compressedLength: number;
  /** Number of records written. */
  records: number;
}

export interface RecordWritten {
  /** Record timestamp actually written (clamped to be non-decreasing). */
  ts: number;
  /** Offset of the record's first octet within the inflated chunk. */
  offset: number;
  /** Octets of the record line, CRLF included. */
  length: number;
}

export interface ChunkWriterOptions {
  /** gzip level (default zlib's default). */
  level?: number;
  /** Full flush after every record (default true, §5.1). */
  flushEachRecord?: boolean;
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/**
 * Appends chunks to a locked data file. One chunk at a time:
 * `start()`, any number of `append()`, then `end()` (or `abort()`, which
 * cuts the file back to where the chunk began).
 */
export class ChunkWriter {
  private gzip: zlib.Gzip | null = null;
  private out: FdAppender | null = null;
  private hash: Hash | null = null;
  private wrote = 0;
  private records = 0;
  private chunk: ChunkStart | null = null;
  /** Highest timestamp written or allowed as a floor (§5.2 ordering). */
  private lastTs: number;
  private firstTs: number | null = null;
  private failed: Error | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /** SHA-1 of the file so far, so the next chunk's file_sha1 needs no re-read. */
  private fileHash: FileHash | null = null;

  /**
   * `fd`: the data file's lock descriptor (opened O_RDWR|O_APPEND).
   * `tsFloor`: timestamps are clamped to at least this (the previous chunk's
   * ts_end), so chunk start times never go backwards.
   */
  constructor(private readonly fd: number, tsFloor = 0, private readonly opts: ChunkWriterOptions = {}) {
    this.lastTs = tsFloor;
  }

  get active(): boolean {
    return this.chunk !== null;
  }

  /**
   * Hands over a SHA-1 of the file's first `end` octets (computed while the
   * backup was verified), so start() does not read the file again. Used only
   * when `end` is still the file size when the chunk starts.
   */
  seedFileHash(fh: FileHash): void {
    this.fileHash = { hash: fh.hash.copy(), end: fh.end };
  }

  get current(): ChunkStart | null {
    return this.chunk;
  }

  /** Inflated octets written to the current chunk so far. */
  get length(): number {
    return this.wrote;
  }

  /** Begins a chunk at the end of the file: file_sha1, header, full flush. */
  start(ts: number = nowSeconds()): Promise<ChunkStart> {
    return this.serial(async () => {
      if (this.chunk) throw new CyrsyncError('IMAP_INTERNAL', 'a chunk is already being written');
      this.failed = null;
      const offset = fs.fstatSync(this.fd).size;
      let fh = this.fileHash;
      if (fh === null || fh.end > offset) fh = { hash: await hashPrefix(this.fd, offset), end: offset };
      else if (fh.end < offset) fh = { hash: await hashPrefix(this.fd, offset, fh.hash, fh.end), end: offset };
      const fileSha1 = fh.hash.copy().digest('hex');
      this.fileHash = null;
      const tsStart = Math.max(Math.trunc(ts), this.lastTs);
      this.lastTs = tsStart;
      this.firstTs = null;
      this.hash = createHash('sha1');
      this.wrote = 0;
      this.records = 0;
      this.out = new FdAppender(this.fd);
      this.out.fileHash = fh.hash;
      this.out.on('error', (err) => this.fail(err));
      this.gzip = zlib.createGzip(this.opts.level !== undefined ? { level: this.opts.level } : {});
      this.gzip.on('error', (err) => this.fail(err));
      this.gzip.pipe(this.out);
      this.chunk = { offset, fileSha1, tsStart };
      await this.emit(CHUNK_HEADER);
      await this.flush(zlib.constants.Z_FULL_FLUSH);
      this.check();
      return this.chunk;
    });
  }

  /**
   * Appends `<ts> APPLY <KEY value>` CRLF. File literals (and big literals)
   * must carry a `source`; their size and SHA-1 are checked while they
   * stream, and a mismatch fails the chunk (abort() it).
   */
  append(item: DlistItem, ts: number = nowSeconds()): Promise<RecordWritten> {
    return this.serial(async () => {
      this.check();
      let t = Math.trunc(ts);
      if (t < this.lastTs) t = this.lastTs;
      if (this.firstTs === null) this.firstTs = t;
      this.lastTs = t;
      const offset = this.wrote;
      for (const part of iterateLineParts(`${t} APPLY `, item, DATAFILE_MODE)) {
        if (Buffer.isBuffer(part)) await this.emit(part);
        else {
          try {
            await streamBody(part, this.bodyTarget());
          } catch (err) {
            this.check(); // the data file's own error (e.g. ENOSPC) names the cause, not "output closed"
            throw err;
          }
        }
        this.check();
      }
      if (this.opts.flushEachRecord !== false) await this.flush(zlib.constants.Z_FULL_FLUSH);
      this.check();
      this.records++;
      return { ts: t, offset, length: this.wrote - offset };
    });
  }

  /** Finishes the gzip member, fsyncs, and reports the chunk's checksums. */
  end(ts: number = nowSeconds()): Promise<ChunkEnd> {
    return this.serial(async () => {
      this.check();
      const gzip = this.gzip!;
      const out = this.out!;
      await new Promise<void>((resolve, reject) => {
        out.once('finish', resolve);
        out.once('error', reject);
        gzip.once('error', reject);
        gzip.end();
      });
      this.check();
      await new Promise<void>((resolve, reject) => fs.fsync(this.fd, (err) => (err ? reject(ioError(`fsync failed: ${err.message}`, err)) : resolve())));
      const c = this.chunk!;
      if (out.fileHash !== null) this.fileHash = { hash: out.fileHash, end: c.offset + out.written };
      const tsEnd = Math.max(Math.trunc(ts), this.lastTs);
      this.lastTs = Math.max(this.lastTs, tsEnd);
      const result: ChunkEnd = {
        ...c,
        tsEnd,
        length: this.wrote,
        dataSha1: this.hash!.digest('hex'),
        compressedLength: out.written,
        records: this.records,
      };
      this.reset();
      return result;
    });
  }

  /**
   * Gives the chunk up: stops the compressor and truncates the file back to
   * the chunk's offset, so the data file ends with the last complete chunk.
   */
  abort(): Promise<void> {
    const c = this.chunk;
    const gzip = this.gzip;
    const out = this.out;
    this.reset();
    this.fileHash = null;
    const done = (async () => {
      if (gzip) {
        gzip.unpipe();
        gzip.destroy();
      }
      if (out) {
        // Drop queued writes, then let the one in the kernel's hands land
        // before truncating (it would otherwise extend the file again).
        out.destroy();
        await out.idle();
      }
      if (c) {
        fs.ftruncateSync(this.fd, c.offset);
        fs.fsyncSync(this.fd);
      }
    })();
    this.queue = done.catch(() => undefined);
    return done;
  }

  private reset(): void {
    this.chunk = null;
    this.gzip = null;
    this.out = null;
    this.hash = null;
  }

  private fail(err: Error): void {
    this.failed ??= err instanceof CyrsyncError ? err : ioError(`writing the data file failed: ${err.message}`, err);
  }

  private check(): void {
    if (!this.chunk || !this.gzip) throw new CyrsyncError('IMAP_INTERNAL', 'no chunk is being written');
    if (this.failed) throw this.failed;
  }

  /** Runs jobs one after another: records never interleave. */
  private serial<T>(job: () => Promise<T>): Promise<T> {
    const run = this.queue.then(job);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async emit(b: Buffer): Promise<void> {
    this.hash!.update(b);
    this.wrote += b.length;
    if (!this.gzip!.write(b)) await this.waitDrain();
  }

  /**
   * Resolves on `gzip` drain or flush, or as soon as the gzip stream or the
   * file output fails or closes: a failed file write (ENOSPC) unpipes gzip,
   * which then never drains nor finishes a flush, so waiting on gzip alone
   * would hang the command (the caller's check() reports the error).
   */
  private untilGzip(start: (done: () => void) => void, event: 'drain' | null): Promise<void> {
    const gzip = this.gzip!;
    const out = this.out!;
    return new Promise((resolve) => {
      if (this.failed || out.destroyed || gzip.destroyed) return resolve();
      const done = (): void => {
        if (event) gzip.off(event, done);
        for (const s of [gzip, out]) {
          s.off('error', done);
          s.off('close', done);
        }
        resolve();
      };
      if (event) gzip.on(event, done);
      for (const s of [gzip, out]) {
        s.on('error', done);
        s.on('close', done);
      }
      start(done);
    });
  }

  private waitDrain(): Promise<void> {
    return this.untilGzip(() => undefined, 'drain');
  }

  private flush(kind: number): Promise<void> {
    return this.untilGzip((done) => this.gzip!.flush(kind, done), null);
  }

  /** A Writable that hashes, counts and compresses what a body source yields. */
  private bodyTarget(): Writable {
    const w = new Writable({
      highWaterMark: 64 * 1024,
      write: (chunk: Buffer, _enc, cb) => {
        if (this.failed) return cb(this.failed);
        this.emit(chunk).then(() => cb(), cb);
      },
    });
    // streamBody destroys the target with the mismatch and also rejects with
    // it; the chunk is then unusable (its hash has the partial body).
    w.on('error', (err) => this.fail(err));
    return w;
  }
}

// ---------------------------------------------------------------------------
// Reader

export class DataFileError extends CyrsyncError {
  constructor(
    message: string,
    /** Offset of the member (or record) at fault. */
    readonly offset: number,
    /** True when the file simply ends inside the member. */
    readonly truncated: boolean,
  ) {
    super('IMAP_IOERROR', message);
  }
}

/** Length of the gzip header at `offset` (RFC 1952 §2.3), or a DataFileError. */
function gzipHeaderLength(fd: number, offset: number, fileSize: number): number {
  const avail = Math.min(fileSize - offset, 64 * 1024);
  const h = preadSync(fd, offset, avail);
  const trunc = (): never => {
    throw new DataFileError(`gzip member at ${offset}: the file ends inside its header`, offset, true);
  };
  if (h.length < 10) {
    if (h.length === 0 || (h[0] === 0x1f && (h.length < 2 || h[1] === 0x8b))) trunc();
  }
  if (h[0] !== 0x1f || h[1] !== 0x8b || h[2] !== 8) {
    throw new DataFileError(`no gzip member at ${offset}`, offset, false);
  }
  if (h.length < 10) trunc();
  const flg = h[3]!;
  let p = 10;
  if (flg & 4) {
    if (p + 2 > h.length) trunc();
    p += 2 + h.readUInt16LE(p);
  }
  for (const bit of [8, 16]) {
    if (flg & bit) {
      const z = h.indexOf(0, p);
      if (z < 0) trunc();
      p = z + 1;
    }
  }
  if (flg & 2) p += 2;
  if (p > h.length) trunc();
  return p;
}

export interface MemberInfo {
  offset: number;
  /** Offset just after the member's trailer: where the next member starts. */
  end: number;
  /** Inflated octets. */
  length: number;
  /** SHA-1 of the inflated octets. */
  dataSha1: string;
}

/**
 * Inflates the gzip member at `offset`, handing each inflated piece to
 * `onData` (awaited: backpressure). Checks the trailer (CRC32 and ISIZE).
 * Throws DataFileError when the member is broken or cut short.
 */
export async function readMember(
  fd: number,
  offset: number,
  onData?: (chunk: Buffer) => void | Promise<void>,
  fileSize: number = fs.fstatSync(fd).size,
): Promise<MemberInfo> {
  if (offset >= fileSize) throw new DataFileError(`no gzip member at ${offset}: the file ends at ${fileSize}`, offset, true);
  const hlen = gzipHeaderLength(fd, offset, fileSize);
  const inf = zlib.createInflateRaw();
  const sha = createHash('sha1');
  let crc = 0;
  let length = 0;
  let ended = false;
  let inflateError: Error | null = null;
  inf.on('end', () => {
    ended = true;
  });
  const consume = (async () => {
    try {
      for await (const c of inf as AsyncIterable<Buffer>) {
        sha.update(c);
        crc = zlib.crc32(c, crc);
        length += c.length;
        if (onData) await onData(c);
      }
    } catch (err) {
      inflateError = err as Error;
    }
  })();
  let pos = offset + hlen;
  while (!ended && inflateError === null && pos < fileSize) {
    const b = await pread(fd, pos, Math.min(READ_SIZE, fileSize - pos));
    if (b.length === 0) break;
    pos += b.length;
    if (!inf.write(b)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          inf.off('drain', done);
          inf.off('end', done);
          inf.off('close', done);
          inf.off('error', done);
          resolve();
        };
        inf.on('drain', done);
        inf.on('end', done);
        inf.on('close', done);
        inf.on('error', done);
      });
    }
  }
  if (!ended && inflateError === null) inf.end();
  await consume;
  if (inflateError !== null) {
    const e = inflateError as NodeJS.ErrnoException;
    const truncated = e.code === 'Z_BUF_ERROR' || /unexpected end/i.test(e.message);
    throw new DataFileError(`gzip member at ${offset} is broken: ${e.message}`, offset, truncated);
  }
  if (!ended) throw new DataFileError(`gzip member at ${offset}: the file ends inside it`, offset, true);
  const deflateEnd = offset + hlen + inf.bytesWritten;
  if (deflateEnd + 8 > fileSize) throw new DataFileError(`gzip member at ${offset}: the file ends inside its trailer`, offset, true);
  const t = preadSync(fd, deflateEnd, 8);
  if (t.readUInt32LE(0) !== crc >>> 0 || t.readUInt32LE(4) !== length % 0x100000000) {
    throw new DataFileError(`gzip member at ${offset}: trailer CRC32 or length does not match its content`, offset, false);
  }
  return { offset, end: deflateEnd + 8, length, dataSha1: sha.digest('hex') };
}

/** Every complete member from `from` on; stops at the end or at the first broken member. */
export async function scanMembers(
  fd: number,
  from = 0,
): Promise<{ members: MemberInfo[]; goodEnd: number; error: DataFileError | null }> {
  const size = fs.fstatSync(fd).size;
  const members: MemberInfo[] = [];
  let pos = from;
  while (pos < size) {
    try {
      const m = await readMember(fd, pos, undefined, size);
      members.push(m);
      pos = m.end;
    } catch (err) {
      if (err instanceof DataFileError) return { members, goodEnd: pos, error: err };
      throw err;
    }
  }
  return { members, goodEnd: pos, error: null };
}

/** One record of a chunk. */
export interface DataRecord {
  ts: number;
  /** `APPLY` for every record cyrsync or Cyrus writes. */
  command: string;
  /** Top-level key (as written) and value; null when the line did not parse. */
  item: DlistItem | null;
  /** Offset of the record's first octet within the inflated chunk. */
  offset: number;
  /** Octets of the record line, line end included. */
  length: number;
  /** Why the line could not be parsed, if it could not. */
  error?: CyrsyncError;
}

export interface ReadRecordsOptions {
  /** Where file literal bodies go (default: skipped; their SHA-1 is still computed, in `sha1`). */
  sink?: BodySink | null;
  limits?: Partial<Limits>;
}

export interface ChunkRead extends MemberInfo {
  /** The member starts with the chunk header. */
  isChunk: boolean;
  records: DataRecord[];
}

function parseRecordLine(cmd: CommandLine, offset: number, length: number): DataRecord {
  const tsText = cmd.verb;
  const ts = /^-?[0-9]{1,19}$/.test(tsText) ? Number(tsText) : NaN;
  const bad = (why: string): DataRecord => ({
    ts: Number.isFinite(ts) ? ts : 0,
    command: '',
    item: null,
    offset,
    length,
    error: cmd.error ?? new CyrsyncError('IMAP_PROTOCOL_ERROR', why),
  });
  if (cmd.error) return bad(cmd.error.message);
  if (!Number.isFinite(ts)) return bad(`record at ${offset}: ${JSON.stringify(tsText.slice(0, 30))} is not a timestamp`);
  const a0 = cmd.args[0];
  const a1 = cmd.args[1];
  const a2 = cmd.args[2];
  if (a0 === undefined || a0.kind !== 'atom') return bad(`record at ${offset}: no command word`);
  if (a1 === undefined || a2 === undefined || cmd.args.length !== 3) {
    return { ts, command: a0.value, item: null, offset, length, error: new CyrsyncError('IMAP_PROTOCOL_ERROR', `record at ${offset}: expected KEY and one value`) };
  }
  const key = a1.kind === 'atom' || a1.kind === 'quoted' ? a1.value : a1.kind === 'literal' ? a1.value.toString('latin1') : null;
  if (key === null) return bad(`record at ${offset}: the key is not a string`);
  return { ts, command: a0.value, item: { key, value: a2 as DlistValue }, offset, length };
}

/**
 * Inflates and parses the member at `offset`. Records are collected (a
 * chunk's parsed dlists are small except for file literal bodies, which go
 * to `opts.sink` or are skipped). A line that starts with `#` before a
 * record is a comment and is skipped.
 */
export async function readChunkRecords(fd: number, offset: number, opts: ReadRecordsOptions = {}): Promise<ChunkRead> {
  const records: DataRecord[] = [];
  let fed = 0;
  let lineStart = 0;
  let pendingEnd: { cmd: CommandLine } | null = null;
  const core = new DlistParserCore({
    limits: opts.limits,
    sink: opts.sink ?? null,
    onCommand: (cmd) => {
      pendingEnd = { cmd };
      core.pause();
    },
  });
  let first = true;
  let isChunk = false;
  const take = (): void => {
    const p = pendingEnd;
    if (p === null) return;
    pendingEnd = null;
    const end = fed - core.pendingBytes;
    if (!p.cmd.verb.startsWith('#')) records.push(parseRecordLine(p.cmd, lineStart, end - lineStart));
    lineStart = end;
  };
  const drive = async (done: boolean): Promise<void> => {
    for (;;) {
      take();
      const w = core.blockedOn;
      if (w !== null) {
        await new Promise<void>((resolve) => w.onDrain(resolve));
        done = core.resume();
        continue;
      }
      if (core.isPaused) {
        done = core.resume();
        continue;
      }
      if (done) return;
      return;
    }
  };
  const info = await readMember(fd, offset, async (c) => {
    if (first) {
      first = false;
      isChunk = c.length >= CHUNK_HEADER.length && c.subarray(0, CHUNK_HEADER.length).equals(CHUNK_HEADER);
    }
    fed += c.length;
    await drive(core.push(c));
  });
  if (info.length > 0 && info.length < CHUNK_HEADER.length) {
    // A member too short to hold the header is not a chunk.
    isChunk = false;
  }
  try {
    core.end();
  } catch (err) {
    throw new DataFileError(`chunk at ${offset}: the last record is incomplete: ${(err as Error).message}`, offset, false);
  }
  take();
  return { ...info, isChunk, records };
}

// ---------------------------------------------------------------------------
// Torn tails

export interface LastChunk {
  offset: number;
  length: number;
  data_sha1: string;
}

export interface TailCheck {
  /** Where the last indexed chunk's member ends (0 with no chunks). */
  chunkEnd: number;
  /** Where the file should end: chunkEnd plus any complete empty members. */
  goodEnd: number;
  fileSize: number;
  /** Why data after goodEnd is not trusted, when there is such data. */
  reason: string | null;
}

/**
 * Checks the data after the last chunk the index knows. The last chunk must
 * verify (offset, inflated length, data_sha1: §7.1 quick level minus the
 * file_sha1, which the caller checks); after it only complete members that
 * inflate to nothing are kept. Anything else there (an unfinished member, a
 * broken one, or a complete chunk whose index transaction never
 * committed) is a torn chunk.
 */
export async function checkTail(fd: number, last: LastChunk | null): Promise<TailCheck> {
  const fileSize = fs.fstatSync(fd).size;
  let chunkEnd = 0;
  if (last !== null) {
    let m: MemberInfo;
    try {
      m = await readMember(fd, last.offset, undefined, fileSize);
    } catch (err) {
      throw new DataFileError(`the last indexed chunk (offset ${last.offset}) is unreadable: ${(err as Error).message}`, last.offset, false);
    }
    if (m.length !== last.length || m.dataSha1 !== last.data_sha1) {
      throw new DataFileError(`the last indexed chunk (offset ${last.offset}) does not match the index (length ${m.length} vs ${last.length})`, last.offset, false);
    }
    chunkEnd = m.end;
  }
  let goodEnd = chunkEnd;
  let reason: string | null = null;
  while (goodEnd < fileSize) {
    try {
      const m = await readMember(fd, goodEnd, undefined, fileSize);
      if (m.length !== 0) {
        reason = `a complete chunk at ${goodEnd} is not in the index`;
        break;
      }
      goodEnd = m.end;
    } catch (err) {
      reason = (err as Error).message;
      break;
    }
  }
  return { chunkEnd, goodEnd, fileSize, reason: goodEnd < fileSize ? reason : null };
}

/** Cuts the file back to `end` and fsyncs (O_APPEND descriptors may be truncated). */
export function truncateTo(fd: number, end: number): void {
  fs.ftruncateSync(fd, end);
  fs.fsyncSync(fd);
}
