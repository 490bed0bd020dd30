/**
 * The text scanner of the dlist parser: tokenises the text of one segment
 * (csync-wire.md §1.3) into the CommandBuilder. Octets are scanned in the
 * Buffer `t`; `s` is the same octets as a latin1 string, so short values are
 * copied out in JavaScript (no native call per token) while longer ones are
 * decoded from `t` (see text()). Every step returns the index after what it
 * read, or -1 once a syntax error is recorded (the rest of the line is then
 * skipped). Token lengths over maxAtomLength are terminal FramingErrors.
 */
import { FramingError } from './errors.js';
import type { CommandBuilder, Frame } from './dlist-builder.js';
import { EMPTY_QUOTED, INTERN_MAX, NIL, TokenInterner, WS, atomEnd, text } from './dlist-scan.js';
import { BACKSLASH, CR, DQUOTE, LBRACE, LF, LPAREN, PERCENT, RPAREN } from './octets.js';
import type { Limits } from './limits.js';

const N = 78;
const I = 73;
const L = 76;

export class DlistTextScanner {
  /** Result of the last readQuoted(). */
  private quoted = '';
  private readonly interner = new TokenInterner();
  private readonly maxAtom: number;

  constructor(private readonly cmd: CommandBuilder, limits: Limits) {
    this.maxAtom = limits.maxAtomLength;
  }

  /** Tokenise one segment's text; stops at the first syntax error. */
  scan(t: Buffer, s: string): void {
    const n = t.length;
    let i = this.cmd.verb === null ? this.readVerb(t, s) : 0;
    while (i >= 0 && i < n) {
      const c = t[i]!;
      if (WS[c] === 1) i = this.space(c, i);
      else if (c === RPAREN) i = this.cmd.closeFrame() ? i + 1 : -1;
      else i = this.token(t, s, i);
    }
  }

  /** verb = 1*(any octet except SP, HTAB, LF, VT, FF, CR, "(", ")", DQUOTE) */
  private readVerb(t: Buffer, s: string): number {
    const i = atomEnd(t, 0);
    if (i > this.maxAtom) this.tooLong('Command verb', i);
    this.cmd.verb = text(t, s, 0, i);
    if (i < t.length && WS[t[i]!] === 0) {
      this.cmd.syntax('Expected a space after the command verb');
      return -1;
    }
    return i;
  }

  /** Whitespace separates values; a bare CR may not end a command. */
  private space(c: number, i: number): number {
    if (c === CR && this.cmd.stack.length === 0) {
      this.cmd.syntax('CR without LF at the end of the command');
      return -1;
    }
    this.cmd.needSep = false;
    return i + 1;
  }

  /** A key in kvlist key position, else a value. */
  private token(t: Buffer, s: string, i: number): number {
    if (this.cmd.needSep) {
      this.cmd.syntax('Expected a space between values');
      return -1;
    }
    const f = this.cmd.keyFrame();
    return f === null ? this.readValue(t, s, i) : this.readKey(t, s, i, f);
  }

  /** key = astring */
  private readKey(t: Buffer, s: string, i: number, f: Frame): number {
    const c = t[i]!;
    if (c === DQUOTE) {
      const end = this.readQuoted(t, s, i);
      if (end >= 0) this.cmd.setKey(f, this.quoted);
      return end;
    }
    if (c === LPAREN || c === LBRACE || (c === PERCENT && i + 1 < t.length && (t[i + 1] === LPAREN || t[i + 1] === LBRACE))) {
      this.cmd.syntax('Expected a key in a kvlist');
      return -1;
    }
    const j = atomEnd(t, i + 1);
    if (j - i > this.maxAtom) this.tooLong('Key', j - i);
    this.cmd.setKey(f, j - i <= INTERN_MAX ? this.interner.string(t, s, i, j) : text(t, s, i, j));
    return j;
  }

  /** A list, a kvlist, a quoted string, NIL, an atom or a flag. */
  private readValue(t: Buffer, s: string, i: number): number {
    switch (t[i]) {
      case LPAREN:
        this.cmd.openFrame(false);
        return i + 1;
      case PERCENT:
        return this.readPercent(t, i);
      case DQUOTE: {
        const end = this.readQuoted(t, s, i);
        if (end >= 0) this.cmd.addValue(end === i + 2 ? EMPTY_QUOTED : { kind: 'quoted', value: this.quoted });
        return end;
      }
      case LBRACE:
        this.cmd.syntax('A literal header must end the line');
        return -1;
      default:
        return this.readAtom(t, s, i);
    }
  }

  /** `%(` opens a kvlist; a `%{` file literal header can only end the line. */
  private readPercent(t: Buffer, i: number): number {
    const d = i + 1 < t.length ? t[i + 1] : -1;
    if (d === LPAREN) {
      this.cmd.openFrame(true);
      return i + 2;
    }
    this.cmd.syntax(d === LBRACE ? 'A file literal header must end the line' : "'%' not followed by '(' or '{'");
    return -1;
  }

  /** NIL, an atom, or a flag (`\` first). */
  private readAtom(t: Buffer, s: string, i: number): number {
    const flag = t[i] === BACKSLASH;
    const j = atomEnd(t, i + 1);
    const len = j - i;
    if (len > this.maxAtom) this.tooLong(flag ? 'Flag' : 'Atom', len);
    if (len === 3 && t[i] === N && t[i + 1] === I && t[i + 2] === L) {
      this.cmd.addValue(NIL);
    } else if (len > INTERN_MAX) {
      this.cmd.addValue({ kind: flag ? 'flag' : 'atom', value: text(t, s, i, j) });
    } else {
      this.cmd.addValue(this.interner.value(t, s, i, j, flag));
    }
    return j;
  }

  /**
   * quoted = DQUOTE *( q-octet / "\" any-octet ) DQUOTE, no CR/LF inside.
   * Leaves the string in `quoted` and returns the index after the closing
   * quote, or -1 (syntax error recorded).
   */
  private readQuoted(t: Buffer, s: string, start: number): number {
    const n = t.length;
    let i = start + 1;
    let parts: string[] | null = null;
    let from = i;
    let length = 0;
    for (;;) {
      if (i >= n) return this.unterminated();
      const c = t[i]!;
      if (c === DQUOTE) break;
      if (c === BACKSLASH) {
        if (i + 1 >= n) return this.unterminated();
        (parts ??= []).push(text(t, s, from, i));
        length += i - from;
        from = i + 1;
        i += 2;
        continue;
      }
      if (c === CR || c === LF) {
        this.cmd.syntax('CR or LF inside a quoted string');
        return -1;
      }
      i++;
    }
    length += i - from;
    if (length > this.maxAtom) this.tooLong('Quoted string', length);
    const tail = text(t, s, from, i);
    this.quoted = parts === null ? tail : parts.join('') + tail;
    return i + 1;
  }

  private unterminated(): number {
    this.cmd.syntax('Unterminated quoted string');
    return -1;
  }

  private tooLong(what: string, length: number): never {
    const max = this.maxAtom;
    throw new FramingError('IMAP_PROTOCOL_ERROR', `${what} of ${length} octets exceeds the limit of ${max}`,
      { limit: 'maxAtomLength', actual: length, max });
  }
}
