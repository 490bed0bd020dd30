import test from 'ava';
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { TRANSCRIPTS, openSession, replay, serverResponses, tapStreams, tempStore } from './replica-helpers.js';
import { storeTeardown } from './helpers/teardown.js';

/**
 * Replays the client side of the real 3.6.1 sessions into a fresh replica and
 * compares every reply with what the real sync_server answered.
 */
test('01 full then 03 incremental: every reply equals the real sync_server reply', async (t) => {
  const st = await tempStore();
  storeTeardown(t, st.sink, st.dir);
  try {
    for (const name of ['01-full-replica.tap', '03-incremental-replica.tap']) {
      const { client, server } = tapStreams(path.join(TRANSCRIPTS, name));
      const expected = serverResponses(server);
      const session = openSession(st.sink);
      const got = await replay(session, client);
      t.is(got.length, expected.length, `${name}: number of replies`);
      for (let i = 0; i < Math.min(got.length, expected.length); i++) {
        t.is(got[i]!.reply.toString('latin1'), expected[i]!.toString('latin1'), `${name} #${i}: ${got[i]!.command}`);
      }
    }
    // nothing left in staging
    t.deepEqual(readdirSync(path.join(st.partitions.default!, 'blobs', 'tmp')), []);
    // stored CRCs equal a from-scratch recomputation
    for (const n of ['user.fixt', 'user.fixt.Drafts', 'user.fixt.Sent', 'DELETED.user.fixt.Archive.2024.6B02F957']) {
      const mb = st.sink.store.mailboxByName(n)!;
      t.truthy(mb, n);
      const re = st.sink.store.recomputeCrcs(n)!;
      t.deepEqual({ basic: mb.crcBasic, annot: (mb.crcAnnot ^ 12345678) >>> 0 }, re, n);
    }
  } finally {
    await st.sink.close();
  }
});
