/**
 * The Readable adapter of the serializer: DlistWriter (and its
 * ResponseWriter / CommandWriter faces) carries serialized lines, streaming
 * bodies with backpressure; the session pipes it to the connection.
 */
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { CyrsyncError } from './errors.js';
import type { DlistFile, DlistItem, DlistValue } from './dlist-types.js';
import { badValue, iterateLineParts, resolveMode, type BodyPart, type SerializeMode, type SerializeOptions } from './dlist-encoder.js';
import { pumpBody, waitDrain } from './body-stream.js';

export interface DlistWriterOptions {
  mode?: SerializeMode;
  highWaterMark?: number;
}

/**
 * A Readable carrying serialized lines; pipe it to the connection. Each
 * method resolves once its bytes were handed on (pushed, or written into the
 * compressor), waiting whenever the reader is behind, so a file literal is
 * streamed with flat memory. Calls are serialized in call order.
 *
 * `endReply()` marks the end of a reply: with compression active
 * (`startCompression`) it performs a deflate sync flush, ordered after every
 * byte of the reply, so the peer can read the whole reply without waiting
 * for more; `onReplyEnd` is an additional hook for other output layers.
 */
export class DlistWriter extends Readable {
  readonly options: SerializeOptions;
  onReplyEnd: (() => void | Promise<void>) | null = null;
  private chain: Promise<void> = Promise.resolve();
  private readWaiters: (() => void)[] = [];
  private compressor: zlib.DeflateRaw | null = null;
  private failure: Error | null = null;

  constructor(opts: DlistWriterOptions = {}) {
    super({ highWaterMark: opts.highWaterMark ?? 64 * 1024 });
    this.options = resolveMode(opts.mode ?? 'server');
  }

  override _read(): void {
    this.compressor?.resume();
    const w = this.readWaiters;
    this.readWaiters = [];
    for (const f of w) f();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.failure ??= err ?? new CyrsyncError('IMAP_IOERROR', 'output closed');
    const w = this.readWaiters;
    this.readWaiters = [];
    for (const f of w) f();
    this.compressor?.destroy();
    cb(err);
  }

  /**
   * From the next octet on, everything is raw deflate (COMPRESS DEFLATE).
   * Call after the `OK DEFLATE active` status resolved.
   */
  startCompression(deflate: zlib.DeflateRaw = zlib.createDeflateRaw({ windowBits: 15 })): void {
    if (this.compressor) throw new CyrsyncError('IMAP_INTERNAL', 'compression is already active');
    this.compressor = deflate;
    deflate.on('data', (c: Buffer) => {
      if (!this.push(c)) deflate.pause();
    });
    deflate.on('error', (err) => this.destroy(err));
  }

  get compressing(): boolean {
    return this.compressor !== null;
  }

  /** A line that does not end a reply (greeting capability lines...). */
  rawLine(line: string): Promise<void> {
    return this.enqueue(() => this.emitBuffer(Buffer.from(line + '\r\n', 'latin1')));
  }

  /**
   * Writes `<prefix>KEY value` CRLF, streaming bodies. A value the encoder
   * refuses fails the call; if part of the line had already gone out, the
   * stream is destroyed too, since the peer could never resynchronise.
   */
  line(prefix: string, item: DlistItem): Promise<void> {
    return this.enqueue(async () => {
      let started = false;
      try {
        for (const part of iterateLineParts(prefix, item, this.options)) {
          started = true;
          if (Buffer.isBuffer(part)) await this.emitBuffer(part);
          else await this.emitBody(part);
        }
      } catch (err) {
        if (started && !this.destroyed) this.destroy(err as Error);
        throw err;
      }
    });
  }

  /** Ends a reply: sync flush when compressing, then the `onReplyEnd` hook. */
  endReply(): Promise<void> {
    return this.enqueue(async () => {
      const c = this.compressor;
      if (c) await new Promise<void>((resolve) => c.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()));
      const hook = this.onReplyEnd;
      if (hook) await hook();
    });
  }

  /** Ends the stream after everything queued (and flushes a compressor). */
  finish(): Promise<void> {
    return this.enqueue(async () => {
      const c = this.compressor;
      if (c) {
        await new Promise<void>((resolve) => {
          c.once('end', () => resolve());
          c.end();
        });
      }
      this.push(null);
    });
  }

  protected enqueue(job: () => Promise<void>): Promise<void> {
    const run = this.chain.then(() => {
      if (this.failure) throw this.failure;
      return job();
    });
    // A failed job has destroyed the stream; later jobs fail fast above.
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async emitBuffer(b: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    const c = this.compressor;
    if (c) {
      if (!c.write(b)) await waitDrain(c);
      return;
    }
    if (!this.push(b)) await new Promise<void>((resolve) => this.readWaiters.push(resolve));
  }

  private async emitBody(b: BodyPart): Promise<void> {
    try {
      await pumpBody(b, (chunk) => this.emitBuffer(chunk));
    } catch (err) {
      this.destroy(err as Error);
      throw err;
    }
  }
}

/** Server side: `* KEY value` data lines and status lines. */
export class ResponseWriter extends DlistWriter {
  constructor(opts: DlistWriterOptions = {}) {
    super({ mode: 'server', ...opts });
  }

  /** `* KEY value` CRLF */
  data(item: DlistItem): Promise<void> {
    return this.line('* ', item);
  }

  /** A status line (`OK success`, `NO ...`): ends the reply, so it is flushed. */
  async status(line: string): Promise<void> {
    await this.rawLine(line);
    await this.endReply();
  }
}

/** Client side: `VERB KEY value` command lines with `{N+}` literals. */
export class CommandWriter extends DlistWriter {
  constructor(opts: DlistWriterOptions = {}) {
    super({ mode: 'client', ...opts });
  }

  /**
   * `APPLY MESSAGE (%{...}...)` and friends; a verb alone (`EXIT`) when no
   * item is given. Each command is a complete request, so it is flushed.
   */
  async command(verb: string, item?: DlistItem): Promise<void> {
    if (item) await this.line(verb + ' ', item);
    else await this.rawLine(verb);
    await this.endReply();
  }

  /** `GET <SUB> <operand>` */
  get(sub: string, operand: DlistValue): Promise<void> {
    return this.command('GET', { key: sub, value: operand });
  }

  /** `APPLY <SUB> <operand>` */
  apply(sub: string, operand: DlistValue): Promise<void> {
    return this.command('APPLY', { key: sub, value: operand });
  }

  /**
   * `APPLY MESSAGE (%{p g n} ... )`, each body streamed from its source and
   * checked. csync-wire §5.2: at most MAX_MESSAGE_FILES files per command.
   */
  applyMessage(files: DlistFile[]): Promise<void> {
    if (files.length === 0 || files.length > MAX_MESSAGE_FILES) {
      return Promise.reject(badValue(`APPLY MESSAGE takes 1 to ${MAX_MESSAGE_FILES} files, not ${files.length}`));
    }
    return this.apply('MESSAGE', { kind: 'list', items: files });
  }
}

/** Files per APPLY MESSAGE that sync_client never exceeds. */
export const MAX_MESSAGE_FILES = 1024;
