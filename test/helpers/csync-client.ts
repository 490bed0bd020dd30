/**
 * A line-oriented csync client for session-level tests: writes exactly the
 * bytes given and reads the server's reply lines (CRLF or LF, latin1). No
 * literal parsing: the tests read status and short data lines only.
 */
import type { ExecutionContext } from 'ava';
import { once } from 'node:events';
import * as net from 'node:net';
import type { Readable } from 'node:stream';
import type * as tls from 'node:tls';

export interface CsyncClientOptions {
  /** line() throws after this long without a line (default: it waits as long as the test runs) */
  lineTimeoutMs?: number;
}

export class CsyncTestClient {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  /** true once the connection (or the source set by readFrom) has ended */
  closed = false;
  /** every chunk received, in order (latin1) */
  readonly received: string[] = [];

  constructor(
    public sock: net.Socket | tls.TLSSocket,
    private readonly o: CsyncClientOptions = {},
  ) {
    this.attach(sock);
  }

  /** Connects to 127.0.0.1:`port`, or to the Unix socket at path `port`; destroyed in t.teardown when `t` is given. */
  static async connect(port: number | string, t?: Pick<ExecutionContext, 'teardown'>, o: CsyncClientOptions = {}): Promise<CsyncTestClient> {
    const sock = typeof port === 'string' ? net.connect(port) : net.connect(port, '127.0.0.1');
    t?.teardown(() => void sock.destroy());
    sock.on('error', () => undefined);
    await once(sock, 'connect');
    return new CsyncTestClient(sock, o);
  }

  /** Reads from `sock` from now on (e.g. the TLS socket after STARTTLS). */
  attach(sock: net.Socket | tls.TLSSocket): void {
    this.sock = sock;
    sock.on('data', (d: Buffer) => this.feed(d));
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => undefined);
  }

  feed(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    this.received.push(d.toString('latin1'));
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /**
   * From here on the replies come out of `source` (an inflater on the
   * socket): the connection counts as closed only when `source` has ended,
   * that is after it delivered the last octets the socket brought.
   */
  readFrom(source: Readable): void {
    this.sock.removeAllListeners('data');
    this.sock.removeAllListeners('close');
    source.on('data', (d: Buffer) => this.feed(d));
    const ended = (): void => {
      this.closed = true;
      this.wake();
    };
    source.on('end', ended);
    source.on('error', ended);
  }

  /** The next line without its line end; null once the connection has closed. */
  async line(timeoutMs = this.o.lineTimeoutMs): Promise<string | null> {
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    for (;;) {
      const i = this.buf.indexOf(10);
      if (i >= 0) {
        const l = this.buf.subarray(0, i).toString('latin1').replace(/\r$/, '');
        this.buf = this.buf.subarray(i + 1);
        return l;
      }
      if (this.closed) return null;
      if (Date.now() > deadline) throw new Error('timed out waiting for a line');
      await new Promise<void>((r) => {
        this.waiters.push(r);
        if (deadline !== Infinity) setTimeout(r, 50);
      });
    }
  }

  /** Lines up to and including the first one that does not start with `* `. */
  async reply(): Promise<string[]> {
    return this.until((l) => !l.startsWith('* '));
  }

  /** Capability lines up to and including the `* OK` line (as sync_client reads them). */
  async greeting(): Promise<string[]> {
    return this.until((l) => l.startsWith('* OK'));
  }

  /** The first line starting with `prefix` (the lines before it are skipped); throws once the connection has closed. */
  async status(prefix: string): Promise<string> {
    for (;;) {
      const l = await this.line();
      if (l === null) throw new Error('connection closed');
      if (l.startsWith(prefix)) return l;
    }
  }

  private async until(last: (line: string) => boolean): Promise<string[]> {
    const out: string[] = [];
    for (;;) {
      const l = await this.line();
      if (l === null) return out;
      out.push(l);
      if (last(l)) return out;
    }
  }

  /** Writes `s` as it is (a string as latin1). */
  send(s: string | Buffer): void {
    this.sock.write(typeof s === 'string' ? Buffer.from(s, 'latin1') : s);
  }

  /** Writes one command line, CRLF added. */
  sendLine(line: string): void {
    this.send(`${line}\r\n`);
  }

  /** AUTHENTICATE PLAIN as `user`; the reply lines. */
  async login(user = 'admin', pass = 'adminpw'): Promise<string[]> {
    this.sendLine(`AUTHENTICATE PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`);
    return this.reply();
  }

  /** Resolves once the connection has closed. */
  async waitClosed(): Promise<void> {
    while (!this.closed) await new Promise<void>((r) => this.waiters.push(r));
  }

  end(): void {
    this.sock.end();
  }
}
