/**
 * Two real sync_clients push the same user into one cyrsync daemon at the
 * same moment: the user's lock serialises them (the loser may be refused
 * `NO IMAP_MAILBOX_LOCKED`, as Cyrus refuses it), nothing is corrupt, and
 * the user converges; then a third sync has nothing left to send. Both
 * pairs: two full syncs (`sync_client -u`), and a full sync next to a
 * rolling pass over the master's sync log (`sync_client -R -f LOG`, what
 * `sync_client -r` does with each log file), on a fresh store and again
 * after `mutate` on the master.
 */
import anyTest, { type TestFn, type ExecutionContext } from 'ava';
import path from 'node:path';
import { CLI, type RunResult, run, tail } from './harness.js';
import { type PeerContext, usePeer } from './fixture.js';
import { Daemon, type DaemonKind, filesBelow } from './faults.js';
import { checkChunks, dataFiles } from '../backup-sink-helpers.js';

type Ctx = PeerContext;

const test = anyTest.serial as TestFn<Ctx>;

usePeer(test, {
  prefix: 'cyrsync-interop-concurrent-',
  keepFailed: true,
  stopAfterEach: true,
  async setup(t) {
    const { peer } = t.context;
    await peer.startMaster();
    await peer.populate('twice', 30);
  },
});

/** A third sync converges; the store is clean and equals the master's. */
async function assertConverged(t: ExecutionContext<Ctx>, d: Daemon): Promise<void> {
  const { peer } = t.context;
  const kind = d.kind;
  t.notRegex(d.log(), /command failed unexpectedly|unhandled/, 'no unexpected failure in the daemon');
  const again = await peer.sync('twice', d.target);
  t.is(again.code, 0, tail(again.stdout + again.stderr, 20));
  const allow = kind === 'backupd' ? ['--allow', 'APPLY QUOTA,APPLY ACTIVATE_SIEVE'] : [];
  const cmp = await peer.cmd(['compare', 'twice', '--to', d.target, ...allow]);
  t.regex(cmp.stdout, /^CONVERGED$/m, tail(cmp.stdout + cmp.stderr, 20));
  const check = await run(process.execPath, [CLI, 'check', '-C', d.conf]);
  t.is(check.code, 0, check.stdout + check.stderr);
  if (kind === 'sync-server') {
    const ours = await run(process.execPath, [CLI, 'dump', '-C', d.conf, 'twice']);
    t.is(ours.stdout, await peer.masterDump('twice'));
    t.deepEqual(filesBelow(path.join(d.dirs.partition, 'blobs', 'tmp')), []);
  } else {
    for (const f of dataFiles(d.dirs.partition)) t.deepEqual(checkChunks(f), [], f);
    t.deepEqual(filesBelow(d.dirs.staging), []);
  }
}

/** Exit status of a sync and, when it failed, the line that says why (e.g. `NO IMAP_MAILBOX_LOCKED`). */
function outcome(r: RunResult): string {
  if (r.code === 0) return 'exit 0';
  const lines = (r.stdout + r.stderr).split('\n');
  const why = lines.find((l) => /IMAP_[A-Z_]+/.test(l)) ?? lines.find((l) => /\bNO\b|error|fail/i.test(l));
  return `exit ${r.code} (${why?.trim() ?? 'no reason printed'})`;
}

async function startDaemon(t: ExecutionContext<Ctx>, kind: DaemonKind, name: string): Promise<Daemon> {
  const d = await Daemon.start(kind, path.join(t.context.work, name));
  t.teardown(async () => {
    await d.stop();
  });
  return d;
}

async function twoAtOnce(t: ExecutionContext<Ctx>, kind: DaemonKind): Promise<void> {
  const { peer } = t.context;
  const d = await startDaemon(t, kind, kind);
  const [a, b] = await Promise.all([peer.sync('twice', d.target), peer.sync('twice', d.target)]);
  t.log(`first sync ${outcome(a)}; second sync ${outcome(b)}`);
  t.true(a.code === 0 || b.code === 0, `at least one sync finished\n${tail(a.stdout + a.stderr, 10)}\n${tail(b.stdout + b.stderr, 10)}`);
  await assertConverged(t, d);
}

/**
 * A full sync (`sync_client -u`) and a rolling pass over a copy of the
 * master's sync log (`cyrus-peer sync-log`: `sync_client -R -f COPY`) start
 * at the same moment, first into a fresh store, then after `mutate`.
 */
async function fullAndRolling(t: ExecutionContext<Ctx>, kind: DaemonKind): Promise<void> {
  const { peer } = t.context;
  const d = await startDaemon(t, kind, `${kind}-rolling`);
  for (const round of ['fresh store', 'after mutate']) {
    if (round === 'after mutate') await peer.mutate('twice');
    const [full, rolling] = await Promise.all([peer.sync('twice', d.target), peer.cmd(['sync-log', '--to', d.target])]);
    t.log(`${round}: full sync ${outcome(full)}; rolling pass ${outcome(rolling)}`);
    t.true(
      full.code === 0 || rolling.code === 0,
      `at least one sync finished\n${tail(full.stdout + full.stderr, 10)}\n${tail(rolling.stdout + rolling.stderr, 10)}`,
    );
    await assertConverged(t, d);
  }
}

test('replica: two sync_clients push the same user at once; the lock serialises them and the user converges', (t) => twoAtOnce(t, 'sync-server'));

test('backupd: two sync_clients push the same user at once; the backup lock serialises them and the user converges', (t) => twoAtOnce(t, 'backupd'));

test('replica: a full and a rolling sync_client push the same user at once; the user converges', (t) => fullAndRolling(t, 'sync-server'));

test('backupd: a full and a rolling sync_client push the same user at once; the user converges', (t) => fullAndRolling(t, 'backupd'));
