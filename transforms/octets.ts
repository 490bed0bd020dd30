/** Octet values of the IMAP-family syntax, shared by the framer and the dlist parser, and latin1 text. */

export const HTAB = 9; /* '\t' */
export const LF = 10; /* '\n' */
export const VT = 11;
export const FF = 12;
export const CR = 13; /* '\r' */
export const SP = 32; /* ' ' */
export const DQUOTE = 34; /* '"' */
export const PERCENT = 37; /* '%' */
export const LPAREN = 40; /* '(' */
export const RPAREN = 41; /* ')' */
export const PLUS = 43; /* '+' */
export const D0 = 48; /* '0' */
export const D9 = 57; /* '9' */
export const BACKSLASH = 92; /* '\\' */
export const LBRACE = 123; /* '{' */
export const RBRACE = 125; /* '}' */
export const TILDE = 126; /* '~' */

interface Latin1Slicer {
  latin1Slice(start: number, end: number): string;
}

/** Octets start..end as a latin1 string (one char per octet); Buffer's fastest path. */
export function latin1(b: Buffer, start: number, end: number): string {
  return (b as unknown as Latin1Slicer).latin1Slice(start, end);
}
