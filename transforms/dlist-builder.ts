/**
 * The value builder of the dlist parser: the command line being assembled
 * (verb, arguments, staged bodies), the stack of open lists and kvlists,
 * the first syntax error, and the bound on the octets it holds. The text
 * scanner and the literal handling feed it values; it knows no octets.
 */
import { CommandError, FramingError, type CyrsyncError } from './errors.js';
import type { CommandLine, DlistItem, DlistValue, StagedBody } from './dlist-types.js';
import type { Limits } from './limits.js';

export interface Frame {
  kvlist: boolean;
  items: (DlistValue | DlistItem)[];
  /** kvlist: the key awaiting its value. */
  key: string | null;
}

export class CommandBuilder {
  verb: string | null = null;
  /** A value or key was just read: the next one needs whitespace first. */
  needSep = false;
  error: CyrsyncError | null = null;
  readonly stack: Frame[] = [];
  private args: DlistValue[] = [];
  private bodies: StagedBody[] = [];
  /**
   * Octets of the current command held in memory: segment text plus small
   * literals. Bounded by maxLineLength, so a command cannot grow without
   * limit through many segments (literal bodies, LF inside containers).
   */
  private held = 0;

  constructor(private readonly limits: Limits) {}

  /** The innermost kvlist when it awaits a key, else null. */
  keyFrame(): Frame | null {
    const n = this.stack.length;
    if (n === 0) return null;
    const f = this.stack[n - 1]!;
    return f.kvlist && f.key === null ? f : null;
  }

  /** Records a syntax error (the first one wins); the rest of the line is skipped. */
  syntax(message: string): void {
    this.fail(new CommandError('IMAP_PROTOCOL_ERROR', message));
  }

  fail(err: CyrsyncError): void {
    if (this.error === null) this.error = err;
  }

  /** The key of the innermost kvlist. */
  setKey(frame: Frame, key: string): void {
    frame.key = key;
    this.needSep = true;
  }

  addValue(v: DlistValue): void {
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

  addBody(body: StagedBody): void {
    this.bodies.push(body);
  }

  openFrame(kvlist: boolean): void {
    const max = this.limits.maxDepth;
    if (this.stack.length + 1 > max) {
      throw new FramingError('IMAP_PROTOCOL_ERROR', `Nesting deeper than ${max}`,
        { limit: 'maxDepth', actual: this.stack.length + 1, max });
    }
    this.stack.push({ kvlist, items: [], key: null });
    this.needSep = false;
  }

  /** `)`: false (and a syntax error) when nothing is open or a key lacks its value. */
  closeFrame(): boolean {
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

  /** Counts octets held in memory against maxLineLength. */
  hold(octets: number, what: 'text' | 'literal'): void {
    this.held += octets;
    const max = this.limits.maxLineLength;
    if (this.held > max) {
      throw new FramingError('IMAP_PROTOCOL_ERROR',
        `Command of more than ${max} octets of text and small literals` + (what === 'literal' ? ' (at a literal header)' : ''),
        { limit: 'maxLineLength', actual: this.held, max });
    }
  }

  /** The finished command line (arguments dropped when it has an error); the builder starts afresh. */
  take(): CommandLine {
    const cmd: CommandLine = this.error === null
      ? { verb: this.verb ?? '', args: this.args, bodies: this.bodies }
      : { verb: this.verb ?? '', args: [], bodies: this.bodies, error: this.error };
    this.verb = null;
    this.args = [];
    this.stack.length = 0;
    this.needSep = false;
    this.error = null;
    this.bodies = [];
    this.held = 0;
    return cmd;
  }
}
