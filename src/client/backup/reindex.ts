/**
 * Rebuilding a backup's index from its data file (backup-format §7.3,
 * lcb_reindex), for `ctl-backups reindex`: on the shared streaming reader,
 * so that memory stays flat whatever the file holds, each chunk found is
 * reported (`-v`) and a progress bar drawn.
 *
 * One chunk row per member that holds records (ts_start/ts_end from the
 * first and last record); members without records get none. Records that
 * fail to index are reported and skipped, as Cyrus does; timestamps going
 * backwards abort. The previous index is kept as `<P>.index.<time>` only
 * with backup_keep_previous, and put back when the rebuild fails.
 *
 * Deliberate difference from Cyrus: `length` and `data_sha1` are computed
 * over the inflated octets actually in the file, not over a canonical
 * re-serialization. For files cyrsync wrote the two are the same; for any
 * other file this index verifies against the data it describes (Cyrus's
 * re-serialization writes `{N+}` literals, so its rebuilt index of a file
 * holding `{N}` literals no longer verifies).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { CyrsyncError } from '../../../transforms/errors.js';
import { hashPrefix } from '../../../sinks/backup/datafile.js';
import { BackupIndex } from '../../../sinks/backup/index-db.js';
import { lockExclusive } from '../../../sinks/backup/lock.js';
import type { Progress } from './progress.js';
import { DataFileReader, type BackupEntry } from './reader.js';

export interface ReindexToolOptions {
  /** Wait for another process's lock on the data file. */
  wait: boolean;
  /** Keep the previous index as `<P>.index.<unixtime>` (backup_keep_previous). */
  keepPrevious: boolean;
  /** Called with each member offset found, then with the file size. */
  found?: (offset: number) => Promise<void> | void;
  progress?: Progress;
}

/** Null when the backup is locked and `wait` is false; otherwise the records that could not be indexed. */
export async function reindexStreaming(fname: string, opts: ReindexToolOptions): Promise<string[] | null> {
  const lock = await lockExclusive(fname, { wait: opts.wait, append: true });
  if (lock === null) return null;
  const indexPath = `${fname}.index`;
  const previous = `${indexPath}.${Math.floor(Date.now() / 1000)}`;
  let moved = false;
  let index: BackupIndex | null = null;
  try {
    if (fs.existsSync(indexPath)) {
      fs.renameSync(indexPath, previous);
      moved = true;
    }
    index = BackupIndex.open(indexPath, { dataFileSize: 0 });
    const errors = await rebuild(lock.fd, index, fname, opts);
    await opts.found?.(lock.size());
    index.close();
    index = null;
    if (moved && !opts.keepPrevious) fs.rmSync(previous, { force: true });
    return errors;
  } catch (err) {
    index?.close();
    fs.rmSync(indexPath, { force: true });
    if (moved) fs.renameSync(previous, indexPath);
    throw err;
  } finally {
    lock.release();
  }
}

async function rebuild(fd: number, index: BackupIndex, fname: string, opts: ReindexToolOptions): Promise<string[]> {
  const errors: string[] = [];
  const hash = createHash('sha1');
  let hashed = 0;
  let lastFirstTs = Number.NEGATIVE_INFINITY;
  let open = false;
  let firstTs = 0;
  let lastTs = 0;
  let messages = 0;
  const reader = new DataFileReader(fd, { name: fname });
  for await (const e of reader as AsyncIterable<BackupEntry>) {
    if (e.type === 'chunk-start') {
      await opts.found?.(e.chunk.offset);
      await hashPrefix(fd, e.chunk.offset, hash, hashed);
      hashed = e.chunk.offset;
    } else if (e.type === 'record') {
      const r = e.record;
      if (!open) {
        if (r.ts < lastFirstTs) throw new CyrsyncError('IMAP_IOERROR', `${fname}: timestamps go backwards at the chunk at offset ${e.chunk.offset}`);
        lastFirstTs = firstTs = lastTs = r.ts;
        index.beginChunk(r.ts, e.chunk.offset, hash.copy().digest('hex'));
        open = true;
      }
      if (r.ts < firstTs) throw new CyrsyncError('IMAP_IOERROR', `${fname}: timestamps go backwards inside the chunk at offset ${e.chunk.offset}`);
      lastTs = r.ts;
      if (r.item === null || r.command.toUpperCase() !== 'APPLY') {
        if (r.error) errors.push(`offset ${e.chunk.offset}+${r.offset}: ${r.error.message}`);
        continue;
      }
      try {
        index.indexRecord(r.ts, r.offset, { key: r.item.key.toUpperCase(), value: r.item.value });
      } catch (err) {
        errors.push(`offset ${e.chunk.offset}+${r.offset}: ${(err as Error).message}`);
      }
      if (r.item.key.toUpperCase() === 'MESSAGE' && r.item.value.kind === 'list') messages += r.item.value.items.length;
      opts.progress?.update(e.chunk.offset, messages);
    } else if (e.type === 'chunk-end') {
      if (open) index.endChunk(lastTs, e.member.length, e.member.dataSha1);
      open = false;
      opts.progress?.update(e.member.end, messages);
    }
  }
  return errors;
}
