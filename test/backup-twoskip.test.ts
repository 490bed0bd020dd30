import test from 'ava';
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { TwoskipDb, compareRaw, isTwoskipFile } from '../sinks/backup/twoskip.js';
import { SkiplistReader, isSkiplistFile } from '../sinks/backup/skiplist.js';
import { openBackupsDb, backupsDbPath } from '../sinks/backup/backupsdb.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

/**
 * Written by the real Cyrus 3.6.1 cyr_dbtool (twoskip backend): set anne,
 * %SHARED, bob, carl; delete carl; set bob again.
 */
const CYRUS_FILE = Buffer.from('oQKLDXR3b3NraXAgZmlsZQAAAAAAAAABAAAAAAAAAAEAAAAAAAAAAwAAAAAAAAFQAAAAAAAAA0AAAAAA9KKM6j0fAAAAAAAAAAAAAAAAAaAAAAAAAAABUAAAAAAAAALIAAAAAAAAAsgAAAAAAAACyAAAAAAAAALIAAAAAAAAAsgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAHSMwAgAAAAAKwEABAAAABAAAAAAAAACyAAAAAAAAAH45Ejs3MVDQuNhbm5lL2IvYS9hbm5lX0FBQUFBQQAAAAAkAAAAAAAAAAAAAAAAAAFQXcUcGgAAAAArAQAHAAAAEwAAAAAAAAAAAAAAAAAAAVATK28MqfmeRSVTSEFSRUQvYi9xLyVTSEFSRURfQkJCQkJCAAAAAAAAJAAAAAAAAAAAAAAAAAABoOB47gYAAAAAKwEAAwAAAA8AAAAAAAACmAAAAAAAAAJIzmJhFU1Gbjpib2IvYi9iL2JvYl9DQ0NDQ0MAAAAAAAAkAAAAAAAAAAAAAAAAAAH4hcg3wAAAAAArAQAEAAAAEAAAAAAAAAAAAAAAAAAAAABJ39beKzQh1mNhcmwvYi9jL2NhcmxfREREREREAAAAACQAAAAAAAAAAAAAAAAAAkhlhNePAAAAAC0AAAAAAAAAAAAAAAAAAADyznJxAAAAACQAAAAAAAAAAAAAAAAAApjjVwVbAAAAACsGAAMAAAAPAAAAAAAAAAAAAAAAAAACmAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAenObDkXU06WJvYi9iL2IvYm9iX0VFRUVFRQAAAAAAACQAAAAAAAAAAAAAAAAAAsiIPFSvAAAAAA==', 'base64');

function tmpdir(): string {
  return trackedTempDir('cyrsync-twoskip-');
}

const s = (b: Buffer | null): string | null => (b === null ? null : b.toString('latin1'));

test('reads a file the real cyr_dbtool wrote, in raw key order', (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'backups.db');
  fs.writeFileSync(file, CYRUS_FILE);
  t.true(isTwoskipFile(file));
  const db = TwoskipDb.open(file);
  t.deepEqual(
    [...db.entries()].map(([k, v]) => [s(k), s(v)]),
    [
      ['%SHARED', '/b/q/%SHARED_BBBBBB'],
      ['anne', '/b/a/anne_AAAAAA'],
      ['bob', '/b/b/bob_EEEEEE'],
    ],
  );
  t.is(s(db.get('bob')), '/b/b/bob_EEEEEE');
  t.is(db.get('carl'), null);
  t.is(db.count(), 3);
  t.notThrows(() => db.checkConsistency());
  db.close();
});

test('writes on top of a Cyrus-written file and stays consistent', (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'backups.db');
  fs.writeFileSync(file, CYRUS_FILE);
  const db = TwoskipDb.open(file);
  db.set('dora', '/b/d/dora_FFFFFF');
  db.delete('anne');
  db.set('bob', '/b/b/bob_GGGGGG');
  db.checkConsistency();
  db.close();
  const again = TwoskipDb.open(file);
  t.deepEqual([...again.entries()].map(([k]) => s(k)), ['%SHARED', 'bob', 'dora']);
  t.is(s(again.get('bob')), '/b/b/bob_GGGGGG');
  again.close();
});

test('a new file has the Cyrus header: magic, version 1, generation 1, clean, CRC', (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'sub', 'backups.db');
  const db = TwoskipDb.open(file, { create: true });
  db.close();
  const b = fs.readFileSync(file);
  t.deepEqual(b.subarray(0, 20), Buffer.concat([Buffer.from([0xa1, 0x02, 0x8b, 0x0d]), Buffer.from('twoskip file\0\0\0\0', 'latin1')]));
  t.is(b.readUInt32BE(20), 1);
  t.is(b.readBigUInt64BE(24), 1n);
  t.is(b.readBigUInt64BE(32), 0n);
  // dummy record: 8 head octets, 32 pointers, 2 CRCs
  t.is(Number(b.readBigUInt64BE(48)), b.length);
  t.is(b.length, 64 + 8 + 32 * 8 + 8);
  t.is(b.readUInt32BE(56), 0);
  t.is(b.readUInt32BE(60), crc32(b.subarray(0, 60)));
  t.is(b[64], 0x3d);
  t.is(b[65], 31);
});

test('matches a Map model under random operations, across reopen', (t) => {
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(fc.constantFrom('set', 'delete'), fc.uint8Array({ minLength: 1, maxLength: 6 }), fc.uint8Array({ maxLength: 40 })),
        { maxLength: 60 },
      ),
      (ops) => {
        const dir = tmpdir();
        const file = path.join(dir, 'db');
        const model = new Map<string, Buffer>();
        let db = TwoskipDb.open(file, { create: true });
        ops.forEach(([op, k, v], i) => {
          const key = Buffer.from(k);
          if (op === 'set') {
            db.set(key, Buffer.from(v));
            model.set(key.toString('hex'), Buffer.from(v));
          } else {
            db.delete(key);
            model.delete(key.toString('hex'));
          }
          if (i % 17 === 16) {
            db.close();
            db = TwoskipDb.open(file);
          }
        });
        db.checkConsistency();
        const got = [...db.entries()].map(([k, v]) => [k.toString('hex'), v.toString('hex')]);
        const want = [...model.entries()]
          .sort((a, b) => compareRaw(Buffer.from(a[0], 'hex'), Buffer.from(b[0], 'hex')))
          .map(([k, v]) => [k, v.toString('hex')]);
        db.close();
        fs.rmSync(dir, { recursive: true, force: true });
        t.deepEqual(got, want);
      },
    ),
    { numRuns: 40 },
  );
});

test('a failed transaction leaves the committed state', (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'db');
  const db = TwoskipDb.open(file, { create: true });
  db.set('a', '1');
  const size = fs.statSync(file).size;
  t.throws(() =>
    db.transaction((tx) => {
      tx.set('b', '2');
      tx.delete('a');
      throw new Error('stop');
    }), { message: 'stop' });
  t.is(fs.statSync(file).size, size);
  t.deepEqual([...db.entries()].map(([k, v]) => [s(k), s(v)]), [['a', '1']]);
  db.checkConsistency();
  db.close();
});

test('a crash mid-transaction is recovered on the next open', (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'db');
  const crashed = path.join(dir, 'crashed');
  const db = TwoskipDb.open(file, { create: true });
  for (let i = 0; i < 30; i++) db.set(`user${i}`, `/p/${i}`);
  t.throws(() =>
    db.transaction((tx) => {
      tx.set('user5', 'changed');
      tx.delete('user7');
      tx.set('zz', 'new');
      // The file as a crash right now would leave it: DIRTY header, appended
      // records, rewritten pointers.
      fs.copyFileSync(file, crashed);
      throw new Error('crash');
    }));
  db.close();
  const b = fs.readFileSync(crashed);
  t.is(b.readUInt32BE(56) & 1, 1, 'the copy is dirty');
  const rec = TwoskipDb.open(crashed);
  rec.checkConsistency();
  t.is(s(rec.get('user5')), '/p/5');
  t.is(s(rec.get('user7')), '/p/7');
  t.is(rec.get('zz'), null);
  t.is(rec.count(), 30);
  rec.close();
  const after = fs.readFileSync(crashed);
  t.is(after.readUInt32BE(56) & 1, 0, 'recovery cleared DIRTY');
  t.is(Number(after.readBigUInt64BE(48)), after.length);
});

test('refuses a file that is not twoskip, and a corrupted header', (t) => {
  const dir = tmpdir();
  const a = path.join(dir, 'a');
  fs.writeFileSync(a, Buffer.alloc(100, 7));
  t.throws(() => TwoskipDb.open(a), { message: /invalid magic/ });
  const b = path.join(dir, 'b');
  const good = Buffer.from(CYRUS_FILE);
  good[33] ^= 0xff;
  fs.writeFileSync(b, good);
  t.throws(() => TwoskipDb.open(b), { message: /header CRC/ });
});

test('grows past the checkpoint threshold and checkpoints, keeping every record', (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'db');
  const db = TwoskipDb.open(file, { create: true });
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 60; i++) db.set(`owner${i}`, `/backups/o/owner${i}_round${round}`);
  }
  db.checkConsistency();
  t.is(db.count(), 60);
  t.is(s(db.get('owner42')), '/backups/o/owner42_round5');
  const b = fs.readFileSync(file);
  t.true(b.readBigUInt64BE(24) > 1n, 'generation advanced by a checkpoint');
  t.false(fs.existsSync(`${file}.NEW`));
  db.close();
});

test('backups.db: default path, twoskip default, unsupported backends refused', (t) => {
  const dir = tmpdir();
  t.is(backupsDbPath({ configdirectory: dir }), path.join(dir, 'backups.db'));
  t.is(backupsDbPath({ configdirectory: dir, backup_db_path: '/x/y.db' }), '/x/y.db');
  t.throws(() => openBackupsDb({ configdirectory: dir, backup_db: 'zeroskip' }), { message: /zeroskip backend is not supported/ });
  t.throws(() => openBackupsDb({ configdirectory: dir, backup_db: 'nonsense' }), { message: /unknown cyrusdb backend/ });
  const db = openBackupsDb({ configdirectory: dir });
  db.set('bob', '/p/b/bob_AAAAAA');
  db.set('%SHARED', '/p/q/%SHARED_BBBBBB');
  t.is(db.get('bob'), '/p/b/bob_AAAAAA');
  t.is(db.get('nobody'), null);
  t.deepEqual(db.list(), [['%SHARED', '/p/q/%SHARED_BBBBBB'], ['bob', '/p/b/bob_AAAAAA']]);
  db.delete('bob');
  t.is(db.get('bob'), null);
  db.close();
  t.true(isTwoskipFile(path.join(dir, 'backups.db')));
});

test('backups.db getOrCreate: creates once, discards the file when storing fails', (t) => {
  const dir = tmpdir();
  const db = openBackupsDb({ configdirectory: dir });
  let made = 0;
  const first = db.getOrCreate('anne', () => `/p/a/anne_${++made}`, () => t.fail());
  const second = db.getOrCreate('anne', () => `/p/a/anne_${++made}`, () => t.fail());
  t.deepEqual(first, { path: '/p/a/anne_1', created: true });
  t.deepEqual(second, { path: '/p/a/anne_1', created: false });
  const discarded: string[] = [];
  t.throws(() => db.getOrCreate('', () => '/p/x', (p) => discarded.push(p)));
  t.is(made, 1);
  db.close();
});

/** Written by the real cyr_dbtool with the skiplist backend: the same operations as CYRUS_FILE. */
const CYRUS_SKIPLIST = Buffer.from('oQKLDXNraXBsaXN0IGZpbGUAAAAAAAABAAAAAgAAABQAAAAFAAAAAwAAASBrCi02AAABAQAAAAAAAAAAAAAAkAAAAJAAAAEoAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD/////AAAAAQAAAAclU0hBUkVEAAAAABMvYi9xLyVTSEFSRURfQkJCQkJCAAAAAMQAAADE/////wAAAAEAAAAEYW5uZQAAABAvYi9hL2FubmVfQUFBQUFBAAABKAAAASj/////AAAAAQAAAANib2IAAAAADy9iL2IvYm9iX0NDQ0NDQwAAAAAAAAAAAAAAAAD/////AAAABAAAAPAAAAACAAAAA2JvYgAAAAAPL2IvYi9ib2JfRUVFRUVFAAAAAAAAAAAAAAAAAP////8AAAD/', 'base64');

test('skiplist files are read (committed list only); backups.db on skiplist is read only', (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'backups.db');
  fs.writeFileSync(file, CYRUS_SKIPLIST);
  t.true(isSkiplistFile(file));
  t.false(isTwoskipFile(file));
  t.deepEqual(SkiplistReader.open(file).entries().map(([k, v]) => [s(k), s(v)]), [
    ['%SHARED', '/b/q/%SHARED_BBBBBB'],
    ['anne', '/b/a/anne_AAAAAA'],
    ['bob', '/b/b/bob_EEEEEE'],
  ]);
  const db = openBackupsDb({ configdirectory: dir, backup_db: 'skiplist' });
  t.is(db.get('anne'), '/b/a/anne_AAAAAA');
  t.deepEqual(db.getOrCreate('bob', () => t.fail() as never, () => t.fail()), { path: '/b/b/bob_EEEEEE', created: false });
  t.throws(() => db.getOrCreate('newcomer', () => '/x', () => undefined), { message: /does not write them; convert with "cvt_cyrusdb/ });
  t.throws(() => db.set('x', 'y'));
  db.close();
  t.throws(() => openBackupsDb({ configdirectory: dir }), { message: /is a skiplist file: set backup_db: skiplist/ });
  // A log that does not end in a commit is left to Cyrus's recovery.
  fs.writeFileSync(file, Buffer.concat([CYRUS_SKIPLIST, Buffer.from([0, 0, 0, 4, 0, 0, 0, 0x30])]));
  t.throws(() => SkiplistReader.open(file), { message: /not committed/ });
});
