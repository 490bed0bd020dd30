/**
 * CommandReader (stream adapter). Invariants under test:
 * - commands are parsed only on demand: nothing after a returned command is
 *   looked at (no body opened) before the next nextCommand();
 * - a slow body writer pauses the source: octets held inside the pipeline
 *   stay within a few chunks whatever the body size;
 * - detachRemainder() returns exactly the octets after a command, so the
 *   session can switch transport (COMPRESS DEFLATE);
 * - end of input => null; truncation and limit violations reject typed.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { deflateRawSync, createInflateRaw, createDeflateRaw } from 'node:zlib';
import {
  CommandReader,
  FramingError,
  type BodySink,
  type CommandLine,
  type DlistValue,
} from '../transforms/index.js';
import { drainSoon, laggingSink } from './helpers/body-writers.js';

const bin = (s: string) => Buffer.from(s, 'latin1');
const sha1 = (b: Buffer | string) => createHash('sha1').update(b).digest('hex');

test('commands one at a time; end of input gives null', async (t) => {
  const reader = new CommandReader();
  reader.end(bin('GET USER a\r\nNOOP\r\nEXIT\r\n'));
  const verbs: string[] = [];
  for await (const c of reader) verbs.push(c.verb);
  t.deepEqual(verbs, ['GET', 'NOOP', 'EXIT']);
  t.is(await reader.nextCommand(), null);
});

test('nothing after a returned command is parsed until the next nextCommand()', async (t) => {
  const opened: unknown[] = [];
  const sink: BodySink = { open: (h) => (opened.push(h.guid), null) };
  const reader = new CommandReader({ sink });
  reader.write(bin('NOOP\r\nAPPLY MESSAGE (%{default abc 3}\r\nxyz)\r\n'));
  const first = await reader.nextCommand();
  t.is(first!.verb, 'NOOP');
  await delay(10);
  t.deepEqual(opened, []);
  t.true(reader.bufferedBytes > 0);
  const second = await reader.nextCommand();
  t.deepEqual(opened, ['abc']);
  t.is(second!.verb, 'APPLY');
});

test('the body sink can be swapped between commands', async (t) => {
  const got: string[] = [];
  const named = (name: string): BodySink => ({ open: () => (got.push(name), null) });
  const reader = new CommandReader({ sink: named('first') });
  reader.end(bin('APPLY MESSAGE (%{p a 1}\r\nx)\r\nAPPLY MESSAGE (%{p b 1}\r\ny)\r\n'));
  await reader.nextCommand();
  reader.bodySink = named('second');
  await reader.nextCommand();
  t.deepEqual(got, ['first', 'second']);
});

test('truncated input rejects with "Unexpected end of data"', async (t) => {
  const reader = new CommandReader();
  reader.on('error', () => undefined);
  reader.end(bin('NOOP\r\nAPPLY MESSAGE (%{p a 10}\r\nxyz'));
  t.is((await reader.nextCommand())!.verb, 'NOOP');
  const err = await t.throwsAsync(reader.nextCommand(), { instanceOf: FramingError });
  t.is(err!.message, 'Unexpected end of data');
});

test('a limit violation rejects nextCommand and destroys the reader with the FramingError', async (t) => {
  const reader = new CommandReader({ limits: { maxLiteralSize: 5 } });
  const errored = new Promise<Error>((resolve) => reader.on('error', resolve));
  reader.write(bin('APPLY X {6+}\r\n123456)\r\n'));
  const err = await t.throwsAsync(reader.nextCommand(), { instanceOf: FramingError });
  t.is(err!.code, 'IMAP_LITERAL_MINUS_TOO_LARGE');
  t.is(await errored, err);
  t.true(reader.destroyed);
});

test('detachRemainder: switch to DEFLATE after COMPRESS with the deflated bytes already sent', async (t) => {
  const reader = new CommandReader();
  const deflated = deflateRawSync(bin('GET USER fixt\r\nEXIT\r\n'));
  const source = new Readable({ read() {} });
  source.pipe(reader);
  source.push(Buffer.concat([bin('COMPRESS DEFLATE\r\n'), deflated]));
  const c = await reader.nextCommand();
  t.is(c!.verb, 'COMPRESS');
  source.unpipe(reader);
  const rest = reader.detachRemainder();
  t.deepEqual(rest, deflated);
  const inflate = createInflateRaw();
  inflate.pipe(reader);
  inflate.write(rest);
  const verbs: string[] = [];
  for (let x = await reader.nextCommand(); x !== null; x = await reader.nextCommand()) {
    verbs.push(x.verb + ' ' + x.args.map((a) => (a as { value: string }).value).join(' '));
    if (x.verb === 'EXIT') inflate.end();
  }
  t.deepEqual(verbs, ['GET USER fixt', 'EXIT ']);
});

test('detachRemainder refuses while a command is incomplete or requested', async (t) => {
  const reader = new CommandReader();
  reader.write(bin('NOOP\r\nAPPLY X (a'));
  await reader.nextCommand();
  const pending = reader.nextCommand();
  t.throws(() => reader.detachRemainder(), { message: /pending/ });
  reader.end(bin(')\r\n'));
  t.is((await pending)!.verb, 'APPLY');
  t.deepEqual(reader.detachRemainder(), Buffer.alloc(0));
});

/**
 * A writer that refuses every chunk and drains on a timer, like a slow disk.
 * Records how many octets the pipeline held each time a chunk arrived.
 */
function slowSink(onWrite: () => void): { sink: BodySink; total: () => number; hash: () => string } {
  let total = 0;
  const h = createHash('sha1');
  const sink = laggingSink({
    onWrite(chunk) {
      onWrite();
      total += chunk.length;
      h.update(chunk);
      return drainSoon;
    },
  });
  return { sink, total: () => total, hash: () => h.digest('hex') };
}

test('slow body consumer: octets buffered in the pipeline stay bounded', async (t) => {
  const CHUNK = 16 * 1024;
  const SIZE = 4 * 1024 * 1024;
  const block = Buffer.alloc(CHUNK, 'm');
  const expect = createHash('sha1');
  for (let i = 0; i < SIZE / CHUNK; i++) expect.update(block);
  const guid = expect.digest('hex');
  let produced = 0;
  let state = 0;
  const source = new Readable({
    highWaterMark: CHUNK,
    read() {
      if (state === 0) {
        state = 1;
        this.push(bin(`APPLY MESSAGE (%{default ${guid} ${SIZE}}\r\n`));
      } else if (produced < SIZE) {
        produced += CHUNK;
        this.push(block);
      } else if (state === 1) {
        state = 2;
        this.push(bin(')\r\n'));
        this.push(null);
      }
    },
  });
  const reader = new CommandReader();
  let peak = 0;
  let samples = 0;
  const slow = slowSink(() => {
    samples++;
    // Everything between the producer and the disk: the source's buffer,
    // the reader's queued writes and what the parser holds.
    const held = source.readableLength + reader.writableLength + reader.bufferedBytes;
    peak = Math.max(peak, held);
  });
  reader.bodySink = slow.sink;
  source.pipe(reader);
  const c = (await reader.nextCommand()) as CommandLine;
  const file = (c.args[1] as { items: DlistValue[] }).items[0] as Extract<DlistValue, { kind: 'file' }>;
  t.is(file.sha1, guid);
  t.is(slow.total(), SIZE);
  t.true(samples >= SIZE / CHUNK);
  t.log(`peak octets held: ${peak} (chunk ${CHUNK})`);
  t.true(peak <= 4 * CHUNK, `peak ${peak}`);
  t.is(await reader.nextCommand(), null);
});

test('a body writer that never drains keeps the source paused (no parse past it)', async (t) => {
  const sink: BodySink = {
    open: () => ({ write: () => false, onDrain: () => undefined, end: () => t.fail() as never, abort: () => undefined }),
  };
  const reader = new CommandReader({ sink });
  const source = Readable.from([bin('APPLY MESSAGE (%{p g 8}\r\nab'), bin('cdefgh)\r\n'), bin('NOOP\r\n')], { objectMode: false });
  source.pipe(reader);
  let settled = false;
  void reader.nextCommand().then(() => (settled = true), () => (settled = true));
  await delay(50);
  t.false(settled);
  t.true(reader.writableLength > 0);
  reader.destroy();
});

test('COMPRESS round trip through a real deflate stream, commands on demand', async (t) => {
  const deflate = createDeflateRaw();
  const inflate = createInflateRaw();
  const reader = new CommandReader();
  deflate.pipe(inflate).pipe(reader);
  const msg = 'x'.repeat(70000);
  deflate.write(bin(`APPLY MESSAGE (%{default ${sha1(msg)} ${msg.length}}\r\n${msg})\r\n`));
  deflate.end(bin('EXIT\r\n'));
  const seen: string[] = [];
  for await (const c of reader) {
    seen.push(c.verb);
    if (c.verb === 'APPLY') {
      const f = (c.args[1] as { items: DlistValue[] }).items[0] as Extract<DlistValue, { kind: 'file' }>;
      t.is(f.sha1, f.guid);
    }
  }
  t.deepEqual(seen, ['APPLY', 'EXIT']);
});

test('a writer refusing the last chunk of a body does not stall: end() takes over (no drain after end)', async (t) => {
  // Like fs.WriteStream: write() returns false, and after end() no 'drain' comes.
  let ended = 0;
  const sink = laggingSink({ onWrite: () => drainSoon, onEnd: () => void ended++ });
  const reader = new CommandReader({ sink });
  reader.write(bin('APPLY MESSAGE (%{p g 4}\r\nab'));
  reader.write(bin('cd'));
  reader.end(bin(' %{p h 1}\r\nx)\r\nNOOP\r\n'));
  t.is((await reader.nextCommand())!.verb, 'APPLY');
  t.is(ended, 2);
  t.is((await reader.nextCommand())!.verb, 'NOOP');
  t.is(await reader.nextCommand(), null);
});
