/**
 * Cyrus master(8) service front-end, as master/service.c of Cyrus 3.6.1 runs
 * sync_server and backupd:
 *
 *  - master hands the service its listening socket on fd 4 (LISTEN_FD) and the
 *    write end of its status pipe on fd 3 (STATUS_FD);
 *  - the service accepts one connection at a time itself, telling master
 *    UNAVAILABLE then CONNECTION before serving it and AVAILABLE after it
 *    (unless it is about to exit);
 *  - it exits after `-U uses` connections, or when no connection arrives
 *    within the reuse timeout (`-T`, randomised to [T, 2T) as Cyrus does),
 *    which is armed only once the process has served a connection: a fresh
 *    process waits for its first client indefinitely;
 *  - it sends no message when it exits (MESSAGE_MASTER_ON_EXIT is 0 in 3.6.1):
 *    master accounts for it through waitpid().
 *
 * Invariants: nothing is ever written to fds 0-2 in this mode (master points
 * them at /dev/null or its -L log; the client connection is never one of
 * them here); the only bytes written to fd 3 are whole notify messages.
 *
 * Node cannot accept() on an inherited descriptor one connection at a time
 * (a net.Server accepts every pending connection, taking clients away from
 * sibling processes), so the accept step calls libc through koffi: poll() on
 * a worker thread (the event loop stays free for signals and timers), then a
 * non-blocking accept4(); the accepted descriptor becomes a net.Socket.
 * The constants below are Linux's, the platform Cyrus master runs on here.
 */
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Logger } from 'pino';
import { Session } from './session.js';
import { releaseSocket, type SessionFactory } from './listener.js';

export const STATUS_FD = 3;
export const LISTEN_FD = 4;

/** master/service.h */
export const MASTER_SERVICE_AVAILABLE = 0x01;
export const MASTER_SERVICE_UNAVAILABLE = 0x02;
export const MASTER_SERVICE_CONNECTION = 0x03;
export const MASTER_SERVICE_CONNECTION_MULTI = 0x04;

/** master/service.h MAX_USE and REUSE_TIMEOUT: the defaults of -U and -T. */
export const MAX_USE = 250;
export const REUSE_TIMEOUT = 60;

export type MasterMessage =
  | typeof MASTER_SERVICE_AVAILABLE
  | typeof MASTER_SERVICE_UNAVAILABLE
  | typeof MASTER_SERVICE_CONNECTION
  | typeof MASTER_SERVICE_CONNECTION_MULTI;

/** Size of `struct notify_message { int message; pid_t service_pid; }` on Linux. */
export const NOTIFY_MESSAGE_SIZE = 8;

/**
 * `struct notify_message` as master reads it: two native-endian 32-bit ints,
 * the message code then the sender's pid, no padding.
 */
export function encodeNotifyMessage(message: MasterMessage, pid: number, order: 'LE' | 'BE' = endianness()): Buffer {
  const b = Buffer.alloc(NOTIFY_MESSAGE_SIZE);
  if (order === 'LE') {
    b.writeInt32LE(message, 0);
    b.writeInt32LE(pid, 4);
  } else {
    b.writeInt32BE(message, 0);
    b.writeInt32BE(pid, 4);
  }
  return b;
}

export function decodeNotifyMessage(b: Buffer, order: 'LE' | 'BE' = endianness()): { message: number; pid: number } {
  if (b.length !== NOTIFY_MESSAGE_SIZE) throw new RangeError(`a notify message has ${NOTIFY_MESSAGE_SIZE} bytes, got ${b.length}`);
  return order === 'LE'
    ? { message: b.readInt32LE(0), pid: b.readInt32LE(4) }
    : { message: b.readInt32BE(0), pid: b.readInt32BE(4) };
}

export function messageName(message: number): string {
  switch (message) {
    case MASTER_SERVICE_AVAILABLE:
      return 'AVAILABLE';
    case MASTER_SERVICE_UNAVAILABLE:
      return 'UNAVAILABLE';
    case MASTER_SERVICE_CONNECTION:
      return 'CONNECTION';
    case MASTER_SERVICE_CONNECTION_MULTI:
      return 'CONNECTION_MULTI';
    default:
      return `0x${message.toString(16)}`;
  }
}

// ---------------------------------------------------------------- front-end choice

export type FrontEnd = 'master' | 'stdio';

/** What mode detection needs to know about a descriptor (injectable for tests). */
export interface FdProbe {
  /** fstat(2) of fd, or null when it is not open. */
  kind(fd: number): 'fifo' | 'socket' | 'other' | null;
  /** True when fd is a socket in the listening state (SO_ACCEPTCONN). */
  listening(fd: number): boolean;
}

/**
 * master(8) mode when fd 4 is a listening socket and fd 3 is the status pipe
 * (a FIFO; a socket is accepted too, as a supervisor other than Cyrus master
 * may hand over a socketpair). Anything else: one session on stdin/stdout.
 */
export function detectFrontEnd(probe: FdProbe = systemProbe): FrontEnd {
  const status = probe.kind(STATUS_FD);
  if (status !== 'fifo' && status !== 'socket') return 'stdio';
  if (probe.kind(LISTEN_FD) !== 'socket') return 'stdio';
  return probe.listening(LISTEN_FD) ? 'master' : 'stdio';
}

export const systemProbe: FdProbe = {
  kind(fd) {
    let st: fs.Stats;
    try {
      st = fs.fstatSync(fd);
    } catch {
      return null;
    }
    if (st.isFIFO()) return 'fifo';
    if (st.isSocket()) return 'socket';
    return 'other';
  },
  listening(fd) {
    return libc().acceptConn(fd);
  },
};

// ----------------------------------------------------------------------- libc

interface Libc {
  /** SO_ACCEPTCONN of fd (false when fd is no socket). */
  acceptConn(fd: number): boolean;
  /** True when fd is a UNIX-domain socket (getsockname family AF_UNIX). */
  isUnixSocket(fd: number): boolean;
  /** Sets O_NONBLOCK on fd's open file description. */
  setNonBlocking(fd: number): void;
  /**
   * poll(POLLIN) on fd and on an internal wake-up pipe, on a worker thread:
   * true = fd readable, false = timed out or woken by wake().
   */
  waitReadable(fd: number, timeoutMs: number): Promise<boolean>;
  /** Ends a pending waitReadable() now (the worker thread must not outlive the process's exit). */
  wake(): void;
  /** accept4(fd, NULL, NULL, SOCK_CLOEXEC): the new fd, or -errno. */
  accept(fd: number): number;
  close(fd: number): void;
}

const SOL_SOCKET = 1;
const SO_ACCEPTCONN = 30;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const O_CLOEXEC = 0o2000000;
const POLLIN = 0x001;
const AF_UNIX = 1;

let libcCache: Libc | undefined;

/** Bound on first use: stdio mode never pays for loading koffi. */
function libc(): Libc {
  if (libcCache) return libcCache;
  // Required on demand, not imported: koffi stays out of the start-up path.
  const koffi = loadKoffi();
  const lib = koffi.load('libc.so.6');
  // struct pollfd[2] in a Buffer: { int fd; short events; short revents; } x 2.
  const poll = lib.func('int poll(void *fds, unsigned long nfds, int timeout)');
  const pipe2 = lib.func('int pipe2(_Out_ int *fds, int flags)');
  const accept4 = lib.func('int accept4(int sockfd, void *addr, void *addrlen, int flags)');
  const fcntl = lib.func('int fcntl(int fd, int cmd, ...)');
  const getsockopt = lib.func('int getsockopt(int fd, int level, int name, _Out_ int *value, _Inout_ uint32_t *len)');
  const closeFn = lib.func('int close(int fd)');
  const getsockname = lib.func('int getsockname(int fd, void *addr, _Inout_ uint32_t *len)');
  libcCache = {
    acceptConn(fd) {
      const value = [0];
      const len = [4];
      if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, value, len) !== 0) return false;
      return value[0] !== 0;
    },
    isUnixSocket(fd) {
      const addr = Buffer.alloc(128);
      const len = [addr.length];
      if (getsockname(fd, addr, len) !== 0) throw errnoError('getsockname', koffi.errno());
      return addr.readUInt16LE(0) === AF_UNIX;
    },
    setNonBlocking(fd) {
      const flags = fcntl(fd, F_GETFL) as number;
      if (flags < 0) throw errnoError('fcntl(F_GETFL)', koffi.errno());
      if ((flags & O_NONBLOCK) === 0 && (fcntl(fd, F_SETFL, 'int', flags | O_NONBLOCK) as number) < 0) {
        throw errnoError('fcntl(F_SETFL)', koffi.errno());
      }
    },
    waitReadable(fd, timeoutMs) {
      const w = wakePipe();
      const fds = Buffer.alloc(16);
      fds.writeInt32LE(fd, 0);
      fds.writeInt16LE(POLLIN, 4);
      fds.writeInt32LE(w.read, 8);
      fds.writeInt16LE(POLLIN, 12);
      return new Promise((resolve, reject) => {
        poll.async(fds, 2, timeoutMs, (err: Error | null, n: number) => {
          if (err) return reject(err);
          // n < 0 is EINTR or a transient failure: the caller's loop polls again.
          resolve(n > 0 && (fds.readInt16LE(6) & POLLIN) !== 0);
        });
      });
    },
    wake() {
      fs.writeSync(wakePipe().write, Buffer.from([1]));
    },
    accept(fd) {
      const r = accept4(fd, null, null, SOCK_CLOEXEC) as number;
      return r >= 0 ? r : -koffi.errno();
    },
    close(fd) {
      closeFn(fd);
    },
  };
  let pipeFds: { read: number; write: number } | undefined;
  const wakePipe = () => {
    if (pipeFds) return pipeFds;
    const fdsOut = [0, 0];
    if ((pipe2(fdsOut, O_CLOEXEC | O_NONBLOCK) as number) !== 0) throw errnoError('pipe2', koffi.errno());
    pipeFds = { read: fdsOut[0]!, write: fdsOut[1]! };
    return pipeFds;
  };
  return libcCache;
}

type Koffi = typeof import('koffi');

let koffiCache: Koffi | undefined;

function loadKoffi(): Koffi {
  if (koffiCache) return koffiCache;
  const mod = createRequire(import.meta.url)('koffi') as Koffi & { default?: Koffi };
  koffiCache = mod.default ?? mod;
  return koffiCache;
}

function errnoError(what: string, errno: number): NodeJS.ErrnoException {
  const name = (Object.entries(loadKoffi().os.errno).find(([, v]) => v === errno)?.[0]) ?? `errno ${errno}`;
  const e = new Error(`${what} failed: ${name}`) as NodeJS.ErrnoException;
  e.code = name;
  e.errno = errno;
  return e;
}

// accept(2) failures service.c retries rather than exiting on.
const TRANSIENT_ACCEPT_ERRORS = new Set(['EINTR', 'ENETDOWN', 'EPROTO', 'ENOPROTOOPT', 'EHOSTDOWN', 'ENONET', 'EHOSTUNREACH', 'EOPNOTSUPP', 'ENETUNREACH', 'ECONNABORTED', 'EAGAIN', 'EWOULDBLOCK']);

// ---------------------------------------------------------------------- service

export interface MasterServiceOptions {
  /** `-U`: connections served before exiting (0 behaves as 1, as in Cyrus). */
  maxUses: number;
  /** `-T`: idle seconds before exiting once a connection was served; 0 = never. */
  reuseTimeout: number;
  log: Logger;
  /** Random source for the reuse timeout spread (tests pin it). */
  random?: () => number;
  /** Where the notify messages go (default: fd 3). */
  notify?: (message: MasterMessage) => void;
  /** Checked after each connection: true ends the process (e.g. its store cannot be opened). */
  shouldExit?: () => boolean;
  /**
   * Awaited before a UNIX-domain connection's session is created: such a
   * client is logged in from the start, so its commands may reach the store
   * at once.
   */
  beforePreauthSession?: () => Promise<unknown>;
}

/** Why the service loop ended. */
export type ServiceExit = 'uses' | 'timeout' | 'signal' | 'failure';

/** service.c: `reuse_timeout + rand() % reuse_timeout`, i.e. in [T, 2T). */
export function reuseTimeoutSeconds(t: number, random: () => number = Math.random): number {
  if (t <= 0) return 0;
  return t + Math.floor(random() * t);
}

/** Writes one notify message to the status pipe; a dead master is logged, not fatal. */
export function notifyMaster(message: MasterMessage, log: Logger, fd = STATUS_FD): void {
  const b = encodeNotifyMessage(message, process.pid);
  try {
    if (fs.writeSync(fd, b) !== b.length) log.error({ message: messageName(message) }, 'unable to tell master: short write');
  } catch (err) {
    log.error({ err, message: messageName(message) }, 'unable to tell master');
  }
}

/**
 * The accept loop of master/service.c. Resolves when the process should exit
 * (after its uses, the reuse timeout, or SIGHUP/SIGTERM/SIGINT).
 */
export async function serveMaster(factory: SessionFactory, opts: MasterServiceOptions): Promise<ServiceExit> {
  const log = opts.log;
  const notify = opts.notify ?? ((m: MasterMessage) => notifyMaster(m, log));
  const sys = libc();
  if (!sys.acceptConn(LISTEN_FD)) throw new Error(`fd ${LISTEN_FD} is not a listening socket`);
  // Sibling processes of the same service poll the same socket: whoever loses
  // the race must get EAGAIN, not block in accept().
  sys.setNonBlocking(LISTEN_FD);
  // Decided by the listening socket, never by a peer address that may be gone.
  const unix = sys.isUnixSocket(LISTEN_FD);
  const maxUses = Math.max(0, opts.maxUses);
  const reuse = reuseTimeoutSeconds(opts.reuseTimeout, opts.random);

  let signalled: string | null = null;
  let current: Session | null = null;
  let wakeIdle: (() => void) | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) return;
    signalled = sig;
    log.info({ signal: sig }, current ? 'signal: finishing the current connection, then exiting' : 'signal: exiting');
    // SIGHUP lets the session run to its end (Cyrus restarts reading config);
    // SIGTERM/SIGINT stop it at the next command boundary with BYE.
    if (current && sig !== 'SIGHUP') current.stop();
    wakeIdle?.();
  };
  process.on('SIGHUP', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  let uses = 0;
  try {
    for (;;) {
      const deadline = uses > 0 && reuse > 0 ? Date.now() + reuse * 1000 : null;
      const fd = await acceptNext(sys, deadline, () => signalled !== null, (wake) => (wakeIdle = wake), log);
      wakeIdle = null;
      if (fd === null) return signalled ? 'signal' : 'timeout';

      notify(MASTER_SERVICE_UNAVAILABLE);
      log.debug('accepted connection');
      notify(MASTER_SERVICE_CONNECTION);
      uses++;
      await serveConnection(fd, unix, factory, log, (s) => (current = s), opts.beforePreauthSession);
      current = null;
      if (signalled) return 'signal';
      if (opts.shouldExit?.()) return 'failure';
      if (uses >= maxUses) return 'uses';
      notify(MASTER_SERVICE_AVAILABLE);
    }
  } finally {
    process.off('SIGHUP', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}

/** The next accepted descriptor, or null at the deadline or on a signal. */
async function acceptNext(
  sys: Libc,
  deadline: number | null,
  stopped: () => boolean,
  setWake: (wake: () => void) => void,
  log: Logger,
): Promise<number | null> {
  for (;;) {
    if (stopped()) return null;
    const left = deadline === null ? -1 : deadline - Date.now();
    if (deadline !== null && left <= 0) {
      log.debug('reuse timeout: no new connection, exiting');
      return null;
    }
    // poll() runs on a worker thread; a signal ends it through the wake-up
    // pipe, so no thread is left blocked when the process exits.
    setWake(() => sys.wake());
    const readable = await sys.waitReadable(LISTEN_FD, left < 0 ? -1 : left);
    if (stopped()) return null;
    if (!readable) continue;
    const fd = sys.accept(LISTEN_FD);
    if (fd >= 0) return fd;
    const code = errnoName(-fd);
    if (TRANSIENT_ACCEPT_ERRORS.has(code)) continue;
    throw Object.assign(new Error(`accept failed: ${code}`), { code });
  }
}

function errnoName(errno: number): string {
  const table = loadKoffi().os.errno as Record<string, number>;
  return Object.keys(table).find((k) => table[k] === errno) ?? `errno ${errno}`;
}

/** One connection on an accepted descriptor, to the end of its session. */
async function serveConnection(
  fd: number,
  unix: boolean,
  factory: SessionFactory,
  log: Logger,
  setCurrent: (s: Session) => void,
  beforePreauth?: () => Promise<unknown>,
): Promise<void> {
  let socket: net.Socket;
  try {
    socket = new net.Socket({ fd, readable: true, writable: true });
  } catch (err) {
    log.error({ err }, 'cannot use the accepted connection');
    libc().close(fd);
    return;
  }
  socket.on('error', () => undefined); // surfaced through the session's streams
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  // A UNIX-domain client is preauthenticated, as in Cyrus.
  if (!unix) socket.setNoDelay(true);
  const peer = unix ? 'unix socket' : `${socket.remoteAddress}:${socket.remotePort ?? '?'}`;
  let session: Session;
  try {
    if (unix) await beforePreauth?.();
    session = new Session(socket, factory(socket, peer));
  } catch (err) {
    log.error({ err, peer }, 'cannot start a session');
    socket.destroy();
    await closed;
    return;
  }
  setCurrent(session);
  await session.run();
  // The descriptor must be released before the next accept.
  await releaseSocket(socket, closed);
}
