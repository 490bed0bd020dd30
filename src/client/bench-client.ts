/**
 * `cyrsync bench-client`: a streaming csync load client.
 *
 * It authenticates (PLAIN), optionally takes COMPRESS DEFLATE, and streams a
 * generated workload as the real sync_client would send it for new users:
 * per mailbox, batches of `APPLY MESSAGE (%{part guid size}...)` then one
 * `APPLY MAILBOX %(... RECORD (...))`. It works against cyrsync and against
 * the real Cyrus sync_server.
 *
 * Memory stays flat at any size: a message body is generated as a stream from
 * (seed, user, mailbox, uid), hashed in a first pass for its GUID and
 * generated again while it is sent; only the metadata of the current mailbox
 * (uid, size, guid) is held.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import * as net from 'node:net';
import { Readable } from 'node:stream';
import { CommandWriter } from '../../transforms/serializer.js';
import { createCompressDeflate, createCompressInflate } from '../../transforms/deflate.js';
import type { DlistFile, DlistItem } from '../../transforms/dlist-types.js';
import { encodeCommand } from '../protocol/commands.js';
import type { ApplyCommand, GetCommand, MailboxIn } from '../protocol/types.js';
import { mailboxCrcs, type CrcRecord } from '../protocol/crc.js';
import { EX_USAGE, UsageError, defineCommand, formatUsageError, intValue, parseCommandLine, type OptionValues } from '../cli-args.js';

export interface Workload {
  users: number;
  mailboxesPerUser: number;
  /** messages per mailbox */
  messages: number;
  /** octets per message (approximately: headers are added, the body is cut to fit) */
  size: number;
  seed: number;
  /** user name prefix: users are `<prefix>1`, `<prefix>2`, ... */
  userPrefix: string;
  partition: string;
}

export interface BenchOptions {
  host: string;
  port: number;
  authname: string;
  password: string;
  compress: boolean;
  workload: Workload;
  /** files per APPLY MESSAGE (the real client sends at most 1024) */
  batchFiles: number;
  /** octets per APPLY MESSAGE batch */
  batchBytes: number;
  onProgress?: (p: Progress) => void;
}

export interface Progress {
  bytes: number;
  totalBytes: number;
  messages: number;
  totalMessages: number;
  elapsedMs: number;
}

export interface BenchSummary {
  host: string;
  port: number;
  compress: boolean;
  users: number;
  mailboxes: number;
  messages: number;
  messageBytes: number;
  wireBytesOut: number;
  wireBytesIn: number;
  commands: number;
  seconds: number;
  mbPerSecond: number;
  clientPeakRssKiB: number;
}

export class BenchRefusedError extends Error {
  constructor(
    readonly command: string,
    readonly reply: string,
  ) {
    super(`the server refused ${command}: ${reply}`);
  }
}

// ---------------------------------------------------------------------------
// Deterministic message generation

/** xorshift32: fast, seedable, good enough for filler bytes. */
function nextRand(s: number): number {
  s ^= s << 13;
  s ^= s >>> 17;
  s ^= s << 5;
  return s >>> 0;
}

const B64 = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', 'latin1');
const LINE = 76;

function header(user: string, mailbox: string, uid: number, seed: number): Buffer {
  const date = new Date(Date.UTC(2024, 0, 1) + uid * 60_000).toUTCString().replace('GMT', '+0000');
  return Buffer.from(
    `From: bench${seed}@example.org\r\nTo: ${user}@example.org\r\nSubject: bench ${mailbox} ${uid}\r\n` +
      `Date: ${date}\r\nMessage-ID: <${seed}.${uid}.${mailbox}.${user}@bench.cyrsync>\r\nMIME-Version: 1.0\r\n` +
      'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n',
    'latin1',
  );
}

/**
 * The message body as a stream of base64-looking lines (CRLF every 76
 * octets), exactly `size` octets in all (at least the header's length).
 */
export function messageStream(user: string, mailbox: string, uid: number, size: number, seed: number): Readable {
  const head = header(user, mailbox, uid, seed);
  const total = Math.max(size, head.length);
  let sent = 0;
  let rand = (seed * 2654435761 + uid * 40503 + hashString(user + '/' + mailbox)) >>> 0 || 1;
  let col = 0;
  const CHUNK = 64 * 1024;
  return new Readable({
    read() {
      if (sent === 0) {
        const h = head.subarray(0, total);
        sent = h.length;
        this.push(h);
        return;
      }
      if (sent >= total) {
        this.push(null);
        return;
      }
      const n = Math.min(CHUNK, total - sent);
      const out = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) {
        if (col === LINE) {
          out[i] = 13;
          col = LINE + 1;
        } else if (col === LINE + 1) {
          out[i] = 10;
          col = 0;
        } else {
          rand = nextRand(rand);
          out[i] = B64[rand & 63]!;
          col++;
        }
      }
      sent += n;
      this.push(out);
    },
  });
}

function hashString(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

async function sha1Of(stream: Readable): Promise<string> {
  const h = createHash('sha1');
  for await (const chunk of stream) h.update(chunk as Buffer);
  return h.digest('hex');
}

// ---------------------------------------------------------------------------
// A minimal csync client connection

class Connection {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private closed = false;
  private error: Error | null = null;
  readonly writer = new CommandWriter();
  wireOut = 0;
  wireIn = 0;

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.wireIn += d.length;
      this.onPlain(d);
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', (err) => {
      this.error = err;
      this.wake();
    });
    const count = (d: Buffer): void => {
      this.wireOut += d.length;
    };
    this.writer.on('data', count);
    this.writer.pipe(sock);
  }

  static async open(host: string, port: number): Promise<Connection> {
    const sock = net.connect({ host, port, noDelay: true });
    await once(sock, 'connect');
    return new Connection(sock);
  }

  private inflate: ReturnType<typeof createCompressInflate> | null = null;

  private onPlain(d: Buffer): void {
    if (this.inflate) {
      this.inflate.write(d);
      return;
    }
    this.feed(d);
  }

  private feed(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async line(): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf(10);
      if (i >= 0) {
        const l = this.buf.subarray(0, i).toString('latin1').replace(/\r$/, '');
        this.buf = this.buf.subarray(i + 1);
        return l;
      }
      if (this.error) throw this.error;
      if (this.closed) throw new Error('the server closed the connection');
      await new Promise<void>((r) => (this.waiter = r));
    }
  }

  /** Reads data lines up to the status line; throws BenchRefusedError unless OK. */
  async reply(command: string): Promise<string[]> {
    const data: string[] = [];
    for (;;) {
      const l = await this.line();
      if (l.startsWith('* ')) {
        data.push(l);
        continue;
      }
      if (!l.startsWith('OK')) throw new BenchRefusedError(command, l);
      return data;
    }
  }

  async greeting(): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const l = await this.line();
      lines.push(l);
      if (/^\* OK/i.test(l)) return lines;
    }
  }

  async send(verb: string, item?: DlistItem): Promise<void> {
    await this.writer.command(verb, item);
  }

  /** After `OK DEFLATE active`: both directions raw deflate from the next octet. */
  startCompression(): void {
    this.writer.startCompression(createCompressDeflate());
    const inflate = createCompressInflate();
    inflate.on('data', (d: Buffer) => this.feed(d));
    inflate.on('error', (err) => {
      this.error = err;
      this.wake();
    });
    if (this.buf.length > 0) {
      const rest = this.buf;
      this.buf = Buffer.alloc(0);
      inflate.write(rest);
    }
    this.inflate = inflate;
  }

  close(): void {
    this.sock.destroy();
  }
}

// ---------------------------------------------------------------------------
// The run

function mailboxNames(user: string, count: number): string[] {
  const inbox = `user.${user}`;
  const names = [inbox];
  for (let i = 1; i < count; i++) names.push(`${inbox}.Folder${i}`);
  return names;
}

function uniqueid(seed: number, name: string): string {
  return createHash('sha1').update(`${seed}:${name}`).digest('hex').slice(0, 24);
}

export function totalMessageBytes(w: Workload): number {
  return w.users * w.mailboxesPerUser * w.messages * w.size;
}

export async function runBench(opts: BenchOptions): Promise<BenchSummary> {
  const w = opts.workload;
  const started = Date.now();
  const conn = await Connection.open(opts.host, opts.port);
  let commands = 0;
  let bytes = 0;
  let messagesDone = 0;
  let peakRss = 0;
  const totalMessages = w.users * w.mailboxesPerUser * w.messages;
  const totalBytes = totalMessageBytes(w);
  const progress = (): void => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
    opts.onProgress?.({ bytes, totalBytes, messages: messagesDone, totalMessages, elapsedMs: Date.now() - started });
  };
  const call = async (verb: string, item?: DlistItem): Promise<string[]> => {
    commands++;
    await conn.send(verb, item);
    return conn.reply(item ? `${verb} ${item.key}` : verb);
  };
  /** A typed command, written by the protocol module's encoder. */
  const send = (cmd: GetCommand | ApplyCommand): Promise<string[]> => {
    const { verb, item } = encodeCommand(cmd);
    return call(verb, item);
  };
  try {
    const caps = await conn.greeting();
    const authz = Buffer.from(`\0${opts.authname}\0${opts.password}`).toString('base64');
    await call(`AUTHENTICATE PLAIN ${authz}`);
    if (opts.compress) {
      if (!caps.some((l) => /^\* COMPRESS DEFLATE/i.test(l))) throw new Error('the server does not offer COMPRESS DEFLATE');
      await conn.send('COMPRESS DEFLATE');
      const l = await conn.line();
      if (!l.startsWith('OK')) throw new BenchRefusedError('COMPRESS DEFLATE', l);
      conn.startCompression();
    }
    for (let u = 1; u <= w.users; u++) {
      const user = `${w.userPrefix}${u}`;
      await send({ verb: 'GET', sub: 'USER', userid: user });
      const now = Math.floor(Date.now() / 1000);
      for (const mboxname of mailboxNames(user, w.mailboxesPerUser)) {
        const records: { uid: number; size: number; guid: string }[] = [];
        let batch: DlistFile[] = [];
        let batchBytes = 0;
        const flush = async (): Promise<void> => {
          if (batch.length === 0) return;
          await send({ verb: 'APPLY', sub: 'MESSAGE', files: batch });
          messagesDone += batch.length;
          bytes += batchBytes;
          batch = [];
          batchBytes = 0;
          progress();
        };
        for (let uid = 1; uid <= w.messages; uid++) {
          const size = Math.max(w.size, header(user, mboxname, uid, w.seed).length);
          const make = (): Readable => messageStream(user, mboxname, uid, size, w.seed);
          const guid = await sha1Of(make());
          records.push({ uid, size, guid });
          batch.push({ kind: 'file', partition: w.partition, guid, size, source: make });
          batchBytes += size;
          if (batch.length >= opts.batchFiles || batchBytes >= opts.batchBytes) await flush();
        }
        await flush();
        // The basic CRC is checked by the server; the annotation CRC is left to
        // the zero wildcard (a replica may add synthetic annotations of its own).
        const crcs = mailboxCrcs(
          records.map(
            (r): CrcRecord => ({
              uid: r.uid,
              modseq: BigInt(r.uid + 1),
              lastUpdated: now,
              internaldate: now,
              guid: r.guid,
              systemFlags: 0,
              userFlags: [],
              expunged: false,
              annotations: [],
              thrid: 0n,
              savedate: 0,
              createdmodseq: 0n,
            }),
          ),
        );
        const mailbox: MailboxIn = {
          uniqueid: uniqueid(w.seed, mboxname),
          mboxname,
          mboxtype: null,
          syncCrc: crcs.basic,
          lastUid: w.messages,
          highestmodseq: BigInt(w.messages + 1),
          recentUid: 0,
          recentTime: 0,
          lastAppenddate: now,
          pop3LastLogin: 0,
          pop3ShowAfter: 0,
          uidvalidity: now,
          partition: w.partition,
          acl: `${user}\tlrswipkxtecdan\t`,
          options: 'P',
          createdmodseq: 1n,
          foldermodseq: 1n,
          records: records.map((r) => ({
            uid: r.uid,
            modseq: BigInt(r.uid + 1),
            lastUpdated: now,
            flags: [],
            internaldate: now,
            size: r.size,
            guid: r.guid,
            annotations: null,
          })),
        };
        await send({ verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox });
      }
    }
    await call('EXIT');
  } finally {
    conn.close();
  }
  const seconds = (Date.now() - started) / 1000;
  progress();
  return {
    host: opts.host,
    port: opts.port,
    compress: opts.compress,
    users: w.users,
    mailboxes: w.users * w.mailboxesPerUser,
    messages: messagesDone,
    messageBytes: bytes,
    wireBytesOut: conn.wireOut,
    wireBytesIn: conn.wireIn,
    commands,
    seconds,
    mbPerSecond: bytes / 1e6 / Math.max(seconds, 1e-9),
    clientPeakRssKiB: Math.round(peakRss / 1024),
  };
}

// ---------------------------------------------------------------------------
// Command line

/** `4k`, `20M`, `1G`, `5G`, plain octets. */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([kmgt]?)i?b?$/i.exec(s.trim());
  if (!m) throw new Error(`not a size: "${s}" (examples: 4k, 20M, 1G)`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * mult);
}

export const BENCH_SPEC = defineCommand({
  name: 'bench-client',
  summary: 'stream a generated replication workload to a csync server (cyrsync or Cyrus sync_server)',
  description:
    'Streams a generated workload (APPLY MESSAGE batches and APPLY MAILBOX per folder, as sync_client sends new users) to cyrsync or to the real sync_server, with flat memory at any size. A refusal ends it with the server\'s reply and exit status 1.',
  options: {
    connect: { long: 'connect', type: 'string', value: 'HOST:PORT', help: 'csync server (cyrsync or Cyrus sync_server); required' },
    authname: { long: 'authname', type: 'string', value: 'NAME', help: 'administrator to log in as (default admin)' },
    password: { long: 'password', type: 'string', value: 'PW', help: 'its password (default: $CYRSYNC_BENCH_PASSWORD, else read from stdin)' },
    compress: { long: 'compress', type: 'boolean', help: 'take COMPRESS DEFLATE' },
    users: { long: 'users', type: 'string', value: 'N', help: 'users (default 1)' },
    mailboxes: { long: 'mailboxes', type: 'string', value: 'N', help: 'mailboxes per user, INBOX included (default 1)' },
    messages: { long: 'messages', type: 'string', value: 'N', help: 'messages per mailbox (default 100)' },
    size: { long: 'size', type: 'string', value: 'S', help: 'message size, e.g. 4k, 20M, 1G (default 4k)' },
    total: { long: 'total', type: 'string', value: 'S', help: 'total message octets, e.g. 5G (sets --messages from --size)' },
    userPrefix: { long: 'user-prefix', type: 'string', value: 'P', help: 'user names P1, P2, ... (default bench)' },
    seed: { long: 'seed', type: 'string', value: 'N', help: 'generator seed (default 1); another seed gives other messages' },
    partition: { long: 'partition', type: 'string', value: 'P', help: 'partition name sent (default default)' },
    json: { long: 'json', type: 'boolean', help: 'print one JSON summary line instead of the table' },
  },
});

/** The workload and connection of a parsed command line; UsageError for a bad value. */
function benchArgs(v: OptionValues<typeof BENCH_SPEC>): { w: Workload; connect: string; total: number | undefined } {
  if (v.connect === undefined) throw new UsageError('--connect HOST:PORT is required');
  const size = (flag: string, s: string): number => {
    try {
      return parseSize(s);
    } catch (err) {
      throw new UsageError(`option ${flag}: ${(err as Error).message}`);
    }
  };
  const int = (flag: string, s: string | undefined, dflt: number): number => (s === undefined ? dflt : intValue(flag, s, 1));
  const w: Workload = {
    users: int('--users', v.users, 1),
    mailboxesPerUser: int('--mailboxes', v.mailboxes, 1),
    messages: int('--messages', v.messages, 100),
    size: v.size === undefined ? 4096 : size('--size', v.size),
    seed: int('--seed', v.seed, 1),
    userPrefix: v.userPrefix ?? 'bench',
    partition: v.partition ?? 'default',
  };
  return { w, connect: v.connect, total: v.total === undefined ? undefined : size('--total', v.total) };
}

export async function runBenchClient(argv: string[]): Promise<number> {
  const p = parseCommandLine(BENCH_SPEC, argv);
  if (typeof p === 'number') return p;
  let parsed: ReturnType<typeof benchArgs>;
  try {
    parsed = benchArgs(p.values);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(formatUsageError(BENCH_SPEC, err));
    return EX_USAGE;
  }
  const { w, connect, total } = parsed;
  const authname = p.values.authname ?? 'admin';
  let password: string | undefined = p.values.password ?? process.env.CYRSYNC_BENCH_PASSWORD;
  const { compress, json } = p.values;
  if (total !== undefined) w.messages = Math.max(1, Math.ceil(total / (w.size * w.users * w.mailboxesPerUser)));
  if (password === undefined) {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  }
  const m = /^(.*):(\d+)$/.exec(connect);
  const host = m ? m[1]! : connect;
  const port = m ? Number(m[2]) : 2005;
  const tty = process.stderr.isTTY && !json;
  const bar = (p: Progress): void => {
    if (!tty) return;
    const rate = p.bytes / 1e6 / Math.max(p.elapsedMs / 1000, 1e-3);
    const eta = rate > 0 ? (p.totalBytes - p.bytes) / 1e6 / rate : 0;
    const frac = p.totalBytes > 0 ? p.bytes / p.totalBytes : 1;
    const width = 30;
    const fill = Math.round(frac * width);
    process.stderr.write(
      `\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(p.bytes / 1e6).toFixed(1)}/${(p.totalBytes / 1e6).toFixed(1)} MB ` +
        `${rate.toFixed(1)} MB/s ETA ${eta.toFixed(0)}s  `,
    );
  };
  try {
    const summary = await runBench({
      host,
      port,
      authname,
      password,
      compress,
      workload: w,
      batchFiles: 1024,
      batchBytes: 64 * 1024 * 1024,
      onProgress: bar,
    });
    if (tty) process.stderr.write('\n');
    if (json) process.stdout.write(JSON.stringify(summary) + '\n');
    else {
      process.stdout.write(
        `${summary.messages} messages, ${(summary.messageBytes / 1e6).toFixed(1)} MB in ${summary.seconds.toFixed(2)} s: ` +
          `${summary.mbPerSecond.toFixed(1)} MB/s (${summary.commands} commands, wire out ${(summary.wireBytesOut / 1e6).toFixed(1)} MB, ` +
          `client peak RSS ${(summary.clientPeakRssKiB / 1024).toFixed(1)} MiB)\n`,
      );
    }
    return 0;
  } catch (err) {
    if (tty) process.stderr.write('\n');
    process.stderr.write(`cyrsync bench-client: ${(err as Error).message}\n`);
    return err instanceof BenchRefusedError ? 1 : 69;
  }
}
