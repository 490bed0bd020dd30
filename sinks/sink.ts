/**
 * The seam between the router and a store. Two implementations: the replica
 * store (sinks/replica, sync_server) and the Cyrus-format backup store
 * (sinks/backup, backupd). The router knows only this interface.
 *
 * A session's handlers are derived from the sub-command table
 * (src/protocol/commands/table.ts): one handler per GET and per store-handled
 * APPLY sub-command, so a sub-command added to the table is a compile error
 * until every store handles it. Each GET handler writes its `*` data lines
 * through `out` and resolves; each APPLY handler resolves once its effect is
 * durable (committed, fsynced) or rejects with a CommandError carrying a
 * Cyrus code, which the router turns into `NO <code> <text>`. A sink never
 * writes to the connection itself.
 */
import type { BodySink, DlistItem } from '../transforms/dlist-types.js';
import type { ApplyCommandOf, GetCommandOf, GetSub, RestoreCommandOf, RestoreSub, StoreApplySub } from '../src/protocol/types.js';

/** Writes one data line `* <key> <value>`; awaiting it honours backpressure. */
export type ReplyOut = (item: DlistItem) => Promise<void> | void;

export type Handler<C> = (cmd: C, out: ReplyOut) => Promise<void>;
export type GetHandlers = { [S in GetSub]: Handler<GetCommandOf<S>> };
export type ApplyHandlers = { [S in StoreApplySub]: Handler<ApplyCommandOf<S>> };
export type RestoreHandlers = { [S in RestoreSub]: Handler<RestoreCommandOf<S>> };

export interface SessionHandlers {
  get: GetHandlers;
  apply: ApplyHandlers;
  restore: RestoreHandlers;
}

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

  /** The handler of every sub-command; a session whose store is still opening gives them once it is open. */
  readonly handlers: SessionHandlers | Promise<SessionHandlers>;

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
