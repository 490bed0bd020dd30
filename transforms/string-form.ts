/**
 * The string rules of Cyrus 3.6.1 (lib/prot.c `prot_printastring` /
 * `prot_printamap`, lib/imparse.c `imparse_isnatom`): which form a string
 * is written in (NIL, "", atom, quoted, literal), and which parsed atoms and
 * flags can be written back bare.
 */

/** Cyrus MAXQSTRING: atoms and quoted strings are shorter than this. */
export const MAX_QSTRING = 1024;

export type StringForm = 'nil' | 'empty' | 'atom' | 'quoted' | 'literal';

/**
 * imparse_isnatom: 0x1F is (oddly) an atom octet, TAB and other controls are
 * not; `[`, `]` and `+` are. Length must be below 1024.
 */
function isAtomOctet(c: number): boolean {
  if (c >= 0x80 || c < 0x1f || c === 0x7f) return false;
  switch (c) {
    case 0x20 /* SP */:
    case 0x7b /* { */:
    case 0x28 /* ( */:
    case 0x29 /* ) */:
    case 0x22 /* " */:
    case 0x25 /* % */:
    case 0x2a /* * */:
    case 0x5c /* \ */:
      return false;
    default:
      return true;
  }
}

/** isQCHAR of lib/prot.c, plus NUL (prot_printamap sends NUL as a literal). */
function isQuotedOctet(c: number): boolean {
  return !(c >= 0x80 || c === 0x00 || c === 0x0d || c === 0x0a || c === 0x22 || c === 0x25 || c === 0x5c);
}

/** Octets as a latin1 string (one char per octet) or a Buffer. */
export type Bytes = string | Buffer;

function octetAt(s: Bytes, i: number): number {
  return typeof s === 'string' ? s.charCodeAt(i) & 0xff : s[i]!;
}

/** Which form the string rules pick for `s` (csync-wire §1.5, backup-format §5.4). */
export function stringForm(s: Bytes | null): StringForm {
  if (s === null) return 'nil';
  const n = s.length;
  if (n === 0) return 'empty';
  if (n >= MAX_QSTRING) return 'literal';
  let atom = true;
  for (let i = 0; i < n; i++) {
    const c = octetAt(s, i);
    if (!isQuotedOctet(c)) return 'literal';
    if (atom && !isAtomOctet(c)) atom = false;
  }
  if (atom && !(n === 3 && isNilText(s))) return 'atom';
  return 'quoted';
}

function isNilText(s: Bytes): boolean {
  return typeof s === 'string' ? s === 'NIL' : s.length === 3 && s[0] === 0x4e && s[1] === 0x49 && s[2] === 0x4c;
}

/**
 * Octets that would change the framing if written bare: the parser's atom
 * terminators, plus a first octet that selects another value type. Used to
 * decide whether an `atom` / `flag` value can be written raw.
 */
export function isRawSafe(s: string, flag: boolean): boolean {
  const n = s.length;
  if (n === 0) return false;
  const first = s.charCodeAt(0);
  if (flag) {
    if (first !== 0x5c /* \ */) return false;
  } else if (first === 0x28 || first === 0x25 || first === 0x7b || first === 0x5c || first === 0x22) {
    return false;
  }
  if (!flag && s === 'NIL') return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) return false;
    switch (c) {
      case 0x00:
      case 0x20:
      case 0x09:
      case 0x0a:
      case 0x0b:
      case 0x0c:
      case 0x0d:
      case 0x28:
      case 0x29:
      case 0x22:
        return false;
      default:
    }
  }
  return true;
}
