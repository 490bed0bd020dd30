/**
 * The csync session over real TCP against the real replica store:
 * greeting, authentication states, refusals, COMPRESS, STARTTLS, framing
 * errors, a connection lost in the middle of a literal, idle timeout.
 * Every case asserts the reply lines AND the store afterwards.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, watch } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import * as zlib from 'node:zlib';
import pino from 'pino';
import { setPasswordSync } from '../src/server/auth/index.js';
import { CsyncTestClient } from './helpers/csync-client.js';
import { parseConfig } from '../src/config.js';
import { createAuthenticator } from '../src/server/daemon.js';
import { Session, type SessionOptions } from '../src/server/session.js';
import { createReplicaSink } from '../sinks/replica/index.js';
import type { Sink } from '../sinks/sink.js';

interface Server {
  port: number;
  dir: string;
  sink: Sink;
  /** Resolves when every session the server accepted so far has finished, its clean-up included. */
  sessionsEnded(): Promise<void>;
  close(): Promise<void>;
}

const silent = pino({ level: 'silent' });

function selfSignedCert(dir: string): { cert: string; key: string } | null {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost'], { stdio: 'ignore' });
    return { cert, key };
  } catch {
    return null;
  }
}

/** A server on a free port with a fresh store; closed in t.teardown (and by close(), which may come first). */
async function startServer(t: ExecutionContext, overrides: Partial<SessionOptions> & { conf?: string; limits?: SessionOptions['limits']; tls?: boolean } = {}): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'cyrsync-session-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let extra = overrides.conf ?? '';
  let tlsContext: tls.SecureContext | undefined;
  if (overrides.tls) {
    const c = selfSignedCert(dir);
    if (!c) throw new Error('openssl is needed for the STARTTLS test');
    extra += `tls_server_cert: ${c.cert}\ntls_server_key: ${c.key}\n`;
    const { readFileSync } = await import('node:fs');
    tlsContext = tls.createSecureContext({ cert: readFileSync(c.cert), key: readFileSync(c.key) });
  }
  const config = parseConfig(
    `configdirectory: ${dir}/conf\npartition-default: ${dir}/spool\nadmins: admin\nallowplaintext: yes\nfailedloginpause: 0\n${extra}`,
    'test.conf',
  );
  const settings = config.settings;
  setPasswordSync(settings.cyrsync_passwd_file, 'admin', 'adminpw', { N: 1024, r: 8, p: 1 });
  setPasswordSync(settings.cyrsync_passwd_file, 'bob', 'bobpw', { N: 1024, r: 8, p: 1 });
  const sink = await createReplicaSink({ configdirectory: settings.configdirectory, partitions: { ...settings.partitions }, logger: silent });
  /** Each running session and the promise of its run(), which settles once the session has cleaned up. */
  const sessions = new Map<Session, Promise<void>>();
  const sessionsEnded = async (): Promise<void> => {
    while (sessions.size > 0) await Promise.all(sessions.values());
  };
  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => (closing ??= (async () => {
    server.close();
    for (const s of sessions.keys()) s.destroy();
    await sessionsEnded();
    await sink.close();
    rmSync(dir, { recursive: true, force: true });
  })());
  t.teardown(close);
  const auth = createAuthenticator(settings);
  const server = net.createServer((socket) => {
    const s = new Session(socket, {
      profile: 'sync',
      sink,
      auth,
      servername: 'test-replica',
      version: 'test',
      log: silent,
      idleTimeout: 60,
      peer: 'test',
      tlsContext,
      ...overrides,
    });
    sessions.set(s, s.run().finally(() => sessions.delete(s)));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    dir,
    sink,
    sessionsEnded,
    close,
  };
}

/** A client of the test server; a line that does not come within 10 s fails the test. */
function connect(t: ExecutionContext, port: number): Promise<CsyncTestClient> {
  return CsyncTestClient.connect(port, t, { lineTimeoutMs: 10000 });
}

function blobFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    if (!existsSync(d)) return;
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(join(dir, 'spool'));
  return out.filter((p) => !p.endsWith('.sqlite3'));
}

/**
 * Resolves once a staging file (`*.tmp`) exists in the replica's staging
 * directory, i.e. the server has begun to write a literal to disk.
 */
function stagingFileAppears(t: ExecutionContext, dir: string): Promise<void> {
  const tmp = join(dir, 'spool', 'blobs', 'tmp');
  const watcher = watch(tmp);
  t.teardown(() => watcher.close());
  return new Promise((resolve) => {
    const check = (): void => {
      if (!readdirSync(tmp).some((f) => f.endsWith('.tmp'))) return;
      watcher.close();
      resolve();
    };
    watcher.on('change', check);
    check();
  });
}

const message = Buffer.from('From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n');
const guid = createHash('sha1').update(message).digest('hex');

test('greeting lists SASL, COMPRESS, SIEVE-MAILBOX and ends with the OK line', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  t.deepEqual(await c.greeting(), ['* SASL PLAIN LOGIN', '* COMPRESS DEFLATE', '* SIEVE-MAILBOX', '* OK test-replica Cyrus sync server test']);
  c.send('EXIT\r\n');
  t.deepEqual(await c.reply(), ['OK Finished']);
  t.is(await c.line(), null, 'the server closes after EXIT');
  await s.close();
});

test('commands before authentication are refused; the session goes on', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  c.send('GET USER bob\r\n');
  t.deepEqual(await c.reply(), ['NO Please authenticate first']);
  // A file literal sent before login is consumed, not stored.
  c.send(`APPLY MESSAGE (%{default ${guid} ${message.length}}\r\n`);
  c.send(message);
  c.send(')\r\n');
  t.deepEqual(await c.reply(), ['NO Please authenticate first']);
  c.send('NOOP\r\n');
  t.deepEqual(await c.reply(), ['OK Noop completed']);
  c.send('FROB\r\n');
  t.deepEqual(await c.reply(), ['BAD IMAP_PROTOCOL_ERROR Unrecognized command']);
  c.send('\r\n');
  t.deepEqual(await c.reply(), ['BAD Null command']);
  t.deepEqual(blobFiles(s.dir), [], 'nothing stored before login');
  c.end();
  await s.close();
});

test('a wrong password is refused and leaves the connection unauthenticated', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  t.deepEqual(await c.login('admin', 'wrong'), ['NO authentication failure']);
  c.send('GET USER bob\r\n');
  t.deepEqual(await c.reply(), ['NO Please authenticate first']);
  t.deepEqual(await c.login(), ['OK Success (no protection)']);
  c.send('GET USER bob\r\n');
  t.deepEqual(await c.reply(), ['OK success']);
  c.end();
  await s.close();
});

test('a non-administrator logs in but every later command is refused', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  t.deepEqual(await c.login('bob', 'bobpw'), ['OK Success (no protection)']);
  for (const cmd of ['GET USER bob', 'NOOP', 'APPLY UNUSER bob', 'AUTHENTICATE PLAIN AGFkbWluAGFkbWlucHc=']) {
    c.send(cmd + '\r\n');
    t.deepEqual(await c.reply(), ['NO Permission denied'], cmd);
  }
  c.send(`APPLY MESSAGE (%{default ${guid} ${message.length}}\r\n`);
  c.send(message);
  c.send(')\r\n');
  t.deepEqual(await c.reply(), ['NO Permission denied']);
  t.deepEqual(blobFiles(s.dir), [], 'a non-admin stores nothing');
  c.end();
  await s.close();
});

test('LOGIN without an initial response, with challenges', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  c.send('AUTHENTICATE LOGIN\r\n');
  t.is(await c.line(), `+ ${Buffer.from('Username:').toString('base64')}`);
  c.send(Buffer.from('admin').toString('base64') + '\r\n');
  t.is(await c.line(), `+ ${Buffer.from('Password:').toString('base64')}`);
  c.send(Buffer.from('adminpw').toString('base64') + '\r\n');
  t.deepEqual(await c.reply(), ['OK Success (no protection)']);
  c.send('AUTHENTICATE PLAIN AGFkbWluAGFkbWlucHc=\r\n');
  t.deepEqual(await c.reply(), ['BAD Already authenticated']);
  c.end();
  await s.close();
});

test('a file literal whose bytes do not match its GUID is refused and not stored; the session stays in sync', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  await c.login();
  const wrong = Buffer.from(message);
  wrong[wrong.length - 3] ^= 0x20;
  c.send(`APPLY MESSAGE (%{default ${guid} ${wrong.length}}\r\n`);
  c.send(wrong);
  c.send(')\r\n');
  const r = await c.reply();
  t.is(r.length, 1);
  t.regex(r[0]!, /^NO /);
  c.send('NOOP\r\n');
  t.deepEqual(await c.reply(), ['OK Noop completed'], 'still in sync after the refused literal');
  t.deepEqual(blobFiles(s.dir), [], 'no blob and no staging file left');
  // The right bytes are accepted and stored under their GUID.
  c.send(`APPLY MESSAGE (%{default ${guid} ${message.length}}\r\n`);
  c.send(message);
  c.send(')\r\n');
  t.deepEqual(await c.reply(), ['OK success']);
  const files = blobFiles(s.dir);
  t.is(files.length, 1);
  t.true(files[0]!.endsWith(guid));
  c.end();
  await s.close();
});

test('a literal over the size limit ends the connection with a fatal error naming the limit', async (t) => {
  const s = await startServer(t, { limits: { maxFileLiteralSize: 1000 } });
  const c = await connect(t, s.port);
  await c.greeting();
  await c.login();
  c.send(`APPLY MESSAGE (%{default ${guid} 1001}\r\n`);
  const l = await c.line();
  t.truthy(l);
  t.regex(l!, /^\* Fatal error: IMAP_\w+ .*1001/);
  t.is(await c.line(), null, 'connection closed');
  t.deepEqual(blobFiles(s.dir), []);
  await s.close();
});

test('a client that disconnects in the middle of a literal leaves no staging file and no record', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  await c.login();
  const staging = stagingFileAppears(t, s.dir);
  c.send(`APPLY MESSAGE (%{default ${guid} ${message.length}}\r\n`);
  c.send(message.subarray(0, 10));
  await staging;
  t.is(blobFiles(s.dir).length, 1, 'the literal is being staged when the client goes');
  c.sock.destroy();
  // The server's session removes the partial file before its run() settles.
  await s.sessionsEnded();
  t.deepEqual(blobFiles(s.dir), []);
  const c2 = await connect(t, s.port);
  await c2.greeting();
  await c2.login();
  c2.send(`APPLY RESERVE %(PARTITION default MBOXNAME (user.bob) GUID (${guid}))\r\n`);
  t.deepEqual(await c2.reply(), [`* MISSING (${guid})`, 'OK success'], 'the half-sent message is not there');
  c2.end();
  await s.close();
});

test('unknown mailbox and bad names get clear refusals and write nothing outside the data paths', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  await c.login();
  c.send('GET FULLMAILBOX user.nobody\r\n');
  t.deepEqual(await c.reply(), ['NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox']);
  // `/` and `..` as atoms; a NUL can only travel inside a literal.
  for (const name of ['user.bob/../../etc', 'user..bob', '{10+}\r\nuser.b\0b.x']) {
    c.send(`APPLY MAILBOX %(UNIQUEID u1 MBOXNAME ${name} HIGHESTMODSEQ 1 MBOXTYPE i)\r\n`);
    const r = await c.reply();
    t.regex(r[r.length - 1]!, /^(NO|BAD) /, JSON.stringify(name));
  }
  const long = 'user.' + 'x'.repeat(600);
  c.send(`APPLY MAILBOX %(UNIQUEID u2 MBOXNAME ${long} HIGHESTMODSEQ 1 MBOXTYPE i)\r\n`);
  t.regex((await c.reply())[0]!, /^NO /);
  c.send('APPLY UNUSER ../../x\r\n');
  t.regex((await c.reply())[0]!, /^NO /);
  c.send('NOOP\r\n');
  t.deepEqual(await c.reply(), ['OK Noop completed']);
  t.false(existsSync(join(s.dir, '..', 'etc')));
  c.end();
  await s.close();
});

test('COMPRESS DEFLATE: the OK is plain, then both directions are raw deflate with a flush per reply', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  await c.login();
  c.send('COMPRESS DEFLATE\r\n');
  t.deepEqual(await c.reply(), ['OK DEFLATE active']);
  // From here on: our own deflater to the server, an inflater on what comes back.
  const deflate = zlib.createDeflateRaw();
  const inflate = zlib.createInflateRaw();
  const sock = c.sock;
  c.readFrom(inflate);
  sock.on('data', (d: Buffer) => inflate.write(d));
  sock.on('close', () => inflate.end());
  deflate.on('data', (d: Buffer) => sock.write(d));
  const send = (line: string): void => {
    deflate.write(line);
    deflate.flush(zlib.constants.Z_SYNC_FLUSH);
  };
  send('NOOP\r\n');
  t.deepEqual(await c.reply(), ['OK Noop completed']);
  send('COMPRESS DEFLATE\r\n');
  t.deepEqual(await c.reply(), ['NO Compression already active: DEFLATE']);
  send('APPLY CAPABILITIES (SIEVE-MAILBOX)\r\n');
  t.deepEqual(await c.reply(), ['* ENABLED (SIEVE-MAILBOX)', 'OK success']);
  send('EXIT\r\n');
  t.deepEqual(await c.reply(), ['OK Finished']);
  await s.close();
});

test('COMPRESS with an unknown algorithm is refused', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  await c.login();
  c.send('COMPRESS LZ4\r\n');
  t.deepEqual(await c.reply(), ['NO Unknown compression algorithm: LZ4']);
  c.send('NOOP\r\n');
  t.deepEqual(await c.reply(), ['OK Noop completed']);
  c.end();
  await s.close();
});

test('STARTTLS: OK, handshake, the greeting again inside TLS without STARTTLS and COMPRESS', async (t) => {
  let s: Server;
  try {
    s = await startServer(t, { tls: true });
  } catch (err) {
    t.fail(`cannot set up TLS: ${(err as Error).message}`);
    return;
  }
  const c = await connect(t, s.port);
  t.deepEqual(await c.greeting(), ['* SASL PLAIN LOGIN', '* STARTTLS', '* COMPRESS DEFLATE', '* SIEVE-MAILBOX', '* OK test-replica Cyrus sync server test']);
  c.send('STARTTLS\r\n');
  t.deepEqual(await c.reply(), ['OK Begin TLS negotiation now']);
  c.sock.removeAllListeners('data');
  const secure = tls.connect({ socket: c.sock as net.Socket, rejectUnauthorized: false });
  await once(secure, 'secureConnect');
  c.attach(secure);
  t.deepEqual(await c.greeting(), ['* SASL PLAIN LOGIN', '* SIEVE-MAILBOX', '* OK test-replica Cyrus sync server test']);
  t.deepEqual(await c.login(), ['OK Success (tls protection)']);
  c.send('STARTTLS\r\n');
  t.deepEqual(await c.reply(), ["BAD Can't Starttls after authentication"]);
  c.send('EXIT\r\n');
  t.deepEqual(await c.reply(), ['OK Finished']);
  await s.close();
});

test('the IMAP probe of sync_client gets a tagged BAD at once', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  c.send('C01 CAPABILITY\r\n');
  const r = await c.reply();
  t.is(r.length, 1);
  t.true(r[0]!.startsWith('C01 BAD ') || r[0]!.startsWith('BAD '), r[0]);
  c.end();
  await s.close();
});

test('an idle connection is closed after the timeout', async (t) => {
  const s = await startServer(t, { idleTimeout: 3 });
  const c = await connect(t, s.port);
  await c.greeting();
  const started = Date.now();
  t.is(await c.line(10000), null, 'closed by the server');
  t.true(Date.now() - started >= 2500, 'not before the timeout');
  await s.close();
});

test('RESTART drops staged messages; negotiated state stays', async (t) => {
  const s = await startServer(t);
  const c = await connect(t, s.port);
  await c.greeting();
  await c.login();
  c.send(`APPLY MESSAGE (%{default ${guid} ${message.length}}\r\n`);
  c.send(message);
  c.send(')\r\n');
  t.deepEqual(await c.reply(), ['OK success']);
  c.send('RESTART\r\n');
  t.deepEqual(await c.reply(), ['OK Restarting']);
  c.send('GET USER bob\r\n');
  t.deepEqual(await c.reply(), ['OK success'], 'still authenticated after RESTART');
  c.end();
  await s.close();
});

