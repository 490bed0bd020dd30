/**
 * Commands through the real parser, decoder and router into a store's
 * session, without a connection: one typed command (`routeCommand`), or a
 * recorded client stream replayed command by command (`replayInto`), each
 * reply serialized to the octets the server would send. Both stores' tests
 * use them (test/replica-helpers.ts, test/backup-sink-helpers.ts).
 */
import type { Readable } from 'node:stream';
import { pino } from 'pino';
import { DlistParserCore } from '../../transforms/dlist-parser.js';
import { encodeItemParts } from '../../transforms/serializer.js';
import type { BodySink, CommandLine, DlistFile, DlistItem } from '../../transforms/dlist-types.js';
import { decodeCommand } from '../../src/protocol/commands.js';
import type { ApplyCommand, GetCommand, RestoreCommand } from '../../src/protocol/types.js';
import { Router } from '../../src/server/router.js';
import type { SinkSession } from '../../sinks/sink.js';

export const silentLog = pino({ level: 'silent' });

export type Profile = 'sync' | 'backup';

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

export interface Routed {
  items: DlistItem[];
  status: string;
  /** the reply octets as the server would send them */
  reply: Buffer;
}

/** Runs one decoded GET/APPLY/RESTORE through the real router of `profile`. */
export async function routeCommand(
  profile: Profile,
  session: SinkSession,
  cmd: GetCommand | ApplyCommand | RestoreCommand,
  bodies: CommandLine['bodies'] = [],
): Promise<Routed> {
  const items: DlistItem[] = [];
  let status = '';
  const out = {
    data: async (it: DlistItem) => {
      items.push(it);
    },
    status: async (line: string) => {
      status = line;
    },
  };
  await new Router(profile, session, out, silentLog).run(cmd, bodies);
  return { items, status, reply: Buffer.concat([await serialize(items), Buffer.from(`${status}\r\n`, 'latin1')]) };
}

export interface Exchange {
  /** first 200 octets of the command line text, for messages */
  command: string;
  verb: string;
  sub: string | null;
  reply: Buffer;
  status: string;
}

/** What the server itself answers to a command that does not reach the store. */
async function sessionReply(session: SinkSession, cmd: ReturnType<typeof decodeCommand>): Promise<string> {
  switch (cmd.verb) {
    case 'AUTHENTICATE':
      return 'OK Success (no protection)';
    case 'COMPRESS':
      return 'OK DEFLATE active';
    case 'RESTART':
      await session.restart();
      return 'OK Restarting';
    case 'EXIT':
      await session.end();
      return 'OK Finished';
    case 'NOOP':
      return 'OK Noop completed';
    default:
      return cmd.verb === 'REFUSED' ? cmd.reply : `BAD ${cmd.verb}`;
  }
}

/** Replays a recorded client stream into a session. AUTHENTICATE/COMPRESS are answered as the recording did. */
export async function replayInto(profile: Profile, session: SinkSession, client: Buffer): Promise<Exchange[]> {
  const out: Exchange[] = [];
  for await (const line of commandLines(client, () => session.bodySink)) {
    await Promise.allSettled(line.bodies.map((b) => b.done));
    const cmd = decodeCommand(line, { profile, sieveMailbox: session.sieveMailboxMode });
    const text = `${line.verb} ${line.args.map((a) => ('value' in a && typeof a.value === 'string' ? a.value : a.kind)).join(' ')}`.slice(0, 200);
    if (cmd.verb === 'GET' || cmd.verb === 'APPLY') {
      const { reply, status } = await routeCommand(profile, session, cmd, line.bodies);
      out.push({ command: text, verb: cmd.verb, sub: cmd.sub, reply, status });
      continue;
    }
    const status = await sessionReply(session, cmd);
    out.push({ command: text, verb: cmd.verb, sub: null, reply: Buffer.from(`${status}\r\n`, 'latin1'), status });
  }
  return out;
}
