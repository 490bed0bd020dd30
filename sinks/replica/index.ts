/**
 * The replica store (sync_server semantics): `createReplicaSink` opens the
 * metadata database under `configdirectory` and the blob store under each
 * partition path, cleans staging left by a previous run, and returns a Sink.
 *
 * Layout:
 *   <configdirectory>/replica.sqlite3        metadata (db.ts): mailboxes, records,
 *                                           annotations, quota, seen, subs, sieve, blob index
 *   <partition>/blobs/<g0g1>/<g2g3>/<guid>   message bytes, content-addressed (blobs.ts)
 *   <partition>/blobs/tmp/                   literals while they arrive
 *
 * Files: store.ts (GET/APPLY semantics), session.ts (per-connection staging and
 * switches), reports.ts (data-line builders), dump.ts (canonical dump),
 * housekeeping.ts (purge and garbage collection, never driven by the protocol).
 */
import { trackSession, type SessionInfo, type Sink, type SinkSession } from '../sink.js';
import { ReplicaSession } from './session.js';
import { ReplicaStore, type ReplicaStoreOptions } from './store.js';

export class ReplicaSink implements Sink {
  readonly profile = 'sync' as const;
  private readonly sessions = new Set<ReplicaSession>();

  constructor(readonly store: ReplicaStore) {}

  openSession(info: SessionInfo): SinkSession & ReplicaSession {
    return trackSession(this.sessions, new ReplicaSession(this.store, info));
  }

  async close(): Promise<void> {
    for (const s of [...this.sessions]) await s.end();
    this.store.close();
  }
}

export async function createReplicaSink(opts: ReplicaStoreOptions): Promise<ReplicaSink> {
  const store = await ReplicaStore.open(opts);
  return new ReplicaSink(store);
}

export { ReplicaSession } from './session.js';
export { dumpUser, type DumpOptions, type DumpSource } from './dump.js';
export { collectGarbage, purgeExpunged, blobStats } from './housekeeping.js';
export { ReplicaStore, parseMboxtype } from './store.js';
export type { ReplicaStoreOptions, SessionFlags } from './store.js';
