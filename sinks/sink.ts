/**
 * The seam between the router and a store. Two implementations: the replica
 * store (sinks/replica, sync_server) and the Cyrus-format backup store
 * (sinks/backup, backupd). The router knows only this interface.
 *
 * Each get* writes its `*` data lines through `out` and resolves; each apply*
 * resolves once its effect is durable (committed, fsynced) or rejects with a
 * CommandError carrying a Cyrus code, which the router turns into
 * `NO <code> <text>`. A sink never writes to the connection itself.
 */
import type { BodySink, DlistItem } from '../transforms/dlist-types.js';
import type { ApplyCommand, GetCommand } from '../src/protocol/types.js';

/** Writes one data line `* <key> <value>`; awaiting it honours backpressure. */
export type ReplyOut = (item: DlistItem) => Promise<void> | void;

type Sub<C, S extends string> = Extract<C, { sub: S }>;
type G<S extends string> = Sub<GetCommand, S>;
type A<S extends string> = Sub<ApplyCommand, S>;

export interface SessionInfo {
  /** authenticated administrator */
  authUser: string;
  /** peer address, for logs */
  peer: string;
}

export interface Sink {
  /** 'sync' => sync_server semantics and banner; 'backup' => backupd. */
  readonly profile: 'sync' | 'backup';
  /** One per connection: staging lives here and is dropped on restart/end. */
  openSession(info: SessionInfo): SinkSession;
  /** Release databases and locks. */
  close(): Promise<void>;
}

export interface SinkSession {
  /** Where file literals (and big literals) stream while a command arrives. */
  readonly bodySink: BodySink;
  /** Connection-scoped switches set by APPLY CAPABILITIES / APPLY FORCE. */
  sieveMailboxMode: boolean;
  forceMode: boolean;

  getUser(cmd: G<'USER'>, out: ReplyOut): Promise<void>;
  getMeta(cmd: G<'META'>, out: ReplyOut): Promise<void>;
  getMailboxes(cmd: G<'MAILBOXES'>, out: ReplyOut): Promise<void>;
  getUniqueids(cmd: G<'UNIQUEIDS'>, out: ReplyOut): Promise<void>;
  getFullMailbox(cmd: G<'FULLMAILBOX'>, out: ReplyOut): Promise<void>;
  getQuota(cmd: G<'QUOTA'>, out: ReplyOut): Promise<void>;
  getAnnotation(cmd: G<'ANNOTATION'>, out: ReplyOut): Promise<void>;
  getFetch(cmd: G<'FETCH'>, out: ReplyOut): Promise<void>;
  getFetchSieve(cmd: G<'FETCH_SIEVE'>, out: ReplyOut): Promise<void>;

  applyReserve(cmd: A<'RESERVE'>, out: ReplyOut): Promise<void>;
  applyMessage(cmd: A<'MESSAGE'>): Promise<void>;
  applyMailbox(cmd: A<'MAILBOX'>): Promise<void>;
  applyUnmailbox(cmd: A<'UNMAILBOX'>): Promise<void>;
  applyRename(cmd: A<'RENAME'>): Promise<void>;
  applyExpunge(cmd: A<'EXPUNGE'>): Promise<void>;
  applyQuota(cmd: A<'QUOTA'>): Promise<void>;
  applyUnquota(cmd: A<'UNQUOTA'>): Promise<void>;
  applySub(cmd: A<'SUB'>): Promise<void>;
  applyUnsub(cmd: A<'UNSUB'>): Promise<void>;
  applySeen(cmd: A<'SEEN'>): Promise<void>;
  applyAnnotation(cmd: A<'ANNOTATION'>): Promise<void>;
  applyUnannotation(cmd: A<'UNANNOTATION'>): Promise<void>;
  applySieve(cmd: A<'SIEVE'>): Promise<void>;
  applyUnsieve(cmd: A<'UNSIEVE'>): Promise<void>;
  applyActivateSieve(cmd: A<'ACTIVATE_SIEVE'>): Promise<void>;
  applyUnactivateSieve(cmd: A<'UNACTIVATE_SIEVE'>): Promise<void>;
  applyUnuser(cmd: A<'UNUSER'>): Promise<void>;

  /** RESTART: drop staging, keep negotiated switches. */
  restart(): Promise<void>;
  /** EXIT or connection loss: drop staging, release everything. */
  end(): Promise<void>;
}

/**
 * Registers a store's session in `sessions` until it ends, so the store's
 * close() can end every session still open (connection loss, shutdown).
 */
export function trackSession<S extends SinkSession>(sessions: Set<S>, s: S): S {
  sessions.add(s);
  const end = s.end.bind(s);
  s.end = async () => {
    sessions.delete(s);
    await end();
  };
  return s;
}
