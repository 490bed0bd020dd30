/**
 * Child process of the crash-consistency test: applies batches to a replica
 * store in a loop and reports each committed batch on stdout until killed.
 */
import { mailboxIn, message, openSession, recordIn, runCommand, stage, tempStore } from './replica-helpers.js';
import { mailboxCrcs } from '../src/protocol/crc.js';
import type { RecordIn } from '../src/protocol/types.js';

const dir = process.argv[2]!;
const user = process.argv[3] ?? 'crash';
const st = await tempStore({ fsync: true }, dir);
const s = openSession(st.sink);
const bodiesOf = (batch: number) => Array.from({ length: 20 }, (_, i) => message(batch * 100 + i, 'y'.repeat(3000)));
const recordOf = (uid: number, b: Buffer): RecordIn => recordIn(uid, b, { flags: (uid - 1) % 3 ? ['\\Seen'] : [] });
// Resume after a previous kill from what the store holds.
const existing = st.sink.store.mailboxByName(`user.${user}`);
if (!existing) {
  await runCommand(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: mailboxIn({ uniqueid: `${user}-inbox`, mboxname: `user.${user}` }) });
}
const records: RecordIn[] = [];
const done = existing?.lastUid ?? 0;
for (let batch = 1; batch <= done / 20; batch++) for (const b of bodiesOf(batch)) records.push(recordOf(records.length + 1, b));
for (let batch = done / 20 + 1; ; batch++) {
  const bodies = bodiesOf(batch);
  // a literal left half-written on purpose, so a kill often lands inside staging
  const w = s.bodySink.open({ kind: 'file', partition: 'default', guid: 'f'.repeat(40), size: 10 })!;
  w.write(Buffer.from('half'));
  const files = await stage(s, bodies, { split: 997 });
  const r = await runCommand(s, { verb: 'APPLY', sub: 'MESSAGE', files });
  if (r.status !== 'OK success') throw new Error(r.status);
  for (const b of bodies) records.push(recordOf(records.length + 1, b));
  const crcs = mailboxCrcs(
    records.map((x) => ({
      uid: x.uid, modseq: x.modseq, lastUpdated: x.lastUpdated, internaldate: x.internaldate, guid: x.guid,
      systemFlags: x.flags.length ? 16 : 0, userFlags: [], expunged: false, annotations: [], thrid: 0n, savedate: 0, createdmodseq: 0n,
    })),
  );
  const m = mailboxIn({
    uniqueid: `${user}-inbox`, mboxname: `user.${user}`, highestmodseq: BigInt(records.length + 1), lastUid: records.length,
    syncCrc: crcs.basic, syncCrcAnnot: crcs.annot, records: records.slice(-20),
  });
  const r2 = await runCommand(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: m });
  if (r2.status !== 'OK success') throw new Error(r2.status);
  process.stdout.write(`committed ${records.length}\n`);
}
