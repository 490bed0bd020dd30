/**
 * The Writable adapter of the framer (framer-core.ts): `Framer` frames the
 * bytes written to it into 'line' events and hands every literal body out as
 * a Readable (`LiteralBody`), one at a time, with backpressure.
 */
import { Readable, Writable } from 'node:stream';
import { FramerCore, type FramerOptions, type LiteralHeader } from './framer-core.js';

export interface FramerStreamOptions extends FramerOptions {
  /**
   * Called at a synchronizing literal header (`{N}`, `~{N}`), before its body
   * is awaited: an IMAP server answers `+ go ahead` here. csync never needs it.
   */
  onContinuation?: (header: LiteralHeader) => void;
  /**
   * Called at every literal header, right after its `line` event and before
   * the continuation and the `literal` event: return 'skip' to refuse the
   * body (it is consumed by counting and no `literal` event is emitted),
   * e.g. to answer NO to an unwanted `{N+}` APPEND and stay in sync. Return
   * 'reject' to refuse a synchronizing `{N}` / `~{N}` (answer NO instead of
   * `+`): no body will follow, the logical line ends at the header and no
   * continuation is offered. ('reject' on `{N+}` or a file literal acts as
   * 'skip', since those bytes arrive anyway.)
   *
   * A synchronizing literal over maxLiteralSize arrives here with
   * `header.tooLarge` set: answer 'reject' (and NO/BAD to the command).
   * Without that answer (or without onLiteral) the framer fails with
   * IMAP_LITERAL_TOO_LARGE. A `{N+}` over the limit fails before any event.
   */
  onLiteral?: (header: LiteralHeader) => 'skip' | 'reject' | void;
  highWaterMark?: number;
}

/** One literal body: a Readable of exactly `header.size` octets. */
export class LiteralBody extends Readable {
  readonly header: LiteralHeader;
  private readonly owner: Framer;

  constructor(owner: Framer, header: LiteralHeader, highWaterMark?: number) {
    super(highWaterMark === undefined ? {} : { highWaterMark });
    this.owner = owner;
    this.header = header;
  }

  override _read(): void {
    this.owner.bodyWantsMore(this);
  }

  /** Abandon the body: the rest is consumed by counting, not buffered. */
  skip(): void {
    this.destroy();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.owner.bodyAbandoned(this);
    cb(err);
  }
}

/**
 * Writable framer. Events:
 *   'line'    (text: Buffer, literal: LiteralHeader | null, raw: Buffer)
 *             every segment: `text` without the literal announcement and
 *             without CR/LF; `raw` the physical line without its end of line
 *             (the announcement is `raw.subarray(text.length)`)
 *   'literal' (header: LiteralHeader, body: LiteralBody)     after its 'line'
 * Exactly one body is open at a time; the next segment is not framed until
 * the body has been read to its end (or abandoned with body.skip() /
 * body.destroy(), after which its octets are counted and dropped). A slow
 * body reader pauses the writer: the write callback is withheld until the
 * body asks for more. With no 'literal' listener bodies are skipped.
 */
export class Framer extends Writable {
  private readonly core: FramerCore;
  private readonly onContinuation: ((h: LiteralHeader) => void) | undefined;
  private readonly onLiteral: ((h: LiteralHeader) => 'skip' | 'reject' | void) | undefined;
  private readonly bodyHighWaterMark: number | undefined;
  private body: LiteralBody | null = null;
  /** The body whose push() returned false (it may have ended since): framing waits for its _read. */
  private waitingBody: LiteralBody | null = null;
  private writeCb: ((err?: Error | null) => void) | null = null;

  constructor(options: FramerStreamOptions = {}) {
    super({ highWaterMark: options.highWaterMark ?? 16 * 1024 });
    this.onContinuation = options.onContinuation;
    this.onLiteral = options.onLiteral;
    this.bodyHighWaterMark = options.highWaterMark;
    this.core = new FramerCore({
      onSegment: (text, literal, raw) => this.segment(text, literal, raw),
      onBodyData: (chunk) => this.bodyData(chunk),
      onBodyEnd: () => this.bodyEnd(),
    }, options);
  }

  /** Unprocessed octets held (for bounded-memory checks). */
  get bufferedBytes(): number {
    return this.core.pendingBytes + this.core.carriedBytes;
  }

  private segment(text: Buffer, literal: LiteralHeader | null, raw: Buffer): void | 'skip' | 'reject' {
    this.emit('line', text, literal, raw);
    if (literal === null) return;
    const answer = this.onLiteral?.(literal);
    // Not refused: the core fails with IMAP_LITERAL_TOO_LARGE.
    if (literal.tooLarge) return answer === 'reject' ? 'reject' : undefined;
    if (answer === 'skip' || answer === 'reject') return answer;
    if (this.listenerCount('literal') === 0) return 'skip';
    if (literal.kind === 'literal' && !literal.nonSynchronizing) this.onContinuation?.(literal);
    const body = new LiteralBody(this, literal, this.bodyHighWaterMark);
    this.body = body;
    this.emit('literal', literal, body);
    if (body.destroyed) {
      this.body = null;
      return 'skip';
    }
  }

  private bodyData(chunk: Buffer): boolean {
    const body = this.body;
    if (body === null) return true;
    if (body.push(chunk)) return true;
    this.waitingBody = body;
    return false;
  }

  private bodyEnd(): void {
    const body = this.body;
    this.body = null;
    if (body !== null) {
      body.push(null);
    }
  }

  /** @internal */
  bodyWantsMore(body: LiteralBody): void {
    if (body !== this.waitingBody) return;
    this.waitingBody = null;
    this.pump();
  }

  /** @internal */
  bodyAbandoned(body: LiteralBody): void {
    if (body === this.body) {
      this.body = null;
      this.core.skipBody();
    }
    if (body === this.waitingBody) {
      this.waitingBody = null;
      this.pump();
    }
  }

  private pump(): void {
    if (this.destroyed) return;
    let done: boolean;
    try {
      done = this.core.resume();
    } catch (err) {
      this.releaseWrite(err as Error);
      return;
    }
    if (done && this.waitingBody === null) this.releaseWrite(null);
  }

  private releaseWrite(err: Error | null): void {
    const cb = this.writeCb;
    this.writeCb = null;
    if (cb) cb(err);
    else if (err) this.destroy(err);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.writeCb = cb;
    let done: boolean;
    try {
      done = this.core.push(chunk);
    } catch (err) {
      this.releaseWrite(err as Error);
      return;
    }
    // Withheld while a body is full: it is released from that body's _read.
    if (done && this.waitingBody === null) this.releaseWrite(null);
  }

  override _final(cb: (err?: Error | null) => void): void {
    try {
      this.core.end();
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.core.abort(err ?? new Error('Framer destroyed'));
    const body = this.body;
    this.body = null;
    this.waitingBody = null;
    if (body !== null && !body.destroyed) body.destroy(err ?? undefined);
    // A withheld write callback must not outlive the stream.
    const wcb = this.writeCb;
    this.writeCb = null;
    if (wcb) wcb(err);
    cb(err);
  }
}
