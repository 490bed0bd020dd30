import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { deletedAt, expireReplica, openForHousekeeping, parseAge, runExpire } from '../src/client/expire.js';
import { runCheck } from '../src/client/check/cli.js';
import { parseConfig } from '../src/config.js';
import type { RecordIn } from '../src/protocol/types.js';
import { mailboxIn, message, openSession, recordIn, runCommand, stage, tempStore } from './replica-helpers.js';

function tempDir(t: ExecutionContext): string {
  const d = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-expire-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function capture(): { stream: NodeJS.WritableStream; text: () => string } {
  let text = '';
  return { stream: { write: (s: string) => ((text += s), true) } as unknown as NodeJS.WritableStream, text: () => text };
}

function du(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += fs.statSync(path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name)).size;
  }
  return total;
}

const DAY = 86400;

test('ages as cyr_expire reads them: days by default, d/h/m/s, fractions', (t) => {
  t.is(parseAge('-X', '28'), 28 * DAY);
  t.is(parseAge('-X', '1.5'), 1.5 * DAY);
  t.is(parseAge('-X', '12h'), 12 * 3600);
  t.is(parseAge('-X', '30m'), 1800);
  t.is(parseAge('-X', '90s'), 90);
  t.is(parseAge('-X', '0'), 0);
  t.throws(() => parseAge('-X', 'soon'), { message: /option -X: unparsable duration "soon"/ });
  t.is(deletedAt('DELETED.user.bob.Sent.5F3A1B2C'), 0x5f3a1b2c);
  t.is(deletedAt('example.com!DELETED.user.bob.65000000'), 0x65000000);
  t.is(deletedAt('user.bob.Sent'), null);
});

/**
 * 30 days of a master that delivers 8 messages a day and expunges what is
 * older than 3 days, replicated through the store API; `cyrsync expire -X 2
 * --blob-age 1` after each day on the simulated clock. Disk use levels off
 * after the first days and stays flat, while 240 messages went through.
 */
test('a simulated 30-day run: disk use stays flat', async (t) => {
  const dir = tempDir(t);
  const st = await tempStore({}, dir);
  t.teardown(() => st.sink.close());
  const s = openSession(st.sink);
  t.teardown(() => s.end());
  const settings = parseConfig(`configdirectory: ${st.configdirectory}\npartition-default: ${st.partitions.default}\n`, 'imapd.conf').settings;
  const start = Math.floor(Date.now() / 1000);
  const live: { rec: RecordIn; day: number }[] = [];
  let uid = 0;
  let modseq = 1n;
  const usage: number[] = [];
  const total: number[] = [];
  let uploaded = 0;
  const records: number[] = [];
  for (let day = 1; day <= 30; day++) {
    const now = start + day * DAY;
    const bodies = Array.from({ length: 8 }, (_, i) => message(day * 100 + i, ' ' + 'z'.repeat(4000 + i)));
    const files = await stage(s, bodies);
    t.is((await runCommand(s, { verb: 'APPLY', sub: 'MESSAGE', files })).status, 'OK success');
    const changed: RecordIn[] = [];
    for (const l of live.filter((x) => x.day <= day - 3 && !x.rec.flags.includes('\\Expunged'))) {
      l.rec = { ...l.rec, flags: ['\\Expunged'], modseq: ++modseq, lastUpdated: now };
      changed.push(l.rec);
    }
    for (const b of bodies) {
      const rec = recordIn(++uid, b, { modseq: ++modseq, lastUpdated: now, internaldate: now });
      live.push({ rec, day });
      changed.push(rec);
    }
    const m = mailboxIn({ uniqueid: 'inbox-30', mboxname: 'user.flat', highestmodseq: modseq, lastUid: uid, records: changed });
    t.is((await runCommand(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: m })).status, 'OK success', `day ${day}`);
    const store = openForHousekeeping(settings);
    try {
      expireReplica(store, { expungedAge: 2 * DAY, deletedAge: null, blobAge: DAY, now });
    } finally {
      store.close();
    }
    usage.push(du(path.join(st.partitions.default!, 'blobs')));
    st.sink.store.db.pragma('wal_checkpoint(TRUNCATE)');
    total.push(du(dir));
    uploaded += bodies.reduce((n, b) => n + b.length, 0);
    records.push(Number((st.sink.store.db.prepare('SELECT count(*) AS c FROM record').get() as { c: bigint }).c));
  }
  t.log(`blob bytes per day: ${usage.join(' ')}`);
  t.log(`records per day: ${records.join(' ')}`);
  t.log(`whole store (database included) per day: ${total.join(' ')}`);
  const settled = usage.slice(9);
  const max = Math.max(...settled);
  const min = Math.min(...settled);
  t.true(max <= min * 1.02, `flat from day 10: ${min}..${max}`);
  t.true(max < 8 * 8 * 4200, 'at most 8 days of messages on disk');
  t.true(Math.max(...records.slice(9)) <= 6 * 8, `records bounded: ${records.join(' ')}`);
  t.is(records[29], records[9]);
  // The database reuses the pages of purged rows: the whole store levels off too.
  t.true(Math.max(...total.slice(9)) <= Math.min(...total.slice(9)) * 1.1, `whole store: ${total.join(' ')}`);
  t.true(uploaded > 4 * max, `${uploaded} octets went through`);
  // Everything the master still has is there and intact.
  st.sink.store.db.pragma('wal_checkpoint(PASSIVE)');
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(conf, `configdirectory: ${st.configdirectory}\npartition-default: ${st.partitions.default}\n`);
  const out = capture();
  t.is(await runCheck(['-C', conf], { stdout: out.stream, stderr: capture().stream, settleMs: 0 }), 0, out.text());
});

test('cyrsync expire: usage (64), -D removes old DELETED mailboxes only, -v reports, -u limits', async (t) => {
  const dir = tempDir(t);
  const st = await tempStore({}, dir);
  const s = openSession(st.sink);
  const old = Math.floor(Date.now() / 1000) - 40 * DAY;
  const recent = Math.floor(Date.now() / 1000) - 2 * DAY;
  const hex = (n: number) => n.toString(16).toUpperCase();
  const names = ['user.bob', `DELETED.user.bob.Trash.${hex(old)}`, `DELETED.user.bob.Junk.${hex(recent)}`, `DELETED.user.carol.${hex(old)}`];
  let n = 0;
  for (const mboxname of names) {
    const body = message(++n, ` ${mboxname}`);
    const files = await stage(s, [body]);
    t.is((await runCommand(s, { verb: 'APPLY', sub: 'MESSAGE', files })).status, 'OK success');
    const m = mailboxIn({ uniqueid: `id-${n}`, mboxname, lastUid: 1, highestmodseq: 2n, records: [recordIn(1, body)] });
    t.is((await runCommand(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: m })).status, 'OK success', mboxname);
  }
  await s.end();
  await st.sink.close();
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(conf, `configdirectory: ${st.configdirectory}\npartition-default: ${st.partitions.default}\n`);
  // The uploads were made a while ago (blobs younger than --blob-age are spared).
  const db = new Database(path.join(st.configdirectory, 'replica.sqlite3'));
  db.prepare('UPDATE blob SET stored_at = stored_at - 3600').run();
  db.close();
  const run = async (argv: string[]) => {
    const out = capture();
    const err = capture();
    const code = await runExpire(argv, { stdout: out.stream, stderr: err.stream });
    return { code, out: out.text(), err: err.text() };
  };
  const none = await run(['-C', conf]);
  t.is(none.code, 64);
  t.regex(none.err, /at least one of -A -D -E -X -t is required/);
  t.is((await run(['-C', conf, '-X', 'soon'])).code, 64);
  t.is((await run(['-C', conf, '-E', '3'])).code, 0);

  const bob = await run(['-C', conf, '-D', '28', '-u', 'bob', '-v', '--blob-age', '60s']);
  t.is(bob.code, 0, bob.err);
  t.regex(bob.out, new RegExp(`^removed DELETED\\.user\\.bob\\.Trash\\.${hex(old)} \\(deleted .*, 1 records\\)\\n`));
  t.regex(bob.out, /DELETED mailboxes removed: 1, message files collected: 1 \(\d+ octets\)\n$/);
  const all = await run(['-C', conf, '-D', '28d', '-v', '--blob-age', '60s']);
  t.regex(all.out, /removed DELETED\.user\.carol\./);
  t.regex(all.out, /DELETED mailboxes removed: 1, message files collected: 1 /);
  const store = openForHousekeeping(parseConfig(fs.readFileSync(conf, 'utf8'), conf).settings);
  const left = (store.db.prepare('SELECT name FROM mailbox ORDER BY name').all() as { name: string }[]).map((r) => r.name);
  store.close();
  t.deepEqual(left, [`DELETED.user.bob.Junk.${hex(recent)}`, 'user.bob']);
  const out = capture();
  t.is(await runCheck(['-C', conf], { stdout: out.stream, stderr: capture().stream, settleMs: 0 }), 0, out.text());
});

test('the standalone daemon runs the housekeeping on its timer (cyrsync_expire_interval)', async (t) => {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const dir = tempDir(t);
  const st = await tempStore({}, dir);
  const s = openSession(st.sink);
  const hex = (Math.floor(Date.now() / 1000) - 40 * DAY).toString(16).toUpperCase();
  const body = message(1, ' old');
  const files = await stage(s, [body]);
  t.is((await runCommand(s, { verb: 'APPLY', sub: 'MESSAGE', files })).status, 'OK success');
  const m = mailboxIn({ uniqueid: 'gone', mboxname: `DELETED.user.dan.${hex}`, lastUid: 1, highestmodseq: 2n, records: [recordIn(1, body)] });
  t.is((await runCommand(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: m })).status, 'OK success');
  await s.end();
  await st.sink.close();
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(
    conf,
    [`configdirectory: ${st.configdirectory}`, `partition-default: ${st.partitions.default}`, 'admins: admin', 'cyrsync_expire_interval: 1s', 'cyrsync_expire_deleted: 30'].join('\n') + '\n',
  );
  const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', cli, 'sync-server', '-C', conf, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const run = await new Promise<Record<string, unknown>>((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) {
        if (line.includes('housekeeping run done')) resolve(JSON.parse(line) as Record<string, unknown>);
      }
    });
    child.on('exit', (code) => reject(new Error(`daemon exited ${code}: ${buf}`)));
  });
  t.is(run.removedMailboxes, 1);
  child.kill('SIGTERM');
  t.is(await exited, 0);
  const db = new Database(path.join(st.configdirectory, 'replica.sqlite3'), { readonly: true });
  t.is((db.prepare('SELECT count(*) AS c FROM mailbox').get() as { c: number }).c, 0);
  db.close();
});

test('expire next to a live writer: the writer goes on committing, the store stays clean', async (t) => {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const dir = tempDir(t);
  const child = spawn(process.execPath, ['--import=tsx', fileURLToPath(new URL('./replica-crash-child.ts', import.meta.url)), dir, 'busy'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let committed = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  child.stdout.on('data', (d: Buffer) => {
    for (const m of d.toString().matchAll(/committed (\d+)/g)) committed = Number(m[1]);
    for (const w of waiters.filter((x) => committed >= x.n)) w.resolve();
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const reach = (n: number) =>
    new Promise<void>((resolve, reject) => {
      if (committed >= n) return resolve();
      waiters.push({ n, resolve });
      child.on('exit', (code) => reject(new Error(`writer exited ${code}: ${err}`)));
    });
  await reach(40);
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(conf, `configdirectory: ${dir}/conf\npartition-default: ${dir}/spool\n`);
  for (let i = 0; i < 5; i++) {
    const e = capture();
    t.is(await runExpire(['-C', conf, '-X', '0', '-D', '0'], { stdout: capture().stream, stderr: e.stream }), 0, e.text());
  }
  await reach(committed + 40);
  child.kill('SIGKILL');
  const out = capture();
  await runCheck(['-C', conf, '--json'], { stdout: out.stream, stderr: capture().stream, settleMs: 0 });
  const problems = out.text().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: string });
  t.deepEqual(problems.filter((p) => p.level === 'error'), []);
});
