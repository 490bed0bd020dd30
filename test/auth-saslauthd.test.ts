/**
 * saslauthd client against a real saslauthd (Debian sasl2-bin). saslauthd
 * runs with the `rimap` back-end pointed at a tiny IMAP responder inside the
 * test, so nothing outside a temporary directory is touched (the `sasldb`
 * back-end would need the system-wide /etc/sasldb2).
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config.js';
import { buildSaslauthdRequest, saslauthdCheck } from '../src/server/auth/saslauthd.js';
import { authenticate, createPasswordChecker } from '../src/server/auth/verify.js';
import { setPasswordSync } from '../src/server/auth/passwd.js';

const SASLAUTHD = '/usr/sbin/saslauthd';
const SETPRIV = '/usr/bin/setpriv';
const haveSaslauthd = existsSync(SASLAUTHD);
const realTest = haveSaslauthd ? test.serial : test.skip;
const realTitle = (s: string): string => (haveSaslauthd ? s : `${s} (skipped: sasl2-bin is not installed)`);

const USERS: Record<string, string> = { alice: 's3cret', bob: 'pw b' };

interface Harness {
  dir: string;
  mux: string;
  imap: Server;
  daemon: ChildProcess;
  logins: string[];
}

let h: Harness | undefined;

function unquote(s: string): string {
  return s.replace(/\\(.)/g, '$1');
}

async function startHarness(): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'cyrsync-saslauthd-'));
  const logins: string[] = [];
  const imap = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.write('* OK test IMAP ready\r\n');
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        const m = /^(\S+) LOGIN "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$/.exec(line);
        if (m) {
          const user = unquote(m[2]!);
          logins.push(user);
          sock.write(USERS[user] !== undefined && USERS[user] === unquote(m[3]!) ? `${m[1]} OK logged in\r\n` : `${m[1]} NO login failed\r\n`);
        } else if (/^\S+ LOGOUT/.test(line)) sock.end('* BYE\r\n');
        else sock.write('* BAD unexpected\r\n');
      }
    });
  });
  await new Promise<void>((r) => imap.listen(0, '127.0.0.1', r));
  const port = (imap.address() as AddressInfo).port;
  // -d keeps saslauthd in the foreground as our child, so it is stopped by its own pid.
  // It runs in its own process group: on SIGTERM saslauthd signals its whole group.
  // Where setpriv exists, saslauthd also gets SIGTERM if this worker dies before the after hook.
  const args = ['-a', 'rimap', '-O', `127.0.0.1/${port}`, '-m', dir, '-n', '1', '-d'];
  const [cmd, argv] = existsSync(SETPRIV) ? [SETPRIV, ['--pdeathsig', 'TERM', SASLAUTHD, ...args]] : [SASLAUTHD, args];
  const daemon = spawn(cmd, argv, {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  let stderr = '';
  daemon.stderr!.on('data', (d) => (stderr += d));
  const mux = join(dir, 'mux');
  const harness = { dir, mux, imap, daemon, logins };
  try {
    for (let i = 0; i < 100; i++) {
      if (existsSync(mux) && statSync(mux).isSocket()) break;
      if (daemon.exitCode !== null) throw new Error(`saslauthd exited: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!existsSync(mux)) throw new Error(`saslauthd did not create ${mux}: ${stderr}`);
  } catch (err) {
    // Nothing may outlive a failed start: the after hook only sees a harness that started.
    await stopHarness(harness);
    throw err;
  }
  return harness;
}

async function stopHarness(s: Harness): Promise<void> {
  if (s.daemon.exitCode === null && s.daemon.signalCode === null) {
    const exited = new Promise((r) => s.daemon.once('exit', r));
    s.daemon.kill('SIGTERM');
    await exited;
  }
  await new Promise((r) => s.imap.close(r));
  rmSync(s.dir, { recursive: true, force: true });
}

test.before(async () => {
  if (haveSaslauthd) h = await startHarness();
});

test.after.always(async () => {
  if (h) await stopHarness(h);
});

test('request layout: four counted strings, user@realm split at the last @', (t) => {
  const req = buildSaslauthdRequest('bob@ex@example.org', 'pw', 'csync', '')!;
  const fields: string[] = [];
  let off = 0;
  while (off < req.length) {
    const n = req.readUInt16BE(off);
    fields.push(req.subarray(off + 2, off + 2 + n).toString());
    off += 2 + n;
  }
  t.deepEqual(fields, ['bob@ex', 'pw', 'csync', 'example.org']);
  t.deepEqual([...buildSaslauthdRequest('u', '', 's', 'r')!], [0, 1, 117, 0, 0, 0, 1, 115, 0, 1, 114]);
  t.is(buildSaslauthdRequest('u', 'x'.repeat(9000), 'csync', ''), null);
});

realTest(realTitle('real saslauthd accepts the right password and refuses a wrong one'), async (t) => {
  t.deepEqual(await saslauthdCheck(h!.mux, 'alice', 's3cret'), { result: 'ok' });
  const bad = await saslauthdCheck(h!.mux, 'alice', Buffer.from('nope'));
  t.is(bad.result, 'badauth');
  t.regex(bad.result === 'badauth' ? bad.text : '', /^NO/);
  // The realm travels as its own field (rimap ignores it): the IMAP side sees only "bob".
  t.deepEqual(await saslauthdCheck(h!.mux, 'bob@example.org', 'pw b'), { result: 'ok' });
  t.true(h!.logins.includes('bob'));
  t.false(h!.logins.some((l) => l.includes('@')));
});

realTest(realTitle('sasl_pwcheck_method: saslauthd, and auxprop falling back to saslauthd'), async (t) => {
  const conf = `configdirectory: ${h!.dir}\nsasl_saslauthd_path: ${h!.mux}\nadmins: alice\n`;
  const s = parseConfig(`${conf}sasl_pwcheck_method: saslauthd\n`).settings;
  const checker = createPasswordChecker(s);
  const ok = await authenticate({ mechanism: 'PLAIN', authcid: 'Alice', authzid: '', password: Buffer.from('s3cret') }, s, checker);
  t.deepEqual(ok, { ok: true, userid: 'alice', admin: true });
  const bad = await authenticate({ mechanism: 'LOGIN', authcid: 'alice', authzid: '', password: Buffer.from('x') }, s, checker);
  t.is(bad.ok ? '' : bad.reply, 'NO authentication failure');

  // auxprop first: a user missing from the password file is then tried with saslauthd.
  const both = parseConfig(`${conf}sasl_pwcheck_method: auxprop saslauthd\n`).settings;
  setPasswordSync(both.cyrsync_passwd_file, 'carol', 'filepw', { N: 1024, r: 8, p: 1 });
  const c2 = createPasswordChecker(both);
  t.deepEqual(c2.methods, ['auxprop', 'saslauthd']);
  t.deepEqual(await c2.check('carol', Buffer.from('filepw')), { result: 'ok' });
  t.deepEqual(await c2.check('alice', Buffer.from('s3cret')), { result: 'ok' });
  t.is((await c2.check('carol', Buffer.from('wrong'))).result, 'badauth');
});

test('saslauthd unreachable is "unavailable" and answers NO generic failure', async (t) => {
  const empty = mkdtempSync(join(tmpdir(), 'cyrsync-nosasl-'));
  t.teardown(() => rmSync(empty, { recursive: true, force: true }));
  const missing = join(empty, 'mux');
  const r = await saslauthdCheck(missing, 'alice', 'x');
  t.is(r.result, 'unavailable');
  t.regex(r.result === 'unavailable' ? r.text : '', /cannot connect to saslauthd server at .*mux: ENOENT/);
  const s = parseConfig(`configdirectory: /nonexistent\nsasl_pwcheck_method: saslauthd\nsasl_saslauthd_path: ${missing}\n`).settings;
  const out = await authenticate({ mechanism: 'PLAIN', authcid: 'a', authzid: '', password: Buffer.from('x') }, s, createPasswordChecker(s));
  t.is(out.ok ? '' : out.reply, 'NO generic failure');
});

test('a saslauthd that never answers times out', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cyrsync-mute-'));
  const path = join(dir, 'mux');
  const mute = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.resume(); // read and ignore, so the client's close is seen
  });
  t.teardown(() => new Promise<void>((r) => mute.close(() => r())).then(() => rmSync(dir, { recursive: true, force: true })));
  await new Promise<void>((r) => mute.listen(path, r));
  const r = await saslauthdCheck(path, 'a', 'b', { timeoutMs: 200 });
  t.is(r.result, 'unavailable');
  t.regex(r.result === 'unavailable' ? r.text : '', /no answer from saslauthd/);
});

test('short or malformed saslauthd replies are "unavailable"', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cyrsync-liar-'));
  const path = join(dir, 'mux');
  let reply = Buffer.from([0, 1, 0x4f]);
  const liar = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.once('data', () => sock.end(reply));
  });
  t.teardown(() => new Promise<void>((r) => liar.close(() => r())).then(() => rmSync(dir, { recursive: true, force: true })));
  await new Promise<void>((r) => liar.listen(path, r));
  t.deepEqual(await saslauthdCheck(path, 'a', 'b'), { result: 'unavailable', text: 'bad response from saslauthd' });
  reply = Buffer.from([0, 10, 0x4f, 0x4b]);
  t.deepEqual(await saslauthdCheck(path, 'a', 'b'), { result: 'unavailable', text: 'read failed' });
  reply = Buffer.from([0, 2, 0x4f, 0x4b]);
  t.deepEqual(await saslauthdCheck(path, 'a', 'b'), { result: 'ok' });
});
