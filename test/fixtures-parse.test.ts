/**
 * Real sessions of the Cyrus 3.6.1 sync_client with the real sync_server and
 * backupd (test/fixtures/transcripts, both directions). The expected facts
 * (command counts, literal octet totals, OK counts) are those reported for
 * the same files by the capture tooling's independent reader (peer_wire.py
 * summary).
 */
import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  CommandReader,
  DlistParserCore,
  Framer,
  memoryBodySink,
  parseCommandLines,
  type CommandLine,
  type DlistValue,
  type LiteralHeader,
  type LiteralBody,
} from '../transforms/index.js';
import { readTap } from './helpers/tap.js';

const DIR = join(import.meta.dirname, 'fixtures', 'transcripts');

interface Facts {
  commands: Record<string, number>;
  literalOctets: number;
  fileLiterals: number;
  applyMessageFiles: number;
  ok: number;
}

const FACTS: Record<string, Facts> = {
  '01-full-replica.tap': {
    commands: { AUTHENTICATE: 1, COMPRESS: 1, 'APPLY CAPABILITIES': 1, 'GET USER': 1, 'APPLY MESSAGE': 4, 'APPLY MAILBOX': 9, 'APPLY QUOTA': 1, 'APPLY SUB': 5, EXIT: 1 },
    literalOctets: 15020, fileLiterals: 10, applyMessageFiles: 10, ok: 24,
  },
  '02-full-backupd.tap': {
    commands: { AUTHENTICATE: 1, COMPRESS: 1, 'GET USER': 1, 'APPLY MESSAGE': 3, 'APPLY MAILBOX': 8, 'APPLY QUOTA': 1, 'APPLY SUB': 5, 'APPLY SIEVE': 1, 'APPLY ACTIVATE_SIEVE': 1, EXIT: 1 },
    literalOctets: 14704, fileLiterals: 9, applyMessageFiles: 9, ok: 23,
  },
  '03-incremental-replica.tap': {
    commands: { AUTHENTICATE: 1, COMPRESS: 1, 'APPLY CAPABILITIES': 1, 'GET USER': 2, 'APPLY RESERVE': 2, 'APPLY RENAME': 2, 'APPLY MESSAGE': 1, 'APPLY MAILBOX': 3, 'APPLY SUB': 1, 'APPLY UNSUB': 2, EXIT: 1 },
    literalOctets: 24870, fileLiterals: 3, applyMessageFiles: 3, ok: 17,
  },
  '04-incremental-backupd.tap': {
    commands: { AUTHENTICATE: 1, COMPRESS: 1, 'GET USER': 2, 'APPLY RESERVE': 2, 'APPLY RENAME': 2, 'APPLY MESSAGE': 1, 'APPLY MAILBOX': 3, 'APPLY QUOTA': 1, 'APPLY SUB': 1, 'APPLY UNSUB': 2, 'APPLY ACTIVATE_SIEVE': 1, EXIT: 1 },
    literalOctets: 24870, fileLiterals: 3, applyMessageFiles: 3, ok: 18,
  },
};

type File = Extract<DlistValue, { kind: 'file' }>;

function walk(v: DlistValue, f: (v: DlistValue) => void): void {
  f(v);
  if (v.kind === 'list') v.items.forEach((x) => walk(x, f));
  else if (v.kind === 'kvlist') v.items.forEach((x) => walk(x.value, f));
}

function key(c: CommandLine): string {
  const sub = c.args[0];
  return (c.verb === 'GET' || c.verb === 'APPLY') && sub?.kind === 'atom' ? `${c.verb} ${sub.value}` : c.verb;
}

function stats(cs: CommandLine[]) {
  const commands: Record<string, number> = {};
  let literalOctets = 0;
  const files: File[] = [];
  let applyMessageFiles = 0;
  for (const c of cs) {
    commands[key(c)] = (commands[key(c)] ?? 0) + 1;
    for (const a of c.args) {
      walk(a, (v) => {
        if (v.kind === 'file') {
          files.push(v);
          literalOctets += v.size;
          if (key(c) === 'APPLY MESSAGE') applyMessageFiles++;
        } else if (v.kind === 'literal') literalOctets += v.value.length;
        else if (v.kind === 'bigliteral') literalOctets += v.size;
      });
    }
  }
  return { commands, literalOctets, files, applyMessageFiles };
}

const taps = readdirSync(DIR).filter((f) => f.endsWith('.tap')).sort();

test('all four recorded sessions are present', (t) => {
  t.deepEqual(taps, Object.keys(FACTS));
});

for (const name of taps) {
  const facts = FACTS[name]!;

  test(`${name}: client commands parse, file literal SHA-1 equals its GUID`, (t) => {
    const { client } = readTap(join(DIR, name));
    const cs = parseCommandLines(client, { sink: memoryBodySink() });
    t.deepEqual(cs.filter((c) => c.error).map((c) => c.error!.message), []);
    const s = stats(cs);
    t.deepEqual(s.commands, facts.commands);
    t.is(s.literalOctets, facts.literalOctets);
    t.is(s.files.length, facts.fileLiterals);
    t.is(s.applyMessageFiles, facts.applyMessageFiles);
    for (const f of s.files) {
      t.is(f.sha1, f.guid);
      t.is(f.partition, 'default');
      t.is((f.body!.ref as Buffer).length, f.size);
    }
    t.is(cs[0]!.verb, 'AUTHENTICATE');
    t.is(cs.at(-1)!.verb, 'EXIT');
  });

  test(`${name}: server lines parse: data lines, one status line per command`, (t) => {
    const { client, server } = readTap(join(DIR, name));
    const ss = parseCommandLines(server);
    t.deepEqual(ss.filter((c) => c.error).map((c) => c.error!.message), []);
    const status = ss.filter((c) => c.verb !== '*');
    t.true(status.every((c) => c.verb === 'OK'));
    t.is(status.length, facts.ok);
    // The banner is answered by no command; every command gets one status line.
    t.is(status.length, parseCommandLines(client).length);
    const data = ss.filter((c) => c.verb === '*');
    t.true(data.some((c) => c.args[0]?.kind === 'atom' && c.args[0].value === 'OK'));
  });

  test(`${name}: CommandReader fed the recorded chunks gives the same commands`, async (t) => {
    const tap = readTap(join(DIR, name));
    const expected = parseCommandLines(tap.client, { sink: memoryBodySink() });
    const reader = new CommandReader({ sink: memoryBodySink() });
    Readable.from(tap.chunks.filter((c) => c.dir === 'C').map((c) => c.data)).pipe(reader);
    const got: CommandLine[] = [];
    for await (const c of reader) got.push(c);
    const plain = (cs: CommandLine[]) => JSON.stringify(cs, (_k, v: unknown) => (v instanceof Promise ? 'done' : v));
    t.is(plain(got), plain(expected));
  });

  test(`${name}: the generic Framer sees the same literal bodies`, async (t) => {
    const { client } = readTap(join(DIR, name));
    const framer = new Framer();
    const bodies: { h: LiteralHeader; data: Buffer }[] = [];
    let lines = 0;
    framer.on('line', (_text: Buffer, h: LiteralHeader | null) => {
      if (h === null) lines++;
    });
    framer.on('literal', (h: LiteralHeader, body: LiteralBody) => {
      const parts: Buffer[] = [];
      body.on('data', (c: Buffer) => parts.push(c));
      body.on('end', () => bodies.push({ h, data: Buffer.concat(parts) }));
    });
    framer.end(client);
    await new Promise((resolve) => framer.on('finish', resolve));
    t.is(bodies.reduce((n, b) => n + b.data.length, 0), facts.literalOctets);
    t.is(bodies.filter((b) => b.h.kind === 'file').length, facts.fileLiterals);
    t.true(bodies.every((b) => b.data.length === b.h.size));
    t.is(lines, Object.values(facts.commands).reduce((a, b) => a + b, 0));
  });
}

/** A compact, complete rendering of a value (bodies by size and SHA-1). */
function render(v: DlistValue): string {
  switch (v.kind) {
    case 'list':
      return '(' + v.items.map(render).join(' ') + ')';
    case 'kvlist':
      return '%(' + v.items.map((i) => `${JSON.stringify(i.key)} ${render(i.value)}`).join(' ') + ')';
    case 'literal':
      return `{${JSON.stringify(v.value.toString('latin1'))}}`;
    case 'bigliteral':
      return `{big ${v.size} ${v.sha1}}`;
    case 'file':
      return `%{${v.partition} ${v.guid} ${v.size} ${v.sha1}}`;
    case 'nil':
      return 'NIL';
    default:
      return `${v.kind}:${JSON.stringify((v as { value: unknown }).value)}`;
  }
}

/** A digest of everything the parser produced, bodies skipped (file SHA-1 still computed). */
function digestChunks(chunks: Buffer[]): string {
  const h = createHash('sha1');
  const core = new DlistParserCore({
    onCommand: (c) => h.update(`${c.verb} ${c.args.map(render).join(' ')} ${c.error?.message ?? ''}\n`),
  });
  for (const c of chunks) {
    let done = core.push(c);
    while (!done) done = core.resume();
  }
  core.end();
  return h.digest('hex');
}

test('a whole recorded session split at every offset (2 pieces): identical output', (t) => {
  const { client } = readTap(join(DIR, '03-incremental-replica.tap'));
  const whole = digestChunks([client]);
  let same = 0;
  for (let i = 0; i <= client.length; i++) {
    if (digestChunks([client.subarray(0, i), client.subarray(i)]) === whole) same++;
  }
  t.is(same, client.length + 1);
});

test('recorded sessions in random chunkings (fast-check): identical output', (t) => {
  const streams = taps.map((n) => readTap(join(DIR, n)).client);
  const wholes = streams.map((s) => digestChunks([s]));
  t.notThrows(() => fc.assert(fc.property(
    fc.integer({ min: 0, max: streams.length - 1 }),
    fc.array(fc.integer({ min: 1, max: 4096 }), { minLength: 1, maxLength: 30 }),
    (k, sizes) => {
      const s = streams[k]!;
      const chunks: Buffer[] = [];
      for (let p = 0, i = 0; p < s.length; i++) {
        const n = sizes[i % sizes.length]!;
        chunks.push(s.subarray(p, p + n));
        p += n;
      }
      return digestChunks(chunks) === wholes[k];
    },
  ), { numRuns: 200 }));
});
