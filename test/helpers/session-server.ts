/**
 * A csync server in the test process for session-level tests: Session on a
 * free 127.0.0.1 port over a fresh replica store in a temporary directory,
 * with the users admin/adminpw and any others. close() (idempotent) ends
 * every session, closes the store and removes the directory; it also runs
 * in t.teardown.
 */
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import pino from 'pino';
import { parseConfig } from '../../src/config.js';
import { setPasswordSync } from '../../src/server/auth/index.js';
import { createAuthenticator } from '../../src/server/daemon.js';
import { Session, type SessionOptions } from '../../src/server/session.js';
import { createReplicaSink } from '../../sinks/replica/index.js';
import type { Sink } from '../../sinks/sink.js';

export interface SessionServer {
  port: number;
  dir: string;
  sink: Sink;
  close(): Promise<void>;
}

export interface SessionServerOptions {
  /** more imapd.conf lines */
  conf?: string;
  /** users and passwords besides admin/adminpw */
  users?: Record<string, string>;
  /** a self-signed certificate for STARTTLS (openssl must be there) */
  tls?: boolean;
  /** session options over the defaults (profile sync, servername test-replica, idle timeout 60 s) */
  session?: Partial<SessionOptions>;
}

export const silent = pino({ level: 'silent' });

function selfSignedCert(dir: string): { cert: string; key: string } {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost'], { stdio: 'ignore' });
  } catch {
    throw new Error('openssl is needed for the STARTTLS test');
  }
  return { cert, key };
}

/** Starts the server; see the module comment. */
export async function startSessionServer(t: Pick<ExecutionContext, 'teardown'>, o: SessionServerOptions = {}): Promise<SessionServer> {
  const dir = mkdtempSync(join(tmpdir(), 'cyrsync-session-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let extra = o.conf ?? '';
  let tlsContext: tls.SecureContext | undefined;
  if (o.tls) {
    const c = selfSignedCert(dir);
    extra += `tls_server_cert: ${c.cert}\ntls_server_key: ${c.key}\n`;
    tlsContext = tls.createSecureContext({ cert: readFileSync(c.cert), key: readFileSync(c.key) });
  }
  const conf = `configdirectory: ${dir}/conf\npartition-default: ${dir}/spool\nadmins: admin\nallowplaintext: yes\nfailedloginpause: 0\n${extra}`;
  const settings = parseConfig(conf, 'test.conf').settings;
  for (const [user, pass] of Object.entries({ admin: 'adminpw', ...o.users })) {
    setPasswordSync(settings.cyrsync_passwd_file, user, pass, { N: 1024, r: 8, p: 1 });
  }
  const sink = await createReplicaSink({ configdirectory: settings.configdirectory, partitions: { ...settings.partitions }, logger: silent });
  const auth = createAuthenticator(settings);
  const sessions = new Set<Session>();
  const server = net.createServer((socket) => {
    const defaults = { profile: 'sync', servername: 'test-replica', version: 'test', log: silent, idleTimeout: 60, peer: 'test' } as const;
    const s = new Session(socket, { ...defaults, sink, auth, tlsContext, ...o.session });
    sessions.add(s);
    void s.run().finally(() => sessions.delete(s));
  });
  let closing: Promise<void> | null = null;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      server.close();
      for (const s of sessions) s.destroy();
      while (sessions.size > 0) await new Promise((r) => setTimeout(r, 10));
      await sink.close();
      rmSync(dir, { recursive: true, force: true });
    })());
  t.teardown(close);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, dir, sink, close };
}
