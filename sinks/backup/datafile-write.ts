/**
 * Writing backup data files (backup-format §5): ChunkWriter appends one gzip
 * member per chunk, inflating to the 29-octet header line and then records
 * `<ts> APPLY <dlist>` CRLF.
 *
 * Every octet goes through one gzip stream into the locked descriptor
 * (O_APPEND), counted and SHA-1 hashed as it passes, so `length` and
 * `data_sha1` describe exactly what was written; `file_sha1` is computed
 * over the file as it is when the chunk starts. Records are serialized
 * canonically (§5.4) with one deliberate difference: literals that are not
 * file literals are written `{N}`, never `{N+}`. Cyrus 3.6.1 as packaged in
 * Debian 12 (its backup readers behave as 3.6.5+) stops at the first `{N+}`
 * non-file literal, so a backup holding one (a `\Drafts` special-use value,
 * say) fails the real `ctl_backups verify`; `{N}` reads in every release.
 * File literal bodies are streamed from their sources, never held whole.
 * Each record is followed by a full flush so a crash leaves decodable data;
 * the member is finished (trailer written) and the file fsynced when the
 * chunk ends.
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { Writable } from 'node:stream';
import * as zlib from 'node:zlib';
import { CyrsyncError } from '../../transforms/errors.js';
import { iterateLineParts, resolveMode, streamBody, type SerializeOptions } from '../../transforms/serializer.js';
import type { DlistItem } from '../../transforms/dlist-types.js';
import { CHUNK_HEADER, hashPrefix, ioError, type FileHash } from './datafile-io.js';

/** Canonical dlist output (§5.4) with synchronizing `{N}` literals: see the file comment. */
export const DATAFILE_MODE: SerializeOptions = resolveMode('backup');

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
