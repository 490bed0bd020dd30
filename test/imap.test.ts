/**
 * The transforms on real IMAP traffic: a session with a real Cyrus 3.6.1
 * imapd recorded by test/helpers/imap-record.ts into
 * test/fixtures/imap/append-fetch.tap (APPEND with `{N}` and `{N+}`, FETCH
 * BODY[] and header-field FETCH responses). Message bodies contain
 * literal-looking `{12}` line ends, which must stay body octets.
 */
import test from 'ava';
import fc from 'fast-check';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Framer, type LiteralBody, type LiteralHeader } from '../transforms/index.js';
import { appendedMessages } from './helpers/imap-record.js';
import { readTap } from './helpers/tap.js';

const TAP = readTap(join(import.meta.dirname, 'fixtures', 'imap', 'append-fetch.tap'));
const [M1, M2] = appendedMessages() as [Buffer, Buffer];

interface Framed {
  lines: string[];
  literals: { line: string; header: LiteralHeader; body: Buffer }[];
  continuations: LiteralHeader[];
}

/** IMAP use: no csync file literals; `~{N}` allowed; continuation offered for `{N}`. */
async function frameImap(chunks: Buffer[]): Promise<Framed> {
  const out: Framed = { lines: [], literals: [], continuations: [] };
  const framer = new Framer({ fileLiterals: false, onContinuation: (h) => out.continuations.push(h) });
  let current = '';
  framer.on('line', (text: Buffer, h: LiteralHeader | null) => {
    current += text.toString('latin1');
    if (h === null) {
      out.lines.push(current);
      current = '';
    }
  });
  framer.on('literal', (header: LiteralHeader, body: LiteralBody) => {
    const line = current;
    const parts: Buffer[] = [];
    body.on('data', (c: Buffer) => parts.push(c));
    body.on('end', () => out.literals.push({ line, header, body: Buffer.concat(parts) }));
  });
  await pipeline(Readable.from(chunks), framer);
  return out;
}

test('client side: APPEND literals are the exact messages; continuation only for the synchronizing one', async (t) => {
  const f = await frameImap(TAP.chunks.filter((c) => c.dir === 'C').map((c) => c.data));
  t.is(f.literals.length, 2);
  const [a, b] = f.literals as [Framed['literals'][0], Framed['literals'][0]];
  t.regex(a.line, /^a3 APPEND INBOX \(\\Seen\) $/);
  t.deepEqual(a.header, { kind: 'literal', size: M1.length, nonSynchronizing: false, binary: false });
  t.true(a.body.equals(M1));
  t.regex(b.line, /^a4 APPEND INBOX $/);
  t.deepEqual(b.header, { kind: 'literal', size: M2.length, nonSynchronizing: true, binary: false });
  t.true(b.body.equals(M2));
  t.deepEqual(f.continuations, [a.header]);
  t.deepEqual(f.lines.map((l) => l.split(' ').slice(0, 2).join(' ')), ['a1 LOGIN', 'a2 SELECT', 'a3 APPEND', 'a4 APPEND', 'a5 FETCH', 'a6 FETCH', 'a7 LOGOUT']);
});

test('replayed in recorded order, the continuation hook fires exactly where Cyrus sent "+ go ahead"', async (t) => {
  // Feed the client chunks one by one as a server would receive them; after
  // each, the server's next recorded chunk starts with "+ " iff the hook fired.
  const framer = new Framer({ fileLiterals: false, onContinuation: () => fired++ });
  framer.on('literal', (_h: LiteralHeader, body: LiteralBody) => body.resume());
  let fired = 0;
  let checked = 0;
  const chunks = TAP.chunks;
  for (let i = 0; i < chunks.length; i++) {
    const c = chunks[i]!;
    if (c.dir !== 'C') continue;
    const before = fired;
    await new Promise<void>((resolve, reject) => framer.write(c.data, (err) => (err ? reject(err) : resolve())));
    const nextServer = chunks.slice(i + 1).find((x) => x.dir === 'S');
    if (fired > before) {
      t.true(nextServer!.data.toString('latin1').startsWith('+ '));
      checked++;
    } else if (nextServer) {
      t.false(nextServer.data.toString('latin1').startsWith('+ '));
    }
  }
  framer.end();
  t.is(checked, 1);
});

test('server side: FETCH BODY[] literals match RFC822.SIZE and the appended bytes', async (t) => {
  const f = await frameImap(TAP.chunks.filter((c) => c.dir === 'S').map((c) => c.data));
  const bodies = f.literals.filter((l) => /BODY\[\] $/.test(l.line));
  t.is(bodies.length, 5);
  for (const l of bodies) {
    const m = /^\* (\d+) FETCH \(UID (\d+) RFC822\.SIZE (\d+) BODY\[\] $/.exec(l.line);
    t.truthy(m, l.line);
    t.is(Number(m![3]), l.header.size);
    t.is(l.body.length, l.header.size);
    if (m![2] === '4') t.true(l.body.equals(M1));
    if (m![2] === '5') t.true(l.body.equals(M2));
  }
  t.deepEqual(bodies.map((l) => /UID (\d+)/.exec(l.line)![1]), ['1', '2', '3', '4', '5']);
  const subjects = f.literals.filter((l) => /HEADER\.FIELDS \(SUBJECT\)\] $/.test(l.line));
  t.is(subjects.length, 5);
  t.true(subjects.every((l) => l.body.toString('latin1').startsWith('Subject: ')));
  // A server sends only synchronizing-form literals (it never waits, the hook just sees them all).
  t.true(f.literals.every((l) => !l.header.nonSynchronizing));
  t.is(f.continuations.length, f.literals.length);
  t.true(f.lines.includes('+ go ahead'));
  t.true(f.lines.some((l) => l.startsWith('a7 OK')));
});

test('server side in random chunkings (fast-check): same lines and literals', async (t) => {
  const whole = await frameImap([TAP.server]);
  await fc.assert(fc.asyncProperty(fc.array(fc.integer({ min: 64, max: 20000 }), { minLength: 1, maxLength: 10 }), async (sizes) => {
    const chunks: Buffer[] = [];
    for (let p = 0, i = 0; p < TAP.server.length; i++) {
      const n = sizes[i % sizes.length]!;
      chunks.push(TAP.server.subarray(p, p + n));
      p += n;
    }
    t.deepEqual(await frameImap(chunks), whole);
  }), { numRuns: 50 });
});
