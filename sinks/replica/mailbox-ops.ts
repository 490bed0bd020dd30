/** APPLY UNMAILBOX / RENAME / EXPUNGE on the replica (replica-semantics §5.5, §5.6, §5.7). */
import { CommandError } from '../../transforms/errors.js';
import { parseMailboxName, validateMailboxName, validatePartition } from '../../src/protocol/names.js';
import { LIVE, PLACEHOLDER, TOMBSTONE, num, toDb64 } from './db.js';
import type { ReplicaStore } from './store.js';
import { bad, generic, isU32 } from './records.js';

export function applyUnmailbox(store: ReplicaStore, name: string): void {
  validateMailboxName(name);
  store.tx(() => {
    const e = store.mailboxByName(name);
    if (!e) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No mailbox ${name}`);
    if (e.state === TOMBSTONE) return;
    if (e.state === PLACEHOLDER) {
      if (parseMailboxName(name, store.names).deleted) store.deleteEntry(e.id);
      else store.tombstone(e, e.foldermodseq);
      return;
    }
    store.removeLive(e);
  });
}

export function applyRename(store: ReplicaStore, oldname: string, newname: string, partitionIn: string): void {
  if (typeof oldname !== 'string' || typeof newname !== 'string' || typeof partitionIn !== 'string') {
    throw bad('APPLY RENAME needs OLDMBOXNAME, NEWMBOXNAME and PARTITION');
  }
  validateMailboxName(oldname, 'old mailbox name');
  validateMailboxName(newname, 'new mailbox name');
  const partition = validatePartition(partitionIn);
  store.tx(() => {
    const e = store.mailboxByName(oldname);
    if (!e || e.state === TOMBSTONE) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No mailbox ${oldname}`);
    if (oldname === newname) {
      if (e.state === PLACEHOLDER) return;
      if (e.partition === partition) throw generic(`${oldname} is already on partition ${partition}`);
      store.q('UPDATE mailbox SET partition = ? WHERE id = ?').run(partition, e.id);
      return;
    }
    const po = parseMailboxName(oldname, store.names);
    if (po.isInbox) {
      const pn = parseMailboxName(newname, store.names);
      const toOtherInbox = pn.isInbox && pn.userid !== po.userid;
      if (!pn.deleted && !(toOtherInbox && store.allowUserMoves)) {
        throw new CommandError('IMAP_MAILBOX_NOTSUPPORTED', `Renaming the INBOX ${oldname} to ${newname} is not supported`);
      }
    }
    const target = store.mailboxByName(newname);
    if (target && target.state === LIVE) {
      throw new CommandError('IMAP_MAILBOX_EXISTS', `Cannot rename ${oldname}: ${newname} already exists`);
    }
    if (target) store.deleteEntry(target.id);
    const fm = e.state === LIVE && e.highestmodseq > e.foldermodseq ? e.highestmodseq : e.foldermodseq;
    store.db
      .prepare('UPDATE mailbox SET name = ?, foldermodseq = ?, partition = CASE WHEN state = 0 THEN ? ELSE partition END WHERE id = ?')
      .run(newname, toDb64(fm), partition, e.id);
    store.db
      .prepare('INSERT INTO mailbox (name, state, uniqueid, mbtype, uidvalidity, createdmodseq, foldermodseq) VALUES (?, 2, ?, ?, ?, ?, ?)')
      .run(oldname, e.uniqueid, e.mbtype, e.uidvalidity, toDb64(e.createdmodseq), toDb64(fm));
  });
}

export function applyExpunge(store: ReplicaStore, name: string, uniqueid: string, uids: number[]): void {
  if (typeof name !== 'string' || typeof uniqueid !== 'string' || !Array.isArray(uids) || !uids.every(isU32)) {
    throw bad('APPLY EXPUNGE needs MBOXNAME, UNIQUEID and a UID list');
  }
  validateMailboxName(name);
  store.tx(() => {
    const mb = store.mailboxByName(name);
    if (!mb || mb.state !== LIVE) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No mailbox ${name}`);
    if (mb.uniqueid !== uniqueid) throw new CommandError('IMAP_MAILBOX_MOVED', `${name} has uniqueid ${mb.uniqueid}, not ${uniqueid}`);
    let crcBasic = mb.crcBasic;
    let crcAnnot = mb.crcAnnot;
    const get = store.q('SELECT crc_basic, crc_annot, expunged FROM record WHERE mailbox_id = ? AND uid = ?');
    const set = store.q('UPDATE record SET expunged = 1, crc_basic = 0, crc_annot = 0 WHERE mailbox_id = ? AND uid = ?');
    for (const uid of uids) {
      const r = get.get(mb.id, uid) as { crc_basic: bigint; crc_annot: bigint; expunged: bigint } | undefined;
      if (!r || num(r.expunged)) continue;
      crcBasic = (crcBasic ^ num(r.crc_basic)) >>> 0;
      crcAnnot = (crcAnnot ^ num(r.crc_annot)) >>> 0;
      set.run(mb.id, uid);
    }
    store.q('UPDATE mailbox SET crc_basic = ?, crc_annot = ? WHERE id = ?').run(crcBasic, crcAnnot, mb.id);
  });
}
