/**
 * Retention and liveness (backup-format §6.5, §8): which chunks and which
 * messages of a backup a compaction keeps, read from the index; and the
 * compaction settings of imapd.conf.
 */
import type { Config } from '../../config.js';
import { parseDuration, parseSwitch } from '../../config.js';
import type { BackupIndex } from '../../../sinks/backup/index-db.js';

const LIVE_CHUNKS = `
SELECT last_chunk_id AS id FROM mailbox WHERE deleted IS NULL OR deleted > :since
UNION SELECT last_chunk_id FROM mailbox_message WHERE expunged IS NULL OR expunged > :since
UNION SELECT chunk_id FROM message AS m JOIN mailbox_message AS mm
      ON m.id = mm.message_id AND (mm.expunged IS NULL OR mm.expunged > :since)
UNION SELECT last_chunk_id FROM subscription WHERE unsubscribed IS NULL OR unsubscribed > :since
UNION SELECT last_chunk_id FROM seen
UNION SELECT chunk_id FROM sieve WHERE deleted IS NULL OR deleted > :since`;

const LIVE_MESSAGES = `
SELECT DISTINCT m.guid AS guid, m.size AS size FROM message AS m JOIN mailbox_message AS mm
  ON m.id = mm.message_id AND (mm.expunged IS NULL OR mm.expunged > :since)
WHERE m.chunk_id = :chunk`;

/** Ids of the live chunks, given `since` (now − retention, or −1 to keep everything). */
export function liveChunkIds(index: BackupIndex, since: number): Set<number> {
  const rows = index.db.prepare(LIVE_CHUNKS).all({ since }) as { id: number | null }[];
  return new Set(rows.map((r) => r.id).filter((x): x is number => x !== null));
}

/** Live messages whose latest MESSAGE record is in `chunk`: guid -> size. */
export function liveMessages(index: BackupIndex, chunk: number, since: number): Map<string, number> {
  const rows = index.db.prepare(LIVE_MESSAGES).all({ since, chunk }) as { guid: string; size: number | null }[];
  return new Map(rows.map((r) => [r.guid, r.size ?? 0]));
}

export interface CompactSettings {
  /** Seconds; ≤ 0 keeps everything. */
  retention: number;
  minsize: number;
  maxsize: number;
  workThreshold: number;
  keepPrevious: boolean;
}

/** A size option: a bare number is KiB (3.6), or a number with a unit (B, K, M, G). */
function size(v: string | undefined): number {
  if (v === undefined || v.trim() === '') return 0;
  const m = /^\s*(-?\d+)\s*([bkmg]?)b?\s*$/i.exec(v);
  if (!m) return 0;
  const n = Number(m[1]);
  const unit = (m[2] ?? '').toLowerCase();
  const mult = unit === 'b' ? 1 : unit === 'm' ? 1024 * 1024 : unit === 'g' ? 1024 * 1024 * 1024 : 1024;
  return n * mult;
}

/**
 * backup_retention (duration, a bare number is days), or its older name
 * backup_retention_days (Cyrus 3.6 reads this one); default 7 days.
 */
export function compactSettings(config: Config): CompactSettings {
  let retention = 7 * 86400;
  const r = config.get('backup_retention') ?? config.get('backup_retention_days');
  if (r !== undefined) {
    const d = parseDuration(r, 'd');
    if (d.ok) retention = d.seconds;
  }
  const threshold = Number.parseInt(config.get('backup_compact_work_threshold') ?? '1', 10);
  return {
    retention,
    minsize: size(config.get('backup_compact_minsize')),
    maxsize: size(config.get('backup_compact_maxsize')),
    workThreshold: Number.isFinite(threshold) && threshold >= 1 ? threshold : 1,
    keepPrevious: parseSwitch(config.get('backup_keep_previous') ?? 'no') === 1,
  };
}

/** now − retention, or −1 when retention keeps everything. */
export function sinceOf(s: CompactSettings, now = Math.floor(Date.now() / 1000)): number {
  return s.retention > 0 ? now - s.retention : -1;
}
