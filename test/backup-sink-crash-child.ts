/**
 * Child process of the backup crash test: in a loop, one session per
 * round writes messages and a mailbox into one owner's backup, reporting
 * each round once its chunk is committed (session ended), until killed.
 */
import { mailboxIn, message, openSession, recordIn, run, stage, tempBackupStore } from './backup-sink-helpers.js';
import type { RecordIn } from '../src/protocol/types.js';

const dir = process.argv[2]!;
const st = await tempBackupStore(dir);
const records: RecordIn[] = [];
for (let round = 1; ; round++) {
  const s = openSession(st.sink);
  const user = await run(s, { verb: 'GET', sub: 'USER', userid: 'crash' });
  if (user.status !== 'OK Success') throw new Error(user.status);
  // several batches per chunk, so a kill often lands inside one
  for (let batch = 0; batch < 3; batch++) {
    const bodies = Array.from({ length: 10 }, (_, i) => message(round * 1000 + batch * 100 + i, 'z'.repeat(20000)));
    const files = await stage(s, bodies);
    const r = await run(s, { verb: 'APPLY', sub: 'MESSAGE', files });
    if (r.status !== 'OK Success') throw new Error(r.status);
    for (const b of bodies) records.push(recordIn(records.length + 1, b));
    const m = mailboxIn({ uniqueid: 'crash-inbox', mboxname: 'user.crash', lastUid: records.length, highestmodseq: BigInt(records.length + 1), records: records.slice(-10) });
    const r2 = await run(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: m });
    if (r2.status !== 'OK Success') throw new Error(r2.status);
  }
  await s.end();
  process.stdout.write(`committed ${records.length}\n`);
}
