/**
 * The backup a restore reads: its data file (under the data file's lock, as
 * Cyrus restore takes it) and an index of the state to restore.
 *
 * Latest state: the backup's own `.index`, read-only. Point in time
 * (`--at T`): a private index built in a temporary directory by replaying
 * the data file's records with a timestamp at or before T through the same
 * indexing code backupd uses, so every query then answers "as of T". Its
 * chunk rows carry the data file offsets of the real chunks, so message
 * bodies are found the same way in both cases.
 *
 * Message bodies are taken out of their chunk as the chunk is inflated and
 * parsed: each wanted file literal streams into a staging file with its
 * SHA-1 checked against its GUID (backpressure from the file write back to
 * the inflater), never held whole in memory.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import type { BodyHeader, BodySink, BodyWriter, StagedBody } from '../../../transforms/dlist-types.js';
import { CyrsyncError } from '../../../transforms/errors.js';
import { readChunkRecords } from '../../../sinks/backup/datafile.js';
import { BackupIndex, type ChunkRow, type MessageRow } from '../../../sinks/backup/index-db.js';
import { lockFile, type FileLock } from '../../../sinks/backup/lock.js';
import { TooEarlyError } from '../backup/pit.js';
import { noteInput } from '../../memory.js';

export class RestoreSourceError extends CyrsyncError {}

export interface OpenSourceOptions {
  /** Unix seconds: restore the state as of this time. */
  at?: number;
  /** Where point-in-time indexes and staged bodies go. */
  tempDir: string;
}

export class BackupSource {
  private constructor(
    readonly dataPath: string,
    private readonly lock: FileLock,
    readonly index: BackupIndex,
    /** Removed on close (point-in-time index, staged bodies). */
    readonly workDir: string,
    /** The time restored, or null for the latest state. */
    readonly at: number | null,
  ) {}

  static async open(dataPath: string, opts: OpenSourceOptions): Promise<BackupSource> {
    let lock: FileLock | null;
    try {
      lock = await lockFile(dataPath, { wait: false });
    } catch (err) {
      throw new RestoreSourceError('IMAP_MAILBOX_NONEXISTENT', `cannot open the backup ${dataPath}: ${(err as Error).message}`);
    }
    if (lock === null) throw new RestoreSourceError('IMAP_MAILBOX_LOCKED', `the backup ${dataPath} is locked by another process`);
    const workDir = fs.mkdtempSync(path.join(opts.tempDir, 'cyrsync-restore-'));
    let index: BackupIndex | null = null;
    try {
      if (opts.at === undefined) {
        index = BackupIndex.open(`${dataPath}.index`, { dataFileSize: lock.size(), readonly: true });
      } else {
        index = await buildIndexAt(lock, path.join(workDir, 'at.index'), opts.at);
      }
      return new BackupSource(dataPath, lock, index, workDir, opts.at ?? null);
    } catch (err) {
      index?.close();
      lock.release();
      fs.rmSync(workDir, { recursive: true, force: true });
      throw err;
    }
  }

  close(): void {
    this.index.close();
    this.lock.release();
    fs.rmSync(this.workDir, { recursive: true, force: true });
  }

  /**
   * Streams every message of `guids` that lives in chunk `chunk` into a
   * staging file; returns guid -> staged path. The caller removes them.
   */
  async extract(chunk: ChunkRow, guids: ReadonlySet<string>): Promise<Map<string, string>> {
    const staged = new Map<string, string>();
    const sink = new StagingSink(this.workDir, guids, staged);
    try {
      const read = await readChunkRecords(this.lock.fd, chunk.offset, { sink });
      for (const r of read.records) {
        for (const b of collectBodies(r.item?.value)) await b;
      }
      await sink.settled();
    } catch (err) {
      for (const p of staged.values()) fs.rmSync(p, { force: true });
      await sink.settled().catch(() => undefined);
      throw err;
    }
    return staged;
  }

  /** The CONTENT of the sieve record at `offset` of chunk `chunkId`. */
  async sieveContent(chunkId: number, offset: number): Promise<Buffer | null> {
    const chunk = this.index.chunk(chunkId);
    if (chunk === null) return null;
    const read = await readChunkRecords(this.lock.fd, chunk.offset, { sink: smallLiteralSink() });
    const r = read.records.find((x) => x.offset === offset);
    const v = r?.item?.value;
    if (v === undefined || v.kind !== 'kvlist') return null;
    const c = v.items.find((i) => i.key.toUpperCase() === 'CONTENT')?.value;
    if (c === undefined) return null;
    if (c.kind === 'literal') return c.value;
    if (c.kind === 'atom' || c.kind === 'quoted') return Buffer.from(c.value, 'latin1');
    if (c.kind === 'bigliteral' && c.body) return (c.body.ref as Buffer) ?? null;
    return null;
  }

  messageRow(guid: string): MessageRow | null {
    return this.index.messageByGuid(guid);
  }
}

function* collectBodies(v: unknown): Generator<Promise<void>> {
  if (v === null || typeof v !== 'object') return;
  const d = v as { kind?: string; body?: StagedBody | null; items?: unknown[] };
  if (d.kind === 'file' && d.body) yield d.body.done;
  if (d.kind === 'list' && d.items) for (const x of d.items) yield* collectBodies(x);
  if (d.kind === 'kvlist' && d.items) for (const x of d.items) yield* collectBodies((x as { value: unknown }).value);
}

/** Big literals (sieve scripts) in memory, file literals skipped. */
function smallLiteralSink(): BodySink {
  return {
    open(h: BodyHeader): BodyWriter | null {
      if (h.kind === 'file' || h.size > 16 * 1024 * 1024) return null;
      const chunks: Buffer[] = [];
      return {
        write: (c) => (chunks.push(Buffer.from(c)), true),
        onDrain: (cb) => queueMicrotask(cb),
        end: () => ({ done: Promise.resolve(), ref: Buffer.concat(chunks) }),
        abort: () => undefined,
      };
    },
  };
}

/** File literals whose GUID is wanted go to staging files, checked against their GUID. */
class StagingSink implements BodySink {
  private readonly pending: Promise<void>[] = [];
  constructor(
    private readonly dir: string,
    private readonly wanted: ReadonlySet<string>,
    private readonly staged: Map<string, string>,
  ) {}

  open(h: BodyHeader): BodyWriter | null {
    if (h.kind !== 'file' || h.guid === undefined) return null;
    const guid = h.guid.toLowerCase();
    if (!this.wanted.has(guid) || this.staged.has(guid)) return null;
    const file = path.join(this.dir, `${guid}.msg`);
    const out = fs.createWriteStream(file, { mode: 0o600 });
    this.staged.set(guid, file);
    const finished = new Promise<void>((resolve, reject) => {
      out.on('finish', resolve);
      out.on('error', reject);
    });
    finished.catch(() => undefined);
    const hash = createHash('sha1');
    return {
      write: (c: Buffer): boolean => {
        // Inflated pieces are fresh Buffers: a minor GC every few MB frees the dead ones (src/memory.ts).
        noteInput(c.length);
        hash.update(c);
        return out.write(c);
      },
      onDrain: (cb) => out.once('drain', cb),
      end: (sha1: string): StagedBody => {
        out.end();
        const done = finished.then(() => {
          if (sha1 !== guid || hash.digest('hex') !== guid) {
            throw new RestoreSourceError('IMAP_IOERROR', `message ${guid} in the backup does not match its GUID`);
          }
        });
        this.pending.push(done);
        return { done, ref: file };
      },
      abort: (): void => {
        out.destroy();
        fs.rmSync(file, { force: true });
        this.staged.delete(guid);
      },
    };
  }

  async settled(): Promise<void> {
    await Promise.all(this.pending);
  }
}

/**
 * A private index of the backup as of `at`: every record with a timestamp
 * at or before `at`, indexed in data file order. A time before the first
 * record is an error (there is nothing to restore then).
 */
async function buildIndexAt(lock: FileLock, indexPath: string, at: number): Promise<BackupIndex> {
  const index = BackupIndex.open(indexPath, { dataFileSize: 0 });
  try {
    const size = lock.size();
    let pos = 0;
    let first: number | null = null;
    while (pos < size) {
      const read = await readChunkRecords(lock.fd, pos);
      const applies = read.records.filter((r) => r.item !== null && r.command.toUpperCase() === 'APPLY' && r.ts <= at);
      if (read.records.length > 0 && first === null) first = read.records[0]!.ts;
      if (applies.length > 0) {
        index.beginChunk(applies[0]!.ts, pos, '');
        for (const r of applies) {
          try {
            index.indexRecord(r.ts, r.offset, { key: r.item!.key.toUpperCase(), value: r.item!.value });
          } catch {
            // As reindex: a record that cannot be indexed is skipped.
          }
        }
        index.endChunk(applies[applies.length - 1]!.ts, read.length, read.dataSha1);
      }
      if (read.records.length > 0 && read.records[0]!.ts > at) break;
      pos = read.end;
    }
    if (first === null || at < first) throw new TooEarlyError(at, first);
    return index;
  } catch (err) {
    index.close();
    throw err;
  }
}

/** A staged body for APPLY MESSAGE, read with the same periodic minor GC. */
export function stagedReader(file: string): Readable {
  const src = fs.createReadStream(file);
  const out = new Transform({
    transform(c: Buffer, _e, cb) {
      noteInput(c.length);
      cb(null, c);
    },
  });
  src.on('error', (err) => out.destroy(err));
  return src.pipe(out);
}

export function defaultTempDir(tempPath: string | undefined): string {
  return tempPath && fs.existsSync(tempPath) ? tempPath : os.tmpdir();
}
