/**
 * Mailboxes, records and messages: APPLY RESERVE / MESSAGE / MAILBOX /
 * UNMAILBOX / RENAME / EXPUNGE and GET MAILBOXES / UNIQUEIDS / FULLMAILBOX /
 * FETCH / ANNOTATION.
 */
import type { DlistFile, DlistValue } from '../../../transforms/dlist-types.js';
import type { MailboxIn } from '../types.js';
import type { DecodeContext, SubDef } from './define.js';
import { fields, kvGet, list, listItems, num, parseGuid, parseU32, scalarText, str } from './fields.js';
import { decodeMailbox, decodeMailboxLenient, encodeMailbox } from './mailbox.js';

export interface ReserveOp { partition: string; mboxnames: string[]; guids: string[] }
export interface MessageOp { files: DlistFile[] }
export interface MailboxOp { local: boolean; mailbox: MailboxIn }
/** RESTORE MAILBOX: only MBOXNAME is required (sync_restore_mailbox). */
export type RestoreMailboxOp = MailboxOp;
export interface UnmailboxOp { local: boolean; mboxname: string }
export interface RenameOp { local: boolean; oldname: string; newname: string; partition: string; uidvalidity: number | null }
export interface ExpungeOp { mboxname: string; uniqueid: string; uids: number[] }
export interface NamesOp { names: string[] }
export interface UniqueidsOp { uniqueids: string[] }
export interface MboxnameOp { mboxname: string }
export interface FetchOp { mboxname: string; partition: string; uniqueid: string; guid: string; uid: number }

const names = (l: string[]): DlistValue => list(l.map((n) => str(n)));

/** MESSAGE operand: the file literals of the list; NIL (unreadable file) and others skipped. */
function fileItems(v: DlistValue): DlistFile[] {
  const files: DlistFile[] = [];
  for (const it of listItems(v) ?? []) if (it.kind === 'file') files.push(it);
  return files;
}

export const RESERVE: SubDef<ReserveOp> = {
  handler: 'store',
  decode(v, { f }) {
    const partition = f.str(v, 'PARTITION');
    const ml = f.list(v, 'MBOXNAME');
    const gl = f.list(v, 'GUID');
    const guids = gl.map((g) => {
      const s = parseGuid(g);
      if (s === null) throw f.badParams('GUID list holds an invalid guid');
      return s;
    });
    const mboxnames: string[] = [];
    for (const m of ml) {
      const t = scalarText(m);
      if (t !== null) mboxnames.push(t);
    }
    return { partition, mboxnames, guids };
  },
  decodeBackup(v, { f }) {
    const partition = f.str(v, 'PARTITION');
    const ml = listItems(kvGet(v, 'MBOXNAME'));
    const gl = listItems(kvGet(v, 'GUID'));
    if (ml === null || gl === null) throw f.protocolError('RESERVE needs MBOXNAME and GUID lists');
    const mboxnames = ml.map((m) => scalarText(m)).filter((m): m is string => m !== null);
    // reserve_one skips members that are not guids.
    const guids = gl.map((g) => parseGuid(g)).filter((g): g is string => g !== null);
    return { partition, mboxnames, guids };
  },
  encode: (op) => fields([['PARTITION', str(op.partition)], ['MBOXNAME', names(op.mboxnames)], ['GUID', names(op.guids)]]),
};

export const MESSAGE: SubDef<MessageOp> = {
  handler: 'store',
  decode: (v) => ({ files: fileItems(v) }),
  decodeBackup(v, { f }) {
    const files = fileItems(v);
    if (files.length === 0) throw f.protocolError('APPLY MESSAGE without file literals');
    return { files };
  },
  encode: (op) => list(op.files),
};

export const MAILBOX: SubDef<MailboxOp> = {
  handler: 'store',
  local: true,
  decode: (v, { key, f, opts }) => ({ local: key === 'LOCAL_MAILBOX', mailbox: decodeMailbox(f, v, opts) }),
  decodeBackup: (v, { f }) => ({ local: false, mailbox: decodeMailboxLenient(f, v) }),
  encode: (op, o) => encodeMailbox(op.mailbox, o),
};

export const RESTORE_MAILBOX: SubDef<RestoreMailboxOp> = {
  handler: 'store',
  local: true,
  decode: (v, { key, f }) => ({ local: key === 'LOCAL_MAILBOX', mailbox: decodeMailboxLenient(f, v) }),
  // As backup_mailbox_to_dlist writes it: MBOXTYPE always (NIL for a plain
  // mailbox); Cyrus restore without -U drops UNIQUEID (the server makes one
  // up), and the decoder reads an absent UNIQUEID as ''.
  encode(op, o) {
    const v = encodeMailbox(op.mailbox, o);
    if (v.kind !== 'kvlist') return v;
    const items = v.items.filter((i) => !(i.key === 'UNIQUEID' && op.mailbox.uniqueid === ''));
    if (op.mailbox.mboxtype === null) items.splice(items.findIndex((i) => i.key === 'MBOXNAME') + 1, 0, { key: 'MBOXTYPE', value: str(null) });
    return { kind: 'kvlist', items };
  },
};

export const UNMAILBOX: SubDef<UnmailboxOp> = {
  handler: 'store',
  local: true,
  decode: (v, { key, f }) => ({ local: key === 'LOCAL_UNMAILBOX', mboxname: f.operand(v, 'mailbox name', true) }),
  // backupd checks `!dl->sval`, but a parsed NIL arrives as an atom there:
  // `APPLY UNMAILBOX NIL` => `OK Success`.
  decodeBackup: (v, { f }) => ({ local: false, mboxname: f.operand(v, 'mailbox name', false) }),
  encode: (op) => str(op.mboxname),
};

export const RENAME: SubDef<RenameOp> = {
  handler: 'store',
  local: true,
  decode(v, { key, f }) {
    const oldname = f.str(v, 'OLDMBOXNAME');
    const newname = f.str(v, 'NEWMBOXNAME');
    const partition = f.str(v, 'PARTITION');
    return { local: key === 'LOCAL_RENAME', oldname, newname, partition, uidvalidity: parseU32(kvGet(v, 'UIDVALIDITY')) };
  },
  decodeBackup(v, { f }) {
    const oldname = f.str(v, 'OLDMBOXNAME');
    const newname = f.str(v, 'NEWMBOXNAME');
    return { local: false, oldname, newname, partition: f.strOpt(v, 'PARTITION') ?? '', uidvalidity: parseU32(kvGet(v, 'UIDVALIDITY')) };
  },
  encode: (op) =>
    fields([
      ['OLDMBOXNAME', str(op.oldname)],
      ['NEWMBOXNAME', str(op.newname)],
      ['PARTITION', str(op.partition)],
      ['UIDVALIDITY', op.uidvalidity !== null ? num(op.uidvalidity) : undefined],
    ]),
};

export const EXPUNGE: SubDef<ExpungeOp> = {
  handler: 'store',
  decode(v, { f }) {
    const mboxname = f.str(v, 'MBOXNAME');
    const uniqueid = f.str(v, 'UNIQUEID');
    const uids = f.list(v, 'UID').map((u) => {
      const n = parseU32(u);
      if (n === null) throw f.badParams('UID holds a non-number');
      return n;
    });
    return { mboxname, uniqueid, uids };
  },
  encode: (op) => fields([['MBOXNAME', str(op.mboxname)], ['UNIQUEID', str(op.uniqueid)], ['UID', list(op.uids.map((u) => num(u)))]]),
};

// -- GET ----------------------------------------------------------------------

export const GET_MAILBOXES: SubDef<NamesOp> = {
  handler: 'store',
  decode: (v, { f }) => ({ names: f.stringList(v, 'MAILBOXES') }),
  decodeBackup: (v, { f }) => ({ names: f.stringList(v, 'MAILBOXES') }),
  encode: (op) => names(op.names),
};

export const GET_UNIQUEIDS: SubDef<UniqueidsOp> = {
  handler: 'store',
  decode: (v, { f }) => ({ uniqueids: f.stringList(v, 'UNIQUEIDS') }),
  decodeBackup: (v, { f }) => ({ uniqueids: f.stringList(v, 'UNIQUEIDS') }),
  encode: (op) => names(op.uniqueids),
};

const mboxnameOperand = (v: DlistValue, { f }: DecodeContext): MboxnameOp => ({ mboxname: f.operand(v, 'mailbox name', true) });

export const GET_FULLMAILBOX: SubDef<MboxnameOp> = {
  handler: 'store',
  decode: mboxnameOperand,
  decodeBackup: mboxnameOperand,
  encode: (op) => str(op.mboxname),
};

export const GET_ANNOTATION: SubDef<MboxnameOp> = {
  handler: 'store',
  decode: mboxnameOperand,
  encode: (op) => str(op.mboxname),
};

export const GET_FETCH: SubDef<FetchOp> = {
  handler: 'store',
  decode(v, { f }) {
    const mboxname = f.str(v, 'MBOXNAME');
    const partition = f.str(v, 'PARTITION');
    const uniqueid = f.str(v, 'UNIQUEID');
    const guid = parseGuid(kvGet(v, 'GUID'));
    if (guid === null) throw f.badParams('GUID is missing or not 40 hex digits');
    const uid = f.u32(v, 'UID');
    return { mboxname, partition, uniqueid, guid, uid };
  },
  encode: (op) =>
    fields([
      ['MBOXNAME', str(op.mboxname)],
      ['PARTITION', str(op.partition)],
      ['UNIQUEID', str(op.uniqueid)],
      ['GUID', str(op.guid)],
      ['UID', num(op.uid)],
    ]),
};
