/**
 * `cyrsync ctl-backups` on backups written by the store's writer: list,
 * stat, verify (and the damage it must find: a flipped byte, a truncated
 * file, an index row that disagrees, a body that does not hash to its
 * GUID), reindex, compact with retention, and SIGKILL at every step of a
 * compaction.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { PassThrough, Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { runCtlBackups } from '../src/client/backup/ctl-backups.js';
import { reindexStreaming } from '../src/client/backup/reindex.js';
import { openBackupsDb } from '../sinks/backup/backupsdb.js';
import { BackupAppender, openBackup } from '../sinks/backup/index-db.js';
import { bobHistory, msg, sha1, toolsFixture, type ToolsFixture } from './backup-tools-helpers.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

async function ctl(fx: ToolsFixture, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c: Buffer) => (out += c.toString()));
  stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await runCtlBackups(['-C', fx.conf, ...args], { stdin: new PassThrough(), stdout, stderr });
  return { code, out, err };
}

function fixture(t: { teardown: (f: () => void) => void }, extra: string[] = []): ToolsFixture {
  const fx = toolsFixture(extra);
  t.teardown(() => fs.rmSync(fx.dir, { recursive: true, force: true }));
  return fx;
}

function guidsOf(dataPath: string): string[] {
  const db = new Database(`${dataPath}.index`, { readonly: true });
  try {
    return (db.prepare('SELECT guid FROM message ORDER BY guid').all() as { guid: string }[]).map((r) => r.guid);
  } finally {
    db.close();
  }
}

test('list, stat and verify print what ctl_backups prints', async (t) => {
  const fx = fixture(t);
  const { dataPath } = await bobHistory(fx);
  const list = await ctl(fx, 'list');
  t.is(list.code, 0);
  t.regex(list.out, new RegExp(`^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\t${fs.statSync(dataPath).size}\\tbob\\t${dataPath}\\n$`));
  const stat = await ctl(fx, 'stat', 'bob');
  const cols = stat.out.trimEnd().split('\t');
  t.is(cols[0], 'bob');
  t.is(cols.length, 8);
  t.regex(cols[4]!, /^ {0,5}\d+\.\d%$/);
  t.is(cols[6]!.length, 21);
  const verify = await ctl(fx, '-v', 'verify', 'bob');
  t.is(verify.code, 0);
  t.true(verify.out.startsWith('checking chunk 1 checksums...\nok\nchecking chunk 1 messages...\nok\nchecking chunk 1 mailbox links...\nok\n'));
  t.true(verify.out.endsWith('verify bob: ok\n'));
  const j = await ctl(fx, '-j', 'verify', 'bob');
  t.is(j.out, `{\n  "command": "verify",\n  "userid": "bob",\n  "fname": "${dataPath}",\n  "status": "ok"\n}\n`);
  const lines = await ctl(fx, '--json', 'stat', 'bob');
  const obj = JSON.parse(lines.out) as Record<string, unknown>;
  t.is(obj['userid'], 'bob');
  t.is(typeof obj['compression_ratio'], 'number');
  const missing = await ctl(fx, 'verify', 'nobody');
  t.is(missing.code, 75);
  t.is(missing.err, 'nobody: not found in backups.db\n');
  const nofile = await ctl(fx, 'verify', '-f', path.join(fx.dir, 'none'));
  t.is(nofile.out, `verify ${path.join(fx.dir, 'none')}: failed (Mailbox does not exist)\n`);
  t.is(nofile.code, 75);
});

test('verify finds a flipped byte and a truncated file, and names chunk and offset', async (t) => {
  const fx = fixture(t);
  const { dataPath } = await bobHistory(fx);
  const db = new Database(`${dataPath}.index`, { readonly: true });
  const chunks = db.prepare('SELECT id, offset FROM chunk ORDER BY id').all() as { id: number; offset: number }[];
  db.close();
  const good = fs.readFileSync(dataPath);
  const flipped = Buffer.from(good);
  const at = chunks[1]!.offset + 30;
  flipped[at] = flipped[at]! ^ 0x55;
  fs.writeFileSync(dataPath, flipped);
  const r1 = await ctl(fx, 'verify', 'bob');
  t.is(r1.code, 75);
  t.regex(r1.out, new RegExp(`^verify bob: failed \\(${dataPath}: chunk 2 at offset ${chunks[1]!.offset}`));

  fs.writeFileSync(dataPath, good.subarray(0, good.length - 7));
  const r2 = await ctl(fx, 'verify', 'bob');
  t.is(r2.code, 75);
  t.regex(r2.out, new RegExp(`chunk 3 at offset ${chunks[2]!.offset}`));
});

test('verify finds an index row that disagrees with the data', async (t) => {
  const fx = fixture(t);
  const { dataPath } = await bobHistory(fx);
  const db = new Database(`${dataPath}.index`);
  db.prepare("UPDATE mailbox_message SET modseq = 999 WHERE uid = 3").run();
  db.close();
  const r = await ctl(fx, 'verify', 'bob');
  t.is(r.code, 75);
  t.regex(r.out, /chunk 2 at offset \d+: index row for u-inbox uid 3 matches no RECORD of the chunk/);
});

test('verify finds a message whose bytes do not hash to its GUID', async (t) => {
  const fx = fixture(t);
  const body = msg(1);
  const wrong = sha1('something else');
  const text = Buffer.concat([
    Buffer.from('# cyrus backup: chunk start\r\n'),
    Buffer.from(`1000 APPLY MESSAGE (%{default ${wrong} ${body.length}}\r\n`),
    body,
    Buffer.from(')\r\n'),
  ]);
  const dataPath = path.join(fx.partition, 'b', 'bob_abcdef');
  fs.mkdirSync(path.dirname(dataPath), { recursive: true });
  fs.writeFileSync(dataPath, zlib.gzipSync(text));
  const bdb = openBackupsDb({ configdirectory: fx.configdirectory });
  bdb.set('bob', dataPath);
  bdb.close();
  await reindexStreaming(dataPath, { wait: true, keepPrevious: false });
  const r = await ctl(fx, 'verify', 'bob');
  t.is(r.code, 75);
  t.regex(r.out, new RegExp(`chunk 1 at offset 0, record at 29: message ${wrong}: its bytes hash to ${sha1(body)}`));
});

test('reindex rebuilds an index that then verifies', async (t) => {
  const fx = fixture(t);
  const { dataPath } = await bobHistory(fx);
  fs.rmSync(`${dataPath}.index`);
  t.is((await ctl(fx, 'verify', 'bob')).code, 75, 'without an index the backup needs a reindex');
  const r = await ctl(fx, 'reindex', 'bob');
  t.is(r.out, 'reindex bob: ok\n');
  t.is((await ctl(fx, 'verify', 'bob')).code, 0);
});

test('compact: retention drops expunged messages older than it; not needed is skipped', async (t) => {
  const fx = fixture(t);
  const { dataPath, bodies } = await bobHistory(fx);
  t.deepEqual(guidsOf(dataPath), bodies.map((b) => sha1(b)).sort());
  const r = await ctl(fx, '-v', 'compact', 'bob');
  t.is(r.code, 0, r.err);
  t.true(r.out.endsWith('compact bob: ok\n'));
  t.deepEqual(guidsOf(dataPath), [sha1(bodies[0]!), sha1(bodies[2]!)].sort(), 'the expunged message is gone');
  t.false(fs.existsSync(`${dataPath}.new`));
  t.false(fs.existsSync(`${dataPath}.index.new`));
  t.is((await ctl(fx, 'verify', 'bob')).code, 0);
  const again = await ctl(fx, 'compact', 'bob');
  t.is(again.out, 'compact bob: skipped\n');
  t.is(again.code, 75);
});

test('compact: retention 0 keeps everything (forced)', async (t) => {
  const fx = fixture(t, ['backup_retention: 0']);
  const { dataPath, bodies } = await bobHistory(fx);
  t.is((await ctl(fx, '-F', 'compact', 'bob')).code, 0);
  t.deepEqual(guidsOf(dataPath), bodies.map((b) => sha1(b)).sort());
  t.is((await ctl(fx, 'verify', 'bob')).code, 0);
});

/** Runs `ctl-backups compact bob` in a child that kills itself at `step`; the signal it died of. */
async function compactKilledAt(t: { teardown: (f: () => void) => void }, fx: ToolsFixture, step: string): Promise<NodeJS.Signals | null> {
  const child = spawn(process.execPath, ['--import=tsx', path.join(ROOT, 'src', 'cli.ts'), 'ctl-backups', '-C', fx.conf, 'compact', 'bob'], {
    cwd: ROOT,
    env: { ...process.env, CYRSYNC_COMPACT_CRASH_AT: step },
    stdio: 'ignore',
  });
  t.teardown(() => child.kill('SIGKILL'));
  return new Promise((resolve) => child.on('exit', (_c, s) => resolve(s)));
}

for (const step of ['created', 'chunk-written', 'before-rename', 'between-renames', 'after-rename']) {
  test(`compact: SIGKILL at "${step}" leaves the old or the new backup`, async (t) => {
    const fx = fixture(t);
    const { dataPath, bodies } = await bobHistory(fx);
    t.is(await compactKilledAt(t, fx, step), 'SIGKILL');
    const verify = await ctl(fx, 'verify', 'bob');
    t.is(verify.code, 0, verify.out + verify.err);
    const guids = guidsOf(dataPath);
    const old = bodies.map((b) => sha1(b)).sort();
    const compacted = [sha1(bodies[0]!), sha1(bodies[2]!)].sort();
    t.true(JSON.stringify(guids) === JSON.stringify(old) || JSON.stringify(guids) === JSON.stringify(compacted), guids.join(','));
    t.false(fs.existsSync(`${dataPath}.new`));
    t.false(fs.existsSync(`${dataPath}.index.new`));
  });
}

test('compact killed between its renames: the store\'s own open (as backupd) finishes it and takes the next chunk', async (t) => {
  const fx = fixture(t);
  const { dataPath, bodies } = await bobHistory(fx);
  t.is(await compactKilledAt(t, fx, 'between-renames'), 'SIGKILL');
  t.true(fs.existsSync(`${dataPath}.new`), 'the kill left the new data file beside the replaced index');
  const b = await openBackup(dataPath, { wait: false });
  if (b === null) return void t.fail('backupd\'s open found the backup locked');
  t.false(fs.existsSync(`${dataPath}.new`));
  const appender = new BackupAppender(b);
  try {
    const extra = msg(99);
    await appender.start(2000);
    await appender.append({ key: 'MESSAGE', value: { kind: 'list', items: [{ kind: 'file', partition: 'default', guid: sha1(extra), size: extra.length, source: () => Readable.from([extra]) }] } }, 2000);
  } finally {
    await appender.close(2001);
  }
  const compacted = [sha1(bodies[0]!), sha1(bodies[2]!), sha1(msg(99))].sort();
  t.deepEqual(guidsOf(dataPath), compacted);
  const verify = await ctl(fx, 'verify', 'bob');
  t.is(verify.code, 0, verify.out + verify.err);
});

/** Runs ctl-backups with `stdin`; `locked` resolves once it prints "OK locked". */
function ctlWithStdin(fx: ToolsFixture, stdin: PassThrough, ...args: string[]): { locked: Promise<void>; done: Promise<{ code: number; out: string }> } {
  const stdout = new PassThrough();
  let out = '';
  let onLocked: () => void = () => undefined;
  const locked = new Promise<void>((resolve) => (onLocked = resolve));
  stdout.on('data', (c: Buffer) => {
    out += c.toString();
    if (out.includes('OK locked\n')) onLocked();
  });
  const done = runCtlBackups(['-C', fx.conf, ...args], { stdin, stdout, stderr: new PassThrough() }).then((code) => ({ code, out }));
  return { locked, done };
}

test('lock: -p holds the lock until EOF on stdin; others see the backup locked; -x runs a command under it', async (t) => {
  const fx = fixture(t);
  const { dataPath } = await bobHistory(fx);
  const stdin = new PassThrough();
  const held = ctlWithStdin(fx, stdin, 'lock', 'bob');
  await held.locked;
  // While the lock is held, verify reports the backup locked (exit 75).
  const other = await ctl(fx, 'verify', 'bob');
  t.is(other.out, 'verify bob: locked\n');
  t.is(other.code, 75);
  const second = await ctl(fx, 'lock', 'bob');
  t.is(second.out, '* Trying to obtain lock on bob...\nNO failed (Mailbox is locked)\n');
  t.is(second.code, 70);
  stdin.end();
  const first = await held.done;
  t.is(first.out, '* Trying to obtain lock on bob...\nOK locked\n');
  t.is(first.code, 0);
  t.is((await ctl(fx, 'verify', 'bob')).code, 0, 'released');
  const marker = path.join(fx.dir, 'seen');
  const x = await ctl(fx, 'lock', '-x', `printf '%s %s' "$ctl_backups_lock_data_fname" "$ctl_backups_lock_index_fname" > ${marker}; exit 3`, 'bob');
  t.is(x.code, 3);
  t.is(fs.readFileSync(marker, 'utf8'), `${dataPath} ${dataPath}.index`);
});

test('reindex -v prints the chunks it finds, as ctl_backups does', async (t) => {
  const fx = fixture(t);
  const { dataPath } = await bobHistory(fx);
  const db = new Database(`${dataPath}.index`, { readonly: true });
  const offsets = (db.prepare('SELECT offset FROM chunk ORDER BY id').all() as { offset: number }[]).map((r) => r.offset);
  db.close();
  const r = await ctl(fx, '-v', 'reindex', 'bob');
  const expected = [...offsets, fs.statSync(dataPath).size].map((o) => `\nfound chunk at offset ${o}\n\n`).join('') + 'reached end of file\nreindex bob: ok\n';
  t.is(r.out, expected);
  const j = await ctl(fx, '--json', 'reindex', 'bob');
  t.deepEqual(JSON.parse(j.out), { command: 'reindex', userid: 'bob', fname: dataPath, status: 'ok' });
});

function chunkLengths(dataPath: string): number[] {
  const db = new Database(`${dataPath}.index`, { readonly: true });
  try {
    return (db.prepare('SELECT length FROM chunk ORDER BY id').all() as { length: number }[]).map((r) => r.length);
  } finally {
    db.close();
  }
}

test('compact: backup_compact_minsize combines small chunks, backup_compact_maxsize splits large ones', async (t) => {
  const small = fixture(t, ['backup_retention: 0', 'backup_compact_minsize: 4']);
  const a = await bobHistory(small);
  t.is(chunkLengths(a.dataPath).length, 3);
  const r = await ctl(small, 'compact', 'bob');
  t.is(r.out, 'compact bob: ok\n', 'three chunks under 4 KiB are work enough');
  t.is(chunkLengths(a.dataPath).length, 1);
  t.is((await ctl(small, 'verify', 'bob')).code, 0);
  t.deepEqual(guidsOf(a.dataPath), a.bodies.map((b) => sha1(b)).sort());

  const big = fixture(t, ['backup_retention: 0', 'backup_compact_maxsize: 1']);
  const b = await bobHistory(big);
  const before = chunkLengths(b.dataPath);
  t.is((await ctl(big, 'compact', 'bob')).out, 'compact bob: ok\n');
  const after = chunkLengths(b.dataPath);
  t.true(after.length > before.length, `${before.join(',')} -> ${after.join(',')}`);
  t.is((await ctl(big, '-v', 'verify', 'bob')).code, 0);
  t.deepEqual(guidsOf(b.dataPath), b.bodies.map((x) => sha1(x)).sort());
});

test('modes: -A, -P prefixes, -D domains, -m mailboxes, -f files', async (t) => {
  const fx = fixture(t, ['unixhierarchysep: 1']);
  const { dataPath } = await bobHistory(fx);
  const { writeBackup } = await import('./backup-tools-helpers.js');
  const alice = await writeBackup(fx, 'alice@example.com', [{ ts: 500, records: ['SUB %(USERID alice@example.com MBOXNAME example.com!user.alice)'] }]);
  const users = (r: { out: string }): string[] => r.out.trim().split('\n').map((l) => l.split('\t')[2]!);
  t.deepEqual(users(await ctl(fx, 'list')), ['alice@example.com', 'bob']);
  t.deepEqual(users(await ctl(fx, 'list', '-P', 'b')), ['bob']);
  t.deepEqual(users(await ctl(fx, 'list', '-D', 'example.com')), ['alice@example.com']);
  t.deepEqual(users(await ctl(fx, 'list', '-m', 'user/bob/Old')), ['bob']);
  t.is((await ctl(fx, 'list', '-f', alice)).out.split('\t')[2], '[unknown]');
  t.is((await ctl(fx, 'verify', '-f', dataPath)).out, `verify ${dataPath}: ok\n`);
  t.is((await ctl(fx, 'verify', '-A')).out, 'verify alice@example.com: ok\nverify bob: ok\n');
  t.is((await ctl(fx, 'list', '-A', 'bob')).code, 64, '-A takes no names');
});
