/**
 * Graceful stop under load: 20 real sync_clients push 20 users into one
 * standalone cyrsync daemon at once, and the daemon gets SIGTERM once every
 * session has logged in. Each session ends at a command boundary: either it
 * finished (`OK Finished` to its EXIT) or its last reply is exactly `BYE
 * shutting down`, never a reply cut in the middle, nothing answered after
 * it; the daemon exits 0 by
 * itself; everything acknowledged with OK is in the store (replica: message
 * files and mailbox states; backup: every message of an APPLY MESSAGE
 * answered OK is indexed, the chunk committed at the session's end). After a
 * restart, one sync of each user (20 at once again) converges, nothing is
 * left in staging, `cyrsync check` is clean and, for backups, the real
 * `ctl_backups verify` says ok.
 */
import anyTest, { type TestFn, type ExecutionContext } from 'ava';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { CLI, run, sleep, tail, waitFor } from './harness.js';
import { type PeerContext, usePeer } from './fixture.js';
import { Daemon, type DaemonKind } from './faults.js';
import { acknowledgedByReplica, backupGuids, leftovers, replicaLosses } from './stress-ack.js';
import { serverResponses, tapStreams } from '../replica-helpers.js';

type Ctx = PeerContext;

const USERS = Array.from({ length: 20 }, (_, i) => `load${String(i).padStart(2, '0')}`);
const test = anyTest.serial as TestFn<Ctx>;

usePeer(test, {
  prefix: 'cyrsync-interop-sigterm-',
  keepFailed: true,
  stopAfterEach: true,
  async setup(t) {
    const { peer } = t.context;
    await peer.startMaster();
    // What is tested is the stop, not how fast 20 logins are answered: on a
    // loaded machine sync_client's default 10 s client_timeout can expire
    // before its login is answered (by the real servers as well).
    await fsp.appendFile(path.join(peer.dir, 'master', 'imapd.conf'), 'client_timeout: 60\n');
    for (const u of USERS) await peer.populate(u, 8, '64k');
  },
});

const DEFLATE_ON = Buffer.from('OK DEFLATE active\r\n', 'latin1');

/**
 * The server's side of a recording. The recording relay turns inflation on
 * only for the chunks after the one holding `OK DEFLATE active`; when the
 * server's next reply came in that same chunk (a BYE right after COMPRESS),
 * it is still raw deflate there and is inflated here.
 */
function serverStream(tapFile: string): Buffer {
  const { server } = tapStreams(tapFile);
  const at = server.lastIndexOf(DEFLATE_ON);
  if (at < 0 || server.toString('latin1').endsWith('\r\n')) return server;
  const head = server.subarray(0, at + DEFLATE_ON.length);
  try {
    return Buffer.concat([head, zlib.inflateRawSync(server.subarray(head.length), { finishFlush: zlib.constants.Z_SYNC_FLUSH })]);
  } catch {
    return server;
  }
}

/** How a recorded session ended: 'finished' (OK Finished), 'bye' (a whole BYE reply), or what else was last. */
function ending(tapFile: string): string {
  if (!fs.existsSync(tapFile)) return 'no recording';
  const server = serverStream(tapFile);
  if (server.length > 0 && !server.toString('latin1').endsWith('\r\n')) return `a cut line: ${JSON.stringify(server.subarray(-80).toString('latin1'))}`;
  const last = serverResponses(server).at(-1)?.toString('latin1') ?? '';
  if (last === 'OK Finished\r\n') return 'finished';
  if (last === 'BYE shutting down\r\n') return 'bye';
  return `last reply ${JSON.stringify(last.slice(-200))}`;
}

const logins = (d: Daemon): number => (d.log().match(/"msg":"login"/g) ?? []).length;

async function stopUnderLoad(t: ExecutionContext<Ctx>, kind: DaemonKind): Promise<void> {
  const { peer, work } = t.context;
  // One process serves 20 syncs at once: a budget that holds them. (At the default 96 MiB the
  // budget lets one session on at a time, and on a loaded machine some sync_clients gave up
  // before their AUTHENTICATE was answered.)
  const d = await Daemon.start(kind, path.join(work, kind), {}, ['cyrsync_memory_budget: 512']);
  t.teardown(async () => {
    await d.stop();
  });
  const taps = USERS.map((u) => path.join(work, `${kind}-${u}.tap`));
  // Started a little apart, so that 20 logins (scrypt) at once on a loaded machine do not outlast sync_client's patience.
  const syncs = Promise.all(USERS.map(async (u, i) => (await sleep(i * 100), peer.sync(u, d.target, { tap: taps[i] }))));
  t.true(await waitFor(() => logins(d) >= USERS.length, 90_000, 20), `only ${logins(d)} logins\n${tail(d.log(), 20)}`);
  const code = await d.stop();
  t.is(code, 0, `the daemon's exit status after SIGTERM\n${tail(d.log(), 20)}`);
  const results = await syncs;

  const endings = taps.map(ending);
  const odd = endings.flatMap((e, i) => (e === 'finished' || e === 'bye' ? [] : [`${USERS[i]}: ${e}; sync_client: ${tail(results[i]!.stdout + results[i]!.stderr, 4)}`]));
  t.deepEqual(odd, [], 'every session ends with OK Finished or a whole BYE reply');
  const byes = endings.filter((e) => e === 'bye').length;
  t.log(`${byes} sessions got BYE, ${endings.length - byes} had finished; sync_client exit statuses ${results.map((r) => r.code).join(' ')}`);
  t.true(byes > 0, 'SIGTERM reached no session in progress');
  t.notRegex(d.log(), /"level":(50|60)/, 'no error logged');

  // Everything acknowledged is on disk, read before the restart.
  let acknowledged = 0;
  for (const tap of taps) {
    if (kind === 'sync-server') {
      const loss = await replicaLosses(d, tap);
      acknowledged += loss.count;
      t.deepEqual(loss.problems, [], tap);
    } else {
      const ack = await acknowledgedByReplica(tap);
      const indexed = backupGuids(d);
      acknowledged += ack.guids.size;
      t.deepEqual([...ack.guids].filter((g) => !indexed.has(g)), [], `${tap}: acknowledged messages not indexed`);
    }
  }
  t.log(`${acknowledged} acknowledged items checked`);
  t.deepEqual(leftovers(d), [], 'staging and temporary files after the stop');

  await d.launch();
  const again = await Promise.all(USERS.map((u) => peer.sync(u, d.target)));
  t.deepEqual(
    again.flatMap((r, i) => (r.code === 0 ? [] : [`${USERS[i]}: ${tail(r.stdout + r.stderr, 5)}`])),
    [],
    'one sync of each user after the restart',
  );
  const allow = kind === 'backupd' ? ['--allow', 'APPLY QUOTA,APPLY ACTIVATE_SIEVE'] : [];
  for (const u of USERS) {
    const cmp = await peer.cmd(['compare', u, '--to', d.target, ...allow]);
    t.regex(cmp.stdout, /^CONVERGED$/m, `${u}: ${tail(cmp.stdout + cmp.stderr, 10)}`);
  }
  t.deepEqual(leftovers(d), [], 'staging and temporary files after the syncs');
  const check = await run(process.execPath, [CLI, 'check', '-C', d.conf]);
  t.is(check.code, 0, check.stdout + check.stderr);
  if (kind === 'backupd') {
    await run('chown', ['-R', 'cyrus:mail', d.dir]);
    const v = await peer.cmd(['tool', d.conf, 'ctl_backups', 'verify', '-A']);
    t.is(v.code, 0, v.stdout + v.stderr);
    t.notRegex(v.stdout, /: (?!ok$)/m, v.stdout);
  }
}

test('replica: SIGTERM during 20 concurrent syncs ends every session at a command boundary; all converge after a restart', (t) =>
  stopUnderLoad(t, 'sync-server'));

test('backupd: SIGTERM during 20 concurrent syncs ends every session at a command boundary; all converge after a restart', (t) =>
  stopUnderLoad(t, 'backupd'));
