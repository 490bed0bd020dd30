/**
 * The real Cyrus 3.6.1 sync_client replicating into cyrsync's replica store.
 *
 * Every replication scenario runs twice in the same run: first against the
 * real Cyrus sync_server (the reference: it proves the harness and the
 * scenario), then against cyrsync. "Converged" means what cyrus-peer's
 * `compare` means: a second one-shot sync sends no APPLY and gets no NO/BAD,
 * i.e. sync_client believes the target holds exactly what the master holds.
 * The store itself is checked by diffing the canonical dump of the master
 * against the target's (`cyrsync dump` for cyrsync, an IMAP dump of the
 * replica for the real sync_server).
 *
 * The session-level cases talk to the servers directly over TCP and assert
 * both the reply and the store.
 */
import anyTest, { type TestFn, type ExecutionContext } from 'ava';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import {
  ADMIN,
  ADMIN_PASSWORD,
  USER_PASSWORD,
  Cyrsync,
  CsyncClient,
  Peer,
  adminSession,
  applyMailbox,
  describe,
  fileLiteral,
  filesNamed,
  filesStartingWith,
  listFiles,
  makeRunDir,
  message,
  sha1,
  sleep,
  stopOwnProcesses,
  tail,
  waitFor,
  type RunResult,
} from './harness.js';

interface Ctx {
  peer: Peer;
  work: string;
  cyrsync?: Cyrsync;
  cyrsyncError?: unknown;
}

const test = anyTest as TestFn<Ctx>;

/** Users with a bit of everything; bob carries the multi-MB messages. */
const USERS = ['bob', 'alice', 'carol'] as const;
/** Rolling replication runs with mutations going on for at least this long. */
const ROLLING_MS = 60_000;

let failed = false;

test.before(async (t) => {
  const peer = await Peer.create();
  t.context.peer = peer;
  t.context.work = await makeRunDir('cyrsync-interop-work-');
  t.log(`cyrus-peer dir ${peer.dir}, work dir ${t.context.work}`);
  await peer.startMaster();
  await peer.startReplica();
  // populate 50: most messages 0.6-20 KB, every 25th 1-3 MB, plus folders,
  // flags, expunges, annotations, quota, subscriptions and a sieve script.
  await peer.populate('bob', 50);
  await peer.populate('alice', 12);
  await peer.populate('carol', 12);
  await peer.setReplicaPassword('bob', USER_PASSWORD);
  try {
    t.context.cyrsync = await Cyrsync.start({ users: { bob: USER_PASSWORD } });
    t.log(`cyrsync on ${t.context.cyrsync.target}, dir ${t.context.cyrsync.dir}`);
  } catch (e) {
    // The reference half still runs; every cyrsync test reports this.
    t.context.cyrsyncError = e;
  }
});

test.afterEach.always((t) => {
  if (!t.passed) {
    failed = true;
    const s = t.context.cyrsync;
    if (s && t.title.includes('cyrsync')) t.log(`cyrsync log (last lines):\n${tail(s.log(), 25)}`);
  }
  // A test that failed on its time limit may leave a sync_client behind.
  stopOwnProcesses();
});

test.after.always(async (t) => {
  stopOwnProcesses();
  const { peer, cyrsync, work } = t.context;
  await cyrsync?.stop();
  if (peer) await peer.stopAll();
  if (failed || process.env['CYRSYNC_INTEROP_KEEP']) {
    t.log(`kept for inspection: ${[peer?.dir, cyrsync?.dir, work].filter(Boolean).join(' ')}`);
    return;
  }
  await cyrsync?.remove();
  await peer?.remove();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

// ------------------------------------------------------------------ targets

interface Target {
  /** Test title prefix. */
  name: string;
  /** sync_client's -S value. */
  spec(t: ExecutionContext<Ctx>): string;
  /** The target's canonical dump of USER, comparable with `cyrus-peer dump USER`. */
  dump(t: ExecutionContext<Ctx>, user: string): Promise<string>;
}

function server(t: ExecutionContext<Ctx>): Cyrsync {
  const s = t.context.cyrsync;
  if (!s) throw new Error(`cyrsync did not start: ${String(t.context.cyrsyncError)}`);
  if (!s.running) throw new Error(`cyrsync is no longer running\n${tail(s.log())}`);
  return s;
}

const REFERENCE: Target = {
  name: 'reference sync_server',
  spec: (t) => t.context.peer.replicaTarget,
  dump: (t, user) => t.context.peer.replicaDump(user),
};

const CYRSYNC: Target = {
  name: 'cyrsync',
  spec: (t) => server(t).target,
  dump: async (t, user) => {
    const r = await server(t).dump(user);
    if (r.code !== 0) throw new Error(`cyrsync dump ${user} failed\n${describe(r)}`);
    return r.stdout;
  },
};

const TARGETS = [REFERENCE, CYRSYNC];

// ---------------------------------------------------------------- assertions

function assertSynced(t: ExecutionContext<Ctx>, r: RunResult, what: string): void {
  t.is(r.code, 0, `${what}: sync_client must exit 0\n${describe(r)}`);
  t.notRegex(r.output, /bailing out|Can not connect|could not connect/i, `${what}\n${describe(r)}`);
}

async function assertConverged(t: ExecutionContext<Ctx>, target: Target, user: string, noCompress = false): Promise<void> {
  const c = await t.context.peer.compare(user, target.spec(t), { noCompress });
  t.true(c.converged, `${user} must converge on ${target.name} (second pass sends no APPLY, gets no NO)\n${describe(c)}`);
  t.regex(c.stdout, /sent changes: none/, `${user}: second pass sent changes\n${describe(c)}`);
}

async function assertSameStore(t: ExecutionContext<Ctx>, target: Target, user: string): Promise<void> {
  const master = await t.context.peer.masterDump(user);
  t.regex(master, /^mailbox INBOX /m, `the master dump of ${user} lists INBOX`);
  const other = await target.dump(t, user);
  t.is(other.trimEnd(), master.trimEnd(), `${target.name}: dump of ${user} must equal the master's`);
}

async function tapSummary(t: ExecutionContext<Ctx>, file: string): Promise<string> {
  const s = await t.context.peer.wireSummary(file);
  return s.stdout;
}

let plainRound = 0;

// ------------------------------------------------------- replication scenarios

for (const target of TARGETS) {
  test.serial(`${target.name}: populated user: sync -u exits 0, converges, store equals the master`, async (t) => {
    t.timeout(6 * 60_000);
    const { peer, work } = t.context;
    const tap = path.join(work, `${target.name.replace(/\W+/g, '-')}-bob-first.tap`);
    const r = await peer.sync('bob', target.spec(t), { tap });
    assertSynced(t, r, 'first full sync of bob');
    t.regex(r.stdout, /MAILBOX user\.bob\b/, 'sync_client replicated the INBOX');
    // The default session is compressed: sync_client sends COMPRESS DEFLATE
    // when the greeting offers it, and the rest of the session is deflated.
    const s = await tapSummary(t, tap);
    t.regex(s, /^\s+COMPRESS\s+1$/m, `the first sync ran compressed\n${s}`);
    t.regex(s, /^\s+APPLY MESSAGE\s+\d+$/m, `messages were uploaded\n${s}`);
    await assertConverged(t, target, 'bob');
    await assertSameStore(t, target, 'bob');
  });

  test.serial(`${target.name}: after mutate, an incremental sync converges`, async (t) => {
    t.timeout(6 * 60_000);
    const { peer } = t.context;
    assertSynced(t, await peer.sync('bob', target.spec(t)), 'baseline sync of bob');
    const before = await peer.masterDump('bob');
    await peer.mutate('bob');
    t.not(await peer.masterDump('bob'), before, 'mutate changed the master');
    const r = await peer.sync('bob', target.spec(t));
    assertSynced(t, r, 'incremental sync of bob');
    t.regex(r.stdout, /MAILBOX user\.bob/, 'the incremental sync sent mailbox changes');
    await assertConverged(t, target, 'bob');
    await assertSameStore(t, target, 'bob');
  });

  test.serial(`${target.name}: sync_client -A with 3 users converges`, async (t) => {
    t.timeout(6 * 60_000);
    const { peer } = t.context;
    await peer.mutate('alice');
    const r = await peer.syncAll(target.spec(t));
    assertSynced(t, r, 'sync -A');
    for (const u of USERS) t.regex(r.stdout, new RegExp(`USER ${u}\\b`), `-A synced ${u}`);
    for (const u of USERS) {
      await assertConverged(t, target, u);
      await assertSameStore(t, target, u);
    }
  });

  test.serial(`${target.name}: sync_client -m with one mailbox converges`, async (t) => {
    t.timeout(6 * 60_000);
    const { peer } = t.context;
    assertSynced(t, await peer.sync('alice', target.spec(t)), 'baseline sync of alice');
    const before = await peer.masterDump('alice');
    // New messages in INBOX only; a fresh count gives messages never delivered before.
    await peer.populate('alice', 3 + plainRound++, undefined, true);
    const after = await peer.masterDump('alice');
    t.not(after, before, 'the master INBOX changed');
    const r = await peer.syncMailbox(['user/alice'], target.spec(t));
    assertSynced(t, r, 'sync -m user/alice');
    const mailboxes = r.stdout.split('\n').filter((l) => /^MAILBOX /.test(l));
    t.deepEqual(mailboxes, ['MAILBOX user.alice'], `-m synced exactly that mailbox\n${describe(r)}`);
    await assertConverged(t, target, 'alice');
    await assertSameStore(t, target, 'alice');
  });

  test.serial(`${target.name}: rolling -R with mutations for ${ROLLING_MS / 1000} s converges`, async (t) => {
    t.timeout(10 * 60_000);
    const { peer } = t.context;
    assertSynced(t, await peer.syncAll(target.spec(t)), 'baseline sync -A');
    await peer.syncLogClear();
    await peer.rollingStart(target.spec(t));
    let mutations = 0;
    try {
      const start = Date.now();
      while (Date.now() - start < ROLLING_MS) {
        await peer.mutate(USERS[mutations % USERS.length]!);
        mutations++;
        await sleep(250);
      }
      // Let the rolling client work through what is left in the sync log.
      const drained = await waitFor(async () => !(await peer.syncLogPending()), 180_000, 500);
      t.true(drained, `the rolling client drained the sync log\n${tail(peer.rollingLog())}`);
      // One more repeat interval, so the last batch is acknowledged.
      await sleep(2000);
    } finally {
      const stop = await peer.rollingStop();
      t.regex(stop.stdout, /rolling replication stopped/, `the rolling client was still running at the end\n${describe(stop)}\n${tail(peer.rollingLog())}`);
    }
    t.true(mutations >= 10, `mutations happened while rolling (${mutations})`);
    t.notRegex(peer.rollingLog(), /bailing out/, `rolling log\n${tail(peer.rollingLog())}`);
    for (const u of USERS) {
      await assertConverged(t, target, u);
      await assertSameStore(t, target, u);
    }
  });

  test.serial(`${target.name}: everything stored survives a server restart`, async (t) => {
    t.timeout(6 * 60_000);
    const { peer } = t.context;
    assertSynced(t, await peer.sync('carol', target.spec(t)), 'sync of carol');
    if (target === REFERENCE) await peer.ok(['replica', 'restart']);
    else await server(t).restart();
    for (const u of USERS) {
      await assertConverged(t, target, u);
      await assertSameStore(t, target, u);
    }
  });

  test.serial(`${target.name}: an uncompressed session (--no-compress) converges`, async (t) => {
    t.timeout(6 * 60_000);
    const { peer, work } = t.context;
    const user = target === REFERENCE ? 'dave' : 'erin';
    await peer.populate(user, 30);
    const tap = path.join(work, `${target.name.replace(/\W+/g, '-')}-${user}-plain.tap`);
    const r = await peer.sync(user, target.spec(t), { noCompress: true, tap });
    assertSynced(t, r, `uncompressed sync of ${user}`);
    const s = await tapSummary(t, tap);
    t.notRegex(s, /^\s+COMPRESS\s/m, `the session ran uncompressed\n${s}`);
    t.regex(s, /^\s+APPLY MESSAGE\s+\d+$/m, `messages were uploaded\n${s}`);
    await assertConverged(t, target, user, true);
    await assertSameStore(t, target, user);
  });
}

// ------------------------------------------------------ session-level checks

interface Wire {
  name: string;
  port(t: ExecutionContext<Ctx>): number;
  /** cyrsync only: the directory tree that holds everything it stores. */
  dataDir?: (t: ExecutionContext<Ctx>) => string;
}

const WIRES: Wire[] = [
  { name: 'reference sync_server', port: (t) => t.context.peer.replicaPort },
  { name: 'cyrsync', port: (t) => server(t).port, dataDir: (t) => server(t).dir },
];

/** Internal names of the mailboxes the target reports for USER in GET USER. */
async function mailboxNames(c: CsyncClient, user: string): Promise<string[]> {
  const r = await c.command(`GET USER ${user}`);
  return r.data.flatMap((l) => {
    const m = /^\* MAILBOX %\(.*?MBOXNAME (\S+)/.exec(l);
    return m ? [m[1]!] : [];
  });
}

/** GUIDs from `* MISSING (...)` of an APPLY RESERVE for them. */
async function missing(c: CsyncClient, mailbox: string, guids: string[]): Promise<{ missing: string[]; status: string | null }> {
  const r = await c.command(`APPLY RESERVE %(PARTITION default MBOXNAME (${mailbox}) GUID (${guids.join(' ')}))`);
  const line = r.data.find((l) => l.startsWith('* MISSING'));
  const list = line ? (/\(([^)]*)\)/.exec(line)?.[1] ?? '').split(' ').filter(Boolean) : [];
  return { missing: list, status: r.status };
}

for (const w of WIRES) {
  test.serial(`${w.name}: commands before authentication are refused`, async (t) => {
    t.timeout(2 * 60_000);
    const c = await CsyncClient.connect(w.port(t));
    try {
      const banner = await c.readBanner();
      t.regex(banner.at(-1)!, /^\* OK /, 'greeting ends with * OK');
      t.true(banner.some((l) => /^\* SASL .*PLAIN/.test(l)), `PLAIN is offered: ${JSON.stringify(banner)}`);
      t.is((await c.command('GET USER bob')).status, 'NO Please authenticate first');
      t.is((await c.command('APPLY UNUSER bob')).status, 'NO Please authenticate first');
      t.is((await c.command('GET MAILBOXES (user.bob)')).status, 'NO Please authenticate first');
      t.regex((await c.command('NOOP')).status ?? '', /^OK /, 'NOOP works before login');
    } finally {
      await c.close();
    }
    // Nothing was removed: bob is still there for the administrator.
    const a = await adminSession(w.port(t));
    try {
      t.true((await mailboxNames(a, 'bob')).includes('user.bob'), 'APPLY UNUSER before login changed nothing');
    } finally {
      await a.close();
    }
  });

  test.serial(`${w.name}: a wrong password is refused and leaves the session unauthenticated`, async (t) => {
    t.timeout(2 * 60_000);
    const c = await CsyncClient.connect(w.port(t));
    try {
      await c.readBanner();
      const st = await c.authPlain(ADMIN, 'not-the-password');
      t.regex(st ?? '(closed)', /^NO /, 'wrong password => NO');
      if (!c.isClosed) {
        const r = await c.command('GET USER bob');
        if (r.status !== null) t.is(r.status, 'NO Please authenticate first');
      }
    } finally {
      await c.close();
    }
    const c2 = await CsyncClient.connect(w.port(t));
    try {
      await c2.readBanner();
      t.regex((await c2.authPlain('nosuchuser', ADMIN_PASSWORD)) ?? '(closed)', /^NO /, 'unknown user => NO');
    } finally {
      await c2.close();
    }
  });

  test.serial(`${w.name}: a non-administrator logs in but every command is denied`, async (t) => {
    t.timeout(2 * 60_000);
    const c = await CsyncClient.connect(w.port(t));
    try {
      await c.readBanner();
      t.regex((await c.authPlain('bob', USER_PASSWORD)) ?? '(closed)', /^OK /, 'bob authenticates');
      t.is((await c.command('GET USER bob')).status, 'NO Permission denied');
      t.is((await c.command('APPLY UNUSER bob')).status, 'NO Permission denied');
      t.is((await c.command('GET MAILBOXES (user.bob)')).status, 'NO Permission denied');
    } finally {
      await c.close();
    }
    const a = await adminSession(w.port(t));
    try {
      t.true((await mailboxNames(a, 'bob')).includes('user.bob'), 'the denied APPLY UNUSER changed nothing');
    } finally {
      await a.close();
    }
  });

  test.serial(`${w.name}: an unknown mailbox is reported as nonexistent`, async (t) => {
    t.timeout(2 * 60_000);
    const c = await adminSession(w.port(t));
    try {
      t.is((await c.command('GET FULLMAILBOX user.nosuchuser')).status, 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox');
      t.is((await c.command('GET FULLMAILBOX user.bob.NoSuchFolder')).status, 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox');
      const u = await c.command('GET USER nosuchuser');
      t.is(u.status, 'OK success', 'GET USER of an unknown user is an empty success');
      t.deepEqual(u.data, [], 'and lists nothing');
      const e = await c.command('APPLY EXPUNGE %(MBOXNAME user.bob.NoSuchFolder UNIQUEID 0000 UID (1))');
      t.regex(e.status ?? '', /^NO IMAP_MAILBOX_NONEXISTENT /, 'EXPUNGE in an unknown mailbox');
    } finally {
      await c.close();
    }
  });

  // A correct upload + APPLY MAILBOX through this client is accepted: the
  // refusals below are about the inputs, not about the client.
  test.serial(`${w.name}: control: a well-formed upload and new mailbox are stored`, async (t) => {
    t.timeout(2 * 60_000);
    const user = w.dataDir ? 'frank' : 'gina';
    const body = message(`control-${user}-${randomUUID()}`, 3000);
    const guid = sha1(body);
    const c = await adminSession(w.port(t));
    try {
      t.is((await c.command(Buffer.concat([Buffer.from('APPLY MESSAGE ('), fileLiteral(body), Buffer.from(')\r\n')]))).status, 'OK success');
      const uid = randomUUID();
      const st = (await c.command(applyMailbox(`user.${user}`, uid, [{ uid: 1, guid, size: body.length }], user))).status;
      t.is(st, 'OK success', 'APPLY MAILBOX of a new INBOX with one staged message');
      t.deepEqual(await mailboxNames(c, user), [`user.${user}`]);
      const full = await c.command(`GET FULLMAILBOX user.${user}`);
      t.is(full.status, 'OK success');
      t.true(full.data.some((l) => l.includes(`GUID ${guid}`)), 'the record is reported with its GUID');
    } finally {
      await c.close();
    }
    if (w.dataDir) {
      const dump = await server(t).dump(user);
      t.is(dump.code, 0, describe(dump));
      t.regex(dump.stdout, new RegExp(`^msg INBOX uid=1 .*sha1=${guid}`, 'm'), 'cyrsync dump lists the message');
    }
  });

  test.serial(`${w.name}: bad mailbox names are refused and create nothing`, async (t) => {
    t.timeout(2 * 60_000);
    const c = await adminSession(w.port(t));
    const owner = w.dataDir ? 'frank' : 'gina';
    const bad: Array<[string, string]> = [
      ['double dot', `user.${owner}..x`],
      ['slash', `user.${owner}.a/b`],
      ['path escape', `user.${owner}/../../../../tmp/escape`],
      ['too long', `user.${owner}.${'x'.repeat(600)}`],
    ];
    // Cyrus 3.6.1 sync_server dies on this one (assertion in mailbox.c after
    // "mailbox uniqueid changed"); cyrsync must answer NO and carry on.
    if (w.dataDir) bad.push(['leading dot', `.user.${owner}`]);
    try {
      const beforeNames = await mailboxNames(c, owner);
      t.true(beforeNames.includes(`user.${owner}`), `the control mailbox exists: ${beforeNames.join(' ')}`);
      for (const [what, name] of bad) {
        const r = await c.command(applyMailbox(name, randomUUID(), [], owner));
        t.regex(r.status ?? '(closed)', /^NO /, `${what}: APPLY MAILBOX ${name.slice(0, 60)} => NO`);
      }
      // NUL inside a name can only travel in a literal.
      const nul = `user.${owner}.a\0b`;
      const lit = Buffer.concat([
        Buffer.from(`APPLY MAILBOX %(UNIQUEID ${randomUUID()} MBOXNAME {${Buffer.byteLength(nul)}+}\r\n`),
        Buffer.from(nul),
        Buffer.from(applyMailbox('X', 'U', [], owner).replace(/^APPLY MAILBOX %\(UNIQUEID U MBOXNAME X/, '') + '\r\n'),
      ]);
      const r = await c.command(lit);
      t.regex(r.status ?? '(closed)', /^(NO|BAD) /, 'NUL in a mailbox name => NO/BAD');
      t.regex((await c.command('NOOP')).status ?? '(closed)', /^OK /, 'the session goes on');
      t.deepEqual(await mailboxNames(c, owner), beforeNames, 'no mailbox was created');
    } finally {
      await c.close();
    }
    if (w.dataDir) {
      const escaped = (await fsp.readdir('/tmp')).filter((n) => n === 'escape');
      t.deepEqual(escaped, [], 'nothing was written outside the data directory');
      const dump = await server(t).dump(owner);
      t.is(dump.code, 0, describe(dump));
      t.deepEqual(
        dump.stdout.split('\n').filter((l) => l.startsWith('mailbox ')).map((l) => l.split(' ')[1]),
        ['INBOX'],
        'cyrsync dump still lists only the INBOX',
      );
    }
  });

  test.serial(`${w.name}: values over the size limits are refused, literals at the header`, async (t) => {
    t.timeout(2 * 60_000);
    const before = w.dataDir ? (await listFiles(w.dataDir(t))).length : 0;
    const guid = sha1(`never sent ${randomUUID()}`);
    // Each literal header announces more than the protocol allows (file
    // literal: u32; literal: 2^31-1): the reply must come with no body byte
    // sent. Cyrus answers `* Fatal error: num too big` and closes. Atoms and
    // quoted strings over maxword / maxquoted (default 131072) end the same
    // way (`* Fatal error: [TOOBIG] ...`).
    const long = `user.bob.${'x'.repeat(200_000)}`;
    const oversized = [
      ['file literal of 2^32 octets', `APPLY MESSAGE (%{default ${guid} 4294967296}\r\n`],
      ['literal of 2^31 octets', 'APPLY SIEVE %(USERID bob FILENAME big.script LAST_UPDATE 1767225600 CONTENT {2147483648+}\r\n'],
      ['atom over maxword', `APPLY SUB %(USERID bob MBOXNAME ${long})\r\n`],
      ['quoted string over maxquoted', `APPLY SUB %(USERID bob MBOXNAME "${long}")\r\n`],
    ] as const;
    for (const [what, header] of oversized) {
      const c = await adminSession(w.port(t));
      try {
        await c.write(header);
        const r = await c.reply();
        const said = [...r.data, r.status ?? '(closed)'].join('\n');
        t.regex(said, /^(NO|BAD|\* Fatal error|\* BYE|BYE)/m, `${what}: refused before its bytes: ${said}`);
      } finally {
        c.destroy();
      }
    }
    const a = await adminSession(w.port(t));
    try {
      t.deepEqual((await missing(a, 'user.bob', [guid])).missing, [guid], 'nothing stored under that GUID');
      const user = (await a.command('GET USER bob')).data;
      t.deepEqual(user.filter((l) => l.includes('big.script')), [], 'no sieve script was stored');
      t.deepEqual(user.filter((l) => l.includes('xxxxxxxxxx')), [], 'no subscription was stored');
    } finally {
      await a.close();
    }
    if (w.dataDir) {
      const dir = w.dataDir(t);
      t.true(server(t).running, 'the server survives');
      t.true(await waitFor(async () => (await listFiles(dir)).length <= before, 10_000), 'no file was left behind');
    }
  });

  test.serial(`${w.name}: bad user names are refused and write nothing`, async (t) => {
    t.timeout(2 * 60_000);
    const c = await adminSession(w.port(t));
    try {
      // APPLY SIEVE stores a file per user on Cyrus: the classic path escape.
      for (const u of ['../x', 'a/b', '..', 'a\0b']) {
        const r = await c.command(`APPLY SIEVE %(USERID {${u.length}+}\r\n${u} FILENAME a.script LAST_UPDATE 0 CONTENT "keep;")`);
        t.regex(r.status ?? '(closed)', /^NO /, `APPLY SIEVE for user ${JSON.stringify(u)} => NO`);
      }
      t.regex((await c.command('NOOP')).status ?? '(closed)', /^OK /, 'the session goes on');
    } finally {
      await c.close();
    }
    const escaped = (await fsp.readdir('/tmp')).filter((n) => n === 'x' || n === 'a.script');
    t.deepEqual(escaped, [], 'nothing was written next to the data directories');
    if (w.dataDir) {
      const files = await listFiles(w.dataDir(t));
      t.deepEqual(files.filter((f) => /a\.script|\/x(\.|$)/.test(f)), [], 'no script file for the bad users');
    }
  });

  // The cases below assert cyrsync's own guarantees about its store (the
  // files it leaves on disk), so they run against cyrsync only.
  const dataDir = w.dataDir;
  if (!dataDir) continue;

  test.serial(`${w.name}: a file literal whose bytes do not match its GUID is refused and not stored`, async (t) => {
    t.timeout(2 * 60_000);
    const body = message(`badguid-${randomUUID()}`, 5000);
    const claimed = sha1(Buffer.concat([body, Buffer.from('x')]));
    const real = sha1(body);
    const c = await adminSession(w.port(t));
    try {
      const r = await c.command(Buffer.concat([Buffer.from('APPLY MESSAGE ('), fileLiteral(body, claimed), Buffer.from(')\r\n')]));
      t.regex(r.status ?? '(closed)', /^NO /, 'upload with a wrong GUID => NO');
      // The session stays usable: exactly the literal's bytes were consumed.
      t.regex((await c.command('NOOP')).status ?? '(closed)', /^OK /, 'the stream stayed in sync');
      const m = await missing(c, 'user.bob', [claimed, real]);
      t.is(m.status, 'OK success');
      t.deepEqual(m.missing.sort(), [claimed, real].sort(), 'neither the claimed nor the real GUID is available');
    } finally {
      await c.close();
    }
    const dir = dataDir(t);
    t.deepEqual(await filesStartingWith(dir, body), [], 'no file holds the refused bytes');
    t.deepEqual([...(await filesNamed(dir, claimed)), ...(await filesNamed(dir, real))], [], 'no file is named after either GUID');
  });

  test.serial(`${w.name}: a client that disconnects mid-literal leaves nothing behind`, async (t) => {
    t.timeout(2 * 60_000);
    const dir = dataDir(t);
    const body = message(`cut-${randomUUID()}`, 200_000);
    const guid = sha1(body);
    const before = await listFiles(dir);
    const c = await adminSession(w.port(t));
    t.teardown(() => c.destroy());
    await c.write(Buffer.concat([Buffer.from('APPLY MESSAGE ('), fileLiteral(body).subarray(0, 120_000)]));
    // The server has started on the body: wait until a staging file shows up
    // or a little time has passed, then cut the connection.
    await waitFor(async () => (await filesStartingWith(dir, body.subarray(0, 4096))).length > 0, 5000, 100);
    c.destroy();
    const clean = await waitFor(async () => (await filesStartingWith(dir, body.subarray(0, 4096))).length === 0, 15_000, 200);
    t.true(clean, `the partial body was removed: ${(await filesStartingWith(dir, body.subarray(0, 4096))).join(' ')}`);
    t.true(server(t).running, 'the server survives');
    const after = await listFiles(dir);
    t.deepEqual(after.filter((f) => !before.includes(f) && !/\.(db|sqlite\d?)(-wal|-shm|-journal)?$|\.log$/.test(f)), [], 'no new file besides the index');
    const a = await adminSession(w.port(t));
    try {
      t.deepEqual((await missing(a, 'user.bob', [guid])).missing, [guid], 'no record of the cut upload');
    } finally {
      await a.close();
    }
  });
}
