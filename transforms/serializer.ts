/**
 * Dlist output: the exact octets Cyrus 3.6.1 writes (imap/dlist.c
 * `dlist_print`, lib/prot.c `prot_printastring` / `prot_printamap` /
 * `prot_printliteral`, lib/imparse.c `imparse_isnatom`).
 *
 * Pure core: `encode*Parts` turn values into parts, each either a Buffer of
 * finished octets or a body still to be streamed (`DlistFile` or
 * `DlistBigLiteral` with a `source`); a body part's header (`%{p g n}` CRLF,
 * `{n}` CRLF) is already in the preceding Buffer. Adapters: `streamBody` /
 * `streamFileLiteral` write to a Writable with exact-count and SHA-1 checks;
 * `DlistWriter` (and its `ResponseWriter` / `CommandWriter` faces) is a
 * Readable the session pipes to the connection.
 *
 * Invariants:
 * - Text is latin1 (one char per octet); nothing is ever re-encoded.
 * - A file literal is never padded or truncated: the announced size and guid
 *   are checked while the bytes go out, and a mismatch destroys the output
 *   with an OutputLiteralError (the peer must never see a completed command
 *   or reply carrying wrong bytes).
 * - Containers use single SP separators, no other whitespace (csync-wire §1.5,
 *   backup-format §5.3).
 */
import { createHash } from 'node:crypto';
import { Readable, type Writable } from 'node:stream';
import * as zlib from 'node:zlib';
import { CyrsyncError } from './errors.js';
import type { DlistBigLiteral, DlistFile, DlistItem, DlistValue } from './dlist-types.js';

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

/** A file literal's bytes did not match its header: the output is unusable. */
export class OutputLiteralError extends CyrsyncError {
  /** guid of a file literal, SHA-1 announced for a big literal */
  readonly guid: string;
  readonly expectedSize: number;
  readonly actualSize: number | undefined;
  readonly actualSha1: string | undefined;
  constructor(
    message: string,
    details: { guid: string; expectedSize: number; actualSize?: number; actualSha1?: string; cause?: unknown },
  ) {
    super('IMAP_IOERROR', message, { cause: details.cause });
    this.guid = details.guid;
    this.expectedSize = details.expectedSize;
    this.actualSize = details.actualSize;
    this.actualSha1 = details.actualSha1;
  }
}

/** Values the serializer cannot write (negative numbers, sourceless bodies...). */
function badValue(message: string): CyrsyncError {
  return new CyrsyncError('IMAP_INTERNAL', message);
}

// ---------------------------------------------------------------------------
// String classification (the order of prot_printastring / prot_printamap)

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

type Bytes = string | Buffer;

// eslint-disable-next-line no-control-regex -- the class is every octet value, NUL included
const NOT_LATIN1 = /[^\x00-\xff]/;

/** Text must be one char per octet; anything else would be silently mangled. */
function checkLatin1(s: string): void {
  if (NOT_LATIN1.test(s)) throw badValue(`text ${printable(s)} holds characters above U+00FF; pass octets (latin1) or a Buffer`);
}

function printable(s: string): string {
  return JSON.stringify(s.length > 40 ? s.slice(0, 40) + '...' : s);
}

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
function isRawSafe(s: string, flag: boolean): boolean {
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

function checkFileHeader(f: DlistFile): void {
  if (!Number.isSafeInteger(f.size) || f.size < 0 || f.size > 0xffffffff) {
    throw badValue(`file literal size ${f.size} is outside 0..2^32-1`);
  }
  if (!GUID_RE.test(f.guid)) throw badValue(`file literal guid ${JSON.stringify(f.guid)} is not 40 hex digits`);
  if (!f.source) throw badValue(`file literal ${f.guid} has no source to stream from`);
}

function checkBigLiteral(b: DlistBigLiteral): void {
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
// Pure entry points

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

// ---------------------------------------------------------------------------
// File literal streaming

/**
 * Pulls a body's bytes from its source, checking count and SHA-1 as they
 * pass. `emit` returns a promise when the consumer wants us to wait
 * (backpressure). Rejects with OutputLiteralError on a mismatch; bytes beyond
 * the announced size are never emitted.
 */
async function pumpBody(b: BodyPart, emit: (chunk: Buffer) => Promise<void> | void): Promise<void> {
  const f = b.kind === 'file' ? { guid: b.guid, size: b.size, what: 'file literal' } : { guid: b.sha1, size: b.size, what: 'literal' };
  const src = b.source!();
  const hash = createHash('sha1');
  let count = 0;
  try {
    for await (const raw of src) {
      const chunk: Buffer = Buffer.isBuffer(raw) ? raw : Buffer.from(raw as string | Uint8Array);
      if (count + chunk.length > f.size) {
        throw new OutputLiteralError(
          `${f.what} ${f.guid}: source has more than the announced ${f.size} octets`,
          { guid: f.guid, expectedSize: f.size, actualSize: count + chunk.length },
        );
      }
      count += chunk.length;
      hash.update(chunk);
      const w = emit(chunk);
      if (w) await w;
    }
  } catch (err) {
    src.destroy();
    if (err instanceof OutputLiteralError) throw err;
    throw new OutputLiteralError(`${f.what} ${f.guid}: reading the source failed: ${(err as Error)?.message ?? err}`, {
      guid: f.guid,
      expectedSize: f.size,
      actualSize: count,
      cause: err,
    });
  }
  if (count !== f.size) {
    throw new OutputLiteralError(`${f.what} ${f.guid}: source ended after ${count} of ${f.size} octets`, {
      guid: f.guid,
      expectedSize: f.size,
      actualSize: count,
    });
  }
  const sha1 = hash.digest('hex');
  if (sha1 !== f.guid.toLowerCase()) {
    throw new OutputLiteralError(`${f.what} ${f.guid}: the octets sent have SHA-1 ${sha1}`, {
      guid: f.guid,
      expectedSize: f.size,
      actualSize: count,
      actualSha1: sha1,
    });
  }
}

async function writeTo(target: Writable, chunk: Buffer): Promise<void> {
  if (target.destroyed || target.writableEnded) {
    throw new CyrsyncError('IMAP_IOERROR', 'output closed while a file literal was being written');
  }
  if (!target.write(chunk)) await waitDrain(target);
}

function waitDrain(target: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      target.off('drain', done);
      target.off('close', closed);
      target.off('error', closed);
      resolve();
    };
    const closed = (): void => {
      target.off('drain', done);
      target.off('close', closed);
      target.off('error', closed);
      reject(new CyrsyncError('IMAP_IOERROR', 'output closed while waiting for it to drain'));
    };
    target.on('drain', done);
    target.on('close', closed);
    target.on('error', closed);
  });
}

/**
 * Writes a body part's octets (its header went out in the preceding Buffer
 * part) to `target`, honouring its backpressure. On a count or SHA-1
 * mismatch the target is destroyed with the OutputLiteralError, which is
 * also the rejection.
 */
export async function streamBody(b: BodyPart, target: Writable): Promise<void> {
  if (b.kind === 'file') checkFileHeader(b);
  else checkBigLiteral(b);
  try {
    await pumpBody(b, (chunk) => writeTo(target, chunk));
  } catch (err) {
    target.destroy(err as Error);
    throw err;
  }
}

/** A whole file literal: `%{partition guid size}` CRLF and the bytes. */
export async function streamFileLiteral(f: DlistFile, target: Writable, mode: SerializeMode = 'server'): Promise<void> {
  checkFileHeader(f);
  await writeTo(target, bodyHeader(f, mode));
  await streamBody(f, target);
}

// ---------------------------------------------------------------------------
// Readable adapter

export interface DlistWriterOptions {
  mode?: SerializeMode;
  highWaterMark?: number;
}

/**
 * A Readable carrying serialized lines; pipe it to the connection. Each
 * method resolves once its bytes were handed on (pushed, or written into the
 * compressor), waiting whenever the reader is behind, so a file literal is
 * streamed with flat memory. Calls are serialized in call order.
 *
 * `endReply()` marks the end of a reply: with compression active
 * (`startCompression`) it performs a deflate sync flush, ordered after every
 * byte of the reply, so the peer can read the whole reply without waiting
 * for more; `onReplyEnd` is an additional hook for other output layers.
 */
export class DlistWriter extends Readable {
  readonly options: SerializeOptions;
  onReplyEnd: (() => void | Promise<void>) | null = null;
  private chain: Promise<void> = Promise.resolve();
  private readWaiters: (() => void)[] = [];
  private compressor: zlib.DeflateRaw | null = null;
  private failure: Error | null = null;

  constructor(opts: DlistWriterOptions = {}) {
    super({ highWaterMark: opts.highWaterMark ?? 64 * 1024 });
    this.options = resolveMode(opts.mode ?? 'server');
  }

  override _read(): void {
    this.compressor?.resume();
    const w = this.readWaiters;
    this.readWaiters = [];
    for (const f of w) f();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.failure ??= err ?? new CyrsyncError('IMAP_IOERROR', 'output closed');
    const w = this.readWaiters;
    this.readWaiters = [];
    for (const f of w) f();
    this.compressor?.destroy();
    cb(err);
  }

  /**
   * From the next octet on, everything is raw deflate (COMPRESS DEFLATE).
   * Call after the `OK DEFLATE active` status resolved.
   */
  startCompression(deflate: zlib.DeflateRaw = zlib.createDeflateRaw({ windowBits: 15 })): void {
    if (this.compressor) throw new CyrsyncError('IMAP_INTERNAL', 'compression is already active');
    this.compressor = deflate;
    deflate.on('data', (c: Buffer) => {
      if (!this.push(c)) deflate.pause();
    });
    deflate.on('error', (err) => this.destroy(err));
  }

  get compressing(): boolean {
    return this.compressor !== null;
  }

  /** A line that does not end a reply (greeting capability lines...). */
  rawLine(line: string): Promise<void> {
    return this.enqueue(() => this.emitBuffer(Buffer.from(line + '\r\n', 'latin1')));
  }

  /**
   * Writes `<prefix>KEY value` CRLF, streaming bodies. A value the encoder
   * refuses fails the call; if part of the line had already gone out, the
   * stream is destroyed too, since the peer could never resynchronise.
   */
  line(prefix: string, item: DlistItem): Promise<void> {
    return this.enqueue(async () => {
      let started = false;
      try {
        for (const part of iterateLineParts(prefix, item, this.options)) {
          started = true;
          if (Buffer.isBuffer(part)) await this.emitBuffer(part);
          else await this.emitBody(part);
        }
      } catch (err) {
        if (started && !this.destroyed) this.destroy(err as Error);
        throw err;
      }
    });
  }

  /** Ends a reply: sync flush when compressing, then the `onReplyEnd` hook. */
  endReply(): Promise<void> {
    return this.enqueue(async () => {
      const c = this.compressor;
      if (c) await new Promise<void>((resolve) => c.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()));
      const hook = this.onReplyEnd;
      if (hook) await hook();
    });
  }

  /** Ends the stream after everything queued (and flushes a compressor). */
  finish(): Promise<void> {
    return this.enqueue(async () => {
      const c = this.compressor;
      if (c) {
        await new Promise<void>((resolve) => {
          c.once('end', () => resolve());
          c.end();
        });
      }
      this.push(null);
    });
  }

  protected enqueue(job: () => Promise<void>): Promise<void> {
    const run = this.chain.then(() => {
      if (this.failure) throw this.failure;
      return job();
    });
    // A failed job has destroyed the stream; later jobs fail fast above.
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async emitBuffer(b: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    const c = this.compressor;
    if (c) {
      if (!c.write(b)) await waitDrain(c);
      return;
    }
    if (!this.push(b)) await new Promise<void>((resolve) => this.readWaiters.push(resolve));
  }

  private async emitBody(b: BodyPart): Promise<void> {
    try {
      await pumpBody(b, (chunk) => this.emitBuffer(chunk));
    } catch (err) {
      this.destroy(err as Error);
      throw err;
    }
  }
}

/** Server side: `* KEY value` data lines and status lines. */
export class ResponseWriter extends DlistWriter {
  constructor(opts: DlistWriterOptions = {}) {
    super({ mode: 'server', ...opts });
  }

  /** `* KEY value` CRLF */
  data(item: DlistItem): Promise<void> {
    return this.line('* ', item);
  }

  /** A status line (`OK success`, `NO ...`): ends the reply, so it is flushed. */
  async status(line: string): Promise<void> {
    await this.rawLine(line);
    await this.endReply();
  }
}

/** Client side: `VERB KEY value` command lines with `{N+}` literals. */
export class CommandWriter extends DlistWriter {
  constructor(opts: DlistWriterOptions = {}) {
    super({ mode: 'client', ...opts });
  }

  /**
   * `APPLY MESSAGE (%{...}...)` and friends; a verb alone (`EXIT`) when no
   * item is given. Each command is a complete request, so it is flushed.
   */
  async command(verb: string, item?: DlistItem): Promise<void> {
    if (item) await this.line(verb + ' ', item);
    else await this.rawLine(verb);
    await this.endReply();
  }

  /** `GET <SUB> <operand>` */
  get(sub: string, operand: DlistValue): Promise<void> {
    return this.command('GET', { key: sub, value: operand });
  }

  /** `APPLY <SUB> <operand>` */
  apply(sub: string, operand: DlistValue): Promise<void> {
    return this.command('APPLY', { key: sub, value: operand });
  }

  /**
   * `APPLY MESSAGE (%{p g n} ... )`, each body streamed from its source and
   * checked. csync-wire §5.2: at most MAX_MESSAGE_FILES files per command.
   */
  applyMessage(files: DlistFile[]): Promise<void> {
    if (files.length === 0 || files.length > MAX_MESSAGE_FILES) {
      return Promise.reject(badValue(`APPLY MESSAGE takes 1 to ${MAX_MESSAGE_FILES} files, not ${files.length}`));
    }
    return this.apply('MESSAGE', { kind: 'list', items: files });
  }
}

/** Files per APPLY MESSAGE that sync_client never exceeds. */
export const MAX_MESSAGE_FILES = 1024;
