/**
 * Sync CRCs exactly as Cyrus 3.6.1 computes them (imap/mailbox.c crc_basic,
 * crc_annot, crc_virtannot; imap/sync_support.c mailbox_crceq).
 *
 * Invariant: a mailbox CRC is an XOR aggregate over its non-expunged records,
 * so it can be maintained incrementally (mailbox ^= old(record) ^ new(record))
 * and always equals a from-scratch recomputation.
 *
 * Text is latin1 (one char per octet) throughout, as everywhere in the
 * protocol layer; CRC input bytes are exactly those octets.
 */
import { crc32 as zlibCrc32 } from 'node:zlib';

/** Initial value of the annotation CRC of every mailbox (3.2+ peers). */
export const ANNOT_CRC_INIT = 12345678;

export const ANNOT_THRID = '/vendor/cmu/cyrus-imapd/thrid';
export const ANNOT_SAVEDATE = '/vendor/cmu/cyrus-imapd/savedate';
export const ANNOT_CREATEDMODSEQ = '/vendor/cmu/cyrus-imapd/createdmodseq';
export const ANNOT_BASETHRID = '/vendor/cmu/cyrus-imapd/basethrid';

/** Standard IEEE CRC-32 (zlib) of the octets of `data` (strings are latin1). */
export function crc32(data: string | Buffer): number {
  const buf = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  return zlibCrc32(buf) >>> 0;
}

/** System flag bits, in the order Cyrus reports them (§3.2 FLAGS order, minus \Expunged). */
export const FLAG_DELETED = 1;
export const FLAG_ANSWERED = 2;
export const FLAG_FLAGGED = 4;
export const FLAG_DRAFT = 8;
export const FLAG_SEEN = 16;

const SYSTEM_FLAG_CRC: ReadonlyArray<[number, number]> = [
  [FLAG_DELETED, crc32('\\deleted')],
  [FLAG_ANSWERED, crc32('\\answered')],
  [FLAG_FLAGGED, crc32('\\flagged')],
  [FLAG_DRAFT, crc32('\\draft')],
  [FLAG_SEEN, crc32('\\seen')],
];

/** ASCII-only lower-casing, as Cyrus lcase(). */
export function asciiLower(s: string): string {
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

export interface CrcAnnotation {
  entry: string;
  /** "" for shared; null contributes nothing (a deletion in Cyrus) */
  userid: string | null;
  value: Buffer;
}

/** What the CRCs of one record depend on. */
export interface CrcRecord {
  uid: number;
  modseq: bigint;
  lastUpdated: number;
  internaldate: number;
  /** 40 lower-case hex digits */
  guid: string;
  /** bit set of FLAG_* */
  systemFlags: number;
  /** user flag names as the mailbox spells them */
  userFlags: readonly string[];
  expunged: boolean;
  /** stored per-message annotations (synthetic thrid/savedate/createdmodseq excluded) */
  annotations: readonly CrcAnnotation[];
  thrid: bigint;
  savedate: number;
  createdmodseq: bigint;
}

/**
 * A record with no flags, annotations, thread id, save date or created
 * modseq, not expunged: what a generated message (bench-client) has; any
 * field may still be given.
 */
export function plainCrcRecord(r: Pick<CrcRecord, 'uid' | 'modseq' | 'lastUpdated' | 'internaldate' | 'guid'> & Partial<CrcRecord>): CrcRecord {
  return { systemFlags: 0, userFlags: [], expunged: false, annotations: [], thrid: 0n, savedate: 0, createdmodseq: 0n, ...r };
}

export function flagCrc(systemFlags: number, userFlags: readonly string[]): number {
  let f = 0;
  for (const [bit, c] of SYSTEM_FLAG_CRC) if (systemFlags & bit) f ^= c;
  for (const name of userFlags) f ^= crc32(asciiLower(name));
  return f >>> 0;
}

/** Basic CRC of one record: 0 when expunged. */
export function recordBasicCrc(r: CrcRecord): number {
  if (r.expunged) return 0;
  const f = flagCrc(r.systemFlags, r.userFlags);
  return crc32(`${r.uid} ${r.modseq} ${r.lastUpdated} (${f}) ${r.internaldate} ${r.guid}`);
}

/** crc_annot(): CRC32("<uid> <entry> <userid> " ‖ value); null userid and empty value contribute nothing. */
export function annotCrc(uid: number, entry: string, userid: string | null, value: Buffer): number {
  if (userid === null || value.length === 0) return 0;
  const head = Buffer.from(`${uid} ${entry} ${userid} `, 'latin1');
  return zlibCrc32(value, zlibCrc32(head)) >>> 0;
}

const SYNTHETIC = new Set([ANNOT_THRID, ANNOT_SAVEDATE, ANNOT_CREATEDMODSEQ]);

/**
 * Annotation CRC contribution of one record (without the mailbox INIT): 0 when
 * expunged. thrid is hashed as lower-case hex without leading zeros (Cyrus
 * 3.0-3.12 `%llx`), savedate and createdmodseq as decimal.
 */
export function recordAnnotCrc(r: CrcRecord): number {
  if (r.expunged) return 0;
  let c = 0;
  for (const a of r.annotations) {
    if (SYNTHETIC.has(a.entry)) continue;
    c ^= annotCrc(r.uid, a.entry, a.userid, a.value);
  }
  if (r.thrid !== 0n) c ^= annotCrc(r.uid, ANNOT_THRID, '', Buffer.from(r.thrid.toString(16), 'latin1'));
  if (r.savedate !== 0) c ^= annotCrc(r.uid, ANNOT_SAVEDATE, '', Buffer.from(String(r.savedate), 'latin1'));
  if (r.createdmodseq !== 0n) {
    c ^= annotCrc(r.uid, ANNOT_CREATEDMODSEQ, '', Buffer.from(r.createdmodseq.toString(10), 'latin1'));
  }
  return c >>> 0;
}

export interface SyncCrcs {
  basic: number;
  annot: number;
}

/** From-scratch CRCs of a mailbox. */
export function mailboxCrcs(records: Iterable<CrcRecord>, annotInit = ANNOT_CRC_INIT): SyncCrcs {
  let basic = 0;
  let annot = annotInit;
  for (const r of records) {
    basic ^= recordBasicCrc(r);
    annot ^= recordAnnotCrc(r);
  }
  return { basic: basic >>> 0, annot: annot >>> 0 };
}

/**
 * mailbox_crceq(): each component matches when either side is 0 or both are
 * equal. The annotation component also matches the INIT-0 variant a 3.0
 * master computes (csync-wire §7.3): `computed XOR 12345678`.
 */
export function crcMatch(client: SyncCrcs, replica: SyncCrcs): boolean {
  const basicOk = client.basic === 0 || replica.basic === 0 || client.basic === replica.basic;
  const annotOk =
    client.annot === 0 ||
    replica.annot === 0 ||
    client.annot === replica.annot ||
    client.annot === (replica.annot ^ ANNOT_CRC_INIT) >>> 0;
  return basicOk && annotOk;
}
