/**
 * Reading backup data files (backup-format §5: readMember, readChunkRecords,
 * scanMembers, checkTail): a member is inflated from its offset with a raw
 * inflater after parsing the gzip header; the inflater stops at the end of
 * the deflate stream and its consumed-octet count locates the 8-octet
 * trailer (CRC32, ISIZE), which is checked. Records are parsed with the
 * project's dlist parser, which reads `{N}`, `{N+}` and file literals;
 * bodies go to an optional BodySink (default: skipped by counting, SHA-1
 * still computed).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { CyrsyncError } from '../../transforms/errors.js';
import { DlistParserCore } from '../../transforms/dlist-parser.js';
import type { BodySink, CommandLine, DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import type { Limits } from '../../transforms/limits.js';
import { CHUNK_HEADER, READ_SIZE, pread, preadSync } from './datafile-io.js';

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

/**
 * One parsed line of an inflated chunk as a record: `<ts> <COMMAND> <KEY>
 * <value>`. A line that does not fit gives a record with `item` null and the
 * reason in `error` (with the command word when there was one).
 */
export function parseDataRecord(cmd: CommandLine, offset: number, length: number): DataRecord {
  const tsText = cmd.verb;
  const ts = /^-?[0-9]{1,19}$/.test(tsText) ? Number(tsText) : NaN;
  const bad = (why: string, command = ''): DataRecord => ({
    ts: Number.isFinite(ts) ? ts : 0,
    command,
    item: null,
    offset,
    length,
    error: cmd.error ?? new CyrsyncError('IMAP_PROTOCOL_ERROR', why),
  });
  if (cmd.error) return bad(cmd.error.message);
  if (!Number.isFinite(ts)) return bad(`record at ${offset}: ${JSON.stringify(tsText.slice(0, 30))} is not a timestamp`);
  const [a0, a1, a2] = cmd.args;
  if (a0 === undefined || a0.kind !== 'atom') return bad(`record at ${offset}: no command word`);
  if (a1 === undefined || a2 === undefined || cmd.args.length !== 3) return bad(`record at ${offset}: expected KEY and one value`, a0.value);
  const key = a1.kind === 'atom' || a1.kind === 'quoted' ? a1.value : a1.kind === 'literal' ? a1.value.toString('latin1') : null;
  if (key === null) return bad(`record at ${offset}: the key is not a string`, a0.value);
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
    if (!p.cmd.verb.startsWith('#')) records.push(parseDataRecord(p.cmd, lineStart, end - lineStart));
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
