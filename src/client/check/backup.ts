/**
 * `cyrsync check` of a backup store (sinks/backup): every backup that
 * backups.db names is verified as `ctl_backups verify` does (all chunk
 * checksums against the index, message and mailbox links, message GUIDs),
 * under a shared lock on its data file, so a backupd appending to it is
 * waited for (up to `lockTimeoutMs`) and nothing is written. Staging
 * directories of backupd processes that are gone are reported as leftovers.
 *
 * The seam: `verifyOne` is the only place that knows how one backup is
 * verified (with `ctl-backups verify`'s verifier); another one plugs in
 * through `BackupCheckOptions.verify`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Settings } from '../../config.js';
import { openBackupsDb } from '../../../sinks/backup/backupsdb.js';
import { BackupIndex } from '../../../sinks/backup/index-db.js';
import { verifyFull } from '../backup/verify.js';
import { lockFile } from '../../../sinks/backup/lock.js';
import { indexPathOf, stagingRoot } from '../../../sinks/backup/paths.js';
import { processAlive, readdirOrNull, type CheckCounts, type Problem } from './problems.js';

export interface BackupVerdict {
  /** null: another process held the data file's lock for the whole timeout */
  problems: { chunk?: number; detail: string }[] | null;
}

/** Verifies one backup (data file and its index); throws for a file that cannot be opened. */
export type BackupVerifier = (dataPath: string, lockTimeoutMs: number) => Promise<BackupVerdict>;

export interface BackupCheckOptions {
  users?: readonly string[];
  lockTimeoutMs?: number;
  verify?: BackupVerifier;
}

type Report = (p: Problem) => void;

/**
 * The full verification of one backup under a shared lock on its data file:
 * the one `ctl-backups verify` does (src/client/backup/verify.ts), so both
 * name the same problems at the same chunk, offset and record.
 */
export const verifyOne: BackupVerifier = async (dataPath, lockTimeoutMs) => {
  const lock = await lockFile(dataPath, { wait: true, shared: true, timeoutMs: lockTimeoutMs });
  if (lock === null) return { problems: null };
  let index: BackupIndex | null = null;
  try {
    index = BackupIndex.open(indexPathOf(dataPath), { dataFileSize: lock.size(), readonly: true });
    const found = await verifyFull(lock.fd, index, { fname: dataPath });
    return {
      problems: found.map((p) => ({
        ...(p.chunkId !== null ? { chunk: p.chunkId } : {}),
        detail: `at offset ${p.offset}${p.position === null ? '' : `, record at ${p.position}`}: ${p.what}`,
      })),
    };
  } finally {
    index?.close();
    lock.release();
  }
};

export async function checkBackups(settings: Settings, counts: CheckCounts, report: Report, opts: BackupCheckOptions = {}): Promise<void> {
  const users = opts.users ?? [];
  const verify = opts.verify ?? verifyOne;
  const db = openBackupsDb(settings);
  let entries: [string, string][];
  try {
    entries = db.list();
  } finally {
    db.close();
  }
  for (const u of users) {
    if (!entries.some(([owner]) => owner === u)) {
      report({ level: 'error', kind: 'backup-missing', store: 'backup', user: u, detail: 'backups.db has no backup for this user' });
    }
  }
  for (const [user, dataPath] of entries) {
    if (users.length > 0 && !users.includes(user)) continue;
    const at = { store: 'backup' as const, user, path: dataPath };
    if (!fs.existsSync(dataPath)) {
      report({ level: 'error', kind: 'backup-missing', ...at, detail: 'backups.db names a data file that does not exist' });
      continue;
    }
    counts.backups++;
    let verdict: BackupVerdict;
    try {
      verdict = await verify(dataPath, opts.lockTimeoutMs ?? 10_000);
    } catch (err) {
      report({ level: 'error', kind: 'backup-index', ...at, detail: (err as Error).message });
      continue;
    }
    if (verdict.problems === null) {
      counts.lockedBackups++;
      continue;
    }
    for (const p of verdict.problems) {
      report({ level: 'error', kind: 'backup-verify', ...at, ...(p.chunk !== undefined ? { chunk: p.chunk } : {}), detail: p.detail });
    }
  }
  if (users.length === 0) checkBackupStaging(settings, report);
}

/** `<backup_staging_path>/sync./<pid>/`: a directory per backupd process, removed when it ends. */
function checkBackupStaging(settings: Settings, report: Report): void {
  const root = path.join(stagingRoot(settings), 'sync.');
  for (const d of readdirOrNull(root) ?? []) {
    if (/^\d+$/.test(d.name) && processAlive(Number(d.name))) continue;
    const dir = path.join(root, d.name);
    const files = d.isDirectory() ? (readdirOrNull(dir) ?? []).length : 1;
    if (files === 0) continue;
    report({ level: 'warning', kind: 'staging-leftover', store: 'backup', path: dir, detail: `staging of a process that is gone (${files} file${files === 1 ? '' : 's'})` });
  }
}
