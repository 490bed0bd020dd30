import test from 'ava';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import type { DlistItem, DlistValue } from '../transforms/dlist-types.js';
import {
  BackupAppender,
  BackupIndex,
  INIT_SQL,
  ReindexNeededError,
  VerifyError,
  openBackup,
} from '../sinks/backup/index-db.js';
import { readChunkRecords, CHUNK_HEADER } from '../sinks/backup/datafile.js';
import { VERIFY_FULL, VERIFY_QUICK, verifyBackup } from '../sinks/backup/index-db.js';
import { reindexStreaming } from '../src/client/backup/reindex.js';
import { recordedApplies } from './backup-sink-helpers.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

const sha1 = (b: Buffer | string): string => createHash('sha1').update(b).digest('hex');
const atom = (value: string): DlistValue => ({ kind: 'atom', value });
const num = (value: number): DlistValue => ({ kind: 'atom', value: String(value) });
const list = (...items: DlistValue[]): DlistValue => ({ kind: 'list', items });
const kv = (o: Record<string, DlistValue>): DlistValue => ({ kind: 'kvlist', items: Object.entries(o).map(([key, value]) => ({ key, value })) });
const flag = (value: string): DlistValue => ({ kind: 'flag', value });

function tmp(): string {
  return trackedTempDir('cyrsync-index-');
}

function freshIndex(): BackupIndex {
  return BackupIndex.open(path.join(tmp(), 'x.index'), { dataFileSize: 0 });
}

function mailbox(over: Record<string, DlistValue> = {}, records: DlistValue[] = []): DlistItem {
  return {
    key: 'MAILBOX',
    value: kv({
      UNIQUEID: atom('u1'), MBOXNAME: atom('user.bob'), SYNC_CRC: num(123), SYNC_CRC_ANNOT: num(0), LAST_UID: num(3), HIGHESTMODSEQ: num(10),
      RECENTUID: num(3), RECENTTIME: num(1700000000), LAST_APPENDDATE: num(1700000001), POP3_LAST_LOGIN: num(0), UIDVALIDITY: num(1600000000),
      PARTITION: atom('default'), ACL: { kind: 'quoted', value: 'bob\tlrswipkxtecdan\t' }, OPTIONS: atom('P'), RECORD: list(...records), ...over,
    }),
  };
}

function rec(uid: number, guid: string, flags: DlistValue[], modseq = 5): DlistValue {
  return kv({ UID: num(uid), MODSEQ: num(modseq), LAST_UPDATED: num(1700000002), FLAGS: list(...flags), INTERNALDATE: num(1700000003), SIZE: num(10), GUID: atom(guid) });
}

function message(...guids: string[]): DlistItem {
  return { key: 'MESSAGE', value: list(...guids.map((g) => ({ kind: 'file', partition: 'default', guid: g, size: 10 }) as DlistValue)) };
}

test('a new index: Cyrus schema text, user_version 3, connection pragmas', (t) => {
  const idx = freshIndex();
  t.is(idx.userVersion, 3);
  const sqls = (idx.db.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid").all() as { sql: string }[]).map((r) => r.sql);
  // The exact single-line statements of lcb_sqlconsts.c after QUOTE().
  t.is(sqls[0], 'CREATE TABLE chunk( id INTEGER PRIMARY KEY ASC, ts_start INTEGER, ts_end INTEGER, offset INTEGER unique, length INTEGER, file_sha1 TEXT, data_sha1 TEXT )');
  t.true(sqls.includes('CREATE TABLE mailbox_message( id INTEGER PRIMARY KEY ASC, mailbox_id INTEGER NOT NULL REFERENCES mailbox(id), message_id INTEGER NOT NULL REFERENCES message(id), last_chunk_id INTEGER NOT NULL REFERENCES chunk(id), uid INTEGER NOT NULL, modseq INTEGER, last_updated INTEGER, flags CHAR, internaldate INTEGER, annotations CHAR, expunged INTEGER, UNIQUE (mailbox_id, message_id) )'));
  t.true(sqls.includes('CREATE INDEX idx_siv_fn ON sieve(filename)') || sqls.includes('CREATE INDEX IF NOT EXISTS idx_siv_fn ON sieve(filename)'));
  t.is(INIT_SQL.includes('\n'), false);
  t.is(idx.db.pragma('foreign_keys', { simple: true }), 1);
  t.is(idx.db.pragma('journal_mode', { simple: true }), 'delete');
  idx.close();
});

test('older indexes are upgraded to 4; 3 and 4 are accepted; others refused', (t) => {
  const dir = tmp();
  const p = path.join(dir, 'old.index');
  const db = new Database(p);
  db.exec("CREATE TABLE chunk( id INTEGER PRIMARY KEY ASC, ts_start INTEGER, ts_end INTEGER, offset INTEGER unique, length INTEGER, file_sha1 TEXT, data_sha1 TEXT ); CREATE TABLE message( id INTEGER PRIMARY KEY ASC, guid CHAR UNIQUE NOT NULL, partition CHAR, chunk_id INTEGER REFERENCES chunk(id), offset INTEGER, size INTEGER );");
  db.pragma('user_version = 1');
  db.close();
  const idx = BackupIndex.open(p, { dataFileSize: 0 });
  t.is(idx.userVersion, 4);
  const tables = (idx.db.prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
  t.deepEqual(tables, ['chunk', 'message', 'seen', 'sieve', 'subscription']);
  idx.close();
  t.is(BackupIndex.open(p, { dataFileSize: 0 }).userVersion, 4);
  const q = path.join(dir, 'future.index');
  const f = new Database(q);
  f.exec('CREATE TABLE x(y)');
  f.pragma('user_version = 9');
  f.close();
  t.throws(() => BackupIndex.open(q, { dataFileSize: 0 }), { message: /version 9/ });
});

test('a non-empty data file without an index needs a reindex (no empty index is made)', (t) => {
  const dir = tmp();
  const p = path.join(dir, 'x.index');
  t.throws(() => BackupIndex.open(p, { dataFileSize: 100 }), { instanceOf: ReindexNeededError });
  t.false(fs.existsSync(p));
  fs.writeFileSync(p, '');
  t.throws(() => BackupIndex.open(p, { dataFileSize: 100 }), { instanceOf: ReindexNeededError });
});

test('chunk rows: start and end in one transaction; rollback leaves nothing', (t) => {
  const idx = freshIndex();
  const id = idx.beginChunk(100, 0, 'da39a3ee5e6b4b0d3255bfef95601890afd80709');
  t.is(id, 1);
  idx.endChunk(105, 29, 'abc');
  t.deepEqual(idx.chunks(), [{ id: 1, ts_start: 100, ts_end: 105, offset: 0, length: 29, file_sha1: 'da39a3ee5e6b4b0d3255bfef95601890afd80709', data_sha1: 'abc' }]);
  idx.beginChunk(106, 50, 'def');
  idx.indexRecord(106, 29, { key: 'SUB', value: kv({ USERID: atom('bob'), MBOXNAME: atom('user.bob') }) });
  idx.rollbackChunk();
  t.is(idx.chunks().length, 1);
  t.deepEqual(idx.subscriptions(false), []);
  t.throws(() => idx.indexRecord(1, 1, { key: 'SUB', value: kv({}) }), { message: /no chunk transaction/ });
  idx.close();
});

test('MAILBOX and MESSAGE: rows, flags text, \\Expunged, records without messages skipped', (t) => {
  const idx = freshIndex();
  const g1 = 'a'.repeat(40);
  const g2 = 'b'.repeat(40);
  const g3 = 'c'.repeat(40);
  const c = idx.beginChunk(1000, 0, 'x');
  idx.indexRecord(1001, 29, message(g1, g2));
  idx.indexRecord(1002, 200, mailbox({}, [rec(1, g1, [flag('\\Seen'), atom('$Label1')]), rec(2, g2, [flag('\\Expunged'), flag('\\Flagged')]), rec(3, g3, [])]));
  idx.endChunk(1003, 300, 'y');
  const [mb] = idx.mailboxes();
  t.like(mb, { id: 1, last_chunk_id: c, uniqueid: 'u1', mboxname: 'user.bob', mboxtype: null, last_uid: 3, highestmodseq: 10, partition: 'default', acl: 'bob\tlrswipkxtecdan\t', options: 'P', sync_crc: 123, quotaroot: null, xconvmodseq: 0, annotations: '', deleted: null, pop3_show_after: 0 });
  const recs = idx.mailboxRecords(mb!.id);
  t.deepEqual(recs.map((r) => [r.uid, r.guid, r.flags, r.expunged, r.size]), [[1, g1, '(\\Seen $Label1)', null, 10], [2, g2, '(\\Flagged)', 1002, 10]]);
  t.like(idx.messageByGuid(g1), { chunk_id: c, offset: 29, size: 10, partition: 'default' });
  t.true(idx.hasMessage(g2));
  t.false(idx.hasMessage(g3));
  // Storage classes are those declared.
  const types = idx.db.prepare('SELECT typeof(uid) u, typeof(flags) f, typeof(expunged) e, typeof(modseq) m FROM mailbox_message').all();
  t.deepEqual(types, [{ u: 'integer', f: 'text', e: 'null', m: 'integer' }, { u: 'integer', f: 'text', e: 'integer', m: 'integer' }]);
  const mtypes = idx.db.prepare('SELECT typeof(last_uid) a, typeof(acl) b, typeof(sync_crc) c, typeof(annotations) d FROM mailbox').get();
  t.deepEqual(mtypes, { a: 'integer', b: 'text', c: 'integer', d: 'text' });

  // A later MAILBOX without \Expunged keeps the first expunge time; the chunk moves on.
  const c2 = idx.beginChunk(2000, 400, 'z');
  idx.indexRecord(2001, 29, mailbox({ LAST_UID: num(4), ANNOTATIONS: list(kv({ ENTRY: atom('/specialuse'), USERID: atom('bob'), MODSEQ: num(7), VALUE: { kind: 'quoted', value: '\\Drafts' } })) }, [rec(2, g2, [flag('\\Seen')], 9)]));
  idx.endChunk(2002, 100, 'w');
  const mb2 = idx.mailboxByUniqueid('u1')!;
  t.is(mb2.last_chunk_id, c2);
  t.is(mb2.last_uid, 4);
  t.is(mb2.annotations, '(%(ENTRY /specialuse USERID bob MODSEQ 7 VALUE {7}\r\n\\Drafts))');
  const r2 = idx.mailboxRecords(mb2.id).find((r) => r.uid === 2)!;
  t.deepEqual([r2.flags, r2.expunged, r2.modseq, r2.last_chunk_id], ['(\\Seen)', 1002, 9, c2]);
  t.is(idx.mailboxRecords(mb2.id).find((r) => r.uid === 1)!.last_chunk_id, c);
  idx.close();
});

test('MAILBOX is all-or-nothing and checks required fields', (t) => {
  const idx = freshIndex();
  const g1 = 'a'.repeat(40);
  idx.beginChunk(1, 0, 'x');
  idx.indexRecord(1, 29, message(g1));
  const noAcl = mailbox();
  (noAcl.value as { items: DlistItem[] }).items = (noAcl.value as { items: DlistItem[] }).items.filter((i) => i.key !== 'ACL');
  t.throws(() => idx.indexRecord(2, 100, noAcl), { code: 'IMAP_PROTOCOL_BAD_PARAMETERS' } as never);
  const badRecord = mailbox({}, [rec(1, g1, []), kv({ UID: num(2), GUID: atom(g1) })]);
  t.throws(() => idx.indexRecord(2, 100, badRecord));
  t.deepEqual(idx.mailboxes(), [], 'the mailbox row of the failed record was rolled back');
  idx.indexRecord(3, 200, mailbox({}, [rec(1, g1, [])]));
  idx.endChunk(4, 300, 'y');
  t.is(idx.mailboxes().length, 1);
  t.throws(() => { idx.beginChunk(5, 500, 'z'); idx.indexRecord(5, 29, { key: 'ANNOTATION', value: kv({}) }); }, { code: 'IMAP_PROTOCOL_ERROR' } as never);
  idx.rollbackChunk();
  idx.close();
});

test('UNMAILBOX, RENAME, EXPUNGE, SEEN, SUB/UNSUB, SIEVE/UNSIEVE, RESERVE', (t) => {
  const idx = freshIndex();
  const g1 = 'a'.repeat(40);
  idx.beginChunk(10, 0, 'x');
  idx.indexRecord(10, 29, message(g1));
  idx.indexRecord(11, 100, mailbox({}, [rec(1, g1, [])]));
  idx.indexRecord(12, 200, mailbox({ UNIQUEID: atom('u2'), MBOXNAME: atom('user.bob.Old') }));
  idx.indexRecord(13, 300, { key: 'RENAME', value: kv({ OLDMBOXNAME: atom('user.bob.Old'), NEWMBOXNAME: atom('user.bob.New'), PARTITION: atom('p2'), UIDVALIDITY: num(77) }) });
  idx.indexRecord(14, 400, { key: 'UNMAILBOX', value: atom('user.bob.New') });
  idx.indexRecord(15, 500, { key: 'EXPUNGE', value: kv({ MBOXNAME: atom('user.bob'), UNIQUEID: atom('u1'), UID: list(num(1)) }) });
  t.throws(() => idx.indexRecord(15, 550, { key: 'EXPUNGE', value: kv({ MBOXNAME: atom('user.bob'), UNIQUEID: atom('zz'), UID: list(num(1)) }) }), { code: 'IMAP_PROTOCOL_BAD_PARAMETERS' } as never);
  idx.indexRecord(16, 600, { key: 'SEEN', value: kv({ USERID: atom('bob'), UNIQUEID: atom('u1'), LASTREAD: num(5), LASTUID: num(1), LASTCHANGE: num(6), SEENUIDS: atom('1:3') }) });
  idx.indexRecord(17, 700, { key: 'SEEN', value: kv({ USERID: atom('bob'), UNIQUEID: atom('u1'), LASTREAD: num(8), LASTUID: num(2), LASTCHANGE: num(9), SEENUIDS: atom('1:4') }) });
  idx.indexRecord(18, 800, { key: 'SUB', value: kv({ USERID: atom('bob'), MBOXNAME: atom('user.bob') }) });
  idx.indexRecord(19, 900, { key: 'SUB', value: kv({ USERID: atom('bob'), MBOXNAME: atom('user.bob.X') }) });
  idx.indexRecord(20, 1000, { key: 'UNSUB', value: kv({ USERID: atom('bob'), MBOXNAME: atom('user.bob.X') }) });
  idx.indexRecord(21, 1100, { key: 'SIEVE', value: kv({ USERID: atom('bob'), FILENAME: atom('peer.script'), LAST_UPDATE: num(21), CONTENT: { kind: 'literal', value: Buffer.from('keep;\r\n') } }) });
  idx.indexRecord(22, 1200, { key: 'SIEVE', value: kv({ USERID: atom('bob'), FILENAME: atom('peer.script'), LAST_UPDATE: num(22), CONTENT: { kind: 'quoted', value: 'stop;' } }) });
  idx.indexRecord(23, 1300, { key: 'SIEVE', value: kv({ USERID: atom('bob'), FILENAME: atom('other.script'), LAST_UPDATE: num(23), CONTENT: { kind: 'quoted', value: 'x' } }) });
  idx.indexRecord(24, 1400, { key: 'UNSIEVE', value: kv({ USERID: atom('bob'), FILENAME: atom('other.script') }) });
  idx.indexRecord(25, 1500, { key: 'RESERVE', value: kv({ PARTITION: atom('default'), MBOXNAME: list(atom('user.bob')), GUID: list(atom(g1)) }) });
  idx.endChunk(26, 1600, 'y');
  const renamed = idx.mailboxByUniqueid('u2')!;
  t.like(renamed, { mboxname: 'user.bob.New', partition: 'p2', uidvalidity: 77, deleted: 14 });
  t.deepEqual(idx.mailboxes(true).map((m) => m.uniqueid), ['u1']);
  t.is(idx.mailboxRecords(idx.mailboxByUniqueid('u1')!.id)[0]!.expunged, 15);
  t.like(idx.seen(), [{ uniqueid: 'u1', lastread: 8, lastuid: 2, lastchange: 9, seenuids: '1:4' }]);
  t.is(idx.seen().length, 1);
  t.deepEqual(idx.subscriptions().map((s) => s.mboxname), ['user.bob']);
  t.deepEqual(idx.subscriptions(false).map((s) => [s.mboxname, s.unsubscribed]), [['user.bob', null], ['user.bob.X', 20]]);
  t.deepEqual(idx.sieve(false).map((s) => [s.filename, s.last_update, s.guid, s.offset, s.deleted]), [
    ['peer.script', 21, sha1('keep;\r\n'), 1100, 22],
    ['peer.script', 22, sha1('stop;'), 1200, null],
    ['other.script', 23, sha1('x'), 1300, 24],
  ]);
  t.deepEqual(idx.sieve().map((s) => s.filename), ['peer.script']);
  idx.close();
});

test('text is stored as the octets received (UTF-8 passes through)', (t) => {
  const idx = freshIndex();
  idx.beginChunk(1, 0, 'x');
  const name = Buffer.from('user.bob.Caf\u00e9', 'utf8').toString('latin1');
  idx.indexRecord(1, 29, { key: 'SUB', value: kv({ USERID: atom('bob'), MBOXNAME: atom(name) }) });
  idx.endChunk(2, 40, 'y');
  const raw = idx.db.prepare('SELECT hex(mboxname) h FROM subscription').get() as { h: string };
  t.is(raw.h, Buffer.from(name, 'latin1').toString('hex').toUpperCase());
  t.is(idx.subscriptions()[0]!.mboxname, name);
  idx.close();
});

test('openBackup + BackupAppender: written, indexed, verifiable; torn tail cut on reopen', async (t) => {
  const dir = tmp();
  const data = path.join(dir, 'bob_AAAAAA');
  const body = Buffer.from('Subject: hi\r\n\r\nhello\r\n');
  const guid = sha1(body);
  const b = (await openBackup(data, { wait: false, create: true }))!;
  t.is(b.truncated, 0);
  const app = new BackupAppender(b);
  await app.start(100);
  await app.append({ key: 'MESSAGE', value: list({ kind: 'file', partition: 'default', guid, size: body.length, source: () => Readable.from([body]) }) }, 101);
  await app.append(mailbox({}, [rec(1, guid, [flag('\\Seen')])]), 102);
  const e = await app.end(103);
  await app.close();
  const first = (await openBackup(data, { wait: false }))!;
  t.is(await openBackup(data, { wait: false }), null, 'a second opener sees it locked');
  first.index.close();
  first.lock.release();

  // A crash in the middle of the next chunk: half a member at the end.
  const torn = zlib.gzipSync(Buffer.concat([CHUNK_HEADER, Buffer.from('104 APPLY UNMAILBOX user.bob\r\n')]));
  fs.appendFileSync(data, torn.subarray(0, 20));
  const again = (await openBackup(data, { wait: false }))!;
  t.is(again.truncated, 20);
  t.is(fs.statSync(data).size, e.compressedLength);
  const chunks = again.index.chunks();
  t.is(chunks.length, 1);
  const r = await readChunkRecords(again.lock.fd, 0);
  t.is(chunks[0]!.data_sha1, r.dataSha1);
  t.deepEqual(r.records.map((x) => x.item?.key), ['MESSAGE', 'MAILBOX']);
  t.is(again.index.messageByGuid(guid)!.offset, r.records[0]!.offset);
  // The next chunk starts right after the last good one, with timestamps not going back.
  const app2 = new BackupAppender(again);
  const c2 = await app2.start(50);
  t.is(c2, 2);
  await app2.close(51);
  const ch = BackupIndex.open(`${data}.index`, { dataFileSize: 1 });
  t.true(ch.chunks()[1]!.ts_start! >= 103);
  t.is(ch.chunks()[1]!.offset, e.compressedLength);
  t.is(ch.chunks()[1]!.file_sha1, sha1(fs.readFileSync(data).subarray(0, e.compressedLength)));
  ch.close();

  // Data that disagrees with the index is an error for the client, not a repair.
  const bytes = fs.readFileSync(data);
  bytes[10] ^= 0xff;
  fs.writeFileSync(data, bytes);
  await t.throwsAsync(openBackup(data, { wait: false }), { instanceOf: VerifyError });
  // A data file cut shorter than the index says.
  fs.truncateSync(data, 5);
  await t.throwsAsync(openBackup(data, { wait: false }), { instanceOf: VerifyError, message: /ended at/ });
  // ...and the lock was released on the way out.
  const l = (await openBackup(data, { wait: false, repair: false }))!;
  t.truthy(l);
  l.index.close();
  l.lock.release();
});

/** The recorded real sync_client sessions of the fixtures, one chunk each. */
async function replayFixtures(data: string): Promise<void> {
  let ts = 1790000000;
  for (const tap of ['02-full-backupd.tap', '04-incremental-backupd.tap']) {
    const b = (await openBackup(data, { wait: false, create: true }))!;
    const app = new BackupAppender(b);
    await app.start(ts++);
    for (const item of recordedApplies(path.join('test', 'fixtures', 'transcripts', tap))) await app.append(item, ts++);
    await app.close(ts++);
  }
}

test('full verification of a replayed real session; each kind of damage is found', async (t) => {
  const dir = tmp();
  const data = path.join(dir, 'fixt_AAAAAA');
  await replayFixtures(data);
  const b = (await openBackup(data, { wait: false }))!;
  const good = await verifyBackup(b.lock.fd, b.index, VERIFY_FULL);
  t.deepEqual(good, { ok: true, problems: [], chunksChecked: 2 });
  t.is(b.index.mailboxes().length, 8);
  t.true(b.index.sieve().length === 1 && b.index.subscriptions().length >= 4);

  const db = b.index.db;
  db.exec("UPDATE mailbox SET last_uid = last_uid + 1 WHERE mboxname = 'user.fixt'");
  db.exec('UPDATE message SET offset = offset + 1 WHERE id = 1');
  db.exec('UPDATE mailbox_message SET modseq = modseq + 100 WHERE id = 2');
  const bad = await verifyBackup(b.lock.fd, b.index, VERIFY_FULL);
  t.false(bad.ok);
  t.true(bad.problems.some((p) => /missing mailbox data for .* \(user\.fixt\)/.test(p)));
  t.true(bad.problems.some((p) => /message [0-9a-f]{40} is not at offset/.test(p)));
  t.true(bad.problems.some((p) => /missing mailbox_message data/.test(p)));
  t.true((await verifyBackup(b.lock.fd, b.index, VERIFY_QUICK)).ok, 'the quick level only checks the last checksum');
  db.exec('UPDATE chunk SET data_sha1 = \'0\' WHERE id = 2');
  t.deepEqual((await verifyBackup(b.lock.fd, b.index, VERIFY_QUICK)).problems, ['chunk 2: data_sha1 mismatch']);
  b.index.close();
  b.lock.release();
});

test('reindex rebuilds an index that equals the one written live and verifies', async (t) => {
  const dir = tmp();
  const data = path.join(dir, 'fixt_BBBBBB');
  await replayFixtures(data);
  // An empty chunk (a read-only session) gets no row after a rebuild.
  const e = (await openBackup(data, { wait: false }))!;
  const app = new BackupAppender(e);
  await app.start();
  await app.close();
  const live = BackupIndex.open(`${data}.index`, { dataFileSize: 1 });
  const dump = (idx: BackupIndex): unknown => ({
    chunks: idx.chunks().filter((c) => c.length! > 29).map(({ offset, length, file_sha1, data_sha1 }) => ({ offset, length, file_sha1, data_sha1 })),
    mailboxes: idx.mailboxes().map(({ last_chunk_id: _c, ...m }) => m),
    records: idx.mailboxes().flatMap((m) => idx.mailboxRecords(m.id).map(({ last_chunk_id: _c, ...r }) => r)),
    messages: idx.messages().map(({ chunk_id: _c, ...m }) => m),
    seen: idx.seen().map(({ last_chunk_id: _c, ...s }) => s),
    subs: idx.subscriptions(false).map(({ last_chunk_id: _c, ...s }) => s),
    sieve: idx.sieve(false).map(({ chunk_id: _c, ...s }) => s),
  });
  const before = dump(live);
  t.is(live.chunks().length, 3);
  live.close();
  t.deepEqual(await reindexStreaming(data, { wait: false, keepPrevious: false }), []);
  t.false(fs.readdirSync(dir).some((n) => /\.index\.\d+$/.test(n)), 'the previous index is removed');
  const rebuilt = BackupIndex.open(`${data}.index`, { dataFileSize: 1 });
  t.is(rebuilt.chunks().length, 2);
  t.deepEqual(dump(rebuilt), before);
  rebuilt.close();
  const b = (await openBackup(data, { wait: false }))!;
  t.true((await verifyBackup(b.lock.fd, b.index, VERIFY_FULL)).ok);
  b.index.close();
  b.lock.release();
  await reindexStreaming(data, { wait: false, keepPrevious: true });
  t.true(fs.readdirSync(dir).some((n) => /\.index\.\d+$/.test(n)), 'kept with keepPrevious');
});
