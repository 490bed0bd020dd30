/**
 * Line/literal framing for IMAP-family protocols (IMAP, csync).
 *
 * The wire is a sequence of *logical lines*. A logical line is one or more
 * *segments*: each segment is the text of a physical line up to (but not
 * including) either its end of line or a literal header at the end of that
 * physical line. A literal header is followed by exactly `size` raw octets
 * (the body), after which the same logical line goes on with the very next
 * octet. Headers recognised at the end of a physical line:
 *
 *   {N} {N+}            IMAP literal (the header line must end in CRLF or LF)
 *   ~{N} ~{N+}          IMAP binary literal (RFC 3516), when `binaryLiterals`
 *   %{part guid N}      csync file literal, when `fileLiterals`
 *
 * A header opener must start a token: it is the first octet of the segment or
 * follows SP, HTAB or "(". Anything else (`foo{5}`) is ordinary line text.
 * csync-wire.md §1.3 rule 5 wants CRLF after `{N}`; a bare LF is accepted
 * too, the rule Cyrus's dlist_parse applies to `%{...}` headers.
 *
 * FramerCore is pure (no node:stream) and fed Buffers; the headers are
 * recognised by literal-header.ts; `Framer` (framer.ts) is the Writable
 * adapter that hands every body out as a Readable, one at a time.
 *
 * Invariants:
 * - Every limit is checked at the header, before the bytes it governs are
 *   accepted: a physical line fails as soon as the buffered part exceeds
 *   maxLineLength (+1 octet of grace for the CR of a CRLF); a literal or file
 *   literal size fails at its header, before its first body octet.
 * - Limit violations are terminal: the core throws a FramingError and refuses
 *   every later call. The one exception is a synchronizing literal (`{N}`,
 *   `~{N}`) over maxLiteralSize: no body octet is on its way until the
 *   receiver sends a continuation, so its segment is delivered with
 *   `tooLarge` set and the handler may refuse it ('reject') and go on; only
 *   when the handler does not refuse it does the core fail. A `{N+}` over the
 *   limit is always fatal: its octets are already on the way.
 * - Body bytes are never buffered by the core: each body chunk handed out is a
 *   slice of an input chunk. Line text is a slice of the input chunk when the
 *   line lies within one chunk, else one concatenation of the carried pieces
 *   (each octet is copied at most once; LF is searched for only in new bytes).
 */
import { FramingError } from './errors.js';
import { literalOverLimit, parseLiteralHeader, type HeaderSyntax, type LiteralHeader } from './literal-header.js';
import { resolveLimits, type Limits } from './limits.js';
import { CR, LF } from './octets.js';

export type { LiteralHeader } from './literal-header.js';

export interface FramerHandler {
  /**
   * One segment: `text` is the physical-line text before the literal header,
   * or before the end of line when `literal` is null (the logical line ended).
   * Neither the header nor the CR/LF is part of `text`; `raw` is the whole
   * physical line without its end of line, so the announcement as sent is
   * `raw.subarray(text.length)` (`raw === text` when `literal` is null).
   * Both may share memory with an input chunk and are only valid during the
   * call unless the input chunks are never reused (true for node:stream).
   * Return 'skip' to have the announced body consumed by counting: the body
   * octets are then not delivered (onBodyEnd is still called).
   * Return 'reject' for a synchronizing literal (`{N}`, `~{N}`) that the
   * server refuses instead of sending a continuation: the sender then sends
   * no body, so the logical line ends at the header (no onBodyEnd). For
   * other literals 'reject' acts as 'skip' (their bytes come regardless).
   * A header marked `tooLarge` must be answered 'reject'; any other answer
   * fails the core with IMAP_LITERAL_TOO_LARGE.
   */
  onSegment(text: Buffer, literal: LiteralHeader | null, raw: Buffer): void | 'skip' | 'reject';
  /** A slice of the current body. Return false to pause the core after this chunk. */
  onBodyData(chunk: Buffer): boolean | void;
  /** The current body is complete (also for skipped and empty bodies). */
  onBodyEnd(): void;
}

export interface FramerOptions {
  limits?: Partial<Limits>;
  /** Recognise `%{part guid N}` (csync). Default true. */
  fileLiterals?: boolean;
  /** Recognise `~{N}` (IMAP BINARY). Default true. */
  binaryLiterals?: boolean;
}

const enum Mode {
  Line,
  Body,
}

const EMPTY = Buffer.alloc(0);

/** The error of input that ends inside a line or a body. */
export function unexpectedEnd(): FramingError {
  return new FramingError('IMAP_PROTOCOL_ERROR', 'Unexpected end of data');
}

export class FramerCore {
  readonly limits: Limits;
  private readonly handler: FramerHandler;
  private readonly syntax: HeaderSyntax;

  private mode: Mode = Mode.Line;
  /** Pieces of the current physical line seen so far (not containing LF). */
  private carry: Buffer[] = [];
  private carryLength = 0;
  /** Octets of the current body still to come. */
  private remaining = 0;
  private skipping = false;
  /** True between the start of a logical line's first segment and its end. */
  private inLogicalLine = false;

  /** Input not yet processed (the core is paused, or is processing it). */
  private queue: Buffer[] = [];
  private queuePos = 0;
  private queueBytes = 0;

  private paused = false;
  private running = false;
  private failed: Error | null = null;

  constructor(handler: FramerHandler, options: FramerOptions = {}) {
    this.handler = handler;
    this.limits = resolveLimits(options.limits);
    this.syntax = { fileLiterals: options.fileLiterals ?? true, binaryLiterals: options.binaryLiterals ?? true };
  }

  /**
   * Feed bytes. Returns true when every octet fed so far has been processed,
   * false when the core is paused with unprocessed input retained (the caller
   * waits and calls resume()). Throws FramingError on a framing violation.
   */
  push(chunk: Buffer): boolean {
    if (this.failed) throw this.failed;
    if (chunk.length > 0) {
      this.queue.push(chunk);
      this.queueBytes += chunk.length;
    }
    if (!this.paused && !this.running) this.run();
    return this.queueBytes === 0;
  }

  /** Stop processing after the current callback returns; input is retained. */
  pause(): void {
    this.paused = true;
  }

  /** Continue with retained input. Same return value as push(). */
  resume(): boolean {
    if (this.failed) throw this.failed;
    this.paused = false;
    if (!this.running) this.run();
    return this.queueBytes === 0;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Unprocessed input octets retained by the core. */
  get pendingBytes(): number {
    return this.queueBytes;
  }

  /** Octets of the current, incomplete physical line held by the core. */
  get carriedBytes(): number {
    return this.carryLength;
  }

  /** True when no logical line and no body is in progress. */
  get atLineBoundary(): boolean {
    return this.mode === Mode.Line && !this.inLogicalLine && this.carryLength === 0;
  }

  get inBody(): boolean {
    return this.mode === Mode.Body;
  }

  /** Octets of the current body not yet delivered. */
  get bodyRemaining(): number {
    return this.mode === Mode.Body ? this.remaining : 0;
  }

  /** Drop the rest of the current body by counting (the consumer went away). */
  skipBody(): void {
    if (this.mode === Mode.Body) this.skipping = true;
  }

  /**
   * Take back the unprocessed input. Only allowed at a logical-line boundary
   * (typically while paused right after a line): the returned octets belong
   * to whatever follows (a new transport after COMPRESS or STARTTLS).
   */
  detachRemainder(): Buffer {
    if (!this.atLineBoundary) {
      throw new Error('detachRemainder() is only possible between logical lines');
    }
    const rest = this.queue.length === 0 ? EMPTY : this.queue.length === 1 && this.queuePos === 0
      ? this.queue[0]!
      : Buffer.concat([this.queue[0]!.subarray(this.queuePos), ...this.queue.slice(1)]);
    this.queue = [];
    this.queuePos = 0;
    this.queueBytes = 0;
    return rest;
  }

  /** End of input: throws when a line or body was cut short. */
  end(): void {
    if (this.failed) throw this.failed;
    if (this.queueBytes > 0) throw new Error('end() called with unprocessed input (the core is paused)');
    if (!this.atLineBoundary) throw this.fail(unexpectedEnd());
  }

  /** Mark the core dead (after an error elsewhere); later calls throw `err`. */
  abort(err: Error): void {
    if (!this.failed) this.failed = err;
    this.queue = [];
    this.queueBytes = 0;
    this.carry = [];
    this.carryLength = 0;
  }

  private fail(err: FramingError): FramingError {
    this.abort(err);
    return err;
  }

  private run(): void {
    this.running = true;
    try {
      while (!this.paused && this.queue.length > 0) {
        const buf = this.queue[0]!;
        const start = this.queuePos;
        const pos = this.mode === Mode.Line ? this.lineStep(buf, start) : this.bodyStep(buf, start);
        if (this.failed) return;
        this.queueBytes -= pos - start;
        if (pos >= buf.length) {
          this.queue.shift();
          this.queuePos = 0;
        } else {
          this.queuePos = pos;
        }
      }
    } catch (err) {
      if (!this.failed) this.abort(err as Error);
      throw err;
    } finally {
      this.running = false;
    }
  }

  /** Deliver body octets from buf[pos..]; returns the new position. */
  private bodyStep(buf: Buffer, pos: number): number {
    const n = Math.min(this.remaining, buf.length - pos);
    const end = pos + n;
    this.remaining -= n;
    if (!this.skipping && n > 0 && this.handler.onBodyData(buf.subarray(pos, end)) === false) this.paused = true;
    if (this.remaining === 0) {
      this.mode = Mode.Line;
      this.skipping = false;
      // May resume(): a consumer that is done with the body need not drain first.
      this.handler.onBodyEnd();
    }
    return end;
  }

  /** Scan for the end of the physical line; returns the new position. */
  private lineStep(buf: Buffer, pos: number): number {
    const max = this.limits.maxLineLength;
    const lf = buf.indexOf(LF, pos);
    if (lf < 0) {
      const piece = pos === 0 ? buf : buf.subarray(pos);
      this.carry.push(piece);
      this.carryLength += piece.length;
      this.inLogicalLine = true;
      // The grace octet is the CR of a CRLF whose LF has not arrived yet.
      if (this.carryLength > max + 1 || (this.carryLength === max + 1 && piece[piece.length - 1] !== CR)) {
        throw this.fail(lineTooLong(this.carryLength, max));
      }
      return buf.length;
    }
    let line: Buffer;
    if (this.carryLength === 0) {
      line = buf.subarray(pos, lf);
    } else {
      this.carry.push(buf.subarray(pos, lf));
      line = Buffer.concat(this.carry, this.carryLength + lf - pos);
      this.carry = [];
      this.carryLength = 0;
    }
    let end = line.length;
    if (end > 0 && line[end - 1] === CR) end--;
    if (end > max) throw this.fail(lineTooLong(end, max));
    const text = end === line.length ? line : line.subarray(0, end);
    this.inLogicalLine = true;
    const header = parseLiteralHeader(text, this.syntax);
    if (header === null) {
      this.inLogicalLine = false;
      this.handler.onSegment(text, null, text);
      return lf + 1;
    }
    const h = header.header;
    const over = literalOverLimit(h, this.limits);
    if (over !== null) return this.refuseOversized(text, header.start, h, over, lf);
    this.mode = Mode.Body;
    this.remaining = h.size;
    this.skipping = false;
    const answer = this.handler.onSegment(text.subarray(0, header.start), h, text);
    if (answer === 'reject' && h.kind === 'literal' && !h.nonSynchronizing) {
      this.mode = Mode.Line;
      this.remaining = 0;
      this.inLogicalLine = false;
      return lf + 1;
    }
    if (answer === 'skip' || answer === 'reject') this.skipping = true;
    if (this.remaining === 0 && this.mode === Mode.Body) {
      this.mode = Mode.Line;
      this.skipping = false;
      this.handler.onBodyEnd();
    }
    return lf + 1;
  }

  /**
   * A header over its limit. Only a synchronizing literal can be refused and
   * survived (its sender waits for a continuation): the handler sees it with
   * `tooLarge` set and must answer 'reject'. Everything else is fatal.
   */
  private refuseOversized(text: Buffer, start: number, h: LiteralHeader, err: FramingError, lf: number): number {
    if (h.kind !== 'literal' || h.nonSynchronizing) throw this.fail(err);
    h.tooLarge = true;
    const answer = this.handler.onSegment(text.subarray(0, start), h, text);
    if (answer !== 'reject') throw this.fail(err);
    this.inLogicalLine = false;
    return lf + 1;
  }
}

function lineTooLong(actual: number, max: number): FramingError {
  return new FramingError('IMAP_PROTOCOL_ERROR', `Line of more than ${max} octets`,
    { limit: 'maxLineLength', actual, max });
}

