/**
 * COMPRESS DEFLATE: our output is raw deflate that zlib's own raw inflate
 * reads; every reply ends in a sync flush (00 00 FF FF) and is completely
 * readable by the peer from the bytes sent so far, without more input.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { PassThrough, Writable } from 'node:stream';
import * as zlib from 'node:zlib';
import {
  SYNC_FLUSH_TRAILER,
  createCompressDeflate,
  createCompressInflate,
  deflateReplySync,
  flushReply,
  gatherWrites,
  insertCompression,
} from '../transforms/deflate.js';
import { ResponseWriter } from '../transforms/serializer.js';

/** Resolves with everything `r` emits once `n` octets have arrived (no timeout: an ava timeout fails the test). */
function readUntil(r: NodeJS.ReadableStream, got: Buffer[], n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const check = (): void => {
      const all = Buffer.concat(got);
      if (all.length >= n) {
        r.off('data', check);
        resolve(all);
      }
    };
    r.on('data', check);
    check();
  });
}

/** Waits (event-loop turns, no clock) until `cond` holds. */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setImmediate(r));
}

/** Inflate what was sent so far with a fresh raw inflater, without ending the stream. */
function inflatePrefix(bytes: Buffer): Buffer {
  // Z_SYNC_FLUSH as finishFlush: inflate what is there, do not demand a stream end.
  return zlib.inflateRawSync(bytes, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
}

test('flushReply: each reply is readable from the bytes sent so far', async (t) => {
  const d = createCompressDeflate();
  const sent: Buffer[] = [];
  d.on('data', (c: Buffer) => sent.push(c));
  const replies = ['* LSUB (user.a user.b)\r\nOK success\r\n', 'OK Noop completed\r\n', `* X ${'y'.repeat(100_000)}\r\nOK success\r\n`];
  let expected = '';
  for (const r of replies) {
    d.write(Buffer.from(r, 'latin1'));
    await flushReply(d);
    expected += r;
    const all = Buffer.concat(sent);
    t.deepEqual(all.subarray(all.length - 4), SYNC_FLUSH_TRAILER, 'ends with the sync-flush block');
    t.is(inflatePrefix(all).toString('latin1'), expected);
  }
});

test('interoperates with a zlib raw inflate stream in both directions', async (t) => {
  const d = createCompressDeflate();
  const peer = zlib.createInflateRaw();
  d.pipe(peer);
  const got: Buffer[] = [];
  peer.on('data', (c: Buffer) => got.push(c));
  d.write(Buffer.from('OK success\r\n'));
  await flushReply(d);
  t.is((await readUntil(peer, got, 12)).toString(), 'OK success\r\n', 'the peer has the reply without more input');

  const inf = createCompressInflate();
  const fromPeer = zlib.createDeflateRaw();
  fromPeer.pipe(inf);
  const cmd: Buffer[] = [];
  inf.on('data', (c: Buffer) => cmd.push(c));
  fromPeer.write('GET USER fixt\r\n');
  fromPeer.flush(zlib.constants.Z_SYNC_FLUSH);
  t.is((await readUntil(inf, cmd, 15)).toString(), 'GET USER fixt\r\n');
});

test('deflateReplySync ends with a sync flush and inflates back', (t) => {
  const data = Buffer.from('* MISSING (0123456789abcdef0123456789abcdef01234567)\r\nOK success\r\n');
  const z = deflateReplySync(data);
  t.deepEqual(z.subarray(z.length - 4), SYNC_FLUSH_TRAILER);
  t.deepEqual(inflatePrefix(z), data);
});

test('ResponseWriter with compression: status lines flush, output inflates', async (t) => {
  const w = new ResponseWriter();
  const sent: Buffer[] = [];
  w.on('data', (c: Buffer) => sent.push(c));
  await w.status('OK DEFLATE active');
  t.is((await readUntil(w, sent, 19)).toString(), 'OK DEFLATE active\r\n', 'the OK line travels uncompressed');
  const plainLen = Buffer.concat(sent).length;
  w.startCompression(createCompressDeflate());
  await w.data({ key: 'LSUB', value: { kind: 'list', items: [{ kind: 'string', value: 'user.fixt.Sent' }] } });
  await w.status('OK success');
  await until(() => {
    const c = Buffer.concat(sent).subarray(plainLen);
    return c.length >= 4 && c.subarray(c.length - 4).equals(SYNC_FLUSH_TRAILER);
  });
  const compressed = Buffer.concat(sent).subarray(plainLen);
  t.deepEqual(compressed.subarray(compressed.length - 4), SYNC_FLUSH_TRAILER);
  t.is(inflatePrefix(compressed).toString(), '* LSUB (user.fixt.Sent)\r\nOK success\r\n');
});

test('insertCompression: socket-like pair, inflated input, flushed output', async (t) => {
  const socketIn = new PassThrough();
  const outChunks: Buffer[] = [];
  const socketOut = new Writable({
    write(c: Buffer, _e, cb) {
      outChunks.push(c);
      cb();
    },
  });
  const peerDeflate = zlib.createDeflateRaw();
  const conn = insertCompression(socketIn, socketOut, deflateReplySync(Buffer.from('NOOP\r\n')));
  peerDeflate.on('data', (c: Buffer) => socketIn.write(c));
  const got: Buffer[] = [];
  conn.input.on('data', (c: Buffer) => got.push(c));
  peerDeflate.write('EXIT\r\n');
  peerDeflate.flush(zlib.constants.Z_SYNC_FLUSH);
  conn.output.write('OK Finished\r\n');
  await conn.flushReply();
  t.is((await readUntil(conn.input, got, 12)).toString(), 'NOOP\r\nEXIT\r\n', 'pending compressed octets come first');
  await until(() => inflatePrefix(Buffer.concat(outChunks)).length >= 13);
  t.is(inflatePrefix(Buffer.concat(outChunks)).toString(), 'OK Finished\r\n');
});

test('insertCompression over one Duplex', async (t) => {
  const { Duplex } = await import('node:stream');
  const written: Buffer[] = [];
  const fromPeer = new PassThrough();
  const socket = new Duplex({
    read() {},
    write(c: Buffer, _e, cb) {
      written.push(c);
      cb();
    },
  });
  fromPeer.on('data', (c: Buffer) => socket.push(c));
  const conn = insertCompression(socket);
  const got: Buffer[] = [];
  conn.input.on('data', (c: Buffer) => got.push(c));
  fromPeer.write(deflateReplySync(Buffer.from('GET USER a\r\n')));
  t.is((await readUntil(conn.input, got, 12)).toString(), 'GET USER a\r\n');
  conn.output.write('OK success\r\n');
  await conn.flushReply();
  await until(() => inflatePrefix(Buffer.concat(written)).length >= 12);
  t.is(inflatePrefix(Buffer.concat(written)).toString(), 'OK success\r\n');
});

test('ResponseWriter with compression: destroying it releases a writer waiting on backpressure', async (t) => {
  const { randomBytes } = await import('node:crypto');
  const w = new ResponseWriter({ highWaterMark: 1024 });
  w.on('error', () => undefined);
  w.startCompression(createCompressDeflate());
  // Nobody reads: incompressible octets fill the deflater and the writer.
  const pending = w.data({ key: 'X', value: { kind: 'literal', value: randomBytes(4 * 1024 * 1024) } });
  let settled = false;
  pending.catch(() => undefined).finally(() => (settled = true));
  await new Promise((r) => setImmediate(r));
  t.false(settled, 'held by backpressure');
  w.destroy();
  await t.throwsAsync(pending);
});

test('createCompressInflate: small reads queued behind a busy inflater are inflated together, in order, byte for byte', async (t) => {
  // Half random (incompressible), half repetitive, so the stream has both kinds of blocks.
  const plain = Buffer.concat(
    Array.from({ length: 500 }, (_, i) => Buffer.concat([Buffer.from(`message ${i} `.repeat(40)), randomBytes(1024)])),
  );
  const wire = deflateReplySync(plain);
  const inflate = createCompressInflate();
  let jobs = 0;
  const raw = inflate as unknown as { _write: (c: Buffer, e: BufferEncoding, cb: () => void) => void };
  const write = raw._write.bind(inflate);
  raw._write = (c, e, cb) => {
    jobs++;
    write(c, e, cb);
  };
  const got: Buffer[] = [];
  inflate.on('data', (d: Buffer) => got.push(d));
  let reads = 0;
  // 4 KiB reads, written as fast as the stream accepts them.
  for (let i = 0; i < wire.length; i += 4096) {
    reads++;
    if (!inflate.write(wire.subarray(i, i + 4096))) await new Promise((r) => inflate.once('drain', r));
  }
  const out = await readUntil(inflate, got, plain.length);
  t.true(out.equals(plain));
  t.true(jobs < reads, `${reads} reads inflated in ${jobs} jobs`);
  inflate.destroy();
});

test('gatherWrites keeps a queued flush() a flush of its own', async (t) => {
  const deflate = createCompressDeflate();
  gatherWrites(deflate);
  const got: Buffer[] = [];
  deflate.on('data', (d: Buffer) => got.push(d));
  const replies = ['* ONE\r\n', '* TWO\r\n', 'OK done\r\n'];
  for (const r of replies) deflate.write(r);
  await new Promise<void>((resolve) => deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()));
  const all = Buffer.concat(got);
  t.true(all.subarray(all.length - 4).equals(SYNC_FLUSH_TRAILER), 'the output ends with the sync flush');
  t.is(inflatePrefix(all).toString(), replies.join(''));
  deflate.destroy();
});
