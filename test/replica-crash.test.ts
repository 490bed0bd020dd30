import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { openSession, runCommand, tempStore } from './replica-helpers.js';
import { storeTeardown } from './helpers/teardown.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Starts the child, lets it commit at least `atLeast` batches, then SIGKILLs it; returns the last committed count. */
function runAndKill(t: ExecutionContext, dir: string, atLeast: number, extraDelayMs: number, user = 'crash'): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import=tsx', path.join(here, 'replica-crash-child.ts'), dir, user], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.teardown(() => void child.kill('SIGKILL'));
    let last = 0;
    let killed = false;
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      for (const m of d.toString().matchAll(/committed (\d+)/g)) last = Number(m[1]);
      if (!killed && last >= atLeast) {
        killed = true;
        setTimeout(() => child.kill('SIGKILL'), extraDelayMs);
      }
    });
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve(last);
      else reject(new Error(`child exited ${code}: ${err}`));
    });
  });
}

test('killed mid-apply: reopened store is consistent and holds every acknowledged batch', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cyrsync-crash-'));
  for (const [round, delay] of [[1, 3], [2, 17], [3, 0]] as const) {
    const acked = await runAndKill(t, dir, 40 * round, delay);
    t.log(`round ${round}: ${acked} acknowledged`);
    const st = await tempStore({ fsync: true }, dir);
    storeTeardown(t, st.sink, st.dir);
    try {
      t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), [], 'staging emptied at open');
      const store = st.sink.store;
      const mb = store.mailboxByName('user.crash')!;
      t.truthy(mb);
      t.true(mb.lastUid >= acked, `round ${round}: last_uid ${mb.lastUid} >= acknowledged ${acked}`);
      t.is(mb.lastUid % 20, 0, 'no half-applied batch');
      t.deepEqual(store.recomputeCrcs('user.crash'), { basic: mb.crcBasic, annot: (mb.crcAnnot ^ 12345678) >>> 0 });
      // every record's blob is there and hashes to its GUID
      const s = openSession(st.sink);
      const full = await runCommand(s, { verb: 'GET', sub: 'FULLMAILBOX', mboxname: 'user.crash' });
      const guids = [...full.reply.toString('latin1').matchAll(/GUID ([0-9a-f]{40})/g)].map((m) => m[1]!);
      t.is(guids.length, mb.lastUid);
      for (const g of guids) {
        const p = path.join(st.partitions.default!, 'blobs', g.slice(0, 2), g);
        t.is(createHash('sha1').update(readFileSync(p)).digest('hex'), g);
      }
      await s.end();
    } finally {
      await st.sink.close();
    }
  }
});

test('two processes apply to one store at once, both are killed: each user is consistent', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cyrsync-crash2-'));
  const [a, b] = await Promise.all([runAndKill(t, dir, 60, 5, 'alpha'), runAndKill(t, dir, 60, 11, 'beta')]);
  const st = await tempStore({ fsync: true }, dir);
  storeTeardown(t, st.sink, st.dir);
  try {
    t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), [], 'staging of both dead writers removed');
    for (const [user, acked] of [['alpha', a], ['beta', b]] as const) {
      const store = st.sink.store;
      const mb = store.mailboxByName(`user.${user}`)!;
      t.true(mb.lastUid >= acked, `${user}: last_uid ${mb.lastUid} >= acknowledged ${acked}`);
      t.is(mb.lastUid % 20, 0);
      t.deepEqual(store.recomputeCrcs(`user.${user}`), { basic: mb.crcBasic, annot: (mb.crcAnnot ^ 12345678) >>> 0 });
    }
  } finally {
    await st.sink.close();
  }
});
