/**
 * Backup store: replies and on-disk state for every GET and APPLY of
 * backup-format §9, chunk checksums, GUID checks, bad names, locks, torn
 * chunks, and the recorded real backupd sessions replayed reply for reply.
 */
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tapStreams, serverResponses } from './replica-helpers.js';
import {
  checkChunks,
  dataFiles,
  mailboxIn,
  message,
  openIndexRO,
  openSession,
  recordIn,
  recordLines,
  replay,
  run,
  sha1,
  stage,
  tempBackupStore,
  walk,
  type TempBackupStore,
} from './backup-sink-helpers.js';
import type { BackupSession } from '../sinks/backup/session.js';
import { storeTeardown } from './helpers/teardown.js';

const PROTOCOL_ERROR = 'NO IMAP_PROTOCOL_ERROR Protocol error';
const TRANSCRIPTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'transcripts');

/** A fresh store, closed when the test ends, and a session on it. */
async function storeWithSession(t: ExecutionContext): Promise<{ s: TempBackupStore; a: BackupSession }> {
  const s = await tempBackupStore();
  storeTeardown(t, s.sink, s.dir);
  return { s, a: openSession(s.sink) };
}

/** A store holding one ended session of bob's (a subscription), and his data file. */
async function bobSubscribed(t: ExecutionContext): Promise<{ s: TempBackupStore; file: string }> {
  const { s, a } = await storeWithSession(t);
  await run(a, { verb: 'APPLY', sub: 'SUB', userid: 'bob', mboxname: 'user.bob' });
  await a.end();
  const [file] = dataFiles(s.partition);
  if (file === undefined) throw new Error('no data file for bob');
  return { s, file };
}

test('a full session: appended records, index rows, checksums, and GET answers from the index', async (t) => {
  const { s, a } = await storeWithSession(t);
  t.is((await run(a, { verb: 'GET', sub: 'USER', userid: 'bob' })).status, 'OK Success');
  const bodies = [message(1), message(2, ' with more')];
  const files = await stage(a, bodies);
  t.is((await run(a, { verb: 'APPLY', sub: 'MESSAGE', files })).status, 'OK Success');
  const mbox = mailboxIn({
    uniqueid: 'u1bob',
    mboxname: 'user.bob',
    lastUid: 2,
    highestmodseq: 5n,
    syncCrc: 1234,
    syncCrcAnnot: 99,
    annotations: [{ entry: '/specialuse', userid: 'bob', modseq: 0n, value: { kind: 'buffer', value: Buffer.from('\\Drafts') } }],
    records: [recordIn(1, bodies[0]!, ['\\Seen', '$Label1']), recordIn(2, bodies[1]!, ['\\Expunged'])],
  });
  t.is((await run(a, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: mbox })).status, 'OK Success');
  t.is((await run(a, { verb: 'APPLY', sub: 'SUB', userid: 'bob', mboxname: 'user.bob' })).status, 'OK Success');
  t.is(
    (await run(a, { verb: 'APPLY', sub: 'SEEN', seen: { userid: 'bob', uniqueid: 'u1bob', lastread: 5, lastuid: 2, lastchange: 6, seenuids: '1:2' } })).status,
    'OK Success',
  );
  const script = Buffer.from('keep;\r\n');
  t.is(
    (await run(a, { verb: 'APPLY', sub: 'SIEVE', userid: 'bob', filename: 'x.script', lastUpdate: 1700000001, content: { kind: 'buffer', value: script } })).status,
    'OK Success',
  );
  t.is((await run(a, { verb: 'APPLY', sub: 'QUOTA', quota: { root: 'user.bob', limits: {}, modseq: null } })).status, 'OK Success');
  t.is((await run(a, { verb: 'APPLY', sub: 'ACTIVATE_SIEVE', userid: 'bob', filename: 'x.bc' })).status, 'OK Success');
  await a.end();

  const [file] = dataFiles(s.partition);
  t.truthy(file);
  t.is(path.basename(path.dirname(file!)), 'b');
  t.regex(path.basename(file!), /^bob_[A-Za-z0-9]{6}$/);
  t.deepEqual(checkChunks(file!), []);
  const lines = recordLines(file!);
  t.deepEqual(
    lines.map((l) => l.replace(/^\d+ APPLY (\w+).*$/s, '$1')),
    ['MESSAGE', 'MAILBOX', 'SUB', 'SEEN', 'SIEVE'],
    'QUOTA and ACTIVATE_SIEVE are not written',
  );
  // Non-file literals are synchronizing ({N}); file literals carry the body.
  t.true(lines[1]!.includes('VALUE {7}\r\n\\Drafts'));
  t.false(lines.some((l) => /\{\d+\+\}/.test(l)));
  t.true(lines[0]!.includes(`%{default ${sha1(bodies[0]!)} ${bodies[0]!.length}}\r\n${bodies[0]!.toString('latin1')}`));

  const db = openIndexRO(file!);
  try {
    t.is(db.pragma('user_version', { simple: true }), 3);
    const msgs = db.prepare('SELECT guid, offset, size, chunk_id FROM message ORDER BY id').all() as { guid: string; offset: number; size: number }[];
    t.deepEqual(msgs.map((m) => m.guid), bodies.map(sha1));
    t.is(msgs[0]!.offset, 29, 'the first record of a chunk is at 29');
    const mm = db.prepare('SELECT uid, flags, expunged FROM mailbox_message ORDER BY uid').all() as { uid: number; flags: string; expunged: number | null }[];
    t.is(mm[0]!.flags, '(\\Seen $Label1)');
    t.is(mm[0]!.expunged, null);
    t.is(mm[1]!.flags, '()');
    t.true(typeof mm[1]!.expunged === 'number');
    const mb = db.prepare('SELECT annotations, sync_crc, quotaroot FROM mailbox').get() as { annotations: string; sync_crc: number; quotaroot: null };
    t.is(mb.annotations, '(%(ENTRY /specialuse USERID bob MODSEQ 0 VALUE {7}\r\n\\Drafts))');
    t.is(mb.sync_crc, 1234);
    t.is(mb.quotaroot, null);
    const sv = db.prepare('SELECT guid, offset, deleted FROM sieve').get() as { guid: string; offset: number; deleted: null };
    t.is(sv.guid, sha1(script));
    t.is(sv.deleted, null);
  } finally {
    db.close();
  }

  // A second session answers from the index.
  const b = openSession(s.sink);
  const user = await run(b, { verb: 'GET', sub: 'USER', userid: 'bob' });
  t.is(user.status, 'OK Success');
  const reply = user.reply.toString('latin1');
  t.regex(
    reply,
    /^\* MAILBOX %\(UNIQUEID u1bob MBOXNAME user\.bob MBOXTYPE NIL LAST_UID 2 HIGHESTMODSEQ 5 RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1700000000 PARTITION default ACL "bob\tlrswipkxtecdan\t" OPTIONS P SYNC_CRC 1234 SYNC_CRC_ANNOT 99 QUOTAROOT NIL XCONVMODSEQ 0 ANNOTATIONS \(%\(ENTRY \/specialuse USERID bob MODSEQ 0 VALUE \{7\}\r\n\\Drafts\)\)\)\r\n/,
  );
  t.true(reply.includes('* SEEN %(UNIQUEID u1bob LASTREAD 5 LASTUID 2 LASTCHANGE 6 SEENUIDS 1:2)\r\n'));
  t.true(reply.includes('* LSUB (user.bob)\r\n'));
  t.true(reply.includes(`* SIEVE %(FILENAME x.script LAST_UPDATE 1700000001 GUID ${sha1(script)} ISACTIVE 0)\r\n`));
  t.false(reply.includes('* QUOTA'));
  t.false(reply.includes('RECORD'));

  const full = await run(b, { verb: 'GET', sub: 'FULLMAILBOX', mboxname: 'user.bob' });
  const fr = full.reply.toString('latin1');
  t.true(fr.includes(`RECORD (%(UID 1 MODSEQ 2 LAST_UPDATED 1700000001 INTERNALDATE 1700000000 GUID ${sha1(bodies[0]!)} SIZE ${bodies[0]!.length} FLAGS (\\Seen $Label1))`));
  t.true(fr.includes(`FLAGS (\\Expunged))`));
  const meta = await run(b, { verb: 'GET', sub: 'META', userid: 'bob' });
  t.false(meta.reply.toString('latin1').includes('* MAILBOX'));
  t.true(meta.reply.toString('latin1').includes('* LSUB'));
  const mbs = await run(b, { verb: 'GET', sub: 'MAILBOXES', names: ['user.bob', 'user.bob.none'] });
  t.is((mbs.reply.toString('latin1').match(/\* MAILBOX/g) ?? []).length, 1);
  t.is((await run(b, { verb: 'GET', sub: 'UNIQUEIDS', uniqueids: ['u1bob'] })).reply.toString(), 'OK Success\r\n');
  t.is((await run(b, { verb: 'GET', sub: 'FULLMAILBOX', mboxname: 'user.bob.none' })).status, 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox');
  await b.end();
  t.deepEqual(checkChunks(file!), []);
  await s.sink.close();
});

test('RESERVE reports missing GUIDs and routes the next MESSAGE to the owners that await them', async (t) => {
  const { s, a } = await storeWithSession(t);
  const [m1, m2] = [message(1), message(2)];
  const reserve = await run(a, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: ['user.carol', 'user.dave.Sent'], guids: [sha1(m1), sha1(m2)] });
  t.is(reserve.reply.toString('latin1'), `* MISSING (${sha1(m1)} ${sha1(m2)})\r\nOK Success\r\n`);
  const files = await stage(a, [m1]);
  t.is((await run(a, { verb: 'APPLY', sub: 'MESSAGE', files })).status, 'OK Success');
  await a.end();
  const [carol, dave] = dataFiles(s.partition).sort((x, y) => path.basename(x).localeCompare(path.basename(y)));
  for (const f of [carol!, dave!]) {
    t.deepEqual(checkChunks(f), []);
    const lines = recordLines(f);
    t.is(lines.length, 2);
    t.regex(lines[0]!, /^\d+ APPLY RESERVE %\(PARTITION default MBOXNAME \(user\.carol user\.dave\.Sent\) GUID \(/);
    t.regex(lines[1]!, /^\d+ APPLY MESSAGE \(%\{default /);
  }
  // A GUID already held is not missing any more.
  const b = openSession(s.sink);
  const again = await run(b, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: ['user.carol'], guids: [sha1(m1), sha1(m2)] });
  t.is(again.reply.toString('latin1'), `* MISSING (${sha1(m2)})\r\nOK Success\r\n`);
  await b.end();
  await s.sink.close();
});

test('a MESSAGE whose octets do not match its GUID is a protocol error and nothing of it is written', async (t) => {
  const { s, a } = await storeWithSession(t);
  await run(a, { verb: 'GET', sub: 'USER', userid: 'erin' });
  const good = message(1);
  const evil = Buffer.from('this is not the message the guid names\r\n');
  const files = await stage(a, [good, evil], [sha1(good), sha1(good)]);
  const r = await run(a, { verb: 'APPLY', sub: 'MESSAGE', files });
  t.is(r.status, PROTOCOL_ERROR);
  await a.end();
  const [file] = dataFiles(s.partition);
  t.deepEqual(checkChunks(file!), []);
  const all = recordLines(file!).join('\n');
  t.false(all.includes('this is not the message'));
  t.false(all.includes('APPLY MESSAGE'));
  t.deepEqual(walk(s.sink.staging.dir), [], 'staging is empty');
  await s.sink.close();
});

test('MESSAGE without any open backup, unknown APPLYs and unsupported GETs are protocol errors that write nothing', async (t) => {
  const { s, a } = await storeWithSession(t);
  const files = await stage(a, [message(1)]);
  t.is((await run(a, { verb: 'APPLY', sub: 'MESSAGE', files })).status, PROTOCOL_ERROR);
  t.is((await run(a, { verb: 'APPLY', sub: 'EXPUNGE', mboxname: 'user.bob', uniqueid: 'x', uids: [1] })).status, PROTOCOL_ERROR);
  t.is((await run(a, { verb: 'APPLY', sub: 'UNQUOTA', root: 'user.bob' })).status, PROTOCOL_ERROR);
  t.is(
    (await run(a, { verb: 'APPLY', sub: 'ANNOTATION', mboxname: 'user.bob', entry: '/comment', userid: '', value: { kind: 'buffer', value: Buffer.from('x') } })).status,
    PROTOCOL_ERROR,
  );
  t.is((await run(a, { verb: 'GET', sub: 'QUOTA', root: 'user.bob' })).status, PROTOCOL_ERROR);
  t.is((await run(a, { verb: 'GET', sub: 'FETCH_SIEVE', userid: 'bob', filename: 'x' })).status, PROTOCOL_ERROR);
  t.is((await run(a, { verb: 'APPLY', sub: 'UNUSER', local: false, userid: 'bob' })).status, 'OK Success');
  await a.end();
  t.deepEqual(dataFiles(s.partition), [], 'no backup was created');
  await s.sink.close();
});

test('GET MAILBOXES naming two owners is refused with bad parameters', async (t) => {
  const { s, a } = await storeWithSession(t);
  const r = await run(a, { verb: 'GET', sub: 'MAILBOXES', names: ['user.bob', 'user.carol'] });
  t.regex(r.status, /^NO IMAP_PROTOCOL_BAD_PARAMETERS/);
  t.deepEqual(r.items, []);
  await a.end();
  await s.sink.close();
});

test('user ids, mailbox names, uniqueids and sieve file names from the wire never name a path outside the partition', async (t) => {
  const { s, a } = await storeWithSession(t);
  const bad = ['../evil', '../../etc/x', 'a/b', '..', '.', '', 'x\x00y', 'tab\there'];
  for (const u of bad) {
    const r = await run(a, { verb: 'GET', sub: 'USER', userid: u });
    t.regex(r.status, /^NO /, `GET USER ${JSON.stringify(u)}`);
    const sub = await run(a, { verb: 'APPLY', sub: 'SUB', userid: u, mboxname: 'user.x' });
    t.regex(sub.status, /^NO /);
  }
  for (const name of ['user.../evil', 'user.a/b.Sent', 'user../x']) {
    const r = await run(a, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: mailboxIn({ uniqueid: 'u1', mboxname: name }) });
    t.regex(r.status, /^NO /, name);
  }
  const badUid = await run(a, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: mailboxIn({ uniqueid: '../../x', mboxname: 'user.ok' }) });
  t.regex(badUid.status, /^NO /);
  const badSieve = await run(a, { verb: 'APPLY', sub: 'SIEVE', userid: 'ok', filename: '../x.script', lastUpdate: 1, content: { kind: 'buffer', value: Buffer.from('keep;') } });
  t.regex(badSieve.status, /^NO /);
  await a.end();
  const everything = walk(s.dir);
  for (const f of everything) {
    t.true(f.startsWith(path.join(s.dir, 'backups') + path.sep) || f.startsWith(path.join(s.dir, 'conf') + path.sep), f);
  }
  t.false(fs.existsSync(path.join(s.dir, 'evil')));
  // `user.ok` got its backup (the MAILBOX with a bad uniqueid was refused before anything was appended)
  for (const f of dataFiles(s.partition)) t.deepEqual(checkChunks(f), []);
  await s.sink.close();
});

test('a backup in use by one session is locked for another', async (t) => {
  const { s, a } = await storeWithSession(t);
  const b = openSession(s.sink);
  t.is((await run(a, { verb: 'GET', sub: 'USER', userid: 'bob' })).status, 'OK Success');
  t.is((await run(b, { verb: 'GET', sub: 'USER', userid: 'bob' })).status, 'NO IMAP_MAILBOX_LOCKED Mailbox locked');
  t.is((await run(b, { verb: 'APPLY', sub: 'SUB', userid: 'bob', mboxname: 'user.bob' })).status, 'NO IMAP_MAILBOX_LOCKED Mailbox locked');
  await a.restart();
  t.is((await run(b, { verb: 'GET', sub: 'USER', userid: 'bob' })).status, 'OK Success');
  await b.end();
  await a.end();
  const [file] = dataFiles(s.partition);
  t.deepEqual(checkChunks(file!), []);
  const db = openIndexRO(file!);
  t.is((db.prepare('SELECT count(*) AS n FROM chunk').get() as { n: number }).n, 2, 'read-only sessions still leave (empty) chunks');
  db.close();
  await s.sink.close();
});

test('a torn chunk after the last committed one is cut off at the next open', async (t) => {
  const { s, file } = await bobSubscribed(t);
  const good = fs.statSync(file).size;
  // a member cut in the middle, as a crash leaves it
  const { gzipSync } = await import('node:zlib');
  const torn = gzipSync(Buffer.from('# cyrus backup: chunk start\r\n1700000000 APPLY SUB %(USERID bob MBOXNAME user.bob.x)\r\n'));
  fs.appendFileSync(file, torn.subarray(0, torn.length - 5));
  const b = openSession(s.sink);
  const user = await run(b, { verb: 'GET', sub: 'USER', userid: 'bob' });
  t.true(user.reply.toString('latin1').includes('* LSUB (user.bob)\r\n'));
  t.false(user.reply.toString('latin1').includes('user.bob.x'));
  await b.end();
  t.deepEqual(checkChunks(file), []);
  t.true(fs.statSync(file).size > good);
  await s.sink.close();
});

test('a damaged committed chunk refuses the backup instead of rewriting it', async (t) => {
  const { s, file } = await bobSubscribed(t);
  const data = fs.readFileSync(file);
  data[data.length - 12] ^= 0xff;
  fs.writeFileSync(file, data);
  const b = openSession(s.sink);
  t.is((await run(b, { verb: 'GET', sub: 'USER', userid: 'bob' })).status, 'NO Unknown error');
  await b.end();
  t.deepEqual(fs.readFileSync(file), data, 'the file is left as it was');
  await s.sink.close();
});

test('RENAME, UNMAILBOX, UNSUB and UNSIEVE update the index as §6.4 says', async (t) => {
  const { s, a } = await storeWithSession(t);
  const mk = (uniqueid: string, mboxname: string) => run(a, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: mailboxIn({ uniqueid, mboxname }) });
  t.is((await mk('u1', 'user.bob.A')).status, 'OK Success');
  t.is((await mk('u2', 'user.bob.B')).status, 'OK Success');
  t.is((await run(a, { verb: 'APPLY', sub: 'RENAME', local: false, oldname: 'user.bob.A', newname: 'user.bob.C', partition: 'default', uidvalidity: 7 })).status, 'OK Success');
  t.is((await run(a, { verb: 'APPLY', sub: 'UNMAILBOX', local: false, mboxname: 'user.bob.B' })).status, 'OK Success');
  await run(a, { verb: 'APPLY', sub: 'SUB', userid: 'bob', mboxname: 'user.bob.C' });
  await run(a, { verb: 'APPLY', sub: 'SUB', userid: 'bob', mboxname: 'user.bob.B' });
  await run(a, { verb: 'APPLY', sub: 'UNSUB', userid: 'bob', mboxname: 'user.bob.B' });
  await run(a, { verb: 'APPLY', sub: 'SIEVE', userid: 'bob', filename: 's.script', lastUpdate: 1, content: { kind: 'buffer', value: Buffer.from('keep;') } });
  await run(a, { verb: 'APPLY', sub: 'SIEVE', userid: 'bob', filename: 's.script', lastUpdate: 2, content: { kind: 'buffer', value: Buffer.from('discard;') } });
  await run(a, { verb: 'APPLY', sub: 'SIEVE', userid: 'bob', filename: 't.script', lastUpdate: 3, content: { kind: 'buffer', value: Buffer.from('stop;') } });
  await run(a, { verb: 'APPLY', sub: 'UNSIEVE', userid: 'bob', filename: 't.script' });
  const user = (await run(a, { verb: 'GET', sub: 'USER', userid: 'bob' })).reply.toString('latin1');
  await a.end();
  t.true(user.includes('MBOXNAME user.bob.C'));
  t.true(user.includes('UIDVALIDITY 7'));
  t.false(user.includes('user.bob.B '), 'the deleted mailbox is not reported');
  t.true(user.includes('* LSUB (user.bob.C)\r\n'));
  t.is((user.match(/\* SIEVE/g) ?? []).length, 1);
  t.true(user.includes(`GUID ${sha1('discard;')}`));
  const [file] = dataFiles(s.partition);
  const db = openIndexRO(file!);
  const sieve = db.prepare('SELECT filename, deleted FROM sieve ORDER BY id').all() as { filename: string; deleted: number | null }[];
  t.deepEqual(sieve.map((r) => [r.filename, r.deleted === null]), [['s.script', false], ['s.script', true], ['t.script', false]]);
  db.close();
  t.deepEqual(checkChunks(file!), []);
  await s.sink.close();
});

test('the recorded real backupd sessions replayed: every reply equals the real backupd reply', async (t) => {
  const s = await tempBackupStore();
  storeTeardown(t, s.sink, s.dir);
  for (const name of ['02-full-backupd', '04-incremental-backupd']) {
    const { client, server } = tapStreams(path.join(TRANSCRIPTS, `${name}.tap`));
    const session = openSession(s.sink);
    const ours = await replay(session, client);
    await session.end();
    const theirs = serverResponses(server);
    t.is(ours.length, theirs.length, `${name}: number of replies`);
    for (let i = 0; i < Math.min(ours.length, theirs.length); i++) {
      t.is(ours[i]!.reply.toString('latin1'), theirs[i]!.toString('latin1'), `${name} #${i}: ${ours[i]!.command}`);
    }
  }
  for (const f of dataFiles(s.partition)) t.deepEqual(checkChunks(f), []);
  await s.sink.close();
});

test('GET USER of a user never seen creates the backup with one empty chunk', async (t) => {
  const { s, a } = await storeWithSession(t);
  const r = await run(a, { verb: 'GET', sub: 'USER', userid: 'new.user@example.com' });
  t.is(r.reply.toString(), 'OK Success\r\n');
  await a.end();
  const [file] = dataFiles(s.partition);
  t.regex(path.basename(file!), /^new\.user@example\.com_[A-Za-z0-9]{6}$/);
  t.deepEqual(checkChunks(file!), []);
  await s.sink.close();
});

test('a big sieve script staged on disk is copied into the record and indexed by its SHA-1', async (t) => {
  const { s, a } = await storeWithSession(t);
  const script = Buffer.alloc(3 * 1024 * 1024 + 17, 'require "fileinto";\r\n');
  const w = a.bodySink.open({ kind: 'literal', size: script.length })!;
  for (let off = 0; off < script.length; off += 65536) {
    if (!w.write(script.subarray(off, off + 65536))) await new Promise<void>((r) => w.onDrain(r));
  }
  const body = w.end(sha1(script));
  await body.done;
  const r = await run(a, {
    verb: 'APPLY',
    sub: 'SIEVE',
    userid: 'bob',
    filename: 'big.script',
    lastUpdate: 1700000000,
    content: { kind: 'staged', size: script.length, sha1: sha1(script), body },
  });
  t.is(r.status, 'OK Success');
  await a.end();
  const [file] = dataFiles(s.partition);
  t.deepEqual(checkChunks(file!), []);
  const [line] = recordLines(file!);
  t.true(line!.includes(`CONTENT {${script.length}}\r\n`));
  t.true(line!.endsWith(`${script.subarray(-40).toString('latin1')})`));
  const db = openIndexRO(file!);
  t.is((db.prepare('SELECT guid FROM sieve').get() as { guid: string }).guid, sha1(script));
  db.close();
  t.deepEqual(walk(s.sink.staging.dir), []);
  await s.sink.close();
});

test('staging left behind by a dead process is removed when the store opens', async (t) => {
  const dir = fs.mkdtempSync(path.join('/tmp', 'cyrsync-bsink-'));
  const staleRoot = path.join(dir, 'tmp', 'backup', 'sync.');
  // a pid above Linux's pid_max never belongs to a live process
  const stale = path.join(staleRoot, '4194999');
  fs.mkdirSync(stale, { recursive: true });
  fs.writeFileSync(path.join(stale, 'leftover'), 'x');
  const s = await tempBackupStore(dir);
  storeTeardown(t, s.sink, s.dir);
  t.false(fs.existsSync(stale));
  t.true(fs.existsSync(s.sink.staging.dir));
  await s.sink.close();
  t.false(fs.existsSync(s.sink.staging.dir));
});

test('shared mailboxes go to the %SHARED backup in hash directory q', async (t) => {
  const { s, a } = await storeWithSession(t);
  const r = await run(a, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: mailboxIn({ uniqueid: 'shared1', mboxname: 'shared.news' }) });
  t.is(r.status, 'OK Success');
  const reserve = await run(a, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: ['user.zed', 'shared.news'], guids: [sha1('x')] });
  t.is(reserve.status, 'OK Success');
  await a.end();
  const files = dataFiles(s.partition).map((f) => path.relative(s.partition, f));
  t.is(files.length, 2);
  t.true(files.some((f) => /^q\/%SHARED_[A-Za-z0-9]{6}$/.test(f)), files.join(' '));
  t.true(files.some((f) => /^z\/zed_[A-Za-z0-9]{6}$/.test(f)), files.join(' '));
  for (const f of dataFiles(s.partition)) t.deepEqual(checkChunks(f), []);
  await s.sink.close();
});

test('a backup unused for more than 300 seconds is released (its chunk ended) when the next command arrives', async (t) => {
  const { s, a } = await storeWithSession(t);
  await run(a, { verb: 'APPLY', sub: 'SUB', userid: 'bob', mboxname: 'user.bob' });
  await run(a, { verb: 'APPLY', sub: 'SUB', userid: 'carol', mboxname: 'user.carol' });
  const open = (a as unknown as { open: Map<string, { lastUsed: number }> }).open;
  open.get('bob')!.lastUsed = Date.now() - 301_000;
  // Any command runs the idle check first.
  await run(a, { verb: 'APPLY', sub: 'SUB', userid: 'carol', mboxname: 'user.carol.x' });
  const bobFile = dataFiles(s.partition).find((f) => path.basename(f).startsWith('bob_'))!;
  t.deepEqual(checkChunks(bobFile), [], "bob's chunk is committed while the session goes on");
  const other = openSession(s.sink);
  t.is((await run(other, { verb: 'GET', sub: 'USER', userid: 'bob' })).status, 'OK Success', 'and his backup is free for others');
  t.is((await run(other, { verb: 'GET', sub: 'USER', userid: 'carol' })).status, 'NO IMAP_MAILBOX_LOCKED Mailbox locked');
  await other.end();
  await a.end();
  await s.sink.close();
});
