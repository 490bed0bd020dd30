/**
 * The backup reading pipeline, shared by `cyrsync ctl-backups`,
 * `cyrsync cyr-backup` and `cyrsync restore`.
 *
 * A data file (backup-format §5) is read as one pipeline:
 *
 *   file ──► gunzip, one member at a time (its offset known)
 *        ──► framer + dlist parser (transforms/, DlistParserCore)
 *        ──► entries (object mode, backpressured)
 *
 * API
 *
 *   new DataFileReader(fd, opts?)  an object-mode Readable of BackupEntry:
 *     { type: 'chunk-start', chunk }                 a member with content begins
 *     { type: 'record', chunk, record }              one `<ts> APPLY <dlist>` line
 *     { type: 'chunk-end', chunk, member, isChunk }  the member ended and its
 *                                                    gzip trailer (CRC32, ISIZE) checked
 *   `chunk` is a ChunkRef: `seq` (1, 2, ... over the members that inflate to
 *   something; empty members are skipped as §5.1 says) and `offset` (where
 *   the member starts in the file). `record` is a DataRecord
 *   (sinks/backup/datafile.ts): ts, command, item (top-level key and value),
 *   offset within the inflated chunk, length; `error` when the line did not
 *   parse (the stream goes on).
 *
 *   opts.from / opts.until: read the members starting at `from` (default 0),
 *     stop before the first member starting at or after `until`.
 *   opts.sink: where file literal bodies go (a BodySink; default null: the
 *     bodies are skipped by counting, their SHA-1 still computed and found in
 *     the parsed DlistFile's `sha1`). Bodies are streamed through the sink's
 *     writer with backpressure and are never held whole in memory.
 *   opts.limits: parser limits (default: the data file ceilings, 4 GiB file
 *     literals).
 *
 *   A broken or truncated member, or a record line that breaks the framing,
 *   destroys the stream with a BackupReadError naming the file, the chunk
 *   (seq), the member offset and the position inside the inflated chunk.
 *
 *   readEntries(fd, opts) is the same as an async iterable.
 *
 * Both literal forms are read, `{N}` (cyrsync backupd) and `{N+}` (the real
 * Cyrus backupd), as are file literals `%{partition guid size}`; a line
 * starting with `#` before a record is a comment (the chunk header).
 *
 * The descriptor must be the data file's lock descriptor (lock.ts): no
 * other descriptor is opened on the file while it is read.
 */
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import { CyrsyncError } from '../../../transforms/errors.js';
import { DlistParserCore } from '../../../transforms/dlist-parser.js';
import type { BodySink, CommandLine, DlistItem } from '../../../transforms/dlist-types.js';
import type { Limits } from '../../../transforms/limits.js';
import { CHUNK_HEADER, DataFileError, parseDataRecord, readMember, type DataRecord, type MemberInfo } from '../../../sinks/backup/datafile.js';

export interface ChunkRef {
  /** 1-based ordinal among the members with content. */
  seq: number;
  /** Offset of the gzip member in the data file. */
  offset: number;
}

export type BackupEntry =
  | { type: 'chunk-start'; chunk: ChunkRef }
  | { type: 'record'; chunk: ChunkRef; record: DataRecord }
  | { type: 'chunk-end'; chunk: ChunkRef; member: MemberInfo; isChunk: boolean; records: number };

export interface ReaderOptions {
  from?: number;
  until?: number;
  sink?: BodySink | null;
  limits?: Partial<Limits>;
  /** Named in errors (default: "the data file"). */
  name?: string;
}

/** A data file problem located: file, chunk, member offset, position in the chunk. */
export class BackupReadError extends CyrsyncError {
  constructor(
    readonly file: string,
    readonly chunk: ChunkRef,
    /** Position inside the inflated chunk, or null when the gzip layer failed. */
    readonly position: number | null,
    readonly reason: string,
    readonly truncated: boolean,
  ) {
    const at = position === null ? '' : `, position ${position} of the inflated chunk`;
    super('IMAP_IOERROR', `${file}: chunk ${chunk.seq} at offset ${chunk.offset}${at}: ${reason}`);
  }
}

const READ_LIMITS: Partial<Limits> = {
  maxLineLength: 2 ** 31 - 1,
  maxFileLiteralSize: 2 ** 32 - 1,
  maxLiteralSize: 2 ** 31 - 1,
};

/** See the module comment. */
export class DataFileReader extends Readable {
  private started = false;
  private wake: (() => void) | null = null;
  private stopped = false;
  readonly name: string;

  constructor(private readonly fd: number, private readonly opts: ReaderOptions = {}) {
    super({ objectMode: true, highWaterMark: 16 });
    this.name = opts.name ?? 'the data file';
  }

  override _read(): void {
    if (!this.started) {
      this.started = true;
      this.run().then(
        () => {
          if (!this.stopped) this.push(null);
        },
        (err: Error) => this.destroy(err),
      );
    }
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.stopped = true;
    const w = this.wake;
    this.wake = null;
    w?.();
    cb(err);
  }

  /** Pushes one entry; waits while the consumer is behind. */
  private async deliver(e: BackupEntry): Promise<void> {
    if (this.stopped) throw new StopReading();
    if (!this.push(e)) await new Promise<void>((resolve) => (this.wake = resolve));
    if (this.stopped) throw new StopReading();
  }

  private async run(): Promise<void> {
    const size = fs.fstatSync(this.fd).size;
    let pos = this.opts.from ?? 0;
    const until = this.opts.until ?? Number.POSITIVE_INFINITY;
    let seq = 0;
    try {
      while (pos < size && pos < until) {
        const m = await this.readOne(pos, seq + 1, size);
        if (m.member.length > 0) seq++;
        pos = m.member.end;
      }
    } catch (err) {
      if (err instanceof StopReading) return;
      throw err;
    }
  }

  private async readOne(offset: number, seq: number, size: number): Promise<{ member: MemberInfo }> {
    const chunk: ChunkRef = { seq, offset };
    let fed = 0;
    let lineStart = 0;
    let records = 0;
    let first = true;
    let isChunk = false;
    const pending: CommandLine[] = [];
    const core = new DlistParserCore({
      limits: { ...READ_LIMITS, ...this.opts.limits },
      sink: this.opts.sink ?? null,
      onCommand: (cmd) => {
        // Paused after each command: the line ends where the retained input begins.
        pending.push(cmd);
        core.pause();
      },
    });
    const flush = async (): Promise<void> => {
      const cmd = pending.shift();
      if (cmd === undefined) return;
      const end = fed - core.pendingBytes;
      if (!cmd.verb.startsWith('#')) {
        records++;
        await this.deliver({ type: 'record', chunk, record: parseDataRecord(cmd, lineStart, end - lineStart) });
      }
      lineStart = end;
    };
    const drive = async (): Promise<void> => {
      for (;;) {
        await flush();
        const w = core.blockedOn;
        if (w !== null) await new Promise<void>((resolve) => w.onDrain(resolve));
        else if (!core.isPaused) return;
        core.resume();
      }
    };
    const fail = (err: unknown, position: number | null): never => {
      if (err instanceof StopReading || err instanceof BackupReadError) throw err;
      const e = err as Error;
      throw new BackupReadError(this.name, chunk, position, e.message, err instanceof DataFileError && err.truncated);
    };
    const onData = async (c: Buffer): Promise<void> => {
      if (first) {
        first = false;
        isChunk = c.length >= CHUNK_HEADER.length && c.subarray(0, CHUNK_HEADER.length).equals(CHUNK_HEADER);
        await this.deliver({ type: 'chunk-start', chunk });
      }
      fed += c.length;
      core.push(c);
      await drive();
    };
    let member: MemberInfo;
    // readMember reports a failing callback as a broken member: keep the real cause.
    let inner: unknown = null;
    try {
      member = await readMember(this.fd, offset, (c) => onData(c).catch((err: unknown) => {
        inner ??= err;
        throw err;
      }), size);
    } catch (err) {
      fail(inner ?? err, inner === null ? null : lineStart);
    }
    try {
      core.end();
    } catch (err) {
      fail(new Error(`the last record is incomplete: ${(err as Error).message}`), lineStart);
    }
    await drive();
    if (member!.length > 0) await this.deliver({ type: 'chunk-end', chunk, member: member!, isChunk, records });
    return { member: member! };
  }
}

class StopReading extends Error {}

/** The reader as an async iterable. */
export function readEntries(fd: number, opts: ReaderOptions = {}): AsyncIterable<BackupEntry> {
  return new DataFileReader(fd, opts);
}

/** `KEY value` of a record, or null (unparsed line). */
export function recordItem(e: BackupEntry): DlistItem | null {
  return e.type === 'record' ? e.record.item : null;
}
