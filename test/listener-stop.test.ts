/**
 * Graceful stop of the standalone listener (SIGTERM): new connections are
 * refused at once; a command being received when the signal arrives is
 * finished and answered, then `BYE shutting down`; an idle session gets
 * `BYE` at once, flushed before the close; the process exits 0 once every
 * session has ended, and a session stuck in the middle of a command is cut
 * off after the grace period.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HELPER = fileURLToPath(new URL('./helpers/backupd-server.ts', import.meta.url));

interface Server {
  child: ChildProcess;
  port: number;
  exited: Promise<number | null>;
  stderr: () => string;
}

async function startServer(t: ExecutionContext, grace?: number): Promise<Server> {
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-listener-stop-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const d of ['conf', 'backups', 'staging', 'tmp']) fs.mkdirSync(path.join(dir, d));
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(
    conf,
    [`configdirectory: ${dir}/conf`, `backuppartition-default: ${dir}/backups`, `backup_staging_path: ${dir}/staging`, `temp_path: ${dir}/tmp`, 'servername: stop-test', 'admins: admin', ''].join('\n'),
  );
  const args = ['--import=tsx', HELPER, '-C', conf, '--listen', '127.0.0.1:0', ...(grace === undefined ? [] : ['--grace', String(grace)])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', () => reject(new Error(`the server exited before listening\n${err}`)));
  });
  return { child, port, exited, stderr: () => err };
}

/** A client reading CRLF lines; `text()` is everything received so far. */
async function connect(t: ExecutionContext, port: number) {
  const sock = net.connect(port, '127.0.0.1');
  t.teardown(() => sock.destroy());
  let got = '';
  let closed = false;
  const waiters: (() => void)[] = [];
  const wake = () => waiters.splice(0).forEach((w) => w());
  sock.on('data', (d: Buffer) => ((got += d.toString('latin1')), wake()));
  sock.on('close', () => ((closed = true), wake()));
  sock.on('error', () => undefined);
  await once(sock, 'connect');
  const until = async (cond: () => boolean) => {
    while (!cond()) await new Promise<void>((r) => waiters.push(r));
  };
  await until(() => got.includes('* OK ') || closed);
  return {
    sock,
    text: () => got,
    /** the text received after the greeting, once the connection is closed */
    async rest(): Promise<string> {
      await until(() => closed);
      return got.slice(got.indexOf('\r\n', got.indexOf('* OK ')) + 2);
    },
    async reply(): Promise<string> {
      const from = got.length;
      await until(() => got.slice(from).includes('\r\n') || closed);
      return got.slice(from);
    },
  };
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });
}

test('SIGTERM: the command being received is finished and answered, then BYE; new connections are refused; exit 0', async (t) => {
  const srv = await startServer(t);
  const busy = await connect(t, srv.port);
  const idle = await connect(t, srv.port);
  // One write: the start of the second NOOP reaches the server with the first, which is answered.
  busy.sock.write('NOOP\r\nNOOP');
  t.is(await busy.reply(), 'OK Noop completed\r\n');
  idle.sock.write('NOOP\r\n');
  t.is(await idle.reply(), 'OK Noop completed\r\n');
  srv.child.kill('SIGTERM');
  t.is(await idle.rest(), 'OK Noop completed\r\nBYE shutting down\r\n');
  t.true(await refused(srv.port), 'a new connection after SIGTERM is refused');
  t.false(busy.text().includes('BYE'), 'no BYE before the command in progress is answered');
  busy.sock.write('\r\n');
  t.is(await busy.rest(), 'OK Noop completed\r\nOK Noop completed\r\nBYE shutting down\r\n');
  t.is(await srv.exited, 0, srv.stderr());
});

test('SIGTERM: a session stuck in the middle of a command is cut off after the grace period; the process exits 0', async (t) => {
  const srv = await startServer(t, 500);
  const stuck = await connect(t, srv.port);
  const other = await connect(t, srv.port);
  stuck.sock.write('NOOP\r\nNOO');
  t.is(await stuck.reply(), 'OK Noop completed\r\n');
  other.sock.write('NOOP\r\n');
  t.is(await other.reply(), 'OK Noop completed\r\n');
  srv.child.kill('SIGTERM');
  t.is(await other.rest(), 'OK Noop completed\r\nBYE shutting down\r\n');
  t.is(await stuck.rest(), 'OK Noop completed\r\n');
  t.is(await srv.exited, 0, srv.stderr());
  t.regex(srv.stderr(), /still busy after the grace period/);
});
