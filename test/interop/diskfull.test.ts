/**
 * A full disk under both daemons, with the real Cyrus 3.6.1 sync_client.
 *
 * Each case mounts a small tmpfs as one of the daemon's directories (the
 * replica's partition, where its staging also lives, or its
 * configdirectory; the backup server's staging area, partition or
 * configdirectory), fills it, and checks:
 * - a raw session gets `NO IMAP_NOSPACE <reason>` and stays in protocol sync
 *   (the next command is answered as a command, never read from the rest of
 *   a literal);
 * - the real sync_client's run is refused the same way and the daemon lives;
 * - nothing half-written is visible: no staging or temporary file is left,
 *   every replica record's file is there (`cyrsync dump` reads and hashes
 *   each), every backup chunk passes an independent checksum verification;
 * - once space is freed, the next sync converges without a restart.
 *
 * Mounting needs root; without it the cases are skipped with that reason.
 */
import anyTest, { type TestFn, type ExecutionContext } from 'ava';
import path from 'node:path';
import { CLI, adminSession, fileLiteral, message, run, sha1, tail } from './harness.js';
import { type PeerContext, usePeer } from './fixture.js';
import { Daemon, type DaemonDirs, type DaemonKind, fillUp, filesBelow, freeUp, isRoot, mountTmpfs } from './faults.js';
import { checkChunks, dataFiles } from '../backup-sink-helpers.js';

type Ctx = PeerContext;

const test = anyTest.serial as TestFn<Ctx>;
const ALLOW = 'APPLY QUOTA,APPLY ACTIVATE_SIEVE';
const MiB = 1024 * 1024;

usePeer(test, {
  prefix: 'cyrsync-interop-diskfull-',
  keepFailed: true,
  stopAfterEach: true,
  when: isRoot,
  async setup(t) {
    const { peer } = t.context;
    await peer.startMaster();
    // 12 messages of 256 KiB each per user: more than the free space left below
    for (const u of ['dfpart', 'dfconf', 'dfstage', 'dfbpart']) await peer.populate(u, 12, '256k', true);
  },
});

type Place = keyof Pick<DaemonDirs, 'partition' | 'configdirectory' | 'staging'>;

/** Staging and temporary files a daemon may leave behind (none may outlive a refused command). */
function leftovers(d: Daemon): string[] {
  const staging = d.kind === 'backupd' ? filesBelow(d.dirs.staging) : filesBelow(path.join(d.dirs.partition, 'blobs', 'tmp'));
  return [...staging, ...filesBelow(d.dirs.temp)];
}

/** Nothing half-written is visible: every record's file (replica), every chunk's checksums (backup). */
async function consistent(t: ExecutionContext<Ctx>, d: Daemon, user: string): Promise<void> {
  if (d.kind === 'sync-server') {
    const dump = await run(process.execPath, [CLI, 'dump', '-C', d.conf, user]);
    t.is(dump.code, 0, `cyrsync dump ${user}: ${dump.stderr}`);
    return;
  }
  for (const f of dataFiles(d.dirs.partition)) t.deepEqual(checkChunks(f), [], f);
}

/**
 * A raw session sends one message bigger than the free space; then NOOP.
 * `fill` runs after the session's setup (the backup server's RESERVE opens
 * the user's backup first, so the message fails inside a chunk).
 */
async function rawRefusal(t: ExecutionContext<Ctx>, d: Daemon, user: string, fill: () => void): Promise<void> {
  const c = await adminSession(d.port);
  try {
    const body = message(`diskfull-${user}-${d.kind}`, 3 * MiB);
    if (d.kind === 'backupd') {
      // the backup server appends a message to the backups that awaited it after RESERVE
      const rsv = await c.command(`APPLY RESERVE %(PARTITION default MBOXNAME (user.${user}) GUID (${sha1(body)}))`);
      t.regex(rsv.status ?? '', /^OK success$/i, `RESERVE: ${rsv.status}`);
    }
    fill();
    const r = await c.command(Buffer.concat([Buffer.from('APPLY MESSAGE ('), fileLiteral(body, sha1(body)), Buffer.from(')\r\n')]));
    t.regex(r.status ?? '', /^NO IMAP_NOSPACE No space left on the \w+ disk/, `raw APPLY MESSAGE: ${r.status}`);
    t.deepEqual(await c.command('NOOP'), { data: [], status: 'OK Noop completed' }, 'in protocol sync after the refusal');
  } finally {
    await c.close();
  }
}

async function diskFull(t: ExecutionContext<Ctx>, kind: DaemonKind, place: Place, user: string, leave: number): Promise<void> {
  if (!isRoot()) {
    t.log('skipped: mounting a tmpfs needs root');
    t.pass();
    return;
  }
  const { peer } = t.context;
  const dir = path.join(t.context.work, `${kind}-${place}`);
  const mnt = path.join(dir, 'small');
  const unmount = await mountTmpfs(mnt, 16 * MiB);
  t.teardown(unmount);
  const d = await Daemon.start(kind, dir, { [place]: path.join(mnt, place) });
  t.teardown(async () => {
    await d.stop();
  });
  const pid = d.pid;
  const compareArgs = kind === 'backupd' ? ['--allow', ALLOW] : [];
  try {
    if (place === 'configdirectory') fillUp(mnt, leave);
    else await rawRefusal(t, d, user, () => fillUp(mnt, leave));
    const first = await peer.sync(user, d.target);
    t.not(first.code, 0, 'the sync that ran out of space fails');
    t.regex(d.log(), /IMAP_NOSPACE/, 'the daemon logged the refusal with its code');
    t.true(d.running, 'the daemon lives on');
    t.deepEqual(leftovers(d), [], 'no staging or temporary file left');
    await consistent(t, d, user);
    freeUp(mnt);
    const second = await peer.sync(user, d.target);
    t.is(second.code, 0, `sync after freeing space\n${tail(second.stdout + second.stderr, 20)}`);
    const cmp = await peer.cmd(['compare', user, '--to', d.target, ...compareArgs]);
    t.regex(cmp.stdout, /^CONVERGED$/m, tail(cmp.stdout + cmp.stderr, 30));
    t.is(d.pid, pid, 'without a restart');
    t.deepEqual(leftovers(d), []);
    await consistent(t, d, user);
    if (kind === 'sync-server') {
      const ours = await run(process.execPath, [CLI, 'dump', '-C', d.conf, user]);
      t.is(ours.stdout, await peer.masterDump(user), 'the replica holds what the master holds');
    }
  } catch (err) {
    t.log(`daemon log:\n${tail(d.log(), 30)}`);
    throw err;
  }
}

test('replica, partition full in the middle of a literal: NO IMAP_NOSPACE, in sync, nothing half-stored, converges after freeing', (t) =>
  diskFull(t, 'sync-server', 'partition', 'dfpart', 600 * 1024));

test('replica, configdirectory full in the middle of an index transaction: NO IMAP_NOSPACE, converges after freeing', (t) =>
  diskFull(t, 'sync-server', 'configdirectory', 'dfconf', 0));

test('backupd, staging area full in the middle of a literal: NO IMAP_NOSPACE, in sync, no staging file left, converges', (t) =>
  diskFull(t, 'backupd', 'staging', 'dfstage', 600 * 1024));

test('backupd, partition full in the middle of a chunk: NO IMAP_NOSPACE, no chunk that fails verification, converges', (t) =>
  diskFull(t, 'backupd', 'partition', 'dfbpart', 64 * 1024));
