/**
 * Builders for the data lines the replica emits (replica-semantics §3, §4).
 * Text fields use the `string` builder kind so the serializer chooses atom,
 * quoted string or literal exactly as Cyrus's dlist printer does.
 */
import type { DlistItem, DlistKvList, DlistValue } from '../../transforms/dlist-types.js';
import { ANNOT_CREATEDMODSEQ, ANNOT_SAVEDATE, ANNOT_THRID, FLAG_ANSWERED, FLAG_DELETED, FLAG_DRAFT, FLAG_FLAGGED, FLAG_SEEN } from '../../src/protocol/crc.js';
import type { AnnotRow, MailboxRow, RecordRow } from './db.js';

export const S = (value: string | Buffer | null): DlistValue => ({ kind: 'string', value });
export const N = (value: number | bigint): DlistValue => ({ kind: 'num', value });
export const NIL: DlistValue = { kind: 'nil' };
export const item = (key: string, value: DlistValue): DlistItem => ({ key, value });
export const kv = (items: DlistItem[]): DlistKvList => ({ kind: 'kvlist', items });

/** §1.11: live email has no MBOXTYPE; other live types their letter; placeholders `<type>i`. */
export function mboxtypeString(mb: MailboxRow): string | null {
  if (mb.state === 1) return `${mb.mbtype}i`;
  return mb.mbtype === 'e' ? null : mb.mbtype;
}

export function annotList(annots: AnnotRow[], extra: DlistKvList[] = []): DlistValue {
  return {
    kind: 'list',
    items: [
      ...annots.map((a) =>
        kv([item('ENTRY', S(a.entry)), item('USERID', S(a.userid)), item('MODSEQ', N(a.modseq)), item('VALUE', S(a.value))]),
      ),
      ...extra,
    ],
  };
}

export interface LiveReportExtras {
  crcAnnotInit: number;
  quotaRoot: string | null;
  groups: string | null;
  annotations: AnnotRow[];
  records?: { rec: RecordRow; annots: AnnotRow[] }[];
  userflags?: boolean;
}

/** §3.1 (and §3.2 when records are given), key order exactly as Cyrus prints it. */
export function liveReport(mb: MailboxRow, x: LiveReportExtras): DlistItem {
  const items: DlistItem[] = [item('UNIQUEID', S(mb.uniqueid)), item('MBOXNAME', S(mb.name))];
  const t = mboxtypeString(mb);
  if (t !== null) items.push(item('MBOXTYPE', S(t)));
  items.push(
    item('SYNC_CRC', N(mb.crcBasic)),
    item('SYNC_CRC_ANNOT', N((mb.crcAnnot ^ x.crcAnnotInit) >>> 0)),
    item('LAST_UID', N(mb.lastUid)),
    item('HIGHESTMODSEQ', N(mb.highestmodseq)),
    item('RECENTUID', N(mb.recentuid)),
    item('RECENTTIME', N(mb.recenttime)),
    item('LAST_APPENDDATE', N(mb.lastAppenddate)),
    item('POP3_LAST_LOGIN', N(mb.pop3LastLogin)),
    item('POP3_SHOW_AFTER', N(mb.pop3ShowAfter)),
  );
  if (mb.xconvmodseq !== 0n) items.push(item('XCONVMODSEQ', N(mb.xconvmodseq)));
  if (mb.raclmodseq !== 0n) items.push(item('RACLMODSEQ', N(mb.raclmodseq)));
  if (x.groups) items.push(item('USERGROUPS', S(x.groups)));
  items.push(
    item('UIDVALIDITY', N(mb.uidvalidity)),
    item('PARTITION', S(mb.partition ?? '')),
    item('ACL', S(mb.acl ?? '')),
    item('OPTIONS', S(mb.options)),
  );
  if (x.quotaRoot !== null) items.push(item('QUOTAROOT', S(x.quotaRoot)));
  if (mb.createdmodseq !== 0n) items.push(item('CREATEDMODSEQ', N(mb.createdmodseq)));
  if (mb.foldermodseq !== 0n) items.push(item('FOLDERMODSEQ', N(mb.foldermodseq)));
  if (x.annotations.length > 0) items.push(item('ANNOTATIONS', annotList(x.annotations)));
  if (x.userflags) items.push(item('USERFLAGS', { kind: 'list', items: mb.userflags.map((f) => ({ kind: 'atom', value: f })) }));
  if (x.records) {
    items.push(item('RECORD', { kind: 'list', items: x.records.map((r) => recordReport(mb, r.rec, r.annots)) }));
  }
  return item('MAILBOX', kv(items));
}

/** §3.3 */
export function placeholderReport(mb: MailboxRow): DlistItem {
  return item(
    'MAILBOX',
    kv([
      item('UNIQUEID', S(mb.uniqueid)),
      item('MBOXNAME', S(mb.name)),
      item('MBOXTYPE', S(`${mb.mbtype}i`)),
      item('SYNC_CRC', N(0)),
      item('LAST_UID', N(0)),
      item('HIGHESTMODSEQ', N(0)),
      item('RECENTUID', N(0)),
      item('RECENTTIME', N(0)),
      item('LAST_APPENDDATE', N(0)),
      item('POP3_LAST_LOGIN', N(0)),
      item('POP3_SHOW_AFTER', N(0)),
      item('UIDVALIDITY', N(mb.uidvalidity)),
      item('PARTITION', NIL),
      // the real 3.6.1 sync_server prints an empty ACL here (the spec's NIL differs)
      item('ACL', S('')),
      item('OPTIONS', S('')),
      item('CREATEDMODSEQ', N(mb.createdmodseq)),
      item('FOLDERMODSEQ', N(mb.foldermodseq)),
    ]),
  );
}

const SYS_ORDER: ReadonlyArray<[number, string]> = [
  [FLAG_DELETED, '\\Deleted'],
  [FLAG_ANSWERED, '\\Answered'],
  [FLAG_FLAGGED, '\\Flagged'],
  [FLAG_DRAFT, '\\Draft'],
];

/** FLAGS order: \Deleted \Answered \Flagged \Draft \Expunged \Seen, then user flags in slot order. */
const slotCache = new WeakMap<MailboxRow, Map<string, number>>();

export function recordFlags(mb: MailboxRow, r: RecordRow): DlistValue[] {
  const out: DlistValue[] = [];
  for (const [bit, name] of SYS_ORDER) if (r.sysflags & bit) out.push({ kind: 'flag', value: name });
  if (r.expunged) out.push({ kind: 'flag', value: '\\Expunged' });
  if (r.sysflags & FLAG_SEEN) out.push({ kind: 'flag', value: '\\Seen' });
  if (r.userflags.length === 0) return out;
  let slot = slotCache.get(mb);
  if (!slot) slotCache.set(mb, (slot = new Map(mb.userflags.map((f, i) => [f, i]))));
  const s = slot;
  const user = r.userflags.length === 1 ? r.userflags : [...r.userflags].sort((a, b) => (s.get(a) ?? 1e9) - (s.get(b) ?? 1e9));
  for (const f of user) out.push({ kind: 'atom', value: f });
  return out;
}

export function recordReport(mb: MailboxRow, r: RecordRow, annots: AnnotRow[]): DlistValue {
  const items: DlistItem[] = [
    item('UID', N(r.uid)),
    item('MODSEQ', N(r.modseq)),
    item('LAST_UPDATED', N(r.lastUpdated)),
    item('FLAGS', { kind: 'list', items: recordFlags(mb, r) }),
    item('INTERNALDATE', N(r.internaldate)),
    item('SIZE', N(r.size)),
    item('GUID', { kind: 'atom', value: r.guid }),
  ];
  const synth: DlistKvList[] = [];
  const synthetic = (entry: string, value: DlistValue): DlistKvList =>
    kv([item('ENTRY', S(entry)), item('USERID', S('')), item('MODSEQ', N(0)), item('VALUE', value)]);
  if (r.thrid !== 0n) synth.push(synthetic(ANNOT_THRID, { kind: 'hex', value: r.thrid }));
  if (r.savedate !== 0) synth.push(synthetic(ANNOT_SAVEDATE, N(r.savedate)));
  if (r.createdmodseq !== 0n) synth.push(synthetic(ANNOT_CREATEDMODSEQ, N(r.createdmodseq)));
  if (annots.length > 0 || synth.length > 0) items.push(item('ANNOTATIONS', annotList(annots, synth)));
  return kv(items);
}
