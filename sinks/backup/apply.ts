/**
 * The record a stored APPLY appends (backup-format §5.6): the typed command
 * turned back into its dlist, which the data-file writer prints canonically
 * and the index reads (§6.4), exactly as a reindex would read it later.
 *
 * The typed command is turned back into the dlist in the field order of the
 * Cyrus 3.6.1 sync_client (imap/sync_support.c sync_mailbox_version_array and
 * friends); a command that carries its own decoded operand (`raw`) is written
 * from that instead, so fields a later client adds are kept.
 */
import type { DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import { CommandError } from '../../transforms/errors.js';
import type { Annot, ApplyCommand, BinaryValue, MailboxIn, RecordIn } from '../../src/protocol/types.js';
import { isBackupStagedRef, stagedSource } from './staging.js';

type A<S extends string> = Extract<ApplyCommand, { sub: S }>;

/** The APPLY sub-commands a backup server appends and indexes. */
export type StoredApply = A<'MAILBOX' | 'UNMAILBOX' | 'MESSAGE' | 'RESERVE' | 'RENAME' | 'SEEN' | 'SUB' | 'UNSUB' | 'SIEVE' | 'UNSIEVE'>;

const str = (v: string | null | undefined): DlistValue => ({ kind: 'string', value: v ?? null });
const num = (v: number | bigint): DlistValue => ({ kind: 'num', value: v });
const list = (items: DlistValue[]): DlistValue => ({ kind: 'list', items });
const kv = (items: DlistItem[]): DlistValue => ({ kind: 'kvlist', items });

function binary(v: BinaryValue): DlistValue {
  if (v.kind === 'buffer') return { kind: 'string', value: v.value };
  const ref = v.body.ref;
  if (!isBackupStagedRef(ref) || !ref.complete) {
    throw new CommandError('IMAP_IOERROR', 'a staged value is no longer available');
  }
  return { kind: 'bigliteral', size: v.size, sha1: v.sha1, body: v.body, source: stagedSource(ref) };
}

function flagValue(f: string): DlistValue {
  return f.startsWith('\\') ? { kind: 'flag', value: f } : { kind: 'string', value: f };
}

function annotList(annots: readonly Annot[]): DlistValue {
  return list(
    annots.map((a) =>
      kv([
        { key: 'ENTRY', value: str(a.entry) },
        { key: 'USERID', value: str(a.userid) },
        { key: 'MODSEQ', value: num(a.modseq) },
        { key: 'VALUE', value: binary(a.value) },
      ]),
    ),
  );
}

function recordItem(r: RecordIn): DlistValue {
  const items: DlistItem[] = [
    { key: 'UID', value: num(r.uid) },
    { key: 'MODSEQ', value: num(r.modseq) },
    { key: 'LAST_UPDATED', value: num(r.lastUpdated) },
    { key: 'FLAGS', value: list(r.flags.map(flagValue)) },
    { key: 'INTERNALDATE', value: num(r.internaldate) },
    { key: 'SIZE', value: num(r.size) },
    { key: 'GUID', value: str(r.guid) },
  ];
  if (r.annotations) items.push({ key: 'ANNOTATIONS', value: annotList(r.annotations) });
  return kv(items);
}

function mailboxValue(m: MailboxIn): DlistValue {
  const items: DlistItem[] = [];
  const add = (key: string, value: DlistValue | undefined): void => {
    if (value !== undefined) items.push({ key, value });
  };
  const n = (v: number | bigint | undefined): DlistValue | undefined => (v === undefined ? undefined : num(v));
  add('UNIQUEID', str(m.uniqueid));
  add('MBOXNAME', str(m.mboxname));
  if (m.mboxtype !== null) add('MBOXTYPE', str(m.mboxtype));
  add('SYNC_CRC', n(m.syncCrc));
  add('SYNC_CRC_ANNOT', n(m.syncCrcAnnot));
  add('LAST_UID', n(m.lastUid));
  add('HIGHESTMODSEQ', num(m.highestmodseq));
  add('RECENTUID', n(m.recentUid));
  add('RECENTTIME', n(m.recentTime));
  add('LAST_APPENDDATE', n(m.lastAppenddate));
  add('POP3_LAST_LOGIN', n(m.pop3LastLogin));
  add('POP3_SHOW_AFTER', n(m.pop3ShowAfter));
  add('UIDVALIDITY', n(m.uidvalidity));
  if (m.partition !== undefined) add('PARTITION', str(m.partition));
  if (m.acl !== undefined) add('ACL', str(m.acl));
  if (m.options !== undefined) add('OPTIONS', str(m.options));
  if (m.quotaroot !== undefined) add('QUOTAROOT', str(m.quotaroot));
  add('CREATEDMODSEQ', n(m.createdmodseq));
  add('FOLDERMODSEQ', n(m.foldermodseq));
  add('XCONVMODSEQ', n(m.xconvmodseq));
  add('RACLMODSEQ', n(m.raclmodseq));
  if (m.userflags) add('USERFLAGS', list(m.userflags.map((f) => str(f))));
  if (m.annotations) add('ANNOTATIONS', annotList(m.annotations));
  if (m.records) add('RECORD', list(m.records.map(recordItem)));
  return kv(items);
}

/** A parsed operand with every staged big literal given its staging file as source. */
function withSources(v: DlistValue): DlistValue {
  switch (v.kind) {
    case 'list':
      return { kind: 'list', items: v.items.map(withSources) };
    case 'kvlist':
      return { kind: 'kvlist', items: v.items.map((it) => ({ key: it.key, value: withSources(it.value) })) };
    case 'bigliteral': {
      if (v.source) return v;
      const ref = v.body?.ref;
      if (!isBackupStagedRef(ref) || !ref.complete) throw new CommandError('IMAP_IOERROR', 'a staged value is no longer available');
      return { ...v, source: stagedSource(ref) };
    }
    default:
      return v;
  }
}

/** `KEY value` of the record to append for a stored APPLY. */
export function recordOf(cmd: StoredApply): DlistItem {
  const raw = (cmd as { raw?: DlistValue }).raw;
  if (raw !== undefined && cmd.sub !== 'MESSAGE') return { key: cmd.sub, value: withSources(raw) };
  switch (cmd.sub) {
    case 'MAILBOX':
      return { key: 'MAILBOX', value: mailboxValue(cmd.mailbox) };
    case 'UNMAILBOX':
      return { key: 'UNMAILBOX', value: str(cmd.mboxname) };
    case 'MESSAGE':
      return { key: 'MESSAGE', value: list(cmd.files) };
    case 'RESERVE':
      return {
        key: 'RESERVE',
        value: kv([
          { key: 'PARTITION', value: str(cmd.partition) },
          { key: 'MBOXNAME', value: list(cmd.mboxnames.map((m) => str(m))) },
          { key: 'GUID', value: list(cmd.guids.map((g) => str(g))) },
        ]),
      };
    case 'RENAME': {
      const items: DlistItem[] = [
        { key: 'OLDMBOXNAME', value: str(cmd.oldname) },
        { key: 'NEWMBOXNAME', value: str(cmd.newname) },
        { key: 'PARTITION', value: str(cmd.partition) },
      ];
      if (cmd.uidvalidity !== null) items.push({ key: 'UIDVALIDITY', value: num(cmd.uidvalidity) });
      return { key: 'RENAME', value: kv(items) };
    }
    case 'SEEN':
      return {
        key: 'SEEN',
        value: kv([
          { key: 'USERID', value: str(cmd.seen.userid) },
          { key: 'UNIQUEID', value: str(cmd.seen.uniqueid) },
          { key: 'LASTREAD', value: num(cmd.seen.lastread) },
          { key: 'LASTUID', value: num(cmd.seen.lastuid) },
          { key: 'LASTCHANGE', value: num(cmd.seen.lastchange) },
          { key: 'SEENUIDS', value: str(cmd.seen.seenuids) },
        ]),
      };
    case 'SUB':
    case 'UNSUB':
      return {
        key: cmd.sub,
        value: kv([
          { key: 'USERID', value: str(cmd.userid) },
          { key: 'MBOXNAME', value: str(cmd.mboxname) },
        ]),
      };
    case 'SIEVE':
      return {
        key: 'SIEVE',
        value: kv([
          { key: 'USERID', value: str(cmd.userid) },
          { key: 'FILENAME', value: str(cmd.filename) },
          { key: 'LAST_UPDATE', value: num(cmd.lastUpdate) },
          { key: 'CONTENT', value: binary(cmd.content) },
        ]),
      };
    case 'UNSIEVE':
      return {
        key: 'UNSIEVE',
        value: kv([
          { key: 'USERID', value: str(cmd.userid) },
          { key: 'FILENAME', value: str(cmd.filename) },
        ]),
      };
  }
}

/** Checks a MAILBOX has every field the index requires (§6.4 step 1). */
export function checkMailbox(m: MailboxIn): void {
  const missing: string[] = [];
  if (!m.uniqueid) missing.push('UNIQUEID');
  if (!m.mboxname) missing.push('MBOXNAME');
  if (m.lastUid === undefined) missing.push('LAST_UID');
  if (m.recentUid === undefined) missing.push('RECENTUID');
  if (m.recentTime === undefined) missing.push('RECENTTIME');
  if (m.lastAppenddate === undefined) missing.push('LAST_APPENDDATE');
  if (m.pop3LastLogin === undefined) missing.push('POP3_LAST_LOGIN');
  if (m.uidvalidity === undefined) missing.push('UIDVALIDITY');
  if (m.partition === undefined) missing.push('PARTITION');
  if (m.acl === undefined) missing.push('ACL');
  if (m.options === undefined) missing.push('OPTIONS');
  if (m.records === undefined) missing.push('RECORD');
  if (missing.length > 0) {
    throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', `APPLY MAILBOX ${m.mboxname || '(unnamed)'} lacks ${missing.join(', ')}`);
  }
}

