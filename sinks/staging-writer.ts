/**
 * The BodyWriter both stores stage streamed literals with: one literal into
 * one staging file, with the backpressure inherited by the whole pipeline.
 *
 * Invariants:
 * - at most one write is in flight, and at most HIGH_WATER octets wait
 *   behind it; write() returns false beyond that and the producer (the
 *   parser, hence the socket) waits for onDrain;
 * - after an I/O error the remaining octets are accepted and dropped, so the
 *   wire stays in sync, and `done` rejects with the error (plain words,
 *   Cyrus code);
 * - a file literal whose octets do not hash to its GUID is removed as soon
 *   as it is closed: it never becomes available to a store;
 * - abort() (connection lost, framing error) removes the partial file once
 *   no write is in flight any more.
 */
import * as fs from 'node:fs';
import { CommandError } from '../transforms/errors.js';
import type { BodyWriter, StagedBody } from '../transforms/dlist-types.js';

/** Octets a writer queues while a write is in flight before it asks the producer to wait. */
const HIGH_WATER = 1 << 20;

/** What the writer needs to know of, and records in, a store's staging reference. */
export interface StagingTarget {
  readonly kind: 'file' | 'literal';
  readonly path: string;
  /** file literals: the announced GUID (lower case) */
  readonly guid: string | null;
  /** SHA-1 of what was received, set at end() */
  sha1: string | null;
  /** false once the file has been moved away or removed */
  live: boolean;
}

/** File-system operations used for staging; replaceable in tests to inject faults (ENOSPC, EIO). */
export interface StagingFs {
  openSync(p: string, flags: string, mode?: number): number;
  write(fd: number, buf: Buffer, cb: (err: NodeJS.ErrnoException | null, written: number) => void): void;
  fsync(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void;
  close(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void;
}

/** The real file system. */
export const nodeStagingFs: StagingFs = {
  openSync: (p, flags, mode) => fs.openSync(p, flags, mode),
  write: (fd, buf, cb) => fs.write(fd, buf, 0, buf.length, null, (err, n) => cb(err, n)),
  fsync: (fd, cb) => fs.fsync(fd, cb),
  close: (fd, cb) => fs.close(fd, cb),
};

export interface StagingWriterOptions<R extends StagingTarget> {
  fs: StagingFs;
  /** fsync the file before it counts as complete */
  fsync: boolean;
  /** Removes the staging file (idempotent: every caller awaits the same unlink). */
  discard(ref: R): Promise<void>;
  /** Maps a file-system error to a refusal naming what was being done. */
  ioError(err: unknown, doing: string): CommandError;
  /** Told every octet count written. */
  onWritten?(ref: R, octets: number): void;
  /** The file is closed (and synced) and, for a file literal, matched its GUID. */
  onComplete?(ref: R): void;
}

/** Maps a file-system error to a command refusal with plain words; `where` names the disk. */
export function stagingIoError(err: unknown, doing: string, where: string): CommandError {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') {
    return new CommandError('IMAP_NOSPACE', `No space left on the ${where} disk while ${doing}`, { cause: err });
  }
  return new CommandError('IMAP_IOERROR', `I/O error while ${doing}: ${e?.code ?? e?.message ?? String(err)}`, { cause: err });
}

export class StagingWriter<R extends StagingTarget> implements BodyWriter {
  private fd: number | null = null;
  private error: CommandError | null = null;
  private inflight = false;
  private queue: Buffer[] = [];
  /** Octets accepted but not yet handed to a write. */
  private queued = 0;
  private drainCbs: (() => void)[] = [];
  private ended: ((err: CommandError | null) => void) | null = null;
  private aborted = false;

  constructor(
    private readonly ref: R,
    private readonly o: StagingWriterOptions<R>,
  ) {
    try {
      this.fd = o.fs.openSync(ref.path, 'wx', 0o600);
    } catch (err) {
      this.error = o.ioError(err, `creating a staging file for ${ref.guid ?? 'a literal'}`);
      ref.live = false;
    }
  }

  write(chunk: Buffer): boolean {
    if (this.error || this.aborted || this.fd === null) return true;
    this.queue.push(chunk);
    this.queued += chunk.length;
    this.pump();
    return this.queued < HIGH_WATER;
  }

  onDrain(cb: () => void): void {
    if (this.queued < HIGH_WATER || this.error || this.aborted) {
      queueMicrotask(cb);
      return;
    }
    this.drainCbs.push(cb);
  }

  private pump(): void {
    if (this.inflight || this.fd === null) return;
    const buf = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue);
    this.queue = [];
    this.queued = 0;
    // While this write runs the producer may fill the queue again (one write in flight, one batch waiting).
    const cbs = this.drainCbs;
    this.drainCbs = [];
    for (const cb of cbs) queueMicrotask(cb);
    if (buf.length === 0) {
      this.flushed();
      return;
    }
    this.inflight = true;
    const fd = this.fd;
    const writeAll = (b: Buffer): void => {
      this.o.fs.write(fd, b, (err, n) => {
        if (err) {
          this.inflight = false;
          this.fail(this.o.ioError(err, `writing message ${this.ref.guid ?? 'literal'} to staging`));
          return;
        }
        this.o.onWritten?.(this.ref, n);
        if (n < b.length) {
          writeAll(b.subarray(n));
          return;
        }
        this.inflight = false;
        if (this.queue.length > 0 && !this.error && !this.aborted) {
          this.pump();
          return;
        }
        this.flushed();
      });
    };
    writeAll(buf);
  }

  private flushed(): void {
    const cbs = this.drainCbs;
    this.drainCbs = [];
    for (const cb of cbs) cb();
    if (this.ended && !this.inflight && this.queue.length === 0) {
      const done = this.ended;
      this.ended = null;
      done(this.error);
    }
  }

  private fail(err: CommandError): void {
    if (this.error) return;
    this.error = err;
    this.queue = [];
    this.queued = 0;
    this.closeAndRemove();
    this.flushed();
  }

  /** Set once a failed write's file is being removed; `done` rejects only after it is gone. */
  private removed: Promise<void> | null = null;

  private closeAndRemove(): void {
    const fd = this.fd;
    this.fd = null;
    const closed = fd === null ? Promise.resolve() : new Promise<void>((res) => this.o.fs.close(fd, () => res()));
    this.removed = closed.then(() => this.o.discard(this.ref)).catch(() => undefined);
  }

  end(sha1: string): StagedBody {
    this.ref.sha1 = sha1.toLowerCase();
    const done = new Promise<void>((resolve, reject) => {
      this.ended = (err) => {
        if (err) {
          // The refusal goes out only once the staging file is removed.
          void (this.removed ?? Promise.resolve()).then(() => reject(err));
          return;
        }
        this.finish().then(resolve, reject);
      };
      if (this.error || (!this.inflight && this.queue.length === 0)) this.flushed();
    });
    // The router awaits `done`; this keeps an unobserved failure from crashing the process.
    done.catch(() => {});
    return { done, ref: this.ref };
  }

  /** (fsync +) close; a file literal whose octets do not hash to its GUID is removed at once. */
  private async finish(): Promise<void> {
    const fd = this.fd;
    this.fd = null;
    if (fd === null) throw this.error ?? new CommandError('IMAP_IOERROR', 'staging file is not open');
    const fs = this.o.fs;
    try {
      if (this.o.fsync) await new Promise<void>((res, rej) => fs.fsync(fd, (e) => (e ? rej(e) : res())));
    } catch (err) {
      fs.close(fd, () => {});
      await this.o.discard(this.ref);
      throw this.o.ioError(err, `syncing message ${this.ref.guid ?? 'literal'} to disk`);
    }
    await new Promise<void>((res) => fs.close(fd, () => res()));
    if (this.ref.kind === 'file' && this.ref.guid !== this.ref.sha1) {
      await this.o.discard(this.ref);
      return;
    }
    this.o.onComplete?.(this.ref);
  }

  abort(_err: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.queue = [];
    this.queued = 0;
    const cbs = this.drainCbs;
    this.drainCbs = [];
    if (this.inflight) {
      // The in-flight write's callback runs later; remove the file once it has.
      const fd = this.fd;
      this.fd = null;
      const poll = (): void => {
        if (this.inflight) {
          setImmediate(poll);
          return;
        }
        if (fd !== null) this.o.fs.close(fd, () => {});
        void this.o.discard(this.ref);
      };
      poll();
    } else {
      this.closeAndRemove();
    }
    for (const cb of cbs) cb();
  }
}
