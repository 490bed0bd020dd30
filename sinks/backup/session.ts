/**
 * One connection of the backup server (backup-format §9; Cyrus 3.6.1
 * backup/backupd.c): the owners' backups opened by this session, the GUIDs
 * each owner awaits after RESERVE, staging of streamed bodies, and the
 * mapping of typed commands to appends and index reads.
 *
 * Invariants:
 * - an owner's backup is opened (locked, verified, chunk started) the first
 *   time a command needs it, and released (chunk ended) at RESTART, EXIT,
 *   connection end, a fatal write error, or when it has not been used for
 *   IDLE_RELEASE_MS by the time the next command arrives;
 * - a command that is refused before anything is appended writes nothing:
 *   every field check, name check and GUID check happens first;
 * - no file literal whose octets did not hash to its GUID is ever appended.
 * Staging files, the switches and the command cycle are the common
 * session's (../store-session.ts).
 */
import type { Logger } from 'pino';
import type { BodySink, DlistFile } from '../../transforms/dlist-types.js';
import { CommandError, CyrsyncError } from '../../transforms/errors.js';
import type { ApplyCommandOf, GetCommandOf } from '../../src/protocol/types.js';
import { missingItem } from '../../src/protocol/replies.js';
import { validateMailboxName } from '../../src/protocol/names.js';
import type { ReplyOut, SessionHandlers, SessionInfo } from '../sink.js';
import { StoreSession } from '../store-session.js';
import { checkMailbox, recordOf, type StoredApply } from './apply.js';
import { IndexReader } from './get.js';
import { SHARED_OWNER, ownerOfMailbox, validateOwnerId, validateSieveFilename, validateUniqueid } from './paths.js';
import { IDLE_RELEASE_MS, OpenBackup } from './sink.js';
import { BackupBodySink, stagedSource, verifiedRef, type BackupStagedRef, type StagingArea } from './staging.js';

/** What a session needs from the store. */
export interface BackupStoreHandle {
  readonly staging: StagingArea;
  readonly log: Logger | undefined;
  /** Data file path of `owner`, creating and registering a new one when needed. */
  pathFor(owner: string): string;
  /** Mailbox-name options (deleted prefix, default domain). */
  readonly nameOptions: { deletedPrefix?: string; defaultDomain?: string | null };
}

const protocolError = (why: string): CommandError => new CommandError('IMAP_PROTOCOL_ERROR', why);
const badParameters = (why: string): CommandError => new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', why);

/** Wire values that would name a file are refused with the backup server's bad-parameters reply. */
function checked<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof CyrsyncError && err.code === 'IMAP_MAILBOX_BADNAME') throw badParameters(err.message);
    throw err;
  }
}

export class BackupSession extends StoreSession<BackupStagedRef> {
  readonly bodySink: BodySink;
  private readonly open = new Map<string, OpenBackup>();
  private readonly awaited = new Map<string, Set<string>>();

  constructor(
    private readonly store: BackupStoreHandle,
    info: SessionInfo,
  ) {
    super(store.staging, info);
    this.bodySink = new BackupBodySink(store.staging, this.track);
  }

  private get log(): Logger | undefined {
    return this.store.log;
  }

  // -- plumbing ---------------------------------------------------------------

  /** Every command first releases the backups left idle. */
  protected override beforeCommand(): Promise<void> {
    return this.releaseIdle();
  }

  /** RESTART and the end release every backup this session opened. */
  protected async release(): Promise<void> {
    for (const owner of [...this.open.keys()]) await this.releaseOwner(owner);
  }

  private async releaseIdle(): Promise<void> {
    const now = Date.now();
    for (const [owner, b] of [...this.open]) {
      if (b.isClosed) {
        this.open.delete(owner);
        this.awaited.delete(owner);
      } else if (now - b.lastUsed > IDLE_RELEASE_MS) {
        await this.releaseOwner(owner);
      }
    }
  }

  private async releaseOwner(owner: string): Promise<void> {
    const b = this.open.get(owner);
    this.open.delete(owner);
    this.awaited.delete(owner);
    if (b && !b.isClosed) {
      try {
        await b.close();
      } catch (err) {
        this.log?.error({ err, owner }, 'ending the chunk failed');
      }
    }
  }

  /** The owner's open backup, opening it (and starting a chunk) when needed. */
  private async backup(owner: string): Promise<OpenBackup> {
    const cur = this.open.get(owner);
    if (cur && !cur.isClosed) {
      cur.lastUsed = Date.now();
      return cur;
    }
    this.open.delete(owner);
    this.awaited.delete(owner);
    const valid = checked(() => validateOwnerId(owner));
    const path = this.store.pathFor(valid);
    const b = await OpenBackup.open(valid, path, this.log);
    this.open.set(owner, b);
    this.log?.debug({ owner, path }, 'backup opened');
    return b;
  }

  private ownerOf(mboxname: string): string {
    if (typeof mboxname !== 'string' || mboxname.length === 0) throw badParameters('empty mailbox name');
    checked(() => validateMailboxName(mboxname));
    const owner = ownerOfMailbox(mboxname, this.store.nameOptions);
    return checked(() => validateOwnerId(owner));
  }

  private userOwner(userid: string): string {
    return checked(() => validateOwnerId(userid));
  }

  private async appendTo(owner: string, cmd: StoredApply): Promise<void> {
    const b = await this.backup(owner);
    try {
      await b.append(recordOf(cmd));
    } finally {
      if (b.isClosed) this.open.delete(owner);
    }
  }

  /**
   * backupd answers GET QUOTA / ANNOTATION / FETCH / FETCH_SIEVE and APPLY
   * EXPUNGE / UNQUOTA / ANNOTATION / UNANNOTATION with a protocol error (the
   * decoder already refuses them; these handlers say the same when a command
   * is built by hand), and accepts and ignores QUOTA, ACTIVATE_SIEVE,
   * UNACTIVATE_SIEVE and UNUSER: quota and the active script are not backed
   * up; deleting a user keeps its backup.
   */
  readonly handlers: SessionHandlers = {
    get: {
      USER: (cmd, out) => this.run(async () => new IndexReader((await this.backup(this.userOwner(cmd.userid))).index).user(out)),
      META: (cmd, out) => this.run(async () => new IndexReader((await this.backup(this.userOwner(cmd.userid))).index).meta(out)),
      MAILBOXES: (cmd, out) => this.run(() => this.getMailboxes(cmd, out)),
      UNIQUEIDS: () => this.run(async () => {}),
      FULLMAILBOX: (cmd, out) => this.run(() => this.getFullMailbox(cmd, out)),
      QUOTA: () => this.unsupported('GET QUOTA'),
      ANNOTATION: () => this.unsupported('GET ANNOTATION'),
      FETCH: () => this.unsupported('GET FETCH'),
      FETCH_SIEVE: () => this.unsupported('GET FETCH_SIEVE'),
    },
    apply: {
      RESERVE: (cmd, out) => this.run(() => this.reserve(cmd, out)),
      MESSAGE: (cmd) => this.run(() => this.message(cmd)),
      MAILBOX: (cmd) => this.run(() => this.mailbox(cmd)),
      UNMAILBOX: (cmd) => this.run(async () => this.appendTo(this.ownerOf(cmd.mboxname), cmd)),
      RENAME: (cmd) => this.run(() => this.rename(cmd)),
      SEEN: (cmd) => this.run(async () => this.appendTo(this.userOwner(cmd.seen.userid), cmd)),
      SUB: (cmd) => this.run(async () => this.appendTo(this.userOwner(cmd.userid), cmd)),
      UNSUB: (cmd) => this.run(async () => this.appendTo(this.userOwner(cmd.userid), cmd)),
      SIEVE: (cmd) => this.run(() => this.sieve(cmd)),
      UNSIEVE: (cmd) => this.run(() => this.sieve(cmd)),
      QUOTA: () => this.run(async () => {}),
      ACTIVATE_SIEVE: () => this.run(async () => {}),
      UNACTIVATE_SIEVE: () => this.run(async () => {}),
      UNUSER: () => this.run(async () => {}),
      EXPUNGE: () => this.unsupported('APPLY EXPUNGE'),
      UNQUOTA: () => this.unsupported('APPLY UNQUOTA'),
      ANNOTATION: () => this.unsupported('APPLY ANNOTATION'),
      UNANNOTATION: () => this.unsupported('APPLY UNANNOTATION'),
    },
    restore: {
      // backupd knows no RESTORE verb: the decoder answers `BAD ... Unrecognized command`.
      MAILBOX: () => this.unsupported('RESTORE MAILBOX'),
    },
  };

  private unsupported(what: string): Promise<void> {
    return this.run(async () => {
      throw protocolError(`${what} is not supported by a backup server`);
    });
  }

  private async getMailboxes(cmd: GetCommandOf<'MAILBOXES'>, out: ReplyOut): Promise<void> {
    if (cmd.names.length === 0) return;
    const owners = new Set(cmd.names.map((n) => this.ownerOf(n)));
    // backupd answers one owner at a time; the client then asks per user.
    if (owners.size !== 1) throw badParameters('GET MAILBOXES names mailboxes of more than one owner');
    const b = await this.backup([...owners][0]!);
    await new IndexReader(b.index).mailboxes(cmd.names, out);
  }

  private async getFullMailbox(cmd: GetCommandOf<'FULLMAILBOX'>, out: ReplyOut): Promise<void> {
    const b = await this.backup(this.ownerOf(cmd.mboxname));
    const found = await new IndexReader(b.index).fullMailbox(cmd.mboxname, out);
    if (!found) throw new CommandError('IMAP_MAILBOX_NONEXISTENT', `No mailbox ${cmd.mboxname} in the backup`);
  }

  private async reserve(cmd: ApplyCommandOf<'RESERVE'>, out: ReplyOut): Promise<void> {
    const users = new Set<string>();
    let shared = false;
    for (const name of cmd.mboxnames) {
      const o = this.ownerOf(name);
      if (o === SHARED_OWNER) shared = true;
      else users.add(o);
    }
    const owners = [...users].sort();
    if (shared) owners.push(SHARED_OWNER);
    const missing: string[] = [];
    const seen = new Set<string>();
    for (const owner of owners) {
      await this.appendTo(owner, cmd);
      const b = this.open.get(owner)!;
      let set = this.awaited.get(owner);
      if (!set) this.awaited.set(owner, (set = new Set()));
      for (const g of cmd.guids) {
        if (b.index.hasMessage(g)) continue;
        set.add(g);
        if (!seen.has(g)) {
          seen.add(g);
          missing.push(g);
        }
      }
    }
    if (missing.length > 0) await out(missingItem(missing));
  }

  private async message(cmd: ApplyCommandOf<'MESSAGE'>): Promise<void> {
    if (cmd.files.length === 0) throw protocolError('APPLY MESSAGE without file literals');
    const files: DlistFile[] = [];
    for (const f of cmd.files) {
      const guid = f.guid.toLowerCase();
      const ref = /^[0-9a-f]{40}$/.test(guid) && f.sha1 === guid ? verifiedRef(f.body?.ref, guid, f.size) : null;
      if (!ref) {
        throw protocolError(`message ${f.guid.slice(0, 60)}: the ${f.size} octets received do not match the GUID`);
      }
      files.push({ kind: 'file', partition: f.partition, guid, size: f.size, sha1: guid, body: f.body ?? null, source: stagedSource(ref) });
    }
    const record: ApplyCommandOf<'MESSAGE'> = { verb: 'APPLY', sub: 'MESSAGE', files };
    const guids = files.map((f) => f.guid);
    const targets: string[] = [];
    for (const [owner, set] of this.awaited) {
      let hit = false;
      for (const g of guids) if (set.delete(g)) hit = true;
      if (hit && this.open.get(owner) && !this.open.get(owner)!.isClosed) targets.push(owner);
    }
    if (targets.length === 0) {
      for (const [owner, b] of this.open) if (!b.isClosed) targets.push(owner);
    }
    if (targets.length === 0) throw protocolError('APPLY MESSAGE with no backup open in this session (no RESERVE or GET came first)');
    for (const owner of targets) await this.appendTo(owner, record);
  }

  private async mailbox(cmd: ApplyCommandOf<'MAILBOX'>): Promise<void> {
    const m = cmd.mailbox;
    const owner = this.ownerOf(m.mboxname);
    checkMailbox(m);
    checked(() => validateUniqueid(m.uniqueid));
    if (m.badRecord) throw protocolError(`APPLY MAILBOX ${m.mboxname}: a RECORD entry could not be read`);
    await this.appendTo(owner, cmd);
  }

  private async rename(cmd: ApplyCommandOf<'RENAME'>): Promise<void> {
    const owner = this.ownerOf(cmd.oldname);
    this.ownerOf(cmd.newname);
    await this.appendTo(owner, cmd);
  }

  private async sieve(cmd: ApplyCommandOf<'SIEVE'> | ApplyCommandOf<'UNSIEVE'>): Promise<void> {
    const owner = this.userOwner(cmd.userid);
    checked(() => validateSieveFilename(cmd.filename));
    await this.appendTo(owner, cmd);
  }
}
