/**
 * Router: one decoded GET/APPLY command -> one sink call -> data lines and one
 * status line. It knows the Sink interface, never a store.
 *
 * Invariants:
 * - exactly one status line per command, written after every data line;
 * - `OK` only after the sink resolved, i.e. after the change is durable;
 * - every streamed body of the command has settled before the sink sees it,
 *   so a store never reads a half-written staging file;
 * - a sink error becomes `NO <code> <text>`; an unexpected exception becomes
 *   `NO Unknown error` and is logged, the session goes on.
 */
import type { Logger } from 'pino';
import { CommandError, CyrsyncError } from '../../transforms/errors.js';
import type { DlistItem, StagedBody } from '../../transforms/dlist-types.js';
import type { ApplyHandlers, GetHandlers, ReplyOut, RestoreHandlers, SinkSession } from '../../sinks/sink.js';
import type {
  ApplyCommand,
  ApplyCommandOf,
  GetCommand,
  GetCommandOf,
  GetSub,
  RestoreCommand,
  RestoreCommandOf,
  RestoreSub,
  SessionApplySub,
  StoreApplySub,
} from '../protocol/types.js';
import { isStoreApply } from '../protocol/commands/table.js';
import { noFromError, okSuccess } from '../protocol/replies.js';

export type Profile = 'sync' | 'backup';

/** The commands the router runs: every GET, APPLY and RESTORE sub-command of the table. */
export type Routed = GetCommand | ApplyCommand | RestoreCommand;

/** What the router needs from the session's output side. */
export interface RouterOutput {
  data(item: DlistItem): Promise<void>;
  status(line: string): Promise<void>;
}

/** Capabilities a client may switch on with APPLY CAPABILITIES, per profile. */
export function offeredCapabilities(profile: Profile): string[] {
  return profile === 'sync' ? ['SIEVE-MAILBOX'] : [];
}

export class Router {
  constructor(
    private readonly profile: Profile,
    private readonly sink: SinkSession,
    private readonly out: RouterOutput,
    private readonly log: Logger,
  ) {}

  /** Runs one GET/APPLY; resolves once its status line has been written. */
  async run(cmd: Routed, bodies: StagedBody[]): Promise<string> {
    const emit: ReplyOut = (item) => this.out.data(item);
    let status: string;
    try {
      await settleBodies(bodies);
      await this.dispatch(cmd, emit);
      status = okSuccess(this.profile);
    } catch (err) {
      status = this.refusal(cmd, err);
    }
    await this.out.status(status);
    return status;
  }

  private get disk(): string {
    return this.profile === 'backup' ? 'backup' : 'replica';
  }

  private refusal(cmd: Routed, err: unknown): string {
    const what = `${cmd.verb} ${cmd.sub}`;
    if (err instanceof CyrsyncError && err.code !== 'IMAP_NOSPACE' && fullDisk(err)) {
      // a store's I/O error whose cause is a full disk (ENOSPC, SQLITE_FULL) says so
      err = new CommandError('IMAP_NOSPACE', `No space left on the ${this.disk} disk: ${err.message}`, { cause: err });
    }
    if (err instanceof CyrsyncError) {
      const line = noFromError(err, this.profile);
      this.log.info({ command: what, code: err.code, reason: err.message }, `refused: ${line}`);
      return line;
    }
    const e = err as NodeJS.ErrnoException;
    if (e && fullDisk(e)) {
      const line = noFromError(new CommandError('IMAP_NOSPACE', `No space left on the ${this.disk} disk`), this.profile);
      this.log.error({ command: what, err }, `refused: ${line}`);
      return line;
    }
    this.log.error({ command: what, err }, 'command failed unexpectedly');
    return noFromError(new CommandError('IMAP_INTERNAL', String(e?.message ?? err)), this.profile);
  }

  /** The APPLY sub-commands the session answers itself, without the store. */
  private readonly sessionApply: { [S in SessionApplySub]: (cmd: ApplyCommandOf<S>, out: ReplyOut) => Promise<void> } = {
    FORCE: async () => {
      this.sink.forceMode = true;
    },
    CAPABILITIES: async (cmd, out) => {
      const offered = offeredCapabilities(this.profile);
      const enabled = cmd.names.map((n) => n.toUpperCase()).filter((n) => offered.includes(n));
      if (enabled.includes('SIEVE-MAILBOX')) this.sink.sieveMailboxMode = true;
      // 3.6+ clients crash when the ENABLED line is missing, even when empty.
      await out({ key: 'ENABLED', value: { kind: 'list', items: enabled.map((n) => ({ kind: 'atom', value: n })) } });
    },
  };

  /** Table lookup: the session's handler, or the store's handler of the sub-command. */
  private async dispatch(cmd: Routed, out: ReplyOut): Promise<void> {
    if (cmd.verb === 'APPLY' && !isStoreApply(cmd)) return callSessionApply(this.sessionApply, cmd, out);
    const handlers = await this.sink.handlers;
    if (cmd.verb === 'GET') return callGet(handlers.get, cmd, out);
    if (cmd.verb === 'RESTORE') return callRestore(handlers.restore, cmd, out);
    return callApply(handlers.apply, cmd, out);
  }
}

function callGet<S extends GetSub>(h: GetHandlers, cmd: GetCommandOf<S>, out: ReplyOut): Promise<void> {
  return h[cmd.sub](cmd, out);
}

function callApply<S extends StoreApplySub>(h: ApplyHandlers, cmd: ApplyCommandOf<S>, out: ReplyOut): Promise<void> {
  return h[cmd.sub](cmd, out);
}

function callRestore<S extends RestoreSub>(h: RestoreHandlers, cmd: RestoreCommandOf<S>, out: ReplyOut): Promise<void> {
  return h[cmd.sub](cmd, out);
}

function callSessionApply<S extends SessionApplySub>(
  h: { [K in SessionApplySub]: (cmd: ApplyCommandOf<K>, out: ReplyOut) => Promise<void> },
  cmd: ApplyCommandOf<S>,
  out: ReplyOut,
): Promise<void> {
  return h[cmd.sub](cmd, out);
}

/**
 * Waits for every staged body of a command. All are awaited even when one
 * fails, so no write is still running when the sink or the session cleans up.
 */
async function settleBodies(bodies: StagedBody[]): Promise<void> {
  if (bodies.length === 0) return;
  const results = await Promise.allSettled(bodies.map((b) => b.done));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

const FULL_DISK = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL']);

/** Whether `err` or one of its causes is a full disk or an exhausted quota. */
function fullDisk(err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (FULL_DISK.has(String((e as { code?: unknown }).code))) return true;
  }
  return false;
}
