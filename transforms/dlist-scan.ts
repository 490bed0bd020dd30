/**
 * Octet-level pieces of the dlist text scanner (csync-wire.md §1.3): the
 * octet classes, latin1 slices that do not pin the line they come from, and
 * the interning of short tokens.
 */
import { CR, DQUOTE, FF, HTAB, LF, LPAREN, RPAREN, SP, VT, latin1 } from './octets.js';
import type { DlistValue } from './dlist-types.js';

/** ws = SP / HTAB / CR / LF / VT / FF (§1.3). */
export const WS = new Uint8Array(256);
for (const c of [SP, HTAB, CR, LF, VT, FF]) WS[c] = 1;
/** atom-octet = any octet except SP, HTAB, LF, VT, FF, CR, "(", ")", DQUOTE. */
export const ATOM = new Uint8Array(256).fill(1);
for (const c of [SP, HTAB, CR, LF, VT, FF, LPAREN, RPAREN, DQUOTE]) ATOM[c] = 0;

/** The index of the first octet at or after `i` that is not an atom octet (or t.length). */
export function atomEnd(t: Buffer, i: number): number {
  const n = t.length;
  while (i < n && ATOM[t[i]!] === 1) i++;
  return i;
}

/**
 * Octets i..j as a string that does not keep `s` alive. V8 makes slices of
 * 13 or more characters "sliced strings" that reference their parent: a
 * mailbox name kept from a 50 MB APPLY MAILBOX line would pin the whole
 * line. Shorter slices are copies; longer values are decoded from `t`.
 */
export function text(t: Buffer, s: string, i: number, j: number): string {
  return j - i < 13 ? s.slice(i, j) : latin1(t, i, j);
}

export const NIL: DlistValue = Object.freeze({ kind: 'nil' }) as DlistValue;
/** `""`, frequent in records (USERID ""); shared and frozen like interned values. */
export const EMPTY_QUOTED: DlistValue = Object.freeze({ kind: 'quoted', value: '' }) as DlistValue;

/** Tokens up to this many octets are interned. */
export const INTERN_MAX = 64;
const INTERN_SLOTS = 4096;

/**
 * Interning of short tokens. A big APPLY MAILBOX repeats the same keys
 * (UID, MODSEQ, FLAGS, ...) and many values (\Seen, 0, timestamps) in every
 * record; handing out one string and one frozen value object per distinct
 * token, instead of fresh ones, roughly halves what the tree costs the
 * garbage collector. Direct-mapped by a hash of the octets; a hit is
 * confirmed octet by octet; a miss replaces the slot. Shared value objects
 * are frozen: parsed values are read-only.
 */
export class TokenInterner {
  private readonly strings: (string | undefined)[] = new Array<string | undefined>(INTERN_SLOTS);
  private readonly values: (DlistValue | undefined)[] = new Array<DlistValue | undefined>(INTERN_SLOTS);

  /** Octets i..j (at most INTERN_MAX) as a shared string. */
  string(t: Buffer, s: string, i: number, j: number): string {
    const slot = slotOf(t, i, j);
    const cand = this.strings[slot];
    if (cand !== undefined && sameOctets(cand, t, i, j)) return cand;
    return this.replace(slot, t, s, i, j);
  }

  /**
   * Octets i..j (at most INTERN_MAX) as an atom or flag value. A miss
   * returns a fresh object; only a token seen twice gets a shared (frozen) one.
   */
  value(t: Buffer, s: string, i: number, j: number, flag: boolean): DlistValue {
    const slot = slotOf(t, i, j);
    const cand = this.strings[slot];
    if (cand !== undefined && sameOctets(cand, t, i, j)) {
      const v = this.values[slot];
      if (v !== undefined && v.kind === (flag ? 'flag' : 'atom')) return v;
      const shared = Object.freeze({ kind: flag ? 'flag' : 'atom', value: cand }) as DlistValue;
      this.values[slot] = shared;
      return shared;
    }
    const str = this.replace(slot, t, s, i, j);
    return flag ? { kind: 'flag', value: str } : { kind: 'atom', value: str };
  }

  private replace(slot: number, t: Buffer, s: string, i: number, j: number): string {
    const str = text(t, s, i, j);
    this.strings[slot] = str;
    this.values[slot] = undefined;
    return str;
  }
}

function slotOf(t: Buffer, i: number, j: number): number {
  let h = t[i]!;
  for (let k = i + 1; k < j; k++) h = (Math.imul(h, 31) + t[k]!) | 0;
  return (h ^ (h >>> 13)) & (INTERN_SLOTS - 1);
}

function sameOctets(str: string, t: Buffer, i: number, j: number): boolean {
  if (str.length !== j - i) return false;
  for (let k = 0; k < str.length; k++) if (str.charCodeAt(k) !== t[i + k]) return false;
  return true;
}
