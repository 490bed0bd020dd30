/**
 * Round trip on real recordings (Cyrus 3.6.1 sync_client against the real
 * sync_server and backupd): parse each direction, re-serialize, and compare
 * octet for octet.
 * - client side, client mode (`{N+}`) and canonical backup mode, file literals streamed from their
 *   parsed bodies through the SHA-1 check: the whole stream is identical;
 * - server side, server mode (`{N}`): every `*` data line is identical, every
 *   status line is one the replies module produces, the greeting is
 *   reproduced by greetingLines();
 * - every client command decodes to a typed command (no refusal), and the
 *   backup-profile decoder accepts the backupd sessions.
 */
import test from 'ava';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { readTap } from './helpers/tap.js';
import { memoryBodySink, parseCommandLines, type MemoryStagedBody } from '../transforms/dlist-parser.js';
import { CommandWriter, ResponseWriter, serializeValue } from '../transforms/serializer.js';
import type { CommandLine, DlistValue } from '../transforms/dlist-types.js';
import { decodeCommand } from '../src/protocol/commands.js';
import {
  OK_FINISHED,
  OK_NOOP,
  OK_RESTARTING,
  greetingLines,
  okAuthenticated,
  okCompressActive,
  okSuccess,
} from '../src/protocol/replies.js';

const DIR = '/work/shared/fixtures/transcripts';
const taps = readdirSync(DIR).filter((f) => f.endsWith('.tap')).sort();

/** Give parsed file literals a source that replays their received bytes. */
function withSources(v: DlistValue): DlistValue {
  switch (v.kind) {
    case 'file': {
      const ref = (v.body as MemoryStagedBody).ref;
      return { ...v, source: () => Readable.from([ref.subarray(0, 7), ref.subarray(7)]) };
    }
    case 'list':
      return { kind: 'list', items: v.items.map(withSources) };
    case 'kvlist':
      return { kind: 'kvlist', items: v.items.map((it) => ({ key: it.key, value: withSources(it.value) })) };
    default:
      return v;
  }
}

async function drain(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function keyText(v: DlistValue): string {
  if (v.kind !== 'atom') throw new Error(`unexpected key kind ${v.kind}`);
  return v.value;
}

async function reserializeClient(lines: CommandLine[], mode: 'client' | 'canonical-client'): Promise<Buffer> {
  const w = new CommandWriter({ mode });
  const out = drain(w);
  for (const l of lines) {
    if (['GET', 'APPLY', 'RESTORE'].includes(l.verb.toUpperCase()) && l.args.length === 2) {
      await w.line(`${l.verb} `, { key: keyText(l.args[0]!), value: withSources(l.args[1]!) });
    } else {
      const args = l.args.map((a) => serializeValue(a, mode).toString('latin1'));
      await w.rawLine([l.verb, ...args].join(' '));
    }
  }
  await w.finish();
  return out;
}

for (const name of taps) {
  const profile = name.includes('backupd') ? 'backup' : 'sync';

  test(`${name}: client stream re-serializes to the same octets`, async (t) => {
    const { client } = readTap(join(DIR, name));
    const lines = parseCommandLines(client, { sink: memoryBodySink() });
    t.true(lines.length > 5);
    t.is(lines.filter((l) => l.error).length, 0);
    const again = await reserializeClient(lines, 'client');
    t.is(again.length, client.length);
    t.true(again.equals(client), 'identical octets');
    // sync_client prints canonically, so the canonical form, which
    // re-derives every string's form, gives the same octets.
    const canonical = await reserializeClient(lines, 'canonical-client');
    t.true(canonical.equals(client), 'canonical form identical');
  });

  test(`${name}: every client command decodes (${profile} profile)`, (t) => {
    const { client } = readTap(join(DIR, name));
    const lines = parseCommandLines(client, { sink: memoryBodySink() });
    const verbs = new Set<string>();
    for (const l of lines) {
      const c = decodeCommand(l, { profile, sieveMailbox: true });
      t.not(c.verb, 'REFUSED', `${l.verb} ${l.args[0] && l.args[0].kind === 'atom' ? l.args[0].value : ''}: ${c.verb === 'REFUSED' ? c.reply : ''}`);
      verbs.add('sub' in c ? `${c.verb} ${c.sub}` : c.verb);
      if (c.verb === 'APPLY' && c.sub === 'MAILBOX') t.falsy(c.mailbox.badRecord);
      if (c.verb === 'APPLY' && c.sub === 'MESSAGE') {
        t.true(c.files.length > 0);
        for (const f of c.files) t.is(f.sha1, f.guid, 'received bytes match the announced guid');
      }
    }
    t.true(verbs.has('APPLY MAILBOX'));
    t.true(verbs.has('APPLY MESSAGE'));
  });

  test(`${name}: server data lines re-serialize to the same octets; status lines are ours`, async (t) => {
    const { server } = readTap(join(DIR, name));
    const lines = parseCommandLines(server, { sink: memoryBodySink() });
    const text = server.toString('latin1');
    // Greeting: everything up to and including the `* OK` line.
    const okAt = text.indexOf('* OK ');
    const greetEnd = text.indexOf('\r\n', okAt) + 2;
    const greeting = text.slice(0, greetEnd).split('\r\n').slice(0, -1);
    const banner = /^\* OK (\S+) Cyrus (?:sync|backup) server (\S+)$/.exec(greeting.at(-1)!);
    t.truthy(banner);
    t.deepEqual(
      greetingLines({
        profile,
        hostname: banner![1]!,
        version: banner![2]!,
        sasl: ['PLAIN', 'LOGIN'],
        compress: true,
        sieveMailbox: true,
      }),
      greeting,
    );

    const statuses = new Set([
      okSuccess(profile),
      OK_NOOP,
      OK_RESTARTING,
      OK_FINISHED,
      okAuthenticated('no protection'),
      okCompressActive('DEFLATE'),
    ]);
    const w = new ResponseWriter();
    const out = drain(w);
    let expected = '';
    let data = 0;
    let pos = greetEnd;
    const greetingCount = greeting.length;
    for (const l of lines.slice(greetingCount)) {
      const end = text.indexOf('\r\n', pos) + 2;
      let lineText = text.slice(pos, end);
      if (l.verb === '*') {
        // A data line's value may hold literals with CRLF: its extent is the
        // re-serialized length, checked by the comparison below.
        t.is(l.args.length, 2);
        await w.data({ key: keyText(l.args[0]!), value: l.args[1]! });
        data++;
        const mine = Buffer.concat([Buffer.from('* '), Buffer.from(keyText(l.args[0]!)), Buffer.from(' '), serializeValue(l.args[1]!, 'server'), Buffer.from('\r\n')]);
        lineText = text.slice(pos, pos + mine.length);
        expected += lineText;
        pos += mine.length;
      } else {
        t.true(statuses.has(lineText.slice(0, -2)), `status line ${JSON.stringify(lineText)}`);
        await w.status(lineText.slice(0, -2));
        expected += lineText;
        pos = end;
      }
    }
    await w.finish();
    t.is(pos, text.length, 'every server octet accounted for');
    const again = (await out).toString('latin1');
    t.is(again, expected);
    if (name.startsWith('03') || name.startsWith('04')) t.true(data > 5, 'the incremental sessions carry data lines');
  });
}
