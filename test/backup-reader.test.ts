/**
 * The backup reading pipeline (src/client/backup/reader.ts) and the
 * point-in-time view (pit.ts) on backups written by the store's writer,
 * hand-made `{N+}` members as the real backupd writes them, and damaged
 * copies.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { PassThrough } from 'node:stream';
import { DataFileReader, BackupReadError, type BackupEntry } from '../src/client/backup/reader.js';
import { messageBody, parseTime, viewAt, TooEarlyError } from '../src/client/backup/pit.js';
import { bobHistory, sha1, toolsFixture } from './backup-tools-helpers.js';

async function entries(fd: number, opts = {}): Promise<BackupEntry[]> {
  const out: BackupEntry[] = [];
  for await (const e of new DataFileReader(fd, opts) as AsyncIterable<BackupEntry>) out.push(e);
  return out;
}

function withFd<T>(p: string, f: (fd: number) => Promise<T>): Promise<T> {
  const fd = fs.openSync(p, 'r');
  return f(fd).finally(() => fs.closeSync(fd));
}

test('reader: chunks, records with offsets, file literals hashed on the way', async (t) => {
  const fx = toolsFixture();
  t.teardown(() => fs.rmSync(fx.dir, { recursive: true, force: true }));
  const { dataPath, bodies } = await bobHistory(fx);
  const es = await withFd(dataPath, (fd) => entries(fd));
  const starts = es.filter((e) => e.type === 'chunk-start');
  t.is(starts.length, 3);
  t.is(starts[0]!.chunk.offset, 0);
  const recs = es.filter((e): e is Extract<BackupEntry, { type: 'record' }> => e.type === 'record');
  t.deepEqual(recs.map((r) => `${r.chunk.seq}:${r.record.ts}:${r.record.item?.key}`), [
    '1:1000:MESSAGE', '1:1001:MAILBOX', '1:1002:MAILBOX', '1:1003:SUB', '1:1004:SIEVE',
    '2:2000:MESSAGE', '2:2001:MAILBOX', '2:2002:SEEN',
    '3:3000:UNMAILBOX', '3:3001:UNSUB', '3:3002:UNSIEVE',
  ]);
  t.is(recs[0]!.record.offset, 29);
  const files = (recs[0]!.record.item!.value as { items: { guid: string; sha1: string }[] }).items;
  t.deepEqual(files.map((f) => f.sha1), [sha1(bodies[0]!), sha1(bodies[1]!)]);
  const ends = es.filter((e) => e.type === 'chunk-end');
  t.true(ends.every((e) => e.type === 'chunk-end' && e.isChunk));
});

test('reader: {N+} literals and a comment line, as the real backupd writes them', async (t) => {
  const fx = toolsFixture();
  t.teardown(() => fs.rmSync(fx.dir, { recursive: true, force: true }));
  const body = Buffer.from('Subject: x\r\n\r\nhi\r\n');
  const text = Buffer.concat([
    Buffer.from('# cyrus backup: chunk start\r\n'),
    Buffer.from(`1700000000 APPLY MESSAGE (%{default ${sha1(body)} ${body.length}}\r\n`),
    body,
    Buffer.from(')\r\n1700000001 APPLY MAILBOX %(UNIQUEID abc MBOXNAME user.x ANNOTATIONS (%(ENTRY /specialuse USERID x MODSEQ 0 VALUE {7+}\r\n\\Drafts)) RECORD ())\r\n'),
  ]);
  const file = `${fx.dir}/plus`;
  fs.writeFileSync(file, Buffer.concat([zlib.gzipSync(Buffer.alloc(0)), zlib.gzipSync(text)]));
  const es = await withFd(file, (fd) => entries(fd));
  const recs = es.filter((e) => e.type === 'record');
  t.is(recs.length, 2);
  const mbox = recs[1]!.type === 'record' ? recs[1]!.record : null;
  t.is(mbox?.item?.key, 'MAILBOX');
  t.is(mbox?.error, undefined);
  t.is(es.filter((e) => e.type === 'chunk-start').length, 1, 'the empty member is skipped');
});

test('reader: a flipped byte and a truncated file name the chunk and offset', async (t) => {
  const fx = toolsFixture();
  t.teardown(() => fs.rmSync(fx.dir, { recursive: true, force: true }));
  const { dataPath } = await bobHistory(fx);
  const size = fs.statSync(dataPath).size;
  const cut = `${fx.dir}/cut`;
  fs.writeFileSync(cut, fs.readFileSync(dataPath).subarray(0, size - 5));
  const err = await withFd(cut, (fd) => entries(fd, { name: cut }).then(() => null, (e: unknown) => e));
  t.true(err instanceof BackupReadError);
  t.is((err as BackupReadError).chunk.seq, 3);
  t.true((err as BackupReadError).truncated);
  t.regex((err as Error).message, /cut: chunk 3 at offset \d+/);

  const flipped = `${fx.dir}/flipped`;
  const b = fs.readFileSync(dataPath);
  b[40] = b[40]! ^ 0xff;
  fs.writeFileSync(flipped, b);
  const err2 = await withFd(flipped, (fd) => entries(fd, { name: 'flipped' }).then(() => null, (e: unknown) => e));
  t.true(err2 instanceof BackupReadError);
  t.is((err2 as BackupReadError).chunk.offset, 0);
});

test('reader: backpressure: a paused consumer holds the reader', async (t) => {
  const fx = toolsFixture();
  t.teardown(() => fs.rmSync(fx.dir, { recursive: true, force: true }));
  const { dataPath } = await bobHistory(fx);
  const fd = fs.openSync(dataPath, 'r');
  t.teardown(() => fs.closeSync(fd));
  const r = new DataFileReader(fd);
  const first = await new Promise<BackupEntry>((resolve) => r.once('readable', () => resolve(r.read() as BackupEntry)));
  t.is(first.type, 'chunk-start');
  await new Promise((resolve) => setImmediate(resolve));
  t.true(r.readableLength <= 16, 'no more than the high-water mark is buffered');
  r.destroy();
});

test('point in time: state at each chunk, deleted folders, expunges, seen, sieve', async (t) => {
  const fx = toolsFixture();
  t.teardown(() => fs.rmSync(fx.dir, { recursive: true, force: true }));
  const { dataPath, bodies } = await bobHistory(fx);
  await withFd(dataPath, async (fd) => {
    await t.throwsAsync(() => viewAt(fd, 999), { instanceOf: TooEarlyError, message: /before the first chunk/ });
    const v1 = await viewAt(fd, 1500);
    t.deepEqual([...v1.mailboxes.values()].map((m) => [m.mboxname, m.deleted]), [['user.bob', null], ['user.bob.Old', null]]);
    t.deepEqual([...v1.mailboxes.get('u-inbox')!.records.values()].map((r) => [r.uid, r.flags, r.expunged]), [[1, ['\\Seen'], null], [2, [], null]]);
    t.deepEqual([...v1.subscriptions], ['user.bob.Old']);
    t.is(v1.sieve.get('a.script')?.content.toString(), 'keep;');
    t.is(v1.seen.size, 0);
    t.false(v1.messages.has(sha1(bodies[2]!)));

    const v2 = await viewAt(fd, 2002);
    t.deepEqual([...v2.mailboxes.get('u-inbox')!.records.values()].map((r) => [r.uid, r.flags, r.expunged]), [[1, ['\\Seen'], null], [2, ['\\Flagged'], 2001], [3, [], null]]);
    t.is(v2.seen.size, 1);

    const v3 = await viewAt(fd, parseTime('1970-01-01T01:00:00Z'));
    t.is(v3.mailboxes.get('u-old')!.deleted, 3000);
    t.is(v3.subscriptions.size, 0);
    t.is(v3.sieve.size, 0);

    const out = new PassThrough();
    const got: Buffer[] = [];
    out.on('data', (c: Buffer) => got.push(c));
    t.true(await messageBody(fd, v3.messages.get(sha1(bodies[2]!))!, out));
    t.deepEqual(Buffer.concat(got), bodies[2]);
  });
});

test('parseTime: ISO 8601 and Unix time', (t) => {
  t.is(parseTime('1700000000'), 1700000000);
  t.is(parseTime('2023-11-14T22:13:20Z'), 1700000000);
  t.is(parseTime('2023-11-14 23:13:20+01:00'), 1700000000);
  t.is(parseTime('2023-11-14'), 1699920000);
  t.throws(() => parseTime('yesterday'), { message: /not a time/ });
});
