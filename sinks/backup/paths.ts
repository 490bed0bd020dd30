/**
 * Where backups live (backup-format §2.1, §3, §9.6).
 *
 * - Owner id: the external userid of a mailbox's owner, `%SHARED` for
 *   mailboxes outside every user namespace.
 * - Data file: `<partition>/<H>/<owner>_<XXXXXX>` (hash directory H of §3.2,
 *   six random [A-Za-z0-9], exclusive create, mode 0600).
 * - Staging: `<backup_staging_path or temp_path/backup>/sync./<pid>/<guid>`.
 *
 * Invariant: every path built here from wire data is checked to lie below a
 * configured backup partition or the staging directory after resolution.
 * Owner ids, GUIDs and partition names are refused when they hold `/`, NUL,
 * control octets, or would not fit one file name; Cyrus 3.6.1 backupd does
 * not check, and creates files outside its partition for a userid with
 * `../` (imap/backup/lcb.c _make_path concatenates it raw).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomInt } from 'node:crypto';
import { CommandError, CyrsyncError } from '../../transforms/errors.js';
import { mailboxOwner, type NameOptions } from '../../src/protocol/names.js';

/** Owner id of shared mailboxes (lcb.c NOUSERID). */
export const SHARED_OWNER = '%SHARED';

/** Room left in a 255-octet file name for `_XXXXXX`, `.index`, `.index-journal` and `.index.<time>`. */
export const MAX_OWNER_LENGTH = 255 - '_XXXXXX'.length - '.index-journal'.length - 1;

export interface PathSettings {
  /** `backuppartition-<name>` -> absolute path */
  backuppartitions: Readonly<Record<string, string>>;
  fulldirhash?: boolean;
  backup_staging_path?: string;
  temp_path?: string;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

function badName(what: string, value: string, why: string): never {
  const shown = value.length > 60 ? `${value.slice(0, 60)}...` : value;
  throw new CommandError('IMAP_MAILBOX_BADNAME', `Invalid ${what} ${JSON.stringify(shown)}: ${why}`);
}

/**
 * An owner id that may become part of a file name. Refuses what could leave
 * the hash directory or break the name: `/`, NUL and control octets, `.`
 * and `..`, the empty string, and names too long for one path component.
 */
export function validateOwnerId(owner: unknown): string {
  if (typeof owner !== 'string') throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', 'Missing or ill-typed user id');
  if (owner.length === 0) badName('user id', owner, 'empty');
  if (owner.length > MAX_OWNER_LENGTH) badName('user id', owner, `longer than ${MAX_OWNER_LENGTH} octets`);
  if (CONTROL.test(owner)) badName('user id', owner, 'contains NUL or a control character');
  if (owner.includes('/')) badName('user id', owner, "contains '/'");
  if (owner === '.' || owner === '..' || owner.includes('..')) badName('user id', owner, "contains '..'");
  // eslint-disable-next-line no-control-regex -- the class is every octet value, NUL included
  if (/[^\x00-\xff]/.test(owner)) badName('user id', owner, 'is not octets');
  if (owner !== SHARED_OWNER && owner.startsWith('%')) badName('user id', owner, "starts with '%'");
  return owner;
}

/** Owner id of an internal mailbox name (`user.bob.Sent` -> `bob`, `shared.x` -> `%SHARED`). */
export function ownerOfMailbox(mboxname: string, opts: NameOptions = {}): string {
  return mailboxOwner(mboxname, opts) ?? SHARED_OWNER;
}

/**
 * The hash directory of §3.2 (lib/util.c dir_hash_c): first octet lower-cased
 * when in a-z, else `q`; with fulldirhash a 23-way hash of the part before
 * the first `.`.
 */
export function dirHash(owner: string, fulldirhash = false): string {
  if (fulldirhash) {
    let n = 0;
    for (let i = 0; i < owner.length; i++) {
      const c = owner.charCodeAt(i) & 0xff;
      if (c === 0x2e /* . */) break;
      n = (((n << 3) ^ (n >>> 5)) ^ c) >>> 0;
    }
    return String.fromCharCode(0x41 + (n % 23));
  }
  const c = owner.length > 0 ? owner.charCodeAt(0) : 0;
  const lc = c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
  return lc >= 0x61 && lc <= 0x7a ? String.fromCharCode(lc) : 'q';
}

/** Partition names are option-name suffixes: letters, digits, `_`, `-`, inner `.`. */
export function validatePartitionName(name: unknown): string {
  if (typeof name !== 'string') throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', 'Missing or ill-typed partition');
  if (!/^[A-Za-z0-9_.-]{1,255}$/.test(name) || name.startsWith('.') || name.includes('..')) {
    badName('partition', name, 'only letters, digits, "_", "-" and inner "." are allowed');
  }
  return name;
}

/** The configured partitions, each an absolute directory. */
export function backupPartitions(settings: PathSettings): { name: string; path: string }[] {
  const out: { name: string; path: string }[] = [];
  for (const [name, p] of Object.entries(settings.backuppartitions)) {
    if (!path.isAbsolute(p)) {
      throw new CyrsyncError('IMAP_INTERNAL', `backuppartition-${name}: ${JSON.stringify(p)} is not an absolute path`);
    }
    out.push({ name, path: path.resolve(p) });
  }
  if (out.length === 0) throw new CyrsyncError('IMAP_INTERNAL', 'no backuppartition-<name> is configured');
  return out;
}

/**
 * partition_select_mode freespace-most (the Cyrus default): the partition
 * with the most free space; ties and unreadable partitions fall back to
 * configuration order.
 */
export function selectPartition(settings: PathSettings): { name: string; path: string } {
  const parts = backupPartitions(settings);
  let best = parts[0]!;
  let bestFree = -1;
  for (const p of parts) {
    let free = -1;
    try {
      fs.mkdirSync(p.path, { recursive: true, mode: 0o755 });
      const st = fs.statfsSync(p.path);
      free = st.bavail * st.bsize;
    } catch {
      free = -1;
    }
    if (free > bestFree) {
      best = p;
      bestFree = free;
    }
  }
  return best;
}

/** True when `p` (resolved) is `root` or lies below it. */
export function isInside(root: string, p: string): boolean {
  const r = path.resolve(root);
  const q = path.resolve(p);
  return q === r || q.startsWith(r.endsWith(path.sep) ? r : r + path.sep);
}

/** Refuses a path outside every backup partition. */
export function assertInPartitions(settings: PathSettings, p: string): string {
  for (const part of backupPartitions(settings)) if (isInside(part.path, p)) return path.resolve(p);
  throw new CyrsyncError('IMAP_IOERROR', `${JSON.stringify(p)} is outside every backup partition`);
}

const NAME_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function randomSuffix(): string {
  let s = '';
  for (let i = 0; i < 6; i++) s += NAME_CHARS[randomInt(NAME_CHARS.length)];
  return s;
}

/**
 * Creates a new, empty data file for `owner` (mkstemp semantics: exclusive
 * create, mode 0600; directories 0755) and returns its path. The file is
 * not locked; the caller registers it in backups.db and removes it if that
 * fails (§3.3).
 */
export function createDataFile(settings: PathSettings, owner: string): string {
  validateOwnerId(owner);
  const part = selectPartition(settings);
  const dir = path.join(part.path, dirHash(owner, settings.fulldirhash === true));
  if (!isInside(part.path, dir)) throw new CyrsyncError('IMAP_IOERROR', `hash directory ${dir} escapes ${part.path}`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  for (let attempt = 0; attempt < 100; attempt++) {
    const p = path.join(dir, `${owner}_${randomSuffix()}`);
    if (path.dirname(p) !== dir) throw new CyrsyncError('IMAP_IOERROR', `data file name for ${JSON.stringify(owner)} escapes ${dir}`);
    let fd: number;
    try {
      fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw new CyrsyncError('IMAP_IOERROR', `cannot create ${p}: ${(err as Error).message}`, { cause: err });
    }
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    syncDirectory(dir);
    return p;
  }
  throw new CyrsyncError('IMAP_IOERROR', `no free data file name for ${owner} in ${dir}`);
}

/** Makes a new directory entry durable (the name outlives a crash). */
function syncDirectory(dir: string): void {
  let fd: number;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch {
    return;
  }
  try {
    fs.fsyncSync(fd);
  } catch {
    /* some filesystems refuse fsync on directories; the file itself is synced */
  } finally {
    fs.closeSync(fd);
  }
}

/** `<P>.index` */
export function indexPathOf(dataPath: string): string {
  return `${dataPath}.index`;
}

/** `<backup_staging_path>` or `<temp_path>/backup` (§9.6, §11). */
export function stagingRoot(settings: PathSettings): string {
  const p = settings.backup_staging_path && settings.backup_staging_path.length > 0
    ? settings.backup_staging_path
    : path.join(settings.temp_path ?? '/tmp', 'backup');
  return path.resolve(p);
}

/** `<staging>/sync./<pid>`: this process's staging directory. */
export function stagingDir(settings: PathSettings, pid: number = process.pid): string {
  return path.join(stagingRoot(settings), 'sync.', String(pid));
}

const GUID_RE = /^[0-9a-f]{40}$/;

/** `<staging>/sync./<pid>/<guid>`; the GUID must be 40 lower-case hex digits. */
export function stagingPath(settings: PathSettings, guid: string, pid: number = process.pid): string {
  if (!GUID_RE.test(guid)) {
    throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', `Invalid GUID ${JSON.stringify(guid.slice(0, 60))}: not 40 lower-case hex digits`);
  }
  return path.join(stagingDir(settings, pid), guid);
}

/** A sieve FILENAME: one plain name, never a path (it is only ever a database value here). */
export function validateSieveFilename(name: unknown): string {
  if (typeof name !== 'string') throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', 'Missing or ill-typed sieve file name');
  if (name.length === 0 || name.length > 255) badName('sieve file name', name, 'empty or longer than 255 octets');
  if (CONTROL.test(name) || name.includes('/') || name === '.' || name === '..') {
    badName('sieve file name', name, "contains '/', a control character, or is '.' or '..'");
  }
  return name;
}

/** A mailbox uniqueid: letters, digits and `-` (Cyrus makes 24- or 36-character ones). */
export function validateUniqueid(id: unknown): string {
  if (typeof id !== 'string') throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', 'Missing or ill-typed UNIQUEID');
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(id)) badName('uniqueid', id, 'only letters, digits, "-" and "_" are allowed');
  return id;
}
