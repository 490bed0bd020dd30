/**
 * Dlist output, the pure core: the exact octets Cyrus 3.6.1 writes
 * (imap/dlist.c `dlist_print`, lib/prot.c `prot_printliteral`; the string
 * rules are in string-form.ts).
 *
 * `encode*Parts` turn values into parts, each either a Buffer of finished
 * octets or a body still to be streamed (`DlistFile` or `DlistBigLiteral`
 * with a `source`); a body part's header (`%{p g n}` CRLF, `{n}` CRLF) is
 * already in the preceding Buffer. Text is latin1 (one char per octet);
 * nothing is ever re-encoded. Containers use single SP separators, no other
 * whitespace (csync-wire §1.5, backup-format §5.3).
 */
import { CyrsyncError } from './errors.js';
import type { DlistBigLiteral, DlistFile, DlistItem, DlistValue } from './dlist-types.js';
import { isRawSafe, stringForm, type Bytes } from './string-form.js';

/**
 * How literals are written and whether parsed values keep their wire form.
 *
 * - `server`: `{N}` literals. Upstream 3.6.1 source marks the server's
 *   output stream as a client (`prot_setisclient(sync_out, 1)`), which makes
 *   `prot_printliteral` write `{N+}`; the Debian 3.6.1 build recorded in the
 *   fixtures writes `{N}` (`VALUE {7}` of 03-incremental-replica), as
 *   3.6.5+ do. Clients 3.4.8+/3.6.5+/3.8.3+/3.10+ reject `{N+}` and every
 *   client accepts `{N}`, so a server writes `{N}` (csync-wire §1.5, §8.1).
 * - `client`: `{N+}` literals (clients never wait for a continuation).
 * - `backup`: canonical output (backup-format §5.4) with synchronizing
 *   `{N}` literals, the form of cyrsync's backup data files: parsed atoms,
 *   quoted strings and literals are re-emitted by the string rules, as Cyrus
 *   does after parsing them into DL_ATOM / DL_BUF. Cyrus's own backupd writes
 *   `{N+}` there, but the Cyrus 3.6.1 tools stop at the first `{N+}` that is
 *   not a file literal, so its backups of users with such values fail
 *   `ctl_backups verify`; written with `{N}` they verify.
 * - `canonical-client`: canonical output with `{N+}` (how sync_client prints).
 *
 * Outside canonical mode a parsed `quoted` stays quoted and a parsed
 * `literal` stays a literal, so re-serializing what a real Cyrus peer sent
 * gives back its bytes.
 */
export type SerializeMode = 'server' | 'client' | 'backup' | 'canonical-client' | SerializeOptions;

export interface SerializeOptions {
  /** `sync` => `{N}`, `nonsync` => `{N+}` */
  literal: 'sync' | 'nonsync';
  /** re-emit parsed atom/quoted/literal values by the string rules */
  canonical: boolean;
}

export function resolveMode(mode: SerializeMode): SerializeOptions {
  switch (mode) {
    case 'server':
      return SERVER;
    case 'client':
      return CLIENT;
    case 'backup':
      return BACKUP;
    case 'canonical-client':
      return CANONICAL_CLIENT;
    default:
      return mode;
  }
}

const SERVER: SerializeOptions = Object.freeze({ literal: 'sync', canonical: false });
const CLIENT: SerializeOptions = Object.freeze({ literal: 'nonsync', canonical: false });
const BACKUP: SerializeOptions = Object.freeze({ literal: 'sync', canonical: true });
const CANONICAL_CLIENT: SerializeOptions = Object.freeze({ literal: 'nonsync', canonical: true });

/** A body to stream after its header: a file literal or a big literal with a source. */
export type BodyPart = DlistFile | DlistBigLiteral;

/** Finished octets, or a body still to be streamed (its header already emitted). */
export type OutputPart = Buffer | BodyPart;

/** Values the serializer cannot write (negative numbers, sourceless bodies...). */
export function badValue(message: string): CyrsyncError {
  return new CyrsyncError('IMAP_INTERNAL', message);
}

// eslint-disable-next-line no-control-regex -- the class is every octet value, NUL included
const NOT_LATIN1 = /[^\x00-\xff]/;

/** Text must be one char per octet; anything else would be silently mangled. */
function checkLatin1(s: string): void {
  if (NOT_LATIN1.test(s)) throw badValue(`text ${printable(s)} holds characters above U+00FF; pass octets (latin1) or a Buffer`);
}

function printable(s: string): string {
  return JSON.stringify(s.length > 40 ? s.slice(0, 40) + '...' : s);
}

// ---------------------------------------------------------------------------
// Encoder: appends text and buffers, merging small pieces

const MERGE_LIMIT = 64 * 1024;

class Encoder {
  readonly parts: OutputPart[] = [];
  private text = '';
  constructor(readonly opts: SerializeOptions) {}

  put(s: string): void {
    this.text += s;
    if (this.text.length >= MERGE_LIMIT) this.flushText();
  }

  putBuffer(b: Buffer): void {
    if (b.length < 256) {
      this.put(b.toString('latin1'));
      return;
    }
    this.flushText();
    this.parts.push(b);
  }

  putBody(b: BodyPart): void {
    this.flushText();
    this.parts.push(b);
  }

  finish(): OutputPart[] {
    this.flushText();
    return this.parts;
  }

  /** Parts completed so far (text below the merge limit stays pending). */
  take(): OutputPart[] {
    const p = this.parts.splice(0, this.parts.length);
    return p;
  }

  private flushText(): void {
    if (this.text.length > 0) {
      this.parts.push(Buffer.from(this.text, 'latin1'));
      this.text = '';
    }
  }

  literalHeader(n: number): string {
    return this.opts.literal === 'sync' ? `{${n}}\r\n` : `{${n}+}\r\n`;
  }

  /** `{N}`/`{N+}` CRLF octets */
  literal(v: Bytes): void {
    this.put(this.literalHeader(v.length));
    if (typeof v === 'string') this.put(v);
    else this.putBuffer(v);
  }

  /** The string rules: NIL / "" / atom / quoted / literal. */
  string(v: Bytes | null): void {
    if (typeof v === 'string') checkLatin1(v);
    switch (stringForm(v)) {
      case 'nil':
        this.put('NIL');
        return;
      case 'empty':
        this.put('""');
        return;
      case 'atom':
        this.put(typeof v === 'string' ? v : v!.toString('latin1'));
        return;
      case 'quoted':
        this.put('"' + (typeof v === 'string' ? v : v!.toString('latin1')) + '"');
        return;
      case 'literal':
        this.literal(v!);
        return;
    }
  }

  /**
   * A parsed quoted string kept quoted: backslash-escape `"` and `\` (Cyrus
   * readers honour them); CR, LF and NUL cannot travel quoted, so such a value
   * becomes a literal.
   */
  quoted(v: string): void {
    checkLatin1(v);
    let escape = false;
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i);
      if (c === 0x0d || c === 0x0a || c === 0x00) {
        this.literal(v);
        return;
      }
      if (c === 0x22 || c === 0x5c) escape = true;
    }
    this.put('"' + (escape ? v.replace(/["\\]/g, '\\$&') : v) + '"');
  }

  value(v: DlistValue, depth: number): void {
    if (depth > MAX_DEPTH) throw badValue(`dlist nested deeper than ${MAX_DEPTH} levels`);
    switch (v.kind) {
      case 'nil':
        this.put('NIL');
        return;
      case 'atom':
        checkLatin1(v.value);
        if (!this.opts.canonical && isRawSafe(v.value, false)) this.put(v.value);
        else this.string(v.value);
        return;
      case 'flag':
        checkLatin1(v.value);
        // Cyrus writes flags verbatim (DL_FLAG); one that would break the
        // framing is written by the string rules instead.
        if (isRawSafe(v.value, true)) this.put(v.value);
        else this.string(v.value);
        return;
      case 'quoted':
        if (this.opts.canonical) this.string(v.value);
        else this.quoted(v.value);
        return;
      case 'literal':
        if (this.opts.canonical) this.string(v.value);
        else this.literal(v.value);
        return;
      case 'string':
        this.string(v.value);
        return;
      case 'num':
        this.put(decimal(v.value));
        return;
      case 'hex':
        this.put(hex64(v.value));
        return;
      case 'list':
      case 'kvlist':
        // Not lazy: nothing is yielded, every part stays for finish().
        for (const _ of this.container(v, depth, false)) {
          /* unreachable */
        }
        return;
      case 'file':
        checkFileHeader(v);
        this.put('%{');
        this.string(v.partition);
        this.put(' ');
        this.string(v.guid.toLowerCase());
        this.put(` ${v.size}}\r\n`);
        this.putBody(v);
        return;
      case 'bigliteral':
        checkBigLiteral(v);
        this.put(this.literalHeader(v.size));
        this.putBody(v);
        return;
      default: {
        const never: never = v;
        throw badValue(`unknown dlist kind ${(never as { kind: string }).kind}`);
      }
    }
  }

  /**
   * A list or kvlist. A generator so that a writer can hand on finished parts
   * after each member (a FULLMAILBOX line of many records never sits whole
   * in memory); synchronous callers simply exhaust it.
   */
  *container(v: DlistValue & { kind: 'list' | 'kvlist' }, depth: number, lazy: boolean): Generator<OutputPart[], void, undefined> {
    if (depth > MAX_DEPTH) throw badValue(`dlist nested deeper than ${MAX_DEPTH} levels`);
    const kv = v.kind === 'kvlist';
    this.put(kv ? '%(' : '(');
    const n = v.items.length;
    for (let i = 0; i < n; i++) {
      if (i > 0) this.put(' ');
      let child: DlistValue;
      if (kv) {
        const it = (v.items as DlistItem[])[i]!;
        this.string(it.key);
        this.put(' ');
        child = it.value;
      } else {
        child = (v.items as DlistValue[])[i]!;
      }
      if (child.kind === 'list' || child.kind === 'kvlist') yield* this.container(child, depth + 1, lazy);
      else this.value(child, depth + 1);
      if (lazy && this.parts.length > 0) yield this.take();
    }
    this.put(')');
  }

  /** `KEY SP value`; keys go through the string rules (prot_printastring). */
  item(it: DlistItem, depth: number): void {
    this.string(it.key);
    this.put(' ');
    this.value(it.value, depth);
  }

  /** As item(), handing on finished parts while a big container is encoded. */
  *itemIter(it: DlistItem): Generator<OutputPart[], void, undefined> {
    this.string(it.key);
    this.put(' ');
    const v = it.value;
    if (v.kind === 'list' || v.kind === 'kvlist') yield* this.container(v, 0, true);
    else this.value(v, 0);
  }
}

/** Output nesting bound; far above anything csync builds (records nest 4 deep). */
const MAX_DEPTH = 256;

function decimal(n: number | bigint): string {
  if (typeof n === 'bigint') {
    if (n < 0n || n > 0xffffffffffffffffn) throw badValue(`number ${n} is outside 0..2^64-1`);
    return n.toString(10);
  }
  if (!Number.isSafeInteger(n) || n < 0) throw badValue(`number ${n} is not a non-negative integer`);
  return n.toString(10);
}

/** `%016llx` */
export function hex64(n: number | bigint): string {
  const b = typeof n === 'bigint' ? n : Number.isSafeInteger(n) ? BigInt(n) : -1n;
  if (b < 0n || b > 0xffffffffffffffffn) throw badValue(`hex value ${String(n)} is outside 0..2^64-1`);
  return b.toString(16).padStart(16, '0');
}

const GUID_RE = /^[0-9a-fA-F]{40}$/;

export function checkFileHeader(f: DlistFile): void {
  if (!Number.isSafeInteger(f.size) || f.size < 0 || f.size > 0xffffffff) {
    throw badValue(`file literal size ${f.size} is outside 0..2^32-1`);
  }
  if (!GUID_RE.test(f.guid)) throw badValue(`file literal guid ${JSON.stringify(f.guid)} is not 40 hex digits`);
  if (!f.source) throw badValue(`file literal ${f.guid} has no source to stream from`);
}

export function checkBigLiteral(b: DlistBigLiteral): void {
  if (!Number.isSafeInteger(b.size) || b.size < 0) throw badValue(`literal size ${b.size} is not a non-negative integer`);
  if (!GUID_RE.test(b.sha1)) throw badValue(`literal SHA-1 ${JSON.stringify(b.sha1)} is not 40 hex digits`);
  if (!b.source) throw badValue(`a ${b.size}-octet literal staged on disk cannot be re-serialized without a source`);
}

/** `%{partition guid size}` CRLF (file) or `{size}` / `{size+}` CRLF (big literal). */
export function bodyHeader(b: BodyPart, mode: SerializeMode = 'server'): Buffer {
  const e = new Encoder(resolveMode(mode));
  if (b.kind === 'file') {
    e.put('%{');
    e.string(b.partition);
    e.put(' ');
    e.string(b.guid.toLowerCase());
    e.put(` ${b.size}}\r\n`);
  } else {
    e.put(e.literalHeader(b.size));
  }
  return Buffer.concat(e.finish() as Buffer[]);
}

// ---------------------------------------------------------------------------
// Entry points

/** The parts of one value. */
export function encodeValueParts(v: DlistValue, mode: SerializeMode): OutputPart[] {
  const e = new Encoder(resolveMode(mode));
  e.value(v, 0);
  return e.finish();
}

/**
 * The parts of one line `<prefix>KEY SP value CRLF`. `prefix` is `* ` for a
 * server data line and the verb plus SP for a client command (`APPLY `).
 */
export function encodeLineParts(prefix: string, item: DlistItem, mode: SerializeMode): OutputPart[] {
  const e = new Encoder(resolveMode(mode));
  e.put(prefix);
  e.item(item, 0);
  e.put('\r\n');
  return e.finish();
}

/** The parts of a server data line `* KEY value` CRLF. */
export function encodeItemParts(item: DlistItem, mode: SerializeMode = 'server'): OutputPart[] {
  return encodeLineParts('* ', item, mode);
}

/**
 * As encodeLineParts, lazily: parts are handed on after each container
 * member once they are finished, so memory stays bounded by the merge size
 * and the largest single scalar.
 */
export function* iterateLineParts(prefix: string, item: DlistItem, mode: SerializeMode): Generator<OutputPart, void, undefined> {
  const e = new Encoder(resolveMode(mode));
  e.put(prefix);
  for (const parts of e.itemIter(item)) yield* parts;
  e.put('\r\n');
  yield* e.finish();
}

function joinParts(parts: OutputPart[], what: string): Buffer {
  for (const p of parts) {
    if (!Buffer.isBuffer(p)) {
      throw badValue(`${what} holds a streamed body (${p.kind === 'file' ? p.guid : `${p.size} octets`}); use a writer`);
    }
  }
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts as Buffer[]);
}

/** One value as octets. Values holding file literals must be streamed instead. */
export function serializeValue(v: DlistValue, mode: SerializeMode = 'server'): Buffer {
  return joinParts(encodeValueParts(v, mode), 'value');
}

/** `KEY SP value` (no prefix, no CRLF). */
export function serializeItem(key: string, value: DlistValue, mode: SerializeMode = 'server'): Buffer {
  const e = new Encoder(resolveMode(mode));
  e.item({ key, value }, 0);
  return joinParts(e.finish(), 'item');
}

/** A whole line `<prefix>KEY SP value CRLF` without file literals. */
export function serializeLine(prefix: string, item: DlistItem, mode: SerializeMode): Buffer {
  return joinParts(encodeLineParts(prefix, item, mode), 'line');
}
