/**
 * The backup store (backupd semantics): `createBackupSink` opens the
 * location database and the staging area and returns a Sink whose sessions
 * append to per-owner backups in the Cyrus Backups on-disk format, which the
 * real ctl_backups, cyr_backup and restore read.
 */
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { trackSession, type SessionInfo, type Sink, type SinkSession } from '../sink.js';
import { openBackupsDb, type BackupsDb, type BackupsDbSettings } from './backupsdb.js';
import { backupPartitions, createDataFile, stagingRoot, type PathSettings } from './paths.js';
import { BackupSession, type BackupStoreHandle } from './session.js';
import { StagingArea } from './staging.js';

/**
 * Where the backup store keeps its files: the backup partitions, the staging
 * area and backups.db (the imapd.conf keys of the same names; the daemon
 * maps its configuration to these).
 */
export type BackupStoreSettings = PathSettings & BackupsDbSettings;

export interface BackupSinkOptions {
  settings: BackupStoreSettings;
  logger?: Logger;
}

export class BackupSink implements Sink, BackupStoreHandle {
  readonly profile = 'backup' as const;
  readonly nameOptions = {};
  private readonly sessions = new Set<BackupSession>();

  constructor(
    private readonly settings: BackupStoreSettings,
    private readonly db: BackupsDb,
    readonly staging: StagingArea,
    readonly log: Logger | undefined,
  ) {}

  pathFor(owner: string): string {
    const found = this.db.getOrCreate(
      owner,
      () => createDataFile(this.settings, owner),
      (p) => fs.rmSync(p, { force: true }),
    );
    if (found.created) this.log?.info({ owner, path: found.path }, 'new backup');
    return found.path;
  }

  openSession(info: SessionInfo): SinkSession & BackupSession {
    return trackSession(this.sessions, new BackupSession(this, info));
  }

  async close(): Promise<void> {
    for (const s of [...this.sessions]) await s.end();
    this.db.close();
    await this.staging.close();
  }
}

export async function createBackupSink(opts: BackupSinkOptions): Promise<BackupSink> {
  const settings = opts.settings;
  for (const p of backupPartitions(settings)) fs.mkdirSync(p.path, { recursive: true, mode: 0o755 });
  const staging = new StagingArea(stagingRoot(settings));
  await staging.open();
  const db = openBackupsDb(settings);
  return new BackupSink(settings, db, staging, opts.logger);
}

export { BackupSession } from './session.js';
