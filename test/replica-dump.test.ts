import test from 'ava';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { dumpUser, imapDate, userViewName } from '../sinks/replica/dump.js';
import { openSession, replay, serverResponses, tapStreams, tempStore } from './replica-helpers.js';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), 'replica-fixtures');

test('after each recorded sync the replica dump equals the real master dump; replies equal the real sync_server', async (t) => {
  const st = await tempStore();
  try {
    for (const [tap, dump] of [
      ['dumpu-1-full.tap', 'dumpu-1.dump'],
      ['dumpu-2-incremental.tap', 'dumpu-2.dump'],
    ] as const) {
      const { client, server } = tapStreams(path.join(FIX, tap));
      const expected = serverResponses(server);
      const got = await replay(openSession(st.sink), client);
      t.is(got.length, expected.length);
      for (let i = 0; i < got.length; i++) {
        t.is(got[i]!.reply.toString('latin1'), expected[i]!.toString('latin1'), `${tap} #${i}: ${got[i]!.command}`);
      }
      t.is(`${dumpUser(st.sink, 'dumpu')}\n`, readFileSync(path.join(FIX, dump), 'latin1'), dump);
    }
  } finally {
    await st.sink.close();
  }
});

test('dump helpers: RFC 3501 dates, user-view names', async (t) => {
  t.is(imapDate(1795827323), '28-Nov-2026 00:55:23 +0000');
  t.is(imapDate(1699225200), ' 5-Nov-2023 23:00:00 +0000');
  const st = await tempStore();
  try {
    const s = st.sink.store;
    t.is(userViewName('user.bob', 'bob', s), 'INBOX');
    t.is(userViewName('user.bob.Archive.2024', 'bob', s), 'Archive/2024');
    t.is(userViewName('user.bob.a^b', 'bob', s), 'a.b');
    t.is(userViewName('DELETED.user.bob.Sent.6B02F957', 'bob', s), null);
    t.is(userViewName('user.carol.Sent', 'bob', s), 'Other Users/carol/Sent');
    t.is(userViewName('shared.folder', 'bob', s), 'shared/folder');
  } finally {
    await st.sink.close();
  }
});
