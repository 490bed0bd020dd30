/**
 * The real Cyrus 3.6.1 sync_client replicating into cyrsync's backup store,
 * with the real backupd as the reference in the same run, and the real
 * Cyrus backup tools (ctl_backups, cyr_backup) as the judges of what
 * cyrsync wrote.
 *
 * "Converged" is what cyrus-peer's `compare` means, with the two APPLYs a
 * backup server accepts and ignores allowed (QUOTA, ACTIVATE_SIEVE: quota and
 * the active script are never backed up, so the client sends them again on
 * every pass).
 *
 * The cyrsync backup server runs as the `cyrus` user, like the real
 * backupd, so the real tools (which switch to that user) can open and lock
 * its files; it is started from test/helpers/backupd-server.ts.
 */
import anyTest, { type TestFn } from 'ava';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  ADMIN,
  ADMIN_PASSWORD,
  CLI,
  REPO_ROOT,
  adminSession,
  describe,
  fileLiteral,
  freePort,
  listFiles,
  message,
  ServerProcess,
  run,
  sha1,
  sleep,
  tail,
  waitFor,
  type CompareResult,
  type RunResult,
} from './harness.js';
import { type PeerContext, usePeer } from './fixture.js';

const ALLOW = 'APPLY QUOTA,APPLY ACTIVATE_SIEVE';
const HELPER = path.join(REPO_ROOT, 'test', 'helpers', 'backupd-server.ts');
const BUILT_SINK = path.join(REPO_ROOT, 'dist', 'sinks', 'backup', 'index.js');

/** test/helpers/backupd-server.ts on the built modules (dist/). */
function builtServerScript(): string {
  const d = (p: string): string => JSON.stringify(path.join(REPO_ROOT, 'dist', p));
  return [
    `import { createRequire } from 'node:module';`,
    `const pino = createRequire(${JSON.stringify(path.join(REPO_ROOT, 'package.json'))})('pino');`,
    `const { loadConfigOrEmbedded } = await import(${d('src/config.js')});`,
    `const { createAuthenticator } = await import(${d('src/server/daemon.js')});`,
    `const { parseListen, serveListener } = await import(${d('src/server/listener.js')});`,
    `const { VERSION } = await import(${d('src/version.js')});`,
    `const { createBackupSink } = await import(${d('sinks/backup/index.js')});`,
    `const argv = process.argv.slice(1); const conf = argv[argv.indexOf('-C') + 1]; const listen = argv[argv.indexOf('--listen') + 1];`,
    `const settings = loadConfigOrEmbedded(conf, process.cwd(), { ident: 'backupd' }).settings;`,
    `const log = pino({ level: 'info' }, pino.destination(2));`,
    `const sink = await createBackupSink({ settings, logger: log });`,
    `await serveListener(parseListen(listen), (_c, peer) => ({ profile: 'backup', sink, auth: createAuthenticator(settings), servername: settings.servername, version: VERSION, log, idleTimeout: settings.sync_timeout, peer }), log);`,
    `await sink.close();`,
  ].join('\n');
}

/** One cyrsync backup server on its own configuration and port. */
class BackupServer extends ServerProcess {
  private viaRunuser = false;

  private constructor(
    readonly dir: string,
    readonly conf: string,
    port: number,
  ) {
    super(path.join(dir, 'server.log'), port);
  }

  /** pid of the node process serving (the child of runuser when run as the cyrus user). */
  override get pid(): number | undefined {
    const top = this.child?.pid;
    if (top === undefined || !this.viaRunuser) return top;
    try {
      const kids = fs.readFileSync(`/proc/${top}/task/${top}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      return kids.length > 0 ? Number(kids[0]) : top;
    } catch {
      return top;
    }
  }

  /** A fresh store below `dir`, or (takeOver) the files a real backupd uses. */
  static async create(dir: string, o: { takeOver?: { configdirectory: string; partition: string; staging: string; db: string } } = {}): Promise<BackupServer> {
    const conf = path.join(dir, 'imapd.conf');
    const t = o.takeOver;
    const configdirectory = t?.configdirectory ?? path.join(dir, 'conf');
    const partition = t?.partition ?? path.join(dir, 'backups');
    const tmp = path.join(dir, 'tmp');
    for (const d of [configdirectory, partition, tmp]) await fsp.mkdir(d, { recursive: true });
    const lines = [
      `configdirectory: ${configdirectory}`,
      `backuppartition-default: ${partition}`,
      `temp_path: ${tmp}`,
      'servername: cyrsync-backupd-interop',
      `admins: ${ADMIN}`,
      'allowplaintext: yes',
      'sync_timeout: 30m',
    ];
    if (t) lines.push(`backup_staging_path: ${t.staging}`, `backup_db_path: ${t.db}`, 'backup_db: twoskip');
    await fsp.writeFile(conf, lines.join('\n') + '\n');
    const pw = await run(process.execPath, [CLI, 'passwd', '-C', conf, ADMIN], { input: `${ADMIN_PASSWORD}\n` });
    if (pw.code !== 0) throw new Error(`cyrsync passwd failed\n${describe(pw)}`);
    await run('chown', ['-R', 'cyrus:mail', dir, configdirectory, partition]);
    return new BackupServer(dir, conf, await freePort());
  }

  async start(): Promise<void> {
    const asCyrus = process.getuid?.() === 0;
    this.viaRunuser = asCyrus;
    const cmd = asCyrus ? 'runuser' : process.execPath;
    // The built code when there is a build (what runs in production; no
    // transpiler in the process), else the TypeScript helper through tsx.
    const node = fs.existsSync(BUILT_SINK) ? ['--input-type=module', '-e', builtServerScript(), '--'] : ['--import', 'tsx', HELPER];
    const args = [...(asCyrus ? ['-u', 'cyrus', '--', process.execPath] : []), ...node, '-C', this.conf, '--listen', this.target];
    if (!(await this.spawnListening(cmd, args, 60_000, 100))) throw new Error(`the backup server did not start\n${tail(this.log(), 40)}`);
  }

  async stop(): Promise<void> {
    await this.terminate(10_000);
  }
}

interface Ctx extends PeerContext {
  ours: BackupServer;
  /** the real backupd's files */
  ref: { conf: string; configdirectory: string; partition: string; staging: string; db: string };
}

const test = anyTest.serial as TestFn<Ctx>;
const USERS = ['bob', 'plain'] as const;

usePeer(test, {
  prefix: 'cyrsync-interop-backupd-',
  keepFailed: true,
  stopAfterEach: true,
  async setup(t) {
    const { peer } = t.context;
    t.log(`cyrus-peer dir ${peer.dir}, work dir ${t.context.work}`);
    await peer.startMaster();
    await peer.ok(['backupd', 'start']);
    const b = path.join(peer.dir, 'backupd');
    t.context.ref = {
      conf: path.join(b, 'imapd.conf'),
      configdirectory: path.join(b, 'conf'),
      partition: path.join(b, 'backups'),
      staging: path.join(b, 'staging'),
      db: path.join(b, 'conf', 'backups.db'),
    };
    // bob: folders, special-use, flags, keywords, sieve, subscriptions,
    // expunges, and every 25th message 1-3 MB; plain: INBOX only.
    await peer.populate('bob', 50);
    await peer.populate('plain', 5, undefined, true);
    const dir = path.join(t.context.work, 'ours');
    await fsp.mkdir(dir, { recursive: true });
    t.context.ours = await BackupServer.create(dir);
    await t.context.ours.start();
    t.log(`cyrsync backup server on ${t.context.ours.target}`);
  },
  async teardown(t) {
    const { peer, ours } = t.context;
    await ours?.stop();
    await peer?.cmd(['rolling', 'stop']).catch(() => undefined);
  },
});

test.afterEach.always((t) => {
  if (!t.passed && t.context.ours) t.log(`cyrsync backup server log (last lines):\n${tail(t.context.ours.log(), 25)}`);
});

const refTarget = (c: Ctx): string => `127.0.0.1:${c.peer.env['CYRUS_PEER_BACKUPD_PORT']}`;

async function compare(c: Ctx, user: string, target: string): Promise<CompareResult> {
  const r = await c.peer.cmd(['compare', user, '--to', target, '--allow', ALLOW]);
  return { ...r, converged: r.code === 0 && /^CONVERGED$/m.test(r.stdout) };
}

function tool(c: Ctx, conf: string, prog: string, ...args: string[]): Promise<RunResult> {
  return c.peer.cmd(['tool', conf, prog, ...args]);
}

/** A Cyrus tool's raw stdout (bodies are octets, not text). */
async function toolBytes(c: Ctx, conf: string, prog: string, ...args: string[]): Promise<Buffer> {
  const child = spawn(path.join(REPO_ROOT, 'test', 'interop', 'peer', 'cyrus-peer'), ['tool', conf, prog, ...args], {
    env: c.peer.env,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const out: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  await once(child, 'close');
  return Buffer.concat(out);
}

/** SHA-1 of a Cyrus tool's stdout, streamed (a 1 GiB body is never held). */
async function sha1OfToolOutput(c: Ctx, conf: string, prog: string, ...args: string[]): Promise<string> {
  const child = spawn(path.join(REPO_ROOT, 'test', 'interop', 'peer', 'cyrus-peer'), ['tool', conf, prog, ...args], {
    env: c.peer.env,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const h = createHash('sha1');
  child.stdout!.on('data', (b: Buffer) => h.update(b));
  await once(child, 'close');
  return h.digest('hex');
}

/** cyr_backup json output with the expunge times blanked (each server takes them from its own clock). */
async function backupJson(c: Ctx, conf: string, user: string, what: 'mailboxes' | 'messages'): Promise<string> {
  const r = await tool(c, conf, 'cyr_backup', '-u', user, 'json', what);
  if (r.code !== 0) throw new Error(describe(r));
  return r.stdout.replace(/"expunged": "[^"]*"/g, '"expunged": "<time>"');
}

async function syncBoth(t: { context: Ctx; is: (a: unknown, b: unknown, m?: string) => void }, user: string): Promise<void> {
  const c = t.context;
  const ref = await c.peer.sync(user, refTarget(c));
  t.is(ref.code, 0, `reference backupd: ${describe(ref)}`);
  const ours = await c.peer.sync(user, c.ours.target);
  t.is(ours.code, 0, `cyrsync: ${describe(ours)}\n${tail(c.ours.log(), 20)}`);
}

async function checkTools(t: { context: Ctx; is: (a: unknown, b: unknown, m?: string) => void; regex: (s: string, r: RegExp, m?: string) => void }, users: readonly string[]): Promise<void> {
  const c = t.context;
  for (const u of users) {
    const v = await tool(c, c.ours.conf, 'ctl_backups', 'verify', '-u', u);
    t.is(v.code, 0, describe(v));
    t.regex(v.stdout, new RegExp(`^verify ${u}: ok$`, 'm'));
    for (const what of ['mailboxes', 'messages'] as const) {
      t.is(await backupJson(c, c.ours.conf, u, what), await backupJson(c, c.ref.conf, u, what), `${u}: cyr_backup json ${what}`);
    }
  }
}

test('full sync of a populated and an INBOX-only user converges; the real tools agree with what was sent', async (t) => {
  for (const u of USERS) await syncBoth(t, u);
  for (const u of USERS) {
    const r = await compare(t.context, u, t.context.ours.target);
    t.true(r.converged, `${u}\n${describe(r)}`);
    const ref = await compare(t.context, u, refTarget(t.context));
    t.true(ref.converged, `reference ${u}\n${describe(ref)}`);
  }
  await checkTools(t, USERS);
  const c = t.context;
  const list = await tool(c, c.ours.conf, 'ctl_backups', 'list');
  t.is(list.code, 0, describe(list));
  for (const u of USERS) t.regex(list.stdout, new RegExp(`\\t${u}\\t${c.ours.dir}/backups/${u[0]}/${u}_[A-Za-z0-9]{6}$`, 'm'));
  const stat = await tool(c, c.ours.conf, 'ctl_backups', 'stat', '-u', 'bob');
  t.is(stat.code, 0, describe(stat));
  t.regex(stat.stdout, /^bob\t\d+\t\d+\t\d+\t/m);
  // Every message body read back by the real tool hashes to its GUID.
  const guids = (await tool(c, c.ours.conf, 'cyr_backup', '-u', 'bob', 'list', 'messages')).stdout.split('\n').filter((l) => /^[0-9a-f]{40}$/.test(l));
  t.true(guids.length >= 40);
  for (const g of guids) t.is(sha1(await toolBytes(c, c.ours.conf, 'cyr_backup', '-u', 'bob', 'dump', 'message', g)), g);
});

test('after mutations (new mail, flags, expunges, rename, delete, subscriptions) both converge again and agree', async (t) => {
  const c = t.context;
  await c.peer.mutate('bob');
  await c.peer.mutate('plain');
  for (const u of USERS) await syncBoth(t, u);
  for (const u of USERS) t.true((await compare(c, u, c.ours.target)).converged, u);
  await checkTools(t, USERS);
});

test('sync_client -A and a rolling pass over the sync log converge', async (t) => {
  const c = t.context;
  await c.peer.ok(['sync-log', 'clear']);
  await c.peer.mutate('bob');
  const all = await c.peer.syncAll(c.ours.target);
  t.is(all.code, 0, describe(all));
  for (const u of USERS) t.true((await compare(c, u, c.ours.target)).converged, u);
  await c.peer.mutate('bob');
  await c.peer.mutate('plain');
  const rolling = await c.peer.cmd(['sync-log', '--to', c.ours.target]);
  t.is(rolling.code, 0, describe(rolling));
  for (const u of USERS) t.true((await compare(c, u, c.ours.target)).converged, `${u} after a rolling pass`);
  const ref = await c.peer.syncAll(refTarget(c));
  t.is(ref.code, 0, describe(ref));
  await checkTools(t, USERS);
});

test('a backup locked by the real ctl_backups is refused as locked; one in use by cyrsync is locked for the real tools', async (t) => {
  const c = t.context;
  // `ctl_backups lock -x CMD` holds the lock while CMD runs (its `-p` mode
  // would do too, but its "OK locked" sits in a stdio buffer until it exits).
  const flags = path.join(c.work, 'lockflags');
  await fsp.mkdir(flags, { recursive: true });
  await run('chown', ['cyrus:mail', flags]);
  const locked = path.join(flags, 'locked');
  const hold = path.join(flags, 'hold');
  await fsp.writeFile(hold, '');
  await fsp.chmod(hold, 0o666);
  const holder = run(path.join(REPO_ROOT, 'test', 'interop', 'peer', 'cyrus-peer'), [
    'tool', c.ours.conf, 'ctl_backups', 'lock', '-u', 'bob', '-x', `touch ${locked}; while [ -e ${hold} ]; do sleep 0.1; done`,
  ], { env: c.peer.env, timeoutMs: 120_000 });
  try {
    t.true(await waitFor(() => fs.existsSync(locked), 30_000), 'ctl_backups took the lock');
    const s = await adminSession(c.ours.port);
    t.teardown(() => s.destroy());
    t.deepEqual(await s.command('GET USER bob'), { data: [], status: 'NO IMAP_MAILBOX_LOCKED Mailbox locked' });
    await s.command('EXIT');
    await s.close();
    const sync = await c.peer.sync('bob', c.ours.target);
    t.not(sync.code, 0, 'sync_client gives up on a locked backup');
  } finally {
    await fsp.rm(hold, { force: true });
  }
  const held = await holder;
  t.is(held.code, 0, describe(held));
  const s = await adminSession(c.ours.port);
  t.teardown(() => s.destroy());
  t.is((await s.command('GET USER bob')).status, 'OK Success');
  const lock = await tool(c, c.ours.conf, 'ctl_backups', 'lock', '-u', 'bob');
  t.regex(lock.output, /NO failed \(Mailbox is locked\)/);
  const verify = await tool(c, c.ours.conf, 'ctl_backups', 'verify', '-u', 'bob');
  t.regex(verify.stdout, /^verify bob: locked$/m);
  await s.command('EXIT');
  await s.close();
  const after = await tool(c, c.ours.conf, 'ctl_backups', 'verify', '-u', 'bob');
  t.regex(after.stdout, /^verify bob: ok$/m);
});

test('bad input: GUID mismatch, unknown APPLY and path-like user ids are refused and write nothing', async (t) => {
  const c = t.context;
  const s = await adminSession(c.ours.port);
  t.teardown(() => s.destroy());
  const body = message('bad-guid');
  const wrong = sha1('something else');
  t.is((await s.command('GET USER plain')).status, 'OK Success');
  t.is((await s.command(Buffer.concat([Buffer.from('APPLY MESSAGE ('), fileLiteral(body, wrong), Buffer.from(')\r\n')]))).status, 'NO IMAP_PROTOCOL_ERROR Protocol error');
  t.is((await s.command('APPLY EXPUNGE %(MBOXNAME user.plain UNIQUEID x UID (1))')).status, 'NO IMAP_PROTOCOL_ERROR Protocol error');
  t.is((await s.command('APPLY LOCAL_MAILBOX %(UNIQUEID x MBOXNAME user.plain)')).status, 'NO IMAP_PROTOCOL_ERROR Protocol error');
  for (const u of ['../escaped', '../../tmp/escaped2', 'a/b']) {
    const r = await s.command(`GET USER "${u}"`);
    t.regex(r.status ?? '', /^NO /, u);
    const sub = await s.command(`APPLY SUB %(USERID "${u}" MBOXNAME user.x)`);
    t.regex(sub.status ?? '', /^NO /, u);
  }
  await s.command('EXIT');
  await s.close();
  const files = await listFiles(c.ours.dir);
  t.deepEqual(files.filter((f) => /escaped/.test(f)), []);
  t.false(fs.existsSync(path.join(c.ours.dir, 'escaped')));
  const v = await tool(c, c.ours.conf, 'ctl_backups', 'verify', '-u', 'plain');
  t.regex(v.stdout, /^verify plain: ok$/m);
  const dump = await tool(c, c.ours.conf, 'cyr_backup', '-u', 'plain', 'list', 'messages');
  t.false(dump.stdout.includes(wrong));
  t.false(dump.stdout.includes(sha1(body)));
});

test('the real restore reads a cyrsync backup back into a real replica', async (t) => {
  const c = t.context;
  await c.peer.startReplica();
  const conf = path.join(c.ours.dir, 'restore.conf');
  await fsp.writeFile(conf, `${await fsp.readFile(c.ours.conf, 'utf8')}sync_authname: ${ADMIN}\nsync_password: ${ADMIN_PASSWORD}\nsync_try_imap: no\n`);
  await run('chown', ['cyrus:mail', conf]);
  const r = await tool(c, conf, 'restore', '-v', c.peer.replicaTarget, '-u', 'plain', '-a', '-X');
  t.is(r.code, 0, describe(r));
  // Restored messages are new messages there (new UIDs, modseqs, uidvalidity);
  // their octets, internal dates and flags are what the master has.
  const messages = (d: string): string[] =>
    d.split('\n').filter((l) => l.startsWith('msg ')).map((l) => l.replace(/ uid=\d+ modseq=\d+/, '')).sort();
  const restored = messages(await c.peer.replicaDump('plain'));
  t.true(restored.length > 0);
  t.deepEqual(restored, messages(await c.peer.masterDump('plain')));
});

test('kill -9 in the middle of a full sync: the next sync converges and verifies', async (t) => {
  const c = t.context;
  await c.peer.populate('crashy', 30, '1M', true);
  const partition = path.join(c.ours.dir, 'backups');
  const sync = c.peer.sync('crashy', c.ours.target);
  // Wait until a chunk is being written (the data file has grown), then kill.
  const growing = await waitFor(async () => {
    for (const f of await listFiles(partition)) {
      if (/\/crashy_[A-Za-z0-9]{6}$/.test(f) && fs.statSync(f).size > 256 * 1024) return true;
    }
    return false;
  }, 60_000, 20);
  t.true(growing, 'the data file grew while the sync ran');
  await c.ours.kill9();
  const first = await sync;
  t.not(first.code, 0, 'the interrupted sync failed');
  await c.ours.start();
  const again = await c.peer.sync('crashy', c.ours.target);
  t.is(again.code, 0, `${describe(again)}\n${tail(c.ours.log(), 20)}`);
  t.true((await compare(c, 'crashy', c.ours.target)).converged);
  const v = await tool(c, c.ours.conf, 'ctl_backups', 'verify', '-u', 'crashy');
  t.regex(v.stdout, /^verify crashy: ok$/m, describe(v));
  t.regex(c.ours.log(), /torn chunk/);
});

test('taking over a real backupd: cyrsync serves its backups, converges after mutations, the real tools still read them', async (t) => {
  const c = t.context;
  for (const u of USERS) await syncBoth(t, u);
  await c.peer.ok(['backupd', 'stop']);
  const dir = path.join(c.work, 'takeover');
  await fsp.mkdir(dir, { recursive: true });
  const server = await BackupServer.create(dir, { takeOver: c.ref });
  t.teardown(() => server.stop());
  await server.start();
  try {
    for (const u of USERS) t.true((await compare(c, u, server.target)).converged, `${u} before mutating`);
    await c.peer.mutate('bob');
    await c.peer.mutate('plain');
    for (const u of USERS) {
      const r = await c.peer.sync(u, server.target);
      t.is(r.code, 0, `${describe(r)}\n${tail(server.log(), 20)}`);
      t.true((await compare(c, u, server.target)).converged, u);
    }
    // Our own store got the same history: the taken-over backups must say the same.
    for (const u of USERS) {
      const r = await c.peer.sync(u, c.ours.target);
      t.is(r.code, 0);
    }
  } finally {
    await server.stop();
  }
  const list = await tool(c, c.ref.conf, 'ctl_backups', 'list');
  t.is(list.code, 0, describe(list));
  for (const u of USERS) {
    t.regex(list.stdout, new RegExp(`\\t${u}\\t`));
    for (const what of ['mailboxes', 'messages'] as const) {
      t.is(await backupJson(c, c.ref.conf, u, what), await backupJson(c, c.ours.conf, u, what), `${u}: json ${what} of the taken-over backup`);
    }
    const chunks = await tool(c, c.ref.conf, 'cyr_backup', '-u', u, 'list', 'chunks');
    t.is(chunks.code, 0, describe(chunks));
  }
});

test('rolling replication (sync_client -R) with mutations going on converges (last: the history differs from the reference after it)', async (t) => {
  t.timeout(10 * 60_000);
  const c = t.context;
  const base = await c.peer.syncAll(c.ours.target);
  t.is(base.code, 0, describe(base));
  await c.peer.syncLogClear();
  await c.peer.rollingStart(c.ours.target);
  let mutations = 0;
  try {
    for (; mutations < 6; mutations++) {
      await c.peer.mutate(USERS[mutations % USERS.length]!);
      await sleep(500);
    }
    const drained = await waitFor(async () => !(await c.peer.syncLogPending()), 180_000, 500);
    t.true(drained, `the rolling client drained the sync log\n${tail(c.peer.rollingLog())}`);
    // one more repeat interval, so the last batch is acknowledged
    await sleep(2000);
  } finally {
    const stop = await c.peer.rollingStop();
    t.regex(stop.stdout, /rolling replication stopped/, `${describe(stop)}\n${tail(c.peer.rollingLog())}`);
  }
  t.notRegex(c.peer.rollingLog(), /bailing out/, tail(c.peer.rollingLog()));
  for (const u of USERS) t.true((await compare(c, u, c.ours.target)).converged, u);
  // The backups now hold intermediate states a one-shot sync never saw, so
  // they are compared with nothing; the real tools must still verify them.
  for (const u of USERS) {
    const v = await tool(c, c.ours.conf, 'ctl_backups', 'verify', '-u', u);
    t.regex(v.stdout, new RegExp(`^verify ${u}: ok$`, 'm'), describe(v));
  }
});

/**
 * A 1 GiB message, opt-in (CYRSYNC_INTEROP_BIG=1): about 3 minutes and 4 GB
 * of disk. Stored, its SHA-1 right when the real tool reads it back, and the
 * server's peak RSS (VmHWM, a size, not a time) under 100 MB; the real
 * backupd's peak for the same sync is logged next to it.
 */
const bigTest = process.env['CYRSYNC_INTEROP_BIG'] ? test : test.skip;
bigTest('a 1 GiB message: stored, SHA-1 right, flat server memory', async (t) => {
  t.timeout(30 * 60_000);
  const c = t.context;
  await c.peer.populate('huge', 1, '1G', true);
  const server = await BackupServer.create(path.join(c.work, 'big'));
  t.teardown(() => server.stop());
  await server.start();
  try {
    const pid = server.pid;
    t.truthy(pid);
    const long = { CYRUS_PEER_SYNC_DEADLINE: '1800' };
    const bench = await c.peer.cmd(['bench', 'huge', '--to', server.target, '--server-pid', String(pid)], { timeoutMs: 20 * 60_000, env: long });
    t.is(bench.code, 0, describe(bench));
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    t.log(`cyrsync: ${tail(bench.stdout, 2)}`);
    t.true(hwm > 0 && hwm < 100 * 1024, `peak RSS ${hwm} kB`);
    const guids = (await tool(c, server.conf, 'cyr_backup', '-u', 'huge', 'list', 'messages')).stdout.split('\n').filter((l) => /^[0-9a-f]{40}$/.test(l));
    t.is(guids.length, 1);
    t.is(await sha1OfToolOutput(c, server.conf, 'cyr_backup', '-u', 'huge', 'dump', 'message', guids[0]!), guids[0]);
    // the take-over test stopped the real backupd
    await c.peer.ok(['backupd', 'start']);
    const ref = await c.peer.cmd(['bench', 'huge', '--to', refTarget(c)], { timeoutMs: 25 * 60_000, env: long });
    t.log(`real backupd: ${tail(ref.stdout, 2)}`);
  } finally {
    await server.stop();
  }
});
