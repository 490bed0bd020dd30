/**
 * Serializer invariants:
 * - string rules in Cyrus 3.6.1 order: NIL, "", atom (<1024, imparse_isnatom
 *   octets, not "NIL"), quoted (<1024, no CR LF " % \ NUL >=0x80), literal;
 * - server literals `{N}`, client literals `{N+}`, canonical backup output;
 * - parsed quoted/literal keep their form outside canonical mode;
 * - file literals: exact count and SHA-1 or the output is destroyed;
 * - serialize then parse is the identity on parsed values (property).
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import fc from 'fast-check';
import {
  CommandWriter,
  OutputLiteralError,
  ResponseWriter,
  encodeItemParts,
  iterateLineParts,
  serializeItem,
  serializeLine,
  serializeValue,
  streamFileLiteral,
  stringForm,
} from '../transforms/serializer.js';
import { memoryBodySink, parseCommandLines } from '../transforms/dlist-parser.js';
import type { DlistBigLiteral, DlistFile, DlistValue } from '../transforms/dlist-types.js';
import { CyrsyncError } from '../transforms/errors.js';
import { expectEach } from './helpers/tables.js';

const str = (value: string | Buffer | null): DlistValue => ({ kind: 'string', value });
const out = (v: DlistValue, mode: 'server' | 'client' | 'backup' | 'canonical-client' = 'server'): string =>
  serializeValue(v, mode).toString('latin1');

test('string rules: NIL, empty, atom, quoted, literal', (t) => {
  expectEach(t, (s: string | null) => out(str(s)), [
    [null, 'NIL'],
    ['', '""'],
    ['user.fixt', 'user.fixt'],
    ['NIL', '"NIL"'],
    ['nil', 'nil'],
    ['NILS', 'NILS'],
    ['a b', '"a b"'],
    ['[x]+', '[x]+'],
    ['a\x1fb', 'a\x1fb', '0x1F is an atom octet in imparse_isnatom'],
    ['a\x1eb', '"a\x1eb"'],
    ['a\x7fb', '"a\x7fb"'],
    ['fixt\tlrswipkxtecdan\t', '"fixt\tlrswipkxtecdan\t"', 'TAB travels quoted (ACL)'],
    ['a{b', '"a{b"'],
    ['a(b)', '"a(b)"'],
    ['a*', '"a*"'],
  ]);
});

test('string rules: % \\ " CR LF NUL and 8-bit octets force a literal', (t) => {
  for (const s of ['50%', 'a\\b', 'say "hi"', 'a\rb', 'a\nb', 'a\0b', 'caf\xe9']) {
    t.is(out(str(s)), `{${s.length}}\r\n${s}`, JSON.stringify(s));
    t.is(out(str(s), 'client'), `{${s.length}+}\r\n${s}`, JSON.stringify(s));
  }
  t.is(stringForm(Buffer.from([0x61, 0x00])), 'literal');
});

test('string rules: the 1023/1024 boundary', (t) => {
  const a1023 = 'a'.repeat(1023);
  const a1024 = 'a'.repeat(1024);
  t.is(out(str(a1023)), a1023);
  t.is(out(str(a1024)), `{1024}\r\n${a1024}`);
  const q1023 = 'a b'.padEnd(1023, 'c');
  const q1024 = 'a b'.padEnd(1024, 'c');
  t.is(out(str(q1023)), `"${q1023}"`);
  t.is(out(str(q1024)), `{1024}\r\n${q1024}`);
  t.is(stringForm(Buffer.alloc(1023, 0x61)), 'atom');
  t.is(stringForm(Buffer.alloc(1024, 0x61)), 'literal');
});

test('numbers, hex64, NIL, flags, containers', (t) => {
  t.is(out({ kind: 'num', value: 0 }), '0');
  t.is(out({ kind: 'num', value: 18446744073709551615n }), '18446744073709551615');
  t.is(out({ kind: 'hex', value: 0xa1b2c3d4e5f607n }), '00a1b2c3d4e5f607');
  t.is(out({ kind: 'hex', value: 255 }), '00000000000000ff');
  t.is(out({ kind: 'nil' }), 'NIL');
  t.is(out({ kind: 'flag', value: '\\Seen' }), '\\Seen');
  t.is(out({ kind: 'list', items: [] }), '()');
  t.is(out({ kind: 'kvlist', items: [] }), '%()');
  t.is(
    out({
      kind: 'kvlist',
      items: [
        { key: 'UID', value: { kind: 'num', value: 1 } },
        { key: 'FLAGS', value: { kind: 'list', items: [{ kind: 'flag', value: '\\Seen' }, { kind: 'atom', value: '$Forwarded' }] } },
        { key: 'USERID', value: str('') },
      ],
    }),
    '%(UID 1 FLAGS (\\Seen $Forwarded) USERID "")',
  );
  t.throws(() => out({ kind: 'num', value: -1 }), { instanceOf: CyrsyncError });
  t.throws(() => out({ kind: 'num', value: 1.5 }), { instanceOf: CyrsyncError });
  t.throws(() => out({ kind: 'hex', value: 2n ** 64n }), { instanceOf: CyrsyncError });
});

test('parsed forms are kept outside canonical mode and canonicalised in backup mode', (t) => {
  const q: DlistValue = { kind: 'quoted', value: 'abc' };
  const l: DlistValue = { kind: 'literal', value: Buffer.from('abc') };
  t.is(out(q), '"abc"');
  t.is(out(q, 'backup'), 'abc');
  t.is(out(l), '{3}\r\nabc');
  t.is(out(l, 'client'), '{3+}\r\nabc');
  t.is(out(l, 'backup'), 'abc');
  t.is(out({ kind: 'literal', value: Buffer.from('a\0b') }, 'backup'), '{3}\r\na\0b', 'backup files use synchronizing literals');
  t.is(out({ kind: 'literal', value: Buffer.from('a\0b') }, 'canonical-client'), '{3+}\r\na\0b');
  t.is(out({ kind: 'quoted', value: 'a"b\\c' }), '"a\\"b\\\\c"', 'escapes keep a quoted value parseable');
  t.is(out({ kind: 'quoted', value: 'a\r\nb' }), '{4}\r\na\r\nb');
  t.is(out({ kind: 'atom', value: 'a*b' }), 'a*b', 'atoms are written raw');
  t.is(out({ kind: 'atom', value: 'a*b' }, 'backup'), '"a*b"');
  t.is(out({ kind: 'atom', value: 'a b' }), '"a b"', 'an atom that would break the framing is quoted');
  t.is(out({ kind: 'atom', value: '' }), '""');
});

test('serializeItem and data lines', (t) => {
  t.is(serializeItem('LSUB', { kind: 'list', items: [str('user.a'), str('user.a.b c')] }).toString('latin1'), 'LSUB (user.a "user.a.b c")');
  const parts = encodeItemParts({ key: 'MISSING', value: { kind: 'list', items: [str('ab')] } });
  t.is(Buffer.concat(parts as Buffer[]).toString('latin1'), '* MISSING (ab)\r\n');
  t.is(
    serializeLine('APPLY ', { key: 'SIEVE', value: { kind: 'kvlist', items: [{ key: 'CONTENT', value: str('x\r\n') }] } }, 'client').toString('latin1'),
    'APPLY SIEVE %(CONTENT {3+}\r\nx\r\n)\r\n',
  );
});

function fileOf(body: Buffer, opts: { guid?: string; size?: number; chunks?: number } = {}): DlistFile {
  const guid = opts.guid ?? createHash('sha1').update(body).digest('hex');
  const n = opts.chunks ?? 3;
  return {
    kind: 'file',
    partition: 'default',
    guid,
    size: opts.size ?? body.length,
    source: () => {
      const step = Math.max(1, Math.ceil(body.length / n));
      const pieces: Buffer[] = [];
      for (let i = 0; i < body.length; i += step) pieces.push(body.subarray(i, i + step));
      return Readable.from(pieces);
    },
  };
}

function collect(): { w: Writable; data: () => Buffer } {
  const chunks: Buffer[] = [];
  const w = new Writable({
    highWaterMark: 16,
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      setImmediate(cb);
    },
  });
  w.on('error', () => undefined);
  return { w, data: () => Buffer.concat(chunks) };
}

test('file literal streams exactly with its header', async (t) => {
  const body = Buffer.from('Subject: x\r\n\r\nhello\r\n');
  const f = fileOf(body);
  const { w, data } = collect();
  await streamFileLiteral(f, w);
  t.is(data().toString('latin1'), `%{default ${f.guid} ${body.length}}\r\n${body.toString('latin1')}`);
  t.throws(() => serializeValue(f), { instanceOf: CyrsyncError }, 'file literals need a writer');
});

test('file literal: short, long or wrong-SHA-1 source destroys the output', async (t) => {
  const body = Buffer.from('0123456789');
  const good = createHash('sha1').update(body).digest('hex');
  for (const [name, f] of [
    ['short', fileOf(body, { size: 11, guid: good })],
    ['long', fileOf(body, { size: 9, guid: good })],
    ['sha1', fileOf(body, { guid: 'f'.repeat(40) })],
  ] as const) {
    const { w, data } = collect();
    const err = await t.throwsAsync(streamFileLiteral(f, w), { instanceOf: OutputLiteralError }, name);
    t.is(err?.code, 'IMAP_IOERROR');
    t.true(w.destroyed, name);
    if (name === 'long') t.true(data().length <= `%{default ${good} 9}\r\n`.length + 9, 'no octet beyond the size');
  }
});

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

test('ResponseWriter: data lines, file literal, status, in order', async (t) => {
  const body = Buffer.alloc(200_000, 0x41);
  const f = fileOf(body, { chunks: 50 });
  const w = new ResponseWriter({ highWaterMark: 1024 });
  const all = readAll(w);
  await w.data({ key: 'MESSAGE', value: f });
  await w.status('OK success');
  await w.finish();
  const got = (await all).toString('latin1');
  t.is(got, `* MESSAGE %{default ${f.guid} ${body.length}}\r\n${body.toString('latin1')}\r\nOK success\r\n`);
});

test('ResponseWriter: a bad file literal destroys the stream and fails later calls', async (t) => {
  const w = new ResponseWriter();
  const errs: Error[] = [];
  w.on('error', (e) => errs.push(e));
  w.resume();
  const f = fileOf(Buffer.from('abc'), { guid: '0'.repeat(40) });
  await t.throwsAsync(w.data({ key: 'MESSAGE', value: f }), { instanceOf: OutputLiteralError });
  await t.throwsAsync(w.status('OK success'));
  t.true(w.destroyed);
  await new Promise((r) => setImmediate(r));
  t.true(errs[0] instanceof OutputLiteralError);
});

test('CommandWriter: client literals {N+} and streamed file literals', async (t) => {
  const body = Buffer.from('From: a\r\n\r\nbody\r\n');
  const f = fileOf(body);
  const w = new CommandWriter();
  const all = readAll(w);
  await w.command('APPLY', { key: 'MESSAGE', value: { kind: 'list', items: [f, { kind: 'nil' }] } });
  await w.command('APPLY', { key: 'SIEVE', value: { kind: 'kvlist', items: [{ key: 'CONTENT', value: str('a\r\n') }] } });
  await w.command('EXIT');
  await w.finish();
  const got = (await all).toString('latin1');
  t.is(
    got,
    `APPLY MESSAGE (%{default ${f.guid} ${body.length}}\r\n${body.toString('latin1')} NIL)\r\n` +
      'APPLY SIEVE %(CONTENT {3+}\r\na\r\n)\r\nEXIT\r\n',
  );
  // And the parser reads it back with the same body.
  const lines = parseCommandLines(Buffer.from(got, 'latin1'), { sink: memoryBodySink() });
  const file = (lines[0]!.args[1] as { items: DlistValue[] }).items[0] as DlistFile;
  t.is(file.sha1, f.guid);
  t.deepEqual((file.body as { ref: Buffer }).ref, body);
});

// ---------------------------------------------------------------------------
// Property: serialize then parse is the identity

const octets = (max: number): fc.Arbitrary<string> =>
  fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: max }).map((a) => Buffer.from(a).toString('latin1'));

const atomText = fc
  .stringMatching(/^[A-Za-z0-9$_.\-/[\]+!#&'<>=?@^`|~]{1,20}$/)
  .filter((s) => s !== 'NIL');

const scalar: fc.Arbitrary<DlistValue> = fc.oneof(
  atomText.map((value) => ({ kind: 'atom', value }) as DlistValue),
  fc.constant<DlistValue>({ kind: 'nil' }),
  atomText.map((s) => ({ kind: 'flag', value: '\\' + s }) as DlistValue),
  octets(40)
    .filter((s) => !/[\r\n\0]/.test(s))
    .map((value) => ({ kind: 'quoted', value }) as DlistValue),
  octets(40).map((s) => ({ kind: 'literal', value: Buffer.from(s, 'latin1') }) as DlistValue),
);

const value: fc.Arbitrary<DlistValue> = fc.letrec<{ v: DlistValue }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    scalar,
    fc.array(tie('v'), { maxLength: 4 }).map((items) => ({ kind: 'list', items }) as DlistValue),
    fc
      .array(fc.tuple(atomText, tie('v')), { maxLength: 4 })
      .map((kv) => ({ kind: 'kvlist', items: kv.map(([key, v]) => ({ key, value: v })) }) as DlistValue),
  ),
})).v;

for (const mode of ['server', 'client'] as const) {
  test(`property: parse(serialize(v)) == v (${mode})`, (t) => {
    fc.assert(
      fc.property(value, (v) => {
        const line = Buffer.concat([Buffer.from('APPLY X '), serializeValue(v, mode), Buffer.from('\r\n')]);
        const [cmd] = parseCommandLines(line);
        t.deepEqual(cmd!.args[1], v);
        return cmd!.error === undefined;
      }),
      { numRuns: 500 },
    );
  });
}

test('property: string builder parses back to its octets', (t) => {
  t.notThrows(() =>
   fc.assert(
    fc.property(octets(1100), (s) => {
      const line = Buffer.concat([Buffer.from('APPLY X '), serializeValue(str(s)), Buffer.from('\r\n')]);
      const [cmd] = parseCommandLines(line);
      const v = cmd!.args[1]!;
      const text =
        v.kind === 'atom' || v.kind === 'quoted' ? v.value : v.kind === 'literal' ? v.value.toString('latin1') : null;
      return text === s;
    }),
    { numRuns: 500 },
  ));
});

test('text above U+00FF is refused, not mangled', (t) => {
  t.throws(() => out(str('caf\u00e9\u20ac')), { instanceOf: CyrsyncError, message: /above U\+00FF/ });
  t.throws(() => out({ kind: 'atom', value: '\u0100' }), { instanceOf: CyrsyncError });
  t.is(out(str(Buffer.from('café', 'utf8'))), '{5}\r\ncaf\xc3\xa9', 'octets are passed as a Buffer');
});

test('a body part follows its header in a Buffer part', (t) => {
  const f = fileOf(Buffer.from('abc'));
  const parts = encodeItemParts({ key: 'MESSAGE', value: f });
  t.is(parts.length, 3);
  t.is((parts[0] as Buffer).toString('latin1'), `* MESSAGE %{default ${f.guid} 3}\r\n`);
  t.is(parts[1], f);
  t.is((parts[2] as Buffer).toString('latin1'), '\r\n');
});

function bigOf(body: Buffer, sha1?: string): DlistBigLiteral {
  return {
    kind: 'bigliteral',
    size: body.length,
    sha1: sha1 ?? createHash('sha1').update(body).digest('hex'),
    body: null,
    source: () => Readable.from([body]),
  };
}

test('big literal with a source streams as {N} / {N+} with checks', async (t) => {
  const body = Buffer.alloc(5000, 0x7a);
  const w = new ResponseWriter();
  const all = readAll(w);
  await w.data({ key: 'SIEVE', value: { kind: 'kvlist', items: [{ key: 'CONTENT', value: bigOf(body) }] } });
  await w.finish();
  t.is((await all).toString('latin1'), `* SIEVE %(CONTENT {5000}\r\n${body.toString('latin1')})\r\n`);

  const c = new CommandWriter();
  const call = readAll(c);
  await c.command('APPLY', { key: 'SIEVE', value: { kind: 'kvlist', items: [{ key: 'CONTENT', value: bigOf(body) }] } });
  await c.finish();
  t.true((await call).toString('latin1').startsWith('APPLY SIEVE %(CONTENT {5000+}\r\nzzz'));

  const bad = new ResponseWriter();
  bad.on('error', () => undefined);
  bad.resume();
  await t.throwsAsync(bad.data({ key: 'X', value: bigOf(body, 'a'.repeat(40)) }), { instanceOf: OutputLiteralError });
  t.true(bad.destroyed);
  t.throws(() => serializeValue({ kind: 'bigliteral', size: 3, sha1: 'a'.repeat(40), body: null }), { instanceOf: CyrsyncError });
});

test('lazy line encoding gives the same octets as the eager one, in bounded parts', (t) => {
  const records: DlistValue[] = [];
  for (let i = 1; i <= 3000; i++) {
    records.push({
      kind: 'kvlist',
      items: [
        { key: 'UID', value: { kind: 'num', value: i } },
        { key: 'FLAGS', value: { kind: 'list', items: [{ kind: 'flag', value: '\\Seen' }] } },
        { key: 'GUID', value: str(createHash('sha1').update(String(i)).digest('hex')) },
      ],
    });
  }
  const item = { key: 'MAILBOX', value: { kind: 'kvlist', items: [{ key: 'RECORD', value: { kind: 'list', items: records } }] } as DlistValue };
  const eager = serializeLine('* ', item, 'server');
  const parts = [...iterateLineParts('* ', item, 'server')] as Buffer[];
  t.true(parts.length > 1, 'handed on in several parts');
  t.true(parts.every((p) => p.length < 70 * 1024));
  t.true(Buffer.concat(parts).equals(eager));
});

test('property: lazy and eager encodings agree', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(value, (v) => {
        const item = { key: 'K', value: v };
        return Buffer.concat([...iterateLineParts('* ', item, 'client')] as Buffer[]).equals(serializeLine('* ', item, 'client'));
      }),
      { numRuns: 300 },
    ),
  );
});

test('ResponseWriter: a value refused before any octet left keeps the stream usable', async (t) => {
  const w = new ResponseWriter();
  const all = readAll(w);
  await t.throwsAsync(w.data({ key: 'X', value: { kind: 'num', value: -1 } }), { instanceOf: CyrsyncError });
  await w.status('NO Unknown error');
  await w.finish();
  t.is((await all).toString('latin1'), 'NO Unknown error\r\n');
});

test('ResponseWriter: a value refused mid-line destroys the stream', async (t) => {
  const records: DlistValue[] = [];
  for (let i = 0; i < 5000; i++) records.push(str(`user.fixt.folder${i}`));
  records.push({ kind: 'num', value: -1 });
  const w = new ResponseWriter();
  w.on('error', () => undefined);
  w.resume();
  await t.throwsAsync(w.data({ key: 'LSUB', value: { kind: 'list', items: records } }), { instanceOf: CyrsyncError });
  t.true(w.destroyed);
});

test('CommandWriter helpers: GET, APPLY, APPLY MESSAGE bounds', async (t) => {
  const f = fileOf(Buffer.from('x'));
  const w = new CommandWriter();
  const all = readAll(w);
  await w.get('USER', str('fixt'));
  await w.apply('FORCE', { kind: 'kvlist', items: [] });
  await w.applyMessage([f]);
  await t.throwsAsync(w.applyMessage([]), { instanceOf: CyrsyncError });
  await w.finish();
  t.is((await all).toString('latin1'), `GET USER fixt\r\nAPPLY FORCE %()\r\nAPPLY MESSAGE (%{default ${f.guid} 1}\r\nx)\r\n`);
});

test('ResponseWriter: a large file literal streams with bounded buffering behind a slow reader', async (t) => {
  const SIZE = 64 * 1024 * 1024;
  const CHUNK = 256 * 1024;
  const block = Buffer.alloc(CHUNK, 0x61);
  const hash = createHash('sha1');
  for (let n = 0; n < SIZE; n += CHUNK) hash.update(block);
  let produced = 0;
  const f: DlistFile = {
    kind: 'file',
    partition: 'default',
    guid: hash.digest('hex'),
    size: SIZE,
    source: () =>
      new Readable({
        highWaterMark: CHUNK,
        read() {
          if (produced >= SIZE) this.push(null);
          else {
            produced += CHUNK;
            this.push(block);
          }
        },
      }),
  };
  const w = new ResponseWriter({ highWaterMark: 64 * 1024 });
  let consumed = 0;
  let maxAhead = 0;
  const sink = new Writable({
    highWaterMark: 64 * 1024,
    write(c: Buffer, _e, cb) {
      consumed += c.length;
      maxAhead = Math.max(maxAhead, produced - consumed);
      setImmediate(cb);
    },
  });
  w.pipe(sink);
  await w.data({ key: 'MESSAGE', value: f });
  await w.status('OK success');
  await w.finish();
  await new Promise((r) => sink.on('finish', r));
  const header = `* MESSAGE %{default ${f.guid} ${SIZE}}\r\n`.length;
  t.is(consumed, header + SIZE + 2 + 'OK success\r\n'.length);
  t.true(maxAhead < 2 * 1024 * 1024, `source ran ${maxAhead} octets ahead of the reader`);
});

test('ResponseWriter: onReplyEnd runs once per status line, after its octets', async (t) => {
  const w = new ResponseWriter();
  const seen: string[] = [];
  let pushedAtHook = -1;
  w.onReplyEnd = () => {
    pushedAtHook = w.readableLength;
    seen.push('end');
  };
  await w.rawLine('* SASL PLAIN');
  t.deepEqual(seen, [], 'a greeting line does not end a reply');
  await w.data({ key: 'LSUB', value: { kind: 'list', items: [str('user.a')] } });
  await w.status('OK success');
  t.deepEqual(seen, ['end']);
  t.is(pushedAtHook, Buffer.byteLength('* SASL PLAIN\r\n* LSUB (user.a)\r\nOK success\r\n'));
});
