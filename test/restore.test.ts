/**
 * `cyrsync restore` without a network: the argument rules of Cyrus
 * restore.c, the plan worked out from a real backup (the recorded real
 * sync_client sessions replayed into cyrsync's backup store), the
 * point-in-time view and the extraction of message bodies from chunks.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseRestoreArgs, UsageError } from '../src/client/restore/args.js';
import { TooEarlyError } from '../src/client/backup/pit.js';
import { encodeCommand } from '../src/protocol/commands.js';
import { restoreMailboxCommand } from '../src/client/restore/run.js';
import { Planner, trimDeletedPrefix, type PlanOptions } from '../src/client/restore/plan.js';
import { BackupSource } from '../src/client/restore/source.js';
import { serializeItem } from '../transforms/serializer.js';
import { tapStreams } from './replica-helpers.js';
import { dataFiles, openSession, replay, tempBackupStore } from './backup-sink-helpers.js';

const TRANSCRIPTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'transcripts');
const sha1 = (b: Buffer): string => createHash('sha1').update(b).digest('hex');

const OPTS: PlanOptions = { keepUidvalidity: true, keepDeletedPrefix: false, expunged: 'all', recurse: false, unixhierarchysep: true };

test('arguments: modes, objects and the conflicts restore.c refuses', (t) => {
  const a = parseRestoreArgs(['-U', '-a', 'host:2005', 'bob']);
  t.like(a, { server: 'host:2005', mode: 'user', backup: 'bob', all: true, keepUidvalidity: true, objects: [] });
  t.like(parseRestoreArgs(['-m', 'user.bob.Sent', 'host', 'user.bob.Sent']), { mode: 'mboxname', backup: 'user.bob.Sent', objects: ['user.bob.Sent'] });
  t.like(parseRestoreArgs(['-f', '/b/bob_X', 'host', '-']), { mode: 'filename', backup: '/b/bob_X' });
  t.like(parseRestoreArgs(['-vv', '-x', '--at', '1700000000', 'host', 'bob', 'user.bob']), { verbose: 2, expunged: 'only', at: 1700000000 });
  t.like(parseRestoreArgs(['-A', 'bob lrs', 'host', 'bob', 'user.bob']), { acl: 'bob lrs' });
  t.throws(() => parseRestoreArgs(['-U', '-M', 'user.x', 'host', 'bob', 'user.bob']), { instanceOf: UsageError });
  t.throws(() => parseRestoreArgs(['-A', 'x', '-U', 'host', 'bob', 'user.bob']), { instanceOf: UsageError });
  t.throws(() => parseRestoreArgs(['-X', '-x', 'host', 'bob', 'user.bob']), { instanceOf: UsageError });
  t.throws(() => parseRestoreArgs(['-a', 'host', 'bob', 'user.bob']), { instanceOf: UsageError });
  t.throws(() => parseRestoreArgs(['host', 'bob']), { instanceOf: UsageError });
  t.throws(() => parseRestoreArgs([]), { instanceOf: UsageError });
  t.throws(() => parseRestoreArgs(['-a', '--at', 'yesterday', 'host', 'bob']), { instanceOf: UsageError });
  t.throws(() => parseRestoreArgs(['-u', 'bob', '-m', 'user.bob', 'host', 'user.bob']), { instanceOf: UsageError });
  t.like(parseRestoreArgs(['-a', '--at', '2023-11-14T23:13:20+01:00', 'host', 'bob']), { at: 1700000000 });
  t.like(parseRestoreArgs(['-Ua', '-w', '2', 'host', 'bob']), { keepUidvalidity: true, all: true, wait: 2 });
  t.like(parseRestoreArgs(['--help']), { help: true });
});

test('the deleted prefix is trimmed as mbname_set_isdeleted(0) does', (t) => {
  t.is(trimDeletedPrefix('DELETED.user.bob.Archive.2024.6571A2B3'), 'user.bob.Archive.2024');
  t.is(trimDeletedPrefix('example.org!DELETED.user.bob.X.6571A2B3'), 'example.org!user.bob.X');
  t.is(trimDeletedPrefix('user.bob.DELETED.X'), 'user.bob.DELETED.X');
  t.is(trimDeletedPrefix('DELETED.user.bob'), 'DELETED.user.bob');
});

/** The real sync_client's full backup, then (a second later) its incremental one. */
async function twoChunkBackup(t: { teardown: (f: () => Promise<void> | void) => void }): Promise<{ dataPath: string; between: number; dir: string }> {
  const s = await tempBackupStore();
  t.teardown(async () => {
    await s.sink.close().catch(() => undefined);
    fs.rmSync(s.dir, { recursive: true, force: true });
  });
  let between = 0;
  for (const name of ['02-full-backupd', '04-incremental-backupd']) {
    if (between !== 0) {
      // Records carry whole seconds: let the clock pass the first chunk's second.
      while (Math.floor(Date.now() / 1000) <= between) await new Promise((r) => setTimeout(r, 50));
    }
    const session = openSession(s.sink);
    await replay(session, tapStreams(path.join(TRANSCRIPTS, `${name}.tap`)).client);
    await session.end();
    between = Math.floor(Date.now() / 1000);
  }
  await s.sink.close();
  const [dataPath] = dataFiles(s.partition);
  return { dataPath: dataPath!, between: between - 1, dir: s.dir };
}

test('a point-in-time view holds the first chunk only; the latest view both', async (t) => {
  const { dataPath, dir } = await twoChunkBackup(t);
  const latest = await BackupSource.open(dataPath, { tempDir: dir });
  const chunks = latest.index.chunks();
  const firstEnd = chunks[0]!.ts_end!;
  const latestNames = latest.index.mailboxes().map((m) => m.mboxname);
  const latestRecords = latest.index.mailboxes().map((m) => latest.index.mailboxRecords(m.id).length);
  latest.close();
  t.true(chunks.length >= 2);
  t.true(chunks[chunks.length - 1]!.ts_start! > firstEnd, 'the incremental backup is a later second');
  const past = await BackupSource.open(dataPath, { tempDir: dir, at: firstEnd });
  t.teardown(() => past.close());
  t.is(past.index.chunks().length, 1);
  t.is(past.index.chunks()[0]!.offset, chunks[0]!.offset);
  // Between the two backups Archive/2024 was deleted and Projects/alpha renamed.
  const pastNames = past.index.mailboxes().map((m) => m.mboxname);
  t.true(pastNames.includes('user.fixt.Archive.2024') && pastNames.includes('user.fixt.Projects.alpha'));
  t.true(latestNames.some((n) => n.startsWith('DELETED.user.fixt.Archive.2024.')) && latestNames.includes('user.fixt.Projects.beta'));
  t.false(pastNames.some((n) => n.startsWith('DELETED.')));
  const pastRecords = past.index.mailboxes().map((m) => past.index.mailboxRecords(m.id).length);
  t.notDeepEqual(pastRecords, latestRecords, 'the incremental backup changed the records');
});

test('--at before the first chunk is an error naming both times', async (t) => {
  const { dataPath, dir } = await twoChunkBackup(t);
  const err = await t.throwsAsync(BackupSource.open(dataPath, { tempDir: dir, at: 1_000_000_000 }), { instanceOf: TooEarlyError });
  t.regex(err!.message, /2001-09-09T01:46:40(\.000)?Z is before the first chunk of the backup/);
});

test('plan -a and extraction: every planned message comes out of its chunk with its GUID', async (t) => {
  const { dataPath, dir } = await twoChunkBackup(t);
  const src = await BackupSource.open(dataPath, { tempDir: dir });
  t.teardown(() => src.close());
  const planner = new Planner(src.index, OPTS);
  planner.addAll();
  const plan = planner.plan();
  t.true(plan.mailboxes.length > 3);
  t.false(plan.mailboxes.some((m) => m.mboxname.startsWith('DELETED.')));
  const guids = plan.reserve.get('default')!;
  t.true(guids.length > 0);
  t.is(new Set(guids).size, guids.length);
  const byChunk = new Map<number, Set<string>>();
  for (const g of guids) {
    const row = src.messageRow(g)!;
    if (!byChunk.has(row.chunk_id!)) byChunk.set(row.chunk_id!, new Set());
    byChunk.get(row.chunk_id!)!.add(g);
  }
  let n = 0;
  for (const [id, want] of byChunk) {
    const staged = await src.extract(src.index.chunk(id)!, want);
    t.deepEqual([...staged.keys()].sort(), [...want].sort());
    for (const [g, file] of staged) {
      t.is(sha1(fs.readFileSync(file)), g);
      fs.rmSync(file);
      n++;
    }
  }
  t.is(n, guids.length);
  // RESTORE MAILBOX as backup_mailbox_to_dlist: keeps uniqueid/uidvalidity with -U.
  const inbox = plan.mailboxes.find((m) => m.mboxname === 'user.fixt')!;
  const wire = serializeItem('MAILBOX', encodeCommand(restoreMailboxCommand(inbox, inbox.records, false)).item.value, 'client').toString('latin1');
  t.regex(wire, new RegExp(`^MAILBOX %\\(UNIQUEID ${inbox.source!.uniqueid} MBOXNAME user\\.fixt MBOXTYPE `));
  t.regex(wire, /RECORD \(%\(UID \d+ MODSEQ \d+ LAST_UPDATED \d+ FLAGS \([^)]*\) INTERNALDATE \d+ SIZE \d+ GUID [0-9a-f]{40}/);
});

test('plan without -U: no uniqueid, uidvalidity or modseq; -M merges; -X and -x filter; a GUID restores into its folders', async (t) => {
  const { dataPath, dir } = await twoChunkBackup(t);
  const src = await BackupSource.open(dataPath, { tempDir: dir });
  t.teardown(() => src.close());
  const plain = new Planner(src.index, { ...OPTS, keepUidvalidity: false });
  plain.addObject('user.fixt');
  const [inbox] = plain.plan().mailboxes;
  t.like(inbox, { mboxname: 'user.fixt', uniqueid: null, uidvalidity: 0, highestmodseq: 0 });
  const all = inbox!.records.length;
  const expunged = inbox!.records.filter((r) => r.expunged !== null).length;
  const x = new Planner(src.index, { ...OPTS, expunged: 'only' });
  x.addObject('user.fixt');
  t.is(x.plan().mailboxes[0]!.records.length, expunged);
  t.is(x.plan().mailboxes[0]!.revive.size, expunged);
  const X = new Planner(src.index, { ...OPTS, expunged: 'exclude' });
  X.addObject('user.fixt');
  t.is(X.plan().mailboxes[0]!.records.length, all - expunged);
  const merged = new Planner(src.index, { ...OPTS, keepUidvalidity: false, overrideMboxname: 'user.fixt.Restored', recurse: true });
  merged.addObject('user.fixt');
  const mp = merged.plan();
  t.is(mp.mailboxes.length, 1);
  t.is(mp.mailboxes[0]!.mboxname, 'user.fixt.Restored');
  t.true(mp.reserveFolders.includes('user.fixt.Restored'));
  const guid = inbox!.records.find((r) => r.expunged === null)!.guid;
  const one = new Planner(src.index, OPTS);
  one.addObject(guid);
  one.addObject('user.fixt.NoSuchFolder');
  const op = one.plan();
  t.true(op.mailboxes.length >= 1);
  t.true(op.mailboxes.every((m) => m.records.every((r) => r.guid === guid)));
  t.deepEqual(op.notFound, ['user.fixt.NoSuchFolder']);
});
