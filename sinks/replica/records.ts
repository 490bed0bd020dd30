/**
 * Replica records: the parsed form of a RECORD, its CRC contributions and
 * its row (replica-semantics §1.4, §6.2 step 9).
 */
import { CommandError } from '../../transforms/errors.js';
import type { RecordIn } from '../../src/protocol/types.js';
import {
  ANNOT_BASETHRID,
  ANNOT_CREATEDMODSEQ,
  ANNOT_SAVEDATE,
  ANNOT_THRID,
  FLAG_ANSWERED,
  FLAG_DELETED,
  FLAG_DRAFT,
  FLAG_FLAGGED,
  FLAG_SEEN,
  asciiLower,
  recordAnnotCrc,
  recordBasicCrc,
  type CrcRecord,
} from '../../src/protocol/crc.js';
import { toDb64, type AnnotRow, type RecordFields } from './db.js';
import type { ReplicaStore } from './store.js';

export const bad = (what: string): CommandError => new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', what);
export const generic = (what: string): CommandError => new CommandError('IMAP_INTERNAL', what);

export const SYSFLAG_BITS: Record<string, number> = {
  '\\deleted': FLAG_DELETED,
  '\\answered': FLAG_ANSWERED,
  '\\flagged': FLAG_FLAGGED,
  '\\draft': FLAG_DRAFT,
  '\\seen': FLAG_SEEN,
};

/** An IMAP atom: no atom-specials, no controls, not empty. */
// eslint-disable-next-line no-control-regex -- control octets are not atom characters
export const ATOM_RE = /^[^\x00-\x20\x7f(){%*"\\\]]+$/;

export function optionLetters(s: string | undefined): string {
  const up = (s ?? '').toUpperCase();
  return ['P', 'S', 'D', 'A'].filter((l) => up.includes(l)).join('');
}

export interface ParsedRecord extends RecordFields {
  annots: AnnotRow[];
}

export interface ResolvedAnnot {
  entry: string;
  userid: string;
  modseq: bigint;
  value: Buffer;
}

export function isU32(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

export function parseHex(v: Buffer): bigint | null {
  const s = v.toString('latin1');
  return /^[0-9a-fA-F]{1,16}$/.test(s) ? BigInt(`0x${s}`) : null;
}
export function parseDec(v: Buffer): bigint | null {
  const s = v.toString('latin1');
  return /^[0-9]{1,20}$/.test(s) ? BigInt(s) : null;
}

/** The record columns an update may change, in table order (modseq … createdmodseq). */
export function mutableColumns(rec: ParsedRecord): (bigint | number | string)[] {
  return [
    toDb64(rec.modseq),
    rec.lastUpdated,
    rec.internaldate,
    rec.sysflags,
    rec.expunged ? 1 : 0,
    JSON.stringify(rec.userflags),
    toDb64(rec.thrid),
    toDb64(rec.basethrid),
    rec.savedate,
    toDb64(rec.createdmodseq),
  ];
}

/** [basic, annotation] CRC contributions of one record. */
export function recordCrcs(rec: ParsedRecord): [number, number] {
  const c = crcRecord(rec, rec.annots);
  return [recordBasicCrc(c), recordAnnotCrc(c)];
}

export function crcRecord(r: Omit<ParsedRecord, 'annots'>, annots: { entry: string; userid: string; value: Buffer }[]): CrcRecord {
  return {
    uid: r.uid,
    modseq: r.modseq,
    lastUpdated: r.lastUpdated,
    internaldate: r.internaldate,
    guid: r.guid,
    systemFlags: r.sysflags,
    userFlags: r.userflags,
    expunged: r.expunged,
    annotations: annots,
    thrid: r.thrid,
    savedate: r.savedate,
    createdmodseq: r.createdmodseq,
  };
}

/** Inserts a new record and its annotations; returns its [basic, annotation] CRC contributions. */
export function insertRecord(store: ReplicaStore, mailboxId: number, rec: ParsedRecord, size: number, hasBlob: boolean): [number, number] {
  const [b, a] = recordCrcs(rec);
  store.q(
    `INSERT INTO record (mailbox_id, uid, guid, size, modseq, last_updated, internaldate, sysflags, expunged, userflags,
     thrid, basethrid, savedate, createdmodseq, has_blob, crc_basic, crc_annot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ).run(mailboxId, rec.uid, rec.guid, size, ...mutableColumns(rec), hasBlob ? 1 : 0, b, a);
  // a new UID has no stored annotations (a removed mailbox takes its annotations with it)
  if (rec.annots.length > 0) store.setAnnots('record_annot', [mailboxId, rec.uid], rec.annots);
  return [b, a];
}

export function parseRecord(r: RecordIn, annots: ResolvedAnnot[] | null): ParsedRecord {
  const perr = (why: string): CommandError => new CommandError('IMAP_PROTOCOL_ERROR', `Unparsable RECORD: ${why}`);
  if (!r || !isU32(r.uid) || r.uid === 0) throw perr('UID missing or not a positive 32-bit number');
  if (typeof r.modseq !== 'bigint') throw perr(`MODSEQ missing at UID ${r.uid}`);
  if (!isU32(r.lastUpdated) && !Number.isSafeInteger(r.lastUpdated)) throw perr(`LAST_UPDATED missing at UID ${r.uid}`);
  if (!Number.isSafeInteger(r.internaldate)) throw perr(`INTERNALDATE missing at UID ${r.uid}`);
  if (!Array.isArray(r.flags)) throw perr(`FLAGS missing at UID ${r.uid}`);
  if (typeof r.guid !== 'string' || !/^[0-9a-fA-F]{40}$/.test(r.guid)) throw perr(`GUID invalid at UID ${r.uid}`);
  let sysflags = 0;
  let expunged = false;
  const userflags: string[] = [];
  for (const f of r.flags) {
    if (typeof f !== 'string' || f.length === 0) throw perr(`bad flag at UID ${r.uid}`);
    if (f.startsWith('\\')) {
      const lf = asciiLower(f);
      if (lf === '\\expunged') expunged = true;
      else sysflags |= SYSFLAG_BITS[lf] ?? 0; // unknown system flags are ignored
      continue;
    }
    if (!ATOM_RE.test(f)) throw perr(`user flag ${JSON.stringify(f)} is not an atom at UID ${r.uid}`);
    if (!userflags.some((u) => asciiLower(u) === asciiLower(f))) userflags.push(f);
  }
  const rec: ParsedRecord = {
    uid: r.uid,
    modseq: r.modseq,
    lastUpdated: r.lastUpdated,
    internaldate: r.internaldate,
    guid: r.guid.toLowerCase(),
    sysflags,
    expunged,
    userflags,
    thrid: 0n,
    basethrid: 0n,
    savedate: 0,
    createdmodseq: 0n,
    annots: [],
  };
  for (const a of annots ?? []) {
    if (a.entry === ANNOT_THRID) {
      const v = parseHex(a.value);
      if (v === null) throw perr(`bad thrid at UID ${r.uid}`);
      rec.thrid = v;
      continue;
    }
    if (a.entry === ANNOT_SAVEDATE) {
      const v = parseDec(a.value);
      if (v === null) throw perr(`bad savedate at UID ${r.uid}`);
      rec.savedate = Number(v);
      continue;
    }
    if (a.entry === ANNOT_CREATEDMODSEQ) {
      const v = parseDec(a.value);
      if (v === null) throw perr(`bad createdmodseq at UID ${r.uid}`);
      rec.createdmodseq = v;
      continue;
    }
    if (a.entry === ANNOT_BASETHRID) {
      const v = parseHex(a.value);
      if (v !== null) rec.basethrid = v;
    }
    rec.annots.push({ entry: a.entry, userid: a.userid, value: a.value, modseq: a.modseq });
  }
  return rec;
}
