/**
 * Protocol telemetry as Cyrus 3.6.1 writes it (imap/telemetry.c
 * `telemetry_log`, lib/prot.c `prot_fill` / `prot_flush_log`):
 *
 *  - only when `<configdirectory>/log/<authuser>/` exists; the file is
 *    `<that dir>/<ident>-<pid>` (ident: the service name, $CYRUS_SERVICE
 *    under master; `<ident>-<session id>` with `telemetry_bysessionid`),
 *    opened O_CREAT|O_APPEND, mode 0644;
 *  - it starts with `---------- <user> <ctime(3) of now>` followed by an
 *    empty line (ctime's own newline plus the header's);
 *  - every read from the client is appended as `<UNIXTIME<` + bytes, every
 *    flush to the client as `>UNIXTIME>` + bytes, with no separator: the
 *    bytes carry their own CRLFs;
 *  - the bytes are the plaintext protocol: after TLS, after inflate, before
 *    deflate;
 *  - it begins with the first command after a successful AUTHENTICATE (the
 *    `OK Success` line itself is not in it).
 *
 * Chunking differs from Cyrus's 4 KiB prot buffers (markers fall at other
 * places), the byte sequence and the marker format do not: replies are
 * gathered and written as one `>T>` record when the client speaks next, at
 * 4 KiB, or at the end.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';

/** Cyrus PROT_BUFSIZE: the largest single `>T>` record. */
const FLUSH_AT = 4096;

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** ctime(3) in local time: `Sun Nov 22 14:16:53 2026\n`. */
export function ctime(d: Date): string {
  const p2 = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getDay()]} ${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())} ${d.getFullYear()}\n`;
}

/** `<configdirectory>/log/<user>` */
export function telemetryDir(configdirectory: string, user: string): string {
  return join(configdirectory, 'log', user);
}

/** `<configdirectory>/log/<user>/<ident>-<pid>` (or `-<session id>` with `telemetry_bysessionid`) */
export function telemetryFile(configdirectory: string, user: string, ident: string, id: number | string): string {
  return join(telemetryDir(configdirectory, user), `${ident}-${id}`);
}

export interface TelemetryOpenOptions {
  configdirectory: string;
  user: string;
  /** Service name (Cyrus config_ident). */
  ident: string;
  pid?: number;
  /** `telemetry_bysessionid`: name the file after this session id instead of the pid. */
  sessionId?: string;
  now?: () => Date;
  log?: Logger;
}

export class TelemetryLog {
  private fd: number | null;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** When the first gathered reply byte was produced: the stamp of its `>T>` record. */
  private pendingSince = 0;
  private readonly now: () => Date;

  private constructor(
    fd: number,
    readonly file: string,
    now: () => Date,
    private readonly log: Logger | undefined,
  ) {
    this.fd = fd;
    this.now = now;
  }

  /**
   * Opens (appends to) the user's telemetry file and writes the header, or
   * returns null when `<configdirectory>/log/<user>/` does not exist (or the
   * user name could leave that directory).
   */
  static open(o: TelemetryOpenOptions): TelemetryLog | null {
    if (o.user === '' || o.user.includes('/') || o.user === '.' || o.user === '..' || o.user.includes('\0')) return null;
    if (o.sessionId !== undefined && (o.sessionId === '' || o.sessionId.includes('/'))) return null;
    const file = telemetryFile(o.configdirectory, o.user, o.ident, o.sessionId ?? o.pid ?? process.pid);
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_APPEND | fs.constants.O_WRONLY, 0o644);
    } catch (err) {
      // ENOENT: no telemetry directory for this user, the normal case.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') o.log?.error({ err, file }, 'IOERROR: unable to open telemetry log');
      return null;
    }
    const now = o.now ?? (() => new Date());
    const t = new TelemetryLog(fd, file, now, o.log);
    t.put(Buffer.from(`---------- ${o.user} ${ctime(now())}\n`, 'latin1'));
    return t;
  }

  /** Bytes read from the client (after TLS and inflate). */
  input(chunk: Buffer): void {
    if (this.fd === null || chunk.length === 0) return;
    this.flushOutput();
    this.put(Buffer.from(`<${this.seconds()}<`, 'latin1'), chunk);
  }

  /** Bytes for the client (before deflate and TLS). */
  output(chunk: Buffer): void {
    if (this.fd === null || chunk.length === 0) return;
    if (this.pendingBytes === 0) this.pendingSince = this.seconds();
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= FLUSH_AT) this.flushOutput();
  }

  record(direction: 'in' | 'out', chunk: Buffer): void {
    if (direction === 'in') this.input(chunk);
    else this.output(chunk);
  }

  close(): void {
    if (this.fd === null) return;
    this.flushOutput();
    const fd = this.fd;
    this.fd = null;
    try {
      fs.closeSync(fd);
    } catch {
      /* nothing left to lose */
    }
  }

  private flushOutput(): void {
    if (this.pendingBytes === 0) return;
    const parts = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    this.put(Buffer.from(`>${this.pendingSince}>`, 'latin1'), ...parts);
  }

  private seconds(): number {
    return Math.floor(this.now().getTime() / 1000);
  }

  /** Telemetry never fails a session: a write error is logged once and the log stops. */
  private put(...bufs: Buffer[]): void {
    if (this.fd === null) return;
    try {
      fs.writevSync(this.fd, bufs);
    } catch (err) {
      this.log?.error({ err, file: this.file }, 'IOERROR: unable to write to telemetry log');
      const fd = this.fd;
      this.fd = null;
      try {
        fs.closeSync(fd);
      } catch {
        /* already reported */
      }
    }
  }
}

/**
 * Observes the plaintext protocol of a session: every chunk written into the
 * command reader (whatever stream feeds it: socket, TLS, inflate) and every
 * buffer the response writer emits before its compressor. `tap` decides
 * whether to record (the session gates it on login).
 */
export function tapPlaintext(
  reader: { _write: (chunk: Buffer, enc: BufferEncoding, cb: (err?: Error | null) => void) => void },
  writer: object,
  tap: (direction: 'in' | 'out', chunk: Buffer) => void,
): void {
  const write = reader._write.bind(reader);
  reader._write = (chunk, enc, cb) => {
    tap('in', chunk);
    write(chunk, enc, cb);
  };
  // DlistWriter funnels every octet it produces through emitBuffer (pushed or
  // handed to the compressor); file literals go through it chunk by chunk.
  const w = writer as { emitBuffer?: (b: Buffer) => Promise<void> };
  const emit = w.emitBuffer;
  if (typeof emit !== 'function') throw new Error('response writer has no emitBuffer(): telemetry cannot observe it');
  w.emitBuffer = function (this: unknown, b: Buffer) {
    tap('out', b);
    return emit.call(writer, b);
  };
}
