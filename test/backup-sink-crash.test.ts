/**
 * kill -9 of a process writing a backup, at whatever moment: the next open
 * cuts the torn chunk off, the index and the data file agree, and every
 * chunk that was committed before the kill is still there.
 */
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkChunks, dataFiles, openIndexRO, openSession, run, tempBackupStore } from './backup-sink-helpers.js';
import { storeTeardown } from './helpers/teardown.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Runs the child until it committed `atLeast` rounds, then SIGKILLs it after `delayMs`; returns the last committed count. */
function runAndKill(t: ExecutionContext, dir: string, atLeast: number, delayMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import=tsx', path.join(here, 'backup-sink-crash-child.ts'), dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => void child.kill('SIGKILL'));
    let last = 0;
    let rounds = 0;
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.stdout.on('data', (b: Buffer) => {
      for (const m of b.toString().matchAll(/committed (\d+)/g)) {
        last = Number(m[1]);
        if (++rounds === atLeast) setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    child.on('exit', (_code, signal) => {
      if (signal === 'SIGKILL') resolve(last);
      else reject(new Error(`child ended without being killed: ${err}`));
    });
  });
}

/**
 * Whether the kill left data after the last indexed chunk, seen on a copy:
 * the index may have a hot journal, which only a read-write open rolls back
 * (a read-only open fails with SQLITE_READONLY_ROLLBACK), and the files
 * themselves must reach the store's recovery untouched.
 */
function tornOnCopy(dataPath: string, scratch: string): boolean {
  fs.rmSync(scratch, { recursive: true, force: true });
  fs.mkdirSync(scratch);
  const copy = path.join(scratch, path.basename(dataPath));
  for (const suffix of ['', '.index', '.index-journal', '.index-wal', '.index-shm']) {
    if (fs.existsSync(dataPath + suffix)) fs.copyFileSync(dataPath + suffix, copy + suffix);
  }
  new Database(`${copy}.index`).close();
  return checkChunks(copy).some((p) => p.startsWith('data after the last chunk'));
}

test('SIGKILL while chunks are written: reopening trims the torn chunk and keeps every committed one', async (t) => {
  const dir = fs.mkdtempSync(path.join('/tmp', 'cyrsync-bsink-crash-'));
  const scratch = fs.mkdtempSync(path.join('/tmp', 'cyrsync-bsink-crash-copy-'));
  t.teardown(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(scratch, { recursive: true, force: true });
  });
  let committed = 0;
  for (const delay of [0, 7, 23, 61, 140]) {
    committed = await runAndKill(t, dir, 1, delay);
    t.true(committed > 0);
    const [before] = dataFiles(path.join(dir, 'backups'));
    const torn = tornOnCopy(before!, scratch);
    t.log(`killed ${delay} ms after a commit: ${torn ? 'a torn chunk was left' : 'no torn chunk'}`);
    const s = await tempBackupStore(dir);
    storeTeardown(t, s.sink, s.dir);
    const a = openSession(s.sink);
    const r = await run(a, { verb: 'GET', sub: 'USER', userid: 'crash' });
    t.is(r.status, 'OK Success');
    const lastUid = Number(/LAST_UID (\d+)/.exec(r.reply.toString('latin1'))?.[1] ?? 0);
    t.true(lastUid >= committed, `committed ${committed}, backup holds ${lastUid}`);
    await a.end();
    await s.sink.close();
    const [file] = dataFiles(path.join(dir, 'backups'));
    t.deepEqual(checkChunks(file!), [], `after the kill ${delay} ms into a round`);
    const db = openIndexRO(file!);
    const n = (db.prepare('SELECT count(*) AS n FROM message').get() as { n: number }).n;
    db.close();
    t.true(n >= committed);
  }
});
