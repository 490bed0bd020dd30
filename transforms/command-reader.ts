/**
 * The stream adapter of the dlist parser: CommandReader, a Writable that
 * turns bytes into CommandLine values on demand (see the class comment).
 */
import { Writable } from 'node:stream';
import { DlistParserCore } from './dlist-core.js';
import type { BodySink, CommandLine } from './dlist-types.js';
import type { Limits } from './limits.js';

export interface CommandReaderOptions {
  limits?: Partial<Limits>;
  sink?: BodySink | null;
  /**
   * Writable high-water mark in octets. Default 0: every write reports
   * backpressure, so a pipe()d source never has a second chunk queued behind
   * the one being parsed (which keeps detachRemainder() exact).
   */
  highWaterMark?: number;
  /**
   * Told the size of every input chunk as it arrives, before parsing: for
   * accounting (byte counters, a memory policy). Must not throw.
   */
  onInput?: (octets: number) => void;
}

/**
 * Bytes in, CommandLine values out, strictly on demand.
 *
 * Parsing happens only while a nextCommand() call is pending: the reader
 * stops right after each complete command line and withholds its write
 * callback, so the source is paused until the consumer asks for the next
 * command. This matches csync's request/response discipline: the sink in
 * effect for a command's bodies is the one set when nextCommand() was
 * called, and no byte after a command is looked at before the command has
 * been handled.
 *
 * Bodies: while a BodyWriter is not draining, the write callback is withheld
 * (the source pauses) until writer.onDrain fires.
 *
 * Transport switch (COMPRESS DEFLATE, STARTTLS): after the command that
 * switches has been returned by nextCommand() and before calling it again,
 *   source.unpipe(reader);
 *   const rest = reader.detachRemainder();   // octets that followed the line
 * then feed `rest` first into the new transport (inflater / TLS socket via
 * socket.unshift(rest)) and pipe that into the same reader. detachRemainder
 * also completes the withheld write, so the reader accepts new input.
 *
 * Errors: a framing violation destroys the reader with the FramingError (an
 * 'error' listener or pipeline() is required) and rejects the pending
 * nextCommand(). The end of input resolves nextCommand() with null; input
 * that ends inside a command is the error "Unexpected end of data".
 */
export class CommandReader extends Writable {
  private readonly core: DlistParserCore;
  private ready: CommandLine | null = null;
  private waiter: { resolve: (c: CommandLine | null) => void; reject: (e: Error) => void } | null = null;
  private writeCb: ((err?: Error | null) => void) | null = null;
  private ended = false;
  private failure: Error | null = null;
  private drainWaiting = false;
  private readonly onInput: ((octets: number) => void) | undefined;

  constructor(options: CommandReaderOptions = {}) {
    super({ highWaterMark: options.highWaterMark ?? 0 });
    this.onInput = options.onInput;
    this.core = new DlistParserCore({
      limits: options.limits,
      sink: options.sink ?? null,
      onCommand: (cmd) => this.command(cmd),
    });
    // Nothing is parsed before the first nextCommand().
    this.core.pause();
  }

  get bodySink(): BodySink | null {
    return this.core.sink;
  }

  /** Takes effect at the next body header. */
  set bodySink(sink: BodySink | null) {
    this.core.sink = sink;
  }

  setBodySink(sink: BodySink | null): void {
    this.core.sink = sink;
  }

  get limits(): Limits {
    return this.core.limits;
  }

  /** Octets held by the reader: unparsed input plus an incomplete line. */
  get bufferedBytes(): number {
    return this.core.pendingBytes + this.core.carriedBytes;
  }

  /** Nothing of a next command received: no octet parsed or held since the last command returned. */
  get idle(): boolean {
    return this.ready === null && this.core.atCommandBoundary && this.bufferedBytes === 0;
  }

  /** The next command line, or null at the end of input. One call at a time. */
  nextCommand(): Promise<CommandLine | null> {
    if (this.waiter !== null) return Promise.reject(new Error('nextCommand() is already pending'));
    if (this.ready !== null) {
      const c = this.ready;
      this.ready = null;
      return Promise.resolve(c);
    }
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.pump();
    });
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<CommandLine, void, undefined> {
    for (;;) {
      const c = await this.nextCommand();
      if (c === null) return;
      yield c;
    }
  }

  /**
   * The octets received after the last returned command and not parsed
   * (see the class comment). Only between commands, with no nextCommand()
   * pending. The reader then expects fresh input.
   */
  detachRemainder(): Buffer {
    if (this.waiter !== null) throw new Error('detachRemainder() while nextCommand() is pending');
    const rest = this.core.detachRemainder();
    this.releaseWrite(null);
    return rest;
  }

  private command(cmd: CommandLine): void {
    this.core.pause();
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      w.resolve(cmd);
    } else {
      this.ready = cmd;
    }
  }

  /** Parse on while a command is wanted; release the write when input is used up. */
  private pump(): void {
    if (this.destroyed || this.failure !== null || this.drainWaiting) return;
    let done: boolean;
    try {
      done = this.waiter !== null ? this.core.resume() : this.core.pendingBytes === 0 && this.core.blockedOn === null;
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    this.afterStep(done);
  }

  private afterStep(done: boolean): void {
    const w = this.core.blockedOn;
    if (w !== null) {
      this.drainWaiting = true;
      w.onDrain(() => {
        this.drainWaiting = false;
        this.pump();
      });
      return;
    }
    if (done) this.releaseWrite(null);
    if (this.ended && this.waiter !== null && this.ready === null) this.settleEnd();
  }

  private settleEnd(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.resolve(null);
  }

  private releaseWrite(err: Error | null): void {
    const cb = this.writeCb;
    this.writeCb = null;
    cb?.(err);
  }

  private fail(err: Error): void {
    if (this.failure === null) this.failure = err;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
    const cb = this.writeCb;
    this.writeCb = null;
    if (cb) cb(err);
    else this.destroy(err);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.onInput?.(chunk.length);
    this.writeCb = cb;
    let done: boolean;
    try {
      done = this.core.push(chunk);
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    this.afterStep(done);
  }

  override _final(cb: (err?: Error | null) => void): void {
    try {
      this.core.end();
    } catch (err) {
      const w = this.waiter;
      this.waiter = null;
      this.failure ??= err as Error;
      w?.reject(err as Error);
      cb(err as Error);
      return;
    }
    this.ended = true;
    if (this.waiter !== null && this.ready === null) this.settleEnd();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // autoDestroy after 'finish' is a clean end, not a failure.
    const reason = err ?? (this.ended ? null : new Error('Command reader destroyed'));
    this.core.abort(reason ?? new Error('Command reader closed'));
    if (this.failure === null && reason !== null) this.failure = reason;
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) {
      if (err) w.reject(err);
      else w.resolve(null);
    }
    // A withheld write callback must not outlive the stream.
    const wcb = this.writeCb;
    this.writeCb = null;
    if (wcb) wcb(err);
    cb(err);
  }
}
