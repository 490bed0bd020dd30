/**
 * csync command lines: bytes -> CommandLine values (csync-wire.md §1.2-1.3).
 *
 * DlistParserCore is pure (fed Buffers, no node:stream) and sits on a
 * FramerCore: the framer delivers physical-line segments and literal bodies,
 * this core tokenises the segments with a byte-level state machine and keeps
 * the container stack across segments (a LF inside a list or kvlist is
 * whitespace; only at depth 0 does it end the command).
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
import { createHash, type Hash } from 'node:crypto';
import { Writable } from 'node:stream';
import { CommandError, FramingError, type CyrsyncError } from './errors.js';
import { FramerCore, latin1, unexpectedEnd, type LiteralHeader } from './framer.js';
import type {
  BodySink,
  BodyWriter,
  CommandLine,
  DlistItem,
  DlistValue,
  StagedBody,
} from './dlist-types.js';
import type { Limits } from './limits.js';

const HTAB = 9;
const LF = 10;
const VT = 11;
const FF = 12;
const CR = 13;
const SP = 32;
const DQUOTE = 34; /* '"' */
const PERCENT = 37; /* '%' */
const LPAREN = 40; /* '(' */
const RPAREN = 41; /* ')' */
const BACKSLASH = 92; /* '\\' */
const LBRACE = 123; /* '{' */

/** ws = SP / HTAB / CR / LF / VT / FF (§1.3). */
const WS = new Uint8Array(256);
for (const c of [SP, HTAB, CR, LF, VT, FF]) WS[c] = 1;
/** atom-octet = any octet except SP, HTAB, LF, VT, FF, CR, "(", ")", DQUOTE. */
const ATOM = new Uint8Array(256).fill(1);
for (const c of [SP, HTAB, CR, LF, VT, FF, LPAREN, RPAREN, DQUOTE]) ATOM[c] = 0;

interface Frame {
  kvlist: boolean;
  items: (DlistValue | DlistItem)[];
  /** kvlist: the key awaiting its value. */
  key: string | null;
}

const enum BodyKind {
  /** Small literal value: copied into `buf`. */
  Small,
  /** Small literal used as a kvlist key. */
  Key,
  /** Big literal or file literal: streamed, hashed. */
  Stream,
}

interface BodyState {
  kind: BodyKind;
  header: LiteralHeader;
  buf: Buffer;
  filled: number;
  hash: Hash | null;
  writer: BodyWriter | null;
}

export interface DlistParserOptions {
  limits?: Partial<Limits>;
  /** Where big literals and file literals go; null => skipped (counted, hashed). */
  sink?: BodySink | null;
  /** Called once per logical line. May call pause() to stop right after it. */
  onCommand: (cmd: CommandLine) => void;
}

export class DlistParserCore {
  /** Consulted at every body header: may be swapped between commands. */
  sink: BodySink | null;
  readonly limits: Limits;
  private readonly framer: FramerCore;
  private readonly onCommand: (cmd: CommandLine) => void;

  private verb: string | null = null;
  private args: DlistValue[] = [];
  private stack: Frame[] = [];
  private needSep = false;
  private error: CyrsyncError | null = null;
  private bodies: StagedBody[] = [];
  /**
   * Octets of the current command held in memory: segment text plus small
   * literals. Bounded by maxLineLength, so a command cannot grow without
   * limit through many segments (literal bodies, LF inside containers).
   */
  private held = 0;
  private body: BodyState | null = null;
  private blocked: BodyWriter | null = null;

  constructor(options: DlistParserOptions) {
    this.sink = options.sink ?? null;
    this.onCommand = options.onCommand;
    // `~{N}` is not csync syntax (Cyrus reads it as an atom).
    this.framer = new FramerCore({
      onSegment: (text, literal) => this.segment(text, literal),
      onBodyData: (chunk) => this.bodyData(chunk),
      onBodyEnd: () => this.bodyEnd(),
    }, { limits: options.limits, fileLiterals: true, binaryLiterals: false });
    this.limits = this.framer.limits;
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
    this.blocked = null;
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
    return this.blocked;
  }

  /** No command, value or body in progress. */
  get atCommandBoundary(): boolean {
    return this.verb === null && this.framer.atLineBoundary;
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
    if (this.verb !== null) {
      const err = unexpectedEnd();
      this.abort(err);
      throw err;
    }
  }

  /** Terminal stop: aborts the open body writer; later calls throw `err`. */
  abort(err: Error): void {
    this.framer.abort(err);
    const b = this.body;
    this.body = null;
    this.blocked = null;
    if (b?.writer) {
      b.writer.abort(err);
      b.writer = null;
    }
  }

  private guard(f: () => boolean): boolean {
    try {
      const done = f();
      return done && this.blocked === null;
    } catch (err) {
      this.abort(err as Error);
      throw err;
    }
  }

  /* -------------------------------------------------------------------- */

  private segment(text: Buffer, literal: LiteralHeader | null): void | 'skip' {
    // csync-wire.md §1.3 rule 5: a csync server sends no continuation and the
    // client never waits for one, so the octets of an oversized `{N}` are on
    // their way like those of a `{N+}`: not refusing it lets the framer fail
    // with IMAP_LITERAL_TOO_LARGE (§1.6: a hard limit is fatal).
    if (literal?.tooLarge) return;
    if (this.error === null && text.length > 0) {
      this.hold(text.length, 'text');
      this.parseText(text, latin1(text, 0, text.length));
    }
    if (literal === null) {
      // End of a physical line: whitespace inside a container, the end of the
      // command at depth 0 (or whenever the line is being skipped).
      if (this.error === null && this.stack.length > 0) {
        this.needSep = false;
        return;
      }
      this.finishCommand();
      return;
    }
    if (this.error !== null) return 'skip';
    return this.startBody(literal);
  }

  private finishCommand(): void {
    const cmd: CommandLine = this.error === null
      ? { verb: this.verb ?? '', args: this.args, bodies: this.bodies }
      : { verb: this.verb ?? '', args: [], bodies: this.bodies, error: this.error };
    this.verb = null;
    this.args = [];
    this.stack = [];
    this.needSep = false;
    this.error = null;
    this.bodies = [];
    this.held = 0;
    this.onCommand(cmd);
  }

  private syntax(message: string): void {
    if (this.error === null) this.error = new CommandError('IMAP_PROTOCOL_ERROR', message);
  }

  private startBody(h: LiteralHeader): void | 'skip' {
    if (this.verb === null) {
      this.verb = '';
      this.syntax('Literal in place of the command verb');
      return 'skip';
    }
    if (this.needSep) {
      this.syntax('Missing space before a literal');
      return 'skip';
    }
    const frame = this.stack.length > 0 ? this.stack[this.stack.length - 1]! : null;
    const keyPos = frame !== null && frame.kvlist && frame.key === null;
    if (h.kind === 'file') {
      if (keyPos) {
        this.syntax('File literal in place of a kvlist key');
        return 'skip';
      }
      return this.openStream(h, { kind: 'file', partition: h.partition!, guid: h.guid!.toLowerCase(), size: h.size });
    }
    if (h.size <= this.limits.smallLiteralThreshold) {
      this.hold(h.size, 'literal');
      this.body = {
        kind: keyPos ? BodyKind.Key : BodyKind.Small,
        header: h,
        buf: Buffer.allocUnsafe(h.size),
        filled: 0,
        hash: null,
        writer: null,
      };
      return;
    }
    if (keyPos) {
      this.syntax(`Literal key of ${h.size} octets`);
      return 'skip';
    }
    return this.openStream(h, { kind: 'literal', size: h.size });
  }

  private openStream(h: LiteralHeader, bh: Parameters<BodySink['open']>[0]): void | 'skip' {
    let writer: BodyWriter | null = null;
    if (this.sink !== null) {
      try {
        writer = this.sink.open(bh);
      } catch (err) {
        this.error = new CommandError('IMAP_IOERROR', `Cannot store a body: ${(err as Error).message}`, { cause: err });
        return 'skip';
      }
    }
    this.body = { kind: BodyKind.Stream, header: h, buf: EMPTY, filled: 0, hash: createHash('sha1'), writer };
  }

  private bodyData(chunk: Buffer): boolean {
    const b = this.body;
    if (b === null) return true;
    if (b.kind !== BodyKind.Stream) {
      chunk.copy(b.buf, b.filled);
      b.filled += chunk.length;
      return true;
    }
    b.hash!.update(chunk);
    const w = b.writer;
    if (w === null) return true;
    let ok: boolean;
    try {
      ok = w.write(chunk);
    } catch (err) {
      this.writerFailed(b, err as Error);
      return true;
    }
    if (ok === false) {
      this.blocked = w;
      return false;
    }
    return true;
  }

  private writerFailed(b: BodyState, err: Error): void {
    const w = b.writer;
    b.writer = null;
    if (this.error === null) {
      this.error = new CommandError('IMAP_IOERROR', `Cannot store a body: ${err.message}`, { cause: err });
    }
    try {
      w?.abort(err);
    } catch {
      // The writer already failed; its abort is best effort.
    }
  }

  private bodyEnd(): void {
    const b = this.body;
    this.body = null;
    if (b === null) return;
    if (b.kind === BodyKind.Key) {
      if (b.buf.indexOf(0) >= 0) {
        this.syntax('NUL in a literal used as a key');
        return;
      }
      this.stack[this.stack.length - 1]!.key = latin1(b.buf, 0, b.buf.length);
      this.needSep = true;
      return;
    }
    if (b.kind === BodyKind.Small) {
      this.addValue({ kind: 'literal', value: b.buf });
      return;
    }
    const sha1 = b.hash!.digest('hex');
    if (this.blocked !== null && this.blocked === b.writer) {
      // end() takes over the writer's buffered octets (and `done` reports
      // them); after end() no 'drain' comes, so waiting for one would stall.
      this.blocked = null;
      this.framer.resume();
    }
    let staged: StagedBody | null = null;
    if (b.writer !== null) {
      try {
        staged = b.writer.end(sha1);
        this.bodies.push(staged);
      } catch (err) {
        this.writerFailed(b, err as Error);
      }
    }
    const h = b.header;
    if (h.kind === 'file') {
      this.addValue({ kind: 'file', partition: h.partition!, guid: h.guid!, size: h.size, sha1, body: staged });
    } else {
      this.addValue({ kind: 'bigliteral', size: h.size, sha1, body: staged });
    }
  }

  private addValue(v: DlistValue): void {
    this.needSep = true;
    const n = this.stack.length;
    if (n === 0) {
      this.args.push(v);
      return;
    }
    const f = this.stack[n - 1]!;
    if (f.kvlist) {
      // A value in key position cannot be reached: keys are read separately.
      f.items.push({ key: f.key!, value: v });
      f.key = null;
    } else {
      f.items.push(v);
    }
  }

  private hold(octets: number, what: 'text' | 'literal'): void {
    this.held += octets;
    const max = this.limits.maxLineLength;
    if (this.held > max) {
      const err = new FramingError('IMAP_PROTOCOL_ERROR',
        `Command of more than ${max} octets of text and small literals` + (what === 'literal' ? ' (at a literal header)' : ''),
        { limit: 'maxLineLength', actual: this.held, max });
      throw err;
    }
  }

  private tooLong(what: string, length: number): never {
    const max = this.limits.maxAtomLength;
    throw new FramingError('IMAP_PROTOCOL_ERROR', `${what} of ${length} octets exceeds the limit of ${max}`,
      { limit: 'maxAtomLength', actual: length, max });
  }

  /**
   * Tokenise one segment's text. Stops at the first syntax error. `s` is
   * the same octets as a latin1 string: octets are scanned in `t`, short
   * values are copied out of `s` in JavaScript (no native call per token),
   * longer ones are decoded from `t` (see text()).
   */
  private parseText(t: Buffer, s: string): void {
    const n = t.length;
    let i = 0;
    if (this.verb === null) {
      // verb = 1*(any octet except SP, HTAB, LF, VT, FF, CR, "(", ")", DQUOTE)
      while (i < n && ATOM[t[i]!] === 1) i++;
      if (i > this.limits.maxAtomLength) this.tooLong('Command verb', i);
      this.verb = text(t, s, 0, i);
      if (i < n && WS[t[i]!] === 0) {
        this.syntax('Expected a space after the command verb');
        return;
      }
    }
    const maxAtom = this.limits.maxAtomLength;
    while (i < n) {
      const c = t[i]!;
      if (WS[c] === 1) {
        if (c === CR && this.stack.length === 0) {
          this.syntax('CR without LF at the end of the command');
          return;
        }
        this.needSep = false;
        i++;
        continue;
      }
      if (c === RPAREN) {
        if (!this.closeFrame()) return;
        i++;
        continue;
      }
      if (this.needSep) {
        this.syntax('Expected a space between values');
        return;
      }
      const depth = this.stack.length;
      if (depth > 0) {
        const f = this.stack[depth - 1]!;
        if (f.kvlist && f.key === null) {
          // key = astring
          if (c === DQUOTE) {
            const end = this.readQuoted(t, s, i);
            if (end < 0) return;
            f.key = this.quoted!;
            i = end;
          } else if (c === LPAREN || c === LBRACE || (c === PERCENT && i + 1 < n && (t[i + 1] === LPAREN || t[i + 1] === LBRACE))) {
            this.syntax('Expected a key in a kvlist');
            return;
          } else {
            let j = i + 1;
            let h = c;
            for (; j < n; j++) {
              const d = t[j]!;
              if (ATOM[d] === 0) break;
              h = (Math.imul(h, 31) + d) | 0;
            }
            if (j - i > maxAtom) this.tooLong('Key', j - i);
            f.key = j - i <= INTERN_MAX ? this.intern(t, s, i, j, h) : text(t, s, i, j);
            i = j;
          }
          this.needSep = true;
          continue;
        }
      }
      switch (c) {
        case LPAREN:
          this.openFrame(false);
          i++;
          break;
        case PERCENT: {
          const d = i + 1 < n ? t[i + 1] : -1;
          if (d === LPAREN) {
            this.openFrame(true);
            i += 2;
          } else if (d === LBRACE) {
            this.syntax('A file literal header must end the line');
            return;
          } else {
            this.syntax("'%' not followed by '(' or '{'");
            return;
          }
          break;
        }
        case DQUOTE: {
          const end = this.readQuoted(t, s, i);
          if (end < 0) return;
          this.addValue(end === i + 2 ? EMPTY_QUOTED : { kind: 'quoted', value: this.quoted! });
          i = end;
          break;
        }
        case LBRACE:
          this.syntax('A literal header must end the line');
          return;
        default: {
          let j = i + 1;
          let h = c;
          for (; j < n; j++) {
            const d = t[j]!;
            if (ATOM[d] === 0) break;
            h = (Math.imul(h, 31) + d) | 0;
          }
          const len = j - i;
          if (len > maxAtom) this.tooLong(c === BACKSLASH ? 'Flag' : 'Atom', len);
          if (len === 3 && c === 78 /* N */ && t[i + 1] === 73 /* I */ && t[i + 2] === 76 /* L */) {
            this.addValue(NIL);
          } else if (len > INTERN_MAX) {
            this.addValue({ kind: c === BACKSLASH ? 'flag' : 'atom', value: text(t, s, i, j) });
          } else {
            this.addValue(this.internValue(t, s, i, j, h, c === BACKSLASH));
          }
          i = j;
        }
      }
    }
  }

  /** Result of the last readQuoted(). */
  private quoted: string | null = null;

  /*
   * Interning of short tokens. A big APPLY MAILBOX repeats the same keys
   * (UID, MODSEQ, FLAGS, ...) and many values (\Seen, 0, timestamps) in
   * every record; handing out one string and one frozen value object per
   * distinct token, instead of fresh ones, roughly halves what the tree
   * costs the garbage collector. Direct-mapped by a hash computed during the
   * scan; a hit is confirmed octet by octet; a miss replaces the slot.
   * Shared value objects are frozen: parsed values are read-only.
   */
  private readonly internStrings: (string | undefined)[] = new Array<string | undefined>(INTERN_SLOTS);
  private readonly internValues: (DlistValue | undefined)[] = new Array<DlistValue | undefined>(INTERN_SLOTS);

  private intern(t: Buffer, s: string, i: number, j: number, h: number): string {
    const slot = (h ^ (h >>> 13)) & (INTERN_SLOTS - 1);
    const cand = this.internStrings[slot];
    if (cand !== undefined && sameOctets(cand, t, i, j)) return cand;
    const str = text(t, s, i, j);
    this.internStrings[slot] = str;
    this.internValues[slot] = undefined;
    return str;
  }

  /** A miss returns a fresh object; only a token seen twice gets a shared (frozen) one. */
  private internValue(t: Buffer, s: string, i: number, j: number, h: number, flag: boolean): DlistValue {
    const slot = (h ^ (h >>> 13)) & (INTERN_SLOTS - 1);
    const cand = this.internStrings[slot];
    if (cand !== undefined && sameOctets(cand, t, i, j)) {
      const v = this.internValues[slot];
      if (v !== undefined && v.kind === (flag ? 'flag' : 'atom')) return v;
      const shared = Object.freeze({ kind: flag ? 'flag' : 'atom', value: cand }) as DlistValue;
      this.internValues[slot] = shared;
      return shared;
    }
    const str = text(t, s, i, j);
    this.internStrings[slot] = str;
    this.internValues[slot] = undefined;
    return flag ? { kind: 'flag', value: str } : { kind: 'atom', value: str };
  }

  /**
   * quoted = DQUOTE *( q-octet / "\" any-octet ) DQUOTE, no CR/LF inside.
   * Returns the index after the closing quote, or -1 (syntax error set).
   */
  private readQuoted(t: Buffer, s: string, start: number): number {
    const n = t.length;
    let i = start + 1;
    let parts: string[] | null = null;
    let from = i;
    let length = 0;
    for (;;) {
      if (i >= n) {
        this.syntax('Unterminated quoted string');
        return -1;
      }
      const c = t[i]!;
      if (c === DQUOTE) break;
      if (c === BACKSLASH) {
        if (i + 1 >= n) {
          this.syntax('Unterminated quoted string');
          return -1;
        }
        (parts ??= []).push(text(t, s, from, i));
        length += i - from;
        from = i + 1;
        i += 2;
        continue;
      }
      if (c === CR || c === LF) {
        this.syntax('CR or LF inside a quoted string');
        return -1;
      }
      i++;
    }
    length += i - from;
    if (length > this.limits.maxAtomLength) this.tooLong('Quoted string', length);
    const tail = text(t, s, from, i);
    this.quoted = parts === null ? tail : parts.join('') + tail;
    return i + 1;
  }

  private openFrame(kvlist: boolean): void {
    const max = this.limits.maxDepth;
    if (this.stack.length + 1 > max) {
      throw new FramingError('IMAP_PROTOCOL_ERROR', `Nesting deeper than ${max}`,
        { limit: 'maxDepth', actual: this.stack.length + 1, max });
    }
    this.stack.push({ kvlist, items: [], key: null });
    this.needSep = false;
  }

  private closeFrame(): boolean {
    const f = this.stack.pop();
    if (f === undefined) {
      this.syntax("Unexpected ')'");
      return false;
    }
    if (f.key !== null) {
      this.syntax(`Missing value for key ${f.key}`);
      return false;
    }
    this.addValue(f.kvlist
      ? { kind: 'kvlist', items: f.items as DlistItem[] }
      : { kind: 'list', items: f.items as DlistValue[] });
    return true;
  }
}

/** Tokens up to this many octets are interned. */
const INTERN_MAX = 64;
const INTERN_SLOTS = 4096;

/**
 * Octets i..j as a string that does not keep `s` alive. V8 makes slices of
 * 13 or more characters "sliced strings" that reference their parent: a
 * mailbox name kept from a 50 MB APPLY MAILBOX line would pin the whole
 * line. Shorter slices are copies; longer values are decoded from `t`.
 */
function text(t: Buffer, s: string, i: number, j: number): string {
  return j - i < 13 ? s.slice(i, j) : latin1(t, i, j);
}

function sameOctets(str: string, t: Buffer, i: number, j: number): boolean {
  if (str.length !== j - i) return false;
  for (let k = 0; k < str.length; k++) if (str.charCodeAt(k) !== t[i + k]) return false;
  return true;
}

const EMPTY = Buffer.alloc(0);
const NIL: DlistValue = Object.freeze({ kind: 'nil' }) as DlistValue;
/** `""`, frequent in records (USERID ""); shared and frozen like interned values. */
const EMPTY_QUOTED: DlistValue = Object.freeze({ kind: 'quoted', value: '' }) as DlistValue;

/* ------------------------------------------------------------------------ */
/* Convenience: whole buffers                                               */
/* ------------------------------------------------------------------------ */

export interface ParseCommandLinesOptions {
  limits?: Partial<Limits>;
  /** Default: none (big bodies skipped, SHA-1 still computed). See memoryBodySink(). */
  sink?: BodySink | null;
}

/**
 * Parse a whole buffer of command lines synchronously. Throws FramingError
 * on a limit violation or when the buffer ends inside a command. Writers
 * that return false are not waited for (their write() already took the chunk).
 */
export function parseCommandLines(buf: Buffer, opts: ParseCommandLinesOptions = {}): CommandLine[] {
  const out: CommandLine[] = [];
  const core = new DlistParserCore({ limits: opts.limits, sink: opts.sink ?? null, onCommand: (c) => out.push(c) });
  let done = core.push(buf);
  while (!done) done = core.resume();
  core.end();
  return out;
}

/** A StagedBody whose `ref` is the collected Buffer. */
export interface MemoryStagedBody extends StagedBody {
  readonly ref: Buffer;
}

/** A BodySink that keeps every body in memory (tests and tools only). */
export function memoryBodySink(): BodySink {
  return {
    open(): BodyWriter {
      const chunks: Buffer[] = [];
      return {
        write(chunk: Buffer): boolean {
          chunks.push(Buffer.from(chunk));
          return true;
        },
        onDrain(cb: () => void): void {
          queueMicrotask(cb);
        },
        end(): StagedBody {
          const body: MemoryStagedBody = { done: Promise.resolve(), ref: Buffer.concat(chunks) };
          return body;
        },
        abort(): void {
          chunks.length = 0;
        },
      };
    },
  };
}

/* ------------------------------------------------------------------------ */
/* Stream adapter                                                           */
/* ------------------------------------------------------------------------ */

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
