/**
 * The backup storage modules (twoskip, backups.db, locks, data files, index)
 * against the real Cyrus 3.6.1 tools, without the server in between:
 *
 * - backups written by cyrsync's modules (the recorded sync_client sessions
 *   of the fixtures replayed into them) are read by the real ctl_backups
 *   (verify, list, stat, lock) and cyr_backup (json, dump);
 * - backups written by the real backupd are read by cyrsync's readers and
 *   give the same chunks, checksums and record offsets as its own index;
 * - the fcntl locks exclude each other both ways;
 * - twoskip files go back and forth between cyrsync and cyr_dbtool.
 *
 * Files handed to the real tools are chowned to cyrus:mail first: the tools
 * switch to that user and must be able to open and lock them.
 */
import anyTest, { type TestFn } from 'ava';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { DlistValue } from '../../transforms/dlist-types.js';
import { openBackupsDb } from '../../sinks/backup/backupsdb.js';
import { readChunkRecords, scanMembers, sha1OfPrefix } from '../../sinks/backup/datafile.js';
import { BackupAppender, BackupIndex, VERIFY_FULL, openBackup, verifyBackup } from '../../sinks/backup/index-db.js';
import { reindexStreaming } from '../../src/client/backup/reindex.js';
import { lockExclusive, lockedElsewhere } from '../../sinks/backup/lock.js';
import { createDataFile } from '../../sinks/backup/paths.js';
import { TwoskipDb } from '../../sinks/backup/twoskip.js';
import { recordedApplies } from '../backup-sink-helpers.js';
import { PEER, Peer, REPO_ROOT, describe, makeRunDir, run, sleep, stopOwnProcesses, type RunResult } from './harness.js';

interface Ctx {
  peer: Peer;
  dir: string;
}
const test = anyTest as TestFn<Ctx>;

const TAPS = path.join(REPO_ROOT, 'test', 'fixtures', 'transcripts');
const sha1 = (b: Buffer | string): string => createHash('sha1').update(b).digest('hex');

interface Layout {
  root: string;
  conf: string;
  settings: { configdirectory: string; backuppartitions: Record<string, string> };
}

async function layout(root: string): Promise<Layout> {
  fs.mkdirSync(path.join(root, 'conf'), { recursive: true });
  fs.mkdirSync(path.join(root, 'tmp'), { recursive: true });
  const conf = path.join(root, 'imapd.conf');
  fs.writeFileSync(conf, [
    `configdirectory: ${root}/conf`,
    `backuppartition-default: ${root}/backups`,
    `temp_path: ${root}/tmp`,
    `backup_staging_path: ${root}/staging`,
    '',
  ].join('\n'));
  return { root, conf, settings: { configdirectory: path.join(root, 'conf'), backuppartitions: { default: path.join(root, 'backups') } } };
}

async function chownCyrus(dir: string): Promise<void> {
  const r = await run('chown', ['-R', 'cyrus:mail', dir]);
  if (r.code !== 0) throw new Error(describe(r));
}

/** One chunk per recorded session, as a backup server ends a chunk per session. */
async function writeBackup(l: Layout, owner: string, taps: string[]): Promise<{ dataPath: string; guids: string[] }> {
  const db = openBackupsDb(l.settings);
  const { path: dataPath } = db.getOrCreate(owner, () => createDataFile(l.settings, owner), (p) => fs.rmSync(p, { force: true }));
  db.close();
  const guids: string[] = [];
  let ts = Math.floor(Date.now() / 1000) - 3600;
  for (const tap of taps) {
    const b = (await openBackup(dataPath, { wait: false }))!;
    const app = new BackupAppender(b);
    await app.start(ts++);
    for (const item of recordedApplies(path.join(TAPS, tap))) {
      if (item.key === 'MESSAGE' && item.value.kind === 'list') {
        for (const f of item.value.items) if (f.kind === 'file') guids.push(f.guid);
      }
      await app.append(item, ts++);
    }
    await app.close(ts++);
  }
  return { dataPath, guids };
}

test.before(async (t) => {
  const peer = await Peer.create();
  const dir = await makeRunDir('cyrsync-interop-bstore-');
  t.context = { peer, dir };
});

test.after.always(async (t) => {
  const { peer, dir } = t.context;
  await peer.stopAll();
  stopOwnProcesses();
  if (!process.env['CYRSYNC_INTEROP_KEEP']) {
    await peer.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  } else {
    t.log(`kept ${peer.dir} and ${dir}`);
  }
});

function tool(t: { context: Ctx }, conf: string, args: string[], input = ''): Promise<RunResult> {
  return t.context.peer.cmd(['tool', conf, ...args], { input });
}

test('real ctl_backups and cyr_backup read a backup written by cyrsync', async (t) => {
  const l = await layout(path.join(t.context.dir, 'ours'));
  const { dataPath, guids } = await writeBackup(l, 'fixt', ['02-full-backupd.tap', '04-incremental-backupd.tap']);
  await chownCyrus(l.root);

  const verify = await tool(t, l.conf, ['ctl_backups', '-v', 'verify', '-u', 'fixt']);
  t.is(verify.code, 0, describe(verify));
  t.regex(verify.stdout, /^verify fixt: ok$/m);
  t.regex(verify.stdout, /checking chunk 2 mailbox links\.\.\.\nok/);

  const list = await tool(t, l.conf, ['ctl_backups', 'list']);
  t.is(list.code, 0, describe(list));
  const row = list.stdout.trim().split('\n').map((s) => s.split('\t'));
  t.deepEqual(row.map((r) => [r[1], r[2], r[3]]), [[String(fs.statSync(dataPath).size), 'fixt', dataPath]]);

  const stat = await tool(t, l.conf, ['ctl_backups', '-j', 'stat', '-u', 'fixt']);
  t.is(stat.code, 0, describe(stat));
  t.regex(stat.stdout, /"userid": "fixt"/);

  // What the real inspection tool reads equals what our index says.
  const json = await tool(t, l.conf, ['cyr_backup', '-u', 'fixt', 'json', 'mailboxes']);
  t.is(json.code, 0, describe(json));
  const theirs = JSON.parse(json.stdout) as { uniqueid: string; mboxname: string; messages?: { uid: number; guid: string; expunged?: string }[] }[];
  const lock = (await lockExclusive(dataPath, { wait: true }))!;
  const idx = BackupIndex.open(`${dataPath}.index`, { dataFileSize: lock.size() });
  const ours = idx.mailboxes().map((m) => ({
    uniqueid: m.uniqueid,
    mboxname: m.mboxname,
    messages: idx.mailboxRecords(m.id).map((r) => ({ uid: r.uid, guid: r.guid, expunged: r.expunged !== null })),
  }));
  idx.close();
  lock.release();
  t.deepEqual(
    theirs.map((m) => ({ uniqueid: m.uniqueid, mboxname: m.mboxname, messages: (m.messages ?? []).map((r) => ({ uid: r.uid, guid: r.guid, expunged: r.expunged !== undefined })) })),
    ours,
  );
  t.true(theirs.some((m) => m.mboxname === 'user.fixt.Drafts'), 'the special-use mailbox is there');

  const messages = await tool(t, l.conf, ['cyr_backup', '-u', 'fixt', 'list', 'messages']);
  t.deepEqual(messages.stdout.trim().split('\n').sort(), [...new Set(guids)].sort());
  for (const g of guids.slice(0, 3)) {
    const dump = await t.context.peer.cmd(['tool', l.conf, 'cyr_backup', '-u', 'fixt', 'dump', 'message', g]);
    t.is(dump.code, 0, describe(dump));
    t.is(sha1(Buffer.from(dump.stdout, 'latin1')), g);
  }
});

test('cyrsync reads the backups the real backupd wrote: same chunks, checksums and offsets', async (t) => {
  const { peer } = t.context;
  await peer.startMaster();
  await peer.ok(['backupd', 'start']);
  await peer.populate('bob', 30);
  await peer.populate('carol', 4, undefined, true);
  for (const u of ['bob', 'carol']) {
    const r = await peer.cmd(['sync', u, '--to', 'backupd']);
    t.is(r.code, 0, describe(r));
  }
  await peer.cmd(['backupd', 'stop']);
  const confdir = path.join(peer.dir, 'backupd', 'conf');
  const db = openBackupsDb({ configdirectory: confdir, backup_db_path: path.join(confdir, 'backups.db') });
  const entries = db.list();
  db.close();
  t.deepEqual(entries.map(([u]) => u), ['bob', 'carol']);
  const listed = await peer.cmd(['tool', 'backupd', 'ctl_backups', '-V', 'list']);
  t.deepEqual(listed.stdout.trim().split('\n').map((s) => s.split('\t').slice(2)), entries);

  for (const [owner, dataPath] of entries) {
    const lock = (await lockExclusive(dataPath, { wait: true }))!;
    const idx = BackupIndex.open(`${dataPath}.index`, { dataFileSize: lock.size() });
    const chunks = idx.chunks();
    t.true(chunks.length >= 1);
    const scan = await scanMembers(lock.fd);
    t.is(scan.error, null, owner);
    t.is(scan.goodEnd, lock.size());
    for (const c of chunks) {
      const r = await readChunkRecords(lock.fd, c.offset);
      t.true(r.isChunk);
      t.is(r.length, c.length ?? -1);
      t.is(r.dataSha1, c.data_sha1 ?? "");
      t.is(await sha1OfPrefix(lock.fd, c.offset), c.file_sha1 ?? "");
      const offsets = new Map(r.records.map((x) => [x.offset, x]));
      for (const m of idx.messagesInChunk(c.id)) {
        const rec = offsets.get(m.offset!);
        t.is(rec?.item?.key, 'MESSAGE', `${owner} ${m.guid}`);
        const files = (rec!.item!.value as { items: DlistValue[] }).items.filter((f) => f.kind === 'file') as { guid: string; sha1?: string }[];
        const f = files.find((x) => x.guid === m.guid);
        t.is(f?.sha1, m.guid, 'the body read back has its GUID as SHA-1');
      }
      for (const rec of r.records) t.is(rec.error, undefined);
    }
    idx.close();
    lock.release();
  }

  // The same with backup_db: skiplist (read only in cyrsync).
  const skiplist = { env: { CYRUS_PEER_BACKUP_DB: 'skiplist' } };
  await peer.ok(['reset', 'backupd'], skiplist);
  await peer.ok(['backupd', 'start'], skiplist);
  const r = await peer.cmd(['sync', 'carol', '--to', 'backupd'], skiplist);
  t.is(r.code, 0, describe(r));
  await peer.cmd(['backupd', 'stop'], skiplist);
  const sl = openBackupsDb({ configdirectory: confdir, backup_db: 'skiplist', backup_db_path: path.join(confdir, 'backups.db') });
  const slEntries = sl.list();
  t.deepEqual(slEntries.map(([u]) => u), ['carol']);
  t.true(fs.existsSync(slEntries[0]![1]));
  t.throws(() => sl.getOrCreate('dave', () => '/x', () => undefined), { message: /does not write them/ });
  sl.close();
});

test('the real ctl_backups lock and cyrsync exclude each other', async (t) => {
  const l = await layout(path.join(t.context.dir, 'locks'));
  const { dataPath } = await writeBackup(l, 'fixt', ['02-full-backupd.tap']);
  await chownCyrus(l.root);
  // The tool holds the lock until its standard input ends (its output is
  // block-buffered, so the lock itself is what we wait for).
  const child = spawn(PEER, ['tool', l.conf, 'ctl_backups', 'lock', '-u', 'fixt'], {
    env: t.context.peer.env,
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  t.teardown(() => {
    // a failed assertion must not leave the tool holding the lock
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  for (let i = 0; i < 300 && lockedElsewhere(dataPath) === 0; i++) await sleep(100);
  t.true(lockedElsewhere(dataPath) > 0, 'the tool holds the lock');
  t.is(await lockExclusive(dataPath, { wait: false }), null);
  t.is(await openBackup(dataPath, { wait: false }), null);
  child.stdin.end();
  t.is(await exited, 0);
  t.regex(out, /OK locked/);

  const ours = (await openBackup(dataPath, { wait: false }))!;
  t.truthy(ours);
  const theirs = await tool(t, l.conf, ['ctl_backups', 'lock', '-u', 'fixt']);
  t.is(theirs.code, 75);
  t.regex(theirs.stdout, /NO failed \(Mailbox is locked\)/);
  const verify = await tool(t, l.conf, ['ctl_backups', 'verify', '-u', 'fixt']);
  t.regex(verify.stdout, /^verify fixt: locked$/m);
  ours.index.close();
  ours.lock.release();
  const after = await tool(t, l.conf, ['ctl_backups', 'verify', '-u', 'fixt']);
  t.regex(after.stdout, /^verify fixt: ok$/m);
});

test('a torn chunk is cut back on open and the backup verifies with the real tool', async (t) => {
  const l = await layout(path.join(t.context.dir, 'torn'));
  const { dataPath } = await writeBackup(l, 'fixt', ['02-full-backupd.tap']);
  const good = fs.statSync(dataPath).size;
  // A crash in the middle of the next chunk: a started, unfinished member,
  // and an index transaction that never committed.
  const b = (await openBackup(dataPath, { wait: false }))!;
  const app = new BackupAppender(b);
  await app.start();
  for (const item of recordedApplies(path.join(TAPS, '04-incremental-backupd.tap')).slice(0, 3)) await app.append(item);
  fs.copyFileSync(dataPath, `${dataPath}.crash`);
  await app.abort();
  b.index.close();
  b.lock.release();
  fs.renameSync(`${dataPath}.crash`, dataPath);
  const crashed = fs.statSync(dataPath).size;
  t.true(crashed > good);
  await chownCyrus(l.root);

  const reopened = (await openBackup(dataPath, { wait: false }))!;
  t.is(reopened.truncated, crashed - good);
  t.is(fs.statSync(dataPath).size, good);
  const again = new BackupAppender(reopened);
  await again.start();
  for (const item of recordedApplies(path.join(TAPS, '04-incremental-backupd.tap'))) await again.append(item);
  await again.close();
  await chownCyrus(l.root);
  const verify = await tool(t, l.conf, ['ctl_backups', '-v', 'verify', '-u', 'fixt']);
  t.regex(verify.stdout, /^verify fixt: ok$/m, describe(verify));
  t.regex(verify.stdout, /checking chunk 2 checksums/);
});

test('twoskip files go back and forth between cyrsync and cyr_dbtool', async (t) => {
  const l = await layout(path.join(t.context.dir, 'twoskip'));
  const file = path.join(l.root, 'conf', 'backups.db');
  const db = TwoskipDb.open(file, { create: true });
  for (let i = 0; i < 300; i++) db.set(`user${(i * 7919) % 1000}`, `/backups/u/user${i}_ABCDEF`);
  db.delete('user919');
  db.close();
  await chownCyrus(l.root);
  const dbtool = (args: string[]): Promise<RunResult> => tool(t, l.conf, ['cyr_dbtool', file, 'twoskip', ...args]);
  t.regex((await dbtool(['consistent'])).stdout, /Yes, consistent/);
  const shown = (await dbtool(['show'])).stdout.trim().split('\n');
  t.is(shown.length, 299);
  t.is(shown[0], 'user0\t/backups/u/user0_ABCDEF');
  for (let i = 0; i < 5; i++) t.is((await dbtool(['set', `zz${i}`, `v${i}`])).code, 0);
  t.is((await dbtool(['delete', 'user0'])).code, 0);
  const back = TwoskipDb.open(file);
  back.checkConsistency();
  const keys = [...back.entries()].map(([k]) => k.toString());
  t.is(keys.length, 303);
  t.false(keys.includes('user0'));
  t.deepEqual(keys.slice(-5), ['zz0', 'zz1', 'zz2', 'zz3', 'zz4']);
  back.set('aaa', 'first');
  t.regex((await dbtool(['consistent'])).stdout, /Yes, consistent/);
  t.is((await dbtool(['get', 'aaa'])).stdout.trim(), 'first');
  // The real tool rewrites the file (checkpoint: a new file renamed over the
  // old one) while our handle stays open; the handle follows the new inode.
  // twoskip checkpoints once the log part outgrows the checkpointed part:
  // values of 1 KiB get there in a few dozen writes whatever the file size.
  const inode = fs.statSync(file).ino;
  const filler = 'x'.repeat(1024);
  for (let i = 0; i < 200 && fs.statSync(file).ino === inode; i++) {
    t.is((await dbtool(['set', 'user1', `/backups/u/rewritten_${i}_${filler}`])).code, 0);
  }
  t.not(fs.statSync(file).ino, inode, 'cyr_dbtool checkpointed the file');
  t.regex(back.get('user1')!.toString(), /^\/backups\/u\/rewritten_\d+_x{1024}$/);
  back.set('zzz', 'last');
  back.close();
  t.is((await dbtool(['get', 'zzz'])).stdout.trim(), 'last');
  t.regex((await dbtool(['consistent'])).stdout, /Yes, consistent/);
});

test('verification agrees with the real tool; our reindex gives an index the real tool verifies', async (t) => {
  const l = await layout(path.join(t.context.dir, 'reindex'));
  const { dataPath } = await writeBackup(l, 'fixt', ['02-full-backupd.tap', '04-incremental-backupd.tap']);
  const b = (await openBackup(dataPath, { wait: false }))!;
  t.deepEqual((await verifyBackup(b.lock.fd, b.index, VERIFY_FULL)).problems, []);
  b.index.close();
  b.lock.release();
  await chownCyrus(l.root);
  // The real reindex re-serializes records with {N+} literals, so its
  // checksums no longer describe a file holding {N} literals (the special-use
  // values): a known limit of Cyrus's reindex, reported rather than hidden.
  const real = await tool(t, l.conf, ['ctl_backups', 'reindex', '-u', 'fixt']);
  t.regex(real.stdout, /^reindex fixt: ok$/m, describe(real));
  const broken = await tool(t, l.conf, ['ctl_backups', 'verify', '-u', 'fixt']);
  t.regex(broken.stdout, /^verify fixt: failed/m);
  t.deepEqual(await reindexStreaming(dataPath, { wait: false, keepPrevious: false }), []);
  const rebuilt = BackupIndex.open(`${dataPath}.index`, { dataFileSize: 1 });
  t.is(rebuilt.chunks().length, 2);
  rebuilt.close();
  await chownCyrus(l.root);
  const ok = await tool(t, l.conf, ['ctl_backups', '-v', 'verify', '-u', 'fixt']);
  t.regex(ok.stdout, /^verify fixt: ok$/m, describe(ok));
});
