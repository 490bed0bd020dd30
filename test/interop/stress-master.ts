/**
 * The real Cyrus 3.6.1 master(8) (`cyrmaster` of Debian's cyrus-common)
 * running cyrsync as its services, for `test/interop/master.test.ts` and
 * `npm run stress -- --mode master`: cyrus.conf runs `node dist/src/cli.js
 * sync-server` where it would run `sync_server` (services `syncserver`,
 * `recycle`, and `badsync` with a bad imapd.conf) and `cyrsync backupd` where
 * it would run `backupd` (service `backupd`).
 *
 * The master runs in a private mount namespace whose /dev/log is a socket of
 * this run (cyrus-peer's syslog receiver), so both master's and cyrsync's
 * syslog lines can be read; master's -L file receives everything the
 * services write to fds 1 and 2, which must stay empty of cyrsync output.
 *
 * Invariants: every service process is a child of this run's master and is
 * found by its imapd.conf; stop() ends master, its children and the syslog
 * receiver.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ADMIN, ADMIN_PASSWORD, CLI, INTEROP_DIR, describe, freePort, makeRunDir, portOpen, run, tail, waitFor } from './harness.js';

export const CYRBIN = '/usr/lib/cyrus/bin';
const SYSLOGD = path.join(INTEROP_DIR, 'peer', 'lib', 'peer_syslogd.py');
const NODE = process.execPath;
const REPO = path.resolve(INTEROP_DIR, '..', '..');
/** -U of the `syncserver` and `recycle` services. */
export const USES = 250;

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


/** imapd.conf of a cyrsync service under master: its own store lines, then what both services share. */
function serviceConf(store: string[]): string {
  return [...store, 'servername: cyrsync-master', 'syslog_prefix: cyrsync-it', `admins: ${ADMIN}`, 'allowplaintext: yes', 'sync_timeout: 60', ''].join('\n');
}
export class MasterRun {
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
  /** The backupd service's imapd.conf and its configdirectory (a store of its own). */
  readonly backupConf: string;
  readonly backupConfigDir: string;
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
    /** The `backupd` service (cyrsync backupd). */
    readonly backupPort: number,
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
    this.backupConf = path.join(dir, 'backup-imapd.conf');
    this.backupConfigDir = path.join(dir, 'bconf');
  }

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async create(): Promise<MasterRun> {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    const ports = new Set<number>();
    while (ports.size < 4) ports.add(await freePort());
    const [port, badPort, recyclePort, backupPort] = [...ports] as [number, number, number, number];
    const m = new MasterRun(await makeRunDir('cyrsync-interop-master-'), port, badPort, recyclePort, backupPort);
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
    for (const sub of ['conf', 'spool', 'tmp', 'run', 'run/nsdev', 'mconf', 'mconf/socket', 'mconf/proc', 'mconf/log', 'mconf/lock', 'backups', 'bstaging', 'btmp']) {
      await fsp.mkdir(path.join(d, sub), { recursive: true });
    }
    await fsp.mkdir(this.telemetryDir, { recursive: true });
    await fsp.mkdir(path.join(this.backupConfigDir, 'log', ADMIN), { recursive: true });
    await fsp.writeFile(this.backupConf, serviceConf([`configdirectory: ${this.backupConfigDir}`, `backuppartition-default: ${d}/backups`, `backup_staging_path: ${d}/bstaging`, `temp_path: ${d}/btmp`]));
    await fsp.writeFile(this.conf, serviceConf([`configdirectory: ${this.configDir}`, 'defaultpartition: default', `partition-default: ${d}/spool`, `temp_path: ${d}/tmp`]));
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
    const cmd = (conf: string, extra: string, daemon = 'sync-server') => `${this.node} ${this.cli} ${daemon} -C ${conf}${extra}`;
    await fsp.writeFile(
      this.cyrusConf,
      [
        'START {',
        '}',
        'SERVICES {',
        `  syncserver cmd="${cmd(this.conf, ` -U ${USES}`)}" listen="127.0.0.1:${this.port}" prefork=0`,
        `  badsync    cmd="${cmd(this.badConf, '')}" listen="127.0.0.1:${this.badPort}" prefork=0`,
        `  recycle    cmd="${cmd(this.conf, ` -U ${USES}`)}" listen="127.0.0.1:${this.recyclePort}" prefork=0`,
        `  backupd    cmd="${cmd(this.backupConf, '', 'backupd')}" listen="127.0.0.1:${this.backupPort}" prefork=0`,
        '}',
        'EVENTS {',
        '}',
        'DAEMON {',
        '}',
      ].join('\n') + '\n',
    );
    for (const conf of [this.conf, this.backupConf]) {
      const r = await run(NODE, [CLI, 'passwd', '-C', conf, ADMIN], { input: `${ADMIN_PASSWORD}\n` });
      if (r.code !== 0) throw new Error(`cyrsync passwd failed\n${describe(r)}`);
    }
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
    const up = await waitFor(async () => this.masterPid() !== undefined && (await portOpen(this.port)) && (await portOpen(this.badPort)) && (await portOpen(this.recyclePort)) && (await portOpen(this.backupPort)), 30_000, 100);
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

  /** Children of master that are this run's cyrsync services (only those run with `conf` when given). */
  async services(conf?: string): Promise<number[]> {
    const master = this.masterPid();
    if (master === undefined) return [];
    const r = await run('ps', ['-o', 'pid=,args=', '--ppid', String(master)]);
    return r.stdout
      .split('\n')
      .filter((l) => l.includes(this.cli) && (conf === undefined ? [this.conf, this.badConf, this.backupConf].some((c) => l.includes(`-C ${c} `) || l.endsWith(`-C ${c}`)) : l.includes(`-C ${conf} `) || l.endsWith(`-C ${conf}`)))
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

  async telemetryFiles(service = 'syncserver', dir = this.telemetryDir): Promise<string[]> {
    return (await fsp.readdir(dir)).filter((n) => n.startsWith(`${service}-`)).sort();
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

// ------------------------------------------------------- crash campaign target

/** A daemon under test in `npm run stress`: where its store lives and how it is killed and restarted. */
export interface StressTarget {
  readonly kind: 'sync-server' | 'backupd';
  /** imapd.conf of the daemon */
  readonly conf: string;
  readonly dirs: { configdirectory: string; partition: string; staging: string; temp: string };
  /** HOST:PORT for sync_client */
  readonly target: string;
  /** A fresh, empty store. */
  fresh(): Promise<void>;
  /** Called before a sync starts: resolves once the daemon serves that sync's session (true), or the sync ended first (false). */
  watchSession(): (syncDone: Promise<unknown>) => Promise<boolean>;
  /** SIGKILL; resolves once the process is gone, with what was killed. */
  kill9(): Promise<string>;
  /** Back in service after a kill. */
  restart(): Promise<void>;
  /** Before a sync or a real Cyrus tool, after the campaign read the store as root. */
  handOver(): Promise<void>;
  close(): Promise<void>;
  log(): string;
}

/** Whether `pid` is still a live (not zombie) process. */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

/**
 * One service of a MasterRun as a crash-campaign target: the child master
 * spawned for the sync's connection is found through its telemetry file
 * (`<service>-<pid>`, which grows once the session has logged in) and killed
 * with SIGKILL; master spawns a new child for the next connection.
 */
export class MasterTarget implements StressTarget {
  readonly conf: string;
  readonly dirs: StressTarget['dirs'];
  readonly target: string;
  private readonly service: string;
  private readonly telemetry: string;
  private victim: number | undefined;

  constructor(
    private readonly m: MasterRun,
    readonly kind: 'sync-server' | 'backupd',
  ) {
    const b = kind === 'backupd';
    this.conf = b ? m.backupConf : m.conf;
    this.service = b ? 'backupd' : 'syncserver';
    this.target = `127.0.0.1:${b ? m.backupPort : m.port}`;
    this.dirs = b
      ? { configdirectory: m.backupConfigDir, partition: path.join(m.dir, 'backups'), staging: path.join(m.dir, 'bstaging'), temp: path.join(m.dir, 'btmp') }
      : { configdirectory: m.configDir, partition: path.join(m.dir, 'spool'), staging: path.join(m.dir, 'spool', 'blobs', 'tmp'), temp: path.join(m.dir, 'tmp') };
    this.telemetry = path.join(this.dirs.configdirectory, 'log', ADMIN);
  }

  /** Ends the service's idle children (they hold the store open), then empties the store; the password file and telemetry stay. */
  async fresh(): Promise<void> {
    await this.endChildren();
    const keep = new Set(['cyrsync.passwd', 'log']);
    for (const dir of [this.dirs.configdirectory, this.dirs.partition, this.dirs.staging, this.dirs.temp]) {
      for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
        if (dir === this.dirs.configdirectory && keep.has(name)) continue;
        await fsp.rm(path.join(dir, name), { recursive: true, force: true });
      }
    }
    await this.handOver();
  }

  private async endChildren(): Promise<void> {
    const kids = await this.m.services(this.conf);
    for (const k of kids) process.kill(k, 'SIGTERM');
    if (!(await waitFor(() => kids.every((k) => !alive(k)), 20_000, 50))) for (const k of kids) if (alive(k)) process.kill(k, 'SIGKILL');
    await waitFor(() => kids.every((k) => !alive(k)), 10_000, 50);
  }

  watchSession(): (syncDone: Promise<unknown>) => Promise<boolean> {
    const sizes = new Map<string, number>();
    for (const f of fs.readdirSync(this.telemetry)) sizes.set(f, fs.statSync(path.join(this.telemetry, f)).size);
    this.victim = undefined;
    return async (syncDone) => {
      let ended = false;
      void syncDone.finally(() => (ended = true));
      for (;;) {
        for (const f of fs.readdirSync(this.telemetry)) {
          if (!f.startsWith(`${this.service}-`)) continue;
          const size = fs.statSync(path.join(this.telemetry, f)).size;
          if (size > (sizes.get(f) ?? 0)) {
            this.victim = Number(f.slice(this.service.length + 1));
            return true;
          }
        }
        if (ended) return false;
        await new Promise((r) => setTimeout(r, 10));
      }
    };
  }

  async kill9(): Promise<string> {
    const pids = this.victim !== undefined && alive(this.victim) ? [this.victim] : await this.m.services(this.conf);
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await waitFor(() => pids.every((p) => !alive(p)), 10_000, 20);
    if (pids.length === 0) return 'no child';
    return `${pids.length === 1 && pids[0] === this.victim ? 'session child' : 'idle child'} ${pids.join(',')}`;
  }

  /** Master spawns the next child on the next connection; the kill must have been reaped by then. */
  async restart(): Promise<void> {
    if (this.m.masterPid() === undefined) throw new Error(`master is gone\n${tail(this.m.syslog())}`);
    await this.handOver();
  }

  async handOver(): Promise<void> {
    const r = await run('chown', ['-R', 'cyrus:mail', this.m.dir]);
    if (r.code !== 0) throw new Error(`chown failed\n${describe(r)}`);
  }

  async close(): Promise<void> {
    await this.endChildren();
  }

  log(): string {
    return this.m.syslog();
  }
}
