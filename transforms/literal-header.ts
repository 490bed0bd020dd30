/**
 * Literal headers at the end of a physical line (see framer-core.ts):
 *
 *   {N} {N+}            IMAP literal
 *   ~{N} ~{N+}          IMAP binary literal (RFC 3516), when `binaryLiterals`
 *   %{part guid N}      csync file literal, when `fileLiterals`
 *
 * A header opener must start a token: it is the first octet of the segment or
 * follows SP, HTAB or "(". Anything else (`foo{5}`) is ordinary line text.
 */
import { FramingError } from './errors.js';
import { CR, D0, D9, DQUOTE, HTAB, LBRACE, LF, LPAREN, PERCENT, PLUS, RBRACE, SP, TILDE, latin1 } from './octets.js';
import type { Limits } from './limits.js';

export interface LiteralHeader {
  kind: 'literal' | 'file';
  /** Number of body octets that follow the header's end of line. */
  size: number;
  /** `{N+}`: the sender does not wait for a continuation. Always true for file literals. */
  nonSynchronizing: boolean;
  /** `~{N}` (RFC 3516 binary literal). */
  binary: boolean;
  /** File literals only: partition and guid as sent (surrounding quotes removed). */
  partition?: string;
  guid?: string;
  /**
   * Set on a synchronizing literal (`{N}`, `~{N}`) whose size exceeds
   * maxLiteralSize. The sender waits for a continuation before it sends a
   * body octet, so the announcement is handed to the application like any
   * other and the application refuses it (answer 'reject', then NO/BAD to
   * the command). Any other answer is a fatal IMAP_LITERAL_TOO_LARGE.
   */
  tooLarge?: true;
}

/** Which header forms are recognised besides `{N}` / `{N+}`. */
export interface HeaderSyntax {
  fileLiterals: boolean;
  binaryLiterals: boolean;
}

/**
 * Recognise a literal header at the end of `t`. Scans backwards from the
 * end only: cost is proportional to the header, not the line.
 */
export function parseLiteralHeader(t: Buffer, syntax: HeaderSyntax): { start: number; header: LiteralHeader } | null {
  let j = t.length - 1;
  if (j < 2 || t[j] !== RBRACE) return null;
  j--;
  let plus = false;
  if (t[j] === PLUS) {
    plus = true;
    j--;
  }
  const digitsEnd = j + 1;
  while (j >= 0 && t[j]! >= D0 && t[j]! <= D9) j--;
  if (j === digitsEnd - 1 || j < 0) return null;
  const size = parseDigits(t, j + 1, digitsEnd);
  if (t[j] === LBRACE) {
    let open = j;
    let binary = false;
    if (syntax.binaryLiterals && j > 0 && t[j - 1] === TILDE && atTokenStart(t, j - 1)) {
      open = j - 1;
      binary = true;
    } else if (!atTokenStart(t, j)) {
      return null;
    }
    return { start: open, header: { kind: 'literal', size, nonSynchronizing: plus, binary } };
  }
  if (!syntax.fileLiterals || plus || t[j] !== SP) return null;
  // %{partition SP guid SP size}
  const guidEnd = j;
  j--;
  while (j >= 0 && isHeaderWordOctet(t[j]!)) j--;
  if (j < 0 || j === guidEnd - 1 || t[j] !== SP) return null;
  const guidStart = j + 1;
  const partEnd = j;
  j--;
  while (j >= 0 && isHeaderWordOctet(t[j]!)) j--;
  if (j < 1 || j === partEnd - 1 || t[j] !== LBRACE || t[j - 1] !== PERCENT) return null;
  if (!atTokenStart(t, j - 1)) return null;
  return {
    start: j - 1,
    header: {
      kind: 'file',
      size,
      nonSynchronizing: true,
      binary: false,
      partition: unquote(latin1(t, j + 1, partEnd)),
      guid: unquote(latin1(t, guidStart, guidEnd)),
    },
  };
}

/** The error for a header over its size limit, or null. */
export function literalOverLimit(h: LiteralHeader, limits: Limits): FramingError | null {
  if (h.kind === 'file') {
    const max = limits.maxFileLiteralSize;
    return h.size <= max ? null : new FramingError('IMAP_MESSAGE_TOO_LARGE',
      `File literal of ${h.size} octets exceeds the limit of ${max}`,
      { limit: 'maxFileLiteralSize', actual: h.size, max });
  }
  const max = limits.maxLiteralSize;
  return h.size <= max ? null : new FramingError(
    h.nonSynchronizing ? 'IMAP_LITERAL_MINUS_TOO_LARGE' : 'IMAP_LITERAL_TOO_LARGE',
    `Literal of ${h.size} octets exceeds the limit of ${max}`,
    { limit: 'maxLiteralSize', actual: h.size, max });
}

function isHeaderWordOctet(c: number): boolean {
  return c !== SP && c !== LBRACE && c !== RBRACE && c !== HTAB && c !== CR && c !== LF;
}

function atTokenStart(t: Buffer, i: number): boolean {
  if (i === 0) return true;
  const p = t[i - 1];
  return p === SP || p === HTAB || p === LPAREN;
}

function unquote(s: string): string {
  return s.length >= 2 && s.charCodeAt(0) === DQUOTE && s.charCodeAt(s.length - 1) === DQUOTE ? s.slice(1, -1) : s;
}

/** Decimal digits; values beyond 2^53 lose precision but stay above every limit. */
function parseDigits(t: Buffer, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end; i++) n = n * 10 + (t[i]! - D0);
  return n;
}
