/**
 * The client side of a csync session, as Cyrus sync_connect() drives it:
 * connect, read the greeting (capability lines up to `* OK`), STARTTLS
 * when offered and asked for, AUTHENTICATE PLAIN, COMPRESS DEFLATE when
 * offered, then one command at a time with its reply. `cyrsync restore` and
 * `cyrsync bench-client` both talk to their server through it.
 *
 * Replies are parsed with the dlist parser (CommandReader: one response
 * line at a time, on demand), commands are written by CommandWriter, which
 * streams file literals from their sources with backpressure and checks
 * their size and SHA-1 on the way out.
 */
import { once } from 'node:events';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Readable } from 'node:stream';
import { CommandReader } from '../../transforms/dlist-parser.js';
import { CommandWriter } from '../../transforms/serializer.js';
import { createCompressDeflate, createCompressInflate } from '../../transforms/deflate.js';
import type { CommandLine, DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import { CyrsyncError } from '../../transforms/errors.js';
import { encodeCommand } from '../protocol/commands.js';
import { scalarText } from '../protocol/commands/fields.js';
import type { ApplyCommand, GetCommand, RestoreCommand } from '../protocol/types.js';

/** A NO/BAD reply (`refusal`), or a session that could not be set up or went away. */
export class CsyncWireError extends CyrsyncError {
  constructor(
    readonly command: string,
    readonly reply: string,
    /** the server answered the command with NO or BAD */
    readonly refusal = false,
  ) {
    super('IMAP_PROTOCOL_ERROR', `${command}: ${reply}`);
  }
}

/** How far an upload has come (restore and bench-client report it as a progress bar). */
export interface UploadProgress {
  bytes: number;
  totalBytes: number;
  messages: number;
  totalMessages: number;
}

export interface ConnectOptions {
  host: string;
  port: number;
  authname: string;
  password: string;
  /** SASL authorization id (empty: none). */
  authzid?: string;
  /** Take COMPRESS DEFLATE when offered (as sync_client does). */
  compress: boolean;
  /** Fail unless COMPRESS DEFLATE is offered and accepted (-z). */
  requireCompression: boolean;
  /** STARTTLS when offered. */
  starttls: boolean;
  tlsCaFile?: string;
  /** Give up when the server sends nothing for this long (absent: wait). */
  timeoutMs?: number;
}

export interface Reply {
  /** The `* KEY value` data items of the reply. */
  data: DlistItem[];
  status: string;
}

function text(v: DlistValue): string {
  return v.kind === 'nil' ? 'NIL' : (scalarText(v, 'keep') ?? '');
}

/** `OK success` / `NO IMAP_... text` as one line of text. */
export function statusText(c: CommandLine): string {
  return [c.verb, ...c.args.map(text)].join(' ');
}

export class CsyncConnection {
  readonly writer = new CommandWriter();
  private reader = new CommandReader();
  private input: Readable;
  capabilities: string[] = [];
  compressed = false;
  /** Octets written to and read from the socket (compressed when COMPRESS is on; inside TLS after STARTTLS). */
  wireOut = 0;
  wireIn = 0;

  private constructor(private sock: net.Socket | tls.TLSSocket) {
    this.input = sock;
    this.writer.on('data', (d: Buffer) => {
      this.wireOut += d.length;
    });
    this.attach(sock);
    this.reader.on('error', () => undefined);
  }

  private readonly countIn = (d: Buffer): void => {
    this.wireIn += d.length;
  };

  /** The socket (plain, then TLS after STARTTLS) carries the writer's output and feeds the reader. */
  private attach(sock: net.Socket | tls.TLSSocket): void {
    this.writer.pipe(sock);
    sock.on('data', this.countIn);
    sock.pipe(this.reader);
    sock.on('error', (err: Error) => this.reader.destroy(err));
  }

  static async connect(opts: ConnectOptions): Promise<CsyncConnection> {
    const sock = net.connect({ host: opts.host, port: opts.port, noDelay: true });
    const timeoutMs = opts.timeoutMs;
    if (timeoutMs !== undefined) {
      sock.setTimeout(timeoutMs, () => sock.destroy(new Error(`no answer from ${opts.host}:${opts.port} within ${timeoutMs / 1000} s`)));
    }
    await once(sock, 'connect');
    sock.setKeepAlive(true);
    const c = new CsyncConnection(sock);
    try {
      await c.greeting();
      if (opts.starttls && c.capabilities.includes('STARTTLS')) await c.startTls(opts);
      await c.authenticate(opts);
      if (c.capabilities.includes('COMPRESS') && (opts.compress || opts.requireCompression)) {
        await c.startCompression();
      } else if (opts.requireCompression) {
        throw new CsyncWireError('COMPRESS DEFLATE', 'the server does not offer compression (-z requires it)');
      }
      return c;
    } catch (err) {
      c.close();
      throw err;
    }
  }

  private async next(command: string): Promise<CommandLine> {
    const line = await this.reader.nextCommand();
    if (line === null) throw new CsyncWireError(command, 'the server closed the connection');
    if (line.error) {
      throw new CsyncWireError(command, `${line.verb} ... (a reply cyrsync could not parse: ${line.error.message}; a crashed server says "* BYE Fatal error: ...")`);
    }
    return line;
  }

  /** Capability lines (`* SASL PLAIN`, `* COMPRESS DEFLATE`, ...) up to `* OK`. */
  private async greeting(): Promise<void> {
    const caps: string[] = [];
    for (;;) {
      const l = await this.next('greeting');
      if (l.verb !== '*') throw new CsyncWireError('greeting', statusText(l));
      const first = l.args[0] ? text(l.args[0]).toUpperCase() : '';
      if (first === 'OK') break;
      caps.push(first);
      if (first === 'SASL') caps.push(...l.args.slice(1).map((a) => `SASL=${text(a).toUpperCase()}`));
    }
    this.capabilities = caps;
  }

  private async startTls(opts: ConnectOptions): Promise<void> {
    await this.writer.command('STARTTLS');
    const r = await this.next('STARTTLS');
    if (r.verb !== 'OK') throw new CsyncWireError('STARTTLS', statusText(r), true);
    const plain = this.sock as net.Socket;
    plain.off('data', this.countIn);
    plain.unpipe(this.reader);
    this.writer.unpipe(plain);
    const rest = this.reader.detachRemainder();
    if (rest.length > 0) plain.unshift(rest);
    const ca = opts.tlsCaFile ? (await import('node:fs')).readFileSync(opts.tlsCaFile) : undefined;
    const secure = tls.connect({ socket: plain, servername: net.isIP(opts.host) ? undefined : opts.host, ca, rejectUnauthorized: ca !== undefined });
    await once(secure, 'secureConnect');
    this.sock = secure;
    this.input = secure;
    this.attach(secure);
    // The capabilities are sent again after TLS.
    await this.greeting();
  }

  private async authenticate(opts: ConnectOptions): Promise<void> {
    if (!this.capabilities.includes('SASL=PLAIN')) {
      throw new CsyncWireError('AUTHENTICATE', `the server offers no PLAIN mechanism (offered: ${this.capabilities.filter((c) => c.startsWith('SASL=')).map((c) => c.slice(5)).join(' ') || 'none'})`);
    }
    const resp = Buffer.from(`${opts.authzid ?? ''}\0${opts.authname}\0${opts.password}`, 'utf8').toString('base64');
    await this.writer.command(`AUTHENTICATE PLAIN ${resp}`);
    const r = await this.next('AUTHENTICATE');
    if (r.verb !== 'OK') throw new CsyncWireError('AUTHENTICATE', statusText(r), true);
  }

  private async startCompression(): Promise<void> {
    await this.writer.command('COMPRESS DEFLATE');
    const r = await this.next('COMPRESS');
    if (r.verb !== 'OK') throw new CsyncWireError('COMPRESS DEFLATE', statusText(r), true);
    const src = this.input;
    src.unpipe(this.reader);
    const rest = this.reader.detachRemainder();
    const inflate = createCompressInflate();
    inflate.on('error', (err) => this.reader.destroy(err));
    if (rest.length > 0) inflate.write(rest);
    src.pipe(inflate).pipe(this.reader);
    this.writer.startCompression(createCompressDeflate());
    this.compressed = true;
  }

  /** Sends `VERB KEY value` and reads the reply; throws CsyncWireError on NO/BAD. */
  async call(verb: string, item: DlistItem): Promise<Reply> {
    await this.writer.command(verb, item);
    const data: DlistItem[] = [];
    const what = `${verb} ${item.key}`;
    for (;;) {
      const l = await this.next(what);
      if (l.verb === '*') {
        const k = l.args[0];
        const v = l.args[1];
        if (k && v) data.push({ key: text(k).toUpperCase(), value: v });
        continue;
      }
      const status = statusText(l);
      if (l.verb !== 'OK') throw new CsyncWireError(what, status, true);
      return { data, status };
    }
  }

  /** A typed command, written by the protocol table's encoder, and its reply. */
  send(cmd: GetCommand | ApplyCommand | RestoreCommand): Promise<Reply> {
    const { verb, item } = encodeCommand(cmd);
    return this.call(verb, item);
  }

  async exit(): Promise<void> {
    try {
      await this.writer.command('EXIT');
      await Promise.race([this.reader.nextCommand(), new Promise((r) => setTimeout(r, 2000).unref())]);
    } catch {
      // The server may close first.
    }
    this.close();
  }

  close(): void {
    this.sock.destroy();
    this.reader.destroy();
  }
}

/** `host`, `host:port`, `[v6]:port`; port from the name or `fallback`. */
export function parseServer(server: string, fallback: number): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(server);
  if (v6) return { host: v6[1]!, port: v6[2] ? Number(v6[2]) : fallback };
  const i = server.lastIndexOf(':');
  if (i > 0 && server.indexOf(':') === i) {
    const p = server.slice(i + 1);
    const port = /^\d+$/.test(p) ? Number(p) : p === 'csync' ? 2005 : NaN;
    if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new CsyncWireError('connect', `bad port in "${server}"`);
    return { host: server.slice(0, i), port };
  }
  return { host: server, port: fallback };
}
