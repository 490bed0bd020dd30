import test from 'ava';
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  SHARED_OWNER,
  assertInPartitions,
  createDataFile,
  dirHash,
  isInside,
  ownerOfMailbox,
  stagingDir,
  stagingPath,
  stagingRoot,
  validateOwnerId,
  validatePartitionName,
  validateSieveFilename,
  validateUniqueid,
} from '../sinks/backup/paths.js';
import { MAILBOX_OWNERS } from './helpers/mailbox-owners.js';
import { expectEach } from './helpers/tables.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

/** dir_hash_c of lib/util.c with fulldirhash, written out independently. */
function fullHashReference(name: string): string {
  let n = 0;
  for (const ch of Buffer.from(name, 'latin1')) {
    if (ch === 0x2e) break;
    n = ((n << 3) ^ (n >>> 5)) ^ ch;
    n >>>= 0;
  }
  return String.fromCharCode('A'.charCodeAt(0) + (n % 23));
}

test('owner ids: users in external form, %SHARED for everything else', (t) => {
  expectEach(t, (name: string) => ownerOfMailbox(name), MAILBOX_OWNERS.map(([name, owner]) => [name, owner ?? SHARED_OWNER] as const));
  t.is(SHARED_OWNER, '%SHARED');
});

test('hash directory: first letter lower-cased, q otherwise', (t) => {
  expectEach(t, (owner: string) => dirHash(owner), [['bob', 'b'], ['Bob', 'b'], ['zed@example.com', 'z'], ['%SHARED', 'q'], ['1234', 'q'], ['_x', 'q']]);
});

test('hash directory with fulldirhash: the 23-way hash up to the first dot', (t) => {
  fc.assert(
    fc.property(fc.string({ minLength: 1, maxLength: 30 }), (s) => {
      const name = Buffer.from(s, 'utf8').toString('latin1');
      const h = dirHash(name, true);
      t.is(h, fullHashReference(name));
      t.regex(h, /^[A-W]$/);
    }),
  );
  t.is(dirHash('john.smith', true), dirHash('john', true));
});

test('owner ids that could leave the hash directory are refused', (t) => {
  for (const bad of ['../etc', 'a/b', '..', '.', 'x..y', '', 'nul\0byte', 'ctl\x01', '%OTHER', 'x'.repeat(300)]) {
    t.throws(() => validateOwnerId(bad), undefined, JSON.stringify(bad));
  }
  for (const good of ['bob', 'john.smith', 'anne@example.com', '%SHARED', 'a-b_c+d']) t.is(validateOwnerId(good), good);
});

test('data files: <partition>/<H>/<owner>_XXXXXX, mode 0600, inside the partition', (t) => {
  const root = trackedTempDir('cyrsync-paths-');
  const settings = { backuppartitions: { default: path.join(root, 'part') } };
  const names = new Set<string>();
  for (let i = 0; i < 5; i++) {
    const p = createDataFile(settings, 'bob');
    t.regex(p, new RegExp(`^${root}/part/b/bob_[A-Za-z0-9]{6}$`));
    t.is(fs.statSync(p).size, 0);
    t.is(fs.statSync(p).mode & 0o777, 0o600);
    t.is(fs.statSync(path.dirname(p)).mode & 0o777, 0o755 & ~process.umask());
    names.add(p);
  }
  t.is(names.size, 5);
  const shared = createDataFile(settings, '%SHARED');
  t.is(path.dirname(shared), path.join(root, 'part', 'q'));
  t.throws(() => createDataFile(settings, '../../escape'));
  t.deepEqual(fs.readdirSync(root), ['part']);
  t.notThrows(() => assertInPartitions(settings, shared));
  t.throws(() => assertInPartitions(settings, path.join(root, 'part', '..', 'elsewhere')));
});

test('data files go to the partition with the most free space', (t) => {
  const root = trackedTempDir('cyrsync-paths-');
  const settings = { backuppartitions: { one: path.join(root, 'one'), two: '/dev/shm/cyrsync-paths-test' } };
  const p = createDataFile(settings, 'carol');
  const freeOne = fs.statfsSync(root);
  const freeTwo = fs.statfsSync('/dev/shm');
  const expectTwo = freeTwo.bavail * freeTwo.bsize > freeOne.bavail * freeOne.bsize;
  t.is(p.startsWith('/dev/shm/cyrsync-paths-test/c/carol_'), expectTwo);
  fs.rmSync('/dev/shm/cyrsync-paths-test', { recursive: true, force: true });
});

test('relative partition paths and no partitions are configuration errors', (t) => {
  t.throws(() => createDataFile({ backuppartitions: { x: 'relative/dir' } }, 'bob'), { message: /not an absolute path/ });
  t.throws(() => createDataFile({ backuppartitions: {} }, 'bob'), { message: /no backuppartition/ });
});

test('staging: backup_staging_path or temp_path/backup, then sync./<pid>/<guid>', (t) => {
  t.is(stagingRoot({ backuppartitions: {}, backup_staging_path: '/s' }), '/s');
  t.is(stagingRoot({ backuppartitions: {}, temp_path: '/tmp/x' }), '/tmp/x/backup');
  t.is(stagingDir({ backuppartitions: {}, temp_path: '/t' }, 42), '/t/backup/sync./42');
  const g = 'a'.repeat(40);
  t.is(stagingPath({ backuppartitions: {}, temp_path: '/t' }, g, 42), `/t/backup/sync./42/${g}`);
  for (const bad of ['../../etc/passwd', 'A'.repeat(40), 'a'.repeat(39), `${'a'.repeat(39)}/`]) {
    t.throws(() => stagingPath({ backuppartitions: {}, temp_path: '/t' }, bad, 42));
  }
});

test('wire names that would make paths are validated', (t) => {
  t.is(validatePartitionName('default'), 'default');
  for (const bad of ['../x', 'a/b', '', '.hidden', 'a..b']) t.throws(() => validatePartitionName(bad));
  t.is(validateSieveFilename('peer.script'), 'peer.script');
  for (const bad of ['../x', 'a/b', '', '.', '..', 'x\ny']) t.throws(() => validateSieveFilename(bad));
  t.is(validateUniqueid('0o7r6qcclw87n6m5t3aptmjp'), '0o7r6qcclw87n6m5t3aptmjp');
  t.is(validateUniqueid('7a0b3a4e-2bd6-4b4c-9c0d-6f1c2f3e4d5a'), '7a0b3a4e-2bd6-4b4c-9c0d-6f1c2f3e4d5a');
  for (const bad of ['../x', 'a/b', '', 'a b']) t.throws(() => validateUniqueid(bad));
  t.true(isInside('/a/b', '/a/b/c'));
  t.false(isInside('/a/b', '/a/bc'));
  t.false(isInside('/a/b', '/a/b/../c'));
});
