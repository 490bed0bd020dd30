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
import { Readable } from 'node:stream';
import type { DlistFile } from '../../transforms/dlist-types.js';
import type { ApplyCommand, GetCommand, MailboxIn, RecordIn } from '../protocol/types.js';
import { mailboxCrcs, plainCrcRecord } from '../protocol/crc.js';
import { EX_UNAVAILABLE, UsageError, defineCommand, intValue, parseCommandLine, type OptionValues } from '../cli-args.js';
import { checkUsage } from '../cli-frame.js';
import { CsyncConnection, CsyncWireError, type UploadProgress } from './csync-client.js';

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

export interface Progress extends UploadProgress {
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

/** One generated message as APPLY MAILBOX lists it. */
interface BenchRecord {
  uid: number;
  size: number;
  guid: string;
}

/** The session of one run: the commands it sends and what it counts. */
class BenchRun {
  readonly started = Date.now();
  commands = 0;
  bytes = 0;
  messagesDone = 0;
  private peakRss = 0;
  private readonly w: Workload;

  constructor(
    private readonly conn: CsyncConnection,
    private readonly opts: BenchOptions,
  ) {
    this.w = opts.workload;
  }

  private send(cmd: GetCommand | ApplyCommand): Promise<unknown> {
    this.commands++;
    return this.conn.send(cmd);
  }

  progress(): void {
    const w = this.w;
    this.peakRss = Math.max(this.peakRss, process.memoryUsage.rss());
    const totalMessages = w.users * w.mailboxesPerUser * w.messages;
    this.opts.onProgress?.({ bytes: this.bytes, totalBytes: totalMessageBytes(w), messages: this.messagesDone, totalMessages, elapsedMs: Date.now() - this.started });
  }

  /** GET USER, then each mailbox: its messages, then APPLY MAILBOX. */
  async user(user: string): Promise<void> {
    await this.send({ verb: 'GET', sub: 'USER', userid: user });
    const now = Math.floor(Date.now() / 1000);
    for (const mboxname of mailboxNames(user, this.w.mailboxesPerUser)) {
      const records = await this.uploadMessages(user, mboxname);
      await this.send({ verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: this.mailbox(user, mboxname, records, now) });
    }
  }

  /** The messages of one mailbox in APPLY MESSAGE batches of at most batchFiles files or about batchBytes octets. */
  private async uploadMessages(user: string, mboxname: string): Promise<BenchRecord[]> {
    const w = this.w;
    const records: BenchRecord[] = [];
    let batch: DlistFile[] = [];
    let batchBytes = 0;
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      await this.send({ verb: 'APPLY', sub: 'MESSAGE', files: batch });
      this.messagesDone += batch.length;
      this.bytes += batchBytes;
      batch = [];
      batchBytes = 0;
      this.progress();
    };
    for (let uid = 1; uid <= w.messages; uid++) {
      const size = Math.max(w.size, header(user, mboxname, uid, w.seed).length);
      const make = (): Readable => messageStream(user, mboxname, uid, size, w.seed);
      const guid = await sha1Of(make());
      records.push({ uid, size, guid });
      batch.push({ kind: 'file', partition: w.partition, guid, size, source: make });
      batchBytes += size;
      if (batch.length >= this.opts.batchFiles || batchBytes >= this.opts.batchBytes) await flush();
    }
    await flush();
    return records;
  }

  /** The APPLY MAILBOX of a new mailbox holding `records`, each with modseq uid+1 and no flags. */
  private mailbox(user: string, mboxname: string, records: BenchRecord[], now: number): MailboxIn {
    const w = this.w;
    const recs = records.map((r): RecordIn => ({ uid: r.uid, modseq: BigInt(r.uid + 1), lastUpdated: now, flags: [], internaldate: now, size: r.size, guid: r.guid, annotations: null }));
    // The basic CRC is checked by the server; the annotation CRC is left to
    // the zero wildcard (a replica may add synthetic annotations of its own).
    const crcs = mailboxCrcs(recs.map((r) => plainCrcRecord({ uid: r.uid, modseq: r.modseq, lastUpdated: r.lastUpdated, internaldate: r.internaldate, guid: r.guid })));
    return {
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
      records: recs,
    };
  }

  summary(): BenchSummary {
    const { opts, w } = this;
    const seconds = (Date.now() - this.started) / 1000;
    this.progress();
    return {
      host: opts.host,
      port: opts.port,
      compress: opts.compress,
      users: w.users,
      mailboxes: w.users * w.mailboxesPerUser,
      messages: this.messagesDone,
      messageBytes: this.bytes,
      wireBytesOut: this.conn.wireOut,
      wireBytesIn: this.conn.wireIn,
      commands: this.commands,
      seconds,
      mbPerSecond: this.bytes / 1e6 / Math.max(seconds, 1e-9),
      clientPeakRssKiB: Math.round(this.peakRss / 1024),
    };
  }
}

/**
 * Logs in (PLAIN; COMPRESS DEFLATE with `compress`, required then), sends
 * the workload, says EXIT. A NO or BAD ends it with a CsyncWireError whose
 * `refusal` is set.
 */
export async function runBench(opts: BenchOptions): Promise<BenchSummary> {
  const { host, port, authname, password, compress } = opts;
  const conn = await CsyncConnection.connect({ host, port, authname, password, compress, requireCompression: compress, starttls: false });
  const run = new BenchRun(conn, opts);
  // The summary counts AUTHENTICATE and EXIT among the commands.
  run.commands++;
  try {
    for (let u = 1; u <= opts.workload.users; u++) await run.user(`${opts.workload.userPrefix}${u}`);
    run.commands++;
    await conn.exit();
  } finally {
    conn.close();
  }
  return run.summary();
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

/** The workload of options not given: written once, for benchArgs and for the help. */
const DEFAULT_WORKLOAD: Workload = { users: 1, mailboxesPerUser: 1, messages: 100, size: 4096, seed: 1, userPrefix: 'bench', partition: 'default' };

/** The option of one workload setting; its help ends with the default. */
function workloadOption(long: string, value: string, help: string, dflt: string | number) {
  return { long, type: 'string', value, help: `${help} (default ${dflt})` } as const;
}

const D = DEFAULT_WORKLOAD;

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
    users: workloadOption('users', 'N', 'users', D.users),
    mailboxes: workloadOption('mailboxes', 'N', 'mailboxes per user, INBOX included', D.mailboxesPerUser),
    messages: workloadOption('messages', 'N', 'messages per mailbox', D.messages),
    size: workloadOption('size', 'S', 'message size, e.g. 4k, 20M, 1G', `${D.size / 1024}k`),
    total: { long: 'total', type: 'string', value: 'S', help: 'total message octets, e.g. 5G (sets --messages from --size)' },
    userPrefix: workloadOption('user-prefix', 'P', 'user names P1, P2, ...', D.userPrefix),
    seed: workloadOption('seed', 'N', 'generator seed, another seed gives other messages', D.seed),
    partition: workloadOption('partition', 'P', 'partition name sent', D.partition),
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
    users: int('--users', v.users, D.users),
    mailboxesPerUser: int('--mailboxes', v.mailboxes, D.mailboxesPerUser),
    messages: int('--messages', v.messages, D.messages),
    size: v.size === undefined ? D.size : size('--size', v.size),
    seed: int('--seed', v.seed, D.seed),
    userPrefix: v.userPrefix ?? D.userPrefix,
    partition: v.partition ?? D.partition,
  };
  return { w, connect: v.connect, total: v.total === undefined ? undefined : size('--total', v.total) };
}

export async function runBenchClient(argv: string[]): Promise<number> {
  const p = parseCommandLine(BENCH_SPEC, argv);
  if (typeof p === 'number') return p;
  const parsed = checkUsage(BENCH_SPEC, {}, () => benchArgs(p.values));
  if (typeof parsed === 'number') return parsed;
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
    return err instanceof CsyncWireError && err.refusal ? 1 : EX_UNAVAILABLE;
  }
}
