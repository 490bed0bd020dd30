import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lockExclusive, lockedElsewhere, isLockedHere } from '../sinks/backup/lock.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

function tmpfile(content = 'data'): string {
  const dir = trackedTempDir('cyrsync-lock-');
  const p = path.join(dir, 'file');
  fs.writeFileSync(p, content);
  return p;
}

/** Another process tries a non-blocking fcntl write lock (Python's lockf is F_SETLK). */
function otherProcessCanLock(p: string): boolean {
  const r = spawnSync('python3', ['-c', `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except OSError:
    print("locked")
`, p]);
  const out = r.stdout.toString().trim();
  if (out !== 'free' && out !== 'locked') throw new Error(`probe failed: ${r.stderr.toString()}`);
  return out === 'free';
}

test('an exclusive lock excludes other processes and other holders in this process', async (t) => {
  const p = tmpfile();
  const l = await lockExclusive(p, { wait: false });
  t.truthy(l);
  t.true(isLockedHere(p));
  t.false(otherProcessCanLock(p));
  // A second holder in this process sees it locked, and trying must not drop the first lock.
  t.is(await lockExclusive(p, { wait: false }), null);
  t.false(otherProcessCanLock(p));
  l!.release();
  t.false(isLockedHere(p));
  t.true(otherProcessCanLock(p));
});

test('the lock descriptor is read-write and appends', async (t) => {
  const p = tmpfile('abc');
  const l = (await lockExclusive(p, { wait: false, append: true }))!;
  fs.writeSync(l.fd, Buffer.from('def'), 0, 3, 0);
  t.is(l.size(), 6);
  const b = Buffer.alloc(6);
  fs.readSync(l.fd, b, 0, 6, 0);
  t.is(b.toString(), 'abcdef');
  l.release();
});

test('create and exclusive create', async (t) => {
  const dir = trackedTempDir('cyrsync-lock-');
  const p = path.join(dir, 'new');
  const e = await t.throwsAsync(lockExclusive(p, { wait: false }), { code: 'IMAP_IOERROR' } as never);
  t.is((e as { errno?: string }).errno, 'ENOENT');
  const l = (await lockExclusive(p, { wait: false, exclusiveCreate: true, mode: 0o600 }))!;
  t.is(fs.statSync(p).mode & 0o777, 0o600);
  l.release();
  await t.throwsAsync(lockExclusive(p, { wait: false, exclusiveCreate: true }));
});

test('waiting: granted when another process lets go', async (t) => {
  const p = tmpfile();
  const child = spawn('python3', ['-c', `
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
`, p], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => void child.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the lock holder exited (${code}) before taking the lock`)));
  });
  t.true(lockedElsewhere(p) > 0);
  t.is(await lockExclusive(p, { wait: false }), null);
  const waiting = lockExclusive(p, { wait: true });
  child.stdin.end();
  const l = await waiting;
  t.truthy(l);
  t.false(otherProcessCanLock(p));
  l!.release();
});

test('waiting with a timeout gives up with null', async (t) => {
  const p = tmpfile();
  const l = (await lockExclusive(p, { wait: false }))!;
  t.is(await lockExclusive(p, { wait: true, timeoutMs: 50 }), null);
  l.release();
});

test('inode re-check: a file replaced while waiting is locked at its new inode', async (t) => {
  const p = tmpfile('old');
  const first = (await lockExclusive(p, { wait: false }))!;
  const waiting = lockExclusive(p, { wait: true });
  // Replace the file (as compaction renames <P>.new over <P>), then let go of the old one.
  const np = `${p}.new`;
  fs.writeFileSync(np, 'new');
  fs.renameSync(np, p);
  first.release();
  const l = (await waiting)!;
  t.is(fs.fstatSync(l.fd).ino, fs.statSync(p).ino);
  const b = Buffer.alloc(3);
  fs.readSync(l.fd, b, 0, 3, 0);
  t.is(b.toString(), 'new');
  t.false(otherProcessCanLock(p));
  l.release();
});

test('probing a file this process holds is refused (it would drop the lock)', async (t) => {
  const p = tmpfile();
  const l = (await lockExclusive(p, { wait: false }))!;
  t.throws(() => lockedElsewhere(p), { message: /locked by this process/ });
  t.false(otherProcessCanLock(p));
  l.release();
  t.is(lockedElsewhere(p), 0);
});
