import test from 'ava';
import fc from 'fast-check';
import { mailboxCrcs, type CrcRecord } from '../src/protocol/crc.js';
import type { RecordIn } from '../src/protocol/types.js';
import { mailboxIn, message, openSession, recordIn, runCommand, sha1, stage, tempStore } from './replica-helpers.js';
import { storeTeardown } from './helpers/teardown.js';

/**
 * Random sequences of record updates and expunges: after each APPLY the
 * replica's reported CRCs equal both its own from-scratch recomputation and
 * the CRCs of a model of what was applied, and the master's SYNC_CRC is
 * accepted.
 */
const SYS = ['\\Seen', '\\Flagged', '\\Answered', '\\Draft', '\\Deleted'];
const BITS: Record<string, number> = { '\\Deleted': 1, '\\Answered': 2, '\\Flagged': 4, '\\Draft': 8, '\\Seen': 16 };

const opArb = fc.record({
  uid: fc.integer({ min: 1, max: 12 }),
  flags: fc.subarray([...SYS, '$Label', 'kw1', 'KW1', '$junk']),
  expunge: fc.boolean(),
  thrid: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  comment: fc.option(fc.string({ minLength: 0, maxLength: 6 }), { nil: null }),
});

test('incrementally maintained CRCs equal a recomputation after random updates', async (t) => {
  const st = await tempStore();
  storeTeardown(t, st.sink, st.dir);
  const s = openSession(st.sink);
  const bodies = Array.from({ length: 12 }, (_, i) => message(i + 1));
  await runCommand(s, { verb: 'APPLY', sub: 'MESSAGE', files: await stage(s, bodies) });
  await runCommand(s, { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: mailboxIn({ uniqueid: 'p0', mboxname: 'user.prop' }) });
  let n = 0;
  try {
    await t.notThrowsAsync(fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
        n++;
        const name = `user.prop.m${n}`;
        const model = new Map<number, CrcRecord & { flagsIn: string[]; annotationsIn: RecordIn['annotations'] }>();
        let modseq = 1n;
        const send = async (recs: RecordIn[]) => {
          const crcs = mailboxCrcs([...model.values()]);
          const lastUid = Math.max(0, ...model.keys());
          const r = await runCommand(s, {
            verb: 'APPLY', sub: 'MAILBOX', local: false,
            mailbox: mailboxIn({ uniqueid: `u${n}`, mboxname: name, highestmodseq: modseq, lastUid, records: recs, syncCrc: crcs.basic, syncCrcAnnot: crcs.annot }),
          });
          if (r.status !== 'OK success') return false;
          const mb = st.sink.store.mailboxByName(name)!;
          const stored = { basic: mb.crcBasic, annot: (mb.crcAnnot ^ 12345678) >>> 0 };
          const again = st.sink.store.recomputeCrcs(name);
          return stored.basic === crcs.basic && stored.annot === crcs.annot && again!.basic === crcs.basic && again!.annot === crcs.annot;
        };
        for (const raw of ops) {
          // an unknown UID below LAST_UID would be a conflict: new messages get the next UID
          const maxUid = Math.max(0, ...model.keys());
          const op = model.has(raw.uid) || raw.uid > maxUid ? raw : { ...raw, uid: maxUid + 1 };
          if (op.uid > 12) continue;
          const prev = model.get(op.uid);
          if (prev?.expunged) continue; // once expunged, never back
          modseq += 1n;
          const userFlags: string[] = [];
          for (const f of op.flags.filter((x) => !x.startsWith('\\'))) {
            if (!userFlags.some((u) => u.toLowerCase() === f.toLowerCase())) userFlags.push(f);
          }
          const annotations: RecordIn['annotations'] = [];
          if (op.thrid !== 0n) annotations.push({ entry: '/vendor/cmu/cyrus-imapd/thrid', userid: '', modseq: 0n, value: { kind: 'buffer', value: Buffer.from(op.thrid.toString(16).padStart(16, '0')) } });
          if (op.comment !== null) annotations.push({ entry: '/comment', userid: 'bob', modseq: 0n, value: { kind: 'buffer', value: Buffer.from(op.comment, 'latin1') } });
          const flagsIn = [...op.flags, ...(op.expunge ? ['\\Expunged'] : [])];
          const rec = recordIn(op.uid, bodies[op.uid - 1]!, { modseq, flags: flagsIn, annotations });
          model.set(op.uid, {
            uid: op.uid, modseq, lastUpdated: rec.lastUpdated, internaldate: rec.internaldate, guid: sha1(bodies[op.uid - 1]!),
            systemFlags: op.flags.filter((f) => f.startsWith('\\')).reduce((a, f) => a | BITS[f]!, 0),
            // the replica keeps the first spelling of a flag name per mailbox; CRCs fold case anyway
            userFlags, expunged: op.expunge,
            annotations: op.comment ? [{ entry: '/comment', userid: 'bob', value: Buffer.from(op.comment, 'latin1') }] : [],
            thrid: op.thrid, savedate: 0, createdmodseq: 0n, flagsIn, annotationsIn: annotations,
          });
          // new UIDs must arrive in ascending order above LAST_UID: send the whole model each time
          const all = [...model.values()].sort((a, b) => a.uid - b.uid).map((m) =>
            recordIn(m.uid, bodies[m.uid - 1]!, { modseq: m.modseq, flags: m.flagsIn, annotations: m.annotationsIn }),
          );
          if (!(await send(all))) return false;
        }
        return true;
      }),
      { numRuns: 100 },
    ));
  } finally {
    await st.sink.close();
  }
});
