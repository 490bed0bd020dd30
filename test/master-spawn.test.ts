/**
 * `cyrsync sync-server` started the way Cyrus master(8) starts a service:
 * status pipe (a FIFO) on fd 3, listening socket on fd 4, and fds 0-2
 * captured to prove nothing is ever written there.
 */
import test from 'ava';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EX_CONFIG } from '../src/config.js';
import {
  MASTER_SERVICE_AVAILABLE as A,
  MASTER_SERVICE_CONNECTION as C,
  MASTER_SERVICE_UNAVAILABLE as U,
  NOTIFY_MESSAGE_SIZE,
  decodeNotifyMessage,
} from '../src/server/master-service.js';
import { CsyncTestClient } from './helpers/csync-client.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'src', 'cli.ts');
const NODE_ARGS = ['--import', 'tsx', CLI];

interface Store {
  dir: string;
  conf: string;
  configDir: string;
}

const made: string[] = [];
test.after.always(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

function makeStore(extra: string[] = []): Store {
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-master-'));
  made.push(dir);
  const configDir = path.join(dir, 'conf');
  for (const d of [configDir, path.join(dir, 'spool'), path.join(dir, 'tmp')]) fs.mkdirSync(d, { recursive: true });
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(
    conf,
    [
      `configdirectory: ${configDir}`,
      'defaultpartition: default',
      `partition-default: ${dir}/spool`,
      `temp_path: ${dir}/tmp`,
      'servername: master-test',
      'admins: admin',
      'allowplaintext: yes',
      `cyrsync_log_file: ${dir}/service.log`,
      'cyrsync_log_level: debug',
      ...extra,
    ].join('\n') + '\n',
  );
  return { dir, conf, configDir };
}

async function setPassword(s: Store, user: string, pw: string): Promise<void> {
  const child = spawn(process.execPath, [...NODE_ARGS, 'passwd', '-C', s.conf, user], { cwd: ROOT, stdio: ['pipe', 'ignore', 'pipe'] });
  child.stdin!.end(`${pw}\n`);
  const [code] = (await once(child, 'exit')) as [number];
  if (code !== 0) throw new Error(`cyrsync passwd failed: ${code}`);
}

/** A connected pair of sockets: one end becomes a descriptor of the child, the other reads what it writes. */
async function socketPair(): Promise<{ inner: net.Socket; outer: net.Socket; close: () => void }> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const outer = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  const [inner] = (await once(srv, 'connection')) as [net.Socket];
  srv.close();
  return { inner, outer, close: () => (inner.destroy(), outer.destroy()) };
}

interface Service {
  child: ChildProcess;
  port: number;
  messages: { message: number; pid: number }[];
  /** Everything the child wrote to fds 0, 1 and 2. */
  stdio: () => string;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
  stop: () => void;
}

async function startService(
  s: Store,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  unixPath?: string,
  command: string[] = [...NODE_ARGS, 'sync-server'],
): Promise<Service> {
  const fifo = path.join(s.dir, `status-${Date.now()}-${Math.random().toString(16).slice(2)}.fifo`);
  execFileSync('mkfifo', [fifo]);
  const rfd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const wfd = fs.openSync(fifo, 'w');
  const listener = net.createServer();
  if (unixPath) listener.listen(unixPath);
  else listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const port = unixPath ? 0 : (listener.address() as net.AddressInfo).port;
  const lfd = (listener as unknown as { _handle: { fd: number } })._handle.fd;
  const stdin = await socketPair();
  const child = spawn(process.execPath, [...command, '-C', s.conf, ...args], {
    cwd: ROOT,
    stdio: [stdin.inner, 'pipe', 'pipe', wfd, lfd],
    env: { ...process.env, CYRUS_SERVICE: 'syncserver', CYRUS_ID: '0', ...env },
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  // The child holds its own copies now; this process must not accept on the socket.
  fs.closeSync(wfd);
  // Closing a UNIX-domain server removes its path: keep a second name for the socket the child holds.
  if (unixPath) fs.linkSync(unixPath, `${unixPath}.keep`);
  listener.close();
  if (unixPath) {
    await once(listener, 'close');
    fs.renameSync(`${unixPath}.keep`, unixPath);
  }
  let written = '';
  child.stdout!.on('data', (b: Buffer) => (written += b.toString('latin1')));
  child.stderr!.on('data', (b: Buffer) => (written += b.toString('latin1')));
  stdin.outer.on('data', (b: Buffer) => (written += b.toString('latin1')));
  const messages: Service['messages'] = [];
  const status = new net.Socket({ fd: rfd, readable: true, writable: false });
  let pending = Buffer.alloc(0);
  status.on('data', (b: Buffer) => {
    pending = Buffer.concat([pending, b]);
    while (pending.length >= NOTIFY_MESSAGE_SIZE) {
      messages.push(decodeNotifyMessage(pending.subarray(0, NOTIFY_MESSAGE_SIZE)));
      pending = pending.subarray(NOTIFY_MESSAGE_SIZE);
    }
  });
  status.on('error', () => undefined);
  void exited.finally(() => {
    setTimeout(() => {
      status.destroy();
      stdin.close();
      fs.rmSync(fifo, { force: true });
    }, 200);
  });
  return {
    child,
    port,
    messages,
    stdio: () => written,
    exited,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

const GREETING = ['* SASL PLAIN LOGIN', '* COMPRESS DEFLATE', '* SIEVE-MAILBOX', /^\* OK master-test Cyrus sync server \S+$/];

function checkGreeting(t: import('ava').ExecutionContext, lines: string[]): void {
  t.is(lines.length, GREETING.length, lines.join('|'));
  GREETING.forEach((g, i) => (typeof g === 'string' ? t.is(lines[i], g) : t.regex(lines[i] ?? '', g)));
}

async function exitSession(c: CsyncTestClient): Promise<void> {
  c.sendLine('EXIT');
  const r = await c.reply();
  if (r.at(-1) !== 'OK Finished') throw new Error(`EXIT: ${r.join('|')}`);
  await c.waitClosed();
}

test('master mode: UNAVAILABLE + CONNECTION per connection, AVAILABLE between, exit after -U uses; greeting first; nothing on fds 0-2', async (t) => {
  const s = makeStore();
  const svc = await startService(s, ['-U', '3', '-T', '0']);
  t.teardown(svc.stop);
  for (let i = 0; i < 3; i++) {
    const c = await CsyncTestClient.connect(svc.port);
    const g = await c.greeting();
    checkGreeting(t, g);
    // The very first bytes on the connection are the greeting's.
    t.true(c.received.join('').startsWith('* SASL PLAIN LOGIN\r\n'));
    c.sendLine('NOOP');
    t.deepEqual(await c.reply(), ['OK Noop completed']);
    await exitSession(c);
  }
  const [code, signal] = await svc.exited;
  t.is(code, 0);
  t.is(signal, null);
  const pid = svc.child.pid!;
  t.deepEqual(svc.messages, [U, C, A, U, C, A, U, C].map((message) => ({ message, pid })));
  t.is(svc.stdio(), '');
  const log = fs.readFileSync(path.join(s.dir, 'service.log'), 'utf8');
  t.regex(log, /"reason":"uses"/);
  // one process, one store: opening it again would also clear the live sessions' staging files
  t.is(log.match(/replica store open/g)?.length, 1);
});

test('master mode: -U 0 serves one connection, like Cyrus', async (t) => {
  const s = makeStore();
  const svc = await startService(s, ['-U', '0']);
  t.teardown(svc.stop);
  const c = await CsyncTestClient.connect(svc.port);
  checkGreeting(t, await c.greeting());
  await exitSession(c);
  const [code] = await svc.exited;
  t.is(code, 0);
  t.deepEqual(svc.messages.map((m) => m.message), [U, C]);
  t.is(svc.stdio(), '');
});

test('master mode: -T ends a used process that gets no new connection; a fresh one waits for its first', async (t) => {
  const s = makeStore();
  const svc = await startService(s, ['-U', '10', '-T', '1']);
  t.teardown(svc.stop);
  // Longer than 2T: a process that has served nobody must still be waiting.
  await new Promise((r) => setTimeout(r, 2500));
  t.is(svc.child.exitCode, null);
  const c = await CsyncTestClient.connect(svc.port);
  checkGreeting(t, await c.greeting());
  await exitSession(c);
  const [code] = await svc.exited;
  t.is(code, 0);
  t.deepEqual(svc.messages.map((m) => m.message), [U, C, A]);
  t.regex(fs.readFileSync(path.join(s.dir, 'service.log'), 'utf8'), /"reason":"timeout"/);
  t.is(svc.stdio(), '');
});

test('master mode: SIGTERM while waiting ends the process quietly', async (t) => {
  const s = makeStore();
  const svc = await startService(s, []);
  t.teardown(svc.stop);
  const c = await CsyncTestClient.connect(svc.port);
  checkGreeting(t, await c.greeting());
  await exitSession(c);
  // wait for AVAILABLE: the process is idle again
  while (svc.messages.length < 3) await new Promise((r) => setTimeout(r, 20));
  svc.child.kill('SIGTERM');
  const [code] = await svc.exited;
  t.is(code, 0);
  t.deepEqual(svc.messages.map((m) => m.message), [U, C, A]);
  t.is(svc.stdio(), '');
});

test('master mode: SIGTERM during a session answers BYE at the next command boundary', async (t) => {
  const s = makeStore();
  const svc = await startService(s, []);
  t.teardown(svc.stop);
  const c = await CsyncTestClient.connect(svc.port);
  checkGreeting(t, await c.greeting());
  while (svc.messages.length < 2) await new Promise((r) => setTimeout(r, 20));
  svc.child.kill('SIGTERM');
  t.deepEqual(await c.reply(), ['BYE shutting down']);
  await c.waitClosed();
  const [code] = await svc.exited;
  t.is(code, 0);
  t.deepEqual(svc.messages.map((m) => m.message), [U, C]);
  t.is(svc.stdio(), '');
});

const PLAIN = (user: string, pw: string) => Buffer.from(`\0${user}\0${pw}`).toString('base64');

test('telemetry: <configdirectory>/log/<user>/<service>-<pid> in Cyrus format, from the first command after login', async (t) => {
  const s = makeStore();
  await setPassword(s, 'admin', 'adminpw');
  fs.mkdirSync(path.join(s.configDir, 'log', 'admin'), { recursive: true });
  const svc = await startService(s, ['-U', '1']);
  t.teardown(svc.stop);
  const c = await CsyncTestClient.connect(svc.port);
  checkGreeting(t, await c.greeting());
  c.sendLine(`AUTHENTICATE PLAIN ${PLAIN('admin', 'adminpw')}`);
  t.deepEqual(await c.reply(), ['OK Success (no protection)']);
  c.sendLine('NOOP');
  t.deepEqual(await c.reply(), ['OK Noop completed']);
  c.sendLine('GET USER nosuchuser');
  const r = await c.reply();
  await exitSession(c);
  await svc.exited;
  const file = path.join(s.configDir, 'log', 'admin', `syncserver-${svc.child.pid}`);
  t.true(fs.existsSync(file), file);
  const text = fs.readFileSync(file, 'latin1');
  const header = /^---------- admin (Sun|Mon|Tue|Wed|Thu|Fri|Sat) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d \d{4}\n\n/.exec(text);
  t.truthy(header, text.slice(0, 80));
  const body = text.slice(header![0].length).replace(/([<>])\d+\1/g, '$1T$1');
  t.is(body, `<T<NOOP\r\n>T>OK Noop completed\r\n<T<GET USER nosuchuser\r\n>T>${r.map((l) => `${l}\r\n`).join('')}<T<EXIT\r\n>T>OK Finished\r\n`);
  // Timestamps are UNIX seconds of this run.
  const stamps = [...text.matchAll(/[<>](\d+)[<>]/g)].map((m) => Number(m[1]));
  t.true(stamps.length === 6 && stamps.every((x) => Math.abs(x - Date.now() / 1000) < 600));
  // Nothing for a user without a directory; the password is never in any file.
  t.false(fs.existsSync(path.join(s.configDir, 'log', 'other')));
  t.false(text.includes(PLAIN('admin', 'adminpw')));
  t.is(svc.stdio(), '');
});

test('telemetry: no log directory for the user, no file', async (t) => {
  const s = makeStore();
  await setPassword(s, 'admin', 'adminpw');
  fs.mkdirSync(path.join(s.configDir, 'log', 'someoneelse'), { recursive: true });
  const svc = await startService(s, ['-U', '1']);
  t.teardown(svc.stop);
  const c = await CsyncTestClient.connect(svc.port);
  await c.greeting();
  c.sendLine(`AUTHENTICATE PLAIN ${PLAIN('admin', 'adminpw')}`);
  t.deepEqual(await c.reply(), ['OK Success (no protection)']);
  await exitSession(c);
  await svc.exited;
  t.deepEqual(fs.readdirSync(path.join(s.configDir, 'log')), ['someoneelse']);
  t.deepEqual(fs.readdirSync(path.join(s.configDir, 'log', 'someoneelse')), []);
});

test('master mode: a bad imapd.conf exits with EX_CONFIG, no status message, nothing on fds 0-2', async (t) => {
  const s = makeStore(['sync_timeout: whenever']);
  const svc = await startService(s, []);
  t.teardown(svc.stop);
  const [code] = await svc.exited;
  t.is(code, EX_CONFIG);
  await new Promise((r) => setTimeout(r, 100));
  t.deepEqual(svc.messages, []);
  t.is(svc.stdio(), '');
});

test('stdin/stdout mode: without fds 3 and 4 one session runs on stdin/stdout, logs never on fd 2', async (t) => {
  const s = makeStore();
  const child = spawn(process.execPath, [...NODE_ARGS, 'sync-server', '-C', s.conf], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => void child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString('latin1')));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString('latin1')));
  const exited = once(child, 'exit');
  while (!out.includes('* OK ')) {
    if (child.exitCode !== null || child.signalCode !== null) return t.fail(`exited before the greeting: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  child.stdin!.end('NOOP\r\nEXIT\r\n');
  const [code] = (await exited) as [number];
  t.is(code, 0);
  t.regex(out, /^\* SASL PLAIN LOGIN\r\n\* COMPRESS DEFLATE\r\n\* SIEVE-MAILBOX\r\n\* OK master-test Cyrus sync server \S+\r\nOK Noop completed\r\nOK Finished\r\n$/);
  t.is(err, '');
  t.regex(fs.readFileSync(path.join(s.dir, 'service.log'), 'utf8'), /connection closed/);
});

test('master mode: a store that cannot be opened still greets, fails the login, ends the process; nothing on fds 0-2', async (t) => {
  const s = makeStore();
  await setPassword(s, 'admin', 'adminpw');
  // The partition is a regular file: the replica store cannot be created there.
  const conf = fs.readFileSync(s.conf, 'utf8').replace(/^partition-default: .*$/m, `partition-default: ${s.conf}`);
  fs.writeFileSync(s.conf, conf);
  const svc = await startService(s, []);
  t.teardown(svc.stop);
  const c = await CsyncTestClient.connect(svc.port);
  checkGreeting(t, await c.greeting());
  c.sendLine(`AUTHENTICATE PLAIN ${PLAIN('admin', 'adminpw')}`);
  const r = await c.reply();
  t.false(r.some((l) => l.startsWith('OK')), r.join('|'));
  await c.waitClosed();
  const [code] = await svc.exited;
  t.not(code, 0);
  t.is(svc.stdio(), '');
  const log = fs.readFileSync(path.join(s.dir, 'service.log'), 'utf8');
  t.regex(log, /cannot open the replica store/);
  t.notRegex(log, /unhandled promise rejection/);
  t.is(log.match(/cannot open the replica store/g)?.length, 1, 'the store is tried once');
});

test('master mode on a UNIX socket: the client is the Cyrus user, an administrator, without AUTHENTICATE (as sync_server)', async (t) => {
  const s = makeStore(['cyrus_user: mailsrv']);
  const sock = path.join(s.dir, 'csync.sock');
  const svc = await startService(s, ['-U', '1'], {}, sock);
  t.teardown(svc.stop);
  const c = await CsyncTestClient.connect(sock);
  // Already logged in: no capability lines, just the OK.
  t.deepEqual((await c.greeting()).map((l) => l.replace(/ \S+$/, '')), ['* OK master-test Cyrus sync server']);
  c.sendLine('GET USER nobody');
  const r = await c.reply();
  t.is(r.at(-1), 'OK success', r.join('|'));
  await exitSession(c);
  const [code] = await svc.exited;
  t.is(code, 0);
  t.deepEqual(svc.messages.map((m) => m.message), [U, C]);
  t.regex(fs.readFileSync(path.join(s.dir, 'service.log'), 'utf8'), /"user":"mailsrv"/);
  t.is(svc.stdio(), '');
});

test('systemd socket activation (LISTEN_PID/LISTEN_FDS, Accept=no): the passed socket is served like --listen', async (t) => {
  const s = makeStore();
  const listener = net.createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const port = (listener.address() as net.AddressInfo).port;
  const lfd = (listener as unknown as { _handle: { fd: number } })._handle.fd;
  // exec keeps the shell's pid: LISTEN_PID names the node process, as systemd does.
  const script = `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`;
  const child = spawn('/bin/sh', ['-c', script, process.execPath, ...NODE_ARGS, 'sync-server', '-C', s.conf], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe', lfd],
  });
  t.teardown(() => child.kill('SIGKILL'));
  listener.close();
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString('utf8')));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString('utf8')));
  const exited = once(child, 'exit');
  while (!out.includes('"listening"')) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const clients = await Promise.all([CsyncTestClient.connect(port), CsyncTestClient.connect(port)]);
  for (const c of clients) checkGreeting(t, await c.greeting());
  for (const c of clients) await exitSession(c);
  child.kill('SIGTERM');
  const [code] = (await exited) as [number];
  t.is(code, 0);
  // Standalone logging: JSON lines on stdout.
  for (const line of out.trim().split('\n')) t.notThrows(() => void JSON.parse(line), line);
  t.regex(out, /"msg":"listening"/);
});

test('systemd Accept=yes (the connection itself on fd 3 and stdin/stdout): one session on stdin/stdout', async (t) => {
  const s = makeStore();
  const pair = await socketPair();
  const script = `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`;
  const child = spawn('/bin/sh', ['-c', script, process.execPath, ...NODE_ARGS, 'sync-server', '-C', s.conf], {
    cwd: ROOT,
    stdio: [pair.inner, pair.inner, 'pipe', pair.inner],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString('utf8')));
  const c = new CsyncTestClient(pair.outer);
  checkGreeting(t, await c.greeting());
  c.sendLine('NOOP');
  t.deepEqual(await c.reply(), ['OK Noop completed']);
  c.sendLine('EXIT');
  t.deepEqual(await c.reply(), ['OK Finished']);
  const [code] = (await once(child, 'exit')) as [number];
  t.is(code, 0);
  t.is(err, '');
  pair.close();
});

test('master mode, backup profile (backupd): the backupd greeting and the same service protocol', async (t) => {
  const s = makeStore();
  fs.appendFileSync(s.conf, `backuppartition-default: ${s.dir}/backups\nbackup_staging_path: ${s.dir}/staging\n`);
  // What `cyrsync backupd` runs: the daemon with the backup profile.
  const script = `import(${JSON.stringify(path.join(ROOT, 'src', 'server', 'daemon.ts'))}).then((m) => m.runDaemon('backup', process.argv.slice(1))).then((c) => { process.exitCode = c; })`;
  const svc = await startService(s, ['-U', '1'], { CYRUS_SERVICE: 'backupd' }, undefined, ['--import', 'tsx', '-e', script, '--']);
  t.teardown(svc.stop);
  const c = await CsyncTestClient.connect(svc.port);
  const g = await c.greeting();
  t.regex(g.at(-1)!, /^\* OK master-test Cyrus backup server \S+$/);
  t.false(g.includes('* SIEVE-MAILBOX'));
  await exitSession(c);
  const [code] = await svc.exited;
  t.is(code, 0);
  t.deepEqual(svc.messages.map((m) => m.message), [U, C]);
  t.is(svc.stdio(), '');
});
