/**
 * DlistParserCore and parseCommandLines: the value grammar of csync-wire.md
 * §1.2-1.3, syntax-error recovery (the rest of the logical line is consumed,
 * literal-aware), limits at exactly N and N+1, and chunking independence
 * (every 2-piece split and random chunkings give identical output).
 */
import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import {
  CommandError,
  DlistParserCore,
  FramingError,
  memoryBodySink,
  parseCommandLines,
  type BodySink,
  type CommandLine,
  type DlistValue,
  type Limits,
} from '../transforms/index.js';

const sha1 = (b: Buffer | string) => createHash('sha1').update(b).digest('hex');
const bin = (s: string) => Buffer.from(s, 'latin1');

/** A comparable plain form: Buffers as hex, staged bodies as their bytes. */
function plain(v: unknown): unknown {
  if (Buffer.isBuffer(v)) return `hex:${v.toString('hex')}`;
  if (v instanceof Error) return { error: (v as CommandError).code, message: v.message };
  if (v instanceof Promise) return 'promise';
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[k] = plain(x);
    return o;
  }
  return v;
}

/** Feed `chunks` into a core (resuming immediately on writer backpressure). */
function parseChunks(chunks: Buffer[], opts: { limits?: Partial<Limits>; sink?: BodySink | null } = {}): unknown {
  const out: CommandLine[] = [];
  const core = new DlistParserCore({ ...opts, onCommand: (c) => out.push(c) });
  for (const c of chunks) {
    let done = core.push(c);
    while (!done) done = core.resume();
  }
  core.end();
  return plain(out);
}

const atom = (value: string): DlistValue => ({ kind: 'atom', value });

test('GET USER: verb and top-level values', (t) => {
  const [c] = parseCommandLines(bin('GET USER cassandane\r\n'));
  t.deepEqual(c, { verb: 'GET', args: [atom('USER'), atom('cassandane')], bodies: [] });
});

test('bare LF and CRLF both end a command; empty line gives an empty verb', (t) => {
  const cs = parseCommandLines(bin('NOOP\nEXIT\r\n\r\n'));
  t.deepEqual(cs.map((c) => [c.verb, c.args.length, c.error]), [['NOOP', 0, undefined], ['EXIT', 0, undefined], ['', 0, undefined]]);
});

test('every value type by first octet', (t) => {
  const [c] = parseCommandLines(bin(
    'APPLY X %(A 1 B (x "q\\"t\\\\" \\Seen NIL nil) C {3+}\r\nabc D %() E () F "" G {0}\r\n)\r\n'));
  t.is(c!.error, undefined);
  t.deepEqual(plain(c!.args), plain([
    atom('X'),
    {
      kind: 'kvlist', items: [
        { key: 'A', value: atom('1') },
        { key: 'B', value: { kind: 'list', items: [atom('x'), { kind: 'quoted', value: 'q"t\\' }, { kind: 'flag', value: '\\Seen' }, { kind: 'nil' }, atom('nil')] } },
        { key: 'C', value: { kind: 'literal', value: bin('abc') } },
        { key: 'D', value: { kind: 'kvlist', items: [] } },
        { key: 'E', value: { kind: 'list', items: [] } },
        { key: 'F', value: { kind: 'quoted', value: '' } },
        { key: 'G', value: { kind: 'literal', value: Buffer.alloc(0) } },
      ],
    },
  ]));
});

test('atoms keep % { * \\ [ ] and high octets as ordinary octets, latin1 one char per octet', (t) => {
  const [c] = parseCommandLines(Buffer.concat([bin('A x%y a{b} *[1] \\Fl%ag '), Buffer.from([0xe9, 0xff, 0x80]), bin('\r\n')]));
  t.deepEqual(c!.args.map((v) => (v as { value: string }).value), ['x%y', 'a{b}', '*[1]', '\\Fl%ag', '\u00e9\u00ff\u0080']);
  t.deepEqual(c!.args.map((v) => v.kind), ['atom', 'atom', 'atom', 'flag', 'atom']);
});

test('CR and LF inside containers are whitespace; only depth 0 ends the command', (t) => {
  const cs = parseCommandLines(bin('APPLY X (a\r\nb\n\t c %(K\r\nV))\r\nNOOP\r\n'));
  t.is(cs.length, 2);
  t.deepEqual(plain(cs[0]!.args[1]), plain({
    kind: 'list', items: [atom('a'), atom('b'), atom('c'), { kind: 'kvlist', items: [{ key: 'K', value: atom('V') }] }],
  }));
});

test('file literal: LF with optional CR, exact size, grammar continues with no CRLF', (t) => {
  const m1 = 'Subject: x\r\n\r\nbody\r\n';
  const m2 = ')\r\n{5}\r\n%{a b 1}';
  const input = `APPLY MESSAGE (%{default ${sha1(m1)} ${m1.length}}\n${m1} %{p2 ${sha1(m2).toUpperCase()} ${m2.length}}\r\n${m2} NIL)\r\n`;
  const [c] = parseCommandLines(bin(input), { sink: memoryBodySink() });
  t.is(c!.error, undefined);
  const list = c!.args[1] as { items: DlistValue[] };
  const [f1, f2, nil] = list.items as [Extract<DlistValue, { kind: 'file' }>, Extract<DlistValue, { kind: 'file' }>, DlistValue];
  t.is(f1.partition, 'default');
  t.is(f1.sha1, sha1(m1));
  t.is(f1.size, m1.length);
  t.deepEqual((f1.body!.ref as Buffer).toString('latin1'), m1);
  t.is(f2.partition, 'p2');
  t.is(f2.guid, sha1(m2).toUpperCase());
  t.is(f2.sha1, sha1(m2));
  t.deepEqual((f2.body!.ref as Buffer).toString('latin1'), m2);
  t.deepEqual(nil, { kind: 'nil' });
  t.is(c!.bodies.length, 2);
});

test('file literal without a sink: skipped by counting, SHA-1 still computed, body null', (t) => {
  const data = 'x'.repeat(1000);
  const [c, d] = parseCommandLines(bin(`APPLY MESSAGE (%{default ${sha1(data)} 1000}\r\n${data})\r\nNOOP\r\n`));
  const f = (c!.args[1] as { items: DlistValue[] }).items[0] as Extract<DlistValue, { kind: 'file' }>;
  t.is(f.sha1, sha1(data));
  t.is(f.body, null);
  t.deepEqual(c!.bodies, []);
  t.is(d!.verb, 'NOOP');
});

test('literals above the threshold go to the sink as bigliteral; at the threshold they stay Buffers', (t) => {
  const limits = { smallLiteralThreshold: 8 };
  const opened: unknown[] = [];
  const base = memoryBodySink();
  const sink: BodySink = { open: (h) => (opened.push(h), base.open(h)) };
  const [c] = parseCommandLines(bin('APPLY SIEVE %(A {8+}\r\n12345678 B {9+}\r\n123456789)\r\n'), { limits, sink });
  const items = (c!.args[1] as { items: { key: string; value: DlistValue }[] }).items;
  t.deepEqual(plain(items[0]!.value), plain({ kind: 'literal', value: bin('12345678') }));
  const big = items[1]!.value as Extract<DlistValue, { kind: 'bigliteral' }>;
  t.is(big.kind, 'bigliteral');
  t.is(big.size, 9);
  t.is(big.sha1, sha1('123456789'));
  t.is((big.body!.ref as Buffer).toString(), '123456789');
  t.deepEqual(opened, [{ kind: 'literal', size: 9 }]);
});

test('the sink sees the file header with a lower-cased guid before any body byte', (t) => {
  const seen: unknown[] = [];
  const sink: BodySink = {
    open(h) {
      seen.push({ ...h, bytesSoFar: writes });
      return null;
    },
  };
  const writes = 0;
  parseCommandLines(bin('APPLY MESSAGE (%{default ABCDEF 3}\r\nxyz)\r\n'), { sink });
  t.deepEqual(seen, [{ kind: 'file', partition: 'default', guid: 'abcdef', size: 3, bytesSoFar: 0 }]);
});

test('literal used as a kvlist key; NUL in a key literal is a syntax error', (t) => {
  const [a, b] = parseCommandLines(bin('APPLY X %({3+}\r\nK Y V)\r\nAPPLY X %({2+}\r\na\0 V)\r\n'));
  t.deepEqual(plain(a!.args[1]), plain({ kind: 'kvlist', items: [{ key: 'K Y', value: atom('V') }] }));
  t.is(b!.error?.code, 'IMAP_PROTOCOL_ERROR');
});

const syntaxCases: [string, RegExp][] = [
  ['APPLY X %(A)\r\n', /Missing value for key A/],
  ['APPLY X (a))\r\n', /Unexpected '\)'/],
  ['APPLY X (a)(b)\r\n', /Expected a space/],
  ['APPLY X "abc\r\n', /Unterminated quoted/],
  ['APPLY X "a\rb"\r\n', /CR or LF inside a quoted/],
  ['APPLY X %x\r\n', /'%' not followed/],
  ['APPLY X {5} y\r\n', /literal header must end the line/],
  ['APPLY X %{a b 1} y\r\n', /file literal header must end the line/],
  ['APPLY X a\rb\r\n', /CR without LF/],
  ['APPLY(X)\r\n', /space after the command verb/],
  ['APPLY X %((a) b)\r\n', /Expected a key/],
];

for (const [input, message] of syntaxCases) {
  test(`syntax error is a CommandError, not a throw: ${JSON.stringify(input)}`, (t) => {
    const cs = parseCommandLines(bin(input + 'NOOP\r\n'));
    t.is(cs.length, 2);
    t.true(cs[0]!.error instanceof CommandError);
    t.is(cs[0]!.error!.code, 'IMAP_PROTOCOL_ERROR');
    t.regex(cs[0]!.error!.message, message);
    t.is(cs[0]!.verb, 'APPLY');
    t.deepEqual(cs[1], { verb: 'NOOP', args: [], bodies: [] });
  });
}

test('after a syntax error the rest of the line is consumed literal-aware, bodies skipped', (t) => {
  const evil = 'NOOP\r\nEXIT\r\n';
  const opened: unknown[] = [];
  const sink: BodySink = { open: (h) => (opened.push(h), null) };
  const input = `APPLY MESSAGE (a)(b) {${evil.length}+}\r\n${evil} %{default ${sha1(evil)} ${evil.length}}\r\n${evil} x\r\nGET USER u\r\n`;
  const cs = parseCommandLines(bin(input), { sink });
  t.is(cs.length, 2);
  t.regex(cs[0]!.error!.message, /Expected a space/);
  t.deepEqual(opened, []);
  t.deepEqual(cs[1], { verb: 'GET', args: [atom('USER'), atom('u')], bodies: [] });
});

test('a truncated command is "Unexpected end of data"', (t) => {
  for (const input of ['NOOP', 'APPLY X (a\r\n', 'APPLY X {5}\r\nabc', 'APPLY X (%{p g 4}\r\nab']) {
    const err = t.throws(() => parseCommandLines(bin(input)), { instanceOf: FramingError });
    t.is(err!.message, 'Unexpected end of data');
  }
});

/* ---- limits at N and N+1 ------------------------------------------------ */

function limitError(input: string, limits: Partial<Limits>): FramingError | undefined {
  try {
    parseCommandLines(bin(input), { limits });
    return undefined;
  } catch (err) {
    if (err instanceof FramingError) return err;
    throw err;
  }
}

test('maxLineLength: N octets pass, N+1 fail (CRLF and LF)', (t) => {
  const N = 40;
  const line = 'APPLY X ' + 'a'.repeat(N - 8);
  t.is(line.length, N);
  t.is(limitError(line + '\r\n', { maxLineLength: N }), undefined);
  t.is(limitError(line + '\n', { maxLineLength: N }), undefined);
  for (const eol of ['\r\n', '\n']) {
    const err = limitError(line + 'a' + eol, { maxLineLength: N });
    t.is(err?.code, 'IMAP_PROTOCOL_ERROR');
    t.is(err?.limit, 'maxLineLength');
    t.is(err?.max, N);
  }
});

test('maxLineLength fails before the LF arrives', (t) => {
  const N = 100;
  const core = new DlistParserCore({ limits: { maxLineLength: N }, onCommand: () => t.fail() });
  t.true(core.push(bin('APPLY ')));
  t.true(core.push(bin('a'.repeat(N - 6))));
  t.true(core.push(bin('\r'))); // could still be the CR of CRLF
  const err = t.throws(() => core.push(bin('b')), { instanceOf: FramingError });
  t.is(err!.limit, 'maxLineLength');
  t.throws(() => core.push(bin('\n')), { is: err });
});

test('maxLiteralSize: N passes, N+1 fails at the header before any body byte', (t) => {
  t.is(limitError('APPLY X {10+}\r\n0123456789\r\n', { maxLiteralSize: 10 }), undefined);
  const err = limitError('APPLY X {11+}\r\n', { maxLiteralSize: 10 });
  t.is(err?.code, 'IMAP_LITERAL_MINUS_TOO_LARGE');
  t.deepEqual([err?.limit, err?.actual, err?.max], ['maxLiteralSize', 11, 10]);
  t.is(limitError('APPLY X {11}\r\n', { maxLiteralSize: 10 })?.code, 'IMAP_LITERAL_TOO_LARGE');
  t.is(limitError('APPLY X {99999999999999999999999}\r\n', {})?.code, 'IMAP_LITERAL_TOO_LARGE');
});

test('maxFileLiteralSize: N passes, N+1 fails at the header', (t) => {
  t.is(limitError('APPLY MESSAGE (%{p g 10}\r\n0123456789)\r\n', { maxFileLiteralSize: 10 }), undefined);
  const err = limitError('APPLY MESSAGE (%{p g 11}\r\n', { maxFileLiteralSize: 10 });
  t.is(err?.code, 'IMAP_MESSAGE_TOO_LARGE');
  t.deepEqual([err?.limit, err?.actual, err?.max], ['maxFileLiteralSize', 11, 10]);
  t.is(limitError(`APPLY MESSAGE (%{p g ${2 ** 32}}\r\n`, {})?.code, 'IMAP_MESSAGE_TOO_LARGE');
});

test('maxDepth: N nested containers pass, N+1 fail', (t) => {
  const nest = (d: number) => 'APPLY X ' + '('.repeat(d - 1) + '%(' + ')'.repeat(d) + '\r\n';
  t.is(limitError(nest(5), { maxDepth: 5 }), undefined);
  const err = limitError(nest(6), { maxDepth: 5 });
  t.deepEqual([err?.code, err?.limit, err?.actual, err?.max], ['IMAP_PROTOCOL_ERROR', 'maxDepth', 6, 5]);
});

test('maxAtomLength: N passes, N+1 fails for atoms, flags, quoted strings, keys and verbs', (t) => {
  const N = 16;
  const a = (n: number) => 'a'.repeat(n);
  const shapes = [
    (n: number) => `APPLY X ${a(n)}\r\n`,
    (n: number) => `APPLY X (\\${a(n - 1)})\r\n`,
    (n: number) => `APPLY X "${a(n - 1)}\\""\r\n`,
    (n: number) => `APPLY X %(${a(n)} v)\r\n`,
    (n: number) => `${'V'.repeat(n)} x\r\n`,
  ];
  for (const shape of shapes) {
    t.is(limitError(shape(N), { maxAtomLength: N }), undefined, shape(N));
    const err = limitError(shape(N + 1), { maxAtomLength: N });
    t.deepEqual([err?.limit, err?.actual, err?.max], ['maxAtomLength', N + 1, N], shape(N + 1));
  }
});

test('a framing error aborts the open body writer', (t) => {
  const aborted: Error[] = [];
  const sink: BodySink = {
    open: () => ({
      write: () => true,
      onDrain: (cb) => cb(),
      end: () => t.fail() as never,
      abort: (err) => void aborted.push(err),
    }),
  };
  const core = new DlistParserCore({ sink, onCommand: () => t.fail() });
  core.push(bin('APPLY MESSAGE (%{p g 5}\r\nab'));
  core.abort(new Error('connection lost'));
  t.is(aborted.length, 1);
  t.is(aborted[0]!.message, 'connection lost');
});

/* ---- chunking independence -------------------------------------------- */

const SAMPLE = bin([
  'AUTHENTICATE PLAIN AGFkbWluAGFkbWlucHc=\r\n',
  'APPLY MESSAGE (%{default 88a5e5e7814c2acd9184051c4e7c01de36b67884 12}\r\nHello\r\nWorld %{default abc 0}\r\n)\r\n',
  'APPLY MAILBOX %(UNIQUEID x MBOXNAME user.a RECORD (%(UID 1 FLAGS (\\Seen $F) GUID abc ANNOTATIONS (%(ENTRY /c USERID "" VALUE {4+}\r\nab\r\n)))))\r\n',
  'APPLY BAD (a)(b) {3+}\r\n)\r\n x\r\n',
  'APPLY SIEVE %(CONTENT {20+}\r\nrequire "fileinto";\r\n)\n',
  'GET USER "we\\"ird"\r\n',
].join(''));

test('split at every offset (2 pieces): identical output', (t) => {
  const sink = memoryBodySink;
  const limits = { smallLiteralThreshold: 8 };
  const whole = parseChunks([SAMPLE], { sink: sink(), limits });
  for (let i = 0; i <= SAMPLE.length; i++) {
    t.deepEqual(parseChunks([SAMPLE.subarray(0, i), SAMPLE.subarray(i)], { sink: sink(), limits }), whole, `split at ${i}`);
  }
});

test('random chunkings (fast-check): identical output', (t) => {
  const limits = { smallLiteralThreshold: 8 };
  const whole = parseChunks([SAMPLE], { sink: memoryBodySink(), limits });
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: SAMPLE.length }), { maxLength: 40 }), (cuts) => {
    const points = [...new Set(cuts)].sort((a, b) => a - b);
    const chunks: Buffer[] = [];
    let prev = 0;
    for (const p of points) {
      chunks.push(SAMPLE.subarray(prev, p));
      prev = p;
    }
    chunks.push(SAMPLE.subarray(prev));
    t.deepEqual(parseChunks(chunks, { sink: memoryBodySink(), limits }), whole);
  }), { numRuns: 500 });
});

test('writer backpressure: the core stops right after the chunk a writer refused', (t) => {
  const data = 'x'.repeat(100);
  const writes: number[] = [];
  const sink: BodySink = {
    open: () => ({
      write: (c) => (writes.push(c.length), false),
      onDrain: () => undefined,
      end: () => ({ done: Promise.resolve(), ref: null }),
      abort: () => undefined,
    }),
  };
  const out: CommandLine[] = [];
  const core = new DlistParserCore({ sink, onCommand: (c) => out.push(c) });
  const input = bin(`APPLY MESSAGE (%{p ${sha1(data)} 100}\r\n${data})\r\nNOOP\r\n`);
  t.false(core.push(input.subarray(0, 80)));
  t.true(core.blockedOn !== null);
  t.false(core.push(input.subarray(80)));
  t.is(writes.length, 1);
  t.true(core.pendingBytes > 0);
  while (!core.resume()) { /* each resume delivers one more chunk */ }
  t.deepEqual(writes.reduce((a, b) => a + b, 0), 100);
  t.deepEqual(out.map((c) => c.verb), ['APPLY', 'NOOP']);
});

test('interned tokens: every atom, flag and key comes back exactly (fast-check, collisions included)', (t) => {
  const atomChar = fc.integer({ min: 0x21, max: 0xff }).filter((c) => ![0x22, 0x28, 0x29, 0x7b, 0x25, 0x5c].includes(c));
  const atomText = fc.array(atomChar, { minLength: 1, maxLength: 70 }).map((cs) => String.fromCharCode(...cs)).filter((s) => s !== 'NIL');
  t.notThrows(() => fc.assert(fc.property(fc.array(fc.tuple(atomText, atomText, fc.boolean()), { minLength: 1, maxLength: 60 }), (pairs) => {
    // Repeat the set so that second occurrences hit the intern table.
    const all = [...pairs, ...pairs];
    const line = 'APPLY X %(' + all.map(([k, v, flag]) => `${k} ${flag ? '\\' : ''}${v}`).join(' ') + ')\r\n';
    const cs = parseCommandLines(Buffer.from(line, 'latin1'));
    const items = (cs[0]!.args[1] as { items: { key: string; value: { kind: string; value: string } }[] }).items;
    return items.length === all.length && items.every((it, n) => {
      const [k, v, flag] = all[n]!;
      return it.key === k && it.value.kind === (flag ? 'flag' : 'atom') && it.value.value === (flag ? '\\' + v : v);
    });
  }), { numRuns: 300 }));
});

test('a value object shared between occurrences is frozen (parsed values are read-only)', (t) => {
  const [c] = parseCommandLines(bin('APPLY X 0 0 0\r\n'));
  const [, a, b, d] = c!.args as { value: string }[];
  t.deepEqual([a!.value, b!.value, d!.value], ['0', '0', '0']);
  t.is(b, d);
  t.true(Object.isFrozen(b));
  t.throws(() => {
    (b as { value: string }).value = '1';
  }, { instanceOf: TypeError });
});

test('a command spread over many physical lines is bounded too: text and small literals <= maxLineLength', (t) => {
  // 'APPLY X (' + 'a\r\n' segments: each physical line is short, the command is not.
  const N = 64;
  const text = (octets: number) => 'APPLY X (' + 'a'.repeat(octets - 10) + '\r\n)';
  t.is(text(N).replace('\r\n', '').length, N);
  t.is(limitError(text(N) + '\r\n', { maxLineLength: N }), undefined);
  const err = limitError(text(N + 1) + '\r\n', { maxLineLength: N });
  t.deepEqual([err?.code, err?.limit, err?.max], ['IMAP_PROTOCOL_ERROR', 'maxLineLength', N]);
  // Small literals count at their header, before their bytes.
  const lit = (size: number) => `APPLY X ({${size}+}\r\n${'b'.repeat(size)})\r\n`;
  t.is(limitError(lit(N - 10), { maxLineLength: N }), undefined);
  const e2 = limitError(`APPLY X ({${N - 8}+}\r\n`, { maxLineLength: N });
  t.regex(e2?.message ?? '', /at a literal header/);
});
