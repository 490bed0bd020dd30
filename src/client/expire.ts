/**
 * `cyrsync expire`: the replica's housekeeping (replica-semantics §8), with
 * the flags of Cyrus's cyr_expire(8) that apply to a replica:
 *
 *   -X AGE   purge expunged records last changed more than AGE ago
 *   -D AGE   remove DELETED-namespace mailboxes deleted more than AGE ago
 *   -x       do not purge expunged records (even with -X)
 *   -u USER, -p PREFIX   only these mailboxes
 *   -v       one line per mailbox and a summary
 *   -E, -A, -t, -c, -a   accepted (cyr_expire requires one of -A -D -E -X -t);
 *            the replica has no duplicate delivery or conversations database,
 *            no archive partition, and keeps the master's user flags
 *
 * AGE is cyr_expire's: a number (fractions allowed) with an optional unit
 * d, h, m or s; days without one. After the purge, message files no record
 * refers to any more are collected (those uploaded or reserved within
 * `--blob-age`, default one day, are spared: a sync may be between its
 * upload and its APPLY MAILBOX).
 *
 * Locking is the store's own: every change is one SQLite write transaction
 * (SQLite's busy_timeout waits while a sync holds the lock), and a blob is unlinked
 * inside the transaction that deletes its row (housekeeping.ts). The store
 * is opened without its start-up cleanup, so a running server's staging
 * files are left alone.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { EX_NOINPUT, EX_TEMPFAIL, UsageError, defineCommand, parseCommandLine, type CommandIO, type OptionValues } from '../cli-args.js';
import { CONFIG_OPTIONS, checkUsage, loadCommandConfig } from '../cli-frame.js';
import { DATABASE_FILE } from '../../sinks/replica/db.js';
import { expireReplica, openForHousekeeping, type ExpirePlan } from '../../sinks/replica/expire.js';

export { deletedAt, expireReplica, openForHousekeeping } from '../../sinks/replica/expire.js';

export const EXPIRE_SPEC = defineCommand({
  name: 'expire',
  summary: "the replica's housekeeping with cyr_expire's flags: purge expunged records (-X), old DELETED mailboxes (-D), then unreferenced message files",
  description:
    "Purges expunged records older than -X, removes DELETED-namespace mailboxes deleted longer ago than -D, then collects the message files no record refers to any more. " +
    "AGE as cyr_expire reads it: a number (fractions allowed) with an optional unit d, h, m, s; days without one. Runs next to a live server (one SQLite write transaction at a time). " +
    'For cyrus.conf EVENTS: expire cmd="/usr/bin/node /opt/cyrsync/dist/src/cli.js expire -C /etc/imapd.conf -X 28 -D 28" at=0430',
  options: {
    ...CONFIG_OPTIONS,
    expunged: { short: 'X', type: 'string', value: 'AGE', help: 'purge expunged records last changed more than AGE ago' },
    deleted: { short: 'D', type: 'string', value: 'AGE', help: 'remove DELETED-namespace mailboxes deleted more than AGE ago' },
    noExpunge: { short: 'x', type: 'boolean', help: 'do not purge expunged records' },
    user: { short: 'u', type: 'string', value: 'USER', help: "only this user's mailboxes" },
    prefix: { short: 'p', type: 'string', value: 'PREFIX', help: 'only mailboxes whose internal name starts with PREFIX' },
    verbose: { short: 'v', type: 'count', help: 'one line per mailbox changed, and a summary' },
    blobAge: { long: 'blob-age', type: 'string', value: 'AGE', help: 'spare message files uploaded or reserved within AGE (default 1d)' },
    duplicates: { short: 'E', type: 'string', value: 'AGE', help: 'accepted: the replica has no duplicate delivery database' },
    archive: { short: 'A', type: 'string', value: 'AGE', help: 'accepted: the replica has no archive partition' },
    userflags: { short: 't', type: 'boolean', help: "accepted: the replica keeps the master's user flags" },
    conversations: { short: 'c', type: 'boolean', help: 'accepted: the replica has no conversations database' },
    noAnnotations: { short: 'a', type: 'boolean', help: 'accepted: expiry annotations are not read (always so)' },
  },
});

/** cyr_expire's durations (cyr_expire.c parse_duration): a float, unit d/h/m/s, days by default. */
export function parseAge(flag: string, s: string): number {
  const m = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*([dhms]?)\s*$/i.exec(s);
  if (!m) throw new UsageError(`option ${flag}: unparsable duration "${s}" (a number of days, or with a unit: 12h, 30m, 90s)`);
  const unit = { d: 86400, h: 3600, m: 60, s: 1, '': 86400 }[m[2]!.toLowerCase() as 'd' | 'h' | 'm' | 's' | ''];
  return Math.round(Number(m[1]) * unit);
}

function planFrom(v: OptionValues<typeof EXPIRE_SPEC>): ExpirePlan {
  if ([v.expunged, v.deleted, v.duplicates, v.archive].every((x) => x === undefined) && !v.userflags) {
    throw new UsageError('at least one of -A -D -E -X -t is required (as for cyr_expire)');
  }
  return {
    expungedAge: v.expunged === undefined || v.noExpunge ? null : parseAge('-X', v.expunged),
    deletedAge: v.deleted === undefined ? null : parseAge('-D', v.deleted),
    user: v.user ?? null,
    prefix: v.prefix ?? null,
    blobAge: v.blobAge === undefined ? 86400 : parseAge('--blob-age', v.blobAge),
  };
}

export async function runExpire(argv: string[], io: CommandIO = {}): Promise<number> {
  const out = io.stdout ?? process.stdout;
  const err = io.stderr ?? process.stderr;
  const p = parseCommandLine(EXPIRE_SPEC, argv, io);
  if (typeof p === 'number') return p;
  const plan = checkUsage(EXPIRE_SPEC, io, () => planFrom(p.values));
  if (typeof plan === 'number') return plan;
  const config = loadCommandConfig(EXPIRE_SPEC, p.values, io);
  if (typeof config === 'number') return config;
  const s = config.settings;
  if (!fs.existsSync(path.join(s.configdirectory, DATABASE_FILE))) {
    err.write(`cyrsync expire: no replica store: ${path.join(s.configdirectory, DATABASE_FILE)} does not exist\n`);
    return EX_NOINPUT;
  }
  const verbose = p.values.verbose > 0;
  if (verbose) plan.onMailbox = (line) => out.write(`${line}\n`);
  const store = openForHousekeeping(s);
  try {
    const r = expireReplica(store, plan);
    if (verbose) {
      out.write(`expunged records purged: ${r.purgedRecords}, DELETED mailboxes removed: ${r.removedMailboxes}, message files collected: ${r.removedBlobs} (${r.freedBytes} octets)\n`);
    }
    return 0;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
      err.write('cyrsync expire: the replica store stayed busy; nothing more was changed, run it again later\n');
      return EX_TEMPFAIL;
    }
    throw e;
  } finally {
    store.close();
  }
}
