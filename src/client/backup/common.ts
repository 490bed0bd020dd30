/**
 * What `cyrsync ctl-backups` and `cyrsync cyr-backup` share: the
 * configuration, naming backups by mode (-A -D -P -f -m -u, as the Cyrus
 * 3.6 tools do), opening a backup under its fcntl lock (sinks/backup/lock.ts,
 * the same lock the real tools and backupd take), Cyrus's time and number
 * formats, and the error texts Cyrus prints.
 */
import * as fs from 'node:fs';
import type { Writable } from 'node:stream';
import { CyrsyncError } from '../../../transforms/errors.js';
import type { Config } from '../../config.js';
import type { OptionSpec } from '../../cli-args.js';
import { CONFIG_OPTION, loadConfigOrReport } from '../../cli-frame.js';
import { openBackupsDb, type BackupsDb } from '../../../sinks/backup/backupsdb.js';
import { BackupIndex, ReindexNeededError, VERIFY_QUICK, verifyBackup } from '../../../sinks/backup/index-db.js';
import { LockOpenError, lockExclusive, type FileLock } from '../../../sinks/backup/lock.js';
import { ownerOfMailbox } from '../../../sinks/backup/paths.js';
import { recoverCompaction } from '../../../sinks/backup/compaction-recovery.js';

export const EX_OK = 0;
export const EX_USAGE = 64;
export const EX_SOFTWARE = 70;
export const EX_TEMPFAIL = 75;

export type Mode = 'all' | 'domain' | 'prefix' | 'file' | 'mailbox' | 'user';

/**
 * The mode flags of both tools, in the order of their usage texts: what the
 * named backups are (`what`, null for -A). ctl_backups takes them all,
 * cyr_backup -f, -m and -u; -u is the default of both.
 */
const MODE_FLAGS: readonly { flag: string; mode: Mode; what: readonly [one: string, many: string] | null }[] = [
  { flag: 'A', mode: 'all', what: null },
  { flag: 'D', mode: 'domain', what: ['domain', 'domains'] },
  { flag: 'P', mode: 'prefix', what: ['userid prefix', 'userid prefixes'] },
  { flag: 'f', mode: 'file', what: ['filename', 'filenames'] },
  { flag: 'm', mode: 'mailbox', what: ['mboxname', 'mboxnames'] },
  { flag: 'u', mode: 'user', what: ['userid', 'userids'] },
];

/** The options both tools take, for their help (each reads its command line with Cyrus's getopt rules, not the shared parser). */
export const TOOL_OPTIONS = { config: CONFIG_OPTION, verbose: { short: 'v', type: 'count', help: 'verbose' } } as const;

/** The mode flags among `flags` as options, for a tool's help. */
export function modeOptions(flags: string, plural: boolean): Record<string, OptionSpec> {
  const options: Record<string, OptionSpec> = {};
  for (const m of MODE_FLAGS) if (flags.includes(m.flag)) options[m.mode] = { short: m.flag, type: 'boolean', help: modeHelp(m, plural) };
  return options;
}

function modeHelp(m: (typeof MODE_FLAGS)[number], plural: boolean): string {
  const what = m.what === null ? 'all known backups' : `specified backup${plural ? 's' : ''} interpreted as ${m.what[plural ? 1 : 0]}`;
  return `${what}${m.mode === 'user' ? ' (default)' : ''}`;
}

/** The mode a flag letter among `flags` selects, or null. */
export function modeOfFlag(c: string, flags: string): Mode | null {
  return flags.includes(c) ? (MODE_FLAGS.find((m) => m.flag === c)?.mode ?? null) : null;
}

/**
 * The `Modes:` lines of a tool's usage text, worded as the Cyrus 3.6 tools
 * word them: "backups ... userids" for ctl_backups (`plural`), "backup ...
 * userid" for cyr_backup.
 */
export function modeUsage(flags: string, plural: boolean): string {
  return MODE_FLAGS.filter((m) => flags.includes(m.flag))
    .map((m) => `    -${m.flag}                  # ${modeHelp(m, plural)}\n`)
    .join('');
}

/** A backup named on the command line: its owner (null with -f) and data file. */
export interface Target {
  userid: string | null;
  fname: string;
}

export class UsageError extends Error {}

/** The configuration of `-C FILE` (else /etc/imapd.conf, else the built-in one); a bad one is reported as the Cyrus tools do, `fatal error: ...`, giving EX_CONFIG. */
export function loadToolConfig(file: string | undefined, stderr: Writable): Config | number {
  return loadConfigOrReport({ config: file }, { stderr }, 'fatal error: ');
}

/** Internal mailbox name from the external one (unixhierarchysep: `/` separates). */
export function internalName(ext: string, unixhierarchysep: boolean): string {
  if (!unixhierarchysep) return ext;
  return ext.replace(/[./]/g, (c) => (c === '/' ? '.' : '^'));
}

function domainOf(userid: string, defaultDomain: string | null): string | null {
  const at = userid.lastIndexOf('@');
  return at >= 0 ? userid.slice(at + 1) : defaultDomain;
}

export interface Resolved {
  targets: Target[];
  /** Names that could not be resolved: `<name>: not found in backups.db` has been printed for each. */
  missing: number;
}

/**
 * The backups the arguments name in `mode` (ctl_backups main()): -A every
 * backups.db entry in key order, -D users of the given domains, -P user id
 * prefixes, -f file names (need not be in backups.db), -m the owner of each
 * mailbox, -u user ids.
 */
export function resolveTargets(config: Config, mode: Mode, names: string[], stderr: Writable): Resolved {
  if (mode === 'file') return { targets: names.map((fname) => ({ userid: null, fname })), missing: 0 };
  const db = openBackupsDb(config.settings);
  try {
    return resolveFromDb(db, config, mode, names, stderr);
  } finally {
    db.close();
  }
}

function resolveFromDb(db: BackupsDb, config: Config, mode: Mode, names: string[], stderr: Writable): Resolved {
  const s = config.settings;
  const entries = (): Target[] => db.list().map(([userid, fname]) => ({ userid, fname }));
  if (mode === 'all') return { targets: entries(), missing: 0 };
  if (mode === 'prefix') return { targets: names.flatMap((p) => entries().filter((e) => e.userid!.startsWith(p))), missing: 0 };
  if (mode === 'domain') {
    const def = config.get('defaultdomain') ?? null;
    return { targets: names.flatMap((d) => entries().filter((e) => domainOf(e.userid!, def) === d)), missing: 0 };
  }
  const targets: Target[] = [];
  let missing = 0;
  for (const name of names) {
    const owner = mode === 'mailbox' ? ownerOfMailbox(internalName(name, s.unixhierarchysep)) : name;
    const fname = db.get(owner);
    if (fname === null) {
      stderr.write(`${name}: not found in backups.db\n`);
      missing++;
      continue;
    }
    targets.push({ userid: owner, fname });
  }
  return { targets, missing };
}

/** A backup opened by a tool: the data file's lock and its index. */
export interface ToolBackup {
  lock: FileLock;
  index: BackupIndex;
  close(): void;
}

/** Cyrus's error_message() texts for the failures the tools report. */
export function errorText(err: unknown): string {
  if (err instanceof LockedError) return 'Mailbox is locked';
  if (err instanceof LockOpenError && err.errno === 'ENOENT') return 'Mailbox does not exist';
  if (err instanceof ReindexNeededError) return 'System I/O error';
  if (err instanceof CyrsyncError || err instanceof Error) return err.message;
  return String(err);
}

export class LockedError extends CyrsyncError {
  constructor(fname: string) {
    super('IMAP_MAILBOX_LOCKED', `${fname} is locked by another process`);
  }
}

export class VerifyFailed extends CyrsyncError {
  constructor(message: string) {
    super('IMAP_IOERROR', message);
  }
}

/**
 * Locks the data file (waiting when `wait`; LockedError otherwise) and opens
 * its index under the lock (backup_open_paths), then the quick verification
 * of the last chunk unless `verify` is false.
 */
export async function openToolBackup(fname: string, opts: { wait: boolean; verify?: boolean; create?: boolean }): Promise<ToolBackup> {
  let lock: FileLock | null;
  for (let create = opts.create === true; ; create = false) {
    lock = await lockExclusive(fname, { wait: opts.wait, append: true, create, exclusiveCreate: create });
    if (lock === null) throw new LockedError(fname);
    // An interrupted compaction is finished or undone first.
    if (!recoverCompaction(fname)) break;
    lock.release();
  }
  let index: BackupIndex;
  try {
    index = BackupIndex.open(`${fname}.index`, { dataFileSize: lock.size() });
  } catch (err) {
    lock.release();
    throw err;
  }
  const b: ToolBackup = {
    lock,
    index,
    close: () => {
      try {
        if (index.db.open) index.close();
      } finally {
        lock.release();
      }
    },
  };
  if (opts.verify !== false) {
    try {
      const v = await verifyBackup(lock.fd, index, VERIFY_QUICK);
      if (!v.ok) throw new VerifyFailed(`${fname}: ${v.problems[0]}`);
    } catch (err) {
      b.close();
      throw err;
    }
  }
  return b;
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

/** strftime("%F %T", localtime(ts)). */
export function localTime(ts: number | null): string {
  if (ts === null) return '[unknown]';
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** printf("%6.1f") and friends. */
export function fixed(x: number, width: number, digits: number): string {
  const s = Number.isFinite(x) ? x.toFixed(digits) : Number.isNaN(x) ? (x < 0 ? '-nan' : 'nan') : x > 0 ? 'inf' : '-inf';
  return s.padStart(width);
}

/** A real as jansson writes it (%.17g, with ".0" when it would look like an integer). */
export function jsonReal(x: number): string {
  if (!Number.isFinite(x)) return 'null';
  let s = x.toPrecision(17);
  if (s.includes('e')) {
    const [m, e] = s.split('e') as [string, string];
    const mm = m.includes('.') ? m.replace(/0+$/, '').replace(/\.$/, '') : m;
    const ee = Number(e);
    if (ee >= -4 && ee < 17) s = String(Number(`${mm}e${ee}`));
    else s = `${mm}e${ee < 0 ? '-' : '+'}${String(Math.abs(ee)).padStart(2, '0')}`;
  } else if (s.includes('.')) {
    s = s.replace(/0+$/, '').replace(/\.$/, '');
  }
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/**
 * A JSON object as jansson prints it with JSON_INDENT(2) |
 * JSON_PRESERVE_ORDER (`-j` output of the Cyrus tools). Values: strings,
 * integers, { real } for doubles, null, nested objects and arrays.
 */
export type JValue = string | number | null | { real: number } | JValue[] | { [k: string]: JValue };

export function janssonText(v: JValue, indent = 0): string {
  const pad = ' '.repeat(indent + 2);
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (typeof v === 'number') return String(v);
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return `[\n${v.map((x) => pad + janssonText(x, indent + 2)).join(',\n')}\n${' '.repeat(indent)}]`;
  }
  if ('real' in v && typeof v.real === 'number' && Object.keys(v).length === 1) return jsonReal(v.real);
  const keys = Object.keys(v);
  if (keys.length === 0) return '{}';
  return `{\n${keys.map((k) => `${pad}${JSON.stringify(k)}: ${janssonText((v as Record<string, JValue>)[k]!, indent + 2)}`).join(',\n')}\n${' '.repeat(indent)}}`;
}

/** Size of a file, or -1. */
export function fileSize(fd: number): number {
  try {
    return fs.fstatSync(fd).size;
  } catch {
    return -1;
  }
}

/** Writes and waits for the stream to take it (so large outputs keep flat memory). */
export function write(out: Writable, s: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (out.write(s)) resolve();
    else {
      const onDrain = (): void => {
        out.off('error', onErr);
        resolve();
      };
      const onErr = (e: Error): void => {
        out.off('drain', onDrain);
        reject(e);
      };
      out.once('drain', onDrain);
      out.once('error', onErr);
    }
  });
}
