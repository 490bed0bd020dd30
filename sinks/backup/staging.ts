/**
 * Staging of streamed literals for the backup store (backup-format §9.6).
 *
 * A file literal (or a big non-file literal) streams from the parser into a
 * file under `<backup_staging_path>/sync./<pid>/`, with the SHA-1 computed by
 * the parser on the way. The store copies it from there into a chunk only
 * after the SHA-1 and size matched the announced GUID and size; a body that
 * failed the check is removed and never reaches a data file.
 *
 * Invariants:
 * - staging file names are built from a process-wide counter only, never
 *   from anything sent by the client (GUID, partition), so no wire value can
 *   name a path, and two bodies with the same GUID never collide;
 * - at most one write per body is in flight; write() returns false while it
 *   is, so the socket is paused (backpressure) and memory stays flat;
 * - after an I/O error the remaining bytes are accepted and dropped (the wire
 *   stays in sync) and `done` rejects with the error;
 * - the process directory is emptied when the store opens and removed when
 *   it closes; every session removes its own files after each command.
 */
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { CommandError } from '../../transforms/errors.js';
import type { BodyHeader, BodySink, BodyWriter, StagedBody } from '../../transforms/dlist-types.js';

/** What a staging writer leaves in StagedBody.ref. */
export interface BackupStagedRef {
  readonly kind: 'file' | 'literal';
  readonly path: string;
  /** file literals: the announced GUID (lower case, as announced; may be malformed) */
  readonly guid: string | null;
  /** announced size */
  readonly size: number;
  /** SHA-1 of the bytes received; set at end() */
  sha1: string | null;
  /** bytes actually written */
  written: number;
  /** true once every byte is on disk and the file closed */
  complete: boolean;
  /** false once removed */
  live: boolean;
}

export function isBackupStagedRef(x: unknown): x is BackupStagedRef {
  return typeof x === 'object' && x !== null && 'path' in x && 'complete' in x && 'written' in x;
}

/** A staged body is usable when complete and its bytes hash to what was announced. */
export function verifiedRef(ref: unknown, guid: string, size: number): BackupStagedRef | null {
  if (!isBackupStagedRef(ref) || !ref.live || !ref.complete) return null;
  if (ref.written !== size || ref.size !== size) return null;
  if (ref.sha1 === null || ref.sha1 !== guid.toLowerCase()) return null;
  return ref;
}

export function stagedSource(ref: BackupStagedRef): () => Readable {
  return () => createReadStream(ref.path, { highWaterMark: 256 * 1024 });
}

export function ioError(err: unknown, doing: string): CommandError {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') {
    return new CommandError('IMAP_NOSPACE', `No space left on the backup disk while ${doing}`, { cause: err });
  }
  return new CommandError('IMAP_IOERROR', `I/O error while ${doing}: ${e?.code ?? e?.message ?? String(err)}`, { cause: err });
}

let counter = 0;

export class StagingArea {
  /** `<staging>/sync./<pid>` */
  readonly dir: string;

  constructor(stagingRoot: string) {
    this.dir = path.join(stagingRoot, 'sync.', String(process.pid));
  }

  /** Creates the process directory and empties it (leftovers of an earlier process with this pid). */
  async open(): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const f of await fsp.readdir(this.dir)) await fsp.rm(path.join(this.dir, f), { force: true, recursive: true });
    // Directories of processes that died without cleaning up (kill -9): the
    // Cyrus tools share this area, each under its own live pid.
    const parent = path.dirname(this.dir);
    for (const name of await fsp.readdir(parent).catch(() => [] as string[])) {
      if (!/^\d+$/.test(name) || Number(name) === process.pid || pidAlive(Number(name))) continue;
      await fsp.rm(path.join(parent, name), { recursive: true, force: true }).catch(() => {});
    }
  }

  async close(): Promise<void> {
    await fsp.rm(this.dir, { recursive: true, force: true }).catch(() => {});
  }

  newPath(): string {
    counter = (counter + 1) % 1e12;
    return path.join(this.dir, `body.${counter}`);
  }

  private readonly removing = new WeakMap<BackupStagedRef, Promise<void>>();

  /** Removes a staged file; every caller awaits the same unlink. */
  discard(ref: BackupStagedRef): Promise<void> {
    const pending = this.removing.get(ref);
    if (pending) return pending;
    if (!ref.live) return Promise.resolve();
    ref.live = false;
    const p = fsp.unlink(ref.path).catch(() => {});
    this.removing.set(ref, p);
    return p;
  }

  openWriter(header: BodyHeader): { ref: BackupStagedRef; writer: BodyWriter } {
    const ref: BackupStagedRef = {
      kind: header.kind,
      path: this.newPath(),
      guid: header.kind === 'file' ? (header.guid ?? '').toLowerCase() : null,
      size: header.size,
      sha1: null,
      written: 0,
      complete: false,
      live: true,
    };
    return { ref, writer: new StagingWriter(this, ref) };
  }
}

class StagingWriter implements BodyWriter {
  private fd: number | null = null;
  private error: CommandError | null = null;
  private inflight = false;
  private queue: Buffer[] = [];
  private drainCbs: (() => void)[] = [];
  private ended: ((err: CommandError | null) => void) | null = null;
  private aborted = false;

  constructor(
    private readonly area: StagingArea,
    private readonly ref: BackupStagedRef,
  ) {
    try {
      this.fd = fs.openSync(ref.path, 'wx', 0o600);
    } catch (err) {
      this.error = ioError(err, `creating a staging file for ${ref.guid ?? 'a literal'}`);
      ref.live = false;
    }
  }

  write(chunk: Buffer): boolean {
    if (this.error || this.aborted || this.fd === null) return true;
    this.queue.push(chunk);
    this.pump();
    return !this.inflight;
  }

  onDrain(cb: () => void): void {
    if (!this.inflight || this.error || this.aborted) {
      queueMicrotask(cb);
      return;
    }
    this.drainCbs.push(cb);
  }

  private pump(): void {
    if (this.inflight || this.fd === null) return;
    const buf = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue);
    this.queue = [];
    if (buf.length === 0) {
      this.flushed();
      return;
    }
    this.inflight = true;
    const fd = this.fd;
    const writeAll = (b: Buffer): void => {
      fs.write(fd, b, 0, b.length, null, (err, n) => {
        if (err) {
          this.inflight = false;
          this.fail(ioError(err, `writing message ${this.ref.guid ?? 'literal'} to staging`));
          return;
        }
        this.ref.written += n;
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
    this.closeAndRemove();
    this.flushed();
  }

  private closeAndRemove(): void {
    const fd = this.fd;
    this.fd = null;
    if (fd !== null) fs.close(fd, () => {});
    void this.area.discard(this.ref);
  }

  end(sha1: string): StagedBody {
    this.ref.sha1 = sha1.toLowerCase();
    const done = new Promise<void>((resolve, reject) => {
      this.ended = (err) => {
        if (err) {
          reject(err);
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

  /** Closes the file; a file literal whose bytes do not hash to its GUID is removed at once. */
  private async finish(): Promise<void> {
    const fd = this.fd;
    this.fd = null;
    if (fd === null) throw this.error ?? new CommandError('IMAP_IOERROR', 'staging file is not open');
    await new Promise<void>((res) => fs.close(fd, () => res()));
    if (this.ref.kind === 'file' && this.ref.guid !== this.ref.sha1) {
      await this.area.discard(this.ref);
      return;
    }
    this.ref.complete = true;
  }

  abort(_err: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.queue = [];
    const cbs = this.drainCbs;
    this.drainCbs = [];
    if (this.inflight) {
      const fd = this.fd;
      this.fd = null;
      const poll = (): void => {
        if (this.inflight) {
          setImmediate(poll);
          return;
        }
        if (fd !== null) fs.close(fd, () => {});
        void this.area.discard(this.ref);
      };
      poll();
    } else {
      this.closeAndRemove();
    }
    for (const cb of cbs) cb();
  }
}

/**
 * The BodySink of one backup session: stages into the area and reports every
 * staged body to its owner, which removes it after the command that carried it.
 */
export class BackupBodySink implements BodySink {
  constructor(
    private readonly area: StagingArea,
    private readonly track: (ref: BackupStagedRef, writer: BodyWriter) => void,
  ) {}

  open(header: BodyHeader): BodyWriter | null {
    const { ref, writer } = this.area.openWriter(header);
    this.track(ref, writer);
    return writer;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: alive, owned by someone else
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
