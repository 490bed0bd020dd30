/**
 * cyrsync as a service of the real Cyrus 3.6.1 master(8) (`cyrmaster` of
 * Debian's cyrus-common): cyrus.conf runs `node dist/src/cli.js sync-server`
 * exactly where it would run `sync_server`, and the real sync_client
 * replicates through it.
 *
 * The master and its services: test/interop/stress-master.ts.
 */
import anyTest, { type TestFn } from 'ava';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { CLI, Peer, describe, run, sleep, stopOwnProcesses, tail, waitFor } from './harness.js';
import { CYRBIN, MasterRun, USES } from './stress-master.js';

const NODE = process.execPath;
const SYNCS = 300;

interface Ctx {
  peer: Peer;
  m: MasterRun;
}

const test = anyTest as TestFn<Ctx>;
let failed = false;

// ------------------------------------------------------------------ helpers

/** The real sync_client with the peer master's configuration, run directly (no relay). */
function syncClient(peer: Peer, target: string, args: string[]) {
  return run(path.join(CYRBIN, 'sync_client'), ['-C', path.join(peer.dir, 'master', 'imapd.conf'), '-S', target, ...args], {
    timeoutMs: 120_000,
  });
}

/** `cyrsync dump` equals the master's canonical dump (when this build has the dump command). */
async function sameDump(t: import('ava').ExecutionContext<Ctx>, user: string): Promise<void> {
  const dump = await run(NODE, [CLI, 'dump', '-C', t.context.m.conf, user]);
  if (dump.code === 64 && /unknown command/.test(dump.stderr)) {
    t.log('cyrsync dump is not available in this build: store not compared');
    return;
  }
  t.is(dump.code, 0, describe(dump));
  t.is(dump.stdout, await t.context.peer.masterDump(user));
}

async function converged(t: import('ava').ExecutionContext<Ctx>, user: string): Promise<void> {
  const c = await t.context.peer.compare(user, t.context.m.target);
  t.true(c.converged, describe(c));
}

// -------------------------------------------------------------------- setup

test.before(async (t) => {
  const peer = await Peer.create();
  t.context.peer = peer;
  await peer.startMaster();
  await peer.populate('mary', 20);
  await peer.populate('tiny', 2, '2k');
  // ~24 MB: long enough a session to be killed in the middle of it.
  await peer.populate('heavy', 12, '2M');
  const m = await MasterRun.create();
  t.context.m = m;
  t.log(`cyrus-peer dir ${peer.dir}; cyrmaster run dir ${m.dir}, syncserver ${m.target}`);
  await m.start();
});

test.afterEach.always((t) => {
  if (!t.passed) {
    failed = true;
    t.log(`syslog (last lines):\n${tail(t.context.m?.syslog() ?? '', 30)}`);
  }
  stopOwnProcesses();
});

test.after.always(async (t) => {
  stopOwnProcesses();
  const { peer, m } = t.context;
  await m?.stop();
  if (peer) await peer.stopAll();
  if (failed || process.env['CYRSYNC_INTEROP_KEEP']) {
    t.log(`kept for inspection: ${[peer?.dir, m?.dir].filter(Boolean).join(' ')}`);
    return;
  }
  await peer?.remove();
  if (m) await fsp.rm(m.dir, { recursive: true, force: true });
});

// -------------------------------------------------------------------- tests

test('the first bytes a client receives from the master-run service are the greeting', async (t) => {
  const { m } = t.context;
  const sock = net.connect(m.port, '127.0.0.1');
  let got = '';
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => (got += d));
  await waitFor(() => got.includes('* OK '), 30_000, 20);
  t.regex(got, /^\* SASL PLAIN LOGIN\r\n\* COMPRESS DEFLATE\r\n\* SIEVE-MAILBOX\r\n\* OK cyrsync-master Cyrus sync server \S+\r\n$/);
  sock.write('EXIT\r\n');
  await once(sock, 'close');
  t.true(got.endsWith('* OK cyrsync-master Cyrus sync server ' + got.split('Cyrus sync server ')[1]!.split('\r\n')[0] + '\r\nOK Finished\r\n'), JSON.stringify(got));
});

test('real sync_client through cyrmaster: full sync of a populated user converges, then an incremental one', async (t) => {
  const { peer, m } = t.context;
  const full = await peer.sync('mary', m.target);
  t.is(full.code, 0, describe(full));
  await converged(t, 'mary');
  await sameDump(t, 'mary');

  await peer.mutate('mary');
  const inc = await peer.sync('mary', m.target);
  t.is(inc.code, 0, describe(inc));
  await converged(t, 'mary');
  await sameDump(t, 'mary');
  // cyrsync's own records went to syslog under the service's ident, never to fds 1-2.
  t.regex(m.syslog(), /cyrsync-it\/syncserver\[\d+\]: login /);
  t.notRegex(m.errors(), /"level"|cyrsync|Cyrus sync server/);
});

test('telemetry files appear under configdirectory/log/<user> in Cyrus format', async (t) => {
  const { m } = t.context;
  const files = await m.telemetryFiles();
  t.true(files.length > 0, 'no telemetry file');
  for (const f of files) t.regex(f, /^syncserver-\d+$/);
  const text = await fsp.readFile(path.join(m.telemetryDir, files[0]!), 'latin1');
  t.regex(text, /^---------- admin \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n\n<\d+</);
  t.regex(text, /<\d+<GET USER mary\r\n/);
  t.regex(text, />\d+>(\* .*\r\n)*OK success\r\n/);
  t.regex(text, /<\d+<EXIT\r\n>\d+>OK Finished\r\n/);
  // sync_client's login is not recorded (telemetry starts after it).
  t.notRegex(text, /AUTHENTICATE/);
});

test(`${SYNCS} sequential syncs with -U ${USES}: children recycled, none fails, the user converges`, async (t) => {
  const { peer, m } = t.context;
  const target = `127.0.0.1:${m.recyclePort}`;
  const failures: string[] = [];
  for (let i = 0; i < SYNCS; i++) {
    const r = await syncClient(peer, target, ['-u', 'tiny']);
    if (r.code !== 0) failures.push(`#${i}: ${describe(r)}`);
    if (failures.length > 3) break;
  }
  t.deepEqual(failures, []);
  // One telemetry file per process (recycle-<pid>), one header per session.
  const perPid = new Map<string, number>();
  for (const f of await m.telemetryFiles('recycle')) {
    const text = await fsp.readFile(path.join(m.telemetryDir, f), 'latin1');
    perPid.set(f.slice('recycle-'.length), (text.match(/^---------- admin /gm) ?? []).length);
  }
  const total = [...perPid.values()].reduce((a, b) => a + b, 0);
  t.is(total, SYNCS, JSON.stringify([...perPid]));
  for (const [pid, n] of perPid) t.true(n <= USES, `pid ${pid} served ${n} sessions`);
  t.true(perPid.size >= 2, `pids: ${[...perPid.keys()].join(' ')}`);
  t.log(`sessions per process: ${JSON.stringify(Object.fromEntries(perPid))}`);
  await converged(t, 'tiny');
});

test('a service child killed with SIGKILL mid-session leaves master running; the next sync converges', async (t) => {
  const { peer, m } = t.context;
  const masterPid = m.masterPid();
  t.truthy(masterPid);
  const before = new Map<string, number>();
  for (const f of await m.telemetryFiles()) before.set(f, (await fsp.stat(path.join(m.telemetryDir, f))).size);
  const syncing = peer.sync('heavy', m.target);
  // The session is in the middle of its APPLY MESSAGE traffic once its telemetry grows past 256 KiB.
  let victim: number | undefined;
  const found = await waitFor(async () => {
    for (const f of await m.telemetryFiles()) {
      const size = (await fsp.stat(path.join(m.telemetryDir, f))).size;
      if (size - (before.get(f) ?? 0) > 256 * 1024) {
        const text = (await fsp.readFile(path.join(m.telemetryDir, f), 'latin1')).slice(before.get(f) ?? 0);
        if (!/<\d+<EXIT\r\n/.test(text)) {
          victim = Number(f.split('-')[1]);
          return true;
        }
      }
    }
    return false;
  }, 60_000, 20);
  t.true(found, 'no session in progress was seen');
  process.kill(victim!, 'SIGKILL');
  const interrupted = await syncing;
  t.log(`interrupted sync: exit ${interrupted.code}`);
  await sleep(500);
  t.is(m.masterPid(), masterPid, 'master is no longer running');
  t.false((await m.services()).includes(victim!));
  const again = await peer.sync('heavy', m.target);
  t.is(again.code, 0, describe(again));
  await converged(t, 'heavy');
  await sameDump(t, 'heavy');
});

test('a bad imapd.conf: the service exits with a clear error naming the file, line and key, in syslog only', async (t) => {
  const { m } = t.context;
  const sock = net.connect(m.badPort, '127.0.0.1');
  t.teardown(() => sock.destroy());
  let got = '';
  sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
  sock.on('error', () => undefined);
  const seen = await waitFor(() => /Fatal error: configuration error in /.test(m.syslog()), 30_000, 100);
  sock.destroy();
  t.true(seen, tail(m.syslog()));
  const line = m.syslog().split('\n').find((l) => l.includes('Fatal error: configuration error in'))!;
  t.true(line.includes(`badsync[`), line);
  t.true(line.includes(m.badConf), line);
  t.regex(line, /line 4/);
  t.regex(line, /sync_timeout/);
  // master saw the exit status of a configuration error (EX_CONFIG = 78).
  await waitFor(() => /badsync.*exited, status 78/.test(m.syslog()), 10_000, 100);
  t.regex(m.syslog(), /badsync.*exited, status 78/);
  // Nothing on the connection, nothing on fds 1-2.
  t.is(got, '');
  t.notRegex(m.errors(), /configuration error/);
});
