/**
 * The MAILBOX operand (APPLY MAILBOX, RESTORE MAILBOX, backupd's MAILBOX):
 * its decoders in the order of sync_apply_mailbox (csync-wire §5.3) and its
 * encoder in the field order of sync_client (sync_mailbox_version_array).
 */
import type { DlistValue } from '../../../transforms/dlist-types.js';
import type { Annot, MailboxIn, RecordIn } from '../types.js';
import type { DecodeOptions } from './define.js';
import {
  annotList,
  fields,
  kvGet,
  list,
  listItems,
  num,
  optNum,
  optStr,
  parseAnnot,
  parseDate,
  parseRecord,
  parseU32,
  parseU64,
  recordValue,
  scalarText,
  str,
  type EncodeOptions,
  type FieldReader,
} from './fields.js';

/**
 * APPLY MAILBOX operand. Optional numeric fields that do not parse are
 * ignored, as Cyrus's dlist_get* calls ignore them.
 */
export function decodeMailbox(f: FieldReader, v: DlistValue, opts: DecodeOptions): MailboxIn {
  const uniqueid = f.str(v, 'UNIQUEID');
  const mboxname = f.str(v, 'MBOXNAME');
  const highestmodseq = f.u64(v, 'HIGHESTMODSEQ');
  const createdmodseq = parseU64(kvGet(v, 'CREATEDMODSEQ'));
  const mboxtype = f.strOpt(v, 'MBOXTYPE') ?? null;
  if (mboxtype !== null && mboxtype.includes('f') && opts.sieveMailbox === false) {
    throw f.badParams('sieve-store folder without SIEVE-MAILBOX');
  }
  if (mboxtype !== null && (mboxtype.includes('i') || mboxtype.includes('d'))) {
    const m: MailboxIn = { uniqueid, mboxname, mboxtype, highestmodseq };
    if (createdmodseq !== null) m.createdmodseq = createdmodseq;
    const fm = parseU64(kvGet(v, 'FOLDERMODSEQ'));
    if (fm !== null) m.foldermodseq = fm;
    return m;
  }
  const m: MailboxIn = {
    uniqueid,
    mboxname,
    mboxtype,
    highestmodseq,
    partition: f.str(v, 'PARTITION'),
    lastUid: f.u32(v, 'LAST_UID'),
    recentUid: f.u32(v, 'RECENTUID'),
    recentTime: f.date(v, 'RECENTTIME'),
    lastAppenddate: f.date(v, 'LAST_APPENDDATE'),
    pop3LastLogin: f.date(v, 'POP3_LAST_LOGIN'),
    uidvalidity: f.u32(v, 'UIDVALIDITY'),
    acl: f.str(v, 'ACL'),
    options: f.str(v, 'OPTIONS'),
  };
  const records = f.list(v, 'RECORD');
  mailboxOptionals(v, m, createdmodseq);
  const annots = listItems(kvGet(v, 'ANNOTATIONS'));
  if (annots !== null) {
    const out: Annot[] = [];
    for (const a of annots) {
      const d = parseAnnot(a);
      if (d === null) throw f.badParams('ANNOTATIONS holds an unreadable entry');
      out.push(d);
    }
    m.annotations = out;
  } else {
    m.annotations = null;
  }
  // A bad RECORD entry: the store answers IMAP_PROTOCOL_ERROR at the point
  // Cyrus does (after its own mailbox checks); the good records are kept.
  readRecords(records, m);
  return m;
}

function readRecords(records: DlistValue[], m: MailboxIn): void {
  const parsed: RecordIn[] = [];
  for (const r of records) {
    const rec = parseRecord(r);
    if (rec === null) m.badRecord = true;
    else parsed.push(rec);
  }
  m.records = parsed;
}

function mailboxOptionals(v: DlistValue, m: MailboxIn, createdmodseq: bigint | null): void {
  const d = (k: string): number | undefined => parseDate(kvGet(v, k)) ?? undefined;
  const u = (k: string): number | undefined => parseU32(kvGet(v, k)) ?? undefined;
  const q = (k: string): bigint | undefined => parseU64(kvGet(v, k)) ?? undefined;
  const set = <K extends keyof MailboxIn>(k: K, val: MailboxIn[K] | undefined): void => {
    if (val !== undefined) m[k] = val;
  };
  set('pop3ShowAfter', d('POP3_SHOW_AFTER'));
  set('xconvmodseq', q('XCONVMODSEQ'));
  set('raclmodseq', q('RACLMODSEQ'));
  set('foldermodseq', q('FOLDERMODSEQ'));
  set('createdmodseq', createdmodseq ?? undefined);
  m.syncCrc = u('SYNC_CRC') ?? 0;
  m.syncCrcAnnot = u('SYNC_CRC_ANNOT') ?? 0;
  set('sinceModseq', q('SINCE_MODSEQ'));
  set('sinceCrc', u('SINCE_CRC'));
  set('sinceCrcAnnot', u('SINCE_CRC_ANNOT'));
  const qr = kvGet(v, 'QUOTAROOT');
  if (qr) m.quotaroot = qr.kind === 'nil' ? null : scalarText(qr);
  const uf = listItems(kvGet(v, 'USERFLAGS'));
  m.userflags = uf === null ? null : uf.map((x) => scalarText(x)).filter((x): x is string => x !== null);
  const ug = kvGet(v, 'USERGROUPS');
  m.usergroups = ug ? scalarText(ug) : null;
}

/** RESTORE and backupd: only MBOXNAME required; the rest as far as it parses. */
export function decodeMailboxLenient(f: FieldReader, v: DlistValue): MailboxIn {
  const m: MailboxIn = {
    uniqueid: f.strOpt(v, 'UNIQUEID') ?? '',
    mboxname: f.str(v, 'MBOXNAME'),
    mboxtype: f.strOpt(v, 'MBOXTYPE') ?? null,
    highestmodseq: parseU64(kvGet(v, 'HIGHESTMODSEQ')) ?? 0n,
  };
  const setS = (k: 'partition' | 'acl' | 'options', key: string): void => {
    const s = f.strOpt(v, key);
    if (s !== undefined) m[k] = s;
  };
  const setN = (k: 'lastUid' | 'recentUid' | 'uidvalidity', key: string): void => {
    const n = parseU32(kvGet(v, key));
    if (n !== null) m[k] = n;
  };
  const setD = (k: 'recentTime' | 'lastAppenddate' | 'pop3LastLogin', key: string): void => {
    const n = parseDate(kvGet(v, key));
    if (n !== null) m[k] = n;
  };
  setS('partition', 'PARTITION');
  setS('acl', 'ACL');
  setS('options', 'OPTIONS');
  setN('lastUid', 'LAST_UID');
  setN('recentUid', 'RECENTUID');
  setN('uidvalidity', 'UIDVALIDITY');
  setD('recentTime', 'RECENTTIME');
  setD('lastAppenddate', 'LAST_APPENDDATE');
  setD('pop3LastLogin', 'POP3_LAST_LOGIN');
  mailboxOptionals(v, m, parseU64(kvGet(v, 'CREATEDMODSEQ')));
  const annots = listItems(kvGet(v, 'ANNOTATIONS'));
  m.annotations = annots === null ? null : annots.map(parseAnnot).filter((a): a is Annot => a !== null);
  const records = listItems(kvGet(v, 'RECORD'));
  if (records !== null) readRecords(records, m);
  return m;
}

/** The MAILBOX operand in sync_client's field order; absent fields are left out. */
export function encodeMailbox(m: MailboxIn, o: EncodeOptions): DlistValue {
  return fields([
    ['UNIQUEID', str(m.uniqueid)],
    ['MBOXNAME', str(m.mboxname)],
    ['MBOXTYPE', m.mboxtype !== null ? str(m.mboxtype) : undefined],
    ['SYNC_CRC', optNum(m.syncCrc)],
    ['SYNC_CRC_ANNOT', optNum(m.syncCrcAnnot)],
    ['LAST_UID', optNum(m.lastUid)],
    ['HIGHESTMODSEQ', num(m.highestmodseq)],
    ['RECENTUID', optNum(m.recentUid)],
    ['RECENTTIME', optNum(m.recentTime)],
    ['LAST_APPENDDATE', optNum(m.lastAppenddate)],
    ['POP3_LAST_LOGIN', optNum(m.pop3LastLogin)],
    ['POP3_SHOW_AFTER', optNum(m.pop3ShowAfter)],
    ['UIDVALIDITY', optNum(m.uidvalidity)],
    ['PARTITION', optStr(m.partition)],
    ['ACL', optStr(m.acl)],
    ['OPTIONS', optStr(m.options)],
    ['QUOTAROOT', optStr(m.quotaroot)],
    ['CREATEDMODSEQ', optNum(m.createdmodseq)],
    ['FOLDERMODSEQ', optNum(m.foldermodseq)],
    ['XCONVMODSEQ', optNum(m.xconvmodseq)],
    ['RACLMODSEQ', optNum(m.raclmodseq)],
    ['SINCE_MODSEQ', optNum(m.sinceModseq)],
    ['SINCE_CRC', optNum(m.sinceCrc)],
    ['SINCE_CRC_ANNOT', optNum(m.sinceCrcAnnot)],
    ['USERFLAGS', m.userflags ? list(m.userflags.map((x) => str(x))) : undefined],
    ['USERGROUPS', m.usergroups != null ? str(m.usergroups) : undefined],
    ['ANNOTATIONS', m.annotations ? annotList(m.annotations, o) : undefined],
    ['RECORD', m.records ? list(m.records.map((r) => recordValue(r, o))) : undefined],
  ]);
}
