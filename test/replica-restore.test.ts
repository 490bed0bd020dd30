/**
 * RESTORE MAILBOX on the replica against Cyrus 3.6.1 sync_restore_mailbox
 * (imap/sync_support.c): create-or-append, UID/MODSEQ kept only for a new
 * mailbox whose UNIQUEID, HIGHESTMODSEQ and UIDVALIDITY are all given, the
 * sieve gate, and refusals that leave the store untouched. The commands go
 * through the encoder, the octets, the parser, the decoder and the router.
 */
import { rmSync } from 'node:fs';
import test from 'ava';
import { decodeCommand, encodeCommand } from '../src/protocol/commands.js';
import type { ApplyCommand, MailboxIn, RestoreCommand } from '../src/protocol/types.js';
import type { ReplicaSession } from '../sinks/replica/session.js';
import { memoryBodySink, parseCommandLines } from '../transforms/dlist-parser.js';
import { serializeLine } from '../transforms/serializer.js';
import { mailboxIn, message, openSession, recordIn, sha1, stage, tempStore, type TempStore } from './replica-helpers.js';
import { routeCommand } from './helpers/replay.js';

async function send(session: ReplicaSession, cmd: ApplyCommand | RestoreCommand): Promise<string> {
  // File literals were staged by stage(): the command goes to the router as it is.
  if (cmd.verb === 'APPLY' && cmd.sub === 'MESSAGE') return route(session, cmd);
  const { verb, item } = encodeCommand(cmd);
  const [line] = parseCommandLines(serializeLine(`${verb} `, item, 'client'), { sink: memoryBodySink() });
  const decoded = decodeCommand(line!, { profile: 'sync', sieveMailbox: session.sieveMailboxMode });
  if (decoded.verb !== 'APPLY' && decoded.verb !== 'RESTORE') return decoded.verb === 'REFUSED' ? decoded.reply : decoded.verb;
  return route(session, decoded);
}

async function route(session: ReplicaSession, cmd: ApplyCommand | RestoreCommand): Promise<string> {
  return (await routeCommand('sync', session, cmd)).status;
}

const restore = (mailbox: MailboxIn): RestoreCommand => ({ verb: 'RESTORE', sub: 'MAILBOX', local: false, mailbox });

function records(st: TempStore, name: string): { uid: number; modseq: bigint; guid: string; last_updated: number }[] {
  const mb = st.sink.store.mailboxByName(name)!;
  return st.sink.store.db
    .prepare('SELECT uid, modseq, guid, last_updated FROM record WHERE mailbox_id = ? ORDER BY uid')
    .safeIntegers(true)
    .all(mb.id)
    .map((r) => {
      const row = r as { uid: bigint; modseq: bigint; guid: string; last_updated: bigint };
      return { uid: Number(row.uid), modseq: row.modseq, guid: row.guid, last_updated: Number(row.last_updated) };
    });
}

async function withStore(t: { teardown(fn: () => void | Promise<void>): void }): Promise<{ st: TempStore; s: ReplicaSession }> {
  const st = await tempStore();
  const s = openSession(st.sink);
  t.teardown(async () => {
    await s.end();
    await st.sink.close();
    rmSync(st.dir, { recursive: true, force: true });
  });
  return { st, s };
}

const inbox = (extra: Partial<MailboxIn> = {}): MailboxIn => mailboxIn({ uniqueid: 'u-inbox', mboxname: 'user.bob', ...extra });

test('a missing mailbox is created with the UNIQUEID, HIGHESTMODSEQ and UIDVALIDITY given; records keep UID and MODSEQ', async (t) => {
  const { st, s } = await withStore(t);
  const [m1, m2] = [message(1), message(2)];
  await send(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, [m1, m2]) });
  const m = inbox({
    highestmodseq: 40n,
    uidvalidity: 1234567,
    records: [recordIn(5, m1, { modseq: 12n, flags: ['\\Seen'] }), recordIn(9, m2, { modseq: 30n })],
  });
  t.is(await send(s, restore(m)), 'OK success');
  t.like(st.sink.store.mailboxByName('user.bob'), { uniqueid: 'u-inbox', uidvalidity: 1234567, lastUid: 9, highestmodseq: 40n });
  t.deepEqual(records(st, 'user.bob'), [
    { uid: 5, modseq: 12n, guid: sha1(m1), last_updated: recordIn(5, m1).lastUpdated },
    { uid: 9, modseq: 30n, guid: sha1(m2), last_updated: recordIn(9, m2).lastUpdated },
  ]);
});

test('a record whose MODSEQ is above HIGHESTMODSEQ gets a new modseq; one at or below the UIDs used gets the next UID', async (t) => {
  const { st, s } = await withStore(t);
  const [m1, m2] = [message(1), message(2)];
  await send(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, [m1, m2]) });
  const m = inbox({ highestmodseq: 10n, records: [recordIn(7, m1, { modseq: 50n }), recordIn(7, m2, { modseq: 3n })] });
  t.is(await send(s, restore(m)), 'OK success');
  const recs = records(st, 'user.bob');
  t.deepEqual(recs.map((r) => r.uid), [7, 8]);
  t.is(recs[0]!.modseq, 11n, 'above HIGHESTMODSEQ: the next modseq of the mailbox');
  t.is(recs[1]!.modseq, 3n);
  t.is(st.sink.store.mailboxByName('user.bob')!.highestmodseq, 11n);
});

test('without all of UNIQUEID, HIGHESTMODSEQ and UIDVALIDITY none is kept: new uniqueid, UIDs from 1', async (t) => {
  const { st, s } = await withStore(t);
  const m1 = message(1);
  await send(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, [m1]) });
  t.is(await send(s, restore(inbox({ uidvalidity: 0, records: [recordIn(5, m1, { modseq: 2n })] }))), 'OK success');
  const mb = st.sink.store.mailboxByName('user.bob')!;
  t.not(mb.uniqueid, 'u-inbox');
  t.not(mb.uidvalidity, 0);
  t.deepEqual(records(st, 'user.bob').map((r) => [r.uid, r.modseq]), [[1, 1n]]);
});

test('an existing mailbox gets the records appended with new UIDs and a new modseq; its uniqueid and UIDVALIDITY stay', async (t) => {
  const { st, s } = await withStore(t);
  const [m1, m2, m3] = [message(1), message(2), message(3)];
  await send(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, [m1, m2, m3]) });
  const live = inbox({ lastUid: 4, highestmodseq: 20n, records: [recordIn(4, m1, { modseq: 20n })] });
  live.syncCrc = 0;
  t.is(await send(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: live }), 'OK success');
  const m = inbox({ uniqueid: 'other', highestmodseq: 99n, uidvalidity: 42, records: [recordIn(2, m2, { modseq: 5n }), recordIn(30, m3, { modseq: 6n })] });
  t.is(await send(s, restore(m)), 'OK success');
  t.like(st.sink.store.mailboxByName('user.bob'), { uniqueid: 'u-inbox', uidvalidity: 1700000000, lastUid: 6, highestmodseq: 21n });
  t.deepEqual(records(st, 'user.bob').map((r) => [r.uid, r.modseq, r.guid]), [
    [4, 20n, sha1(m1)],
    [5, 21n, sha1(m2)],
    [6, 21n, sha1(m3)],
  ]);
  // The CRC kept for GET MAILBOXES agrees with one recomputed from the records.
  t.is(st.sink.store.recomputeCrcs('user.bob')!.basic, st.sink.store.mailboxByName('user.bob')!.crcBasic);
});

test('a sieve-script mailbox without SIEVE-MAILBOX is accepted and ignored', async (t) => {
  const { st, s } = await withStore(t);
  t.is(await send(s, restore(inbox({ mboxtype: 'f' }))), 'OK success');
  t.is(st.sink.store.mailboxByName('user.bob'), null);
});

test('a message never uploaded: NO Unknown error (IMAP_IOERROR) and nothing is created', async (t) => {
  const { st, s } = await withStore(t);
  t.is(await send(s, restore(inbox({ records: [recordIn(1, message(1))] }))), 'NO Unknown error');
  t.is(st.sink.store.mailboxByName('user.bob'), null);
});

test('a mailbox of another type: NO Unknown error (IMAP_MAILBOX_BADTYPE), nothing appended', async (t) => {
  const { st, s } = await withStore(t);
  const m1 = message(1);
  await send(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, [m1]) });
  t.is(await send(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: inbox({ syncCrc: 0 }) }), 'OK success');
  t.is(await send(s, restore(inbox({ mboxtype: 'n', records: [recordIn(1, m1)] }))), 'NO Unknown error');
  t.deepEqual(records(st, 'user.bob'), []);
});

test('RESTORE needs only MBOXNAME; without it the reply is bad parameters', async (t) => {
  const { st, s } = await withStore(t);
  t.is(await send(s, restore({ uniqueid: '', mboxname: 'user.bob', mboxtype: null, highestmodseq: 0n })), 'OK success');
  t.truthy(st.sink.store.mailboxByName('user.bob'));
  const [line] = parseCommandLines(Buffer.from('RESTORE MAILBOX %(UNIQUEID x)\r\n'));
  const c = decodeCommand(line!, { profile: 'sync' });
  t.is(c.verb === 'REFUSED' ? c.reply : c.verb, 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
});
