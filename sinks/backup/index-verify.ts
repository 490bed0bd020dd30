/**
 * Opening a backup (lock, index, tail check), appending chunks to it, and
 * verifying its index against the data file (backup/lcb_verify.c), as the
 * real ctl_backups does. The index is rebuilt by src/client/backup/reindex.ts.
 */
import { createHash, type Hash } from 'node:crypto';
import { CyrsyncError } from '../../transforms/errors.js';
import type { DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import { ChunkWriter, checkTail, hashPrefix, readChunkRecords, truncateTo, type FileHash, type ChunkEnd, type ChunkWriterOptions, type RecordWritten, type TailCheck } from './datafile.js';
import { lockExclusive, type FileLock } from './lock.js';
import { recoverCompaction } from './compaction-recovery.js';
import { findItem, dlistText, dlistNumber, kvItems, listItems, BackupIndex } from './index-core.js';

// ---------------------------------------------------------------------------
// A backup opened for appending: data file lock + index + chunk writer

export interface OpenBackupOptions {
  /** Wait for another process's lock (tools) or give up at once (server). */
  wait: boolean;
  /** Create the data file when missing. */
  create?: boolean;
  /** Check the last chunk and cut a torn tail back (default true). */
  repair?: boolean;
}

export interface OpenedBackup {
  dataPath: string;
  lock: FileLock;
  index: BackupIndex;
  /** What the tail check found (null when repair was off). */
  tail: TailCheck | null;
  /** Octets cut off the end of the data file (0 when it was intact). */
  truncated: number;
  /** SHA-1 of the whole (repaired) file, for the next chunk's file_sha1. */
  fileHash: FileHash | null;
}

/** The last chunk failed its checksum test (§7.1 bit 1): the client gets `NO Unknown error`. */
export class VerifyError extends CyrsyncError {
  constructor(message: string) {
    super('IMAP_IOERROR', message);
  }
}

/**
 * Opens a backup the way backupd does (§4, §5.8): exclusive lock on the data
 * file (null when `wait` is false and it is locked elsewhere), index opened
 * under the lock, then the quick verification of the last chunk. A torn tail
 * after the last indexed chunk (an unfinished or unindexed member) is cut
 * off, so the next chunk starts right after the last good one.
 */
export async function openBackup(dataPath: string, opts: OpenBackupOptions): Promise<OpenedBackup | null> {
  let lock: FileLock | null;
  for (;;) {
    lock = await lockExclusive(dataPath, { wait: opts.wait, create: opts.create === true, append: true, mode: 0o600 });
    if (lock === null) return null;
    // A compaction killed between its renames is finished (or undone) here,
    // so backupd takes the next chunk without waiting for a tool to repair.
    if (!recoverCompaction(dataPath)) break;
    lock.release();
  }
  let index: BackupIndex | null = null;
  try {
    index = BackupIndex.open(`${dataPath}.index`, { dataFileSize: lock.size() });
    let tail: TailCheck | null = null;
    let truncated = 0;
    let fileHash: FileHash | null = null;
    if (opts.repair !== false) {
      const last = index.latestChunk();
      if (last !== null && (last.length === null || last.data_sha1 === null)) {
        throw new VerifyError(`${dataPath}: chunk ${last.id} was never finished in the index`);
      }
      let hash: Hash;
      try {
        hash = await hashPrefix(lock.fd, last === null ? 0 : last.offset);
      } catch (err) {
        throw new VerifyError(`${dataPath}: chunk ${last?.id}: ${(err as Error).message}`);
      }
      if (last !== null && hash.copy().digest('hex') !== last.file_sha1) {
        throw new VerifyError(`${dataPath}: chunk ${last.id}: file_sha1 does not match the data before offset ${last.offset}`);
      }
      try {
        tail = await checkTail(lock.fd, last === null ? null : { offset: last.offset, length: last.length!, data_sha1: last.data_sha1! });
      } catch (err) {
        throw new VerifyError(`${dataPath}: ${(err as Error).message}`);
      }
      if (tail.goodEnd < tail.fileSize) {
        truncated = tail.fileSize - tail.goodEnd;
        truncateTo(lock.fd, tail.goodEnd);
      }
      fileHash = { hash: await hashPrefix(lock.fd, tail.goodEnd, hash, last === null ? 0 : last.offset), end: tail.goodEnd };
    }
    return { dataPath, lock, index, tail, truncated, fileHash };
  } catch (err) {
    index?.close();
    lock.release();
    throw err;
  }
}

/**
 * Writes records to the data file and indexes them in one go: the
 * composition of ChunkWriter and BackupIndex that §5.8 describes. A record
 * whose index update fails stays in the data file and in the checksum, and
 * the error is rethrown for the client's reply.
 */
export class BackupAppender {
  readonly writer: ChunkWriter;
  constructor(readonly backup: OpenedBackup, opts: ChunkWriterOptions = {}) {
    const last = backup.index.latestChunk();
    this.writer = new ChunkWriter(backup.lock.fd, last === null ? 0 : Math.max(last.ts_start ?? 0, last.ts_end ?? 0), opts);
    if (backup.fileHash !== null) this.writer.seedFileHash(backup.fileHash);
  }

  get active(): boolean {
    return this.writer.active;
  }

  async start(ts?: number): Promise<number> {
    const c = await this.writer.start(ts);
    try {
      return this.backup.index.beginChunk(c.tsStart, c.offset, c.fileSha1);
    } catch (err) {
      await this.writer.abort();
      throw err;
    }
  }

  async append(item: DlistItem, ts?: number): Promise<RecordWritten> {
    const w = await this.writer.append(item, ts);
    this.backup.index.indexRecord(w.ts, w.offset, item);
    return w;
  }

  async end(ts?: number): Promise<ChunkEnd> {
    let e: ChunkEnd;
    try {
      e = await this.writer.end(ts);
    } catch (err) {
      this.backup.index.rollbackChunk();
      await this.writer.abort();
      throw err;
    }
    try {
      this.backup.index.endChunk(e.tsEnd, e.length, e.dataSha1);
    } catch (err) {
      // The index does not know the chunk: cut it off so data and index agree.
      truncateTo(this.backup.lock.fd, e.offset);
      throw err;
    }
    return e;
  }

  async abort(): Promise<void> {
    this.backup.index.rollbackChunk();
    await this.writer.abort();
  }

  /** Ends an open chunk (if any), closes the index and releases the lock. */
  async close(ts?: number): Promise<void> {
    try {
      if (this.writer.active) await this.end(ts);
    } finally {
      this.backup.index.close();
      this.backup.lock.release();
    }
  }
}

// ---------------------------------------------------------------------------
// Verification (§7.1)

export const VERIFY_LAST_CHECKSUM = 1;
export const VERIFY_ALL_CHECKSUMS = 2;
export const VERIFY_MESSAGE_LINKS = 4;
export const VERIFY_MAILBOX_LINKS = 8;
export const VERIFY_MESSAGE_GUIDS = 16;
export const VERIFY_QUICK = VERIFY_LAST_CHECKSUM;
export const VERIFY_FULL = 31;

export interface VerifyResult {
  ok: boolean;
  /** One plain sentence per problem found (empty when ok). */
  problems: string[];
  chunksChecked: number;
}

function numEq(a: DlistValue | undefined, b: number | bigint | null): boolean {
  const x = dlistNumber(a) ?? 0;
  return BigInt(x) === BigInt(b ?? 0);
}

/**
 * Checks a backup at the levels of §7.1 (bit flags; VERIFY_FULL is what
 * `ctl_backups verify` does). Reads the data file through `fd` only.
 */
export async function verifyBackup(fd: number, index: BackupIndex, level: number = VERIFY_FULL): Promise<VerifyResult> {
  const problems: string[] = [];
  const all = index.chunks();
  const links = (level & (VERIFY_MESSAGE_LINKS | VERIFY_MAILBOX_LINKS | VERIFY_MESSAGE_GUIDS)) !== 0;
  const chunks = level & (VERIFY_ALL_CHECKSUMS) || links ? all : all.slice(-1);
  const checksums = (level & (VERIFY_LAST_CHECKSUM | VERIFY_ALL_CHECKSUMS)) !== 0;
  let hash: FileHash = { hash: createHash('sha1'), end: 0 };
  for (const c of chunks) {
    const checkSums = checksums && ((level & VERIFY_ALL_CHECKSUMS) !== 0 || c.id === all[all.length - 1]!.id);
    if (checkSums) {
      if (c.offset < hash.end) hash = { hash: createHash('sha1'), end: 0 };
      hash = { hash: await hashPrefix(fd, c.offset, hash.hash, hash.end), end: c.offset };
      if (hash.hash.copy().digest('hex') !== c.file_sha1) problems.push(`chunk ${c.id}: file_sha1 mismatch`);
    }
    if (!checkSums && !links) continue;
    let read: Awaited<ReturnType<typeof readChunkRecords>>;
    try {
      read = await readChunkRecords(fd, c.offset);
    } catch (err) {
      problems.push(`chunk ${c.id}: ${(err as Error).message}`);
      continue;
    }
    if (checkSums) {
      if (read.length !== c.length) problems.push(`chunk ${c.id}: data length mismatch: ${read.length} on disk, ${c.length} in index`);
      if (read.dataSha1 !== c.data_sha1) problems.push(`chunk ${c.id}: data_sha1 mismatch`);
    }
    if ((level & (VERIFY_MESSAGE_LINKS | VERIFY_MESSAGE_GUIDS)) !== 0) {
      const byOffset = new Map(read.records.map((r) => [r.offset, r]));
      for (const m of index.messagesInChunk(c.id)) {
        const r = byOffset.get(m.offset ?? -1);
        const files = r?.item?.key === 'MESSAGE' ? listItems(r.item.value) ?? [] : [];
        const f = files.find((x) => x.kind === 'file' && x.guid.toLowerCase() === m.guid) as { sha1?: string } | undefined;
        if (f === undefined) problems.push(`chunk ${c.id}: message ${m.guid} is not at offset ${m.offset}`);
        else if ((level & VERIFY_MESSAGE_GUIDS) !== 0 && f.sha1 !== m.guid) problems.push(`chunk ${c.id}: message ${m.guid} has the wrong content (SHA-1 ${f.sha1})`);
      }
    }
    if ((level & VERIFY_MAILBOX_LINKS) !== 0) {
      const mailboxes = read.records.filter((r) => r.item?.key === 'MAILBOX').map((r) => kvItems(r.item!.value) ?? []);
      for (const mb of index.mailboxesInChunk(c.id)) {
        const match = mailboxes.some((items) => {
          const g = (k: string): DlistValue | undefined => findItem(items, k);
          const txt = (k: string): string | null => dlistText(g(k)) ?? null;
          return txt('UNIQUEID') === mb.uniqueid && txt('MBOXNAME') === mb.mboxname && txt('PARTITION') === mb.partition &&
            txt('ACL') === mb.acl && txt('OPTIONS') === mb.options && numEq(g('LAST_UID'), mb.last_uid) &&
            numEq(g('HIGHESTMODSEQ'), mb.highestmodseq) && numEq(g('RECENTUID'), mb.recentuid) && numEq(g('RECENTTIME'), mb.recenttime) &&
            numEq(g('LAST_APPENDDATE'), mb.last_appenddate) && numEq(g('UIDVALIDITY'), mb.uidvalidity) &&
            numEq(g('XCONVMODSEQ'), mb.xconvmodseq) && numEq(g('SYNC_CRC'), mb.sync_crc) && numEq(g('SYNC_CRC_ANNOT'), mb.sync_crc_annot);
        });
        if (!match) problems.push(`chunk ${c.id}: missing mailbox data for ${mb.uniqueid} (${mb.mboxname})`);
      }
      for (const r of index.recordsInChunk(c.id)) {
        const match = mailboxes.some((items) => {
          if (dlistText(findItem(items, 'UNIQUEID')) !== r.mailbox_uniqueid) return false;
          return (listItems(findItem(items, 'RECORD')) ?? []).some((ri) => {
            const rec = kvItems(ri);
            if (!rec) return false;
            const g = (k: string): DlistValue | undefined => findItem(rec, k);
            return numEq(g('UID'), r.uid) && numEq(g('MODSEQ'), r.modseq) && numEq(g('LAST_UPDATED'), r.last_updated) &&
              numEq(g('INTERNALDATE'), r.internaldate) && numEq(g('SIZE'), r.size) && dlistText(g('GUID')) === r.guid;
          });
        });
        if (!match) problems.push(`chunk ${c.id}: missing mailbox_message data for ${r.mailbox_uniqueid} uid ${r.uid}`);
      }
    }
  }
  return { ok: problems.length === 0, problems, chunksChecked: chunks.length };
}
