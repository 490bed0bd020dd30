/**
 * One csync connection: greeting, states, AUTHENTICATE, STARTTLS, COMPRESS,
 * idle timeout, and the pipeline
 *
 *   conn ─► [TLS] ─► [inflate] ─► CommandReader ─► decode ─► Router ─► SinkSession
 *   conn ◄─ [TLS] ◄─ [deflate, sync flush per reply] ◄─ ReplyWriter ◄─┘
 *
 * csync is strictly request/response: the client sends one command and waits
 * for the whole reply, so at most one command is in flight and the reader is
 * never ahead of the router by more than what the client pipelined (nothing,
 * for a conforming client). That is what makes swapping the input chain at
 * COMPRESS / STARTTLS safe: no byte of the new layer has arrived yet.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { setImmediate as tick } from 'node:timers/promises';
import type { Duplex, Readable } from 'node:stream';
import * as tls from 'node:tls';
import type { Logger } from 'pino';
import { CommandReader } from '../../transforms/dlist-parser.js';
import { FramingError } from '../../transforms/errors.js';
import type { Limits } from '../../transforms/limits.js';
import type { CommandLine } from '../../transforms/dlist-types.js';
import { ResponseWriter } from '../../transforms/serializer.js';
import { createCompressDeflate, createCompressInflate } from '../../transforms/deflate.js';
import type { Sink, SinkSession } from '../../sinks/sink.js';
import { decodeCommand } from '../protocol/commands.js';
import type { Command } from '../protocol/types.js';
import { Router, type Profile } from './router.js';
import { noteInput, type MemoryBudget } from '../memory.js';
import { BudgetedReader } from './budgeted-reader.js';
import { tapPlaintext } from './telemetry.js';

/** What the session needs to authenticate a client (wired by the daemon front-end). */
export interface Authenticator {
  /** Mechanisms to advertise (and accept). */
  mechanisms(tlsActive: boolean): string[];
  /**
   * Runs one SASL exchange. `challenge` sends `+ <base64>` and resolves with the
   * client's raw response line (`*` = cancel). Resolves with the authenticated
   * user or with the exact refusal line to send.
   */
  authenticate(
    mechanism: string,
    initial: string | null,
    challenge: (data: Buffer) => Promise<string>,
  ): Promise<{ ok: true; user: string } | { ok: false; reply: string }>;
  isAdmin(user: string): boolean;
}

export interface SessionOptions {
  profile: Profile;
  sink: Sink;
  auth: Authenticator;
  servername: string;
  version: string;
  log: Logger;
  limits?: Partial<Limits>;
  /** TLS for STARTTLS; absent = STARTTLS not offered. */
  tlsContext?: tls.SecureContext;
  /** Seconds without a command before the connection is closed (Cyrus: never below 3). */
  idleTimeout: number;
  /** Peer address for logs. */
  peer: string;
  /** Already authenticated (UNIX socket): only the `* OK` line is sent. */
  preauthUser?: string;
  /** Called with every byte read / written after login (telemetry). */
  telemetry?: (direction: 'in' | 'out', chunk: Buffer) => void;
  onAuthenticated?: (user: string) => void;
  /** The process's memory budget, shared by all its sessions (absent: none). */
  budget?: MemoryBudget;
}

export class Session {
  private input: Readable;
  private readonly reader: CommandReader;
  private readonly writer: ResponseWriter;
  private readonly sinkSession: SinkSession;
  private user: string | null = null;
  private admin = false;
  private tlsActive = false;
  private compressing = false;
  private ended = false;
  private idleTimer: NodeJS.Timeout | null = null;
  private idleExpired = false;
  readonly id = randomBytes(4).toString('hex');
  private log: Logger;
  /** Set by the front-end for a graceful stop: finish the current command, then close. */
  private stopping = false;
  private busy = false;
  /** Telemetry records from the first command after a successful AUTHENTICATE (Cyrus telemetry_log). */
  private recording = false;

  constructor(
    private readonly conn: Duplex,
    private readonly opts: SessionOptions,
  ) {
    this.log = opts.log.child({ session: this.id, peer: opts.peer });
    this.input = conn;
    // Socket errors (reset, EPIPE) end the session through 'close'; they are not crashes.
    conn.on('error', (err) => this.log.debug({ err }, 'connection error'));
    this.sinkSession = opts.sink.openSession({ authUser: opts.preauthUser ?? '', peer: opts.peer });
    const readerOptions = { limits: opts.limits, sink: null, onInput: noteInput };
    this.reader = opts.budget ? new BudgetedReader(readerOptions, opts.budget, this) : new CommandReader(readerOptions);
    // Failures surface as rejections of nextCommand(); the listener keeps them from being unhandled.
    this.reader.on('error', () => undefined);
    this.writer = new ResponseWriter();
    this.writer.on('error', () => undefined);
    this.writer.pipe(conn);
    this.input.pipe(this.reader);
    const telemetry = opts.telemetry;
    if (telemetry) tapPlaintext(this.reader, this.writer, (d, c) => this.recording && telemetry(d, c));
    // A connection that closes without an orderly end must still end the command loop.
    conn.once('close', () => this.reader.destroy());
    if (opts.preauthUser) this.loggedIn(opts.preauthUser);
  }

  /** Serves the connection until EXIT, EOF, idle timeout or a framing error. */
  async run(): Promise<void> {
    try {
      // A new session is greeted only when the process's memory budget admits it.
      await this.opts.budget?.enter(this);
      this.opts.budget?.release(this);
      await this.greet();
      for (;;) {
        if (this.stopping) {
          await this.writer.status('BYE shutting down');
          break;
        }
        this.armIdle();
        const next = await this.nextLine();
        this.disarmIdle();
        if (next === null) break;
        this.busy = true;
        const done = await this.handle(next);
        this.busy = false;
        this.opts.budget?.release(this);
        if (done) break;
      }
    } catch (err) {
      await this.fatal(err);
    } finally {
      this.disarmIdle();
      this.opts.budget?.forget(this);
      await this.close();
    }
  }

  /**
   * Graceful stop: the command in progress (being received, or being
   * answered) finishes, then `BYE` and close. Waiting for a command with
   * nothing of one received: `BYE` now (3.6+ clients treat it as an orderly
   * logout), then the reader stops, so nothing that arrives later is
   * answered, and run() closes the connection once the BYE is flushed.
   */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    if (this.busy || this.inputPending()) return;
    this.input.unpipe(this.reader);
    void this.writer.status('BYE shutting down').finally(() => this.reader.destroy());
  }

  /** Octets of a next command somewhere between the connection and the parser (socket, inflate, reader). */
  private inputPending(): boolean {
    if (!this.reader.idle || this.reader.writableLength > 0 || this.conn.readableLength > 0) return true;
    const input = this.input as Duplex;
    return input !== this.conn && (input.readableLength > 0 || input.writableLength > 0);
  }

  destroy(): void {
    this.ended = true;
    this.conn.destroy();
  }

  private async nextLine(): Promise<CommandLine | null> {
    const line = await this.reader.nextCommand();
    return this.idleExpired ? null : line;
  }

  private armIdle(): void {
    const ms = Math.max(3, this.opts.idleTimeout) * 1000;
    this.idleTimer = setTimeout(() => {
      this.idleExpired = true;
      this.log.info({ timeout: this.opts.idleTimeout }, 'idle timeout, closing connection');
      this.conn.destroy();
    }, ms);
    this.idleTimer.unref?.();
  }

  private disarmIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  private async greet(): Promise<void> {
    const w = this.writer;
    if (!this.user) {
      const mechs = this.opts.auth.mechanisms(this.tlsActive);
      if (mechs.length > 0) await w.rawLine(`* SASL ${mechs.join(' ')}`);
      if (this.opts.tlsContext && !this.tlsActive) await w.rawLine('* STARTTLS');
      if (!this.compressing && !this.tlsActive) await w.rawLine('* COMPRESS DEFLATE');
      if (this.opts.profile === 'sync') await w.rawLine('* SIEVE-MAILBOX');
    }
    const what = this.opts.profile === 'sync' ? 'sync' : 'backup';
    await w.status(`* OK ${this.opts.servername} Cyrus ${what} server ${this.opts.version}`);
  }

  /** Returns true when the connection must end. */
  private async handle(line: CommandLine): Promise<boolean> {
    const cmd: Command = decodeCommand(line, {
      profile: this.opts.profile,
      sieveMailbox: this.sinkSession.sieveMailboxMode,
      starttls: this.opts.tlsContext !== undefined,
    });
    const w = this.writer;
    switch (cmd.verb) {
      case 'REFUSED':
        await this.refuse(cmd.reply, cmd.error?.code ?? 'IMAP_PROTOCOL_ERROR', cmd.error?.message);
        return false;
      case 'NOOP':
        if (!this.mayRun()) return this.refuseState();
        await w.status('OK Noop completed');
        return false;
      case 'RESTART':
        if (!this.mayRun()) return this.refuseState();
        await this.sinkSession.restart();
        await w.status('OK Restarting');
        return false;
      case 'EXIT':
        if (!this.mayRun()) return this.refuseState();
        await this.sinkSession.end();
        await w.status('OK Finished');
        return true;
      case 'AUTHENTICATE':
        if (this.user) {
          if (!this.admin) return this.refuseState();
          await this.refuse('BAD Already authenticated', 'IMAP_PROTOCOL_ERROR');
          return false;
        }
        await this.authenticate(cmd.mechanism, cmd.initial);
        return false;
      case 'STARTTLS':
        return this.starttls();
      case 'COMPRESS':
        if (!this.mayRun()) return this.refuseState();
        await this.compress(cmd.algorithm);
        return false;
      case 'GET':
      case 'APPLY':
      case 'RESTORE':
        if (!this.admin) return this.refuseState();
        // A router per command: cheap, and it logs with the session's current bindings (user).
        await new Router(this.opts.profile, this.sinkSession, this.writer, this.log).run(cmd, line.bodies);
        return false;
    }
  }

  /**
   * Session verbs (NOOP, RESTART, EXIT, COMPRESS) work before login; an
   * authenticated non-admin may do nothing at all (Cyrus: `goto noperm` before
   * any verb). GET/APPLY/RESTORE need an administrator.
   */
  private mayRun(): boolean {
    return this.user === null ? true : this.admin;
  }

  private async refuseState(): Promise<boolean> {
    if (this.user === null) await this.refuse('NO Please authenticate first', 'IMAP_PERMISSION_DENIED', 'not logged in');
    else await this.refuse('NO Permission denied', 'IMAP_PERMISSION_DENIED', `${this.user} is not an administrator`);
    return false;
  }

  /** Every refused command: one log line with its Cyrus code, then the reply. */
  private async refuse(reply: string, code: string, reason?: string): Promise<void> {
    this.log.info(reason === undefined ? { code } : { code, reason }, `refused: ${reply}`);
    await this.writer.status(reply);
  }

  private async authenticate(mechanism: string, initial: string | null): Promise<void> {
    const w = this.writer;
    const result = await this.opts.auth.authenticate(mechanism, initial, async (data) => {
      await w.rawLine(`+ ${data.toString('base64')}`);
      await w.endReply();
      const resp = await this.nextLine();
      if (resp === null) throw new Error('connection closed during authentication');
      return resp.verb;
    });
    if (!result.ok) {
      this.log.warn({ mechanism, code: 'IMAP_SASL_FAIL' }, `badlogin: ${result.reply}`);
      await w.status(result.reply);
      return;
    }
    this.loggedIn(result.user);
    await w.status(`OK Success (${this.tlsActive ? 'tls protection' : 'no protection'})`);
    this.recording = true;
    if (!this.admin) this.log.warn({ user: result.user }, 'login by a non-administrator: every command will be refused');
  }

  private loggedIn(user: string): void {
    this.user = user;
    this.admin = this.opts.auth.isAdmin(user);
    this.log = this.log.child({ user });
    this.log.info({ admin: this.admin }, 'login');
    // Only an administrator's file literals may reach the store's staging.
    if (this.admin) this.reader.setBodySink(this.sinkSession.bodySink);
    this.opts.onAuthenticated?.(user);
  }

  private async starttls(): Promise<boolean> {
    const w = this.writer;
    const ctx = this.opts.tlsContext;
    if (!ctx) {
      await this.refuse('BAD IMAP_PROTOCOL_ERROR Unrecognized command', 'IMAP_PROTOCOL_ERROR', 'STARTTLS without tls_server_cert');
      return false;
    }
    if (this.opts.profile === 'backup') {
      await this.refuse('NO command not implemented', 'IMAP_PROTOCOL_ERROR', 'the backup server has no STARTTLS');
      return false;
    }
    if (this.user) {
      if (!this.admin) return this.refuseState();
      await this.refuse("BAD Can't Starttls after authentication", 'IMAP_PROTOCOL_ERROR');
      return false;
    }
    if (this.tlsActive) {
      await w.status('BAD Already did a successful Starttls');
      return false;
    }
    // Bytes the client pipelined after STARTTLS are discarded (csync-wire §3.2).
    // The reader lets go of the connection before the OK goes out, so the
    // client's TLS handshake can only reach the TLS layer.
    this.input.unpipe(this.reader);
    this.reader.detachRemainder();
    await w.status('OK Begin TLS negotiation now');
    await this.outputDrained();
    this.writer.unpipe(this.conn);
    const secure = new tls.TLSSocket(this.conn, { isServer: true, secureContext: ctx });
    try {
      await once(secure, 'secure');
    } catch (err) {
      this.log.warn({ err }, 'TLS handshake failed');
      return true;
    }
    this.tlsActive = true;
    this.input = secure;
    this.writer.pipe(secure);
    secure.pipe(this.reader);
    this.log.info({ protocol: secure.getProtocol(), cipher: secure.getCipher()?.name }, 'TLS active');
    await this.greet();
    return false;
  }

  private async compress(algorithm: string): Promise<void> {
    const w = this.writer;
    if (this.compressing) {
      await this.refuse('NO Compression already active: DEFLATE', 'IMAP_PROTOCOL_ERROR');
      return;
    }
    if (algorithm.toUpperCase() !== 'DEFLATE') {
      await this.refuse(`NO Unknown compression algorithm: ${algorithm}`, 'IMAP_PROTOCOL_ERROR');
      return;
    }
    // Detach the reader before the OK goes out: every byte the client sends
    // after reading it is deflated and must reach the inflater, never the
    // reader directly (a chunk arriving in between would otherwise sit in the
    // reader's write queue as plain text).
    this.input.unpipe(this.reader);
    const pending = this.reader.detachRemainder();
    // The OK line travels uncompressed; everything after it is raw deflate.
    await w.status(`OK ${algorithm} active`);
    this.writer.startCompression(createCompressDeflate());
    const inflate = createCompressInflate();
    this.input.pipe(inflate);
    if (pending.length > 0) inflate.write(pending);
    inflate.pipe(this.reader);
    inflate.on('error', (err) => this.reader.destroy(err));
    this.input = inflate;
    this.compressing = true;
    this.log.debug('COMPRESS DEFLATE active');
  }

  private async fatal(err: unknown): Promise<void> {
    if (this.ended) return;
    if (err instanceof FramingError) {
      this.log.warn({ code: err.code, limit: err.limit, actual: err.actual, max: err.max }, `framing error: ${err.message}`);
      try {
        await this.writer.status(`* Fatal error: ${err.code} ${err.message}`);
      } catch {
        /* the connection may already be gone */
      }
      return;
    }
    const e = err as NodeJS.ErrnoException;
    if (e?.code === 'ECONNRESET' || e?.code === 'EPIPE' || e?.code === 'ERR_STREAM_PREMATURE_CLOSE') {
      this.log.info('connection lost');
      return;
    }
    this.log.error({ err }, 'session failed');
  }

  /** Everything the writer produced has been handed to the connection. */
  private async outputDrained(): Promise<void> {
    while (this.writer.readableLength > 0 && !this.conn.destroyed) await tick();
  }

  private async close(): Promise<void> {
    this.ended = true;
    try {
      await this.sinkSession.end();
    } catch (err) {
      this.log.error({ err }, 'releasing the store session failed');
    }
    this.reader.destroy();
    await this.writer.finish().catch(() => undefined);
    await this.outputDrained();
    this.conn.end();
    this.log.info('connection closed');
  }
}

