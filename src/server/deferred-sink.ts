/**
 * A Sink that is still opening. Under master(8) a process is started for a
 * connection that is already waiting, so loading and opening the store must
 * not delay the greeting: the session is created at once on this stand-in
 * and the store opens in parallel.
 *
 * Invariant that makes the stand-in safe: nothing reaches a store before
 * login. Commands are refused before AUTHENTICATE succeeds and file literals
 * go to the store's body sink only after an administrator's login, and the
 * daemon's authenticator awaits `ready` before it reports success. So once
 * a session can use its SinkSession, the real one exists and every call is
 * simply forwarded.
 */
import { CyrsyncError } from '../../transforms/errors.js';
import type { BodyHeader, BodySink, BodyWriter } from '../../transforms/dlist-types.js';
import type { Sink, SinkSession, SessionInfo } from '../../sinks/sink.js';

export class DeferredSink implements Sink {
  private real: Sink | null = null;
  private failure: Error | null = null;
  /** Resolves when the store is open; rejects with the reason it could not be opened. */
  readonly ready: Promise<Sink>;

  constructor(
    readonly profile: 'sync' | 'backup',
    opening: Promise<Sink>,
  ) {
    this.ready = opening.then(
      (s) => (this.real = s),
      (err: Error) => {
        this.failure = err;
        throw err;
      },
    );
    // A failure is reported through `ready` to whoever awaits it.
    this.ready.catch(() => undefined);
  }

  get failed(): Error | null {
    return this.failure;
  }

  openSession(info: SessionInfo): SinkSession {
    if (this.real) return this.real.openSession(info);
    return deferredSession(this.ready.then((s) => s.openSession(info)));
  }

  async close(): Promise<void> {
    let s: Sink;
    try {
      s = await this.ready;
    } catch {
      return;
    }
    await s.close();
  }
}

const notReady = (): CyrsyncError => new CyrsyncError('IMAP_IOERROR', 'the store is still opening');

function deferredSession(opening: Promise<SinkSession>): SinkSession {
  let real: SinkSession | null = null;
  let sieveMailboxMode = false;
  let forceMode = false;
  opening.then(
    (s) => {
      real = s;
      s.sieveMailboxMode = sieveMailboxMode;
      s.forceMode = forceMode;
    },
    () => undefined,
  );
  const bodySink: BodySink = {
    open(header: BodyHeader): BodyWriter | null {
      if (!real) throw notReady();
      return real.bodySink.open(header);
    },
  };
  const opened = async (): Promise<SinkSession> => real ?? (await opening);
  return {
    get bodySink(): BodySink {
      return real ? real.bodySink : bodySink;
    },
    get sieveMailboxMode(): boolean {
      return real ? real.sieveMailboxMode : sieveMailboxMode;
    },
    set sieveMailboxMode(v: boolean) {
      if (real) real.sieveMailboxMode = v;
      else sieveMailboxMode = v;
    },
    get forceMode(): boolean {
      return real ? real.forceMode : forceMode;
    },
    set forceMode(v: boolean) {
      if (real) real.forceMode = v;
      else forceMode = v;
    },
    // Every sub-command's handler is the real session's, once it exists.
    get handlers() {
      return real ? real.handlers : opened().then((s) => s.handlers);
    },
    async restart(): Promise<void> {
      await (await opened()).restart();
    },
    async end(): Promise<void> {
      let s: SinkSession;
      try {
        s = await opened();
      } catch {
        return; // the store never opened: nothing to release
      }
      await s.end();
    },
  };
}
