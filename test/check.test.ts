import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { runCheck } from '../src/client/check/cli.js';
import type { Problem } from '../src/client/check/problems.js';
import { mailboxIn, message, openSession, recordIn, runCommand, sha1, stage, tempStore } from './replica-helpers.js';
import * as B from './backup-sink-helpers.js';
import { storeTeardown } from './helpers/teardown.js';

function tempDir(t: ExecutionContext): string {
  const d = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-check-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** A replica with bob (INBOX: 4 messages, Sent: 1) and alice (INBOX: 2), closed; returns its imapd.conf. */
async function replica(t: ExecutionContext): Promise<{ conf: string; dir: string; spool: string; bodies: Record<string, Buffer[]> }> {
  const dir = tempDir(t);
  const st = await tempStore({}, dir);
  storeTeardown(t, st.sink, st.dir);
  const s = openSession(st.sink);
  const bodies: Record<string, Buffer[]> = {
    'user.bob': [1, 2, 3, 4].map((n) => message(n, ' bob')),
    'user.bob.Sent': [message(5, ' sent')],
    'user.alice': [message(6, ' alice'), message(7, ' alice')],
  };
  for (const [mboxname, list] of Object.entries(bodies)) {
    const files = await stage(s, list);
    t.is((await runCommand(s, { verb: 'APPLY', sub: 'MESSAGE', files })).status, 'OK success');
    const records = list.map((b, i) => recordIn(i + 1, b, { flags: i % 2 ? ['\\Seen'] : [] }));
    const m = mailboxIn({ uniqueid: `${mboxname}-id`, mboxname, highestmodseq: BigInt(list.length + 1), lastUid: list.length, records });
    t.is((await runCommand(s, { verb: 'APPLY', sub: 'MAILBOX', local: true, mailbox: m })).status, 'OK success');
  }
  await s.end();
  await st.sink.close();
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(conf, `configdirectory: ${st.configdirectory}\npartition-default: ${st.partitions.default}\n`);
  return { conf, dir, spool: st.partitions.default!, bodies };
}

function capture(): { stream: NodeJS.WritableStream; text: () => string } {
  let text = '';
  return { stream: { write: (s: string) => ((text += s), true) } as unknown as NodeJS.WritableStream, text: () => text };
}

async function check(argv: string[]): Promise<{ code: number; out: string; err: string; problems: Problem[] }> {
  const out = capture();
  const err = capture();
  const code = await runCheck(argv, { stdout: out.stream, stderr: err.stream, settleMs: 0 });
  const problems = argv.includes('--json') ? out.text().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Problem) : [];
  return { code, out: out.text(), err: err.text(), problems };
}

const blobFile = (spool: string, b: Buffer): string => path.join(spool, 'blobs', sha1(b).slice(0, 2), sha1(b));

/**
 * Every file under dir with its size and mtime. A SQLite reader of a WAL
 * database may create the empty -wal and -shm files (any reader does, a
 * running server has them anyway): they and the directory holding them are
 * left out; the database and every message file must be untouched.
 */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const p = path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name);
    if (/-(wal|shm)$/.test(p) || p === path.join(dir, 'conf')) continue;
    const st = fs.statSync(p);
    out.push(`${p} ${st.isFile() ? st.size : 'dir'} ${st.mtimeMs}`);
  }
  return out.sort();
}

test('a clean replica: exit status 0, no problem lines, a summary, nothing written', async (t) => {
  const r = await replica(t);
  const before = snapshot(r.dir);
  const res = await check(['-C', r.conf]);
  t.is(res.code, 0, res.out + res.err);
  t.is(res.out, '');
  t.regex(res.err, /^cyrsync check: clean; checked 3 mailboxes, 7 records, 7 message files, 0 backups\n$/);
  t.deepEqual(snapshot(r.dir), before);
  const quick = await check(['-C', r.conf, '--quick', '-q']);
  t.is(quick.code, 0);
  t.is(quick.err, '');
});

test('every kind of replica damage is named, one line each; exit status 1', async (t) => {
  const r = await replica(t);
  const [b1, b2, b3] = r.bodies['user.bob']!;
  fs.rmSync(blobFile(r.spool, b1!));
  const corrupt = Buffer.from(b2!);
  corrupt[corrupt.length - 3] ^= 0x20;
  fs.writeFileSync(blobFile(r.spool, b2!), corrupt);
  fs.appendFileSync(blobFile(r.spool, b3!), 'x');
  const orphan = message(99, ' orphan');
  fs.mkdirSync(path.dirname(blobFile(r.spool, orphan)), { recursive: true });
  fs.writeFileSync(blobFile(r.spool, orphan), orphan);
  fs.mkdirSync(path.join(r.spool, 'blobs', 'ab'), { recursive: true });
  fs.writeFileSync(path.join(r.spool, 'blobs', 'ab', 'notes.txt'), 'x');
  // pid above any pid_max: a process that is gone
  fs.writeFileSync(path.join(r.spool, 'blobs', 'tmp', '4194999-1-00aa.tmp'), 'half');
  const db = new Database(path.join(r.dir, 'conf', 'replica.sqlite3'));
  const alice = (db.prepare("SELECT id FROM mailbox WHERE name = 'user.alice'").get() as { id: number }).id;
  const sent = (db.prepare("SELECT id FROM mailbox WHERE name = 'user.bob.Sent'").get() as { id: number }).id;
  db.prepare('UPDATE mailbox SET crc_basic = (crc_basic + 1) % 4294967296 WHERE id = ?').run(alice);
  db.prepare('UPDATE record SET sysflags = sysflags | 4 WHERE mailbox_id = ? AND uid = 2').run(alice);
  db.prepare('UPDATE mailbox SET last_uid = 0, highestmodseq = 1 WHERE id = ?').run(sent);
  db.close();

  const res = await check(['-C', r.conf, '--json']);
  t.is(res.code, 1);
  const got = res.problems.map((p) => [p.level, p.kind, p.mailbox ?? p.guid ?? path.basename(p.path!), p.uid ?? null].join(' ')).sort();
  t.deepEqual(
    got,
    [
      `error bad-content ${sha1(b2!)} `,
      `error highestmodseq user.bob.Sent 1`,
      `error last-uid user.bob.Sent 1`,
      // the flag changed without its CRC: the record and (so) the mailbox disagree;
      // the mailbox CRC was also damaged directly
      `error mailbox-crc user.alice `,
      `error missing-file ${sha1(b1!)} `,
      `error record-crc user.alice 2`,
      `error size-mismatch ${sha1(b3!)} `,
      `warning orphan-file ${sha1(orphan)} `,
      `warning staging-leftover 4194999-1-00aa.tmp `,
      `warning stray-file notes.txt `,
    ].sort(),
  );
  t.regex(res.err, /10 problems \(7 errors, 3 warnings\)/);
  const missing = res.problems.find((p) => p.kind === 'missing-file')!;
  t.is(missing.path, blobFile(r.spool, b1!));
  t.is(missing.partition, 'default');

  // The text form: one line per problem, level, kind, where, what.
  const text = await check(['-C', r.conf]);
  t.is(text.code, 1);
  const lines = text.out.trimEnd().split('\n');
  t.is(lines.length, 10);
  t.true(lines.includes(`error record-crc replica mailbox=user.alice uid=2: ${res.problems.find((p) => p.kind === 'record-crc')!.detail}`));
  t.true(lines.some((l) => l.startsWith(`error missing-file replica partition=default guid=${sha1(b1!)} path=`)));
});

test('USER limits the check to that user: their mailboxes and the files they refer to', async (t) => {
  const r = await replica(t);
  fs.rmSync(blobFile(r.spool, r.bodies['user.bob']![0]!));
  fs.rmSync(blobFile(r.spool, r.bodies['user.alice']![0]!));
  fs.writeFileSync(path.join(r.spool, 'blobs', 'tmp', '4194999-1-00aa.tmp'), 'half');
  const bob = await check(['-C', r.conf, '--json', 'bob']);
  t.is(bob.code, 1);
  t.deepEqual(bob.problems.map((p) => [p.kind, p.guid]), [['missing-file', sha1(r.bodies['user.bob']![0]!)]]);
  t.regex(bob.err, /checked 2 mailboxes, 5 records, 5 message files/);
  const nobody = await check(['-C', r.conf, 'carol']);
  t.is(nobody.code, 0);
});

test('usage and configuration errors: 64, 66, 78', async (t) => {
  const dir = tempDir(t);
  t.is((await check(['--frob'])).code, 64);
  const empty = path.join(dir, 'imapd.conf');
  fs.writeFileSync(empty, `configdirectory: ${dir}/conf\npartition-default: ${dir}/spool\n`);
  const none = await check(['-C', empty]);
  t.is(none.code, 66);
  t.regex(none.err, /no store to check/);
  const bad = path.join(dir, 'bad.conf');
  fs.writeFileSync(bad, `configdirectory: ${dir}/conf\nmaxword: many\n`);
  t.is((await check(['-C', bad])).code, 78);
});

test('backups: each verified as ctl_backups verify does; a damaged chunk is named', async (t) => {
  const dir = tempDir(t);
  const store = await B.tempBackupStore(dir);
  storeTeardown(t, store.sink, store.dir);
  for (const user of ['bob', 'alice']) {
    const s = B.openSession(store.sink);
    t.is((await B.run(s, { verb: 'GET', sub: 'USER', userid: user })).status, 'OK Success');
    const bodies = [B.message(1, user), B.message(2, user)];
    const files = await B.stage(s, bodies);
    t.is((await B.run(s, { verb: 'APPLY', sub: 'MESSAGE', files })).status, 'OK Success');
    const m = B.mailboxIn({ uniqueid: `${user}-inbox`, mboxname: `user.${user}`, lastUid: 2, records: bodies.map((b, i) => B.recordIn(i + 1, b)) });
    t.is((await B.run(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: m })).status, 'OK Success');
    await s.end();
  }
  await store.sink.close();
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(conf, `configdirectory: ${dir}/conf\nbackuppartition-default: ${store.partition}\ntemp_path: ${dir}/tmp\n`);
  const clean = await check(['-C', conf]);
  t.is(clean.code, 0, clean.out + clean.err);
  t.regex(clean.err, /checked 0 mailboxes, 0 records, 0 message files, 2 backups/);

  const files = B.dataFiles(store.partition).sort();
  t.is(files.length, 2);
  const victim = files[0]!;
  const data = fs.readFileSync(victim);
  data[Math.floor(data.length / 2)] ^= 0xff;
  fs.writeFileSync(victim, data);
  const res = await check(['-C', conf, '--json']);
  t.is(res.code, 1);
  t.true(res.problems.length > 0);
  for (const p of res.problems) {
    t.is(p.store, 'backup');
    t.is(p.kind, 'backup-verify');
    t.is(p.path, victim);
    t.is(p.chunk, 1);
  }
  t.log(res.out.trim());
  t.true(res.problems.every((p) => /^at offset \d+/.test(p.detail)), JSON.stringify(res.problems));
  const other = files[1]!;
  t.false(res.problems.some((p) => p.path === other));
});

test('next to a live writer nothing is reported; after a SIGKILL only debris (warnings), never damage', async (t) => {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const dir = tempDir(t);
  const child = spawn(process.execPath, ['--import=tsx', fileURLToPath(new URL('./replica-crash-child.ts', import.meta.url)), dir, 'live'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  const exited = new Promise((r) => child.on('exit', r));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      if (/committed (4\d|[5-9]\d|\d{3,})/.test(d.toString())) resolve();
    });
    child.on('exit', (code) => reject(new Error(`writer exited ${code}`)));
  });
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(conf, `configdirectory: ${dir}/conf\npartition-default: ${dir}/spool\n`);
  for (let i = 0; i < 3; i++) {
    const out = capture();
    const err = capture();
    const code = await runCheck(['-C', conf, '--json'], { stdout: out.stream, stderr: err.stream, settleMs: 300 });
    t.is(code, 0, out.text() + err.text());
  }
  child.kill('SIGKILL');
  await exited;
  const after = await check(['-C', conf, '--json']);
  t.deepEqual(after.problems.filter((p) => p.level === 'error'), []);
  t.true(after.problems.every((p) => p.kind === 'staging-leftover' || p.kind === 'orphan-file'), JSON.stringify(after.problems));
});
