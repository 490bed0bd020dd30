/**
 * Shared helpers of the replica tests: temporary stores, .tap recordings
 * split by direction, and a replay of recorded client commands through the
 * real parser, decoder and router into a replica session.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { pino } from 'pino';
import { DlistParserCore } from '../transforms/dlist-parser.js';
import { encodeItemParts } from '../transforms/serializer.js';
import type { CommandLine, DlistFile, DlistItem, BodySink } from '../transforms/dlist-types.js';
import { decodeCommand } from '../src/protocol/commands.js';
import { Router } from '../src/server/router.js';
import type { ApplyCommand, GetCommand, MailboxIn, RecordIn } from '../src/protocol/types.js';
import { createReplicaSink, type ReplicaSink, type ReplicaStoreOptions } from '../sinks/replica/index.js';
import type { ReplicaSession } from '../sinks/replica/session.js';
import { mailboxIn as baseMailboxIn, stageFiles } from './helpers/store-input.js';

export const TRANSCRIPTS = '/work/shared/fixtures/transcripts';

export interface TempStore {
  dir: string;
  configdirectory: string;
  partitions: Record<string, string>;
  sink: ReplicaSink;
}

export async function tempStore(extra: Partial<ReplicaStoreOptions> = {}, dir?: string): Promise<TempStore> {
  const root = dir ?? mkdtempSync(path.join(tmpdir(), 'cyrsync-replica-'));
  const configdirectory = path.join(root, 'conf');
  const partitions = { default: path.join(root, 'spool') };
  const sink = await createReplicaSink({ configdirectory, partitions, fsync: false, ...extra });
  return { dir: root, configdirectory, partitions, sink };
}

export function openSession(sink: ReplicaSink): ReplicaSession {
  return sink.openSession({ authUser: 'admin', peer: 'test' });
}

/** Both directions of a .tap recording, markers removed. */
export function tapStreams(file: string): { client: Buffer; server: Buffer } {
  const data = readFileSync(file);
  const text = data.toString('latin1');
  const mark = /([<>])(\d{9,11})\1/g;
  const marks: { dir: string; start: number; end: number }[] = [];
  let m: RegExpExecArray | null;
  while ((m = mark.exec(text))) marks.push({ dir: m[1]!, start: m.index, end: mark.lastIndex });
  const c: Buffer[] = [];
  const s: Buffer[] = [];
  for (let i = 0; i < marks.length; i++) {
    const body = data.subarray(marks[i]!.end, i + 1 < marks.length ? marks[i + 1]!.start : data.length);
    (marks[i]!.dir === '>' ? c : s).push(body);
  }
  return { client: Buffer.concat(c), server: Buffer.concat(s) };
}

/**
 * Server responses in order, banner skipped: each is the data lines plus the
 * status line, literals included, as exact octets.
 */
export function serverResponses(server: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  let start = 0;
  let inBanner = true;
  let lineStart = 0;
  while (pos < server.length) {
    const nl = server.indexOf('\n', pos);
    const end = nl < 0 ? server.length : nl + 1;
    const seg = server.subarray(pos, end).toString('latin1');
    const lit = /(?:\{(\d+)\+?\}|%\{\S+ \S+ (\d+)\})\r\n$/.exec(seg);
    if (lit) {
      // the logical line goes on after the literal's octets (plain or file literal)
      pos = end + Number(lit[1] ?? lit[2]);
      continue;
    }
    const line = server.subarray(lineStart, end).toString('latin1');
    pos = end;
    lineStart = end;
    if (inBanner) {
      if (line.startsWith('* OK ')) {
        inBanner = false;
        start = pos;
      }
      continue;
    }
    if (!line.startsWith('* ')) {
      out.push(server.subarray(start, pos));
      start = pos;
    }
  }
  return out;
}

/** Command lines of a client stream, one at a time (bodies staged into `sink` as they are parsed). */
export async function* commandLines(buf: Buffer, sink: () => BodySink | null): AsyncGenerator<CommandLine> {
  const queue: CommandLine[] = [];
  const core: DlistParserCore = new DlistParserCore({
    sink: sink(),
    onCommand: (c) => {
      queue.push(c);
      core.pause();
    },
  });
  let done = core.push(buf);
  for (;;) {
    while (queue.length > 0) yield queue.shift()!;
    if (done) break;
    const blocked = core.blockedOn;
    if (blocked) await new Promise<void>((r) => blocked.onDrain(r));
    core.sink = sink();
    done = core.resume();
  }
  while (queue.length > 0) yield queue.shift()!;
  core.end();
}

async function readAll(src: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of src) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks);
}

/** Serializes data lines as the server writes them (file literals streamed from their source). */
export async function serialize(items: DlistItem[]): Promise<Buffer> {
  const out: Buffer[] = [];
  for (const it of items) {
    for (const p of encodeItemParts(it, 'server')) {
      if (Buffer.isBuffer(p)) out.push(p);
      else out.push(await readAll((p as DlistFile).source!())); // the header is already in the preceding part
    }
  }
  return Buffer.concat(out);
}

export interface Exchange {
  /** first 200 octets of the command line text, for messages */
  command: string;
  verb: string;
  sub: string | null;
  reply: Buffer;
  status: string;
}

export const silentLog = pino({ level: 'silent' });

/** Runs one decoded GET/APPLY through the real router; returns the reply octets. */
export async function runCommand(session: ReplicaSession, cmd: GetCommand | ApplyCommand): Promise<{ items: DlistItem[]; status: string; reply: Buffer }> {
  const items: DlistItem[] = [];
  let status = '';
  const router = new Router('sync', session, {
    data: async (it) => {
      items.push(it);
    },
    status: async (line) => {
      status = line;
    },
  }, silentLog);
  await router.run(cmd, []);
  const reply = Buffer.concat([await serialize(items), Buffer.from(`${status}\r\n`, 'latin1')]);
  return { items, status, reply };
}

/** Replays a recorded client stream into a session. AUTHENTICATE/COMPRESS are answered as the recording did. */
export async function replay(session: ReplicaSession, client: Buffer): Promise<Exchange[]> {
  const out: Exchange[] = [];
  for await (const line of commandLines(client, () => session.bodySink)) {
    await Promise.allSettled(line.bodies.map((b) => b.done));
    const cmd = decodeCommand(line, { profile: 'sync', sieveMailbox: session.sieveMailboxMode });
    const text = `${line.verb} ${line.args.map((a) => ('value' in a && typeof a.value === 'string' ? a.value : a.kind)).join(' ')}`.slice(0, 200);
    if (cmd.verb === 'GET' || cmd.verb === 'APPLY') {
      const items: DlistItem[] = [];
      let status = '';
      const router = new Router('sync', session, {
        data: async (it) => {
          items.push(it);
        },
        status: async (l) => {
          status = l;
        },
      }, silentLog);
      await router.run(cmd, line.bodies);
      const reply = Buffer.concat([await serialize(items), Buffer.from(`${status}\r\n`, 'latin1')]);
      out.push({ command: text, verb: cmd.verb, sub: cmd.sub, reply, status });
      continue;
    }
    let status: string;
    switch (cmd.verb) {
      case 'AUTHENTICATE':
        status = 'OK Success (no protection)';
        break;
      case 'COMPRESS':
        status = 'OK DEFLATE active';
        break;
      case 'RESTART':
        await session.restart();
        status = 'OK Restarting';
        break;
      case 'EXIT':
        await session.end();
        status = 'OK Finished';
        break;
      case 'NOOP':
        status = 'OK Noop completed';
        break;
      default:
        status = cmd.verb === 'REFUSED' ? cmd.reply : `BAD ${cmd.verb}`;
    }
    out.push({ command: text, verb: cmd.verb, sub: null, reply: Buffer.from(`${status}\r\n`, 'latin1'), status });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Hand-built commands

export const sha1 = (b: Buffer): string => createHash('sha1').update(b).digest('hex');

export function message(n: number, extra = ''): Buffer {
  return Buffer.from(
    `From: a${n}@example.org\r\nTo: bob@example.org\r\nSubject: message ${n}${extra}\r\nMessage-ID: <m${n}@x>\r\n\r\nbody ${n}\r\n`,
    'latin1',
  );
}

/** Streams `bodies` through the session's body sink as file literals (as the parser would). */
export function stage(session: ReplicaSession, bodies: Buffer[], opts: { guids?: string[]; split?: number } = {}): Promise<DlistFile[]> {
  return stageFiles(session.bodySink, bodies, { ...opts, split: opts.split ?? 7 });
}

export function mailboxIn(p: Partial<MailboxIn> & { uniqueid: string; mboxname: string }): MailboxIn {
  return baseMailboxIn({ createdmodseq: 1n, foldermodseq: 1n, ...p });
}

export function recordIn(uid: number, body: Buffer, p: Partial<RecordIn> = {}): RecordIn {
  return {
    uid,
    modseq: BigInt(uid + 1),
    lastUpdated: 1700000100 + uid,
    flags: [],
    internaldate: 1700000000 + uid,
    size: body.length,
    guid: sha1(body),
    annotations: null,
    ...p,
  };
}
