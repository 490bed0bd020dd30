/**
 * What the sessions of both stores (sinks/replica/session.ts,
 * sinks/backup/session.ts) share: the connection-scoped switches, the
 * staging files of the bodies streamed in while a command arrives, and the
 * cycle of a command, RESTART and EXIT. A store's session adds its handlers
 * and what it holds for the connection beyond staging files.
 *
 * Invariants:
 * - every staging file a command left behind (a literal that was not
 *   consumed, a body of a refused command) is removed when the command
 *   finishes, at RESTART, and at EXIT/connection loss. No body is being
 *   written while a command runs (csync is request/response and the
 *   pipeline pauses during a command), so that cleanup never races a body
 *   still arriving;
 * - a fully received command is always completed: restart() and end() wait
 *   for the one in progress before dropping anything;
 * - once end() is called, a body that starts is aborted and a command is
 *   refused.
 */
import type { BodySink, BodyWriter } from '../transforms/dlist-types.js';
import { CommandError } from '../transforms/errors.js';
import type { SessionHandlers, SessionInfo, SinkSession } from './sink.js';

/** The staging area a session's bodies are written to: removes one staging file. */
export interface StagingDiscard<R> {
  discard(ref: R): Promise<void>;
}

export abstract class StoreSession<R> implements SinkSession {
  abstract readonly bodySink: BodySink;
  abstract readonly handlers: SessionHandlers;
  sieveMailboxMode = false;
  forceMode = false;
  private readonly staged = new Map<R, BodyWriter>();
  private ended = false;
  private ending: Promise<void> | null = null;
  /** The command in progress. */
  private inFlight: Promise<unknown> | null = null;

  protected constructor(
    private readonly stagingArea: StagingDiscard<R>,
    readonly info: SessionInfo,
  ) {}

  /** Given to the store's body sink: records every body staged for this session. */
  protected readonly track = (ref: R, writer: BodyWriter): void => {
    if (this.ended) {
      writer.abort(new Error('session ended'));
      return;
    }
    this.staged.set(ref, writer);
  };

  /** Runs first in every command (the backup store releases idle backups here). */
  protected async beforeCommand(): Promise<void> {}

  /** Drops what the session holds beyond its staging files, at RESTART and at the end. */
  protected abstract release(): Promise<void>;

  /** Runs one command; its staging files are swept afterwards. */
  protected async run<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.ended) throw new CommandError('IMAP_INTERNAL', 'The session has ended');
    const p = (async () => {
      try {
        await this.beforeCommand();
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

  /** Removes staging files of finished commands (all of them, writers aborted, when `abort`). */
  private async sweep(abort: boolean): Promise<void> {
    const refs = [...this.staged.entries()];
    this.staged.clear();
    for (const [ref, writer] of refs) {
      if (abort) writer.abort(new Error('staging dropped'));
      await this.stagingArea.discard(ref);
    }
  }

  private async settle(): Promise<void> {
    if (this.inFlight) await this.inFlight.catch(() => {});
  }

  /** RESTART: the negotiated switches stay. */
  async restart(): Promise<void> {
    await this.settle();
    await this.sweep(true);
    await this.release();
  }

  /** EXIT or connection loss; a second call waits for the first. */
  end(): Promise<void> {
    this.ending ??= (async () => {
      this.ended = true;
      await this.settle();
      await this.sweep(true);
      await this.release();
    })();
    return this.ending;
  }
}
