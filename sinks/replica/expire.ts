/**
 * The replica's housekeeping run (replica-semantics §8) as `cyrsync expire`
 * and the standalone daemon's timer perform it: DELETED-namespace mailboxes
 * past their age removed, expunged records past theirs purged, then message
 * files no record refers to any more collected. Each step is its own short
 * SQLite write transaction (the store's own locking: a sync in this or
 * another process is never interleaved with one), and a blob is unlinked
 * inside the transaction that deletes its row (housekeeping.ts).
 */
import { belongsToUser, isDeletedName } from '../../src/protocol/names.js';
import type { Settings } from '../../src/config.js';
import { LIVE, num, openDatabase } from './db.js';
import { BlobStore } from './blobs.js';
import { blobStats, collectGarbage, purgeExpunged, type HousekeepingStore } from './housekeeping.js';

export interface ExpirePlan {
  /** seconds, or null: no purge of expunged records */
  expungedAge: number | null;
  /** seconds, or null: no removal of DELETED mailboxes */
  deletedAge: number | null;
  user?: string | null;
  prefix?: string | null;
  /** seconds (default one day) */
  blobAge?: number;
  /** unix seconds (tests use a settable clock) */
  now?: number;
  /** one line per mailbox changed */
  onMailbox?: (line: string) => void;
}

export interface ExpireResult {
  purgedRecords: number;
  removedMailboxes: number;
  removedBlobs: number;
  freedBytes: number;
}

interface MailboxRef {
  id: number;
  name: string;
}

/** The whole run; each step is its own short write transaction. */
export function expireReplica(store: HousekeepingStore, plan: ExpirePlan): ExpireResult {
  const now = plan.now ?? Math.floor(Date.now() / 1000);
  const result: ExpireResult = { purgedRecords: 0, removedMailboxes: 0, removedBlobs: 0, freedBytes: 0 };
  const selected = (store.db.prepare('SELECT id, name FROM mailbox WHERE state = ? ORDER BY name').all(LIVE) as { id: bigint; name: string }[])
    .map((r) => ({ id: num(r.id), name: r.name }))
    .filter((m) => (plan.user ? belongsToUser(m.name, plan.user) : true) && (plan.prefix ? m.name.startsWith(plan.prefix) : true));
  const filtered = Boolean(plan.user || plan.prefix);
  if (plan.deletedAge !== null) {
    for (const mb of selected) {
      const when = deletedAt(mb.name);
      if (when === null || when >= now - plan.deletedAge) continue;
      const records = removeMailbox(store, mb);
      result.removedMailboxes++;
      plan.onMailbox?.(`removed ${mb.name} (deleted ${new Date(when * 1000).toISOString()}, ${records} records)`);
    }
  }
  if (plan.expungedAge !== null) {
    if (!filtered) {
      result.purgedRecords += purgeExpunged(store, { olderThanSeconds: plan.expungedAge, now });
    } else {
      for (const mb of selected) {
        const n = purgeExpunged(store, { olderThanSeconds: plan.expungedAge, now, mailboxId: mb.id });
        if (n > 0) plan.onMailbox?.(`purged ${n} expunged records from ${mb.name}`);
        result.purgedRecords += n;
      }
    }
  }
  const before = blobStats(store);
  for (;;) {
    const n = collectGarbage(store, { minAgeSeconds: plan.blobAge ?? 86400, now, limit: 5000 });
    result.removedBlobs += n;
    if (n < 5000) break;
  }
  result.freedBytes = before.bytes - blobStats(store).bytes;
  return result;
}

/** The deletion time in a DELETED-namespace name (`DELETED.user.bob.Sent.5F3A1B2C`), or null. */
export function deletedAt(name: string): number | null {
  if (!isDeletedName(name)) return null;
  const last = name.slice(name.lastIndexOf('.') + 1);
  return /^[0-9A-F]{8,16}$/.test(last) ? Number.parseInt(last, 16) : null;
}

/** Removes a DELETED-namespace mailbox entirely (nothing is left in that namespace, §5.5). */
function removeMailbox(store: HousekeepingStore, mb: MailboxRef): number {
  return store.tx(() => {
    const db = store.db;
    // Still the same, still live: a sync may have changed it since it was listed.
    const row = db.prepare('SELECT state FROM mailbox WHERE id = ? AND name = ?').get(mb.id, mb.name) as { state: bigint } | undefined;
    if (row === undefined || num(row.state) !== LIVE) return 0;
    db.prepare('DELETE FROM record_annot WHERE mailbox_id = ?').run(mb.id);
    const n = db.prepare('DELETE FROM record WHERE mailbox_id = ?').run(mb.id).changes;
    db.prepare('DELETE FROM mailbox_annot WHERE mailbox_id = ?').run(mb.id);
    db.prepare('DELETE FROM mailbox WHERE id = ?').run(mb.id);
    return n;
  });
}

/**
 * The store for housekeeping: its own connection to the database and the
 * blob paths, without the start-up cleanup of staging (a running server's
 * staging files are left alone).
 */
export function openForHousekeeping(settings: Settings): HousekeepingStore & { close(): void } {
  const db = openDatabase(settings.configdirectory, true);
  const blobs = new BlobStore({ partitions: { ...settings.partitions }, fsync: true });
  return {
    db,
    blobs,
    tx: <T>(fn: () => T): T => db.transaction(fn).immediate(),
    close: () => db.close(),
  };
}

