/**
 * `cyrsync restore` keeps memory flat in the message size: a backup holding
 * one 512 MiB message is restored by the built CLI (a child process, so the
 * peak RSS is the restore's own) to a csync peer in this process, which
 * checks the body it receives against its GUID. The peak RSS stays under
 * 100 MB and within 32 MiB of the peak for an 8 MiB message (measured:
 * about 70 MiB and 91 MiB; the upload holds up to ~35 MiB of socket-bound
 * buffers whatever the message size). Needs `npm run build`.
 *
 * The peer answers as a Cyrus sync_server does for a destination without the
 * user: GET MAILBOXES and GET META with nothing, APPLY RESERVE with every
 * GUID missing, then OK to APPLY MESSAGE and RESTORE MAILBOX.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { CommandReader } from '../transforms/dlist-parser.js';
import type { BodySink, DlistItem, DlistValue } from '../transforms/dlist-types.js';
import { runMeasured, writeHugeBackup } from './helpers/huge.js';

const ROOT = path.join(import.meta.dirname, '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');

const atom = (value: string): DlistValue => ({ kind: 'atom', value });
const num = (value: number): DlistValue => ({ kind: 'num', value });

/** The mailbox holding the message, one record of UID 1. */
function mailbox(guid: string, size: number): DlistItem {
  const fields: [string, DlistValue][] = [
    ['UNIQUEID', atom('0123456789abcdef01234567')], ['MBOXNAME', atom('user.big')], ['LAST_UID', num(1)], ['HIGHESTMODSEQ', num(2)],
    ['RECENTUID', num(0)], ['RECENTTIME', num(0)], ['LAST_APPENDDATE', num(1000)], ['POP3_LAST_LOGIN', num(0)], ['UIDVALIDITY', num(1000)],
    ['PARTITION', atom('default')], ['ACL', atom('big\tlrswipkxtecdan\t')], ['OPTIONS', atom('P')],
    ['RECORD', { kind: 'list', items: [{ kind: 'kvlist', items: [
      { key: 'UID', value: num(1) }, { key: 'MODSEQ', value: num(2) }, { key: 'LAST_UPDATED', value: num(1000) }, { key: 'INTERNALDATE', value: num(1000) },
      { key: 'GUID', value: atom(guid) }, { key: 'SIZE', value: num(size) }, { key: 'FLAGS', value: { kind: 'list', items: [] } },
    ] }] }],
  ];
  return { key: 'MAILBOX', value: { kind: 'kvlist', items: fields.map(([key, value]) => ({ key, value })) } };
}

interface Received {
  guid: string | null;
  sha1: string | null;
  size: number;
  restored: string[];
}

/** The destination: one session at a time, replies as sync_server's for a new user. */
async function peer(t: { teardown: (f: () => void) => void }): Promise<{ port: number; got: Received }> {
  const got: Received = { guid: null, sha1: null, size: 0, restored: [] };
  const sink: BodySink = {
    open(h) {
      got.guid = h.guid ?? null;
      const hash = createHash('sha1');
      return {
        write: (c) => (hash.update(c), (got.size += c.length), true),
        onDrain: (cb) => setImmediate(cb),
        end: () => ((got.sha1 = hash.digest('hex')), { done: Promise.resolve(), ref: null }),
        abort: () => undefined,
      };
    },
  };
  const server = net.createServer((sock) => {
    const reader = new CommandReader({ sink });
    sock.pipe(reader);
    reader.on('error', () => sock.destroy());
    sock.on('error', () => undefined);
    sock.write('* SASL PLAIN\r\n* OK test Cyrus sync server 3.6.1\r\n');
    void (async () => {
      for (;;) {
        const c = await reader.nextCommand().catch(() => null);
        if (c === null) return sock.end();
        const key = c.args[0]?.kind === 'atom' ? c.args[0].value : '';
        if (c.verb === 'APPLY' && key === 'RESERVE') {
          const kv = c.args[1]!.kind === 'kvlist' ? c.args[1]!.items : [];
          const guids = kv.find((i) => i.key === 'GUID')!.value;
          const items = guids.kind === 'list' ? guids.items.map((g) => (g.kind === 'atom' ? g.value : '')) : [];
          sock.write(`* MISSING (${items.join(' ')})\r\n`);
        }
        if (c.verb === 'RESTORE') got.restored.push(key);
        await Promise.all(c.bodies.map((b) => b.done));
        sock.write(c.verb === 'EXIT' ? 'OK Finished\r\n' : 'OK success\r\n');
      }
    })();
  });
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  t.teardown(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, got };
}

async function restore(dir: string, file: string, port: number): Promise<number> {
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(conf, [`configdirectory: ${dir}`, `temp_path: ${dir}`, 'restore_authname: admin', 'restore_password: pw'].join('\n') + '\n');
  const args = [CLI, 'restore', '-C', conf, '-U', '-a', '--at', '4000000000', `127.0.0.1:${port}`, '-f', file];
  return (await runMeasured(dir, args)).hwmKiB;
}

test('a 512 MiB message is restored with flat memory', async (t) => {
  if (!fs.existsSync(CLI)) {
    t.fail('run npm run build first');
    return;
  }
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-rhuge-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const results: { size: number; hwmKiB: number }[] = [];
  for (const size of [8 * 1024 * 1024, 512 * 1024 * 1024]) {
    const file = path.join(dir, `big_${size}`);
    const guid = await writeHugeBackup(file, size, (g) => [mailbox(g, size)]);
    const { port, got } = await peer(t);
    const hwmKiB = await restore(dir, file, port);
    t.is(got.guid, guid);
    t.is(got.sha1, guid);
    t.is(got.size, size);
    t.deepEqual(got.restored, ['MAILBOX']);
    t.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('cyrsync-restore-')), [], 'staging removed');
    results.push({ size, hwmKiB });
  }
  const s = results[0]!;
  const b = results[1]!;
  t.log(`peak RSS of restore: ${Math.round(s.hwmKiB / 1024)} MiB for 8 MiB, ${Math.round(b.hwmKiB / 1024)} MiB for 512 MiB`);
  t.true(b.hwmKiB < 100 * 1024, `peak ${b.hwmKiB} KiB`);
  t.true(b.hwmKiB - s.hwmKiB < 32 * 1024, `peak grows with the message: ${s.hwmKiB} -> ${b.hwmKiB} KiB`);
});
