/**
 * The record a stored APPLY appends (backup-format §5.6): the typed command
 * turned back into its dlist, which the data-file writer prints canonically
 * and the index reads (§6.4), exactly as a reindex would read it later.
 *
 * The typed command is turned back into the dlist by the protocol module's
 * encoders (the field order of the Cyrus 3.6.1 sync_client); a command that
 * carries its own decoded operand (`raw`) is written from that instead, so
 * fields a later client adds are kept.
 */
import type { DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import { CommandError } from '../../transforms/errors.js';
import { encodeOperand } from '../../src/protocol/commands.js';
import type { ApplyCommandOf, BinaryValue, MailboxIn } from '../../src/protocol/types.js';
import { isBackupStagedRef, stagedSource } from './staging.js';

type Stored = 'MAILBOX' | 'UNMAILBOX' | 'MESSAGE' | 'RESERVE' | 'RENAME' | 'SEEN' | 'SUB' | 'UNSUB' | 'SIEVE' | 'UNSIEVE';

/** The APPLY sub-commands a backup server appends and indexes. */
export type StoredApply = { [S in Stored]: ApplyCommandOf<S> }[Stored];

/** A staged value is written from its staging file. */
function staged(v: Extract<BinaryValue, { kind: 'staged' }>): DlistValue {
  const ref = v.body.ref;
  if (!isBackupStagedRef(ref) || !ref.complete) {
    throw new CommandError('IMAP_IOERROR', 'a staged value is no longer available');
  }
  return { kind: 'bigliteral', size: v.size, sha1: v.sha1, body: v.body, source: stagedSource(ref) };
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
  if (cmd.raw !== undefined && cmd.sub !== 'MESSAGE') return { key: cmd.sub, value: withSources(cmd.raw) };
  return encodeOperand(cmd, { staged });
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

