/**
 * COMPRESS DEFLATE (csync-wire §3.3, RFC 4978 framing): raw DEFLATE (RFC
 * 1951, no zlib/gzip wrapper, 32 KiB window) in both directions. The sender
 * completes every reply with a sync flush, the empty stored block
 * `00 00 FF FF`, so the peer can inflate the whole reply without waiting for
 * more input; never a full flush and never the end of the stream.
 *
 * Ordering invariant: a flush must follow the last byte of the reply it
 * ends. zlib queues `flush()` behind every chunk already given to `write()`,
 * so the reply bytes must be written into the deflate stream itself (not
 * into a pipe that feeds it later) before `flushReply()` is called.
 */
import { pipeline, type Readable, type Writable } from 'node:stream';
import * as zlib from 'node:zlib';

/** 32 KiB window, as Cyrus (and IMAP COMPRESS) use. */
export const DEFLATE_WINDOW_BITS = 15;

/** The four octets a sync flush ends with. */
export const SYNC_FLUSH_TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff]);

export interface DeflateOptions {
  /** zlib level; Cyrus uses the default. */
  level?: number;
  memLevel?: number;
}

/** Raw deflate for output. */
export function createCompressDeflate(opts: DeflateOptions = {}): zlib.DeflateRaw {
  return zlib.createDeflateRaw({
    windowBits: DEFLATE_WINDOW_BITS,
    level: opts.level ?? zlib.constants.Z_DEFAULT_COMPRESSION,
    memLevel: opts.memLevel ?? 8,
  });
}

/**
 * Raw inflate for input. A peer may use any window up to 32 KiB; inflating
 * with the largest window accepts them all.
 */
/**
 * Inflater output buffer. Every output chunk costs a thread-pool job and a
 * trip through the stream machinery; with zlib's default 16 KiB, a session
 * of large compressed messages spends more CPU on that than on inflating
 * (measured: 100 MB inflated in small pieces, 0.9 s CPU with the default,
 * 0.33 s with 256 KiB).
 */
const INFLATE_CHUNK = 256 * 1024;

/**
 * Input the inflater queues while a chunk is being inflated. Socket reads of
 * a compressed session are often a few KiB (the peer flushes after every
 * command); queued reads are inflated together in one thread-pool job (see
 * gatherWrites), so this bounds how much one job gathers.
 */
const INFLATE_GATHER = 256 * 1024;

export function createCompressInflate(): zlib.InflateRaw {
  // zlib hands its options to the Transform it is, so the writable side's mark applies.
  const options: zlib.ZlibOptions & { writableHighWaterMark: number } = {
    windowBits: DEFLATE_WINDOW_BITS,
    chunkSize: INFLATE_CHUNK,
    writableHighWaterMark: INFLATE_GATHER,
  };
  const inflate = zlib.createInflateRaw(options);
  gatherWrites(inflate);
  return inflate;
}

/**
 * Every chunk written to a zlib stream is one thread-pool job. Chunks that
 * queued up while the previous one was being processed are handed over as
 * one buffer instead (Writable's `_writev` hook), so a burst of small socket
 * reads costs one job (measured: 8 MB arriving in 4 KiB reads, 510 jobs
 * become 16 and the inflating CPU drops by about a third). Order and
 * content are unchanged: the chunks are concatenated in the order written.
 */
export function gatherWrites(stream: zlib.InflateRaw | zlib.DeflateRaw): void {
  const s = stream as unknown as {
    _write(chunk: Buffer, enc: string, cb: (err?: Error | null) => void): void;
    _writev?: (chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void) => void;
  };
  s._writev = (chunks, cb) => {
    // zlib's flush() queues an empty marker buffer that must stay a write of its own.
    if (chunks.some((c) => c.chunk.length === 0)) {
      let i = 0;
      const next = (err?: Error | null): void => {
        if (err || i === chunks.length) cb(err);
        else s._write(chunks[i++]!.chunk, 'buffer', next);
      };
      next();
      return;
    }
    s._write(Buffer.concat(chunks.map((c) => c.chunk)), 'buffer', cb);
  };
}

/** Sync-flush `deflate`: resolves once every byte written so far is out of it. */
export function flushReply(deflate: zlib.DeflateRaw): Promise<void> {
  return new Promise((resolve) => {
    if (deflate.destroyed) {
      resolve();
      return;
    }
    deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve());
  });
}

/** A connection after COMPRESS: read inflated bytes, write into `output`, flush per reply. */
export interface CompressedConnection {
  /** Inflated client bytes; pipe into the command reader. */
  input: zlib.InflateRaw;
  /** Write reply bytes here; they reach the socket compressed. */
  output: zlib.DeflateRaw;
  /** Call after the last byte of each reply (status line). */
  flushReply: () => Promise<void>;
}

/**
 * Inserts compression between a socket (a Duplex, or its two sides) and the
 * protocol layers:
 * socketIn → inflate → (caller pipes `input` to its reader) and
 * (caller writes to `output`) → deflate → socketOut.
 *
 * Call it right after the uncompressed `OK DEFLATE active` line has been
 * written and after `source.unpipe(reader)`. `pending` are octets already
 * read from the socket past the COMPRESS line (normally none: the client
 * waits for the OK): they are compressed data and go into the inflater
 * first. Errors of either zlib stream destroy the socket, so the session
 * sees one terminal 'error'/'close' path.
 */
export function insertCompression(
  socketIn: Readable,
  socketOut: Writable = socketIn as unknown as Writable,
  pending: Buffer | null = null,
  opts: DeflateOptions = {},
): CompressedConnection {
  if (typeof (socketOut as Partial<Writable>).write !== 'function') {
    throw new TypeError('insertCompression needs a writable output (pass the socket, a Duplex, or its writable side)');
  }
  const input = createCompressInflate();
  const output = createCompressDeflate(opts);
  if (pending && pending.length > 0) input.write(pending);
  const onError = (err: Error | null | undefined): void => {
    if (err && !(socketOut as { destroyed?: boolean }).destroyed) socketOut.destroy(err);
  };
  // pipeline ends the inflater with the socket and tears both down on error.
  pipeline(socketIn, input, () => undefined);
  input.on('error', onError);
  output.pipe(socketOut);
  output.on('error', onError);
  return { input, output, flushReply: () => flushReply(output) };
}

/**
 * Compresses `data` as one reply would travel: raw deflate ending in a sync
 * flush. For tests and tools (the benchmark client).
 */
export function deflateReplySync(data: Buffer, opts: DeflateOptions = {}): Buffer {
  return zlib.deflateRawSync(data, {
    windowBits: DEFLATE_WINDOW_BITS,
    level: opts.level ?? zlib.constants.Z_DEFAULT_COMPRESSION,
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  });
}
