/**
 * FramerCore and the Framer Writable. Invariants under test:
 * - segments and bodies are identical whatever the chunking;
 * - headers are recognised only at the end of a physical line and at a token
 *   start; `{N}`, `{N+}`, `~{N}`, `%{part guid N}` (LF with optional CR);
 * - refused or abandoned bodies are consumed by counting, keeping sync;
 * - a slow body reader withholds the write callback (bounded buffering);
 * - truncation is "Unexpected end of data"; destroy releases everything.
 */
import test from 'ava';
import fc from 'fast-check';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import {
  Framer,
  FramerCore,
  FramingError,
  type FramerOptions,
  type LiteralHeader,
  type LiteralBody,
} from '../transforms/index.js';

const bin = (s: string) => Buffer.from(s, 'latin1');

type Event = ['seg', string, LiteralHeader | null] | ['body', string] | ['end'];

/** Run the core over chunks; bodies are joined so chunking does not show. */
function frame(chunks: Buffer[], opts: FramerOptions = {}, skip?: (h: LiteralHeader) => boolean): Event[] {
  const out: Event[] = [];
  let body: Buffer[] | null = null;
  const core = new FramerCore({
    onSegment(text, literal) {
      out.push(['seg', text.toString('latin1'), literal]);
      if (literal !== null) body = [];
      if (literal !== null && skip?.(literal)) return 'skip';
    },
    onBodyData(chunk) {
      body!.push(Buffer.from(chunk));
    },
    onBodyEnd() {
      out.push(['body', Buffer.concat(body!).toString('latin1')]);
      body = null;
      out.push(['end']);
    },
  }, opts);
  for (const c of chunks) t_push(core, c);
  core.end();
  return out;
}

function t_push(core: FramerCore, c: Buffer): void {
  let done = core.push(c);
  while (!done) done = core.resume();
}

const lit = (size: number, nonSynchronizing: boolean, binary = false): LiteralHeader =>
  ({ kind: 'literal', size, nonSynchronizing, binary });

test('lines, IMAP literals and binary literals', (t) => {
  const ev = frame([bin('A1 NOOP\r\nA2 APPEND INBOX (\\Seen) {5}\r\nhello ~{3+}\r\n\0\r\n)\nA3 X\n')]);
  t.deepEqual(ev, [
    ['seg', 'A1 NOOP', null],
    ['seg', 'A2 APPEND INBOX (\\Seen) ', lit(5, false)],
    ['body', 'hello'],
    ['end'],
    ['seg', ' ', lit(3, true, true)],
    ['body', '\0\r\n'],
    ['end'],
    ['seg', ')', null],
    ['seg', 'A3 X', null],
  ]);
});

test('file literal: LF with optional CR, no CRLF after the data', (t) => {
  const ev = frame([bin('APPLY MESSAGE (%{default abc 4}\nabcd %{"p" def 2}\r\nxy)\r\n')]);
  t.deepEqual(ev, [
    ['seg', 'APPLY MESSAGE (', { kind: 'file', size: 4, nonSynchronizing: true, binary: false, partition: 'default', guid: 'abc' }],
    ['body', 'abcd'],
    ['end'],
    ['seg', ' ', { kind: 'file', size: 2, nonSynchronizing: true, binary: false, partition: 'p', guid: 'def' }],
    ['body', 'xy'],
    ['end'],
    ['seg', ')', null],
  ]);
});

test('headers only at a token start and at the end of the line; options switch kinds off', (t) => {
  const ev = frame([bin('X foo{5}\r\nY {5} z\r\nZ %{a b}\r\nW %{a b c 1}\r\nV a%{p g 1}\r\n')]);
  t.deepEqual(ev.map((e) => e[0] === 'seg' ? [e[1], e[2]] : e), [
    ['X foo{5}', null], ['Y {5} z', null], ['Z %{a b}', null], ['W %{a b c 1}', null], ['V a%{p g 1}', null],
  ]);
  t.deepEqual(frame([bin('A ~{1}\r\n')], { binaryLiterals: false }), [['seg', 'A ~{1}', null]]);
  t.deepEqual(frame([bin('A %{p g 1}\r\n')], { fileLiterals: false }), [['seg', 'A %{p g 1}', null]]);
  t.deepEqual(frame([bin('{0}\r\n(x {0+}\r\n)\r\n')]), [
    ['seg', '', lit(0, false)], ['body', ''], ['end'],
    ['seg', '(x ', lit(0, true)], ['body', ''], ['end'], ['seg', ')', null],
  ]);
});

test("'skip' at the header: body consumed by counting, framing stays in sync", (t) => {
  const ev = frame([bin('A APPEND X {10}\r\nB NOOP\r\n\r\nC NOOP\r\n')], {}, () => true);
  t.deepEqual(ev, [['seg', 'A APPEND X ', lit(10, false)], ['body', ''], ['end'], ['seg', 'C NOOP', null]]);
});

const SAMPLE = bin('* 1 FETCH (UID 7 BODY[] {12}\r\nHello\r\nWorld)\r\nA1 OK done\r\n' +
  'APPLY MESSAGE (%{default abc 7}\nab\r\n{3} %{p q 0}\r\n)\r\nA2 APPEND B ~{4+}\r\n\0\0\r\n\r\n');

test('split at every offset (2 pieces): identical segments and bodies', (t) => {
  const whole = frame([SAMPLE]);
  t.true(whole.length > 10);
  for (let i = 0; i <= SAMPLE.length; i++) {
    t.deepEqual(frame([SAMPLE.subarray(0, i), SAMPLE.subarray(i)]), whole, `split at ${i}`);
  }
});

test('random chunkings (fast-check): identical segments and bodies', (t) => {
  const whole = frame([SAMPLE]);
  fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 60 }), (sizes) => {
    const chunks: Buffer[] = [];
    let p = 0;
    for (let k = 0; p < SAMPLE.length; k++) {
      const n = sizes[k % sizes.length]!;
      chunks.push(SAMPLE.subarray(p, p + n));
      p += n;
    }
    t.deepEqual(frame(chunks), whole);
  }), { numRuns: 300 });
});

test('maxLineLength at the framer: N passes, N+1 fails without waiting for LF', (t) => {
  const N = 20;
  t.notThrows(() => frame([bin('x'.repeat(N) + '\r\n')], { limits: { maxLineLength: N } }));
  const core = new FramerCore({ onSegment: () => undefined, onBodyData: () => true, onBodyEnd: () => undefined },
    { limits: { maxLineLength: N } });
  core.push(bin('x'.repeat(N)));
  const err = t.throws(() => core.push(bin('yy')), { instanceOf: FramingError });
  t.deepEqual([err!.code, err!.limit, err!.actual, err!.max], ['IMAP_PROTOCOL_ERROR', 'maxLineLength', N + 2, N]);
  t.throws(() => core.push(bin('\n')), { is: err });
});

test('literal size limits at the header, before the body', (t) => {
  const segs: unknown[] = [];
  const mk = () => new FramerCore({ onSegment: (s) => void segs.push(s), onBodyData: () => t.fail(), onBodyEnd: () => t.fail() },
    { limits: { maxLiteralSize: 9, maxFileLiteralSize: 99 } });
  t.is(t.throws(() => mk().push(bin('A ~{10+}\r\n')), { instanceOf: FramingError })!.code, 'IMAP_LITERAL_MINUS_TOO_LARGE');
  t.is(t.throws(() => mk().push(bin('A {10+}\r\n')), { instanceOf: FramingError })!.code, 'IMAP_LITERAL_MINUS_TOO_LARGE');
  t.is(t.throws(() => mk().push(bin('A %{p g 100}\n')), { instanceOf: FramingError })!.code, 'IMAP_MESSAGE_TOO_LARGE');
  t.deepEqual(segs, []);
  // A synchronizing {N} over the limit reaches the handler; not refused, it is fatal.
  const core = mk();
  const err = t.throws(() => core.push(bin('A {10}\r\n')), { instanceOf: FramingError });
  t.deepEqual([err!.code, err!.limit, err!.actual, err!.max], ['IMAP_LITERAL_TOO_LARGE', 'maxLiteralSize', 10, 9]);
  t.deepEqual(segs, [bin('A ')]);
  t.throws(() => core.push(bin('B NOOP\r\n')), { is: err });
});

/** Core over `input` with maxLiteralSize N; `answer` decides every header. */
function refusing(N: number, answer: (h: LiteralHeader) => 'reject' | undefined) {
  const out: [string, LiteralHeader | null, string][] = [];
  const bodies: string[] = [];
  const core = new FramerCore({
    onSegment: (text, literal, raw) => {
      out.push([text.toString('latin1'), literal === null ? null : { ...literal }, raw.toString('latin1')]);
      return literal === null ? undefined : answer(literal);
    },
    onBodyData: (chunk) => void bodies.push(chunk.toString('latin1')),
    onBodyEnd: () => undefined,
  }, { limits: { maxLiteralSize: N } });
  return { core, out, bodies };
}

test('a synchronizing {N} / ~{N} over the limit is delivered marked tooLarge and can be refused; N passes, N+1 is refused', (t) => {
  const N = 8;
  const input = `a1 APPEND box {${N}}\r\n${'x'.repeat(N)}\r\na2 APPEND box {${N + 1}}\r\na3 APPEND box ~{${N + 1}}\r\na4 NOOP\r\n`;
  for (const chunks of [[input], input.split('')]) {
    const { core, out, bodies } = refusing(N, (h) => (h.tooLarge ? 'reject' : undefined));
    for (const c of chunks) core.push(bin(c));
    core.end();
    t.deepEqual(out, [
      ['a1 APPEND box ', lit(N, false), `a1 APPEND box {${N}}`],
      ['', null, ''],
      ['a2 APPEND box ', { ...lit(N + 1, false), tooLarge: true }, `a2 APPEND box {${N + 1}}`],
      ['a3 APPEND box ', { ...lit(N + 1, false, true), tooLarge: true }, `a3 APPEND box ~{${N + 1}}`],
      ['a4 NOOP', null, 'a4 NOOP'],
    ]);
    t.is(bodies.join(''), 'x'.repeat(N));
    t.true(core.atLineBoundary);
  }
});

test('an oversized {N} not refused is fatal; an oversized {N+} is fatal even when the handler would refuse it', (t) => {
  const a = refusing(8, () => undefined);
  t.is(t.throws(() => a.core.push(bin('a1 APPEND box {9}\r\n')), { instanceOf: FramingError })!.code, 'IMAP_LITERAL_TOO_LARGE');
  t.is(a.out.length, 1);
  const b = refusing(8, () => 'reject');
  t.notThrows(() => b.core.push(bin('a1 APPEND box {8+}\r\n12345678\r\n')));
  const err = t.throws(() => b.core.push(bin('a2 APPEND box {9+}\r\n')), { instanceOf: FramingError });
  t.deepEqual([err!.code, err!.actual, err!.max], ['IMAP_LITERAL_MINUS_TOO_LARGE', 9, 8]);
  t.deepEqual(b.out.map((o) => o[0]), ['a1 APPEND box ', '']);
});

test('truncated input: "Unexpected end of data"', (t) => {
  for (const s of ['A NOOP', 'A {5}\r\nab', 'A {5}\r\nabcde', 'A %{p g 3}\r\n']) {
    const err = t.throws(() => frame([bin(s)]), { instanceOf: FramingError });
    t.is(err!.message, 'Unexpected end of data');
  }
});

/* ---- Framer (Writable) ------------------------------------------------ */

function readAll(body: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    body.on('data', (c: Buffer) => parts.push(c));
    body.on('end', () => resolve(Buffer.concat(parts)));
    body.on('error', reject);
  });
}

test('Framer: line and literal events, one body at a time, continuation hook for {N} only', async (t) => {
  const events: string[] = [];
  const framer = new Framer({ onContinuation: (h) => events.push(`+ go ahead ${h.size}`) });
  const bodies: Promise<Buffer>[] = [];
  framer.on('line', (text: Buffer, h: LiteralHeader | null) => events.push(`line ${text.toString()}${h ? ` {${h.size}}` : ''}`));
  framer.on('literal', (h: LiteralHeader, body: LiteralBody) => {
    events.push(`literal ${h.size}`);
    bodies.push(readAll(body));
  });
  await pipeline(Readable.from([bin('A APPEND X {3}\r\nabc B APPEND Y {2+}\r\nxy\r\nC OK\r\n')]), framer);
  t.deepEqual(events, [
    'line A APPEND X  {3}', '+ go ahead 3', 'literal 3',
    'line  B APPEND Y  {2}', 'literal 2',
    'line ', 'line C OK',
  ]);
  t.deepEqual((await Promise.all(bodies)).map(String), ['abc', 'xy']);
});

test('Framer: the continuation is offered before the body is sent (IMAP APPEND)', async (t) => {
  const framer = new Framer({ onContinuation: () => framer.emit('continue') });
  let got = '';
  framer.on('literal', (_h: LiteralHeader, body: LiteralBody) => void readAll(body).then((b) => (got = b.toString())));
  const continued = new Promise((resolve) => framer.once('continue', resolve));
  framer.write(bin('A1 APPEND INBOX {5}\r\n'));
  await continued;
  framer.end(bin('hello\r\n'));
  await new Promise((resolve) => framer.on('finish', resolve));
  await delay(1);
  t.is(got, 'hello');
});

test('Framer: abandoned body (destroy/skip) and no-listener bodies are skipped by counting', async (t) => {
  const lines: string[] = [];
  const framer = new Framer();
  framer.on('line', (text: Buffer) => lines.push(text.toString()));
  let n = 0;
  framer.on('literal', (_h: LiteralHeader, body: LiteralBody) => {
    if (n++ === 0) body.skip();
    else body.once('data', () => body.destroy());
  });
  const big = 'z'.repeat(200000);
  await pipeline(Readable.from([bin(`A {6}\r\nNOOP\r\n B {${big.length}}\r\n`), bin(big), bin(' C\r\nD\r\n')]), framer);
  t.deepEqual(lines, ['A ', ' B ', ' C', 'D']);
  const quiet = new Framer({ onLiteral: () => undefined });
  const ql: string[] = [];
  quiet.on('line', (text: Buffer) => ql.push(text.toString()));
  await pipeline(Readable.from([bin('A {3}\r\nX\r\nB\r\n')]), quiet);
  t.deepEqual(ql, ['A ', 'B']);
});

test('Framer: onLiteral "skip" refuses a body without a literal event', async (t) => {
  const framer = new Framer({ onLiteral: (h) => (h.size > 4 ? 'skip' : undefined) });
  const sizes: number[] = [];
  framer.on('literal', (h: LiteralHeader, body: LiteralBody) => {
    sizes.push(h.size);
    body.resume();
  });
  await pipeline(Readable.from([bin('A {5}\r\n12345 {4}\r\n1234\r\n')]), framer);
  t.deepEqual(sizes, [4]);
});

test('Framer: onLiteral "reject" of a synchronizing {N}: no body follows, the line ends at the header', async (t) => {
  const lines: [string, number | null][] = [];
  const continued: number[] = [];
  const framer = new Framer({
    onLiteral: (h) => (h.size > 100 ? 'reject' : undefined),
    onContinuation: (h) => continued.push(h.size),
  });
  framer.on('line', (text: Buffer, h: LiteralHeader | null) => lines.push([text.toString(), h?.size ?? null]));
  framer.on('literal', (_h: LiteralHeader, body: LiteralBody) => body.resume());
  // The client got "a1 NO" instead of "+", so it sent no body and went on.
  await pipeline(Readable.from([bin('a1 APPEND X {1000}\r\na2 APPEND X {3}\r\nabc\r\na3 APPEND X {200+}\r\n' + 'z'.repeat(200) + '\r\n')]), framer);
  t.deepEqual(lines, [['a1 APPEND X ', 1000], ['a2 APPEND X ', 3], ['', null], ['a3 APPEND X ', 200], ['', null]]);
  t.deepEqual(continued, [3]);
});

test('Framer: APPEND {5000000000} reaches the application as a line it refuses; the session goes on', async (t) => {
  const replies: string[] = [];
  const continued: number[] = [];
  let line = '';
  let announced = '';
  const framer = new Framer({
    fileLiterals: false,
    limits: { maxLiteralSize: 50 * 1024 * 1024 },
    onContinuation: (h) => continued.push(h.size),
    onLiteral: (h) => {
      if (!h.tooLarge) return undefined;
      replies.push(`${line.split(' ')[0]} NO [TOOBIG] ${announced}`);
      line = '';
      return 'reject';
    },
  });
  framer.on('line', (text: Buffer, h: LiteralHeader | null, raw: Buffer) => {
    line += text.toString('latin1');
    announced = raw.toString('latin1', text.length);
    if (h === null) {
      replies.push(`${line.split(' ')[0]} OK`);
      line = '';
    }
  });
  framer.on('literal', (_h: LiteralHeader, body: LiteralBody) => body.resume());
  await pipeline(Readable.from([bin('a1 APPEND box {5000000000}\r\na2 APPEND box {3}\r\nabc\r\na3 NOOP\r\n')]), framer);
  t.deepEqual(replies, ['a1 NO [TOOBIG] {5000000000}', 'a2 OK', 'a3 OK']);
  t.deepEqual(continued, [3]);
});

test('Framer: an oversized {N} without a refusal, and any oversized {N+}, end the stream with the limit error', async (t) => {
  for (const [input, code, lines] of [
    ['a1 APPEND box {5000000000}\r\n', 'IMAP_LITERAL_TOO_LARGE', 1],
    ['a1 APPEND box {5000000000+}\r\n', 'IMAP_LITERAL_MINUS_TOO_LARGE', 0],
  ] as const) {
    const framer = new Framer({ onLiteral: () => 'skip' });
    let seen = 0;
    framer.on('line', () => seen++);
    const err = await t.throwsAsync(pipeline(Readable.from([bin(input)]), framer), { instanceOf: FramingError });
    t.is(err!.code, code);
    t.is(seen, lines);
  }
});

test('Framer: a slow body reader withholds the write callback (bounded buffering)', async (t) => {
  const CHUNK = 16 * 1024;
  const SIZE = 2 * 1024 * 1024;
  const framer = new Framer({ highWaterMark: CHUNK });
  let peak = 0;
  let got = 0;
  let sent = 0;
  const source = new Readable({
    highWaterMark: CHUNK,
    read() {
      if (sent === 0) this.push(bin(`* 1 FETCH (BODY[] {${SIZE}}\r\n`));
      if (sent < SIZE) {
        sent += CHUNK;
        this.push(Buffer.alloc(CHUNK, 'q'));
      } else {
        this.push(bin(')\r\n'));
        this.push(null);
      }
    },
  });
  framer.on('literal', (_h: LiteralHeader, body: LiteralBody) => {
    const slow = new Writable({
      highWaterMark: CHUNK,
      write(chunk: Buffer, _e, cb) {
        got += chunk.length;
        peak = Math.max(peak, source.readableLength + framer.writableLength + body.readableLength + framer.bufferedBytes);
        setTimeout(cb, 1);
      },
    });
    body.pipe(slow);
  });
  await pipeline(source, framer);
  t.is(got, SIZE);
  t.log(`peak octets held: ${peak}`);
  t.true(peak <= 6 * CHUNK, `peak ${peak}`);
});

test('Framer: truncated input fails with "Unexpected end of data"; destroy ends the open body', async (t) => {
  const framer = new Framer();
  const bodyErrors: Error[] = [];
  framer.on('literal', (_h: LiteralHeader, body: LiteralBody) => body.on('error', (e) => bodyErrors.push(e)).resume());
  const err = await t.throwsAsync(pipeline(Readable.from([bin('A {5}\r\nab')]), framer), { instanceOf: FramingError });
  t.is(err!.message, 'Unexpected end of data');
  t.deepEqual(bodyErrors, [err]);

  const f2 = new Framer();
  let body: LiteralBody | null = null;
  f2.on('literal', (_h: LiteralHeader, b: LiteralBody) => (body = b.on('error', () => undefined)));
  f2.on('error', () => undefined);
  let writeDone = false;
  f2.write(bin('A {100000}\r\n'));
  f2.write(Buffer.alloc(90000), () => (writeDone = true));
  await delay(5);
  t.false(writeDone);
  const bodyClosed = new Promise((resolve) => body!.on('close', resolve));
  f2.destroy(new Error('connection lost'));
  await bodyClosed;
  t.true(body!.destroyed);
  await delay(1);
  t.true(writeDone);
});
