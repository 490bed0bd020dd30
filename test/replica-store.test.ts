import test, { type ExecutionContext } from 'ava';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { DlistItem, DlistKvList, DlistValue } from '../transforms/dlist-types.js';
import type { ApplyCommand, GetCommand, MailboxIn } from '../src/protocol/types.js';
import { mailboxCrcs } from '../src/protocol/crc.js';
import {
  mailboxIn,
  message,
  openSession,
  recordIn,
  runCommand,
  sha1,
  stage,
  tempStore,
  type TempStore,
} from './replica-helpers.js';
import { routeCommand } from './helpers/replay.js';
import type { ReplicaSession } from '../sinks/replica/session.js';
import { storeTeardown } from './helpers/teardown.js';
import { applyMailbox } from '../sinks/replica/mailbox-apply.js';

const ACL = 'bob\tlrswipkxtecdan\t';

function field(v: DlistValue | undefined, key: string): DlistValue | undefined {
  if (!v || v.kind !== 'kvlist') return undefined;
  return v.items.find((i) => i.key === key)?.value;
}
function scalar(v: DlistValue | undefined): string | number | bigint | null | undefined {
  if (!v) return undefined;
  if (v.kind === 'num') return v.value;
  if (v.kind === 'string') return v.value === null ? null : Buffer.isBuffer(v.value) ? v.value.toString('latin1') : v.value;
  if (v.kind === 'atom' || v.kind === 'flag' || v.kind === 'quoted') return v.value;
  if (v.kind === 'nil') return null;
  return undefined;
}
const get = (it: DlistItem | undefined, key: string) => scalar(field(it?.value, key));
const keys = (it: DlistItem | undefined) => (it?.value as DlistKvList).items.map((i) => i.key);

/** Polls a condition that an asynchronous cleanup makes true (not a timing assertion: the bound is generous). */
async function eventually(cond: () => boolean, limitMs = 10_000): Promise<boolean> {
  const end = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setImmediate(r));
  }
  return true;
}

const apply = (s: ReplicaSession, cmd: ApplyCommand) => runCommand(s, cmd);
const mbox = (s: ReplicaSession, m: MailboxIn) => apply(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: m });
const getc = (s: ReplicaSession, cmd: GetCommand) => runCommand(s, cmd);

async function withStore(t: ExecutionContext, fn: (st: TempStore, s: ReplicaSession) => Promise<void>): Promise<void> {
  const st = await tempStore();
  storeTeardown(t, st.sink, st.dir);
  const s = openSession(st.sink);
  try {
    await fn(st, s);
  } finally {
    await st.sink.close();
  }
}

/** Builds an INBOX with three messages; returns their bodies and the CRCs the master would send. */
async function seedInbox(s: ReplicaSession) {
  const bodies = [message(1), message(2), message(3)];
  const files = await stage(s, bodies);
  const r1 = await apply(s, { verb: 'APPLY', sub: 'MESSAGE', files });
  const records = [
    recordIn(1, bodies[0]!, { flags: ['\\Seen', '$Label'] }),
    recordIn(2, bodies[1]!, {
      flags: ['\\Flagged'],
      annotations: [
        { entry: '/vendor/cmu/cyrus-imapd/thrid', userid: '', modseq: 0n, value: { kind: 'buffer', value: Buffer.from('00000000000a1b2c') } },
        { entry: '/vendor/cmu/cyrus-imapd/savedate', userid: '', modseq: 0n, value: { kind: 'buffer', value: Buffer.from('1700000500') } },
        { entry: '/comment', userid: 'bob', modseq: 5n, value: { kind: 'buffer', value: Buffer.from('note') } },
      ],
    }),
    recordIn(3, bodies[2]!, { flags: ['\\Deleted', '\\Expunged'] }),
  ];
  const crcs = mailboxCrcs([
    { uid: 1, modseq: 2n, lastUpdated: 1700000101, internaldate: 1700000001, guid: sha1(bodies[0]!), systemFlags: 16, userFlags: ['$Label'], expunged: false, annotations: [], thrid: 0n, savedate: 0, createdmodseq: 0n },
    { uid: 2, modseq: 3n, lastUpdated: 1700000102, internaldate: 1700000002, guid: sha1(bodies[1]!), systemFlags: 4, userFlags: [], expunged: false, annotations: [{ entry: '/comment', userid: 'bob', value: Buffer.from('note') }], thrid: 0xa1b2cn, savedate: 1700000500, createdmodseq: 0n },
  ]);
  const m = mailboxIn({
    uniqueid: 'inbox-uid',
    mboxname: 'user.bob',
    highestmodseq: 4n,
    lastUid: 3,
    recentUid: 3,
    syncCrc: crcs.basic,
    syncCrcAnnot: crcs.annot,
    annotations: [{ entry: '/comment', userid: '', modseq: 2n, value: { kind: 'buffer', value: Buffer.from('shared note') } }],
    records,
  });
  const r2 = await mbox(s, m);
  return { bodies, files, m, crcs, r1, r2 };
}

test('MESSAGE then MAILBOX: blobs by GUID, reports echo what was applied, FETCH streams the blob', async (t) => {
  await withStore(t, async (st, s) => {
    const { bodies, m, crcs, r1, r2 } = await seedInbox(s);
    t.is(r1.status, 'OK success');
    t.is(r2.status, 'OK success');
    for (const b of bodies) {
      const g = sha1(b);
      const p = path.join(st.partitions.default!, 'blobs', g.slice(0, 2), g);
      t.deepEqual(readFileSync(p), b);
    }
    t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), []);

    const mbs = await getc(s, { verb: 'GET', sub: 'MAILBOXES', names: ['user.bob', 'user.nobody'] });
    t.is(mbs.status, 'OK success');
    t.is(mbs.items.length, 1);
    const rep = mbs.items[0];
    t.deepEqual(keys(rep), [
      'UNIQUEID', 'MBOXNAME', 'SYNC_CRC', 'SYNC_CRC_ANNOT', 'LAST_UID', 'HIGHESTMODSEQ', 'RECENTUID', 'RECENTTIME',
      'LAST_APPENDDATE', 'POP3_LAST_LOGIN', 'POP3_SHOW_AFTER', 'UIDVALIDITY', 'PARTITION', 'ACL', 'OPTIONS',
      'CREATEDMODSEQ', 'FOLDERMODSEQ', 'ANNOTATIONS',
    ]);
    t.is(get(rep, 'SYNC_CRC'), crcs.basic);
    t.is(get(rep, 'SYNC_CRC_ANNOT'), crcs.annot);
    t.is(get(rep, 'ACL'), ACL);
    t.is(get(rep, 'HIGHESTMODSEQ'), 4n);
    t.is(get(rep, 'FOLDERMODSEQ'), 1n);

    const full = await getc(s, { verb: 'GET', sub: 'FULLMAILBOX', mboxname: 'user.bob' });
    t.is(full.status, 'OK success');
    const wire = full.reply.toString('latin1');
    t.regex(wire, /RECORD \(%\(UID 1 MODSEQ 2 LAST_UPDATED 1700000101 FLAGS \(\\Seen \$Label\) INTERNALDATE 1700000001 SIZE \d+ GUID [0-9a-f]{40}\)/);
    t.regex(wire, /%\(UID 3 MODSEQ 4 LAST_UPDATED 1700000103 FLAGS \(\\Deleted \\Expunged\)/);
    t.true(wire.includes('%(ENTRY /vendor/cmu/cyrus-imapd/thrid USERID "" MODSEQ 0 VALUE 00000000000a1b2c)'));
    t.true(wire.includes('%(ENTRY /comment USERID bob MODSEQ 5 VALUE note)'));

    const fetch = await getc(s, {
      verb: 'GET', sub: 'FETCH', mboxname: 'user.bob', partition: 'default', uniqueid: 'inbox-uid', guid: sha1(bodies[1]!), uid: 2,
    });
    t.is(fetch.status, 'OK success');
    t.true(fetch.reply.includes(Buffer.concat([Buffer.from(`* MESSAGE %{default ${sha1(bodies[1]!)} ${bodies[1]!.length}}\r\n`), bodies[1]!])));
    const wrongUid = await getc(s, {
      verb: 'GET', sub: 'FETCH', mboxname: 'user.bob', partition: 'default', uniqueid: 'inbox-uid', guid: sha1(bodies[1]!), uid: 1,
    });
    t.is(wrongUid.reply.toString(), '* MESSAGE NIL\r\nOK success\r\n', 'another GUID at that UID: NIL, as the real sync_server');
    for (const [uniqueid, partition, uid] of [['nope', 'default', 2], ['inbox-uid', 'other', 2], ['inbox-uid', 'default', 9]] as const) {
      const r = await getc(s, { verb: 'GET', sub: 'FETCH', mboxname: 'user.bob', partition, uniqueid, guid: sha1(bodies[1]!), uid });
      t.is(r.status, 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox', `${uniqueid} ${partition} ${uid}`);
    }
    const badGuid = await getc(s, {
      verb: 'GET', sub: 'FETCH', mboxname: 'user.bob', partition: 'default', uniqueid: 'inbox-uid', guid: '../../etc', uid: 1,
    });
    t.is(badGuid.status, 'NO IMAP_PROTOCOL_BAD_PARAMETERS');

    // Replaying the identical APPLY is accepted and changes nothing.
    const before = st.sink.store.mailboxByName('user.bob');
    t.is((await mbox(s, m)).status, 'OK success');
    t.deepEqual(st.sink.store.mailboxByName('user.bob'), before);
    t.deepEqual(st.sink.store.recomputeCrcs('user.bob'), crcs);
  });
});

test('RESERVE: MISSING only for unknown GUIDs, omitted when nothing is missing', async (t) => {
  await withStore(t, async (st, s) => {
    const { bodies } = await seedInbox(s);
    const unknown = 'ab'.repeat(20);
    const r = await apply(s, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: ['user.bob'], guids: [sha1(bodies[0]!), unknown] });
    t.is(r.reply.toString(), `* MISSING (${unknown})\r\nOK success\r\n`);
    const r2 = await apply(s, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: ['user.bob'], guids: [sha1(bodies[0]!)] });
    t.is(r2.reply.toString(), 'OK success\r\n');
    const bad = await apply(s, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: ['user.bob'], guids: ['xyz'] });
    t.is(bad.status, 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
    // a blob file lost from the disk is asked for again (a new session: staging is per connection)
    const g = sha1(bodies[1]!);
    const { unlinkSync } = await import('node:fs');
    unlinkSync(path.join(st.partitions.default!, 'blobs', g.slice(0, 2), g));
    const s2 = openSession(st.sink);
    const r3 = await apply(s2, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: ['user.bob'], guids: [g] });
    t.is(r3.reply.toString(), `* MISSING (${g})\r\nOK success\r\n`);
    t.is((await apply(s2, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s2, [bodies[1]!]) })).status, 'OK success');
    t.true(existsSync(path.join(st.partitions.default!, 'blobs', g.slice(0, 2), g)));
  });
});

test('a file literal whose bytes do not hash to its GUID is never stored; MAILBOX needing it is refused', async (t) => {
  await withStore(t, async (st, s) => {
    const body = message(9);
    const fake = '1234567890'.repeat(4);
    const files = await stage(s, [body], { guids: [fake] });
    t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), [], 'mismatched staging file removed at once');
    const r = await apply(s, { verb: 'APPLY', sub: 'MESSAGE', files });
    t.is(r.status, 'NO Unknown error');
    t.false(existsSync(path.join(st.partitions.default!, 'blobs', fake.slice(0, 2))));
    t.false(existsSync(path.join(st.partitions.default!, 'blobs', sha1(body).slice(0, 2))));
    t.false(s.isAvailable(fake));
    const res = await apply(s, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: [], guids: [fake] });
    t.is(res.reply.toString(), `* MISSING (${fake})\r\nOK success\r\n`);
    const m = mailboxIn({ uniqueid: 'u1', mboxname: 'user.bob', highestmodseq: 2n, lastUid: 1, records: [recordIn(1, body, { guid: fake })] });
    const r2 = await mbox(s, m);
    t.is(r2.status, 'NO Unknown error');
    t.is(st.sink.store.mailboxByName('user.bob'), null, 'nothing half-created');
  });
});

test('a mismatched file in a batch: the good ones are stored, the command is refused (or accepted when configured)', async (t) => {
  for (const accept of [false, true]) {
    const st = await tempStore({ acceptMismatchedUploads: accept });
    storeTeardown(t, st.sink, st.dir);
    const s = openSession(st.sink);
    try {
      const good = [message(41), message(42)];
      const bad = message(43);
      const files = [
        ...(await stage(s, [good[0]!])),
        ...(await stage(s, [bad], { guids: ['ab'.repeat(20)] })),
        ...(await stage(s, [good[1]!])),
      ];
      const r = await apply(s, { verb: 'APPLY', sub: 'MESSAGE', files });
      t.is(r.status, accept ? 'OK success' : 'NO Unknown error');
      for (const g of good) t.true(s.isAvailable(sha1(g)));
      t.false(s.isAvailable('ab'.repeat(20)));
      const res = await apply(s, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: [], guids: [...good.map(sha1), 'ab'.repeat(20)] });
      t.is(res.reply.toString(), `* MISSING (${'ab'.repeat(20)})\r\nOK success\r\n`);
      t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), []);
    } finally {
      await st.sink.close();
    }
  }
});

test('abort in the middle of a literal removes the staging file and stores nothing', async (t) => {
  await withStore(t, async (st, s) => {
    const body = message(5, 'x'.repeat(5000));
    const w = s.bodySink.open({ kind: 'file', partition: 'default', guid: sha1(body), size: body.length })!;
    w.write(body.subarray(0, 1000));
    t.is(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')).length, 1);
    w.abort(new Error('connection lost'));
    t.true(await eventually(() => readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')).length === 0), 'staging file removed');
    t.false(existsSync(path.join(st.partitions.default!, 'blobs', sha1(body).slice(0, 2))));
    // a second literal that arrived whole but whose command never ran is dropped at session end
    await stage(s, [message(6)]);
    t.is(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')).length, 1);
    await s.end();
    t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), []);
  });
});

test('ENOSPC while staging: clear NO, no staging file, store unchanged and usable', async (t) => {
  const fs = await import('node:fs');
  let fail = false;
  const st = await tempStore({
    fs: {
      openSync: (p, f, m) => fs.openSync(p, f, m),
      write: (fd, buf, cb) => {
        if (fail) {
          const e = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }) as NodeJS.ErrnoException;
          setImmediate(() => cb(e, 0));
          return;
        }
        fs.write(fd, buf, 0, buf.length, null, (err, n) => cb(err, n));
      },
      fsync: (fd, cb) => fs.fsync(fd, cb),
      close: (fd, cb) => fs.close(fd, cb),
      rename: (a, b) => fs.promises.rename(a, b),
      unlink: (p) => fs.promises.unlink(p),
    },
  });
  storeTeardown(t, st.sink, st.dir);
  const s = openSession(st.sink);
  try {
    const { m } = await seedInbox(s);
    fail = true;
    const body = message(4);
    const w = s.bodySink.open({ kind: 'file', partition: 'default', guid: sha1(body), size: body.length })!;
    let ok = true;
    for (let off = 0; off < body.length; off += 16) {
      if (!w.write(body.subarray(off, off + 16))) await new Promise<void>((r) => w.onDrain(r));
    }
    const staged = w.end(sha1(body));
    const err = await t.throwsAsync(staged.done);
    t.is((err as { code?: string }).code, 'IMAP_NOSPACE');
    t.regex(err!.message, /No space left/);
    // the router refuses the command when a body failed
    const files = [{ kind: 'file' as const, partition: 'default', guid: sha1(body), size: body.length, sha1: sha1(body), body: staged }];
    const { status } = await routeCommand('sync', s, { verb: 'APPLY', sub: 'MESSAGE', files }, [staged]);
    t.regex(status, /^NO IMAP_NOSPACE No space left on the replica disk while /);
    t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), []);
    ok = existsSync(path.join(st.partitions.default!, 'blobs', sha1(body).slice(0, 2), sha1(body)));
    t.false(ok);
    fail = false;
    t.is((await mbox(s, m)).status, 'OK success', 'store still usable');
  } finally {
    await st.sink.close();
  }
});

test('bad names never reach the disk', async (t) => {
  await withStore(t, async (st, s) => {
    const before = readdirSync(st.dir).sort();
    for (const name of ['user..bob', '../../etc/passwd', 'user.bob/../../x', 'user.b\x00ob', `user.${'a'.repeat(600)}`, '']) {
      const r = await mbox(s, mailboxIn({ uniqueid: `u-${name.length}`, mboxname: name }));
      t.true(r.status === 'NO Unknown error' || r.status === 'NO IMAP_PROTOCOL_BAD_PARAMETERS', `${JSON.stringify(name.slice(0, 30))}: ${r.status}`);
      t.is(st.sink.store.mailboxByName(name), null);
    }
    const bad = await apply(s, { verb: 'APPLY', sub: 'SUB', userid: '../bob', mboxname: 'user.bob' });
    t.is(bad.status, 'NO Unknown error');
    const sieve = await apply(s, {
      verb: 'APPLY', sub: 'SIEVE', userid: 'bob', filename: '../../evil.script', lastUpdate: 1, content: { kind: 'buffer', value: Buffer.from('keep;') },
    });
    t.is(sieve.status, 'NO Unknown error');
    const part = await mbox(s, mailboxIn({ uniqueid: 'p1', mboxname: 'user.bob', partition: '../../tmp' }));
    t.is(part.status, 'NO Unknown error');
    t.deepEqual(readdirSync(st.dir).sort(), before);
    t.false(existsSync(path.join(st.dir, '..', 'evil.script')));
  });
});

test('APPLY MAILBOX conflicts: MOVED, SINCE (no trace), regressions, record conflicts, post-commit CHECKSUM', async (t) => {
  await withStore(t, async (st, s) => {
    const { m, bodies } = await seedInbox(s);
    // uniqueid used by another name
    t.is((await mbox(s, mailboxIn({ uniqueid: 'inbox-uid', mboxname: 'user.bob.Other' }))).status,
      'NO IMAP_MAILBOX_MOVED Mailbox exists with another name or uniqueid');
    // name used by another uniqueid (last_uid > 0)
    t.is((await mbox(s, { ...m, uniqueid: 'other-uid' })).status, 'NO IMAP_MAILBOX_MOVED Mailbox exists with another name or uniqueid');
    // a just-created mailbox with SINCE_MODSEQ fails and leaves nothing
    t.is((await mbox(s, mailboxIn({ uniqueid: 'new-1', mboxname: 'user.bob.New', sinceModseq: 5n }))).status,
      'NO IMAP_SYNC_CHANGED Changed since last sync');
    t.is(st.sink.store.mailboxByName('user.bob.New'), null);
    // stale SINCE state
    t.is((await mbox(s, { ...m, sinceModseq: 3n })).status, 'NO IMAP_SYNC_CHANGED Changed since last sync');
    t.is((await mbox(s, { ...m, sinceModseq: 4n, sinceCrc: 1 })).status, 'NO IMAP_SYNC_CHANGED Changed since last sync');
    t.is((await mbox(s, { ...m, sinceModseq: 4n, sinceCrc: 0, sinceCrcAnnot: 0 })).status, 'OK success');
    // regressions
    t.is((await mbox(s, { ...m, highestmodseq: 3n })).status, 'NO IMAP_SYNC_CHECKSUM Checksum Failure');
    t.is((await mbox(s, { ...m, lastUid: 2, records: [] })).status, 'NO IMAP_SYNC_CHECKSUM Checksum Failure');
    t.is((await mbox(s, { ...m, uidvalidity: 5 })).status, 'NO IMAP_SYNC_CHECKSUM Checksum Failure');
    // same UID, other GUID
    t.is((await mbox(s, { ...m, records: [recordIn(1, bodies[1]!)] , syncCrc: 0, syncCrcAnnot: 0})).status, 'NO IMAP_SYNC_CHECKSUM Checksum Failure');
    // replica expunged, master not
    t.is((await mbox(s, { ...m, records: [recordIn(3, bodies[2]!)], syncCrc: 0, syncCrcAnnot: 0 })).status, 'NO IMAP_SYNC_CHECKSUM Checksum Failure');
    // older modseq than stored
    t.is((await mbox(s, { ...m, records: [recordIn(2, bodies[1]!, { modseq: 1n })], syncCrc: 0, syncCrcAnnot: 0 })).status, 'NO IMAP_SYNC_CHECKSUM Checksum Failure');
    // UIDs not ascending / beyond LAST_UID
    t.is((await mbox(s, { ...m, records: [recordIn(2, bodies[1]!), recordIn(1, bodies[0]!)] })).status, 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
    t.is((await mbox(s, { ...m, records: [recordIn(9, bodies[1]!)] })).status, 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
    // a user flag that is not an atom
    t.is((await mbox(s, { ...m, records: [recordIn(1, bodies[0]!, { flags: ['bad flag'] })] })).status, 'NO IMAP_PROTOCOL_ERROR Protocol error');
    // nothing above changed the mailbox
    t.deepEqual(st.sink.store.recomputeCrcs('user.bob'), { basic: m.syncCrc, annot: m.syncCrcAnnot });
    // post-commit CHECKSUM: the commit stands
    const upd = { ...m, highestmodseq: 10n, records: [recordIn(1, bodies[0]!, { modseq: 10n, flags: [] })], syncCrc: 12345, syncCrcAnnot: 0 };
    t.is((await mbox(s, upd)).status, 'NO IMAP_SYNC_CHECKSUM Checksum Failure');
    t.is(st.sink.store.mailboxByName('user.bob')!.highestmodseq, 10n);
    const mb = st.sink.store.mailboxByName('user.bob')!;
    t.deepEqual(st.sink.store.recomputeCrcs('user.bob'), { basic: mb.crcBasic, annot: (mb.crcAnnot ^ 12345678) >>> 0 });
    // FORCE lets an older record modseq through
    s.forceMode = true;
    t.is((await mbox(s, { ...upd, highestmodseq: 10n, records: [recordIn(1, bodies[0]!, { modseq: 9n })], syncCrc: 0 })).status, 'OK success');
  });
});

test('creation needs a live parent; records arriving expunged without a blob are kept without content', async (t) => {
  await withStore(t, async (st, s) => {
    t.is((await mbox(s, mailboxIn({ uniqueid: 'c1', mboxname: 'user.carol.Sent' }))).status, 'NO Unknown error');
    t.is((await mbox(s, mailboxIn({ uniqueid: 'c0', mboxname: 'user.carol' }))).status, 'OK success');
    const ghost = message(77);
    const r = await mbox(s, mailboxIn({
      uniqueid: 'c1', mboxname: 'user.carol.Sent', highestmodseq: 3n, lastUid: 1, records: [recordIn(1, ghost, { flags: ['\\Expunged'] })],
    }));
    t.is(r.status, 'OK success');
    const full = await getc(s, { verb: 'GET', sub: 'FULLMAILBOX', mboxname: 'user.carol.Sent' });
    t.regex(full.reply.toString(), /FLAGS \(\\Expunged\)/);
    const f = await getc(s, { verb: 'GET', sub: 'FETCH', mboxname: 'user.carol.Sent', partition: 'default', uniqueid: 'c1', guid: sha1(ghost), uid: 1 });
    t.is(f.status, 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox');
    // a DELETED-namespace copy needs no parent
    t.is((await mbox(s, mailboxIn({ uniqueid: 'd1', mboxname: 'DELETED.user.dave.Trash.6B02F957' }))).status, 'OK success');
    t.truthy(st.sink.store.mailboxByName('DELETED.user.dave.Trash.6B02F957'));
  });
});

test('placeholders, tombstones, UNMAILBOX, RENAME, EXPUNGE', async (t) => {
  await withStore(t, async (st, s) => {
    const { m, bodies } = await seedInbox(s);
    // placeholder stub
    t.is((await mbox(s, { uniqueid: 'ph1', mboxname: 'user.bob.A', mboxtype: 'ei', highestmodseq: 7n, createdmodseq: 6n })).status, 'OK success');
    t.is((await mbox(s, mailboxIn({ uniqueid: 'b1', mboxname: 'user.bob.A.B' }))).status, 'OK success');
    const user = await getc(s, { verb: 'GET', sub: 'USER', userid: 'bob' });
    const names = user.items.filter((i) => i.key === 'MAILBOX').map((i) => get(i, 'MBOXNAME'));
    t.deepEqual(names, ['user.bob', 'user.bob.A', 'user.bob.A.B']);
    const ph = user.items[1]!;
    t.true(user.reply.toString().includes(
      '* MAILBOX %(UNIQUEID ph1 MBOXNAME user.bob.A MBOXTYPE ei SYNC_CRC 0 LAST_UID 0 HIGHESTMODSEQ 0 RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 0 PARTITION NIL ACL "" OPTIONS "" CREATEDMODSEQ 6 FOLDERMODSEQ 7)',
    ), String(get(ph, 'MBOXNAME')));
    // UNMAILBOX of a mailbox with live children leaves a placeholder; without, a tombstone (never reported)
    t.is((await apply(s, { verb: 'APPLY', sub: 'UNMAILBOX', local: false, mboxname: 'user.bob.A.B' })).status, 'OK success');
    t.is(st.sink.store.mailboxByName('user.bob.A.B')!.state, 2);
    t.is((await apply(s, { verb: 'APPLY', sub: 'UNMAILBOX', local: false, mboxname: 'user.bob.A.B' })).status, 'OK success');
    t.is((await apply(s, { verb: 'APPLY', sub: 'UNMAILBOX', local: false, mboxname: 'user.bob.Nope' })).status,
      'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox');
    t.is((await getc(s, { verb: 'GET', sub: 'MAILBOXES', names: ['user.bob.A.B'] })).items.length, 0);
    // a re-created mailbox may reuse the tombstone's name
    t.is((await mbox(s, mailboxIn({ uniqueid: 'b2', mboxname: 'user.bob.A.B' }))).status, 'OK success');
    t.is((await mbox(s, mailboxIn({ uniqueid: 'c1', mboxname: 'user.bob.C' }))).status, 'OK success');
    // RENAME rules
    const ren = (o: string, n: string, p = 'default') => apply(s, { verb: 'APPLY', sub: 'RENAME', local: false, oldname: o, newname: n, partition: p, uidvalidity: null });
    t.is((await ren('user.bob.Missing', 'user.bob.X')).status, 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox');
    t.is((await ren('user.bob', 'user.bob.X')).status, 'NO IMAP_MAILBOX_NOTSUPPORTED Operation is not supported on mailbox');
    t.is((await ren('user.bob.C', 'user.bob.A.B')).status, 'NO Unknown error');
    t.is((await ren('user.bob.C', 'user.bob.C')).status, 'NO Unknown error');
    t.is((await ren('user.bob.C', 'user.bob.C', 'other')).status, 'OK success');
    t.is(st.sink.store.mailboxByName('user.bob.C')!.partition, 'other');
    t.is((await ren('user.bob.C', 'user.bob.D')).status, 'OK success');
    t.is(st.sink.store.mailboxByName('user.bob.C')!.state, 2);
    t.is(st.sink.store.mailboxByName('user.bob.D')!.uniqueid, 'c1');
    // EXPUNGE
    const ex = (u: string, uids: number[]) => apply(s, { verb: 'APPLY', sub: 'EXPUNGE', mboxname: 'user.bob', uniqueid: u, uids });
    t.is((await ex('wrong', [1])).status, 'NO IMAP_MAILBOX_MOVED Mailbox exists with another name or uniqueid');
    t.is((await ex('inbox-uid', [1, 99])).status, 'OK success');
    const mb = st.sink.store.mailboxByName('user.bob')!;
    t.is(mb.highestmodseq, 4n);
    t.deepEqual(st.sink.store.recomputeCrcs('user.bob'), { basic: mb.crcBasic, annot: (mb.crcAnnot ^ 12345678) >>> 0 });
    // the master's view after expunging UID 1 matches
    t.not(mb.crcBasic, m.syncCrc);
    t.truthy(bodies);
  });
});

test('QUOTA, SUB, SEEN, ANNOTATION, SIEVE, UNUSER and the META items', async (t) => {
  await withStore(t, async (st, s) => {
    await seedInbox(s);
    const ok = async (cmd: ApplyCommand) => t.is((await apply(s, cmd)).status, 'OK success', cmd.sub);
    await ok({ verb: 'APPLY', sub: 'QUOTA', quota: { root: 'user.bob', limits: { STORAGE: 1000 }, modseq: 7n } });
    t.is((await apply(s, { verb: 'APPLY', sub: 'QUOTA', quota: { root: '', limits: {}, modseq: null } })).status, 'NO Unknown error');
    await ok({ verb: 'APPLY', sub: 'SUB', userid: 'bob', mboxname: 'user.bob.Sent' });
    await ok({ verb: 'APPLY', sub: 'SUB', userid: 'bob', mboxname: 'user.bob' });
    await ok({ verb: 'APPLY', sub: 'UNSUB', userid: 'bob', mboxname: 'user.bob.Nope' });
    await ok({ verb: 'APPLY', sub: 'SEEN', seen: { userid: 'bob', uniqueid: 'inbox-uid', lastread: 5, lastuid: 3, lastchange: 6, seenuids: '1:3' } });
    await ok({ verb: 'APPLY', sub: 'ANNOTATION', mboxname: 'user.bob', entry: '/specialuse', userid: 'bob', value: { kind: 'buffer', value: Buffer.from('\\Sent') } });
    t.is((await apply(s, { verb: 'APPLY', sub: 'ANNOTATION', mboxname: 'user.none', entry: '/x', userid: '', value: { kind: 'buffer', value: Buffer.from('v') } })).status,
      'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox');
    await ok({ verb: 'APPLY', sub: 'SIEVE', userid: 'bob', filename: 'main.script', lastUpdate: 42, content: { kind: 'buffer', value: Buffer.from('keep;\r\n') } });
    await ok({ verb: 'APPLY', sub: 'SIEVE', userid: 'bob', filename: 'main.bc', lastUpdate: 42, content: { kind: 'buffer', value: Buffer.from('xx') } });
    await ok({ verb: 'APPLY', sub: 'ACTIVATE_SIEVE', userid: 'bob', filename: 'main.bc' });
    t.is((await apply(s, { verb: 'APPLY', sub: 'ACTIVATE_SIEVE', userid: 'bob', filename: 'nope.bc' })).status, 'NO Unknown error');

    const user = await getc(s, { verb: 'GET', sub: 'USER', userid: 'bob' });
    const text = user.reply.toString('latin1');
    t.true(text.includes('QUOTAROOT user.bob'));
    t.true(text.includes('* QUOTA %(ROOT user.bob LIMIT 1000 STORAGE 1000 MODSEQ 7)\r\n'));
    t.true(text.includes('* SEEN %(UNIQUEID inbox-uid LASTREAD 5 LASTUID 3 LASTCHANGE 6 SEENUIDS 1:3)\r\n'));
    t.true(text.includes('* LSUB (user.bob user.bob.Sent)\r\n'));
    t.true(text.includes(`* SIEVE %(FILENAME main.script LAST_UPDATE 42 GUID ${sha1(Buffer.from('keep;\r\n'))} ISACTIVE 0)\r\n`));
    t.true(text.includes(`* SIEVE %(FILENAME main.bc LAST_UPDATE 0 GUID ${'0'.repeat(40)} ISACTIVE 1)\r\n`));
    t.true(text.includes('%(ENTRY /specialuse USERID bob MODSEQ 0 VALUE {5}\r\n\\Sent)'));
    t.false(text.includes('FILENAME main.bc LAST_UPDATE 42'), 'non-.script names are not stored');
    s.sieveMailboxMode = true;
    t.false((await getc(s, { verb: 'GET', sub: 'META', userid: 'bob' })).reply.toString().includes('* SIEVE'));
    s.sieveMailboxMode = false;
    const fs1 = await getc(s, { verb: 'GET', sub: 'FETCH_SIEVE', userid: 'bob', filename: 'main.script' });
    t.is(fs1.reply.toString(), '* SIEVE %(USERID bob FILENAME main.script CONTENT {7}\r\nkeep;\r\n)\r\nOK success\r\n');
    await ok({ verb: 'APPLY', sub: 'UNSIEVE', userid: 'bob', filename: 'main.bc' });
    t.false((await getc(s, { verb: 'GET', sub: 'META', userid: 'bob' })).reply.toString().includes('ISACTIVE 1'));
    t.is((await apply(s, { verb: 'APPLY', sub: 'UNSIEVE', userid: 'bob', filename: 'none.script' })).status, 'NO Unknown error');
    // GET ANNOTATION of a mailbox answers nothing, as the real 3.6.1 sync_server does
    t.is((await getc(s, { verb: 'GET', sub: 'ANNOTATION', mboxname: 'user.bob' })).reply.toString(), 'OK success\r\n');
    await ok({ verb: 'APPLY', sub: 'UNANNOTATION', mboxname: 'user.bob', entry: '/specialuse', userid: 'bob' });
    t.false((await getc(s, { verb: 'GET', sub: 'MAILBOXES', names: ['user.bob'] })).reply.toString().includes('/specialuse'));
    // server annotations
    await ok({ verb: 'APPLY', sub: 'ANNOTATION', mboxname: '', entry: '/motd', userid: '', value: { kind: 'buffer', value: Buffer.from('hello') } });
    t.is((await getc(s, { verb: 'GET', sub: 'ANNOTATION', mboxname: '' })).reply.toString(),
      '* ANNOTATION %(MBOXNAME "" ENTRY /motd USERID "" VALUE hello)\r\nOK success\r\n');
    await ok({ verb: 'APPLY', sub: 'UNANNOTATION', mboxname: '', entry: '/motd', userid: '' });
    t.is((await getc(s, { verb: 'GET', sub: 'ANNOTATION', mboxname: '' })).reply.toString(), 'OK success\r\n');

    await ok({ verb: 'APPLY', sub: 'UNUSER', local: false, userid: 'bob' });
    const after = await getc(s, { verb: 'GET', sub: 'USER', userid: 'bob' });
    t.is(after.reply.toString(), 'OK success\r\n');
    t.is((await getc(s, { verb: 'GET', sub: 'QUOTA', root: 'user.bob' })).reply.toString(), 'OK success\r\n');
    t.is(st.sink.store.mailboxByName('user.bob')!.state, 2);
    await ok({ verb: 'APPLY', sub: 'UNUSER', local: false, userid: 'bob' });
    await ok({ verb: 'APPLY', sub: 'UNUSER', local: false, userid: '' });
  });
});

test('sieve-store mailboxes need SIEVE-MAILBOX and are hidden without it', async (t) => {
  await withStore(t, async (_st, s) => {
    await seedInbox(s);
    const sv = mailboxIn({ uniqueid: 'sv', mboxname: 'user.bob.#sieve', mboxtype: 'f' });
    t.is((await mbox(s, sv)).status, 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
    s.sieveMailboxMode = true;
    t.is((await mbox(s, sv)).status, 'OK success');
    t.true((await getc(s, { verb: 'GET', sub: 'USER', userid: 'bob' })).reply.toString().includes('MBOXNAME user.bob.#sieve MBOXTYPE f'));
    const s2 = openSession(_st.sink);
    t.false((await getc(s2, { verb: 'GET', sub: 'USER', userid: 'bob' })).reply.toString().includes('#sieve'));
    t.is((await getc(s2, { verb: 'GET', sub: 'MAILBOXES', names: ['user.bob.#sieve'] })).reply.toString(), 'OK success\r\n');
    // FULLMAILBOX reports it even so, as the real 3.6.1 sync_server does
    t.regex((await getc(s2, { verb: 'GET', sub: 'FULLMAILBOX', mboxname: 'user.bob.#sieve' })).reply.toString(), /^\* MAILBOX %\(UNIQUEID sv MBOXNAME user\.bob\.#sieve MBOXTYPE f /);
    // type mismatch on an existing mailbox
    t.is((await mbox(s, { ...sv, mboxtype: 'c' })).status, 'NO Unknown error');
  });
});

test('store survives reopen: metadata and blobs persist, staging is emptied', async (t) => {
  const st = await tempStore({ fsync: true });
  storeTeardown(t, st.sink, st.dir);
  const s = openSession(st.sink);
  const { crcs } = await seedInbox(s);
  await stage(s, [message(50)]); // left in staging
  await st.sink.close();
  const { writeFileSync } = await import('node:fs');
  const tmp = path.join(st.partitions.default!, 'blobs', 'tmp');
  writeFileSync(path.join(tmp, 'orphan.tmp'), 'partial');
  writeFileSync(path.join(tmp, '4194000-1-aa.tmp'), 'writer gone');
  // a staging file of another live process serving the same store is left alone
  writeFileSync(path.join(tmp, '1-1-bb.tmp'), 'writer alive');
  const st2 = await tempStore({ fsync: true }, st.dir);
  storeTeardown(t, st2.sink, st2.dir);
  try {
    t.deepEqual(readdirSync(tmp), ['1-1-bb.tmp']);
    // a read-only dump next to the open store
    const { dumpUser } = await import('../sinks/replica/dump.js');
    const dump = dumpUser({ configdirectory: st.configdirectory, partitions: st.partitions }, 'bob');
    t.true(dump.startsWith('mailbox INBOX uidvalidity=1700000000 uidnext=4 highestmodseq=4 messages=2\nmsg INBOX uid=1 modseq=2 size='), dump);
    t.deepEqual(readdirSync(tmp), ['1-1-bb.tmp']);
    const s2 = openSession(st2.sink);
    const r = await getc(s2, { verb: 'GET', sub: 'MAILBOXES', names: ['user.bob'] });
    t.is(get(r.items[0], 'SYNC_CRC'), crcs.basic);
    t.is(get(r.items[0], 'SYNC_CRC_ANNOT'), crcs.annot);
  } finally {
    await st2.sink.close();
  }
});

test('metadata database full: clear refusal, nothing half-written, next attempt succeeds', async (t) => {
  await withStore(t, async (st, s) => {
    await seedInbox(s);
    const bodies = Array.from({ length: 300 }, (_, i) => message(1000 + i, 'z'.repeat(200)));
    await apply(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, bodies) });
    const m = mailboxIn({
      uniqueid: 'big', mboxname: 'user.bob.Big', highestmodseq: 400n, lastUid: 300,
      records: bodies.map((b, i) => recordIn(i + 1, b, { flags: ['\\Seen', `kw${i % 50}`] })),
    });
    const db = st.sink.store.db;
    const pages = Number(db.pragma('page_count', { simple: true }));
    db.pragma(`max_page_count = ${pages}`);
    const err = await t.throwsAsync(applyMailbox(st.sink.store, m, { sieveMailboxMode: false, forceMode: false }));
    t.is((err as { code?: string }).code, 'IMAP_NOSPACE');
    t.regex(err!.message, /No space left/);
    t.is((await mbox(s, m)).status, 'NO IMAP_NOSPACE No space left on the replica disk for the metadata database');
    t.is(st.sink.store.mailboxByName('user.bob.Big'), null);
    t.is(Number((db.prepare('SELECT count(*) AS c FROM record').get() as { c: bigint }).c), 3);
    db.pragma('max_page_count = 1073741823');
    t.is((await mbox(s, m)).status, 'OK success');
    t.is(st.sink.store.mailboxByName('user.bob.Big')!.lastUid, 300);
  });
});

test('big literal values (sieve script, annotation) staged on disk are read once and removed', async (t) => {
  await withStore(t, async (st, s) => {
    await seedInbox(s);
    const stageLiteral = async (b: Buffer) => {
      const w = s.bodySink.open({ kind: 'literal', size: b.length })!;
      for (let off = 0; off < b.length; off += 65536) {
        if (!w.write(b.subarray(off, off + 65536))) await new Promise<void>((r) => w.onDrain(r));
      }
      const body = w.end(sha1(b));
      await body.done;
      return { kind: 'staged' as const, size: b.length, sha1: sha1(b), body };
    };
    const script = Buffer.from(`# big\r\n${'keep;\r\n'.repeat(300_000)}`);
    const r = await apply(s, { verb: 'APPLY', sub: 'SIEVE', userid: 'bob', filename: 'big.script', lastUpdate: 9, content: await stageLiteral(script) });
    t.is(r.status, 'OK success');
    const fetched = await getc(s, { verb: 'GET', sub: 'FETCH_SIEVE', userid: 'bob', filename: 'big.script' });
    t.true(fetched.reply.includes(script));
    const value = Buffer.alloc(1_500_000, 0x61);
    t.is((await apply(s, { verb: 'APPLY', sub: 'ANNOTATION', mboxname: 'user.bob', entry: '/comment', userid: 'bob', value: await stageLiteral(value) })).status, 'OK success');
    const ann = await getc(s, { verb: 'GET', sub: 'MAILBOXES', names: ['user.bob'] });
    t.true(ann.reply.includes(Buffer.concat([Buffer.from(`%(ENTRY /comment USERID bob MODSEQ 0 VALUE {${value.length}}\r\n`), value])));
    t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), []);
  });
});

test('housekeeping: unreferenced old blobs are collected, referenced and young ones kept; expunged records purged', async (t) => {
  const { collectGarbage, purgeExpunged, blobStats } = await import('../sinks/replica/housekeeping.js');
  await withStore(t, async (st, s) => {
    const { bodies } = await seedInbox(s); // UID 3 is expunged and references bodies[2]
    const orphan = message(99);
    await apply(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, [orphan]) });
    const store = st.sink.store;
    const blobFile = (b: Buffer) => path.join(st.partitions.default!, 'blobs', sha1(b).slice(0, 2), sha1(b));
    t.deepEqual(blobStats(store).blobs, 4);
    t.is(collectGarbage(store), 0, 'young blobs are spared');
    const later = Math.floor(Date.now() / 1000) + 2 * 86400;
    t.is(collectGarbage(store, { now: later }), 1);
    t.false(existsSync(blobFile(orphan)));
    for (const b of bodies) t.true(existsSync(blobFile(b)));
    // the expunged record goes, then its blob is unreferenced
    t.is(purgeExpunged(store, { now: later + 30 * 86400 }), 1);
    const full = await getc(s, { verb: 'GET', sub: 'FULLMAILBOX', mboxname: 'user.bob' });
    t.false(full.reply.toString().includes('%(UID 3 '));
    t.true(full.reply.toString().includes('%(UID 2 '));
    const mb = store.mailboxByName('user.bob')!;
    t.deepEqual(store.recomputeCrcs('user.bob'), { basic: mb.crcBasic, annot: (mb.crcAnnot ^ 12345678) >>> 0 });
    t.is(collectGarbage(store, { now: later }), 1);
    t.false(existsSync(blobFile(bodies[2]!)));
    // after RESTART (staging dropped) a RESERVE for a collected blob reports it missing; re-upload works
    await s.restart();
    const r = await apply(s, { verb: 'APPLY', sub: 'RESERVE', partition: 'default', mboxnames: ['user.bob'], guids: [sha1(orphan)] });
    t.is(r.reply.toString(), `* MISSING (${sha1(orphan)})\r\nOK success\r\n`);
    await apply(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, [orphan]) });
    t.true(existsSync(blobFile(orphan)));
  });
});

test('a store written by schema version 1 is migrated at open', async (t) => {
  const { mkdtempSync, mkdirSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const Database = (await import('better-sqlite3')).default;
  const dir = mkdtempSync(path.join(tmpdir(), 'cyrsync-migrate-'));
  mkdirSync(path.join(dir, 'conf'));
  const old = new Database(path.join(dir, 'conf', 'replica.sqlite3'));
  old.exec(`CREATE TABLE blob (guid TEXT PRIMARY KEY, partition TEXT NOT NULL, size INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO meta VALUES ('schema_version', '1');`);
  old.close();
  const st = await tempStore({}, dir);
  storeTeardown(t, st.sink, st.dir);
  try {
    const s = openSession(st.sink);
    t.is((await apply(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, [message(1)]) })).status, 'OK success');
    t.is((st.sink.store.db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string }).value, '2');
  } finally {
    await st.sink.close();
  }
});

test('connection loss while a command runs: the command completes and commits, then staging is dropped', async (t) => {
  await withStore(t, async (st, s) => {
    const bodies = [message(31), message(32)];
    const files = await stage(s, bodies);
    // the store call has started when the connection goes: end() lets it finish
    const applying = s.handlers.apply.MESSAGE({ verb: 'APPLY', sub: 'MESSAGE', files }, () => {});
    const ending = s.end();
    await t.notThrowsAsync(Promise.all([applying, ending]));
    for (const b of bodies) {
      t.true(existsSync(path.join(st.partitions.default!, 'blobs', sha1(b).slice(0, 2), sha1(b))));
      t.truthy(st.sink.store.blobKnown(sha1(b)));
    }
    t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), []);
  });
});

test('staging a big literal: the writer asks the producer to wait, buffers a bounded amount, stores exact bytes', async (t) => {
  await withStore(t, async (st, s) => {
    const chunk = Buffer.alloc(256 * 1024, 0x41);
    const n = 80; // 20 MiB
    const { createHash } = await import('node:crypto');
    const h = createHash('sha1');
    const body: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const c = Buffer.from(chunk);
      c.writeUInt32BE(i, 0);
      body.push(c);
      h.update(c);
    }
    const guid = h.digest('hex');
    const w = s.bodySink.open({ kind: 'file', partition: 'default', guid, size: n * chunk.length })!;
    let waits = 0;
    for (const c of body) {
      if (!w.write(c)) {
        waits++;
        await new Promise<void>((r) => w.onDrain(r));
      }
    }
    const staged = w.end(guid);
    await staged.done;
    t.true(waits > 0, 'backpressure was signalled');
    const r = await apply(s, { verb: 'APPLY', sub: 'MESSAGE', files: [{ kind: 'file', partition: 'default', guid, size: n * chunk.length, sha1: guid, body: staged }] });
    t.is(r.status, 'OK success');
    const stored = readFileSync(path.join(st.partitions.default!, 'blobs', guid.slice(0, 2), guid));
    t.is(stored.length, n * chunk.length);
    t.is(createHash('sha1').update(stored).digest('hex'), guid);
  });
});
