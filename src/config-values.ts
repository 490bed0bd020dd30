/**
 * The error of a bad configuration and the readers of one imapd.conf value,
 * each as Cyrus 3.6.1 reads it (lib/libconfig.c): switches, C integers,
 * durations and enum spellings. See src/config.ts for the file format.
 */

/** sysexits.h EX_CONFIG: the exit status of every Cyrus configuration fatal(). */
export const EX_CONFIG = 78;

/** A configuration problem: the daemon must not start. */
export class ConfigError extends Error {
  /** Always EX_CONFIG: the exit status the command line uses. */
  readonly exitCode = EX_CONFIG;
  constructor(
    /** The file in which the problem was found ('<embedded>' for the built-in configuration). */
    readonly file: string,
    /** 1-based line number of the offending logical line's last physical line; 0 when not tied to a line. */
    readonly line: number,
    /** The option concerned (lower case), or '' when the key itself is unreadable. */
    readonly key: string,
    /** Plain-words description (Cyrus's own wording where Cyrus has one). */
    readonly detail: string,
  ) {
    super(
      `configuration error in ${file}${line > 0 ? ` line ${line}` : ''}${key ? ` (${key})` : ''}: ${detail}`,
    );
    this.name = 'ConfigError';
  }
}

// ---------------------------------------------------------------------------
// Value parsers

const INT32_MAX = 2147483647;

export type DurationUnit = 'd' | 'h' | 'm' | 's';

/**
 * Cyrus 3.6.1 config_parseduration: optional `-`, then groups of digits
 * each followed by a unit (`d`,`h`,`m`,`s`); a trailing bare number takes
 * `defunit`. The result is seconds. 3.6.1 does no overflow checking: its
 * `int` arithmetic wraps at 32 bits, and so does this function (the result
 * says when that happened, so the caller can warn). Returns the parse error
 * text instead of throwing.
 */
export function parseDuration(
  str: string,
  defunit: DurationUnit = 's',
): { ok: true; seconds: number; overflow: boolean } | { ok: false; error: string } {
  let s = str;
  if (s.length > 0 && isDigit(s.charCodeAt(s.length - 1))) s += defunit;
  let i = 0;
  let neg = false;
  if (s[0] === '-') {
    neg = true;
    i = 1;
  }
  // `exact` follows the same computation without wrapping, to detect overflow.
  let accum = 0;
  let duration = 0;
  let exact = 0;
  let exactAccum = 0;
  let sawDigit = false;
  for (; i < s.length; i++) {
    const ch = s[i]!;
    const code = s.charCodeAt(i);
    if (isDigit(code)) {
      accum = (Math.imul(accum, 10) + (code - 48)) | 0;
      exactAccum = exactAccum * 10 + (code - 48);
      sawDigit = true;
      continue;
    }
    if (!sawDigit) return { ok: false, error: `no digit before '${ch}'` };
    sawDigit = false;
    const mult = ch === 'd' ? 86400 : ch === 'h' ? 3600 : ch === 'm' ? 60 : ch === 's' ? 1 : 0;
    if (mult === 0) return { ok: false, error: `bad unit '${ch}'` };
    // Cyrus multiplies step by step (24, 60, 60); wrapping makes the order irrelevant.
    accum = Math.imul(accum, mult);
    duration = (duration + accum) | 0;
    exact += exactAccum * mult;
    accum = 0;
    exactAccum = 0;
  }
  const seconds = neg ? -duration | 0 : duration;
  return { ok: true, seconds, overflow: exact > INT32_MAX };
}

/** Cyrus config_parse_switch: 1 on, 0 off, -1 not a switch. */
export function parseSwitch(p: string): 0 | 1 | -1 {
  const c = p[0];
  if (c === '0' || c === 'n' || (c === 'o' && p[1] === 'f') || c === 'f') return 0;
  if (c === '1' || c === 'y' || (c === 'o' && p[1] === 'n') || c === 't') return 1;
  return -1;
}

/**
 * C `strtol(p, &end, 0)` requiring the whole string to be consumed, then
 * stored in an `int`, as Cyrus 3.6.1 does for INT options: `0x10` is 16,
 * `010` is 8, values beyond the 64-bit range clamp (strtol's ERANGE is not
 * checked) and the result is truncated to 32 bits. `overflow` tells that the
 * written number did not fit, so the caller can warn.
 */
export function parseCInt(p: string): { value: number; overflow: boolean } | null {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(p);
  if (!m) return null;
  const body = m[2]!;
  let v: bigint;
  if (/^0[xX]/.test(body)) v = BigInt(body);
  else if (body.length > 1 && body[0] === '0') v = BigInt('0o' + body.slice(1));
  else v = BigInt(body);
  if (m[1] === '-') v = -v;
  const LONG_MAX = (1n << 63n) - 1n;
  const LONG_MIN = -(1n << 63n);
  const clamped = v > LONG_MAX ? LONG_MAX : v < LONG_MIN ? LONG_MIN : v;
  const value = Number(BigInt.asIntN(32, clamped));
  return { value, overflow: BigInt(value) !== v };
}

/** Cyrus ENUM options also take switch spellings for on/off (lib/libconfig.c). */
export function normaliseEnum(v: string): string {
  if (v === '1' || v === 'yes' || v === 't' || v === 'true') return 'on';
  if (v === '0' || v === 'no' || v === 'f' || v === 'false') return 'off';
  return v;
}

function isDigit(code: number): boolean {
  return code >= 48 && code <= 57;
}

/** Cyrus Uisspace: the C locale's isspace. */
export function isSpace(ch: string | undefined): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\v' || ch === '\f' || ch === '\r';
}

/** An ASCII letter or digit (the characters of a key, with '-' and '_'). */
export function isAlnum(ch: string): boolean {
  return /^[A-Za-z0-9]$/.test(ch);
}
