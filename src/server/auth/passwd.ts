/**
 * The cyrsync password file and the `cyrsync passwd` command.
 *
 * Format: one `user:$scrypt$N=<n>,r=<r>,p=<p>$<salt base64>$<key base64>`
 * line per user; `#` comment lines and blank lines are kept as they are.
 * The file is only ever replaced whole (temporary file in the same
 * directory, fsync, rename, fsync of the directory), mode 0600, under an
 * exclusive lock file, so a reader sees either the old or the new file and
 * two writers cannot lose each other's change.
 */
import { randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';
import {
  closeSync,
  constants as fsConstants,
  fchownSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Settings } from '../../config.js';
import { EX_DATAERR, EX_IOERR, defineCommand, parseCommandLine } from '../../cli-args.js';
import { CONFIG_OPTION, loadCommandConfig } from '../../cli-frame.js';

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/**
 * 2^14, r=8, p=1: 16 MiB and about 50 ms per hash, the scrypt paper's
 * parameters for interactive logins. Every login pays it, in a process whose
 * whole budget is about 100 MB (under master(8), one process per connection),
 * so the memory cost is kept to a sixth of that. Entries keep the parameters
 * they were written with.
 */
export const DEFAULT_SCRYPT: ScryptParams = { N: 16384, r: 8, p: 1 };
const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** Hashes outside these bounds are refused rather than computed (a hostile file must not exhaust memory). */
const MAX_N = 1 << 20;
const MAX_R = 32;
const MAX_P = 16;
/** scrypt needs 128·N·r octets; one check must not take more than this. */
const MAX_SCRYPT_MEMORY = 256 * 1024 * 1024;

const maxmem = (p: ScryptParams): number => 128 * p.N * p.r * 2 + 1024 * 1024;

/** Why a password file cannot be used. */
export class PasswdFileError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    detail: string,
  ) {
    super(`password file ${file}${line > 0 ? ` line ${line}` : ''}: ${detail}`);
    this.name = 'PasswdFileError';
  }
}

function toBuffer(password: Buffer | string): Buffer {
  return typeof password === 'string' ? Buffer.from(password, 'utf8') : password;
}

function format(params: ScryptParams, salt: Buffer, key: Buffer): string {
  return `$scrypt$N=${params.N},r=${params.r},p=${params.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

interface ParsedHash {
  params: ScryptParams;
  salt: Buffer;
  key: Buffer;
}

/** Parse a `$scrypt$...` hash; null when it is not one we can check. */
export function parseHash(hash: string): ParsedHash | null {
  const m = /^\$scrypt\$N=(\d{1,8}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/.exec(hash);
  if (!m) return null;
  const params = { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
  if (params.N < 2 || params.N > MAX_N || (params.N & (params.N - 1)) !== 0) return null;
  if (params.r < 1 || params.r > MAX_R || params.p < 1 || params.p > MAX_P) return null;
  if (128 * params.N * params.r > MAX_SCRYPT_MEMORY) return null;
  const salt = Buffer.from(m[4]!, 'base64');
  const key = Buffer.from(m[5]!, 'base64');
  if (salt.length < 8 || key.length < 16 || key.length > 64) return null;
  return { params, salt, key };
}

export function hashPasswordSync(password: Buffer | string, params: ScryptParams = DEFAULT_SCRYPT): string {
  const salt = randomBytes(SALT_BYTES);
  const key = scryptSync(toBuffer(password), salt, KEY_BYTES, { ...params, maxmem: maxmem(params) });
  return format(params, salt, key);
}

export function hashPassword(password: Buffer | string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  return new Promise((resolve, reject) => {
    scrypt(toBuffer(password), salt, KEY_BYTES, { ...params, maxmem: maxmem(params) }, (err, key) =>
      err ? reject(err) : resolve(format(params, salt, key)),
    );
  });
}

/** Check a password against a stored hash; the key comparison is constant-time. */
export function verifyPasswordHash(hash: string, password: Buffer | string): Promise<boolean> {
  const parsed = parseHash(hash);
  if (!parsed) return Promise.resolve(false);
  const { params, salt, key } = parsed;
  return new Promise((resolve, reject) => {
    scrypt(toBuffer(password), salt, key.length, { ...params, maxmem: maxmem(params) }, (err, derived) =>
      err ? reject(err) : resolve(timingSafeEqual(derived, key)),
    );
  });
}

/**
 * A login name canonicalised as Cyrus's `auth_mech: unix` does
 * (lib/auth_unix.c mycanonifyid): at most 80 octets, none of them a control
 * character, 8-bit, or one of `% & * / : ? DEL`; ASCII upper case folded
 * when `username_tolower` is on. Returns null for a name Cyrus refuses
 * (the login then fails with `NO authentication failure`).
 */
export function canonicalUser(name: string, usernameTolower = true): string | null {
  if (name.length === 0 || name.length > 80) return null;
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f%&*/:?\x7f-\uffff]/.test(name)) return null;
  return usernameTolower ? name.replace(/[A-Z]+/g, (s) => s.toLowerCase()) : name;
}

interface FileLine {
  raw: string;
  user?: string;
}

function parseLines(text: string, file: string): FileLine[] {
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const seen = new Set<string>();
  return lines.map((raw, i) => {
    const t = raw.trim();
    if (t === '' || t.startsWith('#')) return { raw };
    const colon = raw.indexOf(':');
    if (colon <= 0) throw new PasswdFileError(file, i + 1, 'expected "user:$scrypt$..."');
    const user = raw.slice(0, colon);
    if (seen.has(user)) throw new PasswdFileError(file, i + 1, `user "${user}" appears twice`);
    seen.add(user);
    return { raw, user };
  });
}

/** Users and hashes of a password file's text. */
export function parsePasswdFile(text: string, file = '<text>'): Map<string, string> {
  const out = new Map<string, string>();
  for (const l of parseLines(text, file)) if (l.user !== undefined) out.set(l.user, l.raw.slice(l.user.length + 1).trim());
  return out;
}

/** The stored hash of `user`, or null (also when the file does not exist). */
export async function lookupPasswdEntry(file: string, user: string): Promise<string | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new PasswdFileError(file, 0, `cannot read: ${(err as Error).message}`);
  }
  return parsePasswdFile(text, file).get(user) ?? null;
}

function readLinesSync(file: string): FileLine[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new PasswdFileError(file, 0, `cannot read: ${(err as Error).message}`);
  }
  return parseLines(text, file);
}

const sleepSync = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/** Run `fn` holding `<file>.lock` (created exclusively; a lock older than 60 s is taken as stale). */
function withLockSync<T>(file: string, fn: () => T): T {
  const lock = `${file}.lock`;
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  let fd = -1;
  for (let attempt = 0; fd < 0; attempt++) {
    try {
      fd = openSync(lock, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (Date.now() - statSync(lock).mtimeMs > 60_000) {
          unlinkSync(lock);
          continue;
        }
      } catch {
        continue; // removed meanwhile
      }
      if (attempt >= 100) throw new PasswdFileError(file, 0, `locked by another process (${lock})`);
      sleepSync(50);
    }
  }
  try {
    return fn();
  } finally {
    closeSync(fd);
    try {
      unlinkSync(lock);
    } catch {
      /* already gone */
    }
  }
}

/**
 * Who must own the file: its current owner, or for a new file the owner of
 * its directory. Run as root (`cyrsync passwd` by an operator), the file
 * would otherwise become root's and unreadable to a daemon running as the
 * Cyrus user, which owns the configuration directory.
 */
function wantedOwner(file: string, dir: string): { uid: number; gid: number } | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null;
  for (const p of [file, dir]) {
    try {
      const st = statSync(p);
      return { uid: st.uid, gid: st.gid };
    } catch {
      /* try the next */
    }
  }
  return null;
}

/** Replace `file` with `content` atomically, mode 0600, keeping its owner (see wantedOwner). */
export function writeFileAtomicSync(file: string, content: string): void {
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const owner = wantedOwner(file, dir);
  const tmp = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, 0o600);
  try {
    if (owner) fchownSync(fd, owner.uid, owner.gid);
    const data = Buffer.from(content, 'utf8');
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(tmp);
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, file);
  } catch (err) {
    unlinkSync(tmp);
    throw err;
  }
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Set (create or replace) `user`'s password; `password === null` removes the user. Returns whether the user existed. */
export function setPasswordSync(file: string, user: string, password: Buffer | string | null, params: ScryptParams = DEFAULT_SCRYPT): boolean {
  return withLockSync(file, () => {
    const lines = readLinesSync(file);
    const idx = lines.findIndex((l) => l.user === user);
    const existed = idx >= 0;
    if (password === null) {
      if (existed) lines.splice(idx, 1);
    } else {
      const line = { raw: `${user}:${hashPasswordSync(password, params)}`, user };
      if (existed) lines[idx] = line;
      else lines.push(line);
    }
    if (password !== null || existed) writeFileAtomicSync(file, lines.map((l) => l.raw + '\n').join(''));
    return existed;
  });
}

/**
 * First-run helper for `npm start`: when none of the `admins` users has an entry
 * in the password file, give the first one a random password and return it
 * (to be shown once). Does nothing when `admins` is empty.
 */
export function ensureAdminPassword(settings: Settings, params: ScryptParams = DEFAULT_SCRYPT): { created: boolean; user?: string; password?: string } {
  // Only entries naming one user as it logs in can be given a password (not `anyone`, `group:...`,
  // nor an entry in upper case that no canonical login name can equal).
  const admins = settings.admins.filter((a) => a !== 'anyone' && !a.startsWith('group:') && canonicalUser(a, settings.username_tolower) === a);
  if (admins.length === 0) return { created: false };
  const file = settings.cyrsync_passwd_file;
  const present = readLinesSync(file).some((l) => l.user !== undefined && admins.includes(l.user));
  if (present) return { created: false };
  const user = admins[0]!;
  const password = randomBytes(18).toString('base64url');
  setPasswordSync(file, user, password, params);
  return { created: true, user, password };
}

// ---------------------------------------------------------------------------
// `cyrsync passwd`

export interface PasswdIO {
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (mode: boolean) => unknown };
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Root of the built-in configuration when there is no -C and no /etc/imapd.conf (default: cwd). */
  baseDir?: string;
  /** Configuration file used when there is no -C (default /etc/imapd.conf). */
  defaultConfigFile?: string;
  /** Hash cost (tests use a small one). */
  scrypt?: ScryptParams;
}

export const PASSWD_SPEC = defineCommand({
  name: 'passwd',
  summary: "set (-d: delete) USER's password in the password file (cyrsync_passwd_file)",
  description:
    "Sets USER's password in the cyrsync password file (cyrsync_passwd_file, default <configdirectory>/cyrsync.passwd; scrypt hashes, mode 0600, atomic rewrite). The password is read from standard input when it is not a terminal (first line), otherwise asked twice without echo. -d removes USER instead.",
  options: {
    config: CONFIG_OPTION,
    remove: { short: 'd', long: 'delete', type: 'boolean', help: 'remove USER' },
  },
  positionals: { name: 'USER', min: 1, max: 1 },
});

async function readAllStdin(stdin: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stdin) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks);
}

/**
 * Reads lines from a terminal in raw mode, without echo. Bytes typed (or
 * pasted) ahead of the current prompt are kept for the next one.
 */
class HiddenLineReader {
  private pending: number[] = [];
  constructor(
    private readonly stdin: NonNullable<PasswdIO['stdin']>,
    private readonly out: NodeJS.WritableStream,
  ) {}

  /** Echo off (raw mode) before anything is shown, so nothing typed early is echoed. */
  start(): void {
    this.stdin.setRawMode?.(true);
  }

  stop(): void {
    this.stdin.setRawMode?.(false);
  }

  /** One line; null on Ctrl-C, or Ctrl-D / end of input with nothing typed. */
  read(prompt: string): Promise<Buffer | null> {
    this.out.write(prompt);
    const { stdin } = this;
    return new Promise((resolve) => {
      const line: number[] = [];
      let settled = false;
      const finish = (v: Buffer | null, rest: number[]): void => {
        if (settled) return;
        settled = true;
        this.pending = rest;
        stdin.removeListener('data', onData);
        stdin.removeListener('end', onEnd);
        stdin.pause();
        this.out.write('\n');
        resolve(v);
      };
      const feed = (bytes: number[]): void => {
        for (let i = 0; i < bytes.length; i++) {
          const c = bytes[i]!;
          const rest = (): number[] => bytes.slice(i + 1);
          if (c === 0x0d || c === 0x0a) {
            // A CR LF pair ends one line, not two.
            const r = rest();
            if (c === 0x0d && r[0] === 0x0a) r.shift();
            return finish(Buffer.from(line), r);
          }
          if (c === 0x03) return finish(null, []);
          if (c === 0x04) return finish(line.length === 0 ? null : Buffer.from(line), rest());
          if (c === 0x7f || c === 0x08) {
            // Remove one UTF-8 character.
            while (line.length > 0 && ((line.pop() as number) & 0xc0) === 0x80);
            continue;
          }
          if (c === 0x15) {
            line.length = 0;
            continue;
          }
          line.push(c);
        }
      };
      const onData = (chunk: Buffer | string): void => feed([...(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)]);
      const onEnd = (): void => finish(line.length === 0 ? null : Buffer.from(line), []);
      stdin.on('data', onData);
      stdin.on('end', onEnd);
      const pending = this.pending;
      this.pending = [];
      feed(pending);
      if (!settled && (stdin as { readableEnded?: boolean }).readableEnded) onEnd();
      if (!settled) stdin.resume();
    });
  }
}

/** The canonical form of the USER argument, or null (reported) when no login could use it. */
function passwdUser(arg: string, settings: Settings, stderr: NodeJS.WritableStream): string | null {
  const user = canonicalUser(arg, settings.username_tolower);
  // A leading '#' or blank would read back as a comment or a different name.
  if (user === null || /^[#\s]/.test(user)) {
    stderr.write(`cyrsync passwd: invalid user name "${arg}" (1 to 80 ASCII characters, none of % & * / : ? or control characters, not starting with '#' or a blank)\n`);
    return null;
  }
  if (!settings.sasl_pwcheck_method.includes('auxprop')) {
    stderr.write(`cyrsync passwd: note: sasl_pwcheck_method is "${settings.sasl_pwcheck_method.join(' ')}", so logins do not consult ${settings.cyrsync_passwd_file}\n`);
  }
  return user;
}

/** Asked twice without echo on a terminal; null (nothing to say) when cancelled, an exit status when they differ. */
async function promptPassword(stdin: NonNullable<PasswdIO['stdin']>, stderr: NodeJS.WritableStream, user: string): Promise<Buffer | number> {
  const reader = new HiddenLineReader(stdin, stderr);
  reader.start();
  let a: Buffer | null;
  let b: Buffer | null = null;
  try {
    a = await reader.read(`New password for ${user}: `);
    if (a !== null) b = await reader.read('Retype new password: ');
  } finally {
    reader.stop();
  }
  if (a === null || b === null) return 1;
  if (!a.equals(b)) {
    stderr.write('cyrsync passwd: the passwords differ; nothing changed\n');
    return 1;
  }
  return a;
}

/** The new password: prompted for on a terminal, else the first line of stdin; an exit status when refused. */
async function readNewPassword(stdin: NonNullable<PasswdIO['stdin']>, stderr: NodeJS.WritableStream, user: string): Promise<Buffer | number> {
  let password: Buffer;
  if (stdin.isTTY) {
    const typed = await promptPassword(stdin, stderr, user);
    if (typeof typed === 'number') return typed;
    password = typed;
  } else {
    const all = await readAllStdin(stdin);
    let end = all.indexOf(0x0a);
    if (end < 0) end = all.length;
    if (end > 0 && all[end - 1] === 0x0d) end--;
    password = all.subarray(0, end);
  }
  if (password.length === 0) {
    stderr.write('cyrsync passwd: empty password refused; nothing changed\n');
    return 1;
  }
  if (password.includes(0)) {
    stderr.write('cyrsync passwd: a password cannot contain NUL; nothing changed\n');
    return EX_DATAERR;
  }
  return password;
}

/** Writes the change (a null password removes USER) and says what was done; returns the exit status. */
function applyPasswd(file: string, user: string, password: Buffer | null, params: ScryptParams, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream): number {
  try {
    const existed = setPasswordSync(file, user, password, params);
    if (password === null) {
      stdout.write(existed ? `cyrsync passwd: removed ${user} from ${file}\n` : `cyrsync passwd: ${user} is not in ${file}; nothing changed\n`);
      return existed ? 0 : 1;
    }
    stdout.write(`cyrsync passwd: password ${existed ? 'changed' : 'set'} for ${user} in ${file}\n`);
    return 0;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    stderr.write(`cyrsync passwd: ${msg}\n`);
    return err instanceof PasswdFileError && /line \d+/.test(msg) ? EX_DATAERR : EX_IOERR;
  }
}

/** `cyrsync passwd [-C FILE] [-d] USER`: returns the exit status. */
export async function runPasswd(argv: string[], io: PasswdIO = {}): Promise<number> {
  const stdin = io.stdin ?? process.stdin;
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const p = parseCommandLine(PASSWD_SPEC, argv, { stdout, stderr });
  if (typeof p === 'number') return p;
  const config = loadCommandConfig(PASSWD_SPEC, p.values, { ...io, stderr });
  if (typeof config === 'number') return config;
  const user = passwdUser(p.positionals[0]!, config.settings, stderr);
  if (user === null) return EX_DATAERR;
  let password: Buffer | null = null;
  if (!p.values.remove) {
    const read = await readNewPassword(stdin, stderr, user);
    if (typeof read === 'number') return read;
    password = read;
  }
  return applyPasswd(config.settings.cyrsync_passwd_file, user, password, io.scrypt ?? DEFAULT_SCRYPT, stdout, stderr);
}
