/**
 * What the replica holds for one user, printed exactly as
 * `cyrus-peer dump USER` prints a Cyrus store over IMAP (shared/peer/lib/
 * peer_mail.py `dump`), so that `diff` of the two is empty for a converged
 * user.
 *
 * That dump logs in as the user on a Cyrus 3.6 with its defaults
 * (altnamespace and unixhierarchysep on), so names are the user's view:
 * `INBOX`, `Sent`, `Archive/2024`; the user's DELETED copies, the `#sieve`
 * mailbox and non-email mailboxes are not visible to the user and are left
 * out. Lines, in order:
 *   mailbox <name> uidvalidity=U uidnext=N highestmodseq=M messages=C   (names sorted)
 *   msg <name> uid=U modseq=M size=S sha1=H internaldate=<RFC 3501 date> flags=[sorted flags]
 *   sub <name>                                                          (sorted)
 *   meta <name> <entry> "<value>"   /shared/comment, /private/comment, /private/specialuse
 *   quota <root> (STORAGE <used KiB> <limit> ...)                       (the INBOX's root)
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { parseMailboxName, useridToInbox } from '../../src/protocol/names.js';
import { FLAG_ANSWERED, FLAG_DELETED, FLAG_DRAFT, FLAG_FLAGGED, FLAG_SEEN } from '../../src/protocol/crc.js';
import { LIVE, PLACEHOLDER, RECORD_COLUMNS, num, recordFromRow, type MailboxRow } from './db.js';
import { ReplicaStore, prefixRange } from './store.js';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad2 = (n: number): string => String(n).padStart(2, '0');

/** RFC 3501 date-time as Cyrus prints it (day space-padded), in UTC. */
export function imapDate(t: number): string {
  const d = new Date(t * 1000);
  const day = String(d.getUTCDate()).padStart(2, ' ');
  return `${day}-${MONTHS[d.getUTCMonth()]}-${d.getUTCFullYear()} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000`;
}

/**
 * The user's view of an internal name under altnamespace + unixhierarchysep,
 * or null when the user cannot see it. Other users' mailboxes appear under
 * `Other Users/`, shared ones as they are.
 */
export function userViewName(name: string, userid: string, store: ReplicaStore): string | null {
  const inbox = useridToInbox(userid, store.names);
  const ext = (s: string): string => s.split('.').map((c) => c.replace(/\^/g, '.')).join('/');
  if (name === inbox) return 'INBOX';
  if (name.startsWith(`${inbox}.`)) return ext(name.slice(inbox.length + 1));
  const p = parseMailboxName(name, store.names);
  if (p.deleted) return null;
  if (p.userid !== null) {
    const local = p.userid.split('@')[0]!;
    return `Other Users/${local}${p.rest ? `/${ext(p.rest)}` : ''}`;
  }
  return ext(p.rest);
}

const SYS_NAMES: ReadonlyArray<[number, string]> = [
  [FLAG_ANSWERED, '\\Answered'],
  [FLAG_FLAGGED, '\\Flagged'],
  [FLAG_DRAFT, '\\Draft'],
  [FLAG_DELETED, '\\Deleted'],
  [FLAG_SEEN, '\\Seen'],
];

/** Code-unit order, as Python's sorted() on these ASCII strings. */
const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function sha1OfFile(p: string): string | null {
  let fd: number;
  try {
    fd = fs.openSync(p, 'r');
  } catch {
    return null;
  }
  try {
    const h = createHash('sha1');
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
    return h.digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

export interface DumpOptions {
  /** hash each blob as IMAP would serve it (default true); false prints the record GUID */
  verifyBlobs?: boolean;
}

/** An open store or sink, or the paths of a store to open read-only for the dump. */
export type DumpSource = ReplicaStore | { store: ReplicaStore } | { configdirectory: string; partitions: Record<string, string> };

/** The canonical dump of one user's replica state (no trailing newline, like the Python tool's print). */
/** One line of the dump, as data (`cyrsync dump --json` writes these as JSON lines). */
export type DumpEntry =
  | { type: 'mailbox'; mailbox: string; examineFailed: true }
  | { type: 'mailbox'; mailbox: string; examineFailed?: false; uidvalidity: number; uidnext: number; highestmodseq: string; messages: number }
  | { type: 'msg'; mailbox: string; uid: number; modseq: string; size: number; sha1: string | null; internaldate: string; flags: string[] }
  | { type: 'sub'; mailbox: string }
  | { type: 'meta'; mailbox: string; entry: string; value: string }
  | { type: 'quota'; root: string; resources: { name: string; used: number; limit: number }[] };

/** The canonical text line of an entry (the cyrus-peer dump form). */
export function formatDumpEntry(e: DumpEntry): string {
  switch (e.type) {
    case 'mailbox':
      return e.examineFailed
        ? `mailbox ${e.mailbox} EXAMINE-FAILED`
        : `mailbox ${e.mailbox} uidvalidity=${e.uidvalidity} uidnext=${e.uidnext} highestmodseq=${e.highestmodseq} messages=${e.messages}`;
    case 'msg':
      return `msg ${e.mailbox} uid=${e.uid} modseq=${e.modseq} size=${e.size} sha1=${e.sha1 ?? 'None'} internaldate=${e.internaldate} flags=[${e.flags.join(' ')}]`;
    case 'sub':
      return `sub ${e.mailbox}`;
    case 'meta':
      return `meta ${e.mailbox} ${e.entry} "${e.value}"`;
    case 'quota':
      return `quota ${e.root} (${e.resources.map((r) => `${r.name} ${r.used} ${r.limit}`).join(' ')})`;
  }
}

/** The canonical dump of one user's replica state (no trailing newline, like the Python tool's print). */
export function dumpUser(source: DumpSource, userid: string, opts: DumpOptions = {}): string {
  return withStore(source, (store) => Array.from(dumpEntries(store, userid, opts), formatDumpEntry).join('\n'));
}

/** Runs fn on the store of `source`, opening (read-only) and closing it when given paths. */
export function withStore<T>(source: DumpSource, fn: (store: ReplicaStore) => T): T {
  if (source instanceof ReplicaStore) return fn(source);
  if ('store' in source) return fn(source.store);
  const store = ReplicaStore.openReadonly({ configdirectory: source.configdirectory, partitions: source.partitions });
  try {
    return fn(store);
  } finally {
    store.close();
  }
}

/**
 * The dump, one entry at a time: records are read from the database as they
 * are yielded, so a user of any size is dumped with flat memory.
 */
export function* dumpEntries(store: ReplicaStore, userid: string, opts: DumpOptions = {}): Generator<DumpEntry> {
  const verify = opts.verifyBlobs ?? true;
  const visible = store
    .userMailboxes(userid)
    .map((mb) => ({ mb, view: userViewName(mb.name, userid, store) }))
    .filter((x): x is { mb: MailboxRow; view: string } => x.view !== null && (x.mb.state === PLACEHOLDER || x.mb.mbtype === 'e'))
    .sort((a, b) => byCodeUnit(a.view, b.view));

  const recordsStmt = store.db
    .prepare(`SELECT ${RECORD_COLUMNS} FROM record WHERE mailbox_id = ? AND expunged = 0 ORDER BY uid`)
    .safeIntegers(false);
  const countStmt = store.db.prepare('SELECT count(*) AS n FROM record WHERE mailbox_id = ? AND expunged = 0').pluck();
  for (const { mb, view } of visible) {
    if (mb.state !== LIVE) {
      yield { type: 'mailbox', mailbox: view, examineFailed: true };
      continue;
    }
    const messages = Number(countStmt.get(mb.id));
    yield { type: 'mailbox', mailbox: view, uidvalidity: mb.uidvalidity, uidnext: mb.lastUid + 1, highestmodseq: String(mb.highestmodseq), messages };
    for (const row of recordsStmt.iterate(mb.id) as Iterable<Record<string, unknown>>) {
      const r = recordFromRow(row);
      let sha1: string | null = r.guid;
      if (verify) {
        const blob = store.blobKnown(r.guid);
        sha1 = blob && store.blobs.partitions[blob.partition] !== undefined ? sha1OfFile(store.blobs.blobPath(blob.partition, r.guid)) : null;
      }
      const flags = [...SYS_NAMES.filter(([bit]) => r.sysflags & bit).map(([, n]) => n), ...r.userflags].sort(byCodeUnit);
      yield { type: 'msg', mailbox: view, uid: r.uid, modseq: String(r.modseq), size: r.size, sha1, internaldate: imapDate(r.internaldate), flags };
    }
  }

  // Cyrus LSUB leaves out subscriptions whose mailbox does not exist (the subscription itself is kept).
  const subs = (store.db.prepare('SELECT mboxname FROM subscription WHERE userid = ?').all(userid) as { mboxname: string }[])
    .filter((r) => {
      const mb = store.mailboxByName(r.mboxname);
      return mb !== null && mb.state === LIVE && mb.mbtype === 'e';
    })
    .map((r) => userViewName(r.mboxname, userid, store))
    .filter((n): n is string => n !== null)
    .sort(byCodeUnit);
  for (const s of subs) yield { type: 'sub', mailbox: s };

  const annot = store.db.prepare('SELECT value FROM mailbox_annot WHERE mailbox_id = ? AND entry = ? AND userid = ?');
  for (const { mb, view } of visible) {
    if (mb.state !== LIVE) continue;
    for (const [entry, owner, key] of [
      ['/comment', '', '/shared/comment'],
      ['/comment', userid, '/private/comment'],
      ['/specialuse', userid, '/private/specialuse'],
    ] as const) {
      const r = annot.get(mb.id, entry, owner) as { value: Buffer } | undefined;
      // the Python tool decodes the IMAP bytes as UTF-8 and prints them as UTF-8
      if (r && r.value.length > 0) yield { type: 'meta', mailbox: view, entry: key, value: r.value.toString('utf8') };
    }
  }

  const inbox = useridToInbox(userid, store.names);
  const inboxRow = store.mailboxByName(inbox);
  if (inboxRow && inboxRow.state === LIVE) {
    const root = store.quotaRootOf(inbox);
    if (root !== null) {
      const q = store.db.prepare('SELECT * FROM quota WHERE root = ?').get(root) as Record<string, unknown>;
      const usage = quotaUsage(store, root);
      const resources: { name: string; used: number; limit: number }[] = [];
      const add = (name: string, used: number, limit: unknown): void => {
        if (limit !== null && limit !== undefined) resources.push({ name, used, limit: num(limit) });
      };
      add('STORAGE', Math.floor(usage.storage / 1024), q.storage);
      add('MESSAGE', usage.messages, q.message);
      add('X-ANNOTATION-STORAGE', Math.floor(usage.annotStorage / 1024), q.annot_storage);
      add('X-NUM-FOLDERS', usage.folders, q.num_folders);
      yield { type: 'quota', root: userViewName(root, userid, store) ?? root, resources };
    }
  }
}

/**
 * Usage of a quota root (§1.6): over the live mailboxes whose nearest root it
 * is, Σ size and count of non-expunged records, Σ annotation value lengths,
 * number of mailboxes.
 */
export function quotaUsage(store: ReplicaStore, root: string): { storage: number; messages: number; annotStorage: number; folders: number } {
  const mbs = (
    store.db
      .prepare('SELECT id, name FROM mailbox WHERE state = 0 AND (name = ? OR (name >= ? AND name < ?))')
      .all(root, ...prefixRange(`${root}.`)) as { id: bigint; name: string }[]
  ).filter((m) => store.quotaRootOf(m.name) === root);
  let storage = 0;
  let messages = 0;
  let annotStorage = 0;
  const recs = store.db.prepare('SELECT count(*) AS c, coalesce(sum(size), 0) AS s FROM record WHERE mailbox_id = ? AND expunged = 0');
  const annM = store.db.prepare('SELECT coalesce(sum(length(value)), 0) AS s FROM mailbox_annot WHERE mailbox_id = ?');
  const annR = store.db.prepare('SELECT coalesce(sum(length(value)), 0) AS s FROM record_annot WHERE mailbox_id = ?');
  for (const m of mbs) {
    const r = recs.get(m.id) as { c: bigint; s: bigint };
    messages += num(r.c);
    storage += num(r.s);
    annotStorage += num((annM.get(m.id) as { s: bigint }).s) + num((annR.get(m.id) as { s: bigint }).s);
  }
  return { storage, messages, annotStorage, folders: mbs.length };
}
