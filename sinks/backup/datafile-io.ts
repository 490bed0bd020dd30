/**
 * Positional I/O and hashing on a backup data file's locked descriptor
 * (backup-format §5), shared by the chunk writer, the readers and the tools.
 *
 * Invariant: only the descriptor of the data file's lock is ever used; no
 * second descriptor is opened on a locked data file (closing it would drop
 * the fcntl lock).
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { CyrsyncError } from '../../transforms/errors.js';

/** The chunk header line, exactly 29 octets. */
export const CHUNK_HEADER = Buffer.from('# cyrus backup: chunk start\r\n', 'latin1');
/** SHA-1 of nothing: the file_sha1 of a chunk at offset 0. */
export const EMPTY_SHA1 = 'da39a3ee5e6b4b0d3255bfef95601890afd80709';

export const READ_SIZE = 256 * 1024;

export function ioError(message: string, cause?: unknown): CyrsyncError {
  return new CyrsyncError('IMAP_IOERROR', message, cause === undefined ? undefined : { cause });
}

// ---------------------------------------------------------------------------
// Positional I/O on the locked descriptor

export function preadSync(fd: number, pos: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, b, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got === len ? b : b.subarray(0, got);
}

export function pread(fd: number, pos: number, len: number): Promise<Buffer> {
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

/** Cuts the file back to `end` and fsyncs (O_APPEND descriptors may be truncated). */
export function truncateTo(fd: number, end: number): void {
  fs.ftruncateSync(fd, end);
  fs.fsyncSync(fd);
}
