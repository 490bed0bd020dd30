/**
 * Interop harness: real Cyrus releases (master, real sync_server replica,
 * real backupd and its tools) run through test/interop/peer/cyrus-peer, and
 * cyrsync run from dist/ as a standalone csync listener, side by side on
 * 127.0.0.1.
 *
 * Releases (`Peer.create({ release })`, default 3.6.1):
 * - 3.6.1: this machine's Debian 12 packages (`cyrus-peer setup`).
 * - 3.10.2 and 3.12.4: a Debian trixie / sid root made once with debootstrap
 *   under $CYRUS_PEER_ROOTS (default /srv/cyrus-roots), where cyrus-peer runs
 *   through `peer/cyrus-peer-root SUITE`. Same network (127.0.0.1), same
 *   process table, its own file system: `peer.dir` is the host's path of the
 *   run directory, `peer.inRoot(p)` the same file as the release's programs
 *   see it. 3.12.4 has no backupd and no backup tools.
 * - A directory both sides see at one path (cyrsync's store that the
 *   release's tools must read): `makeSharedDir(prefix, release)`.
 *
 * What a test needs from each release:
 * - its sync_client toward any target: `peer.sync(user, target)`,
 *   `peer.compare(...)` (the master: `peer.startMaster()`);
 * - a fresh real sync_server of that release, e.g. as a restore target:
 *   `const p = await Peer.create({ release }); await p.startReplica();` then
 *   `p.replicaTarget` (csync), `p.replicaImapPort` and `p.replicaDump(user)`;
 *   `p.setReplicaPassword(user, pw)` for a login of one's own;
 * - its Cyrus tools on any imapd.conf: `peer.tool(conf, 'ctl_backups', ...)`
 *   (for 3.10.2, the conf and the files it names in a shared directory, made
 *   readable there with `peer.chownForRelease(dir)`), or on an instance's
 *   own conf: `peer.tool('backupd', 'cyr_backup', ...)`.
 *
 * Invariants:
 * - Every instance of a run lives in one private directory under /tmp (the
 *   `cyrus` user must be able to reach it) on ports picked free at start, so
 *   two runs on one machine, or a developer's own cyrus-peer, never collide.
 * - Only processes this harness started are stopped, by their pids (Cyrus
 *   masters through cyrus-peer's pid files, cyrsync and every helper command
 *   through the process group the harness created for it).
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { INTEROP_DIR, REPO_ROOT, ServerProcess, describe, distinctFreePorts, freePort, run, sleep, tail, type RunOptions, type RunResult } from './processes.js';

export * from './processes.js';

export const PEER = path.join(INTEROP_DIR, 'peer', 'cyrus-peer');
export const PEER_ROOT = path.join(INTEROP_DIR, 'peer', 'cyrus-peer-root');
export const PEER_WIRE = path.join(INTEROP_DIR, 'peer', 'lib', 'peer_wire.py');
export const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli.js');

/** Same credentials cyrus-peer gives every instance; sync_client logs in with them. */
export const ADMIN = 'admin';
export const ADMIN_PASSWORD = 'adminpw';
export const USER_PASSWORD = 'userpw';

// ------------------------------------------------------------ private directory

/**
 * A fresh directory under /tmp, world-traversable, for one run's instances.
 * Cyrus programs switch to the `cyrus` user, which must reach it.
 */
export async function makeRunDir(prefix: string): Promise<string> {
  // /tmp, not os.tmpdir(): TMPDIR may point below /root, which the cyrus user cannot reach.
  const dir = await fsp.mkdtemp(path.join('/tmp', prefix));
  await fsp.chmod(dir, 0o755);
  return dir;
}

/** Every regular file below `dir`, as absolute paths. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string): Promise<void> {
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) out.push(p);
    }
  }
  await walk(dir);
  return out;
}

/**
 * Files below `dir` that begin with the leading octets of `prefix` (all of
 * them, or at least the first 64 for a file cut short): a body stored whole
 * or partly, under any name.
 */
export async function filesStartingWith(dir: string, prefix: Buffer): Promise<string[]> {
  const hits: string[] = [];
  for (const f of await listFiles(dir)) {
    let fd: fsp.FileHandle | undefined;
    try {
      fd = await fsp.open(f, 'r');
      const buf = Buffer.alloc(prefix.length);
      const { bytesRead } = await fd.read(buf, 0, prefix.length, 0);
      if (bytesRead > 0 && buf.subarray(0, bytesRead).equals(prefix.subarray(0, bytesRead)) && bytesRead >= Math.min(prefix.length, 64)) {
        hits.push(f);
      }
    } catch {
      /* vanished while walking */
    } finally {
      await fd?.close();
    }
  }
  return hits;
}

/** Files below `dir` whose path below `dir` contains `needle` (e.g. a GUID as a file or directory name). */
export async function filesNamed(dir: string, needle: string): Promise<string[]> {
  return (await listFiles(dir)).filter((f) => path.relative(dir, f).includes(needle));
}

export function sha1(buf: Buffer | string): string {
  return createHash('sha1').update(buf).digest('hex');
}

// ------------------------------------------------------------------ Cyrus setup

/** The real Cyrus releases the suite runs against. */
export type Release = '3.6.1' | '3.10.2' | '3.12.4';

export interface ReleaseInfo {
  /** Debian suite of the root it runs in; null: this machine's own packages (Debian 12). */
  suite: string | null;
  /** Ships backupd and the backup tools (ctl_backups, cyr_backup, restore). */
  backupTools: boolean;
}

export const RELEASES: Readonly<Record<Release, ReleaseInfo>> = {
  '3.6.1': { suite: null, backupTools: true },
  '3.10.2': { suite: 'trixie', backupTools: true },
  '3.12.4': { suite: 'sid', backupTools: false },
};

/** Where cyrus-peer-root keeps its Debian roots. */
export const ROOTS = process.env['CYRUS_PEER_ROOTS'] ?? '/srv/cyrus-roots';

/** The root directory a release's programs run in ('' for this machine's own). */
export function releaseRoot(release: Release): string {
  const suite = RELEASES[release].suite;
  return suite === null ? '' : path.join(ROOTS, suite);
}

const setupDone = new Map<Release, Promise<void>>();

/**
 * Makes a release runnable, once per process: 3.6.1 installs the Cyrus
 * packages when missing (`cyrus-peer setup`: root + apt, Debian 12); the
 * others make their Debian root when missing (debootstrap, a few minutes).
 */
export function ensureSetup(release: Release = '3.6.1'): Promise<void> {
  let done = setupDone.get(release);
  if (!done) {
    done = (async () => {
      const suite = RELEASES[release].suite;
      const [cmd, args] = suite === null ? [PEER, ['setup']] : [PEER_ROOT, [suite, 'setup']];
      const r = await run(cmd, args, { timeoutMs: 30 * 60_000 });
      if (r.code !== 0) throw new Error(`Cyrus ${release} setup failed\n${describe(r)}`);
    })();
    setupDone.set(release, done);
  }
  return done;
}

/**
 * A fresh directory that cyrsync (on this machine) and the programs of
 * `release` (in its root) both see at the same path, so that paths written
 * into its files (backups.db, imapd.conf) are right on both sides: for a
 * rooted release, the directory lives in the root's /tmp and /tmp/NAME on
 * this machine is a symbolic link to it. Remove it with removeSharedDir().
 */
export async function makeSharedDir(prefix: string, release: Release = '3.6.1'): Promise<string> {
  const root = releaseRoot(release);
  if (root === '') return makeRunDir(prefix);
  await ensureSetup(release);
  const real = await fsp.mkdtemp(path.join(root, 'tmp', prefix));
  await fsp.chmod(real, 0o755);
  const link = path.join('/tmp', path.basename(real));
  await fsp.symlink(real, link);
  return link;
}

/** Removes a directory made by makeSharedDir() (and its link). */
export async function removeSharedDir(dir: string): Promise<void> {
  const st = await fsp.lstat(dir).catch(() => undefined);
  if (st?.isSymbolicLink()) {
    const real = await fsp.readlink(dir);
    await fsp.rm(real, { recursive: true, force: true });
    await fsp.unlink(dir);
  } else if (st) {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------ Peer

export interface SyncOptions {
  /** Route the session through a relay that hides `* COMPRESS DEFLATE`. */
  noCompress?: boolean;
  /** Record the whole session (banner, AUTHENTICATE, decompressed traffic) to this file. */
  tap?: string;
  /** Save sync_client's own `-v -v` protocol log to this file. */
  wire?: string;
  /** Extra sync_client arguments (after `--`). */
  extra?: string[];
}

export interface CompareResult extends RunResult {
  converged: boolean;
}

export interface PeerOptions {
  /** The Cyrus release (default 3.6.1, this machine's own). */
  release?: Release;
}

/** One private set of real Cyrus instances of one release, driven through cyrus-peer. */
export class Peer {
  readonly release: Release;
  /** The root the release runs in ('' for this machine's own 3.6.1). */
  readonly root: string;
  /** The run directory as this machine sees it. */
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly imapPort: number;
  readonly replicaPort: number;
  readonly replicaImapPort: number;
  readonly backupdPort: number;

  private constructor(release: Release, dir: string, ports: number[]) {
    this.release = release;
    this.root = releaseRoot(release);
    this.dir = dir;
    const [imap, sieve, replica, replicaImap, backupd] = ports as [number, number, number, number, number];
    this.imapPort = imap;
    this.replicaPort = replica;
    this.replicaImapPort = replicaImap;
    this.backupdPort = backupd;
    this.env = {
      ...process.env,
      CYRUS_PEER_DIR: this.inRoot(dir),
      CYRUS_PEER_IMAP_PORT: String(imap),
      CYRUS_PEER_SIEVE_PORT: String(sieve),
      CYRUS_PEER_REPLICA_PORT: String(replica),
      CYRUS_PEER_REPLICA_IMAP_PORT: String(replicaImap),
      CYRUS_PEER_BACKUPD_PORT: String(backupd),
      CYRUS_PEER_TARGET: 'replica',
      // A one-shot sync that hangs must not hold the suite for the default
      // 30 min; a full sync of the populated users takes seconds.
      CYRUS_PEER_SYNC_DEADLINE: '120',
    };
  }

  static async create(o: PeerOptions = {}): Promise<Peer> {
    const release = o.release ?? '3.6.1';
    await ensureSetup(release);
    const root = releaseRoot(release);
    let dir: string;
    if (root === '') {
      dir = await makeRunDir('cyrsync-interop-peer-');
    } else {
      dir = await fsp.mkdtemp(path.join(root, 'tmp', 'cyrsync-interop-peer-'));
      await fsp.chmod(dir, 0o755);
    }
    return new Peer(release, dir, await distinctFreePorts(5));
  }

  /** A path of this machine as the release's programs see it (unchanged for 3.6.1). */
  inRoot(p: string): string {
    if (this.root === '') return p;
    // the nearest existing ancestor resolved (a shared directory is a link into the root)
    let head = path.resolve(p);
    let rest = '';
    while (!fs.existsSync(head) && path.dirname(head) !== head) {
      rest = path.join(path.basename(head), rest);
      head = path.dirname(head);
    }
    const real = path.join(fs.realpathSync(head), rest);
    const rel = path.relative(this.root, real);
    if (rel.startsWith('..') || path.isAbsolute(rel)) throw new Error(`${p} is outside the ${this.release} root ${this.root}: use makeSharedDir()`);
    return `/${rel}`;
  }

  /** The program and leading arguments that run cyrus-peer of this release. */
  private get peerCommand(): [string, string[]] {
    const suite = RELEASES[this.release].suite;
    return suite === null ? [PEER, []] : [PEER_ROOT, [suite]];
  }

  /** `cyrus-peer ARGS...` with this run's directory and ports. */
  cmd(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const [prog, lead] = this.peerCommand;
    return run(prog, [...lead, ...args], { ...opts, env: { ...this.env, ...(opts.env ?? {}) } });
  }

  /** The command line of `cyrus-peer ARGS...` for callers that spawn it themselves (streamed output). */
  commandLine(args: readonly string[]): [string, string[]] {
    const [prog, lead] = this.peerCommand;
    return [prog, [...lead, ...args]];
  }

  /** A program of the release's own system (chroot'ed for a rooted release), e.g. saslpasswd2 or chown. */
  system(prog: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.root === '' ? run(prog, args, opts) : run('chroot', [this.root, prog, ...args], opts);
  }

  /**
   * A Cyrus tool of this release (`cyrus-peer tool`): INSTANCE is an
   * instance name (master, replica, backupd) or an imapd.conf; for a rooted
   * release a conf must lie in the root or in a makeSharedDir() directory.
   */
  tool(instance: string, prog: string, ...args: string[]): Promise<RunResult> {
    const conf = instance.includes('/') ? this.inRoot(instance) : instance;
    return this.cmd(['tool', conf, prog, ...args]);
  }

  /**
   * `chown -R cyrus:mail DIR` as this release's system knows the cyrus user
   * (its uid differs from this machine's in a root), so that its tools, which
   * switch to that user, can open and lock what cyrsync wrote there.
   */
  async chownForRelease(dir: string): Promise<void> {
    const r = await this.system('chown', ['-R', 'cyrus:mail', this.inRoot(dir)]);
    if (r.code !== 0) throw new Error(`chown failed\n${describe(r)}`);
  }

  /** Like cmd(), but throws with the output when the exit status is not 0. */
  async ok(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const r = await this.cmd(args, opts);
    if (r.code !== 0) throw new Error(`cyrus-peer ${args.join(' ')} failed\n${describe(r)}`);
    return r;
  }

  get replicaTarget(): string {
    return `127.0.0.1:${this.replicaPort}`;
  }

  startMaster(): Promise<RunResult> {
    return this.ok(['master', 'start']);
  }

  startReplica(): Promise<RunResult> {
    return this.ok(['replica', 'start']);
  }

  populate(user: string, count: number, size?: string, plain = false): Promise<RunResult> {
    const args = ['populate', user, String(count)];
    if (size) args.push(size);
    if (plain) args.push('--plain');
    return this.ok(args);
  }

  mutate(user: string): Promise<RunResult> {
    return this.ok(['mutate', user]);
  }

  private syncArgs(target: string, o: SyncOptions): string[] {
    const a = ['--to', target];
    if (o.noCompress) a.push('--no-compress');
    // a rooted release writes these files in its root: give paths below peer.dir
    if (o.tap) a.push('--tap', this.inRoot(o.tap));
    if (o.wire) a.push('--wire', this.inRoot(o.wire));
    if (o.extra?.length) a.push('--', ...o.extra);
    return a;
  }

  /** One-shot `sync_client -u USER` toward `target` (HOST:PORT or replica). */
  sync(user: string, target: string, o: SyncOptions = {}): Promise<RunResult> {
    return this.cmd(['sync', user, ...this.syncArgs(target, o)]);
  }

  /** One-shot `sync_client -A`. */
  syncAll(target: string, o: SyncOptions = {}): Promise<RunResult> {
    return this.cmd(['sync', '--all', ...this.syncArgs(target, o)]);
  }

  /** One-shot `sync_client -m MBOX...` with IMAP admin names (user/bob/Sent). */
  syncMailbox(mailboxes: string[], target: string, o: SyncOptions = {}): Promise<RunResult> {
    return this.cmd(['sync-mailbox', ...mailboxes, ...this.syncArgs(target, o)]);
  }

  /** A second one-shot sync must send no APPLY and get no NO/BAD. */
  async compare(user: string, target: string, o: SyncOptions = {}): Promise<CompareResult> {
    const r = await this.cmd(['compare', user, ...this.syncArgs(target, o)]);
    return { ...r, converged: r.code === 0 && /^CONVERGED$/m.test(r.stdout) };
  }

  /** Canonical listing of USER's store on the master (over its IMAP). */
  async masterDump(user: string): Promise<string> {
    return (await this.ok(['dump', user])).stdout;
  }

  /** The same listing of the real replica's copy (over the replica's imapd). */
  async replicaDump(user: string): Promise<string> {
    return (await this.ok(['dump', user, '--imap', `127.0.0.1:${this.replicaImapPort}`])).stdout;
  }

  syncLogClear(): Promise<RunResult> {
    return this.ok(['sync-log', 'clear']);
  }

  /** Entries of the master's sync log not yet taken by a rolling sync_client. */
  async syncLogPending(): Promise<boolean> {
    const syncDir = path.join(this.dir, 'master', 'conf', 'sync');
    let names: string[];
    try {
      names = await fsp.readdir(syncDir);
    } catch {
      return false;
    }
    for (const n of names) {
      // `log` is appended by the master's services; sync_client -R renames it to
      // `log-<pid>` while working through it and removes that when done.
      if (n === 'log' || n.startsWith('log-')) {
        const st = await fsp.stat(path.join(syncDir, n)).catch(() => undefined);
        if (st && st.isFile() && st.size > 0) return true;
      }
    }
    return false;
  }

  rollingStart(target: string, o: SyncOptions = {}): Promise<RunResult> {
    return this.ok(['rolling', 'start', ...this.syncArgs(target, o)]);
  }

  rollingStop(): Promise<RunResult> {
    return this.cmd(['rolling', 'stop']);
  }

  rollingLog(): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'master', 'logs', 'rolling.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Gives USER a password in the real replica's sasldb (for session-level tests). */
  async setReplicaPassword(user: string, password: string): Promise<void> {
    const db = this.inRoot(path.join(this.dir, 'replica', 'sasldb2'));
    const r = await this.system('saslpasswd2', ['-p', '-c', '-f', db, '-u', 'peer-replica', user], { input: password });
    if (r.code !== 0) throw new Error(`saslpasswd2 failed\n${describe(r)}`);
    await this.system('chown', ['cyrus:mail', db]);
  }

  /** `peer_wire.py summary FILE`: command counts of a wire log or tap recording. */
  async wireSummary(file: string): Promise<RunResult> {
    return run(process.env['CYRUS_PEER_PYTHON'] ?? 'python3', [PEER_WIRE, 'summary', file]);
  }

  logs(lines = 80): Promise<RunResult> {
    return this.cmd(['logs', String(lines)]);
  }

  /** Stops rolling replication, every instance and the syslog helper of this run. */
  async stopAll(): Promise<void> {
    await this.cmd(['stop-all'], { timeoutMs: 120_000 });
  }

  async remove(): Promise<void> {
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------- cyrsync

export interface CyrsyncOptions {
  /** Extra imapd.conf lines. */
  extraConf?: string[];
  /** Users and passwords to add with `cyrsync passwd` (admin/adminpw is always added). */
  users?: Record<string, string>;
  /** Extra arguments for the daemon. */
  args?: string[];
  /** `sync-server` (default: the replica) or `backupd` (the backup server). */
  daemon?: 'sync-server' | 'backupd';
  /** An existing empty directory to keep everything in (e.g. from makeSharedDir()); default: a fresh one under /tmp. */
  dir?: string;
}

/**
 * One cyrsync server (`cyrsync sync-server --listen`, or `cyrsync backupd
 * --listen` with `daemon: 'backupd'`) on its own configuration, data
 * directory and port. The backup server keeps its backups in
 * `partitionDir` (backuppartition-default), its staging area below `dir`.
 */
export class Cyrsync extends ServerProcess {
  readonly dir: string;
  readonly conf: string;
  readonly configDir: string;
  readonly partitionDir: string;
  private args: string[] = [];
  readonly daemon: 'sync-server' | 'backupd';

  private constructor(dir: string, port: number, daemon: 'sync-server' | 'backupd') {
    super(path.join(dir, 'server.log'), port);
    this.daemon = daemon;
    this.dir = dir;
    this.conf = path.join(dir, 'imapd.conf');
    this.configDir = path.join(dir, 'conf');
    this.partitionDir = path.join(dir, daemon === 'backupd' ? 'backups' : 'spool');
  }

  static async start(o: CyrsyncOptions = {}): Promise<Cyrsync> {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    const daemon = o.daemon ?? 'sync-server';
    const c = new Cyrsync(o.dir ?? (await makeRunDir('cyrsync-interop-server-')), await freePort(), daemon);
    const tempDir = path.join(c.dir, 'tmp');
    for (const d of [c.configDir, c.partitionDir, tempDir]) await fsp.mkdir(d, { recursive: true });
    // Everything the server writes (index, blobs, staging, temporary files)
    // stays below c.dir, so the tests can account for every file.
    const lines = [
      `configdirectory: ${c.configDir}`,
      `defaultpartition: default`,
      daemon === 'backupd' ? `backuppartition-default: ${c.partitionDir}` : `partition-default: ${c.partitionDir}`,
      `temp_path: ${tempDir}`,
      `servername: cyrsync-interop`,
      `admins: ${ADMIN}`,
      // the same login as the real instances: PLAIN without TLS on loopback
      `allowplaintext: yes`,
      ...(o.extraConf ?? []),
    ];
    await fsp.writeFile(c.conf, lines.join('\n') + '\n');
    await c.setPassword(ADMIN, ADMIN_PASSWORD);
    for (const [u, pw] of Object.entries(o.users ?? {})) await c.setPassword(u, pw);
    await c.launch(o.args ?? []);
    return c;
  }

  /** `cyrsync passwd -C conf USER` with the password on stdin. */
  async setPassword(user: string, password: string): Promise<void> {
    const r = await run(process.execPath, [CLI, 'passwd', '-C', this.conf, user], { input: `${password}\n` });
    if (r.code !== 0) throw new Error(`cyrsync passwd ${user} failed\n${describe(r)}`);
  }

  /** Stops the server and starts it again on the same configuration, data and port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch(this.args);
  }

  private async launch(extraArgs: string[]): Promise<void> {
    this.args = extraArgs;
    if (!(await this.spawnListening(process.execPath, [CLI, this.daemon, '-C', this.conf, '--listen', this.target, ...extraArgs], 30_000, 100))) {
      await this.stop();
      throw new Error(`cyrsync ${this.daemon} did not start listening on ${this.target}\n${tail(this.log(), 40)}`);
    }
  }

  /** `cyrsync dump -C conf USER`: the same canonical listing as `cyrus-peer dump USER`. */
  dump(user: string): Promise<RunResult> {
    return run(process.execPath, [CLI, 'dump', '-C', this.conf, user]);
  }

  /** SIGTERM (BYE at the next command boundary); SIGKILL after 10 s. */
  async stop(): Promise<void> {
    await this.terminate(10_000);
  }

  async remove(): Promise<void> {
    await removeSharedDir(this.dir);
  }
}

// ------------------------------------------------------------------ csync client

/**
 * A raw csync client for session-level tests: sends exact bytes, reads CRLF
 * lines. No compression, no literal parsing in replies (the tests here only
 * read status and short data lines).
 */
export class CsyncClient {
  private readonly sock: net.Socket;
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(sock: net.Socket) {
    this.sock = sock;
    sock.on('data', (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      const done = (): void => {
        this.ended = true;
        this.wake();
        resolve();
      };
      sock.once('close', done);
    });
    sock.on('error', () => {});
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  static async connect(port: number, host = '127.0.0.1'): Promise<CsyncClient> {
    const sock = net.connect({ port, host });
    await once(sock, 'connect');
    sock.setNoDelay(true);
    return new CsyncClient(sock);
  }

  get isClosed(): boolean {
    return this.ended;
  }

  /** Next line without its CRLF, or null when the server closed first. Rejects after `ms`. */
  async readLine(ms = 30_000): Promise<string | null> {
    const end = Date.now() + ms;
    for (;;) {
      const i = this.buf.indexOf(0x0a);
      if (i >= 0) {
        const line = this.buf.subarray(0, i).toString('latin1').replace(/\r$/, '');
        this.buf = this.buf.subarray(i + 1);
        return line;
      }
      if (this.ended) return null;
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no reply line within ${ms} ms (buffered: ${JSON.stringify(this.buf.toString('latin1'))})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Exactly `n` raw octets. Rejects after `ms` or when the server closes first. */
  async readBytes(n: number, ms = 30_000): Promise<Buffer> {
    const end = Date.now() + ms;
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buf.length} of ${n} literal octets`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`literal of ${n} octets not complete within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /**
   * One logical reply line: a physical line that ends in a literal header
   * (`{N}`, `{N+}` or a file literal `%{part guid N}`) continues after the
   * N octets, as on the wire (csync-wire §1.5). Literal octets are kept as
   * latin1 text.
   */
  async readLogicalLine(ms = 30_000): Promise<string | null> {
    let line = await this.readLine(ms);
    if (line === null) return null;
    for (;;) {
      const m = /(?:\{(\d+)\+?\}|%\{[^ }]+ [0-9a-fA-F]+ (\d+)\})$/.exec(line);
      if (!m) return line;
      const lit = await this.readBytes(Number(m[1] ?? m[2]), ms);
      const rest = await this.readLine(ms);
      line = `${line}\r\n${lit.toString('latin1')}${rest ?? ''}`;
      if (rest === null) return line;
    }
  }

  /** Greeting lines up to and including the `* OK` line. */
  async readBanner(): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const l = await this.readLine();
      if (l === null) throw new Error(`connection closed during the greeting: ${JSON.stringify(lines)}`);
      lines.push(l);
      if (/^\* OK/i.test(l)) return lines;
    }
  }

  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.sock.write(data, (err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Reads one reply: `*` data lines, then the status line (OK/NO/BAD/BYE or
   * anything else that does not start with `*`). `status` is null when the
   * server closed the connection before a status line.
   */
  async reply(ms = 30_000): Promise<{ data: string[]; status: string | null }> {
    const data: string[] = [];
    for (;;) {
      const l = await this.readLogicalLine(ms);
      if (l === null) return { data, status: null };
      if (l.startsWith('* ')) data.push(l);
      else return { data, status: l };
    }
  }

  /** Sends one command (CRLF added unless `raw`) and reads its reply. */
  async command(line: string | Buffer, ms = 30_000): Promise<{ data: string[]; status: string | null }> {
    await this.write(typeof line === 'string' ? `${line}\r\n` : line);
    return this.reply(ms);
  }

  /** `AUTHENTICATE PLAIN <base64 \0user\0password>`: the status line. */
  async authPlain(user: string, password: string): Promise<string | null> {
    const b64 = Buffer.from(`\0${user}\0${password}`).toString('base64');
    return (await this.command(`AUTHENTICATE PLAIN ${b64}`)).status;
  }

  /** Drops the TCP connection at once (no EXIT). */
  destroy(): void {
    this.sock.destroy();
  }

  async close(): Promise<void> {
    if (!this.ended) {
      this.sock.end();
      await Promise.race([this.closed, sleep(2000)]);
      this.sock.destroy();
    }
  }
}

/** Connects, reads the greeting and logs in as the administrator. */
export async function adminSession(port: number): Promise<CsyncClient> {
  const c = await CsyncClient.connect(port);
  await c.readBanner();
  const st = await c.authPlain(ADMIN, ADMIN_PASSWORD);
  if (!st?.startsWith('OK')) {
    c.destroy();
    throw new Error(`admin login refused: ${st}`);
  }
  return c;
}

// ------------------------------------------------------------------- dlist text

/** A file literal `%{partition guid size}\r\n<bytes>` as sync_client writes it. */
export function fileLiteral(body: Buffer, guid = sha1(body), partition = 'default'): Buffer {
  return Buffer.concat([Buffer.from(`%{${partition} ${guid} ${body.length}}\r\n`), body]);
}

/** A small RFC 5322 message with CRLF line ends, unique per `tag`. */
export function message(tag: string, bodyBytes = 200): Buffer {
  // The tag comes first, so the leading octets of every message differ
  // (filesStartingWith() recognises stored bodies by them).
  const head = `Subject: ${tag}\r\nMessage-ID: <${tag}@interop.example.org>\r\nFrom: interop@example.org\r\nTo: user@example.org\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\n`;
  let body = '';
  while (body.length < bodyBytes) body += `${tag} line ${body.length}\r\n`;
  return Buffer.from(head + body);
}

/**
 * `APPLY MAILBOX` for a new email mailbox holding `records` (appended
 * messages that must already be staged with APPLY MESSAGE). SYNC_CRC 0 makes
 * the post-commit CRC check pass (replica-semantics §6.3).
 */
export function applyMailbox(
  name: string,
  uniqueid: string,
  records: Array<{ uid: number; guid: string; size: number; flags?: string[] }>,
  owner: string,
): string {
  const last = records.reduce((m, r) => Math.max(m, r.uid), 0);
  const hms = records.length + 1;
  const recs = records
    .map(
      (r, i) =>
        `%(UID ${r.uid} MODSEQ ${i + 1} LAST_UPDATED 1767225600 FLAGS (${(r.flags ?? []).join(' ')}) INTERNALDATE 1767225600 SIZE ${r.size} GUID ${r.guid})`,
    )
    .join(' ');
  return (
    `APPLY MAILBOX %(UNIQUEID ${uniqueid} MBOXNAME ${name} SYNC_CRC 0 LAST_UID ${last} HIGHESTMODSEQ ${hms} ` +
    `RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 1767225600 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1767225600 ` +
    `PARTITION default ACL "${owner}\tlrswipkxtecdan\t" OPTIONS "" CREATEDMODSEQ 1 FOLDERMODSEQ 1 RECORD (${recs}))`
  );
}
