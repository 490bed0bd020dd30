/**
 * csync command lines: bytes -> CommandLine values (csync-wire.md §1.2-1.3).
 *
 * DlistParserCore is pure (fed Buffers, no node:stream) and sits on a
 * FramerCore: the framer delivers physical-line segments and literal bodies;
 * the text scanner (dlist-text.ts) tokenises the segments into the value
 * builder (dlist-builder.ts), which keeps the container stack across
 * segments (a LF inside a list or kvlist is whitespace; only at depth 0 does
 * it end the command); literal bodies are handled by dlist-bodies.ts.
 *
 * Invariants:
 * - Literals at or below smallLiteralThreshold are copied into one Buffer
 *   allocated at the header; larger literals and every file literal go to the
 *   BodySink, with SHA-1 computed on the way. A body without a writer is
 *   consumed by counting (its SHA-1 is still computed).
 * - A BodyWriter.write() returning false stops the core right after that
 *   chunk; nothing more is read until resume() (the adapter calls it from
 *   writer.onDrain).
 * - A syntax error never throws: the rest of the logical line is consumed
 *   (literal-aware, bodies skipped by counting; Cyrus eatline does the same)
 *   and the CommandLine carries `error`. Limit violations (line length,
 *   literal sizes, depth, atom length) are terminal FramingErrors, and every
 *   open BodyWriter is aborted.
 * - Text values are latin1 strings: one char per octet, byte-exact.
 */
import { FramerCore, unexpectedEnd, type LiteralHeader } from './framer-core.js';
import { latin1 } from './octets.js';
import { LiteralBodies } from './dlist-bodies.js';
import { CommandBuilder } from './dlist-builder.js';
import { DlistTextScanner } from './dlist-text.js';
import type { BodySink, BodyWriter, CommandLine } from './dlist-types.js';
import type { Limits } from './limits.js';

export interface DlistParserOptions {
  limits?: Partial<Limits>;
  /** Where big literals and file literals go; null => skipped (counted, hashed). */
  sink?: BodySink | null;
  /** Called once per logical line. May call pause() to stop right after it. */
  onCommand: (cmd: CommandLine) => void;
}

export class DlistParserCore {
  readonly limits: Limits;
  private readonly framer: FramerCore;
  private readonly onCommand: (cmd: CommandLine) => void;
  private readonly cmd: CommandBuilder;
  private readonly scanner: DlistTextScanner;
  private readonly bodies: LiteralBodies;

  constructor(options: DlistParserOptions) {
    this.onCommand = options.onCommand;
    // `~{N}` is not csync syntax (Cyrus reads it as an atom).
    this.framer = new FramerCore({
      onSegment: (text, literal) => this.segment(text, literal),
      onBodyData: (chunk) => this.bodies.data(chunk),
      onBodyEnd: () => this.bodies.end(),
    }, { limits: options.limits, fileLiterals: true, binaryLiterals: false });
    this.limits = this.framer.limits;
    this.cmd = new CommandBuilder(this.limits);
    this.scanner = new DlistTextScanner(this.cmd, this.limits);
    this.bodies = new LiteralBodies(this.cmd, this.limits, options.sink ?? null, () => this.framer.resume());
  }

  /** Consulted at every body header: may be swapped between commands. */
  get sink(): BodySink | null {
    return this.bodies.sink;
  }

  set sink(sink: BodySink | null) {
    this.bodies.sink = sink;
  }

  /**
   * Feed bytes. Returns true when all input has been processed and no body
   * writer is asking to wait; false when paused (by pause() or a writer:
   * see `blockedOn`). Throws FramingError on a framing violation.
   */
  push(chunk: Buffer): boolean {
    return this.guard(() => this.framer.push(chunk));
  }

  /** Continue after a pause (writer drained, or the consumer wants the next command). */
  resume(): boolean {
    this.bodies.blocked = null;
    return this.guard(() => this.framer.resume());
  }

  /** Stop after the current callback (e.g. from onCommand); input is retained. */
  pause(): void {
    this.framer.pause();
  }

  get isPaused(): boolean {
    return this.framer.isPaused;
  }

  /** The writer whose write() returned false: resume() once it drains. */
  get blockedOn(): BodyWriter | null {
    return this.bodies.blocked;
  }

  /** No command, value or body in progress. */
  get atCommandBoundary(): boolean {
    return this.cmd.verb === null && this.framer.atLineBoundary;
  }

  /** Unprocessed input octets retained (paused). */
  get pendingBytes(): number {
    return this.framer.pendingBytes;
  }

  /** Octets of an incomplete physical line held. */
  get carriedBytes(): number {
    return this.framer.carriedBytes;
  }

  /** Unprocessed octets after the last complete command (see FramerCore.detachRemainder). */
  detachRemainder(): Buffer {
    if (!this.atCommandBoundary) throw new Error('detachRemainder() is only possible between commands');
    return this.framer.detachRemainder();
  }

  /** End of input: throws FramingError("Unexpected end of data") inside a command. */
  end(): void {
    this.framer.end();
    if (this.cmd.verb !== null) {
      const err = unexpectedEnd();
      this.abort(err);
      throw err;
    }
  }

  /** Terminal stop: aborts the open body writer; later calls throw `err`. */
  abort(err: Error): void {
    this.framer.abort(err);
    this.bodies.abort(err);
  }

  private guard(f: () => boolean): boolean {
    try {
      const done = f();
      return done && this.bodies.blocked === null;
    } catch (err) {
      this.abort(err as Error);
      throw err;
    }
  }

  private segment(text: Buffer, literal: LiteralHeader | null): void | 'skip' {
    // csync-wire.md §1.3 rule 5: a csync server sends no continuation and the
    // client never waits for one, so the octets of an oversized `{N}` are on
    // their way like those of a `{N+}`: not refusing it lets the framer fail
    // with IMAP_LITERAL_TOO_LARGE (§1.6: a hard limit is fatal).
    if (literal?.tooLarge) return;
    const cmd = this.cmd;
    if (cmd.error === null && text.length > 0) {
      cmd.hold(text.length, 'text');
      this.scanner.scan(text, latin1(text, 0, text.length));
    }
    if (literal === null) {
      // End of a physical line: whitespace inside a container, the end of the
      // command at depth 0 (or whenever the line is being skipped).
      if (cmd.error === null && cmd.stack.length > 0) cmd.needSep = false;
      else this.onCommand(cmd.take());
      return;
    }
    if (cmd.error !== null) return 'skip';
    return this.bodies.start(literal);
  }
}
