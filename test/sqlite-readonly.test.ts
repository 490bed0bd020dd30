/**
 * Read-only opens of the stores' SQLite files after a writer was killed
 * inside a transaction (hot rollback journal, WAL to recover), and next to a
 * live writer whose transaction is open: the reader sees exactly the last
 * committed state.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { BackupIndex } from '../sinks/backup/index-db.js';
import { openDatabase } from '../sinks/replica/db.js';
import { openSqliteReadOnly } from '../sinks/sqlite-readonly.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cyrsync-ro-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function child(mode: string, dir: string): ChildProcess {
  return spawn(process.execPath, ['--import=tsx', path.join(here, 'sqlite-readonly-child.ts'), mode, dir], { stdio: ['pipe', 'pipe', 'pipe'] });
}

/** The SQLite error code `fn` throws ('' when it does not throw). */
function codeOf(fn: () => unknown): string {
  try {
    fn();
    return '';
  } catch (err) {
    return String((err as { code?: string }).code);
  }
}

/** Runs the child until SIGKILL ends it inside its transaction. */
function killedInside(mode: string, dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = child(mode, dir);
    let err = '';
    c.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    c.on('exit', (_code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`child did not die by SIGKILL: ${err}`))));
  });
}

test('backup index: a hot journal left by a killed writer is rolled back by a read-only open', async (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'x.index');
  await killedInside('backup-kill', dir);
  t.true(fs.existsSync(`${file}-journal`), 'the killed writer left its journal');
  // a plain read-only connection cannot roll it back (the bug this guards against)
  const plain = new Database(file, { readonly: true, fileMustExist: true });
  t.is(codeOf(() => plain.prepare('SELECT count(*) FROM chunk').get()), 'SQLITE_READONLY_ROLLBACK');
  plain.close();
  const idx = BackupIndex.open(file, { dataFileSize: 0, readonly: true });
  const rows = idx.db.prepare('SELECT id, offset, length FROM chunk ORDER BY id').all();
  idx.close();
  t.deepEqual(rows, [{ id: 1, offset: 0, length: 100 }]);
  t.false(fs.existsSync(`${file}-journal`));
  const check = new Database(file, { readonly: true });
  t.is(check.pragma('integrity_check', { simple: true }), 'ok');
  check.close();
});

test('replica database: a read-only open after a writer was killed mid-transaction sees the last commit', async (t) => {
  const dir = tmp(t);
  await killedInside('replica-kill', dir);
  const db = openDatabase(dir, false, true);
  const keys = (db.prepare("SELECT key FROM meta WHERE key = 'committed' OR key LIKE 'torn-%'").all() as { key: string }[]).map((r) => r.key);
  t.is(db.pragma('integrity_check', { simple: true }), 'ok');
  db.close();
  t.deepEqual(keys, ['committed']);
});

/** Starts a child that holds its transaction open; resolves once it is open. Its stdin's end lets it roll back and exit. */
async function holding(t: { teardown(fn: () => void): void }, mode: string, dir: string): Promise<() => Promise<void>> {
  const c = child(mode, dir);
  t.teardown(() => {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    c.stdout!.on('data', (b: Buffer) => b.toString().includes('open') && resolve());
    c.on('exit', () => reject(new Error('child ended early')));
  });
  return async () => {
    const exited = new Promise((resolve) => c.on('exit', resolve));
    c.stdin!.end();
    await exited;
  };
}

for (const kind of ['backup', 'replica'] as const) {
  test(`${kind}: a reader next to a live writer with an open transaction sees only committed rows`, async (t) => {
    const dir = tmp(t);
    const stop = await holding(t, `${kind}-hold`, dir);
    const file = kind === 'backup' ? path.join(dir, 'x.index') : path.join(dir, 'replica.sqlite3');
    const db = openSqliteReadOnly(file, { timeoutMs: 100 });
    const n = kind === 'backup'
      ? (db.prepare('SELECT count(*) AS n FROM chunk').get() as { n: number }).n
      : (db.prepare("SELECT count(*) AS n FROM meta WHERE key = 'committed' OR key LIKE 'torn-%'").get() as { n: number }).n;
    db.close();
    t.is(n, 1);
    await stop();
  });
}

test('backup index: while a live writer has spilled pages into the file, a reader waits (SQLITE_BUSY), it never reads them', async (t) => {
  const dir = tmp(t);
  const stop = await holding(t, 'backup-spill', dir);
  const file = path.join(dir, 'x.index');
  t.is(codeOf(() => openSqliteReadOnly(file, { timeoutMs: 50 }).close()), 'SQLITE_BUSY');
  await stop();
  const db = openSqliteReadOnly(file);
  t.is((db.prepare('SELECT count(*) AS n FROM chunk').get() as { n: number }).n, 1);
  db.close();
});

test('a read-only open that cannot recover says why', (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'missing.index');
  t.is(codeOf(() => openSqliteReadOnly(file)), 'SQLITE_CANTOPEN');
});
