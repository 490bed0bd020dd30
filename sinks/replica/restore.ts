/**
 * RESTORE MAILBOX on the replica, as Cyrus 3.6.1 sync_server does it
 * (imap/sync_support.c sync_restore_mailbox):
 *
 * - a sieve-script mailbox (MBOXTYPE f) without SIEVE-MAILBOX is accepted
 *   and ignored;
 * - an existing mailbox gets the records appended: each takes the next UID
 *   and a new modseq (UNIQUEID, HIGHESTMODSEQ, UIDVALIDITY, MBOXTYPE of the
 *   request and UID, MODSEQ, LAST_UPDATED of the records are not used); its
 *   own annotations win over the restored ones;
 * - a missing mailbox (or a deleted one's tombstone) is created; when
 *   UNIQUEID, HIGHESTMODSEQ and UIDVALIDITY are all given they are kept, and
 *   then a record keeps its UID when it is above the UIDs already used and
 *   its MODSEQ / LAST_UPDATED when its modseq is not above HIGHESTMODSEQ;
 * - a mailbox of another type: IMAP_MAILBOX_BADTYPE (`NO Unknown error`); an unreadable RECORD:
 *   IMAP_PROTOCOL_BAD_PARAMETERS; a message never uploaded (and not
 *   expunged): IMAP_IOERROR. Any refusal leaves the store untouched (one
 *   transaction).
 *
 * Differences, each where Cyrus has no sane answer: a missing RECORD list is
 * an empty one (Cyrus dereferences NULL); a UNIQUEID already used by another
 * mailbox is not kept (a fresh one is made, as when none is given); a user
 * sub-folder needs a live parent, as for APPLY MAILBOX.
 */
import { randomUUID } from 'node:crypto';
import { CommandError } from '../../transforms/errors.js';
import { asciiLower } from '../../src/protocol/crc.js';
import { ancestors, mailboxOwner, parseMailboxName, validateMailboxName, validatePartition } from '../../src/protocol/names.js';
import type { MailboxIn } from '../../src/protocol/types.js';
import { LIVE, fromDb64, mailboxFromRow, toDb64, type MailboxRow } from './db.js';
import { prepareMailbox } from './mailbox-apply.js';
import { insertRecord, parseRecord, type ResolvedAnnot } from './records.js';
import { parseMboxtype, type ReplicaStore, type SessionFlags } from './store.js';

const bad = (what: string): CommandError => new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', what);

/** What the request asks to keep when it creates the mailbox. */
interface Kept {
  uniqueid: string;
  highestmodseq: bigint;
  uidvalidity: number;
}

export async function restoreMailbox(store: ReplicaStore, m: MailboxIn, flags: SessionFlags): Promise<void> {
  const name = validateMailboxName(m.mboxname);
  const t = parseMboxtype(m.mboxtype);
  if (t.type === 'f' && !flags.sieveMailboxMode) return;
  const partition = m.partition !== undefined ? validatePartition(m.partition) : defaultPartition(store);
  const prepared = await prepareMailbox(store, m);
  store.tx(() => {
    const e = store.mailboxByName(name);
    const existing = e && e.state === LIVE ? e : null;
    const mb = existing ?? createMailbox(store, name, m, t.type, partition);
    // Cyrus: IMAP_MAILBOX_BADTYPE, which sync_response answers `NO Unknown error`.
    if (mb.mbtype !== t.type) throw new CommandError('IMAP_INTERNAL', `IMAP_MAILBOX_BADTYPE: ${name} is of type ${mb.mbtype}, not ${t.type}`);
    if (m.badRecord) throw bad(`RESTORE MAILBOX ${name}: a RECORD could not be parsed`);
    restoreAnnots(store, mb, prepared.annots, existing !== null);
    appendRecords(store, mb, m, prepared.recordAnnots, existing ? null : kept(m));
  });
}

function defaultPartition(store: ReplicaStore): string {
  return store.blobs.defaultPartition;
}

/** UNIQUEID, HIGHESTMODSEQ and UIDVALIDITY are kept only together. */
function kept(m: MailboxIn): Kept | null {
  if (!m.uniqueid || !m.highestmodseq || !m.uidvalidity) return null;
  return { uniqueid: m.uniqueid, highestmodseq: m.highestmodseq, uidvalidity: m.uidvalidity };
}

function createMailbox(store: ReplicaStore, name: string, m: MailboxIn, type: string, partition: string): MailboxRow {
  const p = parseMailboxName(name, store.names);
  if (p.userid !== null && !p.deleted && p.rest !== '') {
    if (!ancestors(name).some((a) => store.mailboxByName(a)?.state === LIVE)) {
      throw new CommandError('IMAP_INTERNAL', `Cannot create ${name}: no live parent mailbox`);
    }
  }
  const stub = store.mailboxByName(name);
  if (stub) store.deleteEntry(stub.id);
  let keep = kept(m);
  if (keep && store.mailboxByUniqueid(keep.uniqueid)) keep = null;
  const owner = mailboxOwner(name, store.names);
  const acl = m.acl ?? (owner !== null ? `${owner}\tlrswipkxtecdan\t` : '');
  const info = store.db
    .prepare(
      `INSERT INTO mailbox (name, state, uniqueid, mbtype, partition, acl, options, uidvalidity, highestmodseq, createdmodseq, foldermodseq)
       VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    )
    .run(
      name,
      keep?.uniqueid ?? randomUUID(),
      type,
      partition,
      acl,
      m.options ?? '',
      keep?.uidvalidity ?? Math.floor(Date.now() / 1000) >>> 0,
      toDb64(keep?.highestmodseq ?? 0n),
      toDb64(m.createdmodseq ?? 0n),
      toDb64(m.foldermodseq ?? 0n),
    );
  return mailboxFromRow(store.db.prepare('SELECT * FROM mailbox WHERE id = ?').get(info.lastInsertRowid) as Record<string, unknown>);
}

/** A new mailbox takes the restored annotations; an existing one keeps its own where both have an entry. */
function restoreAnnots(store: ReplicaStore, mb: MailboxRow, annots: ResolvedAnnot[] | null, existing: boolean): void {
  if (!annots) return;
  if (!existing) {
    store.setAnnots('mailbox_annot', [mb.id], annots);
    return;
  }
  const mine = store.mailboxAnnots(mb.id);
  const have = new Set(mine.map((a) => `${a.entry}\x00${a.userid}`));
  store.setAnnots('mailbox_annot', [mb.id], [...mine, ...annots.filter((a) => !have.has(`${a.entry}\x00${a.userid}`))]);
}

/** The next modseq of the mailbox's owner (mboxname_nextmodseq). */
function nextModseq(store: ReplicaStore, mb: MailboxRow): bigint {
  const owner = mailboxOwner(mb.name, store.names);
  let m = mb.highestmodseq;
  if (owner !== null) {
    const hw = store.db.prepare('SELECT modseq FROM modseq_highwater WHERE userid = ?').get(owner) as { modseq: bigint } | undefined;
    if (hw && fromDb64(hw.modseq) > m) m = fromDb64(hw.modseq);
  }
  return m + 1n;
}

function appendRecords(store: ReplicaStore, mb: MailboxRow, m: MailboxIn, recordAnnots: (ResolvedAnnot[] | null)[], keep: Kept | null): void {
  const records = m.records ?? [];
  const modseq = nextModseq(store, mb);
  const now = Math.floor(Date.now() / 1000);
  const mbFlags = [...mb.userflags];
  const flagKey = new Map(mbFlags.map((f) => [asciiLower(f), f]));
  let { lastUid, crcBasic, crcAnnot } = mb;
  let highest = mb.highestmodseq;
  for (let i = 0; i < records.length; i++) {
    const rec = parseRecord(records[i]!, recordAnnots[i] ?? null);
    if (!keep || rec.uid <= lastUid) rec.uid = lastUid + 1;
    lastUid = rec.uid;
    if (!keep || rec.modseq === 0n || rec.modseq > keep.highestmodseq) {
      rec.modseq = modseq;
      rec.lastUpdated = now;
    }
    if (rec.modseq > highest) highest = rec.modseq;
    if (rec.internaldate === 0) rec.internaldate = now;
    for (const f of rec.userflags) {
      if (!flagKey.has(asciiLower(f))) {
        if (flagKey.size >= 128) throw new CommandError('IMAP_PROTOCOL_ERROR', `${mb.name}: more than 128 user flags`);
        flagKey.set(asciiLower(f), f);
        mbFlags.push(f);
      }
    }
    rec.userflags = rec.userflags.map((f) => flagKey.get(asciiLower(f))!);
    const blob = store.blobKnown(rec.guid);
    if (!blob && !rec.expunged) throw new CommandError('IMAP_IOERROR', `${mb.name}: message ${rec.guid} was never uploaded`);
    const [b, a] = insertRecord(store, mb.id, rec, blob?.size ?? records[i]!.size >>> 0, blob !== null);
    crcBasic = (crcBasic ^ b) >>> 0;
    crcAnnot = (crcAnnot ^ a) >>> 0;
  }
  store.db
    .prepare(
      `UPDATE mailbox SET last_uid = ?, highestmodseq = ?, userflags = ?, crc_basic = ?, crc_annot = ?,
       last_appenddate = CASE WHEN ? THEN ? ELSE last_appenddate END WHERE id = ?`,
    )
    .run(lastUid, toDb64(highest), JSON.stringify(mbFlags), crcBasic, crcAnnot, records.length > 0 ? 1 : 0, now, mb.id);
  const owner = mailboxOwner(mb.name, store.names);
  if (owner !== null) {
    const hw = store.db.prepare('SELECT modseq FROM modseq_highwater WHERE userid = ?').get(owner) as { modseq: bigint } | undefined;
    if (!hw || fromDb64(hw.modseq) < highest) {
      store.db.prepare('INSERT OR REPLACE INTO modseq_highwater (userid, modseq) VALUES (?, ?)').run(owner, toDb64(highest));
    }
  }
}
