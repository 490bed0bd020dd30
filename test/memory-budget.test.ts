/**
 * The process's memory budget (src/memory.ts): the admission logic with a
 * controlled resident size, then real sessions over TCP against the real
 * replica store, serialised by a budget the process is always over.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryBudget } from '../src/memory.js';
import { parseConfig } from '../src/config.js';
import { CsyncTestClient } from './helpers/csync-client.js';
import { startSessionServer, type SessionServer } from './helpers/session-server.js';

const MiB = 1024 * 1024;

function controlled(limit = 64 * MiB): { budget: MemoryBudget; set: (rss: number) => void; gcs: string[]; clock: { t: number } } {
  let rss = 0;
  const gcs: string[] = [];
  const clock = { t: 0 };
  const budget = new MemoryBudget({ limit, rss: () => rss, collect: (k) => gcs.push(k), now: () => clock.t, pollMs: 0, staleMs: 1000 });
  return { budget, set: (r) => (rss = r), gcs, clock };
}

test('under the soft mark every session goes on without collecting', (t) => {
  const { budget, gcs } = controlled();
  t.true(budget.soft < budget.limit);
  for (let i = 0; i < 100; i++) t.true(budget.tryEnter({}, 64 * 1024));
  t.deepEqual(gcs, []);
  t.is(budget.waiting, 0);
});

test('over the soft mark: garbage is collected first; if that is enough, nobody waits', (t) => {
  const { budget, set, gcs } = controlled();
  set(budget.limit);
  let calls = 0;
  // The collection brings the process back under the mark.
  const b2 = new MemoryBudget({ limit: budget.limit, rss: () => (calls++ === 0 ? budget.limit : 0), collect: (k) => gcs.push(k), pollMs: 0 });
  t.true(b2.tryEnter({}, 1));
  t.deepEqual(gcs, ['minor']);
  t.is(b2.passHolder, null);
});

test('over the budget: one session holds the pass, the others wait until it releases it', async (t) => {
  const { budget, set, gcs } = controlled();
  set(budget.limit + MiB);
  const a = {};
  const b = {};
  const c = {};
  t.true(budget.tryEnter(a, 1), 'the first to ask gets the pass');
  t.is(budget.passHolder, a);
  t.true(gcs.includes('major'), 'a full collection was tried before serialising');
  t.true(budget.tryEnter(a, 1), 'the holder goes on');
  t.false(budget.tryEnter(b, 1));
  const order: string[] = [];
  const pb = budget.wait(b).then(() => order.push('b'));
  t.false(budget.tryEnter(c, 1));
  const pc = budget.wait(c).then(() => order.push('c'));
  t.is(budget.waiting, 2);
  await Promise.resolve();
  t.deepEqual(order, [], 'nobody moves while a holds the pass');
  budget.release(a);
  await pb;
  t.deepEqual(order, ['b'], 'the pass goes to the first waiter, in order');
  t.is(budget.passHolder, b);
  set(0);
  budget.release(b);
  await pc;
  t.deepEqual(order, ['b', 'c']);
  t.is(budget.passHolder, null, 'back under the mark: everyone goes on, no pass');
  t.is(budget.waiting, 0);
});

test('a holder that stops asking loses the pass to the next waiter', async (t) => {
  const { budget, set, clock } = controlled();
  set(budget.limit * 2);
  const a = {};
  const b = {};
  t.true(budget.tryEnter(a, 1));
  const pb = budget.wait(b);
  budget.poll();
  t.is(budget.passHolder, a, 'not stale yet');
  clock.t += 1000;
  budget.poll();
  await pb;
  t.is(budget.passHolder, b);
  t.false(budget.tryEnter(a, 1), 'the former holder now waits like the others');
});

test('a session that goes away leaves the queue and gives up the pass', async (t) => {
  const { budget, set } = controlled();
  set(budget.limit * 2);
  const a = {};
  const b = {};
  const c = {};
  t.true(budget.tryEnter(a, 1));
  const pb = budget.wait(b);
  const pc = budget.wait(c);
  budget.forget(b);
  await pb;
  budget.forget(a);
  await pc;
  t.is(budget.passHolder, c);
  t.is(budget.waiting, 0);
});

test('cyrsync_memory_budget: MiB in imapd.conf, 96 by default, 0 turns it off, tiny values are refused', (t) => {
  const base = 'configdirectory: /tmp/x\npartition-default: /tmp/y\n';
  t.is(parseConfig(base).settings.cyrsync_memory_budget, 96 * MiB);
  t.is(parseConfig(base + 'cyrsync_memory_budget: 64\n').settings.cyrsync_memory_budget, 64 * MiB);
  t.is(parseConfig(base + 'cyrsync_memory_budget: 0\n').settings.cyrsync_memory_budget, 0);
  const err = t.throws(() => parseConfig(base + 'cyrsync_memory_budget: 4\n', 'a.conf'));
  t.regex(err!.message, /a\.conf line 3 \(cyrsync_memory_budget\): 4 MiB is too small/);
});

/* ------------------------------------------------------------------------ */
/* Real sessions                                                            */
/* ------------------------------------------------------------------------ */

/** A server whose sessions all go through `budget`. */
function startServer(t: ExecutionContext, budget: MemoryBudget): Promise<SessionServer> {
  return startSessionServer(t, { session: { budget, servername: 'test' } });
}

async function loggedIn(port: number): Promise<CsyncTestClient> {
  const c = await CsyncTestClient.connect(port);
  await c.status('* OK');
  const ok = (await c.login()).at(-1) ?? '';
  if (!ok.startsWith('OK Success')) throw new Error(ok);
  return c;
}

function messages(n: number, size: number): { guid: string; body: Buffer }[] {
  return Array.from({ length: n }, () => {
    const body = randomBytes(size);
    return { guid: createHash('sha1').update(body).digest('hex'), body };
  });
}

test('sessions over a budget the process is always above all finish, one at a time, and every message is stored', async (t) => {
  const budget = new MemoryBudget({ limit: 16 * MiB, pollMs: 5 });
  const s = await startServer(t, budget);
  const all: { guid: string; body: Buffer }[] = [];
  const run = async (): Promise<string[]> => {
    const c = await loggedIn(s.port);
    const replies: string[] = [];
    for (let batch = 0; batch < 5; batch++) {
      const msgs = messages(4, 4096);
      all.push(...msgs);
      c.send('APPLY MESSAGE (');
      msgs.forEach((m, i) => {
        c.send(`${i > 0 ? ' ' : ''}%{default ${m.guid} ${m.body.length}}\r\n`);
        c.send(m.body);
      });
      c.send(')\r\n');
      replies.push(await c.status(''));
    }
    c.send('EXIT\r\n');
    await c.status('OK');
    c.sock.destroy();
    return replies;
  };
  const results = await Promise.all(Array.from({ length: 8 }, run));
  for (const r of results) t.deepEqual(r, ['OK success', 'OK success', 'OK success', 'OK success', 'OK success']);
  t.true(budget.stats.passes > 0, 'the budget serialised the sessions');
  t.is(budget.waiting, 0);
  t.is(budget.passHolder, null);
  const blobs = join(s.dir, 'spool', 'blobs');
  for (const m of all) t.true(existsSync(join(blobs, m.guid.slice(0, 2), m.guid)), `${m.guid} stored`);
});

test('while one session holds the pass, a new connection is greeted only once the holder\'s command is over', async (t) => {
  let rss = Number.MAX_SAFE_INTEGER;
  const budget = new MemoryBudget({ limit: 64 * MiB, rss: () => rss, pollMs: 5, staleMs: 3_600_000, sampleEvery: 0 });
  const s = await startServer(t, budget);
  rss = 0;
  const a = await loggedIn(s.port);
  const [m] = messages(1, 8192);
  rss = Number.MAX_SAFE_INTEGER;
  // a starts a command: its first chunk takes the pass, the rest of the command is still to come.
  a.send(`APPLY MESSAGE (%{default ${m!.guid} ${m!.body.length}}\r\n`);
  a.send(m!.body.subarray(0, 100));
  while (budget.passHolder === null) await new Promise((r) => setTimeout(r, 5));
  const b = await CsyncTestClient.connect(s.port);
  while (budget.waiting === 0) await new Promise((r) => setTimeout(r, 5));
  t.is(budget.waiting, 1, 'the new session waits for its greeting');
  a.send(m!.body.subarray(100));
  a.send(')\r\n');
  t.is(await a.status(''), 'OK success', "the holder's command completes");
  // a's command is over: the pass goes to b, which is greeted.
  t.regex(await b.status('* OK'), /^\* OK test Cyrus sync server/);
  rss = 0;
  a.send('NOOP\r\n');
  t.is(await a.status('OK'), 'OK Noop completed');
  a.sock.destroy();
  b.sock.destroy();
  const blob = join(s.dir, 'spool', 'blobs', m!.guid.slice(0, 2), m!.guid);
  t.true(existsSync(blob));
});
