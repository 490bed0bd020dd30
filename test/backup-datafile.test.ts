import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import type { DlistItem, DlistValue } from '../transforms/dlist-types.js';
import { memoryBodySink, type MemoryStagedBody } from '../transforms/dlist-parser.js';
import {
  CHUNK_HEADER,
  ChunkWriter,
  DataFileError,
  EMPTY_SHA1,
  checkTail,
  readChunkRecords,
  readMember,
  scanMembers,
  sha1OfPrefix,
} from '../sinks/backup/datafile.js';
import { lockExclusive, type FileLock } from '../sinks/backup/lock.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

const sha1 = (b: Buffer | string): string => createHash('sha1').update(b).digest('hex');

async function freshFile(): Promise<{ file: string; lock: FileLock }> {
  const dir = trackedTempDir('cyrsync-datafile-');
  const file = path.join(dir, 'bob_ABCDEF');
  const lock = (await lockExclusive(file, { wait: false, create: true, append: true }))!;
  return { file, lock };
}

function fileValue(body: Buffer, partition = 'default'): DlistValue {
  return { kind: 'file', partition, guid: sha1(body), size: body.length, source: () => Readable.from([body]) };
}

const atom = (value: string): DlistValue => ({ kind: 'atom', value });
const kv = (items: [string, DlistValue][]): DlistValue => ({ kind: 'kvlist', items: items.map(([key, value]) => ({ key, value })) });

/** Splits a data file into its gzip members with zlib alone (an independent reader). */
function inflateAll(file: string): Buffer {
  return zlib.gunzipSync(fs.readFileSync(file));
}

test('a chunk: header, records, offsets, checksums over what was written', async (t) => {
  const { file, lock } = await freshFile();
  const w = new ChunkWriter(lock.fd);
  const body = Buffer.from('From: a@example.com\r\nSubject: one\r\n\r\nbody\r\n');
  const start = await w.start(1700000000);
  t.deepEqual(start, { offset: 0, fileSha1: EMPTY_SHA1, tsStart: 1700000000 });
  const r1 = await w.append({ key: 'MESSAGE', value: { kind: 'list', items: [fileValue(body)] } }, 1700000001);
  const r2 = await w.append({ key: 'UNMAILBOX', value: atom('user.bob.Old') }, 1700000002);
  const end = await w.end(1700000003);
  lock.release();

  const text = inflateAll(file);
  const expected = Buffer.concat([
    CHUNK_HEADER,
    Buffer.from(`1700000001 APPLY MESSAGE (%{default ${sha1(body)} ${body.length}}\r\n`, 'latin1'),
    body,
    Buffer.from(')\r\n1700000002 APPLY UNMAILBOX user.bob.Old\r\n', 'latin1'),
  ]);
  t.deepEqual(text, expected);
  t.is(CHUNK_HEADER.length, 29);
  t.is(r1.offset, 29);
  t.is(r2.offset, r1.offset + r1.length);
  t.is(end.length, expected.length);
  t.is(end.dataSha1, sha1(expected));
  t.is(end.compressedLength, fs.statSync(file).size);
  t.is(end.records, 2);
  t.is(end.tsEnd, 1700000003);
});

test('non-file literals are written {N}, never {N+}; canonical strings otherwise', async (t) => {
  const { file, lock } = await freshFile();
  const w = new ChunkWriter(lock.fd);
  await w.start(100);
  const annot = kv([
    ['ENTRY', atom('/specialuse')],
    ['USERID', atom('bob')],
    ['VALUE', { kind: 'quoted', value: '\\Drafts' }],
  ]);
  await w.append({ key: 'MAILBOX', value: kv([['MBOXNAME', { kind: 'quoted', value: 'user.bob.Drafts' }], ['ANNOTATIONS', { kind: 'list', items: [annot] }], ['ACL', { kind: 'literal', value: Buffer.from('bob\tlrswipkxtecdan\t') }], ['EMPTY', { kind: 'quoted', value: '' }], ['NILTEXT', { kind: 'quoted', value: 'NIL' }]]) }, 101);
  await w.end(102);
  lock.release();
  const text = inflateAll(file).toString('latin1');
  t.true(text.includes('VALUE {7}\r\n\\Drafts)'));
  t.false(text.includes('+}'));
  t.true(text.includes('MBOXNAME user.bob.Drafts '));
  t.true(text.includes('ACL "bob\tlrswipkxtecdan\t"'));
  t.true(text.includes('EMPTY ""'));
  t.true(text.includes('NILTEXT "NIL"'));
});

test('chunks append as separate members; file_sha1 covers everything before', async (t) => {
  const { file, lock } = await freshFile();
  const w = new ChunkWriter(lock.fd);
  await w.start(10);
  await w.append({ key: 'SUB', value: kv([['USERID', atom('bob')], ['MBOXNAME', atom('user.bob')]]) }, 11);
  const c1 = await w.end(12);
  const c2start = await w.start(13);
  await w.append({ key: 'UNSUB', value: kv([['USERID', atom('bob')], ['MBOXNAME', atom('user.bob')]]) }, 14);
  const c2 = await w.end(15);
  const bytes = fs.readFileSync(file);
  t.is(c2start.offset, c1.compressedLength);
  t.is(c2.fileSha1, sha1(bytes.subarray(0, c2.offset)));
  t.is(await sha1OfPrefix(lock.fd, c2.offset), c2.fileSha1);
  const scan = await scanMembers(lock.fd);
  t.is(scan.error, null);
  t.deepEqual(scan.members.map((m) => [m.offset, m.end, m.length, m.dataSha1]), [
    [0, c1.compressedLength, c1.length, c1.dataSha1],
    [c2.offset, bytes.length, c2.length, c2.dataSha1],
  ]);
  lock.release();
});

test('timestamps never go backwards: clamped to the floor and the previous record', async (t) => {
  const { file, lock } = await freshFile();
  const w = new ChunkWriter(lock.fd, 500);
  const s = await w.start(400);
  t.is(s.tsStart, 500);
  t.is((await w.append({ key: 'UNMAILBOX', value: atom('a') }, 600)).ts, 600);
  t.is((await w.append({ key: 'UNMAILBOX', value: atom('b') }, 550)).ts, 600);
  const e = await w.end(590);
  t.is(e.tsEnd, 600);
  lock.release();
  t.regex(inflateAll(file).toString('latin1'), /600 APPLY UNMAILBOX a\r\n600 APPLY UNMAILBOX b\r\n$/);
});

test('a body that does not match its GUID fails the chunk; abort cuts the file back', async (t) => {
  const { file, lock } = await freshFile();
  const w = new ChunkWriter(lock.fd);
  await w.start(1);
  await w.append({ key: 'UNMAILBOX', value: atom('x') }, 1);
  const good = await w.end(2);
  await w.start(3);
  const body = Buffer.from('the real bytes');
  const lying: DlistValue = { kind: 'file', partition: 'default', guid: sha1('other bytes'), size: body.length, source: () => Readable.from([body]) };
  await t.throwsAsync(w.append({ key: 'MESSAGE', value: { kind: 'list', items: [lying] } }, 4), { message: /SHA-1/ });
  await w.abort();
  t.is(fs.statSync(file).size, good.compressedLength);
  // The writer is usable again.
  await w.start(5);
  await w.append({ key: 'UNMAILBOX', value: atom('y') }, 5);
  await w.end(6);
  const scan = await scanMembers(lock.fd);
  t.is(scan.members.length, 2);
  t.is(scan.error, null);
  lock.release();
});

test('a big file literal streams through with flat memory and the right checksum', async (t) => {
  const { lock } = await freshFile();
  const w = new ChunkWriter(lock.fd, 0, { level: 1 });
  const size = 64 * 1024 * 1024;
  const piece = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < piece.length; i++) piece[i] = (i * 7919) & 0xff;
  const h = createHash('sha1');
  for (let i = 0; i < size / piece.length; i++) h.update(piece);
  const guid = h.digest('hex');
  const source = (): Readable => Readable.from((function* () {
    for (let i = 0; i < size / piece.length; i++) yield piece;
  })());
  await w.start(1);
  const before = process.memoryUsage().rss;
  await w.append({ key: 'MESSAGE', value: { kind: 'list', items: [{ kind: 'file', partition: 'default', guid, size, source }] } }, 2);
  const grown = process.memoryUsage().rss - before;
  const e = await w.end(3);
  t.true(grown < 48 * 1024 * 1024, `rss grew by ${grown}`);
  const r = await readChunkRecords(lock.fd, 0, { sink: null });
  t.is(r.length, e.length);
  t.is(r.dataSha1, e.dataSha1);
  const f = (r.records[0]!.item!.value as { items: DlistValue[] }).items[0] as { sha1: string; size: number };
  t.is(f.sha1, guid);
  t.is(f.size, size);
  lock.release();
});

test('the reader parses records, {N} and {N+} literals, comments, and locates each record', async (t) => {
  const { lock } = await freshFile();
  const body = Buffer.from('Subject: x\r\n\r\ny\r\n');
  const content = Buffer.concat([
    CHUNK_HEADER,
    Buffer.from(`5 APPLY MESSAGE (%{default ${sha1(body)} ${body.length}}\r\n`),
    body,
    Buffer.from(')\r\n# a comment line\n6 APPLY SIEVE %(USERID bob FILENAME peer.script LAST_UPDATE 6 CONTENT {5+}\r\nkeep;)\r\n'),
    Buffer.from('7 APPLY MAILBOX %(MBOXNAME {7}\r\nuser.ab VALUE {2}\r\nhi)\n'),
  ]);
  fs.writeSync(lock.fd, zlib.gzipSync(content));
  const r = await readChunkRecords(lock.fd, 0, { sink: memoryBodySink() });
  t.true(r.isChunk);
  t.is(r.length, content.length);
  t.is(r.dataSha1, sha1(content));
  t.deepEqual(r.records.map((x) => [x.ts, x.command, x.item?.key]), [[5, 'APPLY', 'MESSAGE'], [6, 'APPLY', 'SIEVE'], [7, 'APPLY', 'MAILBOX']]);
  t.is(r.records[0]!.offset, 29);
  for (const rec of r.records) t.is(content.subarray(rec.offset, rec.offset + String(rec.ts).length).toString(), String(rec.ts));
  const f = (r.records[0]!.item!.value as { items: DlistValue[] }).items[0] as { body: MemoryStagedBody; sha1: string };
  t.deepEqual(f.body.ref, body);
  t.is(f.sha1, sha1(body));
  const sieve = (r.records[1]!.item!.value as { items: DlistItem[] }).items.find((i) => i.key === 'CONTENT')!.value;
  t.deepEqual(sieve, { kind: 'literal', value: Buffer.from('keep;') });
  lock.release();
});

test('empty members are skipped by scans and are not chunks', async (t) => {
  const { lock } = await freshFile();
  const empty = zlib.gzipSync(Buffer.alloc(0));
  const chunk = zlib.gzipSync(CHUNK_HEADER);
  fs.writeSync(lock.fd, Buffer.concat([empty, chunk, empty]));
  const scan = await scanMembers(lock.fd);
  t.deepEqual(scan.members.map((m) => m.length), [0, 29, 0]);
  const r = await readChunkRecords(lock.fd, empty.length);
  t.true(r.isChunk);
  t.deepEqual(r.records, []);
  const r0 = await readChunkRecords(lock.fd, 0);
  t.false(r0.isChunk);
  lock.release();
});

test('torn tails: a cut member, a broken member, an unindexed chunk; empty members kept', async (t) => {
  const { lock } = await freshFile();
  const w = new ChunkWriter(lock.fd);
  await w.start(1);
  await w.append({ key: 'UNMAILBOX', value: atom('x') }, 1);
  const c = await w.end(2);
  const last = { offset: c.offset, length: c.length, data_sha1: c.dataSha1 };
  t.deepEqual(await checkTail(lock.fd, last), { chunkEnd: c.compressedLength, goodEnd: c.compressedLength, fileSize: c.compressedLength, reason: null });

  const empty = zlib.gzipSync(Buffer.alloc(0));
  fs.writeSync(lock.fd, empty);
  const withEmpty = c.compressedLength + empty.length;
  t.is((await checkTail(lock.fd, last)).goodEnd, withEmpty);

  const another = zlib.gzipSync(Buffer.concat([CHUNK_HEADER, Buffer.from('3 APPLY UNMAILBOX y\r\n')]));
  fs.writeSync(lock.fd, another.subarray(0, another.length - 5));
  let tail = await checkTail(lock.fd, last);
  t.is(tail.goodEnd, withEmpty);
  t.regex(tail.reason!, /ends inside/);

  fs.ftruncateSync(lock.fd, withEmpty);
  fs.writeSync(lock.fd, another);
  tail = await checkTail(lock.fd, last);
  t.is(tail.goodEnd, withEmpty);
  t.regex(tail.reason!, /not in the index/);

  fs.ftruncateSync(lock.fd, withEmpty);
  const broken = Buffer.from(another);
  broken[broken.length - 6] ^= 0xff;
  fs.writeSync(lock.fd, broken);
  tail = await checkTail(lock.fd, last);
  t.is(tail.goodEnd, withEmpty);
  t.truthy(tail.reason);

  // Nothing indexed yet: everything is a torn first chunk.
  t.is((await checkTail(lock.fd, null)).goodEnd, 0);
  // An index that disagrees with the data is not a torn tail: it is an error.
  await t.throwsAsync(checkTail(lock.fd, { ...last, length: last.length + 1 }), { message: /does not match the index/ });
  lock.release();
});

test('readMember reports a cut member as truncated', async (t) => {
  const { lock } = await freshFile();
  const m = zlib.gzipSync(Buffer.alloc(100000, 'q'));
  fs.writeSync(lock.fd, m.subarray(0, m.length - 20));
  const err = await t.throwsAsync(readMember(lock.fd, 0), { instanceOf: DataFileError });
  t.true(err!.truncated);
  lock.release();
});

test('file_sha1 stays right when the file changed between chunks (carried hash is not trusted blindly)', async (t) => {
  const { file, lock } = await freshFile();
  const w = new ChunkWriter(lock.fd);
  await w.start(1);
  await w.append({ key: 'UNMAILBOX', value: atom('a') }, 1);
  const c1 = await w.end(2);
  // Grown behind the writer's back (an empty member), then shrunk.
  fs.writeSync(lock.fd, zlib.gzipSync(Buffer.alloc(0)));
  const c2 = await w.start(3);
  t.is(c2.fileSha1, sha1(fs.readFileSync(file).subarray(0, c2.offset)));
  await w.abort();
  fs.ftruncateSync(lock.fd, c1.compressedLength - 1);
  const c3 = await w.start(4);
  t.is(c3.offset, c1.compressedLength - 1);
  t.is(c3.fileSha1, sha1(fs.readFileSync(file).subarray(0, c3.offset)));
  await w.abort();
  lock.release();
});

test('members with optional gzip header fields (FEXTRA, FNAME, FCOMMENT, FHCRC) are read', async (t) => {
  const { lock } = await freshFile();
  const content = Buffer.concat([CHUNK_HEADER, Buffer.from('9 APPLY UNMAILBOX z\r\n')]);
  const raw = zlib.deflateRawSync(content);
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(zlib.crc32(content), 0);
  trailer.writeUInt32LE(content.length, 4);
  const header = Buffer.concat([
    Buffer.from([0x1f, 0x8b, 8, 4 | 8 | 16 | 2, 0, 0, 0, 0, 0, 3]),
    Buffer.from([3, 0, 1, 2, 3]),
    Buffer.from('name\0comment\0', 'latin1'),
    Buffer.from([0xaa, 0xbb]),
  ]);
  const member = Buffer.concat([header, raw, trailer]);
  fs.writeSync(lock.fd, Buffer.concat([member, member]));
  const r = await readChunkRecords(lock.fd, 0);
  t.is(r.end, member.length);
  t.deepEqual(r.records.map((x) => [x.ts, x.item?.key]), [[9, 'UNMAILBOX']]);
  t.is((await scanMembers(lock.fd)).members.length, 2);
  lock.release();
});

test('any string survives the canonical {N} output and the reader (property)', async (t) => {
  const { lock } = await freshFile();
  const w = new ChunkWriter(lock.fd);
  await w.start(1);
  const values: string[] = [];
  const samples = fc.sample(
    fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.uint8Array({ maxLength: 60 }).map((a) => Buffer.from(a).toString('latin1')),
      fc.constantFrom('NIL', '', '\\Drafts', '"q"', '%x', '(a)', 'a b', 'x'.repeat(1500), '{5}', 'tab\there'),
    ),
    { numRuns: 300, seed: 4242 },
  );
  for (const raw of samples) {
    const v = Buffer.from(raw, 'utf8').length === raw.length ? raw : Buffer.from(raw, 'utf8').toString('latin1');
    values.push(v);
    await w.append({ key: 'SEEN', value: kv([['SEENUIDS', { kind: 'string', value: v }], ['N', atom('1')]]) }, 2);
  }
  await w.end(3);
  const r = await readChunkRecords(lock.fd, 0);
  t.is(r.records.length, values.length);
  const text = zlib.gunzipSync(fs.readFileSync(lock.path)).toString('latin1');
  t.false(text.includes('+}'));
  r.records.forEach((rec, i) => {
    const items = (rec.item!.value as { items: DlistItem[] }).items;
    const got = items[0]!.value;
    const s = got.kind === 'literal' ? got.value.toString('latin1') : got.kind === 'nil' ? null : (got as { value: string }).value;
    t.is(s, values[i]!, `value ${i}`);
  });
  lock.release();
});
