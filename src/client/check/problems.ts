/**
 * What `cyrsync check` reports: one Problem per thing wrong, printed as one
 * line (`error missing-file partition=default guid=…: …`) or one JSON object.
 *
 * Levels: `error` is damage (a message or its metadata is lost or wrong);
 * `warning` is debris that loses nothing (a file nothing refers to, a
 * staging file of a process that died). Either makes the exit status 1.
 */
import * as fs from 'node:fs';

export type ProblemKind =
  // replica
  | 'missing-blob' // a record refers to a message file the store does not have
  | 'missing-file' // a blob row whose file is gone
  | 'size-mismatch' // file, blob row and record disagree on the size
  | 'bad-content' // the file does not hash to its GUID
  | 'record-crc' // a record's stored CRC contributions differ from its contents
  | 'mailbox-crc' // a mailbox's sync_crc is not the XOR of its records'
  | 'last-uid' // a record above the mailbox's last_uid
  | 'highestmodseq' // a record above the mailbox's highestmodseq
  | 'orphan-file' // a message file no blob row knows
  | 'stray-file' // a file in the blob tree that is not a message file
  | 'staging-leftover' // a staging file of a process that is gone
  | 'unreadable' // a file or database that cannot be read
  // backup
  | 'backup-verify' // a backup failed verification (chunk checksums, links)
  | 'backup-missing' // backups.db names a data file that does not exist
  | 'backup-index'; // the index of a backup cannot be opened

export interface Problem {
  level: 'error' | 'warning';
  kind: ProblemKind;
  store: 'replica' | 'backup';
  user?: string;
  mailbox?: string;
  uid?: number;
  guid?: string;
  partition?: string;
  path?: string;
  chunk?: number;
  detail: string;
}

const WHERE_KEYS = ['user', 'mailbox', 'uid', 'partition', 'guid', 'chunk', 'path'] as const;

/** `error missing-file partition=default guid=…: detail` */
export function formatProblem(p: Problem): string {
  const where = WHERE_KEYS.filter((k) => p[k] !== undefined).map((k) => `${k}=${String(p[k])}`);
  return `${p.level} ${p.kind} ${p.store}${where.length > 0 ? ' ' + where.join(' ') : ''}: ${p.detail}`;
}

/** What a check looked at, for the summary line. */
export interface CheckCounts {
  mailboxes: number;
  records: number;
  blobs: number;
  files: number;
  backups: number;
  /** backups skipped because another process held their lock */
  lockedBackups: number;
}

export const emptyCounts = (): CheckCounts => ({ mailboxes: 0, records: 0, blobs: 0, files: 0, backups: 0, lockedBackups: 0 });

/** Is process `pid` alive (its staging files may be in use)? */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Directory entries, or null when the directory does not exist. */
export function readdirOrNull(dir: string): fs.Dirent[] | null {
  try {
    return fs.readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
