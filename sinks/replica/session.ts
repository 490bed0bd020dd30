/**
 * One connection's view of the replica store: staging (§1.9), the
 * SIEVE-MAILBOX and FORCE switches, and the mapping of typed commands to
 * store operations.
 *
 * Invariant: every staging file a command left behind (a literal that was
 * not consumed, a body of a refused command) is removed when the next store
 * call of this session finishes, at RESTART, and at EXIT/connection loss. No
 * body is being written while a store call runs (csync is request/response
 * and the pipeline pauses during a command), so that cleanup never races a
 * body still arriving.
 */
import type { BodySink, BodyWriter } from '../../transforms/dlist-types.js';
import { CommandError } from '../../transforms/errors.js';
import type { ApplyCommand, GetCommand } from '../../src/protocol/types.js';
import { validateGuid, validateMailboxName, validatePartition } from '../../src/protocol/names.js';
import type { ReplyOut, SessionInfo, SinkSession } from '../sink.js';
import { ReplicaBodySink, type StagedRef } from './blobs.js';
import type { ReplicaStore } from './store.js';

type Sub<C, S extends string> = Extract<C, { sub: S }>;
type G<S extends string> = Sub<GetCommand, S>;
type A<S extends string> = Sub<ApplyCommand, S>;

export class ReplicaSession implements SinkSession {
  readonly bodySink: BodySink;
  sieveMailboxMode = false;
  forceMode = false;
  /** GUID -> available (true) or pending (false) */
  private readonly staging = new Map<string, boolean>();
  private readonly staged = new Map<StagedRef, BodyWriter>();
  private ended = false;

  constructor(
    private readonly store: ReplicaStore,
    readonly info: SessionInfo,
  ) {
    this.bodySink = new ReplicaBodySink(store.blobs, (ref, writer) => {
      if (this.ended) {
        writer.abort(new Error('session ended'));
        return;
      }
      this.staged.set(ref, writer);
    });
  }

  /** Removes staging files of finished commands (all of them when `abort`). */
  private async sweep(abort: boolean): Promise<void> {
    const refs = [...this.staged.entries()];
    this.staged.clear();
    for (const [ref, writer] of refs) {
      if (abort) writer.abort(new Error('staging dropped'));
      await this.store.blobs.discard(ref);
    }
  }

  /** The store call in progress: end() lets it finish (a fully received command is always completed). */
  private inFlight: Promise<unknown> | null = null;

  private async run<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.ended) throw new CommandError('IMAP_INTERNAL', 'The session has ended');
    const p = (async () => {
      try {
        return await fn();
      } finally {
        await this.sweep(false);
      }
    })();
    this.inFlight = p;
    try {
      return await p;
    } finally {
      if (this.inFlight === p) this.inFlight = null;
    }
  }

  private async settle(): Promise<void> {
    if (this.inFlight) await this.inFlight.catch(() => {});
  }

  private get flags(): { sieveMailboxMode: boolean; forceMode: boolean } {
    return { sieveMailboxMode: this.sieveMailboxMode, forceMode: this.forceMode };
  }

  // GET

  getUser(cmd: G<'USER'>, out: ReplyOut): Promise<void> {
    return this.run(() => this.store.getUser(cmd.userid, this.flags, out));
  }
  getMeta(cmd: G<'META'>, out: ReplyOut): Promise<void> {
    return this.run(() => this.store.getMeta(cmd.userid, this.flags, out));
  }
  getMailboxes(cmd: G<'MAILBOXES'>, out: ReplyOut): Promise<void> {
    return this.run(() => this.store.getMailboxes(cmd.names, this.flags, out));
  }
  getUniqueids(cmd: G<'UNIQUEIDS'>, out: ReplyOut): Promise<void> {
    return this.run(() => this.store.getUniqueids(cmd.uniqueids, this.flags, out));
  }
  getFullMailbox(cmd: G<'FULLMAILBOX'>, out: ReplyOut): Promise<void> {
    return this.run(() => this.store.getFullMailbox(cmd.mboxname, this.flags, out));
  }
  getQuota(cmd: G<'QUOTA'>, out: ReplyOut): Promise<void> {
    return this.run(() => this.store.getQuota(cmd.root, out));
  }
  getAnnotation(cmd: G<'ANNOTATION'>, out: ReplyOut): Promise<void> {
    return this.run(() => this.store.getAnnotation(cmd.mboxname, out));
  }
  getFetch(cmd: G<'FETCH'>, out: ReplyOut): Promise<void> {
    return this.run(() => this.store.getFetch(cmd, out));
  }
  getFetchSieve(cmd: G<'FETCH_SIEVE'>, out: ReplyOut): Promise<void> {
    return this.run(() => this.store.getFetchSieve(cmd.userid, cmd.filename, out));
  }

  // APPLY

  applyReserve(cmd: A<'RESERVE'>, out: ReplyOut): Promise<void> {
    return this.run(async () => {
      if (typeof cmd.partition !== 'string' || !Array.isArray(cmd.mboxnames) || !Array.isArray(cmd.guids)) {
        throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', 'APPLY RESERVE needs PARTITION, MBOXNAME and GUID');
      }
      validatePartition(cmd.partition);
      for (const n of cmd.mboxnames) validateMailboxName(n);
      const order: string[] = [];
      for (const g of cmd.guids) {
        const guid = validateGuid(g);
        if (!this.staging.has(guid)) this.staging.set(guid, false);
        order.push(guid);
      }
      const pending = [...new Set(order.filter((g) => this.staging.get(g) === false))];
      const { available } = this.store.reserve(pending);
      for (const g of available) this.staging.set(g, true);
      const missing = pending.filter((g) => this.staging.get(g) === false);
      if (missing.length > 0) {
        await out({ key: 'MISSING', value: { kind: 'list', items: missing.map((g) => ({ kind: 'atom', value: g })) } });
      }
    });
  }

  applyMessage(cmd: A<'MESSAGE'>): Promise<void> {
    return this.run(async () => {
      if (!Array.isArray(cmd.files)) throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', 'APPLY MESSAGE needs a list');
      const files = cmd.files.filter((f) => f && f.kind === 'file');
      const stored = await this.store.storeMessages(files, (g) => this.staging.set(g, true));
      for (const g of stored) this.staging.set(g, true);
    });
  }

  applyMailbox(cmd: A<'MAILBOX'>): Promise<void> {
    return this.run(() => this.store.applyMailbox(cmd.mailbox, this.flags));
  }
  applyUnmailbox(cmd: A<'UNMAILBOX'>): Promise<void> {
    return this.run(() => this.store.applyUnmailbox(cmd.mboxname));
  }
  applyRename(cmd: A<'RENAME'>): Promise<void> {
    return this.run(() => this.store.applyRename(cmd.oldname, cmd.newname, cmd.partition));
  }
  applyExpunge(cmd: A<'EXPUNGE'>): Promise<void> {
    return this.run(() => this.store.applyExpunge(cmd.mboxname, cmd.uniqueid, cmd.uids));
  }
  applyQuota(cmd: A<'QUOTA'>): Promise<void> {
    return this.run(() => this.store.applyQuota(cmd.quota));
  }
  applyUnquota(cmd: A<'UNQUOTA'>): Promise<void> {
    return this.run(() => this.store.applyUnquota(cmd.root));
  }
  applySub(cmd: A<'SUB'>): Promise<void> {
    return this.run(() => this.store.applySub(cmd.userid, cmd.mboxname, true));
  }
  applyUnsub(cmd: A<'UNSUB'>): Promise<void> {
    return this.run(() => this.store.applySub(cmd.userid, cmd.mboxname, false));
  }
  applySeen(cmd: A<'SEEN'>): Promise<void> {
    return this.run(() => this.store.applySeen(cmd.seen));
  }
  applyAnnotation(cmd: A<'ANNOTATION'>): Promise<void> {
    return this.run(() => this.store.applyAnnotation(cmd.mboxname, cmd.entry, cmd.userid, cmd.value));
  }
  applyUnannotation(cmd: A<'UNANNOTATION'>): Promise<void> {
    return this.run(() => this.store.applyAnnotation(cmd.mboxname, cmd.entry, cmd.userid, null));
  }
  applySieve(cmd: A<'SIEVE'>): Promise<void> {
    return this.run(() => this.store.applySieve(cmd.userid, cmd.filename, cmd.lastUpdate, cmd.content));
  }
  applyUnsieve(cmd: A<'UNSIEVE'>): Promise<void> {
    return this.run(() => this.store.applyUnsieve(cmd.userid, cmd.filename));
  }
  applyActivateSieve(cmd: A<'ACTIVATE_SIEVE'>): Promise<void> {
    return this.run(() => this.store.applyActivateSieve(cmd.userid, cmd.filename));
  }
  applyUnactivateSieve(cmd: A<'UNACTIVATE_SIEVE'>): Promise<void> {
    return this.run(() => this.store.applyUnactivateSieve(cmd.userid));
  }
  applyUnuser(cmd: A<'UNUSER'>): Promise<void> {
    return this.run(() => this.store.applyUnuser(cmd.userid));
  }

  async restart(): Promise<void> {
    await this.settle();
    this.staging.clear();
    await this.sweep(true);
  }

  async end(): Promise<void> {
    this.ended = true;
    await this.settle();
    this.staging.clear();
    await this.sweep(true);
  }

  /** For tests and diagnostics: is a GUID available in this session's staging? */
  isAvailable(guid: string): boolean {
    return this.staging.get(guid) === true;
  }
}
