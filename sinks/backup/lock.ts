/**
 * Whole-file POSIX record locks, the primitive of standard Cyrus builds
 * (lib/lock_fcntl.c): `fcntl(fd, F_SETLK[W], {F_WRLCK|F_RDLCK, SEEK_SET, 0, 0})`.
 * Real Cyrus tools (ctl_backups, cyr_backup, backupd, cyr_dbtool) take and
 * respect exactly these locks, so cyrsync and Cyrus exclude each other.
 *
 * Invariants:
 * - fcntl locks belong to the process and vanish when the process closes ANY
 *   descriptor of the file. The lock's descriptor is therefore the only one
 *   this process may hold on a locked file: readers and writers use `fd`.
 * - fcntl locks never conflict inside one process, so a process-wide table
 *   (keyed by device and inode) makes a second in-process locker see the
 *   file as locked, as another process would.
 * - After the lock is granted, the inode of the descriptor is compared with
 *   the inode now at the path (backup-format §4): if the file was replaced
 *   (compaction, twoskip checkpoint) while we waited, start again on the new
 *   file.
 * - Waiting never blocks the event loop: F_SETLK is retried with a growing
 *   pause (F_SETLKW would stall every other connection).
 */
import * as fs from 'node:fs';
import koffi from 'koffi';
import { CyrsyncError } from '../../transforms/errors.js';

// x86_64 Linux: struct flock { short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid; }
const F_GETLK = 5;
const F_SETLK = 6;
const F_RDLCK = 0;
const F_WRLCK = 1;
const F_UNLCK = 2;
const SEEK_SET = 0;
const EINTR = 4;
const EACCES = 13;
const EAGAIN = 11;

const Flock = koffi.struct('cyrsync_flock', {
  l_type: 'short',
  l_whence: 'short',
  l_start: 'int64',
  l_len: 'int64',
  l_pid: 'int',
});

interface FlockValue {
  l_type: number;
  l_whence: number;
  l_start: number | bigint;
  l_len: number | bigint;
  l_pid: number;
}

let fcntlFn: ((fd: number, cmd: number, lk: FlockValue) => number) | null = null;
let fcntlOutFn: ((fd: number, cmd: number, lk: FlockValue) => number) | null = null;

function libc(): void {
  if (fcntlFn !== null) return;
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new CyrsyncError('IMAP_INTERNAL', `fcntl record locks are implemented for x86_64 Linux only (this is ${process.platform}/${process.arch})`);
  }
  const lib = koffi.load('libc.so.6');
  // fcntl is variadic; on x86_64 SysV a pointer third argument is passed the
  // same way by a fixed prototype, which also allows the inout struct.
  fcntlFn = lib.func('fcntl', 'int', ['int', 'int', koffi.pointer(Flock)]) as unknown as typeof fcntlFn;
  fcntlOutFn = lib.func('fcntl', 'int', ['int', 'int', koffi.inout(koffi.pointer(Flock))]) as unknown as typeof fcntlOutFn;
}

function setlk(fd: number, type: number): number {
  libc();
  for (;;) {
    const r = fcntlFn!(fd, F_SETLK, { l_type: type, l_whence: SEEK_SET, l_start: 0, l_len: 0, l_pid: 0 });
    if (r === 0) return 0;
    const e = koffi.errno();
    if (e === EINTR) continue;
    return e;
  }
}

/** pid of a process holding a conflicting lock, or 0 when none (F_GETLK). */
export function lockHolder(fd: number, exclusive = true): number {
  libc();
  const lk: FlockValue = { l_type: exclusive ? F_WRLCK : F_RDLCK, l_whence: SEEK_SET, l_start: 0, l_len: 0, l_pid: 0 };
  const r = fcntlOutFn!(fd, F_GETLK, lk);
  if (r !== 0) throw ioError(`F_GETLK failed`, koffi.errno());
  return lk.l_type === F_UNLCK ? 0 : lk.l_pid;
}

function ioError(what: string, errno: number): CyrsyncError {
  return new CyrsyncError('IMAP_IOERROR', `${what}: ${errnoName(errno)}`);
}

function errnoName(e: number): string {
  for (const [k, v] of Object.entries(koffi.os.errno as Record<string, number>)) if (v === e) return `${k} (errno ${e})`;
  return `errno ${e}`;
}

/** Locks held by this process: `dev:ino` -> holder. */
const held = new Map<string, FileLock>();

function keyOf(st: fs.Stats): string {
  return `${st.dev}:${st.ino}`;
}

export interface LockOptions {
  /** Wait for the lock (true) or give up at once (false => null). */
  wait: boolean;
  /** Open flags beyond O_RDWR: create, exclusive create, append. */
  create?: boolean;
  exclusiveCreate?: boolean;
  append?: boolean;
  /** Mode for a created file (default 0600). */
  mode?: number;
  /** Shared (read) lock instead of exclusive: twoskip readers only. */
  shared?: boolean;
  /** Give up waiting after this many milliseconds (null => forever). */
  timeoutMs?: number | null;
}

export class FileLock {
  private released = false;
  private deferred: number[] = [];
  constructor(
    readonly path: string,
    /** The only descriptor this process may use on the file while locked. */
    public fd: number,
    private key: string,
    readonly shared: boolean,
  ) {}

  get isReleased(): boolean {
    return this.released;
  }

  /** Current size of the locked file. */
  size(): number {
    return fs.fstatSync(this.fd).size;
  }

  /** A descriptor on the same file opened by accident: closed with ours. */
  deferClose(fd: number): void {
    this.deferred.push(fd);
  }

  /** Unlock and close the descriptor (closing alone would also unlock). */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (held.get(this.key) === this) held.delete(this.key);
    try {
      libc();
      fcntlFn!(this.fd, F_SETLK, { l_type: F_UNLCK, l_whence: SEEK_SET, l_start: 0, l_len: 0, l_pid: 0 });
    } finally {
      fs.closeSync(this.fd);
      for (const fd of this.deferred.splice(0)) fs.closeSync(fd);
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Opens `path` read-write and takes a whole-file lock. Resolves null when
 * `wait` is false and another process (or another holder in this process)
 * has it. Rejects with a CyrsyncError on I/O errors (ENOENT when the file
 * does not exist and `create` is not set; EEXIST for `exclusiveCreate`).
 */
export async function lockExclusive(path: string, opts: LockOptions): Promise<FileLock | null> {
  return lockFile(path, opts);
}

export async function lockFile(path: string, opts: LockOptions): Promise<FileLock | null> {
  let flags = fs.constants.O_RDWR;
  if (opts.append) flags |= fs.constants.O_APPEND;
  if (opts.create || opts.exclusiveCreate) flags |= fs.constants.O_CREAT;
  if (opts.exclusiveCreate) flags |= fs.constants.O_EXCL;
  const shared = opts.shared === true;
  const deadline = opts.timeoutMs != null ? Date.now() + opts.timeoutMs : null;
  let pause = 5;
  const busy = async (): Promise<boolean> => {
    if (!opts.wait || (deadline !== null && Date.now() >= deadline)) return false;
    await sleep(pause);
    pause = Math.min(pause * 2, 100);
    return true;
  };
  for (;;) {
    // Never open a descriptor on a file this process has locked: closing it
    // would drop that lock. Look the path up first.
    const before = statOrNull(path);
    if (before !== null && heldBy(keyOf(before)) !== null) {
      if (opts.exclusiveCreate) throw new CyrsyncError('IMAP_IOERROR', `creating ${path} failed: EEXIST`);
      if (await busy()) continue;
      return null;
    }
    let fd: number;
    try {
      fd = fs.openSync(path, flags, opts.mode ?? 0o600);
    } catch (err) {
      throw openError(path, err);
    }
    // Exclusive creation applies to the first open only.
    flags &= ~fs.constants.O_EXCL;
    const st = fs.fstatSync(fd);
    const key = keyOf(st);
    const other = heldBy(key);
    if (other !== null) {
      // Replaced between stat and open by a file this process holds: this
      // descriptor may only be closed together with the holder's.
      other.deferClose(fd);
      if (await busy()) continue;
      return null;
    }
    let e: number;
    try {
      e = setlk(fd, shared ? F_RDLCK : F_WRLCK);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    if (e === EAGAIN || e === EACCES) {
      fs.closeSync(fd);
      if (await busy()) continue;
      return null;
    }
    if (e !== 0) {
      fs.closeSync(fd);
      throw ioError(`locking ${path} failed`, e);
    }
    // Locked: is it still the file at `path`? If it was replaced (or
    // removed) while we waited, closing drops this lock; go again.
    const now = statOrNull(path);
    if (now !== null && now.ino === st.ino && now.dev === st.dev) {
      const lock = new FileLock(path, fd, key, shared);
      held.set(key, lock);
      return lock;
    }
    fs.closeSync(fd);
    if (now === null && !(opts.create || opts.exclusiveCreate)) {
      throw new CyrsyncError('IMAP_IOERROR', `${path} was removed while it was being locked`);
    }
  }
}

/** An open failure as a CyrsyncError that keeps the errno name (`errno`: ENOENT, EEXIST...). */
export class LockOpenError extends CyrsyncError {
  constructor(message: string, readonly errno: string | undefined, cause: unknown) {
    super('IMAP_IOERROR', message, { cause });
  }
}

function openError(path: string, err: unknown): LockOpenError {
  const e = err as NodeJS.ErrnoException;
  return new LockOpenError(`cannot open ${path}: ${e.code ?? ''} ${e.message}`.replace(/\s+/g, ' '), e.code, err);
}

function statOrNull(path: string): fs.Stats | null {
  try {
    return fs.statSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function heldBy(key: string): FileLock | null {
  const l = held.get(key);
  return l !== undefined && !l.isReleased ? l : null;
}

/** True when this process holds a lock on the file at `path`. */
export function isLockedHere(path: string): boolean {
  try {
    const l = held.get(keyOf(fs.statSync(path)));
    return l !== undefined && !l.isReleased;
  } catch {
    return false;
  }
}

/**
 * Probe: does another process hold a lock on `path`? Opens a descriptor, so
 * it must not be used on a file this process has locked (see isLockedHere).
 */
export function lockedElsewhere(path: string): number {
  if (isLockedHere(path)) throw new CyrsyncError('IMAP_INTERNAL', `${path} is locked by this process; probing would drop the lock`);
  const fd = fs.openSync(path, fs.constants.O_RDONLY);
  try {
    return lockHolder(fd, true);
  } finally {
    fs.closeSync(fd);
  }
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/**
 * Synchronous lock on a descriptor this process keeps open (cyrusdb files:
 * the descriptor lives as long as the database handle, the lock as long as a
 * transaction, as in lib/mappedfile.c). Retries F_SETLK for up to
 * `timeoutMs` (0 => one try); returns false when still locked. Blocks the
 * thread while it waits, so callers keep those waits short.
 */
export function lockFdSync(fd: number, exclusive: boolean, timeoutMs: number): boolean {
  const deadline = Date.now() + timeoutMs;
  let pause = 1;
  for (;;) {
    const e = setlk(fd, exclusive ? F_WRLCK : F_RDLCK);
    if (e === 0) return true;
    if (e !== EAGAIN && e !== EACCES) throw ioError('locking failed', e);
    if (Date.now() >= deadline) return false;
    Atomics.wait(sleepCell, 0, 0, pause);
    pause = Math.min(pause * 2, 50);
  }
}

/** Drops this process's lock on the descriptor (the descriptor stays open). */
export function unlockFd(fd: number): void {
  const e = setlk(fd, F_UNLCK);
  if (e !== 0) throw ioError('unlocking failed', e);
}
