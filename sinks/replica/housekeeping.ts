/**
 * Local housekeeping the master never asks for (replica-semantics §8):
 * purging old expunged records and collecting unreferenced blobs.
 *
 * Safety of blob collection against concurrent sessions (in this process or
 * in others sharing the store):
 * - a blob is a candidate only when no record references it and it was
 *   neither uploaded nor hit by a RESERVE for `minAgeSeconds` (a session
 *   between RESERVE/MESSAGE and its APPLY MAILBOX keeps it young);
 * - the row is deleted and the file unlinked inside one write transaction;
 *   APPLY MAILBOX checks the row, and APPLY MESSAGE checks the file, inside
 *   theirs, so no commit can reference a blob that is gone.
 */
import * as fs from 'node:fs';
import { num } from './db.js';
import type { ReplicaStore } from './store.js';

/** What housekeeping needs of a store: its database, blob paths and write transactions. */
export type HousekeepingStore = Pick<ReplicaStore, 'db' | 'blobs' | 'tx'>;

export interface PurgeOptions {
  /** expunged records whose last change is older than this are removed (default 7 days) */
  olderThanSeconds?: number;
  now?: number;
  /** only this mailbox's records (default: every mailbox) */
  mailboxId?: number;
}

/** Removes expunged records (and their annotations) last changed before the cutoff. CRCs are unaffected. */
export function purgeExpunged(store: HousekeepingStore, opts: PurgeOptions = {}): number {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const cutoff = now - (opts.olderThanSeconds ?? 7 * 86400);
  const only = opts.mailboxId === undefined ? '' : ' AND mailbox_id = ?';
  const args = opts.mailboxId === undefined ? [cutoff] : [cutoff, opts.mailboxId];
  return store.tx(() => {
    store.db
      .prepare(
        `DELETE FROM record_annot WHERE EXISTS (SELECT 1 FROM record r WHERE r.mailbox_id = record_annot.mailbox_id
         AND r.uid = record_annot.uid AND r.expunged = 1 AND r.last_updated < ?)${only.replace('mailbox_id', 'record_annot.mailbox_id')}`,
      )
      .run(...args);
    return store.db.prepare(`DELETE FROM record WHERE expunged = 1 AND last_updated < ?${only}`).run(...args).changes;
  });
}

export interface CollectOptions {
  /** spare blobs uploaded or reserved within this many seconds (default one day) */
  minAgeSeconds?: number;
  now?: number;
  /** at most this many blobs per call (default 10000), to keep each write transaction short */
  limit?: number;
}

/** Deletes unreferenced blobs; returns how many were removed. */
export function collectGarbage(store: HousekeepingStore, opts: CollectOptions = {}): number {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const cutoff = now - (opts.minAgeSeconds ?? 86400);
  return store.tx(() => {
    const rows = store.db
      .prepare(
        `SELECT guid, partition FROM blob WHERE stored_at < ?
         AND NOT EXISTS (SELECT 1 FROM record WHERE record.guid = blob.guid AND record.has_blob = 1) LIMIT ?`,
      )
      .all(cutoff, opts.limit ?? 10000) as { guid: string; partition: string }[];
    const del = store.db.prepare('DELETE FROM blob WHERE guid = ?');
    let n = 0;
    for (const r of rows) {
      del.run(r.guid);
      if (store.blobs.partitions[r.partition] !== undefined) {
        try {
          fs.unlinkSync(store.blobs.blobPath(r.partition, r.guid));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      n++;
    }
    return n;
  });
}

/** Counts for monitoring: blobs, their bytes, and how many are unreferenced. */
export function blobStats(store: HousekeepingStore): { blobs: number; bytes: number; unreferenced: number } {
  const a = store.db.prepare('SELECT count(*) AS c, coalesce(sum(size), 0) AS s FROM blob').get() as { c: bigint; s: bigint };
  const u = store.db
    .prepare('SELECT count(*) AS c FROM blob WHERE NOT EXISTS (SELECT 1 FROM record WHERE record.guid = blob.guid AND record.has_blob = 1)')
    .get() as { c: bigint };
  return { blobs: num(a.c), bytes: num(a.s), unreferenced: num(u.c) };
}
