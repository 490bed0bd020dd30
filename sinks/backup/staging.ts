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
 * - the writer (sinks/staging-writer.ts) bounds what waits for the disk and
 *   hands backpressure to the socket, so memory stays flat; after an I/O
 *   error the remaining bytes are accepted and dropped (the wire stays in
 *   sync) and `done` rejects with the error;
 * - the process directory is emptied when the store opens and removed when
 *   it closes; every session removes its own files after each command.
 */
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { CommandError } from '../../transforms/errors.js';
import type { BodyHeader, BodySink, BodyWriter } from '../../transforms/dlist-types.js';
import { nodeStagingFs, StagingWriter, stagingIoError, type StagingTarget } from '../staging-writer.js';

/** What a staging writer leaves in StagedBody.ref. */
export interface BackupStagedRef extends StagingTarget {
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
  return stagingIoError(err, doing, 'backup');
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
    const writer = new StagingWriter(ref, {
      fs: nodeStagingFs,
      // The staged copy is a way station: the chunk it is copied into is fsynced.
      fsync: false,
      discard: (r) => this.discard(r),
      ioError,
      onWritten: (r, n) => {
        r.written += n;
      },
      onComplete: (r) => {
        r.complete = true;
      },
    });
    return { ref, writer };
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
