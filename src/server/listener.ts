/**
 * Daemon front-ends: how connections reach a Session.
 *  - standalone listener (many sessions at once, graceful SIGTERM);
 *  - one session on stdin/stdout (inetd, socat, ssh);
 * The master(8) service mode lives in src/server/master-service.ts.
 */
import * as net from 'node:net';
import { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { Session, type SessionOptions } from './session.js';

export type SessionFactory = (conn: Duplex, peer: string) => SessionOptions;

export interface ListenAddress {
  host: string;
  port: number;
}

/** A listening socket handed over by the supervisor (systemd socket activation). */
export interface InheritedListener {
  fd: number;
}

export function parseListen(spec: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(spec) ?? /^()()(\d+)$/.exec(spec);
  if (!m) throw new Error(`--listen wants HOST:PORT (or PORT), got "${spec}"`);
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad port in --listen "${spec}"`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** How long a graceful stop waits for busy sessions before it cuts them off. */
export const STOP_GRACE_MS = 60_000;

/**
 * Standalone listener. SIGTERM/SIGINT: stop accepting (the listening socket
 * closes), let every session finish its current command and answer `BYE
 * shutting down` at that command boundary (an idle one at once), close,
 * resolve once every session has ended. A session still busy after
 * `graceMs` (a huge literal on a slow link) is cut off: what it had not
 * been answered is lost, nothing that was acknowledged.
 */
export async function serveListener(
  addr: ListenAddress | InheritedListener,
  factory: SessionFactory,
  log: Logger,
  onListening?: (address: net.AddressInfo) => void,
  graceMs = STOP_GRACE_MS,
): Promise<void> {
  const sessions = new Set<Session>();
  let allEnded: (() => void) | undefined;
  const server = net.createServer({ noDelay: true }, (socket) => {
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    socket.on('error', () => undefined); // reported through the session's streams
    let session: Session;
    try {
      session = new Session(socket, factory(socket, peer));
    } catch (err) {
      log.error({ err, peer }, 'cannot start a session');
      socket.destroy();
      return;
    }
    sessions.add(session);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    void session
      .run()
      .then(() => releaseSocket(socket, closed))
      .finally(() => {
        sessions.delete(session);
        if (sessions.size === 0) allEnded?.();
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const listening = () => {
      server.off('error', reject);
      resolve();
    };
    if ('fd' in addr) server.listen({ fd: addr.fd }, listening);
    else server.listen(addr.port, addr.host, listening);
  });
  const bound = server.address() as net.AddressInfo;
  log.info({ host: bound.address, port: bound.port }, 'listening');
  onListening?.(bound);

  const signal = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ signal, sessions: sessions.size }, 'stopping: no new connections, finishing current commands');
  await stopSessions(server, sessions, (cb) => (allEnded = cb), graceMs, log);
  log.info('stopped: every session ended');
}

/** Closes the listening socket, asks every session to stop, waits for them (cutting off the busy ones after `graceMs`). */
async function stopSessions(server: net.Server, sessions: Set<Session>, onAllEnded: (cb: () => void) => void, graceMs: number, log: Logger): Promise<void> {
  const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
  const ended = new Promise<void>((resolve) => {
    if (sessions.size === 0) resolve();
    else onAllEnded(resolve);
  });
  for (const s of sessions) s.stop();
  const grace = setTimeout(() => {
    log.warn({ sessions: sessions.size, graceMs }, 'stopping: sessions still busy after the grace period are cut off');
    for (const s of sessions) s.destroy();
  }, graceMs);
  await ended;
  clearTimeout(grace);
  await serverClosed;
}

/** One session on stdin/stdout. Nothing but protocol may be written to fd 1. */
export async function serveStdio(factory: SessionFactory): Promise<void> {
  const conn = Duplex.from({ readable: process.stdin, writable: process.stdout });
  const session = new Session(conn, factory(conn, peerOfStdin()));
  process.once('SIGTERM', () => session.stop());
  await session.run();
}

/** When stdin is a socket (inetd, master), name the peer for logs. */
function peerOfStdin(): string {
  const h = (process.stdin as unknown as { _handle?: { getpeername?: (o: object) => number } })._handle;
  const info: { address?: string; port?: number } = {};
  if (h?.getpeername && h.getpeername(info) === 0 && info.address) return `${info.address}:${info.port ?? '?'}`;
  return 'stdin';
}

/**
 * After a session: discard unread input (so the peer's FIN is seen and the
 * socket can close without a reset), end our side, and close for good once
 * the last reply is flushed or a short grace period passed.
 */
export async function releaseSocket(socket: net.Socket, closed: Promise<void>, graceMs = 2000): Promise<void> {
  if (!socket.destroyed) {
    socket.resume();
    socket.end(() => socket.destroy());
  }
  const timer = setTimeout(() => socket.destroy(), graceMs);
  await closed;
  clearTimeout(timer);
}
