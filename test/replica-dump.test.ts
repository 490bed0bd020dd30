import test from 'ava';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { dumpEntries, dumpUser, formatDumpEntry, imapDate, userViewName } from '../sinks/replica/dump.js';
import { openSession, replay, serverResponses, tapStreams, tempStore } from './replica-helpers.js';
import { storeTeardown } from './helpers/teardown.js';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), 'replica-fixtures');

test('after each recorded sync the replica dump equals the real master dump; replies equal the real sync_server', async (t) => {
  const st = await tempStore();
  storeTeardown(t, st.sink, st.dir);
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
  storeTeardown(t, st.sink, st.dir);
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

test('cyrsync dump --json: one JSON line per entry of the text dump, streamed from the store', async (t) => {
  const st = await tempStore();
  storeTeardown(t, st.sink, st.dir);
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { writeFileSync } = await import('node:fs');
  try {
    const { client } = tapStreams(path.join(FIX, 'dumpu-1-full.tap'));
    await replay(openSession(st.sink), client);
    const text = dumpUser(st.sink, 'dumpu').split('\n');
    const entries = [...dumpEntries(st.sink.store, 'dumpu')];
    t.deepEqual(entries.map(formatDumpEntry), text, 'the entries are the text lines');
    t.true(entries.some((e) => e.type === 'msg'));
    // Through the CLI, read-only next to the open store.
    const conf = path.join(st.dir, 'imapd.conf');
    writeFileSync(conf, `configdirectory: ${st.configdirectory}\n${Object.entries(st.partitions).map(([n, p]) => `partition-${n}: ${p}`).join('\n')}\n`);
    const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
    const run = (args: string[]) => promisify(execFile)(process.execPath, ['--import=tsx', cli, 'dump', '-C', conf, ...args, 'dumpu']);
    const json = (await run(['--json'])).stdout;
    t.true(json.endsWith('\n'));
    t.deepEqual(
      json.trimEnd().split('\n').map((l) => JSON.parse(l) as unknown),
      JSON.parse(JSON.stringify(entries)) as unknown,
    );
    t.is((await run([])).stdout, text.join('\n') + '\n');
  } finally {
    await st.sink.close();
  }
});
