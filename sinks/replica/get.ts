/** Replica GET handlers (replica-semantics §4): reports built from the store, one at a time. */
import { createReadStream } from 'node:fs';
import { CommandError } from '../../transforms/errors.js';
import type { DlistItem } from '../../transforms/dlist-types.js';
import {
  compareMailboxNames,
  validateFilename,
  validateGuid,
  validateMailboxName,
  validateUserid,
} from '../../src/protocol/names.js';
import { LIVE, fromDb64, num, recordFromRow, type MailboxRow } from './db.js';
import { N, S, item, kv } from './reports.js';
import type { ReplicaStore, SessionFlags, Out } from './store.js';
import { bad, isU32 } from './records.js';

export async function getUser(store: ReplicaStore, userid: string, flags: SessionFlags, out: Out): Promise<void> {
  validateUserid(userid);
  // Each report is built and emitted in turn: a report is internally consistent, GETs need no snapshot.
  const mbs = store.userMailboxes(userid).filter((m) => store.visible(m, flags));
  const roots: string[] = [];
  for (const mb of mbs) {
    await out(store.report(mb));
    if (mb.state === LIVE) {
      const root = store.quotaRootOf(mb.name);
      if (root !== null && !roots.includes(root)) roots.push(root);
    }
  }
  for (const root of roots) {
    const q = quotaItem(store, root);
    if (q) await out(q);
  }
  if (store.userExists(userid, flags)) await getMeta(store, userid, flags, out);
}

export async function getMeta(store: ReplicaStore, userid: string, flags: SessionFlags, out: Out): Promise<void> {
  validateUserid(userid);
  const seen = store.db
    .prepare('SELECT * FROM seen WHERE userid = ? ORDER BY uniqueid')
    .all(userid) as Record<string, unknown>[];
  for (const s of seen) {
    await out(
      item(
        'SEEN',
        kv([
          item('UNIQUEID', S(s.uniqueid as string)),
          item('LASTREAD', N(num(s.lastread))),
          item('LASTUID', N(num(s.lastuid))),
          item('LASTCHANGE', N(num(s.lastchange))),
          item('SEENUIDS', S(s.seenuids as string)),
        ]),
      ),
    );
  }
  const subs = (store.q('SELECT mboxname FROM subscription WHERE userid = ?').all(userid) as { mboxname: string }[])
    .map((r) => r.mboxname)
    .sort(compareMailboxNames);
  if (subs.length > 0) await out(item('LSUB', { kind: 'list', items: subs.map((n) => S(n)) }));
  if (!flags.sieveMailboxMode) {
    const scripts = store.db
      .prepare('SELECT name, last_update, guid FROM sieve WHERE userid = ? ORDER BY name')
      .all(userid) as Record<string, unknown>[];
    for (const sc of scripts) {
      await out(
        item(
          'SIEVE',
          kv([
            item('FILENAME', S(`${sc.name as string}.script`)),
            item('LAST_UPDATE', N(num(sc.last_update))),
            item('GUID', { kind: 'atom', value: sc.guid as string }),
            item('ISACTIVE', N(0)),
          ]),
        ),
      );
    }
    const active = store.q('SELECT name FROM sieve_active WHERE userid = ?').get(userid) as { name: string } | undefined;
    if (active) {
      await out(
        item(
          'SIEVE',
          kv([
            item('FILENAME', S(`${active.name}.bc`)),
            item('LAST_UPDATE', N(0)),
            item('GUID', { kind: 'atom', value: '0'.repeat(40) }),
            item('ISACTIVE', N(1)),
          ]),
        ),
      );
    }
  }
}

/** A mailbox's report read in one transaction (its row and its annotations agree), or null. */
function visibleReport(store: ReplicaStore, lookup: () => MailboxRow | null, flags: SessionFlags): DlistItem | null {
  return store.db.transaction(() => {
    const mb = lookup();
    return mb && store.visible(mb, flags) ? store.report(mb) : null;
  })();
}

export async function getMailboxes(store: ReplicaStore, names: string[], flags: SessionFlags, out: Out): Promise<void> {
  for (const n of names) {
    validateMailboxName(n);
    const r = visibleReport(store, () => store.mailboxByName(n), flags);
    if (r) await out(r);
  }
}

export async function getUniqueids(store: ReplicaStore, uniqueids: string[], flags: SessionFlags, out: Out): Promise<void> {
  for (const u of uniqueids) {
    if (typeof u !== 'string' || u.length === 0 || u.length > 256) throw bad('Invalid UNIQUEID');
    const r = visibleReport(store, () => store.mailboxByUniqueid(u), flags);
    if (r) await out(r);
  }
}

/**
 * Unlike the spec's visibility rule (§3.4), a sieve-store mailbox is
 * reported here without SIEVE-MAILBOX too: the real 3.6.1 sync_server does.
 */
export async function getFullMailbox(store: ReplicaStore, name: string, _flags: SessionFlags, out: Out): Promise<void> {
  validateMailboxName(name);
  // One read transaction for the mailbox row and its records, so that
  // LAST_UID, HIGHESTMODSEQ and the CRCs agree with the records reported even
  // while another process commits to the same store.
  const report = store.db.transaction(() => {
    const mb = store.mailboxByName(name);
    if (!mb || mb.state !== LIVE) {
      throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No live mailbox ${name}`);
    }
    return store.report(mb, true);
  })();
  await out(report);
}

export function quotaItem(store: ReplicaStore, root: string): DlistItem | null {
  const q = store.q('SELECT * FROM quota WHERE root = ?').get(root) as Record<string, unknown> | undefined;
  if (!q) return null;
  const lim = (v: unknown): number | null => (v === null || v === undefined ? null : num(v));
  const storage = lim(q.storage);
  const items: DlistItem[] = [item('ROOT', S(root)), item('LIMIT', N(storage ?? 4294967295))];
  if (storage !== null) items.push(item('STORAGE', N(storage)));
  const message = lim(q.message);
  if (message !== null) items.push(item('MESSAGE', N(message)));
  const annot = lim(q.annot_storage);
  if (annot !== null) items.push(item('X-ANNOTATION-STORAGE', N(annot)));
  const folders = lim(q.num_folders);
  if (folders !== null) items.push(item('X-NUM-FOLDERS', N(folders)));
  items.push(item('MODSEQ', N(fromDb64(q.modseq))));
  return item('QUOTA', kv(items));
}

export async function getQuota(store: ReplicaStore, root: string, out: Out): Promise<void> {
  const q = quotaItem(store, root);
  if (q) await out(q);
}

export async function getAnnotation(store: ReplicaStore, name: string, out: Out): Promise<void> {
  if (name === '') {
    const rows = store.q('SELECT entry, userid, value FROM server_annot ORDER BY entry, userid').all() as Record<
      string,
      unknown
    >[];
    for (const r of rows) {
      await out(
        item('ANNOTATION', kv([item('MBOXNAME', S('')), item('ENTRY', S(r.entry as string)), item('USERID', S(r.userid as string)), item('VALUE', S(r.value as Buffer))])),
      );
    }
    return;
  }
  // A mailbox name: no items, as the real 3.6.1 sync_server answers (its
  // annotatemore_findall_pattern() finds nothing for an internal name).
  // This is also what keeps a 3.6.1 client safe: its sync_do_annotation()
  // computes the master side the same way (always empty) and would send
  // APPLY UNANNOTATION for every mailbox annotation reported here.
  validateMailboxName(name);
}

export async function getFetch(
    store: ReplicaStore,
  req: { mboxname: string; partition: string; uniqueid: string; guid: string; uid: number },
  out: Out,
): Promise<void> {
  if ([req.mboxname, req.partition, req.uniqueid, req.guid].some((v) => typeof v !== 'string') || !isU32(req.uid)) {
    throw bad('GET FETCH needs MBOXNAME, PARTITION, UNIQUEID, GUID and UID');
  }
  const guid = validateGuid(req.guid);
  const notFound = (): CommandError =>
    new CommandError('IMAP_MAILBOX_NONEXISTENT', `No message ${guid} at UID ${req.uid} of ${req.mboxname}`);
  // As the real 3.6.1 sync_server, which reads the file at (PARTITION, UNIQUEID, UID):
  // the mailbox is found by UNIQUEID on that partition (MBOXNAME is not consulted), a
  // missing message is NONEXISTENT, and a message whose GUID differs from the one asked
  // for is answered `* MESSAGE NIL` (its printfile() refuses the mismatched file).
  const mb = store.mailboxByUniqueid(req.uniqueid);
  if (!mb || mb.state !== LIVE || mb.partition !== req.partition) throw notFound();
  const row = store.q('SELECT * FROM record WHERE mailbox_id = ? AND uid = ?').get(mb.id, req.uid) as
    | Record<string, unknown>
    | undefined;
  if (!row) throw notFound();
  const rec = recordFromRow(row);
  if (!rec.hasBlob) throw notFound();
  if (rec.guid !== guid) {
    await out(item('MESSAGE', { kind: 'nil' }));
    return;
  }
  const blob = await store.locateBlob(guid);
  if (!blob || blob.size !== rec.size) throw notFound();
  const file = blob.path;
  await out(
    item('MESSAGE', {
      kind: 'file',
      partition: req.partition,
      guid,
      size: blob.size,
      source: () => createReadStream(file),
    }),
  );
}

export async function getFetchSieve(store: ReplicaStore, userid: string, filename: string, out: Out): Promise<void> {
  if (typeof userid !== 'string' || typeof filename !== 'string') throw bad('GET FETCH_SIEVE needs USERID and FILENAME');
  validateUserid(userid);
  validateFilename(filename);
  const notFound = new CommandError('IMAP_MAILBOX_NONEXISTENT', `No sieve script ${filename} for ${userid}`);
  if (!filename.endsWith('.script')) throw notFound;
  const r = store.q('SELECT content FROM sieve WHERE userid = ? AND name = ?').get(userid, filename.slice(0, -7)) as
    | { content: Buffer }
    | undefined;
  if (!r) throw notFound;
  await out(item('SIEVE', kv([item('USERID', S(userid)), item('FILENAME', S(filename)), item('CONTENT', S(r.content))])));
}
