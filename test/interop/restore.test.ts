/**
 * `cyrsync restore` against the real Cyrus 3.6.1 sync_server, with the real
 * `restore` as the reference on the same backup.
 *
 * A populated user is backed up into `cyrsync backupd` (and into the real
 * backupd) over three syncs with `mutate` between them (T1 < T2 < T3); the
 * master's dumps at those times are what each restore must give back in a
 * fresh real sync_server (read over the replica's imapd, the same
 * `cyrus-peer dump`), and in a fresh `cyrsync sync-server` (`cyrsync dump`,
 * the same canonical form).
 *
 * Fields a backup cannot reproduce, left out of the comparisons:
 * - the `quota` line: backups do not keep quotas (backupd accepts and
 *   ignores APPLY QUOTA), so a restored user has no quota root;
 * - `highestmodseq` of the mailbox line: the destination stamps the
 *   mailbox annotations it writes with new modseqs of its own.
 */
import anyTest, { type TestFn } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import fs from 'node:fs';
import path from 'node:path';
import { ADMIN, ADMIN_PASSWORD, CLI, Cyrsync, Peer, describe, freePort, makeRunDir, portOpen, run, sleep, stopOwnProcesses, waitFor, type RunResult } from './harness.js';

interface Ctx {
  peer: Peer;
  work: string;
  backupd: ChildProcess;
  backupdPort: number;
  /** cyrsync's backup store (for cyrsync restore and the real restore) */
  conf: string;
  /** the real backupd's store, read by cyrsync restore */
  refConf: string;
  dumps: string[];
  times: number[];
}

const test = anyTest.serial as TestFn<Ctx>;
const USER = 'bob';

async function write(file: string, lines: string[]): Promise<void> {
  await fsp.writeFile(file, lines.join('\n') + '\n');
}

test.before(async (t) => {
  const peer = await Peer.create();
  t.context.peer = peer;
  const work = await makeRunDir('cyrsync-interop-restore-');
  t.context.work = work;
  t.log(`cyrus-peer dir ${peer.dir}, work dir ${work}`);
  await peer.startMaster();
  await peer.ok(['backupd', 'start']);
  await peer.startReplica();
  await peer.populate(USER, 30);
  // cyrsync backupd on its own store.
  const conf = path.join(work, 'imapd.conf');
  const [configdirectory, partition, tmp, staging] = ['conf', 'backups', 'tmp', 'staging'].map((d) => path.join(work, d)) as [string, string, string, string];
  for (const d of [configdirectory, partition, tmp, staging]) await fsp.mkdir(d, { recursive: true });
  const common = [`temp_path: ${tmp}`, `backup_staging_path: ${staging}`, `admins: ${ADMIN}`, 'allowplaintext: yes', 'sync_timeout: 30m'];
  const creds = [`restore_authname: ${ADMIN}`, `restore_password: ${ADMIN_PASSWORD}`, `sync_authname: ${ADMIN}`, `sync_password: ${ADMIN_PASSWORD}`];
  await write(conf, [`configdirectory: ${configdirectory}`, `backuppartition-default: ${partition}`, ...common, ...creds]);
  const pw = await run(process.execPath, [CLI, 'passwd', '-C', conf, ADMIN], { input: `${ADMIN_PASSWORD}\n` });
  if (pw.code !== 0) throw new Error(describe(pw));
  // The real backupd's files, read by cyrsync restore (and its own restore).
  const b = path.join(peer.dir, 'backupd');
  t.context.refConf = path.join(work, 'ref-imapd.conf');
  await write(t.context.refConf, [`configdirectory: ${path.join(b, 'conf')}`, `backuppartition-default: ${path.join(b, 'backups')}`, ...common, ...creds]);
  t.context.conf = conf;
  t.context.backupdPort = await freePort();
  const log = fs.openSync(path.join(work, 'backupd.log'), 'a');
  const child = spawn(process.execPath, [CLI, 'backupd', '-C', conf, '--listen', `127.0.0.1:${t.context.backupdPort}`], { stdio: ['ignore', log, log], detached: true });
  fs.closeSync(log);
  t.context.backupd = child;
  if (!(await waitFor(() => portOpen(t.context.backupdPort), 30_000, 100))) throw new Error('cyrsync backupd did not start');
  // Three backups, the master mutated between them.
  t.context.dumps = [];
  t.context.times = [];
  for (let i = 0; i < 3; i++) {
    if (i > 0) await peer.mutate(USER);
    for (const target of [`127.0.0.1:${t.context.backupdPort}`, `127.0.0.1:${peer.env['CYRUS_PEER_BACKUPD_PORT']}`]) {
      const r = await peer.sync(USER, target);
      if (r.code !== 0) throw new Error(describe(r));
    }
    t.context.dumps.push(await peer.masterDump(USER));
    t.context.times.push(Math.floor(Date.now() / 1000));
    await sleep(1100);
  }
  await run('chown', ['-R', 'cyrus:mail', work]);
});

let failed = false;

test.afterEach.always((t) => {
  if (!t.passed) failed = true;
  stopOwnProcesses();
});

test.after.always(async (t) => {
  const { peer, work, backupd } = t.context;
  if (backupd?.pid !== undefined && backupd.exitCode === null) {
    process.kill(-backupd.pid, 'SIGTERM');
    await Promise.race([once(backupd, 'exit'), sleep(10_000)]);
  }
  await peer?.stopAll();
  stopOwnProcesses();
  if (failed || process.env['CYRSYNC_INTEROP_KEEP']) {
    t.log(`kept: ${peer?.dir} ${work}`);
    return;
  }
  await peer?.remove();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

/** A dump without the fields a restore cannot reproduce (see the header). */
function comparable(dump: string): string {
  return dump
    .split('\n')
    .filter((l) => !l.startsWith('quota '))
    .map((l) => l.replace(/ highestmodseq=\d+/, ''))
    .join('\n');
}

/** Only the `msg` lines, without uid/modseq (restores without -U renumber). */
function messages(dump: string, mailbox: string): string[] {
  return dump
    .split('\n')
    .filter((l) => l.startsWith(`msg ${mailbox} `))
    .map((l) => l.replace(/ uid=\d+ modseq=\d+/, ''))
    .sort();
}

async function freshReplica(c: Ctx): Promise<void> {
  await c.peer.ok(['reset', 'replica']);
  await c.peer.startReplica();
}

function restore(c: Ctx, args: string[], conf = c.conf): Promise<RunResult> {
  return run(process.execPath, [CLI, 'restore', '-C', conf, ...args], { timeoutMs: 10 * 60_000 });
}

const replica = (c: Ctx): string => `127.0.0.1:${c.peer.replicaPort}`;

test('restore -U -a gives the master as it was at the last backup; a second run sends nothing', async (t) => {
  const c = t.context;
  await freshReplica(c);
  const r = await restore(c, ['-U', '-a', '--json', replica(c), USER]);
  t.is(r.code, 0, describe(r));
  const restored = await c.peer.replicaDump(USER);
  t.is(comparable(restored), comparable(c.dumps[2]!));
  const again = await restore(c, ['-U', '-a', '--json', replica(c), USER]);
  t.is(again.code, 0, describe(again));
  const done = again.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e['event'] === 'done');
  t.like(done, { mailboxes: 0, messagesUploaded: 0, annotations: 0, subscriptions: 0, seen: 0, sieve: 0 });
  t.is(await c.peer.replicaDump(USER), restored);
});

test('restore -U -a into cyrsync sync-server gives the master as it was at the last backup; a second run sends nothing', async (t) => {
  const c = t.context;
  const server = await Cyrsync.start();
  t.teardown(async () => {
    await server.stop();
    if (t.passed) await server.remove();
    else t.log(`kept: ${server.dir}\n${server.log().split('\n').slice(-25).join('\n')}`);
  });
  const dump = async (): Promise<string> => {
    const d = await server.dump(USER);
    if (d.code !== 0) throw new Error(describe(d));
    return d.stdout;
  };
  const r = await restore(c, ['-U', '-a', '--json', server.target, USER]);
  t.is(r.code, 0, describe(r));
  const restored = await dump();
  t.is(comparable(restored).trimEnd(), comparable(c.dumps[2]!).trimEnd());
  const again = await restore(c, ['-U', '-a', '--json', server.target, USER]);
  t.is(again.code, 0, describe(again));
  const done = again.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e['event'] === 'done');
  t.like(done, { mailboxes: 0, messagesUploaded: 0, annotations: 0, subscriptions: 0, seen: 0, sieve: 0 });
  t.is(await dump(), restored);
});

test('the real Cyrus restore as the reference: the same mailboxes; and its crash that cyrsync avoids', async (t) => {
  const c = t.context;
  // Mailboxes without mailbox annotations: the real restore can create those.
  const names = c.dumps[2]!
    .split('\n')
    .filter((l) => /^mailbox (Archive|Projects)/.test(l))
    .map((l) => l.split(' ')[1]!)
    .filter((n) => !c.dumps[2]!.includes(`meta ${n} `));
  t.true(names.length >= 2, names.join(' '));
  // The real restore takes external names (altnamespace, unixhierarchysep).
  const external = names.map((n) => `user/bob/${n}`);
  const pick = (dump: string): string =>
    comparable(dump)
      .split('\n')
      .filter((l) => names.some((n) => l.startsWith(`mailbox ${n} `) || l.startsWith(`msg ${n} `)))
      .join('\n');
  // Both restore into a server where the user exists (Cyrus refuses to
  // create a user's folder without the user's INBOX).
  const inbox = async (): Promise<void> => {
    await freshReplica(c);
    const r = await restore(c, ['-U', replica(c), USER, 'user.bob']);
    if (r.code !== 0) throw new Error(describe(r));
  };
  await inbox();
  const real = await c.peer.cmd(['tool', c.conf, 'restore', '-U', replica(c), USER, ...external]);
  t.is(real.code, 0, describe(real));
  const theirs = pick(await c.peer.replicaDump(USER));
  await inbox();
  const ours = await restore(c, ['-U', replica(c), USER, ...external]);
  t.is(ours.code, 0, describe(ours));
  t.is(pick(await c.peer.replicaDump(USER)), theirs);
  t.is(theirs, pick(c.dumps[2]!));
  // A new mailbox with mailbox annotations (INBOX's comments) aborts the
  // real 3.6.1 sync_server under the real restore; cyrsync restore creates
  // it first and sends the annotations in a second RESTORE MAILBOX.
  await freshReplica(c);
  const crash = await c.peer.cmd(['tool', c.conf, 'restore', '-U', replica(c), USER, 'user/bob']);
  t.not(crash.code, 0);
  t.regex(fs.readFileSync(path.join(c.peer.dir, 'syslog.log'), 'utf8'), /assertion failed: imap\/mboxlist\.c: 1088: user_isnamespacelocked/);
});

for (const i of [0, 1]) {
  test(`restore --at T${i + 1} gives the master as it was then`, async (t) => {
    const c = t.context;
    await freshReplica(c);
    const r = await restore(c, ['-U', '-a', '--at', new Date(c.times[i]! * 1000).toISOString(), replica(c), USER]);
    t.is(r.code, 0, describe(r));
    t.is(comparable(await c.peer.replicaDump(USER)), comparable(c.dumps[i]!));
  });
}

test('--at before the first backup is a clear error', async (t) => {
  const c = t.context;
  const r = await restore(c, ['-a', '--at', '2000-01-01T00:00:00Z', replica(c), USER]);
  t.is(r.code, 66, describe(r));
  t.regex(r.stderr, /is before the first chunk of the backup/);
});

/** A destination holding the user as at the last backup (the live server a restore goes to). */
async function liveUser(c: Ctx): Promise<void> {
  await freshReplica(c);
  const r = await restore(c, ['-U', '-a', replica(c), USER]);
  if (r.code !== 0) throw new Error(describe(r));
}

const sha1s = (lines: string[]): string[] => lines.map((l) => /sha1=(\w+)/.exec(l)![1]!).sort();

test('restore of one deleted folder gives back its messages', async (t) => {
  const c = t.context;
  await liveUser(c);
  // mutate deleted Archive/2024 between T1 and T2 (and made a new, empty one
  // before T3): as of T2 the name finds the deleted copy.
  const r = await restore(c, ['--at', String(c.times[1]!), replica(c), USER, 'user.bob.Archive.2024']);
  t.is(r.code, 0, describe(r));
  const before = messages(c.dumps[0]!, 'Archive/2024');
  t.true(before.length > 0);
  t.deepEqual(messages(await c.peer.replicaDump(USER), 'Archive/2024'), before);
});

test('restore of one message by GUID puts it back in its folder', async (t) => {
  const c = t.context;
  await liveUser(c);
  const now = sha1s(messages(c.dumps[2]!, 'INBOX'));
  const expunged = sha1s(messages(c.dumps[0]!, 'INBOX')).filter((s) => !now.includes(s));
  t.true(expunged.length > 0);
  const r = await restore(c, [replica(c), USER, expunged[0]!]);
  t.is(r.code, 0, describe(r));
  t.deepEqual(sha1s(messages(await c.peer.replicaDump(USER), 'INBOX')), [...now, expunged[0]!].sort());
});

test('restore -x brings back only the expunged messages', async (t) => {
  const c = t.context;
  await liveUser(c);
  const r = await restore(c, ['-x', replica(c), USER, 'user.bob']);
  t.is(r.code, 0, describe(r));
  const now = sha1s(messages(c.dumps[2]!, 'INBOX'));
  // Expunged by mutate (the backup also holds what populate expunged and moved before T1).
  const gone = [...new Set(sha1s([...messages(c.dumps[0]!, 'INBOX'), ...messages(c.dumps[1]!, 'INBOX')]).filter((s) => !now.includes(s)))];
  t.true(gone.length > 0);
  const got = sha1s(messages(await c.peer.replicaDump(USER), 'INBOX'));
  const added = got.filter((s) => !now.includes(s));
  for (const s of gone) t.true(added.includes(s), `expunged ${s} is back`);
  t.deepEqual(got.filter((s) => now.includes(s)), now, 'the live messages are unchanged');
  t.is(new Set(got).size, got.length, 'no message twice');
});

test('restore -U -a from a backup written by the real backupd', async (t) => {
  const c = t.context;
  await freshReplica(c);
  const r = await restore(c, ['-U', '-a', replica(c), USER], c.refConf);
  t.is(r.code, 0, describe(r));
  t.is(comparable(await c.peer.replicaDump(USER)), comparable(c.dumps[2]!));
});

test('-n prints the plan and connects to nothing', async (t) => {
  const c = t.context;
  const r = await restore(c, ['-n', '-a', '127.0.0.1:1', USER]);
  t.is(r.code, 0, describe(r));
  t.regex(r.stdout, /^mailbox user\.bob records=\d+ bytes=\d+$/m);
  t.regex(r.stdout, /^reserve default messages=\d+$/m);
});
