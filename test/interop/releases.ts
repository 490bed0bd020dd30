/**
 * The replica and backup scenarios against another Cyrus release's
 * sync_client (3.10.2, 3.12.4: see harness.ts for how those run). Each
 * release-*.test.ts file calls releaseSuite(RELEASE) once.
 *
 * - cyrsync sync-server: a full sync of a populated user (folders,
 *   special-use, flags, keywords, expunges, quota, annotations, sieve,
 *   subscriptions, every 25th message 1-3 MB) and of an INBOX-only user, then
 *   an incremental sync after cyrus-peer's `mutate`: each converges
 *   (`compare`: a second pass sends no APPLY and gets no NO/BAD) and `cyrsync
 *   dump` equals the master's own dump.
 * - cyrsync backupd: the same syncs converge (QUOTA and ACTIVATE_SIEVE
 *   allowed: a backup server accepts and ignores them, so they are sent
 *   again on every pass); the real 3.10.2 `ctl_backups verify` says ok and
 *   the real `cyr_backup` reads every message back with its GUID. The
 *   reference is a real 3.10.2 backupd fed by the same sync_client in the
 *   same run: cyr_backup's listings of both backups must be equal.
 */
import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  Cyrsync,
  Peer,
  RELEASES,
  describe,
  makeSharedDir,
  stopOwnProcesses,
  tail,
  type Release,
  type RunResult,
} from './harness.js';

/** The last release with the backup tools: it judges every release's backups. */
const TOOLS_RELEASE: Release = '3.10.2';
const ALLOW = 'APPLY QUOTA,APPLY ACTIVATE_SIEVE';
const USERS = ['bob', 'plain'] as const;

interface Ctx {
  peer: Peer;
  /** The 3.10.2 peer whose tools read the backups and whose backupd is the reference. */
  tools: Peer;
  replica: Cyrsync;
  backupd: Cyrsync;
}

type T = ExecutionContext<Ctx>;

function assertSynced(t: T, r: RunResult, what: string): void {
  t.is(r.code, 0, `${what}: sync_client must exit 0\n${describe(r)}`);
  t.notRegex(r.output, /bailing out|Can not connect|could not connect/i, `${what}\n${describe(r)}`);
}

async function assertConverged(t: T, target: string, user: string, allow?: string): Promise<void> {
  const args = ['compare', user, '--to', target, ...(allow ? ['--allow', allow] : [])];
  const c = await t.context.peer.cmd(args);
  t.true(c.code === 0 && /^CONVERGED$/m.test(c.stdout), `${user} must converge on ${target}\n${describe(c)}`);
}

async function assertSameStore(t: T, user: string): Promise<void> {
  const master = await t.context.peer.masterDump(user);
  t.regex(master, /^mailbox INBOX /m, `the master dump of ${user} lists INBOX`);
  const d = await t.context.replica.dump(user);
  t.is(d.code, 0, describe(d));
  t.is(d.stdout.trimEnd(), master.trimEnd(), `cyrsync dump of ${user} must equal the master's`);
}

/** A tool of the tools release on a cyrsync backup store (made readable for its cyrus user first). */
async function backupTool(t: T, prog: string, ...args: string[]): Promise<RunResult> {
  const { tools, backupd } = t.context;
  await tools.chownForRelease(backupd.dir);
  return tools.tool(backupd.conf, prog, ...args);
}

/** cyr_backup json output with the expunge times blanked (each server takes them from its own clock). */
function normalJson(r: RunResult): string {
  return r.stdout.replace(/"expunged": "[^"]*"/g, '"expunged": "<time>"');
}

/** SHA-1 of what `cyr_backup dump message GUID` writes, streamed. */
async function sha1OfMessage(t: T, user: string, guid: string): Promise<string> {
  const { tools, backupd } = t.context;
  const [prog, args] = tools.commandLine(['tool', tools.inRoot(backupd.conf), 'cyr_backup', '-u', user, 'dump', 'message', guid]);
  const child = spawn(prog, args, { env: tools.env, stdio: ['ignore', 'pipe', 'ignore'] });
  const h = createHash('sha1');
  child.stdout!.on('data', (b: Buffer) => h.update(b));
  await once(child, 'close');
  return h.digest('hex');
}

async function assertBackupsRead(t: T, user: string): Promise<void> {
  const v = await backupTool(t, 'ctl_backups', 'verify', '-u', user);
  t.regex(v.stdout, new RegExp(`^verify ${user}: ok$`, 'm'), `${TOOLS_RELEASE} ctl_backups verify ${user}\n${describe(v)}`);
  const list = await backupTool(t, 'cyr_backup', '-u', user, 'list', 'messages');
  t.is(list.code, 0, describe(list));
  const guids = list.stdout.split('\n').filter((l) => /^[0-9a-f]{40}$/.test(l));
  t.true(guids.length > 0, `cyr_backup lists ${user}'s messages\n${describe(list)}`);
  // every 7th body (and the 1-3 MB ones among them) read back hashes to its GUID
  for (const g of guids.filter((_, i) => i % 7 === 0)) t.is(await sha1OfMessage(t, user, g), g, `${user}: message ${g}`);
  const { tools } = t.context;
  for (const what of ['mailboxes', 'messages'] as const) {
    const ours = await backupTool(t, 'cyr_backup', '-u', user, 'json', what);
    const ref = await tools.tool('backupd', 'cyr_backup', '-u', user, 'json', what);
    t.is(ours.code, 0, describe(ours));
    t.is(normalJson(ours), normalJson(ref), `${user}: cyr_backup json ${what} of cyrsync's backup and of the real ${TOOLS_RELEASE} backupd's`);
  }
}

async function syncBackups(t: T, user: string, what: string): Promise<void> {
  const { peer, tools, backupd } = t.context;
  const ref = await peer.sync(user, `127.0.0.1:${tools.backupdPort}`);
  assertSynced(t, ref, `${what} of ${user} into the real ${TOOLS_RELEASE} backupd`);
  const r = await peer.sync(user, backupd.target);
  assertSynced(t, r, `${what} of ${user} into cyrsync backupd\n${tail(backupd.log(), 20)}`);
}

/**
 * What a release's sync_client sends for a new user that 3.6.1's does not
 * (seen on the wire, decompressed). cyrsync accepts both: the tests below
 * assert they are sent and answered OK.
 * - 3.12: `GET MAILBOXES (user.NAME ...)` right after `GET USER NAME` when
 *   the user is new on the target (the names missing from its sync cache:
 *   sync_support.c, sync_do_mailboxes, the `MAILBOXES` request built at
 *   3.12.3:7073).
 * - 3.12: `USERFLAGS (...)` in every `APPLY MAILBOX`, after FOLDERMODSEQ (and
 *   ANNOTATIONS) and before RECORD, `USERFLAGS ()` when the mailbox has no
 *   keywords
 *   (sync_support.c, sync_prepare_dlists, "always send mailbox userflags",
 *   3.12.3:2062). 3.6.1 and 3.10.2 send neither.
 */
const FINDINGS: Readonly<Record<Release, { getMailboxes: boolean; userflags: boolean }>> = {
  '3.6.1': { getMailboxes: false, userflags: false },
  '3.10.2': { getMailboxes: false, userflags: false },
  '3.12.4': { getMailboxes: true, userflags: true },
};

export function releaseSuite(release: Release): void {
  const test = anyTest.serial as TestFn<Ctx>;
  let failed = false;

  test.before(async (t) => {
    const peer = await Peer.create({ release });
    t.context.peer = peer;
    t.context.tools = release === TOOLS_RELEASE ? peer : await Peer.create({ release: TOOLS_RELEASE });
    t.log(`Cyrus ${release} peer dir ${peer.dir}`);
    await peer.startMaster();
    await t.context.tools.ok(['backupd', 'start']);
    await peer.populate('bob', 50);
    await peer.populate('plain', 5, undefined, true);
    t.context.replica = await Cyrsync.start();
    t.context.backupd = await Cyrsync.start({ daemon: 'backupd', dir: await makeSharedDir('cyrsync-interop-backups-', TOOLS_RELEASE) });
    t.log(`cyrsync sync-server ${t.context.replica.dir}, backupd ${t.context.backupd.dir}`);
  });

  test.afterEach.always((t) => {
    if (!t.passed) {
      failed = true;
      for (const s of [t.context.replica, t.context.backupd]) if (s) t.log(`cyrsync ${s.daemon} log:\n${tail(s.log(), 20)}`);
    }
    stopOwnProcesses();
  });

  test.after.always(async (t) => {
    const { peer, tools, replica, backupd } = t.context;
    await replica?.stop();
    await backupd?.stop();
    await peer?.stopAll();
    if (tools && tools !== peer) await tools.stopAll();
    stopOwnProcesses();
    const dirs = [peer?.dir, tools !== peer ? tools?.dir : undefined, replica?.dir, backupd?.dir].filter(Boolean);
    if (failed || process.env['CYRSYNC_INTEROP_KEEP']) {
      t.log(`kept for inspection: ${dirs.join(' ')}`);
      return;
    }
    await replica?.remove();
    await backupd?.remove();
    await peer?.remove();
    if (tools && tools !== peer) await tools.remove();
  });

  test(`Cyrus ${release} sync_client → cyrsync sync-server: full sync converges, dumps equal the master's`, async (t) => {
    const { peer, replica } = t.context;
    for (const u of USERS) {
      const tap = path.join(peer.dir, `replica-${u}-full.tap`);
      assertSynced(t, await peer.sync(u, replica.target, { tap }), `full sync of ${u}`);
      t.log(`${u}: ${(await peer.wireSummary(tap)).stdout.trim().replace(/\s+/g, ' ')}`);
    }
    for (const u of USERS) {
      await assertConverged(t, replica.target, u);
      await assertSameStore(t, u);
    }
  });

  test(`Cyrus ${release} sync_client → cyrsync sync-server: after mutate, an incremental sync converges, dumps equal`, async (t) => {
    const { peer, replica } = t.context;
    for (const u of USERS) {
      const before = await peer.masterDump(u);
      await peer.mutate(u);
      t.not(await peer.masterDump(u), before, `mutate changed ${u} on the master`);
      assertSynced(t, await peer.sync(u, replica.target), `incremental sync of ${u}`);
      await assertConverged(t, replica.target, u);
      await assertSameStore(t, u);
    }
  });

  test(`Cyrus ${release} sync_client: finding: GET MAILBOXES after GET USER ${FINDINGS[release].getMailboxes ? 'sent' : 'not sent'}, USERFLAGS in APPLY MAILBOX ${FINDINGS[release].userflags ? 'sent' : 'not sent'}; cyrsync answers OK`, async (t) => {
    const { peer, replica } = t.context;
    await peer.populate('fresh', 3);
    const tap = path.join(peer.dir, 'fresh.tap');
    assertSynced(t, await peer.sync('fresh', replica.target, { tap }), 'full sync of a new user');
    const wire = await fsp.readFile(tap, 'latin1');
    const f = FINDINGS[release];
    t.is(/>\d+>GET MAILBOXES \(user\.fresh[ )]/.test(wire), f.getMailboxes, `GET MAILBOXES (user.fresh ...)\n${tail(wire, 30)}`);
    const mailboxes = wire.match(/>\d+>APPLY MAILBOX %\(/g)?.length ?? 0;
    t.true(mailboxes > 1, 'the new user\'s folders were sent');
    // USERFLAGS occurs only as a mailbox key (records carry FLAGS)
    t.is(wire.match(/ USERFLAGS \(/g)?.length ?? 0, f.userflags ? mailboxes : 0, 'USERFLAGS in each APPLY MAILBOX');
    t.notRegex(wire, /<\d+<(NO|BAD) /, 'cyrsync refused nothing');
    await assertConverged(t, replica.target, 'fresh');
    await assertSameStore(t, 'fresh');
  });

  test(`Cyrus ${release} sync_client → cyrsync backupd: full sync converges; ${TOOLS_RELEASE} ctl_backups and cyr_backup read it like the real backupd's`, async (t) => {
    t.true(RELEASES[TOOLS_RELEASE].backupTools);
    for (const u of USERS) await syncBackups(t, u, 'full sync');
    for (const u of USERS) {
      await assertConverged(t, t.context.backupd.target, u, ALLOW);
      await assertBackupsRead(t, u);
    }
  });

  test(`Cyrus ${release} sync_client → cyrsync backupd: after mutate, an incremental sync converges and still reads back`, async (t) => {
    const { peer, backupd } = t.context;
    for (const u of USERS) {
      await peer.mutate(u);
      await syncBackups(t, u, 'incremental sync');
      await assertConverged(t, backupd.target, u, ALLOW);
      await assertBackupsRead(t, u);
    }
  });
}
