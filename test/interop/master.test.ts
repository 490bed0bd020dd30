/**
 * cyrsync as a service of the real Cyrus 3.6.1 master(8) (`cyrmaster` of
 * Debian's cyrus-common): cyrus.conf runs `node dist/src/cli.js sync-server`
 * exactly where it would run `sync_server`, and the real sync_client
 * replicates through it.
 *
 * The master runs in a private mount namespace whose /dev/log is a socket of
 * this run (cyrus-peer's syslog receiver), so both master's and cyrsync's
 * syslog lines can be read; master's -L file receives everything the
 * services write to fds 1 and 2, which must stay empty of cyrsync output.
 */
import anyTest, { type TestFn } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import {
  ADMIN,
  ADMIN_PASSWORD,
  CLI,
  INTEROP_DIR,
  Peer,
  describe,
  freePort,
  makeRunDir,
  portOpen,
  run,
  sleep,
  stopOwnProcesses,
  tail,
  waitFor,
} from './harness.js';

const CYRBIN = '/usr/lib/cyrus/bin';
const SYSLOGD = path.join(INTEROP_DIR, 'peer', 'lib', 'peer_syslogd.py');
const NODE = process.execPath;
const REPO = path.resolve(INTEROP_DIR, '..', '..');
const SYNCS = 300;
const USES = 250;

interface Ctx {
  peer: Peer;
  m: MasterRun;
}

const test = anyTest as TestFn<Ctx>;
let failed = false;

// ------------------------------------------------------------------ helpers

/** `/bin/sh` script of cyrus-peer's in_ns: a private /dev whose `log` is our socket. */
const NS_SCRIPT = `
set -e
d="$1"; sock="$2"; shift 2
mount -t tmpfs -o mode=0755,size=64k cyrsyncdev "$d"
mknod -m 666 "$d/null" c 1 3; mknod -m 666 "$d/zero" c 1 5; mknod -m 666 "$d/full" c 1 7
mknod -m 666 "$d/random" c 1 8; mknod -m 666 "$d/urandom" c 1 9; mknod -m 666 "$d/tty" c 5 0
mkdir "$d/pts" "$d/shm"
mount --rbind /dev/pts "$d/pts"; mount --rbind /dev/shm "$d/shm"
ln -s pts/ptmx "$d/ptmx"; ln -s /proc/self/fd "$d/fd"
ln -s /proc/self/fd/0 "$d/stdin"; ln -s /proc/self/fd/1 "$d/stdout"; ln -s /proc/self/fd/2 "$d/stderr"
ln -s "$sock" "$d/log"
mount --rbind "$d" /dev
exec "$@"`;

class MasterRun {
  readonly dir: string;
  readonly conf: string;
  readonly badConf: string;
  readonly masterConf: string;
  readonly cyrusConf: string;
  readonly configDir: string;
  readonly telemetryDir: string;
  readonly errLog: string;
  readonly syslogFile: string;
  readonly pidFile: string;
  private syslogd: ChildProcess | undefined;
  /** node and cli.js as the cyrus user runs them (a copy when the checkout is not readable by it). */
  node = NODE;
  cli = CLI;

  constructor(
    dir: string,
    readonly port: number,
    readonly badPort: number,
    /** A service entry used only by the recycling test, so one process at a time serves it. */
    readonly recyclePort: number,
  ) {
    this.dir = dir;
    this.conf = path.join(dir, 'imapd.conf');
    this.badConf = path.join(dir, 'bad-imapd.conf');
    this.masterConf = path.join(dir, 'master-imapd.conf');
    this.cyrusConf = path.join(dir, 'cyrus.conf');
    this.configDir = path.join(dir, 'conf');
    this.telemetryDir = path.join(this.configDir, 'log', ADMIN);
    this.errLog = path.join(dir, 'master.err');
    this.syslogFile = path.join(dir, 'syslog.log');
    this.pidFile = path.join(dir, 'run', 'master.pid');
  }

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async create(): Promise<MasterRun> {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    const ports = new Set<number>();
    while (ports.size < 3) ports.add(await freePort());
    const [port, badPort, recyclePort] = [...ports] as [number, number, number];
    const m = new MasterRun(await makeRunDir('cyrsync-interop-master-'), port, badPort, recyclePort);
    await m.reachableByCyrus();
    await m.prepare();
    return m;
  }

  /**
   * Services run as the cyrus user: when it cannot run this checkout (a clone
   * under /root, node from a private prefix), run a copy of node, dist/ and
   * node_modules/ from the run directory instead.
   */
  private async reachableByCyrus(): Promise<void> {
    const asCyrus = (node: string, cli: string) => run('runuser', ['-u', 'cyrus', '--', node, cli, 'version']);
    // CYRSYNC_INTEROP_COPY_APP=1 takes the copy path even when the checkout is readable.
    if (!process.env['CYRSYNC_INTEROP_COPY_APP'] && (await asCyrus(this.node, this.cli)).code === 0) return;
    const app = path.join(this.dir, 'app');
    await fsp.mkdir(app, { recursive: true });
    for (const part of ['dist', 'node_modules', 'package.json']) {
      const r = await run('cp', ['-a', path.join(REPO, part), app]);
      if (r.code !== 0) throw new Error(`copying ${part} for the cyrus user failed\n${describe(r)}`);
    }
    this.cli = path.join(app, path.relative(REPO, CLI));
    if ((await asCyrus(this.node, this.cli)).code !== 0) {
      await fsp.copyFile(NODE, path.join(app, 'node'));
      await fsp.chmod(path.join(app, 'node'), 0o755);
      this.node = path.join(app, 'node');
    }
    await run('chmod', ['-R', 'a+rX', app]);
    const r = await asCyrus(this.node, this.cli);
    if (r.code !== 0) throw new Error(`the cyrus user cannot run cyrsync even from ${app}\n${describe(r)}`);
  }

  private async prepare(): Promise<void> {
    const d = this.dir;
    for (const sub of ['conf', 'spool', 'tmp', 'run', 'run/nsdev', 'mconf', 'mconf/socket', 'mconf/proc', 'mconf/log', 'mconf/lock']) {
      await fsp.mkdir(path.join(d, sub), { recursive: true });
    }
    await fsp.mkdir(this.telemetryDir, { recursive: true });
    await fsp.writeFile(
      this.conf,
      [
        `configdirectory: ${this.configDir}`,
        'defaultpartition: default',
        `partition-default: ${d}/spool`,
        `temp_path: ${d}/tmp`,
        'servername: cyrsync-master',
        'syslog_prefix: cyrsync-it',
        `admins: ${ADMIN}`,
        'allowplaintext: yes',
        'sync_timeout: 60',
      ].join('\n') + '\n',
    );
    // Line 4 is the bad one: the error must name it.
    await fsp.writeFile(
      this.badConf,
      [`configdirectory: ${this.configDir}`, `partition-default: ${d}/spool`, `admins: ${ADMIN}`, 'sync_timeout: whenever', ''].join('\n'),
    );
    // master's own configuration: nothing of it is cyrsync's.
    await fsp.writeFile(
      this.masterConf,
      [
        `configdirectory: ${d}/mconf`,
        `proc_path: ${d}/mconf/proc`,
        `mboxname_lockpath: ${d}/mconf/lock`,
        'syslog_prefix: cyrsync-it-master',
        `partition-default: ${d}/spool`,
      ].join('\n') + '\n',
    );
    const cmd = (conf: string, extra: string) => `${this.node} ${this.cli} sync-server -C ${conf}${extra}`;
    await fsp.writeFile(
      this.cyrusConf,
      [
        'START {',
        '}',
        'SERVICES {',
        `  syncserver cmd="${cmd(this.conf, ` -U ${USES}`)}" listen="127.0.0.1:${this.port}" prefork=0`,
        `  badsync    cmd="${cmd(this.badConf, '')}" listen="127.0.0.1:${this.badPort}" prefork=0`,
        `  recycle    cmd="${cmd(this.conf, ` -U ${USES}`)}" listen="127.0.0.1:${this.recyclePort}" prefork=0`,
        '}',
        'EVENTS {',
        '}',
        'DAEMON {',
        '}',
      ].join('\n') + '\n',
    );
    const r = await run(NODE, [CLI, 'passwd', '-C', this.conf, ADMIN], { input: `${ADMIN_PASSWORD}\n` });
    if (r.code !== 0) throw new Error(`cyrsync passwd failed\n${describe(r)}`);
    // Cyrus programs (and so the services) run as the cyrus user.
    const c = await run('chown', ['-R', 'cyrus:mail', d]);
    if (c.code !== 0) throw new Error(`chown failed\n${describe(c)}`);
  }

  async start(): Promise<void> {
    const sock = path.join(this.dir, 'run', 'syslog.sock');
    this.syslogd = spawn('python3', [SYSLOGD, sock, this.syslogFile], { stdio: 'ignore', detached: true });
    if (!(await waitFor(() => fs.existsSync(sock), 10_000, 50))) throw new Error('syslog receiver did not start');
    const r = await run(
      'unshare',
      ['-m', '--propagation', 'private', '--', '/bin/sh', '-c', NS_SCRIPT, 'sh', path.join(this.dir, 'run', 'nsdev'), sock,
        path.join(CYRBIN, 'master'), '-C', this.masterConf, '-M', this.cyrusConf, '-p', this.pidFile, '-d', '-L', this.errLog],
      { timeoutMs: 60_000 },
    );
    if (r.code !== 0) throw new Error(`master did not start\n${describe(r)}\n${this.syslog()}`);
    const up = await waitFor(async () => this.masterPid() !== undefined && (await portOpen(this.port)) && (await portOpen(this.badPort)) && (await portOpen(this.recyclePort)), 30_000, 100);
    if (!up) throw new Error(`master is not listening on ${this.target}\n${tail(this.syslog())}`);
  }

  masterPid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(this.pidFile, 'utf8').trim());
      if (!pid) return undefined;
      process.kill(pid, 0);
      return pid;
    } catch {
      return undefined;
    }
  }

  /** Children of master that are this run's cyrsync services. */
  async services(): Promise<number[]> {
    const master = this.masterPid();
    if (master === undefined) return [];
    const r = await run('ps', ['-o', 'pid=,args=', '--ppid', String(master)]);
    return r.stdout
      .split('\n')
      .filter((l) => l.includes(this.cli) && (l.includes(this.conf) || l.includes(this.badConf)))
      .map((l) => Number(l.trim().split(/\s+/)[0]))
      .filter((n) => n > 0);
  }

  syslog(): string {
    try {
      return fs.readFileSync(this.syslogFile, 'utf8');
    } catch {
      return '';
    }
  }

  errors(): string {
    try {
      return fs.readFileSync(this.errLog, 'utf8');
    } catch {
      return '';
    }
  }

  async telemetryFiles(service = 'syncserver'): Promise<string[]> {
    return (await fsp.readdir(this.telemetryDir)).filter((n) => n.startsWith(`${service}-`)).sort();
  }

  async stop(): Promise<void> {
    const pid = this.masterPid();
    const kids = await this.services();
    if (pid !== undefined) {
      process.kill(pid, 'SIGTERM');
      await waitFor(() => this.masterPid() === undefined, 15_000, 100);
      if (this.masterPid() !== undefined) process.kill(pid, 'SIGKILL');
    }
    for (const k of kids) {
      try {
        process.kill(k, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (this.syslogd?.pid) {
      try {
        process.kill(-this.syslogd.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
  }
}

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
