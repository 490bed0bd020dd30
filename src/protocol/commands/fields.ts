/**
 * Field readers and writers shared by every csync sub-command definition:
 * dlist scalars to typed values (as Cyrus's dlist_get* functions read them)
 * and typed values back to dlist builder values (as sync_client writes them).
 *
 * A decoder refuses by throwing a `Refusal` (the exact status line and its
 * error); decodeCommand turns it into a `REFUSED` value, so no caller ever
 * sees an exception for bad input.
 */
import { CommandError, type CyrsyncError } from '../../../transforms/errors.js';
import type { DlistItem, DlistValue } from '../../../transforms/dlist-types.js';
import { NO_PROTOCOL_ERROR, noBadParameters, type Profile } from '../replies.js';
import type { Annot, BinaryValue, RecordIn } from '../types.js';

/** Unwinds a decoder to the refusal it decided on. */
export class Refusal {
  constructor(
    readonly reply: string,
    readonly error: CyrsyncError,
  ) {}
}

export function printable(s: string): string {
  const t = s.length > 64 ? s.slice(0, 64) + '...' : s;
  return JSON.stringify(t);
}

/**
 * Text of a scalar (`string` type without the NIL case): atom, quoted, flag,
 * literal, builder string or number; null when not a scalar. Octets holding
 * NUL give null by default, as dlist_toatom refuses them; with `nul: 'keep'`
 * they are kept (the backup index keeps what a data file holds, whoever wrote
 * it, and a client shows a status line as it came).
 */
export function scalarText(v: DlistValue, nul: 'refuse' | 'keep' = 'refuse'): string | null {
  switch (v.kind) {
    case 'atom':
    case 'quoted':
    case 'flag':
      return v.value;
    case 'literal':
      return nul === 'refuse' && v.value.includes(0) ? null : v.value.toString('latin1');
    case 'string':
      if (v.value === null) return null;
      if (typeof v.value === 'string') return v.value;
      return nul === 'refuse' && v.value.includes(0) ? null : v.value.toString('latin1');
    case 'num':
      return v.value.toString(10);
    default:
      return null;
  }
}

export function kvGet(v: DlistValue | undefined, key: string): DlistValue | undefined {
  if (!v || v.kind !== 'kvlist') return undefined;
  // First occurrence wins (dlist_getchild).
  for (const it of v.items) if (it.key === key) return it.value;
  return undefined;
}

export const U32_MAX = 0xffffffff;
const U64_MAX = 0xffffffffffffffffn;
const DIGITS = /^[0-9]+$/;
const GUID_RE = /^[0-9a-fA-F]{40}$/;

export function parseU64(v: DlistValue | undefined): bigint | null {
  if (!v) return null;
  if (v.kind === 'num') {
    if (typeof v.value === 'number' && !Number.isSafeInteger(v.value)) return null;
    const b = BigInt(v.value);
    return b >= 0n && b <= U64_MAX ? b : null;
  }
  const t = scalarText(v);
  if (t === null || !DIGITS.test(t) || t.length > 40) return null;
  const b = BigInt(t);
  return b <= U64_MAX ? b : null;
}

/**
 * u32: Cyrus keeps the low 32 bits of a larger number; real clients never
 * send one, and truncating a UID or size would corrupt data, so it is refused.
 */
export function parseU32(v: DlistValue | undefined): number | null {
  const b = parseU64(v);
  return b === null || b > BigInt(U32_MAX) ? null : Number(b);
}

/** Seconds since the epoch; must fit a JavaScript number exactly. */
export function parseDate(v: DlistValue | undefined): number | null {
  const b = parseU64(v);
  return b === null || b > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(b);
}

export function parseGuid(v: DlistValue | undefined): string | null {
  if (!v) return null;
  const t = scalarText(v);
  return t !== null && GUID_RE.test(t) ? t.toLowerCase() : null;
}

/** `map` type: binary-safe; NIL is the empty value (dlist_getbuf of DL_NIL). */
export function parseMap(v: DlistValue | undefined): BinaryValue | null {
  if (!v) return null;
  switch (v.kind) {
    case 'atom':
    case 'quoted':
    case 'flag':
      return { kind: 'buffer', value: Buffer.from(v.value, 'latin1') };
    case 'literal':
      return { kind: 'buffer', value: v.value };
    case 'nil':
      return { kind: 'buffer', value: Buffer.alloc(0) };
    case 'bigliteral':
      return v.body ? { kind: 'staged', size: v.size, sha1: v.sha1, body: v.body } : null;
    case 'string':
      if (v.value === null) return { kind: 'buffer', value: Buffer.alloc(0) };
      return { kind: 'buffer', value: typeof v.value === 'string' ? Buffer.from(v.value, 'latin1') : v.value };
    case 'num':
      return { kind: 'buffer', value: Buffer.from(v.value.toString(10), 'latin1') };
    default:
      return null;
  }
}

export function listItems(v: DlistValue | undefined): DlistValue[] | null {
  if (!v) return null;
  if (v.kind === 'list') return v.items;
  // dlist_getlist accepts any child; NIL simply has no members.
  if (v.kind === 'nil') return [];
  return null;
}

/**
 * ANNOT: ENTRY, USERID, VALUE required; MODSEQ optional (3.0 clients omit it;
 * Cyrus 3.6.1 itself would refuse), USERID NIL (3.0 thrid) read as "".
 */
export function parseAnnot(a: DlistValue): Annot | null {
  if (a.kind !== 'kvlist') return null;
  const e = kvGet(a, 'ENTRY');
  const entry = e ? scalarText(e) : null;
  if (entry === null) return null;
  const u = kvGet(a, 'USERID');
  if (!u) return null;
  const userid = u.kind === 'nil' ? '' : scalarText(u);
  if (userid === null) return null;
  const value = parseMap(kvGet(a, 'VALUE'));
  if (value === null) return null;
  const mv = kvGet(a, 'MODSEQ');
  let modseq = 0n;
  if (mv) {
    const n = parseU64(mv);
    if (n === null) return null;
    modseq = n;
  }
  return { entry, userid, modseq, value };
}

/** RECORD entry (parse_upload); null when any required field is bad. */
export function parseRecord(r: DlistValue): RecordIn | null {
  if (r.kind !== 'kvlist') return null;
  const uid = parseU32(kvGet(r, 'UID'));
  const modseq = parseU64(kvGet(r, 'MODSEQ'));
  const lastUpdated = parseDate(kvGet(r, 'LAST_UPDATED'));
  const fl = listItems(kvGet(r, 'FLAGS'));
  const internaldate = parseDate(kvGet(r, 'INTERNALDATE'));
  const size = parseU32(kvGet(r, 'SIZE'));
  const guid = parseGuid(kvGet(r, 'GUID'));
  if (uid === null || modseq === null || lastUpdated === null || fl === null || internaldate === null || size === null || guid === null) {
    return null;
  }
  const flags: string[] = [];
  for (const f of fl) {
    const t = scalarText(f);
    if (t === null || t === '') return null;
    flags.push(t);
  }
  let annotations: Annot[] | null = null;
  const al = kvGet(r, 'ANNOTATIONS');
  if (al) {
    const items = listItems(al);
    if (items === null) return null;
    annotations = [];
    for (const a of items) {
      const d = parseAnnot(a);
      if (d === null) return null;
      annotations.push(d);
    }
  }
  return { uid, modseq, lastUpdated, flags, internaldate, size, guid, annotations };
}

/**
 * Typed reads of one operand, refusing as the profile's server does: the
 * replica answers a missing field with bad parameters, backupd (cmd_apply_*)
 * with a protocol error.
 */
export class FieldReader {
  constructor(readonly profile: Profile) {}

  badParams(what: string): Refusal {
    if (this.profile === 'backup') return new Refusal(NO_PROTOCOL_ERROR, new CommandError('IMAP_PROTOCOL_ERROR', what));
    return new Refusal(noBadParameters('sync'), new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', what));
  }

  /** Always the bad-parameters reply of the profile (backupd_response text). */
  badParamsStrict(what: string): Refusal {
    return new Refusal(noBadParameters(this.profile), new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', what));
  }

  protocolError(what: string): Refusal {
    return new Refusal(NO_PROTOCOL_ERROR, new CommandError('IMAP_PROTOCOL_ERROR', what));
  }

  str(kv: DlistValue, key: string): string {
    const v = kvGet(kv, key);
    const t = v ? scalarText(v) : null;
    if (t === null) throw this.badParams(`${key} is missing or not a string`);
    return t;
  }

  strOpt(kv: DlistValue, key: string): string | undefined {
    const v = kvGet(kv, key);
    if (!v) return undefined;
    return scalarText(v) ?? undefined;
  }

  u32(kv: DlistValue, key: string): number {
    const n = parseU32(kvGet(kv, key));
    if (n === null) throw this.badParams(`${key} is missing or not a 32-bit number`);
    return n;
  }

  u64(kv: DlistValue, key: string): bigint {
    const n = parseU64(kvGet(kv, key));
    if (n === null) throw this.badParams(`${key} is missing or not a 64-bit number`);
    return n;
  }

  date(kv: DlistValue, key: string): number {
    const n = parseDate(kvGet(kv, key));
    if (n === null) throw this.badParams(`${key} is missing or not a date`);
    return n;
  }

  list(kv: DlistValue, key: string): DlistValue[] {
    const l = listItems(kvGet(kv, key));
    if (l === null) throw this.badParams(`${key} is missing or not a list`);
    return l;
  }

  map(kv: DlistValue, key: string): BinaryValue {
    const m = parseMap(kvGet(kv, key));
    if (m === null) throw this.badParams(`${key} is missing or not a value`);
    return m;
  }

  /**
   * The operand itself as a string (`GET USER bob`, `APPLY UNMAILBOX x`).
   * sync_server passes a NIL or container operand on as a NULL name, which
   * finds nothing (`GET USER NIL` => `OK success`, `APPLY UNMAILBOX NIL` =>
   * IMAP_MAILBOX_NONEXISTENT): it is read as "" and the store answers.
   * backupd refuses it (`!dl->sval` => bad parameters) where `strict`.
   */
  operand(v: DlistValue, what: string, strict: boolean): string {
    const t = scalarText(v);
    if (t !== null) return t;
    if (this.profile === 'backup' && strict) throw this.badParamsStrict(`${what} is missing or not a string`);
    return '';
  }

  /** A list of names; sync_server walks the members of whatever came, a scalar has none. */
  stringList(v: DlistValue, what: string): string[] {
    let l = listItems(v);
    if (l === null && this.profile === 'sync' && v.kind !== 'kvlist') l = [];
    if (l === null) throw this.badParams(`${what} is not a list`);
    return l.map((it) => {
      const t = scalarText(it);
      if (t === null) throw this.badParams(`${what} holds a non-string member`);
      return t;
    });
  }
}

// ---------------------------------------------------------------------------
// Writers: typed values to dlist builder values (the serializer picks atom,
// quoted string or literal as Cyrus's dlist printer does).

export const str = (v: string | null | undefined): DlistValue => ({ kind: 'string', value: v ?? null });
export const num = (v: number | bigint): DlistValue => ({ kind: 'num', value: v });
export const list = (items: DlistValue[]): DlistValue => ({ kind: 'list', items });
export const kv = (items: DlistItem[]): DlistValue => ({ kind: 'kvlist', items });

/** A kvlist from `[KEY, value]` pairs; an undefined value leaves its key out. */
export function fields(pairs: [string, DlistValue | undefined][]): DlistValue {
  const items: DlistItem[] = [];
  for (const [key, value] of pairs) if (value !== undefined) items.push({ key, value });
  return kv(items);
}

export const optNum = (v: number | bigint | undefined): DlistValue | undefined => (v === undefined ? undefined : num(v));
export const optStr = (v: string | null | undefined): DlistValue | undefined => (v === undefined ? undefined : str(v));

export function flagValue(f: string): DlistValue {
  return f.startsWith('\\') ? { kind: 'flag', value: f } : str(f);
}

/** How an encoder writes a `map` value; a staged value needs its bytes' source. */
export interface EncodeOptions {
  /** A staged value to a big literal (with a `source`); the default uses the value's own `source`. */
  staged?: (v: Extract<BinaryValue, { kind: 'staged' }>) => DlistValue;
}

export function binaryValue(v: BinaryValue, o: EncodeOptions): DlistValue {
  if (v.kind === 'buffer') return { kind: 'string', value: v.value };
  if (o.staged) return o.staged(v);
  const item: DlistValue = { kind: 'bigliteral', size: v.size, sha1: v.sha1, body: v.body };
  if (v.source) item.source = v.source;
  return item;
}

export function annotList(annots: readonly Annot[], o: EncodeOptions): DlistValue {
  return list(
    annots.map((a) =>
      kv([
        { key: 'ENTRY', value: str(a.entry) },
        { key: 'USERID', value: str(a.userid) },
        { key: 'MODSEQ', value: num(a.modseq) },
        { key: 'VALUE', value: binaryValue(a.value, o) },
      ]),
    ),
  );
}

export function recordValue(r: RecordIn, o: EncodeOptions): DlistValue {
  return fields([
    ['UID', num(r.uid)],
    ['MODSEQ', num(r.modseq)],
    ['LAST_UPDATED', num(r.lastUpdated)],
    ['FLAGS', list(r.flags.map(flagValue))],
    ['INTERNALDATE', num(r.internaldate)],
    ['SIZE', num(r.size)],
    ['GUID', str(r.guid)],
    ['ANNOTATIONS', r.annotations ? annotList(r.annotations, o) : undefined],
  ]);
}
