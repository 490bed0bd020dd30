/**
 * Content-addressed message blobs and the staging of streamed literals.
 *
 * Layout, per configured partition path P:
 *   P/blobs/<g0g1>/<guid>          one immutable file per GUID
 *   P/blobs/tmp/<unique>.tmp       a literal while it arrives
 *
 * Invariants:
 * - a path is only ever built from a GUID that matched /^[0-9a-f]{40}$/ and a
 *   configured partition path; nothing else from the wire reaches the disk;
 * - a file under blobs/xx/yy/ hashes (SHA-1) to its name: it is written to
 *   tmp/ (same filesystem), fsynced, checked against the SHA-1 the parser
 *   computed, then renamed into place and its directory fsynced; so a rename
 *   over an existing blob replaces identical bytes;
 * - tmp/ holds nothing a restart needs: it is emptied when the store opens.
 */
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { CommandError } from '../../transforms/errors.js';
import type { BodyHeader, BodySink, BodyWriter } from '../../transforms/dlist-types.js';
import { isGuid } from '../../src/protocol/names.js';
import { nodeStagingFs, StagingWriter, stagingIoError, type StagingFs, type StagingTarget } from '../staging-writer.js';

/** What a BodyWriter of this store leaves in StagedBody.ref. */
export interface StagedRef extends StagingTarget {
  readonly kind: 'file' | 'literal';
  readonly path: string;
  /** partition whose tmp/ holds the file */
  readonly partition: string;
  /** file literals: the announced GUID */
  readonly guid: string | null;
  size: number;
  /** SHA-1 of what was received, set at end() */
  sha1: string | null;
  /** false once the file has been moved into the blob store or removed */
  live: boolean;
}

export function isStagedRef(x: unknown): x is StagedRef {
  return typeof x === 'object' && x !== null && 'path' in x && 'live' in x && 'kind' in x;
}

/** Maps a filesystem error to a command refusal with plain words. */
export function ioError(err: unknown, doing: string): CommandError {
  return stagingIoError(err, doing, 'replica');
}

/** File-system operations the store uses; replaceable in tests to inject faults (ENOSPC, EIO). */
export interface BlobFs extends StagingFs {
  rename(from: string, to: string): Promise<void>;
  unlink(p: string): Promise<void>;
}

export const realFs: BlobFs = {
  ...nodeStagingFs,
  rename: (a, b) => fsp.rename(a, b),
  unlink: (p) => fsp.unlink(p),
};

export interface BlobStoreOptions {
  partitions: Record<string, string>;
  /** fsync files and directories (default true); false only for throw-away stores */
  fsync: boolean;
  fs?: BlobFs;
}

let tmpCounter = 0;

/** How many blob renames / directory syncs run at once. */
export const IO_CONCURRENCY = 16;

/** Runs fn over items with at most `limit` in flight; the first failure rejects after all started ones settle. */
export async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown = null;
  const worker = async (): Promise<void> => {
    while (failure === null && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        if (failure === null) failure = err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== null) throw failure as Error;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class BlobStore {
  readonly partitions: Readonly<Record<string, string>>;
  readonly defaultPartition: string;
  readonly doFsync: boolean;
  readonly fs: BlobFs;
  private readonly madeDirs = new Set<string>();

  constructor(opts: BlobStoreOptions) {
    const names = Object.keys(opts.partitions);
    if (names.length === 0) throw new Error('replica store: at least one partition must be configured');
    this.partitions = { ...opts.partitions };
    this.defaultPartition = 'default' in opts.partitions ? 'default' : names[0]!;
    this.doFsync = opts.fsync;
    this.fs = opts.fs ?? realFs;
  }

  /**
   * Creates the directories and removes staging left over by processes that
   * are gone. Several processes may serve one store (one per connection under
   * a master process), so a staging file whose writer (the pid in its name)
   * is still alive is left alone.
   */
  async open(): Promise<void> {
    for (const p of Object.values(this.partitions)) {
      const tmp = path.join(p, 'blobs', 'tmp');
      await fsp.mkdir(tmp, { recursive: true });
      for (const f of await fsp.readdir(tmp)) {
        const pid = Number(/^(\d+)-/.exec(f)?.[1] ?? NaN);
        if (Number.isInteger(pid) && pid !== process.pid && processAlive(pid)) continue;
        await fsp.rm(path.join(tmp, f), { force: true, recursive: true });
      }
    }
  }

  /** The configured partition a label names, else the default one (labels are opaque to storage). */
  partitionFor(label: string | undefined | null): string {
    return label && Object.prototype.hasOwnProperty.call(this.partitions, label) ? label : this.defaultPartition;
  }

  blobPath(partition: string, guid: string): string {
    if (!isGuid(guid)) throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', `Invalid GUID ${JSON.stringify(guid)}`);
    const root = this.partitions[partition];
    if (root === undefined) throw new CommandError('IMAP_IOERROR', `Partition ${partition} is not configured`);
    // One directory level (256 directories): a second level would make nearly
    // one directory per message in a store of small messages (a 4 KiB block,
    // a mkdir and a directory fsync each).
    return path.join(root, 'blobs', guid.slice(0, 2), guid);
  }

  tmpDir(partition: string): string {
    return path.join(this.partitions[partition]!, 'blobs', 'tmp');
  }

  newTmpPath(partition: string): string {
    tmpCounter = (tmpCounter + 1) % 1e9;
    return path.join(this.tmpDir(partition), `${process.pid}-${tmpCounter}-${randomBytes(6).toString('hex')}.tmp`);
  }

  /** Opens a staging writer for one streamed literal. */
  openWriter(header: BodyHeader, onRef: (ref: StagedRef) => void): BodyWriter {
    const partition = this.partitionFor(header.partition);
    const guid = header.kind === 'file' && header.guid && isGuid(header.guid.toLowerCase()) ? header.guid.toLowerCase() : null;
    const ref: StagedRef = {
      kind: header.kind,
      path: this.newTmpPath(partition),
      partition,
      guid,
      size: header.size,
      sha1: null,
      live: true,
    };
    onRef(ref);
    return new StagingWriter(ref, {
      fs: this.fs,
      fsync: this.doFsync,
      discard: (r) => this.discard(r),
      ioError,
    });
  }

  /**
   * Moves a verified staged file into the blob store. Returns the directories
   * that must be fsynced before the blob may be referenced by a commit: the
   * blob's own directory, and the parents of any directory just created.
   */
  async commit(ref: StagedRef, guid: string): Promise<string[]> {
    const dest = this.blobPath(ref.partition, guid);
    const dir = path.dirname(dest);
    const toSync = [dir];
    if (!this.madeDirs.has(dir)) {
      try {
        const first = await fsp.mkdir(dir, { recursive: true });
        if (first !== undefined) {
          for (let d = dir; d.length >= first.length; d = path.dirname(d)) toSync.push(path.dirname(d));
        }
      } catch (err) {
        throw ioError(err, `creating the blob directory for ${guid}`);
      }
      this.madeDirs.add(dir);
    }
    try {
      await this.fs.rename(ref.path, dest);
    } catch (err) {
      throw ioError(err, `moving message ${guid} into the blob store`);
    }
    ref.live = false;
    return toSync;
  }

  /** fsync of directory entries after renames (durability of the rename itself). */
  async syncDirs(dirs: Iterable<string>): Promise<void> {
    if (!this.doFsync) return;
    // In parallel: the filesystem folds concurrent directory syncs into few journal commits.
    await pool([...new Set(dirs)], IO_CONCURRENCY, async (d) => {
      let fh: fsp.FileHandle | undefined;
      try {
        fh = await fsp.open(d, 'r');
        await fh.sync();
      } catch (err) {
        throw ioError(err, `syncing directory ${d}`);
      } finally {
        await fh?.close().catch(() => {});
      }
    });
  }

  private readonly discarding = new WeakMap<StagedRef, Promise<void>>();

  /** Removes a staging file; every caller awaits the same unlink. */
  discard(ref: StagedRef): Promise<void> {
    const pending = this.discarding.get(ref);
    if (pending) return pending;
    if (!ref.live) return Promise.resolve();
    ref.live = false;
    const p = this.fs.unlink(ref.path).catch(() => {});
    this.discarding.set(ref, p);
    return p;
  }

  /** Locates a blob on any partition, preferring the given one. */
  async find(guid: string, preferred?: string): Promise<{ partition: string; path: string; size: number } | null> {
    const order = [this.partitionFor(preferred), ...Object.keys(this.partitions)];
    for (const p of new Set(order)) {
      const file = this.blobPath(p, guid);
      try {
        const st = await fsp.stat(file);
        if (st.isFile()) return { partition: p, path: file, size: st.size };
      } catch {
        /* not on this partition */
      }
    }
    return null;
  }
}

/** A BodySink that stages into a BlobStore and reports every staged ref to its owner. */
export class ReplicaBodySink implements BodySink {
  constructor(
    private readonly store: BlobStore,
    private readonly track: (ref: StagedRef, writer: BodyWriter) => void,
  ) {}

  open(header: BodyHeader): BodyWriter | null {
    let writerRef: StagedRef | null = null;
    const w = this.store.openWriter(header, (r) => {
      writerRef = r;
    });
    this.track(writerRef!, w);
    return w;
  }
}
