/**
 * Two real sync_clients push the same user into one cyrsync daemon at the
 * same moment: the user's lock serialises them (the loser may be refused
 * `NO IMAP_MAILBOX_LOCKED`, as Cyrus refuses it), nothing is corrupt, and
 * the user converges; then a third sync has nothing left to send.
 */
import anyTest, { type TestFn, type ExecutionContext } from 'ava';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { CLI, Peer, makeRunDir, run, stopOwnProcesses, tail } from './harness.js';
import { Daemon, type DaemonKind, filesBelow } from './faults.js';
import { checkChunks, dataFiles } from '../backup-sink-helpers.js';

interface Ctx {
  peer: Peer;
  work: string;
}

const test = anyTest.serial as TestFn<Ctx>;
let failed = false;

test.before(async (t) => {
  const peer = await Peer.create();
  t.context.peer = peer;
  t.context.work = await makeRunDir('cyrsync-interop-concurrent-');
  await peer.startMaster();
  await peer.populate('twice', 30);
});

test.afterEach.always((t) => {
  if (!t.passed) failed = true;
  stopOwnProcesses();
});

test.after.always(async (t) => {
  const { peer, work } = t.context;
  await peer?.stopAll();
  if (failed || process.env['CYRSYNC_INTEROP_KEEP']) {
    t.log(`kept for inspection: ${[peer?.dir, work].filter(Boolean).join(' ')}`);
    return;
  }
  await peer?.remove();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

async function twoAtOnce(t: ExecutionContext<Ctx>, kind: DaemonKind): Promise<void> {
  const { peer } = t.context;
  const d = await Daemon.start(kind, path.join(t.context.work, kind));
  t.teardown(async () => {
    await d.stop();
  });
  const [a, b] = await Promise.all([peer.sync('twice', d.target), peer.sync('twice', d.target)]);
  t.log(`exit statuses ${a.code} and ${b.code}`);
  t.true(a.code === 0 || b.code === 0, `at least one sync finished\n${tail(a.stdout + a.stderr, 10)}\n${tail(b.stdout + b.stderr, 10)}`);
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

test('replica: two sync_clients push the same user at once; the lock serialises them and the user converges', (t) => twoAtOnce(t, 'sync-server'));

test('backupd: two sync_clients push the same user at once; the backup lock serialises them and the user converges', (t) => twoAtOnce(t, 'backupd'));
