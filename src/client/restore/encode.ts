/**
 * Encoders of the commands a restore sends, field for field as Cyrus 3.6.1
 * builds them (backup/lcb_indexr.c backup_mailbox_to_dlist,
 * imap/sync_support.c sync_reserve_partition, sync_client's GET/APPLY
 * builders). Each returns the `KEY value` item of one command line; the
 * CommandWriter chooses every value's wire form.
 */
import type { DlistFile, DlistItem, DlistValue } from '../../../transforms/dlist-types.js';
import { parseStoredList } from '../../../sinks/backup/get.js';
import type { RecordRow } from '../../../sinks/backup/index-db.js';
import type { PlanMailbox } from './plan.js';

const atom = (value: string): DlistValue => ({ kind: 'atom', value });
const str = (v: string | null | undefined): DlistValue => ({ kind: 'string', value: v ?? null });
const num = (v: number | bigint | null | undefined): DlistValue => {
  if (v === null || v === undefined) return { kind: 'num', value: 0 };
  // SQLite keeps 64-bit values signed: unwrap as Cyrus's C cast does.
  if (v < 0) return { kind: 'num', value: BigInt(v) + 2n ** 64n };
  return { kind: 'num', value: v };
};
const kv = (items: DlistItem[]): DlistValue => ({ kind: 'kvlist', items });
const list = (items: DlistValue[]): DlistValue => ({ kind: 'list', items });

/** `APPLY RESERVE %(PARTITION p MBOXNAME (...) GUID (...))` */
export function encodeReserve(partition: string, folders: readonly string[], guids: readonly string[]): DlistItem {
  return {
    key: 'RESERVE',
    value: kv([
      { key: 'PARTITION', value: atom(partition) },
      { key: 'MBOXNAME', value: list(folders.map((f) => str(f))) },
      { key: 'GUID', value: list(guids.map((g) => atom(g))) },
    ]),
  };
}

/** `APPLY MESSAGE (%{p g n} ...)` */
export function encodeMessages(files: DlistFile[]): DlistItem {
  return { key: 'MESSAGE', value: list(files) };
}

function recordValue(r: RecordRow, revive: boolean): DlistValue {
  const flags = parseStoredList(r.flags);
  const flagItems = flags && flags.kind === 'list' ? [...flags.items] : [];
  if (r.expunged !== null && !revive) flagItems.push({ kind: 'flag', value: '\\Expunged' });
  const items: DlistItem[] = [
    { key: 'UID', value: num(r.uid) },
    { key: 'MODSEQ', value: num(r.modseq) },
    { key: 'LAST_UPDATED', value: num(r.last_updated) },
    { key: 'INTERNALDATE', value: num(r.internaldate) },
    { key: 'GUID', value: atom(r.guid) },
    { key: 'SIZE', value: num(r.size) },
    { key: 'FLAGS', value: list(flagItems) },
  ];
  const annots = parseStoredList(r.annotations);
  if (annots) items.push({ key: 'ANNOTATIONS', value: annots });
  return kv(items);
}

/** `RESTORE MAILBOX %(...)` (or `LOCAL_MAILBOX` with -L): backup_mailbox_to_dlist of the planned mailbox. */
export function encodeRestoreMailbox(m: PlanMailbox, records: readonly RecordRow[], localOnly: boolean, annotations = true): DlistItem {
  const s = m.source;
  const items: DlistItem[] = [
    { key: 'UNIQUEID', value: str(m.uniqueid) },
    { key: 'MBOXNAME', value: str(m.mboxname) },
    { key: 'MBOXTYPE', value: str(m.mboxtype) },
    { key: 'LAST_UID', value: num(s?.last_uid) },
    { key: 'HIGHESTMODSEQ', value: num(m.highestmodseq) },
    { key: 'RECENTUID', value: num(s?.recentuid) },
    { key: 'RECENTTIME', value: num(s?.recenttime) },
    { key: 'LAST_APPENDDATE', value: num(s?.last_appenddate) },
    { key: 'POP3_LAST_LOGIN', value: num(s?.pop3_last_login) },
    { key: 'POP3_SHOW_AFTER', value: num(s?.pop3_show_after) },
    { key: 'UIDVALIDITY', value: num(m.uidvalidity) },
    { key: 'PARTITION', value: str(m.partition) },
    { key: 'ACL', value: str(m.acl) },
    { key: 'OPTIONS', value: str(s?.options) },
    { key: 'SYNC_CRC', value: num(s?.sync_crc) },
    { key: 'SYNC_CRC_ANNOT', value: num(s?.sync_crc_annot) },
    { key: 'QUOTAROOT', value: str(s?.quotaroot) },
    { key: 'XCONVMODSEQ', value: num(s?.xconvmodseq) },
  ];
  const annots = s && annotations ? parseStoredList(s.annotations) : null;
  if (annots) items.push({ key: 'ANNOTATIONS', value: annots });
  items.push({ key: 'RECORD', value: list(records.map((r) => recordValue(r, m.revive.has(r.id)))) });
  return { key: localOnly ? 'LOCAL_MAILBOX' : 'MAILBOX', value: kv(items) };
}

export interface MailboxAnnotation {
  entry: string;
  userid: string;
  value: Buffer;
}

function valueBytes(v: DlistValue | undefined): Buffer | null {
  if (v === undefined) return null;
  if (v.kind === 'literal') return v.value;
  if (v.kind === 'atom' || v.kind === 'quoted') return Buffer.from(v.value, 'latin1');
  if (v.kind === 'string' && v.value !== null) return Buffer.isBuffer(v.value) ? v.value : Buffer.from(v.value, 'latin1');
  return null;
}

/** `%(ENTRY e USERID u VALUE v ...)` items of an ANNOTATIONS list or `* ANNOTATION` replies. */
export function annotationOf(v: DlistValue): MailboxAnnotation | null {
  if (v.kind !== 'kvlist') return null;
  const get = (k: string): DlistValue | undefined => v.items.find((i) => i.key.toUpperCase() === k)?.value;
  const entry = valueBytes(get('ENTRY'));
  const userid = valueBytes(get('USERID'));
  const value = valueBytes(get('VALUE'));
  if (entry === null || value === null) return null;
  return { entry: entry.toString('latin1'), userid: userid?.toString('latin1') ?? '', value };
}

/** The mailbox annotations the backup holds for the planned mailbox (with a value). */
export function mailboxAnnotations(m: PlanMailbox): MailboxAnnotation[] {
  const a = m.source ? parseStoredList(m.source.annotations) : null;
  if (a === null || a.kind !== 'list') return [];
  return a.items.map(annotationOf).filter((x): x is MailboxAnnotation => x !== null && x.value.length > 0);
}

/** `APPLY ANNOTATION %(MBOXNAME m ENTRY e USERID u VALUE v)` (sync_client's form). */
export function encodeAnnotation(mboxname: string, a: MailboxAnnotation): DlistItem {
  return {
    key: 'ANNOTATION',
    value: kv([
      { key: 'MBOXNAME', value: str(mboxname) },
      { key: 'ENTRY', value: str(a.entry) },
      { key: 'USERID', value: str(a.userid) },
      { key: 'VALUE', value: { kind: 'literal', value: a.value } },
    ]),
  };
}

/** `GET MAILBOXES (name ...)` */
export function encodeGetMailboxes(names: readonly string[]): DlistItem {
  return { key: 'MAILBOXES', value: list(names.map((n) => str(n))) };
}

/** `GET FULLMAILBOX name` */
export function encodeGetFullMailbox(name: string): DlistItem {
  return { key: 'FULLMAILBOX', value: str(name) };
}

/** `GET META userid` */
export function encodeGetMeta(userid: string): DlistItem {
  return { key: 'META', value: str(userid) };
}

/** `APPLY SUB %(USERID u MBOXNAME m)` */
export function encodeSub(userid: string, mboxname: string): DlistItem {
  return { key: 'SUB', value: kv([{ key: 'USERID', value: str(userid) }, { key: 'MBOXNAME', value: str(mboxname) }]) };
}

export interface SeenState {
  uniqueid: string;
  lastread: number | null;
  lastuid: number | null;
  lastchange: number | null;
  seenuids: string | null;
}

/** `APPLY SEEN %(USERID u UNIQUEID x LASTREAD n LASTUID n LASTCHANGE n SEENUIDS s)` */
export function encodeSeen(userid: string, s: SeenState): DlistItem {
  return {
    key: 'SEEN',
    value: kv([
      { key: 'USERID', value: str(userid) },
      { key: 'UNIQUEID', value: str(s.uniqueid) },
      { key: 'LASTREAD', value: num(s.lastread) },
      { key: 'LASTUID', value: num(s.lastuid) },
      { key: 'LASTCHANGE', value: num(s.lastchange) },
      { key: 'SEENUIDS', value: str(s.seenuids ?? '') },
    ]),
  };
}

/** `APPLY SIEVE %(USERID u FILENAME f LAST_UPDATE n CONTENT {N}...)` */
export function encodeSieve(userid: string, filename: string, lastUpdate: number, content: Buffer): DlistItem {
  return {
    key: 'SIEVE',
    value: kv([
      { key: 'USERID', value: str(userid) },
      { key: 'FILENAME', value: str(filename) },
      { key: 'LAST_UPDATE', value: num(lastUpdate) },
      { key: 'CONTENT', value: { kind: 'literal', value: content } },
    ]),
  };
}
