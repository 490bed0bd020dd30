/** User metadata on the replica: quota, subscriptions, seen state, annotations, UNUSER. */
import { CommandError } from '../../transforms/errors.js';
import type { BinaryValue, QuotaIn, SeenIn } from '../../src/protocol/types.js';
import { useridToInbox, validateMailboxName, validateUserid } from '../../src/protocol/names.js';
import { LIVE, TOMBSTONE, mailboxFromRow, num, toDb64 } from './db.js';
import type { ReplicaStore } from './store.js';
import { prefixRange } from './store.js';
import { bad, isU32 } from './records.js';

export function validQuotaRoot(root: string): void {
  // eslint-disable-next-line no-control-regex -- a quota root holds no control octets
  if (root.length === 0 || root.startsWith('.') || /[/*%?]/.test(root) || /[\x00-\x1f\x7f]/.test(root) || root.length > 490) {
    throw new CommandError('IMAP_MAILBOX_BADNAME', `Invalid quota root ${JSON.stringify(root.slice(0, 60))}`);
  }
}

export function applyQuota(store: ReplicaStore, q: QuotaIn): void {
  if (!q || typeof q.root !== 'string') throw bad('APPLY QUOTA needs ROOT');
  validQuotaRoot(q.root);
  const limits = q.limits ?? {};
  const pick = (...keys: string[]): number | null => {
    for (const k of keys) {
      const v = limits[k];
      if (typeof v === 'number' && Number.isFinite(v)) return v < 0 || v >= 4294967295 ? null : Math.floor(v);
    }
    return null;
  };
  const want = {
    storage: pick('STORAGE', 'LIMIT'),
    message: pick('MESSAGE'),
    annot: pick('ANNOTATION-STORAGE', 'X-ANNOTATION-STORAGE'),
    folders: pick('MAILBOX', 'X-NUM-FOLDERS'),
  };
  store.tx(() => {
    const cur = store.q('SELECT * FROM quota WHERE root = ?').get(q.root) as Record<string, unknown> | undefined;
    const same = (a: unknown, b: number | null): boolean => (a === null || a === undefined ? b === null : num(a) === b);
    if (
      cur &&
      same(cur.storage, want.storage) &&
      same(cur.message, want.message) &&
      same(cur.annot_storage, want.annot) &&
      same(cur.num_folders, want.folders)
    ) {
      return;
    }
    const modseq = q.modseq && q.modseq !== 0n ? q.modseq : store.nextModseq();
    store.db
      .prepare('INSERT OR REPLACE INTO quota (root, storage, message, annot_storage, num_folders, modseq) VALUES (?, ?, ?, ?, ?, ?)')
      .run(q.root, want.storage, want.message, want.annot, want.folders, toDb64(modseq));
  });
}

export function applyUnquota(store: ReplicaStore, root: string): void {
  if (typeof root !== 'string') throw bad('APPLY UNQUOTA needs a root');
  validQuotaRoot(root);
  store.tx(() => {
    store.q('DELETE FROM quota WHERE root = ?').run(root);
  });
}

export function applySub(store: ReplicaStore, userid: string, mboxname: string, sub: boolean): void {
  if (typeof userid !== 'string' || typeof mboxname !== 'string') throw bad('USERID and MBOXNAME are required');
  validateUserid(userid);
  validateMailboxName(mboxname);
  store.tx(() => {
    if (sub) store.q('INSERT OR IGNORE INTO subscription (userid, mboxname) VALUES (?, ?)').run(userid, mboxname);
    else store.q('DELETE FROM subscription WHERE userid = ? AND mboxname = ?').run(userid, mboxname);
  });
}

export function applySeen(store: ReplicaStore, s: SeenIn): void {
  if (
    !s ||
    typeof s.userid !== 'string' ||
    typeof s.uniqueid !== 'string' ||
    !Number.isSafeInteger(s.lastread) ||
    !isU32(s.lastuid) ||
    !Number.isSafeInteger(s.lastchange) ||
    typeof s.seenuids !== 'string'
  ) {
    throw bad('APPLY SEEN needs USERID, UNIQUEID, LASTREAD, LASTUID, LASTCHANGE and SEENUIDS');
  }
  validateUserid(s.userid);
  if (s.uniqueid.length === 0 || s.uniqueid.length > 256) throw bad('Invalid UNIQUEID');
  store.tx(() => {
    store.db
      .prepare('INSERT OR REPLACE INTO seen (userid, uniqueid, lastread, lastuid, lastchange, seenuids) VALUES (?, ?, ?, ?, ?, ?)')
      .run(s.userid, s.uniqueid, s.lastread, s.lastuid, s.lastchange, s.seenuids);
  });
}

export async function applyAnnotation(store: ReplicaStore, name: string, entry: string, userid: string, value: BinaryValue | null): Promise<void> {
  if (typeof name !== 'string' || typeof entry !== 'string' || typeof userid !== 'string') {
    throw bad('MBOXNAME, ENTRY and USERID are required');
  }
  // eslint-disable-next-line no-control-regex -- an annotation entry holds no control octets
  if (entry.length === 0 || entry.length > 1024 || /[\x00-\x1f]/.test(entry)) throw bad('Invalid ENTRY');
  const v = value === null ? Buffer.alloc(0) : await store.binary(value, `annotation ${entry}`);
  if (name !== '') validateMailboxName(name);
  store.tx(() => {
    if (name === '') {
      if (v.length === 0) store.q('DELETE FROM server_annot WHERE entry = ? AND userid = ?').run(entry, userid);
      else store.q('INSERT OR REPLACE INTO server_annot (entry, userid, value) VALUES (?, ?, ?)').run(entry, userid, v);
      return;
    }
    const mb = store.mailboxByName(name);
    if (!mb || mb.state !== LIVE) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No mailbox ${name}`);
    if (v.length === 0) {
      store.q('DELETE FROM mailbox_annot WHERE mailbox_id = ? AND entry = ? AND userid = ?').run(mb.id, entry, userid);
    } else {
      store.db
        .prepare('INSERT OR REPLACE INTO mailbox_annot (mailbox_id, entry, userid, value, modseq) VALUES (?, ?, ?, ?, 0)')
        .run(mb.id, entry, userid, v);
    }
  });
}

export function applyUnuser(store: ReplicaStore, userid: string): void {
  if (typeof userid !== 'string') throw bad('APPLY UNUSER needs a userid');
  if (userid === '') return;
  validateUserid(userid);
  const inbox = useridToInbox(userid, store.names);
  store.tx(() => {
    const inboxEntry = store.mailboxByName(inbox);
    const hadInbox = !!inboxEntry && inboxEntry.state !== TOMBSTONE;
    store.q('DELETE FROM subscription WHERE userid = ?').run(userid);
    // Deepest first, so a parent never turns into a placeholder because of a child removed in the same step.
    const lives = (
      store.db
        .prepare('SELECT * FROM mailbox WHERE state = 0 AND (name = ? OR (name >= ? AND name < ?))')
        .all(inbox, ...prefixRange(`${inbox}.`)) as Record<string, unknown>[]
    )
      .map(mailboxFromRow)
      .sort((a, b) => b.name.length - a.name.length);
    for (const mb of lives) store.removeLive(mb);
    if (hadInbox) {
      store.q('DELETE FROM seen WHERE userid = ?').run(userid);
      store.q('DELETE FROM sieve WHERE userid = ?').run(userid);
      store.q('DELETE FROM sieve_active WHERE userid = ?').run(userid);
      store.q('DELETE FROM user_groups WHERE userid = ?').run(userid);
    }
    store.q('DELETE FROM quota WHERE root = ? OR (root >= ? AND root < ?)').run(inbox, ...prefixRange(`${inbox}.`));
  });
}
