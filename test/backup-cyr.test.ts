/**
 * `cyrsync cyr-backup`: every command of cyr_backup on a backup written by
 * the store's writer, in the formats the real tool prints (checked against
 * the real cyr_backup in test/interop/backup-tools.test.ts), and `--at`.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { PassThrough } from 'node:stream';
import { runCyrBackup } from '../src/client/backup/cyr-backup.js';
import { localTime } from '../src/client/backup/common.js';
import { bobHistory, sha1, toolsFixture, type ToolsFixture } from './backup-tools-helpers.js';

async function cyr(fx: ToolsFixture, ...args: string[]): Promise<{ code: number; out: Buffer; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  let err = '';
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await runCyrBackup(['-C', fx.conf, ...args], { stdin: new PassThrough(), stdout, stderr });
  return { code, out: Buffer.concat(out), err };
}

test('list, show, json and dump', async (t) => {
  const fx = toolsFixture();
  t.teardown(() => fs.rmSync(fx.dir, { recursive: true, force: true }));
  const { bodies } = await bobHistory(fx);
  const [g1, g2, g3] = bodies.map((b) => sha1(b)) as [string, string, string];
  const chunks = await cyr(fx, '-u', 'bob', 'list', 'chunks');
  const lines = chunks.out.toString().split('\n');
  t.is(lines[0], '     id offset\tlength\tratio%\tstart time           end time');
  t.regex(lines[1]!, new RegExp(`^      1 0\\t\\d+\\t {1,5}\\d+\\.\\d\\t${localTime(1000)}  ${localTime(1005)}$`));
  t.is(lines.length, 5);
  t.is((await cyr(fx, 'bob', 'list', 'messages')).out.toString(), `${g1}\n${g2}\n${g3}\n`);
  t.is((await cyr(fx, 'bob', 'list', 'mailboxes')).out.toString(),
    `uniqueid                              last append date     mboxname\nu-inbox  ${localTime(1700000000)}  user.bob\nu-old  ${localTime(1700000000)}  user.bob.Old\n`);
  const show = (await cyr(fx, 'bob', 'show', 'mailboxes', 'u-old', 'user/bob')).out.toString();
  t.is(show, `mboxname: user.bob.Old\nuniqueid: u-old\ndeleted:  ${localTime(3000)}\nmessages:\n       uid  expunged time        guid\n\n` +
    `mboxname: user.bob\nuniqueid: u-inbox\nmessages:\n       uid  expunged time        guid\n` +
    `         1                       ${g1}\n         2  ${localTime(2001)}  ${g2}\n         3                       ${g3}\n\n`);
  const msg = (await cyr(fx, 'bob', 'show', 'messages', g1)).out.toString('latin1');
  t.is(msg, `guid:\t${g1}\nmailboxes:\n\tu-inbox\tuser.bob\nheaders:\n${bodies[0]!.toString('latin1').split('\r\n\r\n')[0]}\r\n\n`);
  t.deepEqual((await cyr(fx, 'bob', 'dump', 'message', g3)).out, bodies[2]);
  const dump = (await cyr(fx, 'bob', 'dump', 'chunk', '3')).out.toString();
  t.true(dump.startsWith('# cyrus backup: chunk start\r\n3000 APPLY UNMAILBOX user.bob.Old\r\n'));
  const jm = JSON.parse((await cyr(fx, 'bob', 'json', 'mailboxes')).out.toString()) as { uniqueid: string; messages?: { uid: number; expunged?: string }[] }[];
  t.deepEqual(jm[0]!.messages!.map((m) => [m.uid, m.expunged ?? null]), [[1, null], [2, localTime(2001)], [3, null]]);
  t.false('messages' in jm[1]!);
  const jh = JSON.parse((await cyr(fx, 'bob', 'json', 'headers', g1)).out.toString()) as Record<string, Record<string, string[]>>;
  t.deepEqual(jh[g1]!['Subject'], ['message 1']);
  const missing = await cyr(fx, 'bob', 'dump', 'chunk', '9');
  t.is(missing.code, 75);
  t.is(missing.err, 'bob: Item does not exist\n');
  t.is((await cyr(fx, 'bob', 'show', 'chunks', '1')).code, 64);
});

test('--at: the backup as it was then', async (t) => {
  const fx = toolsFixture();
  t.teardown(() => fs.rmSync(fx.dir, { recursive: true, force: true }));
  const { bodies } = await bobHistory(fx);
  const [g1, g2, g3] = bodies.map((b) => sha1(b)) as [string, string, string];
  t.is((await cyr(fx, '--at', '1500', 'bob', 'list', 'messages')).out.toString(), `${g1}\n${g2}\n`);
  t.is((await cyr(fx, '--at', '2500', 'bob', 'list', 'messages')).out.toString(), `${g1}\n${g2}\n${g3}\n`);
  t.is((await cyr(fx, '--at', '1500', 'bob', 'list', 'chunks')).out.toString().split('\n').length, 3);
  const early = await cyr(fx, '--at', '1970-01-01T00:10:00Z', 'bob', 'list', 'mailboxes');
  t.is(early.code, 75);
  t.regex(early.err, /before the first chunk of the backup/);
  const j = JSON.parse((await cyr(fx, '--at', '1500', 'bob', 'json', 'mailboxes')).out.toString()) as { messages?: { uid: number; expunged?: string }[] }[];
  t.deepEqual(j[0]!.messages!.map((m) => [m.uid, m.expunged ?? null]), [[1, null], [2, null]]);
  t.is((await cyr(fx, '--at', 'soon', 'bob', 'list', 'messages')).code, 64);
});
