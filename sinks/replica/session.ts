/**
 * One connection's view of the replica store: the GUIDs staged by RESERVE
 * and MESSAGE (§1.9) and the mapping of typed commands to store operations.
 * Staging files, the SIEVE-MAILBOX and FORCE switches and the command cycle
 * are the common session's (../store-session.ts).
 */
import type { BodySink } from '../../transforms/dlist-types.js';
import { CommandError } from '../../transforms/errors.js';
import type { ApplyCommandOf } from '../../src/protocol/types.js';
import { validateGuid, validateMailboxName, validatePartition } from '../../src/protocol/names.js';
import type { ReplyOut, SessionHandlers, SessionInfo } from '../sink.js';
import { StoreSession } from '../store-session.js';
import { ReplicaBodySink, type StagedRef } from './blobs.js';
import { getAnnotation, getFetch, getFetchSieve, getFullMailbox, getMailboxes, getMeta, getQuota, getUniqueids, getUser } from './get.js';
import { applyMailbox } from './mailbox-apply.js';
import { applyExpunge, applyRename, applyUnmailbox } from './mailbox-ops.js';
import { applyActivateSieve, applySieve, applyUnactivateSieve, applyUnsieve } from './sieve.js';
import { applyAnnotation, applyQuota, applySeen, applySub, applyUnquota, applyUnuser } from './usermeta.js';
import { restoreMailbox } from './restore.js';
import type { ReplicaStore } from './store.js';

export class ReplicaSession extends StoreSession<StagedRef> {
  readonly bodySink: BodySink;
  /** GUID -> available (true) or pending (false) */
  private readonly staging = new Map<string, boolean>();

  constructor(
    private readonly store: ReplicaStore,
    info: SessionInfo,
  ) {
    super(store.blobs, info);
    this.bodySink = new ReplicaBodySink(store.blobs, this.track);
  }

  private get flags(): { sieveMailboxMode: boolean; forceMode: boolean } {
    return { sieveMailboxMode: this.sieveMailboxMode, forceMode: this.forceMode };
  }

  readonly handlers: SessionHandlers = {
    get: {
      USER: (cmd, out) => this.run(() => getUser(this.store, cmd.userid, this.flags, out)),
      META: (cmd, out) => this.run(() => getMeta(this.store, cmd.userid, this.flags, out)),
      MAILBOXES: (cmd, out) => this.run(() => getMailboxes(this.store, cmd.names, this.flags, out)),
      UNIQUEIDS: (cmd, out) => this.run(() => getUniqueids(this.store, cmd.uniqueids, this.flags, out)),
      FULLMAILBOX: (cmd, out) => this.run(() => getFullMailbox(this.store, cmd.mboxname, this.flags, out)),
      QUOTA: (cmd, out) => this.run(() => getQuota(this.store, cmd.root, out)),
      ANNOTATION: (cmd, out) => this.run(() => getAnnotation(this.store, cmd.mboxname, out)),
      FETCH: (cmd, out) => this.run(() => getFetch(this.store, cmd, out)),
      FETCH_SIEVE: (cmd, out) => this.run(() => getFetchSieve(this.store, cmd.userid, cmd.filename, out)),
    },
    apply: {
      RESERVE: (cmd, out) => this.run(() => this.reserve(cmd, out)),
      MESSAGE: (cmd) => this.run(() => this.message(cmd)),
      MAILBOX: (cmd) => this.run(() => applyMailbox(this.store, cmd.mailbox, this.flags)),
      UNMAILBOX: (cmd) => this.run(() => applyUnmailbox(this.store, cmd.mboxname)),
      RENAME: (cmd) => this.run(() => applyRename(this.store, cmd.oldname, cmd.newname, cmd.partition)),
      EXPUNGE: (cmd) => this.run(() => applyExpunge(this.store, cmd.mboxname, cmd.uniqueid, cmd.uids)),
      QUOTA: (cmd) => this.run(() => applyQuota(this.store, cmd.quota)),
      UNQUOTA: (cmd) => this.run(() => applyUnquota(this.store, cmd.root)),
      SUB: (cmd) => this.run(() => applySub(this.store, cmd.userid, cmd.mboxname, true)),
      UNSUB: (cmd) => this.run(() => applySub(this.store, cmd.userid, cmd.mboxname, false)),
      SEEN: (cmd) => this.run(() => applySeen(this.store, cmd.seen)),
      ANNOTATION: (cmd) => this.run(() => applyAnnotation(this.store, cmd.mboxname, cmd.entry, cmd.userid, cmd.value)),
      UNANNOTATION: (cmd) => this.run(() => applyAnnotation(this.store, cmd.mboxname, cmd.entry, cmd.userid, null)),
      SIEVE: (cmd) => this.run(() => applySieve(this.store, cmd.userid, cmd.filename, cmd.lastUpdate, cmd.content)),
      UNSIEVE: (cmd) => this.run(() => applyUnsieve(this.store, cmd.userid, cmd.filename)),
      ACTIVATE_SIEVE: (cmd) => this.run(() => applyActivateSieve(this.store, cmd.userid, cmd.filename)),
      UNACTIVATE_SIEVE: (cmd) => this.run(() => applyUnactivateSieve(this.store, cmd.userid)),
      UNUSER: (cmd) => this.run(() => applyUnuser(this.store, cmd.userid)),
    },
    restore: {
      MAILBOX: (cmd) => this.run(() => restoreMailbox(this.store, cmd.mailbox, this.flags)),
    },
  };

  private async reserve(cmd: ApplyCommandOf<'RESERVE'>, out: ReplyOut): Promise<void> {
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
  }

  private async message(cmd: ApplyCommandOf<'MESSAGE'>): Promise<void> {
    if (!Array.isArray(cmd.files)) throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', 'APPLY MESSAGE needs a list');
    const files = cmd.files.filter((f) => f && f.kind === 'file');
    const stored = await this.store.storeMessages(files, (g) => this.staging.set(g, true));
    for (const g of stored) this.staging.set(g, true);
  }

  protected async release(): Promise<void> {
    this.staging.clear();
  }

  /** For tests and diagnostics: is a GUID available in this session's staging? */
  isAvailable(guid: string): boolean {
    return this.staging.get(guid) === true;
  }
}
