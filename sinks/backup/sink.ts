/**
 * An owner's backup as a server session holds it (backup-format §4, §5.8):
 * the data file locked without waiting, the index opened under the lock,
 * the last chunk quick-verified, a torn tail cut off, and one chunk in
 * progress until the backup is released.
 *
 * Built on the storage layer: openBackup (lock, index, verification,
 * repair), ChunkWriter (one gzip member, streamed, checksummed) and
 * BackupIndex (§6.4 updates inside the chunk's transaction).
 *
 * Invariants:
 * - the chunk row is committed only after its member is finished and the
 *   data file fsynced, so a committed row always describes bytes on disk and
 *   anything past the last committed chunk is torn (cut at the next open);
 * - a record whose octets could not all be written poisons the member: the
 *   chunk is abandoned (rolled back, file cut back to the chunk's offset)
 *   and the backup released; the records indexed before it go with it, as
 *   they would with a crash, and the next sync sends them again;
 * - a record whose index update fails stays in the data file and in the
 *   checksums (§5.8); the client gets the index error.
 */
import type { Logger } from 'pino';
import type { DlistItem } from '../../transforms/dlist-types.js';
import { CommandError, CyrsyncError } from '../../transforms/errors.js';
import { BackupAppender, BackupIndex, openBackup, type OpenedBackup } from './index-db.js';

/** A backup unused for longer than this is released when the next command arrives (§5.8). */
export const IDLE_RELEASE_MS = 300_000;

export class OpenBackup {
  lastUsed = Date.now();
  private closed = false;

  private constructor(
    readonly owner: string,
    readonly path: string,
    private readonly opened: OpenedBackup,
    private readonly appender: BackupAppender,
    private readonly log: Logger | undefined,
  ) {}

  get index(): BackupIndex {
    return this.opened.index;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Locks (never waiting), verifies, trims a torn tail and starts a chunk.
   * Rejects with IMAP_MAILBOX_LOCKED when another process or session holds
   * the backup, with IMAP_IOERROR when it fails verification.
   */
  static async open(owner: string, path: string, log: Logger | undefined): Promise<OpenBackup> {
    const opened = await openBackup(path, { wait: false, create: true });
    if (opened === null) throw new CommandError('IMAP_MAILBOX_LOCKED', `The backup of ${owner} is locked by another process`);
    if (opened.truncated > 0) {
      log?.warn({ owner, path, octets: opened.truncated, reason: opened.tail?.reason }, 'cut a torn chunk off the end of the data file');
    }
    let appender: BackupAppender | null = null;
    try {
      appender = new BackupAppender(opened);
      await appender.start();
      return new OpenBackup(owner, path, opened, appender, log);
    } catch (err) {
      if (appender) await appender.abort().catch(() => {});
      opened.index.close();
      opened.lock.release();
      throw err;
    }
  }

  /**
   * Appends one record and indexes it. A failure while writing abandons the
   * chunk and rejects; a failure of the index update leaves the record in
   * the file and rejects with the index error.
   */
  async append(item: DlistItem): Promise<void> {
    if (this.closed) throw new CyrsyncError('IMAP_IOERROR', `The backup of ${this.owner} is closed`);
    this.lastUsed = Date.now();
    let written: { ts: number; offset: number };
    try {
      written = await this.appender.writer.append(item);
    } catch (err) {
      this.log?.error({ err, owner: this.owner, path: this.path }, 'writing a record failed: abandoning the chunk');
      await this.abandon();
      throw err instanceof CyrsyncError ? err : new CyrsyncError('IMAP_IOERROR', `writing to ${this.path} failed: ${(err as Error).message}`, { cause: err });
    }
    this.index.indexRecord(written.ts, written.offset, item);
  }

  /** Ends the chunk (finish, fsync, commit) and releases the lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.appender.close();
    } catch (err) {
      this.log?.error({ err, owner: this.owner, path: this.path }, 'ending the chunk failed');
      throw err;
    }
  }

  /** Drops the chunk in progress (rollback, cut the file back) and releases the lock. */
  async abandon(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.appender.abort();
    } catch (err) {
      this.log?.error({ err, path: this.path }, 'abandoning the chunk failed; the next open cuts it off');
    } finally {
      this.opened.index.close();
      this.opened.lock.release();
    }
  }
}
