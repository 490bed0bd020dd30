/**
 * `cyrsync check [-C imapd.conf] [--json] [--quick] [USER...]`: reads the
 * stores of a configuration offline (the replica when its database exists,
 * the backups when backups.db exists) and prints one line per problem.
 * Exit status 0 when clean, 1 when anything is wrong, 64 for bad usage, 66
 * when the configuration has no store to check, 78 for a bad imapd.conf.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { EX_NOINPUT, defineCommand, parseCommandLine, type CommandIO } from '../../cli-args.js';
import { CONFIG_OPTIONS, loadCommandConfig } from '../../cli-frame.js';
import { DATABASE_FILE } from '../../../sinks/replica/db.js';
import { backupsDbPath } from '../../../sinks/backup/backupsdb.js';
import { ReplicaStore } from '../../../sinks/replica/store.js';
import { checkReplica } from './replica.js';
import { checkBackups } from './backup.js';
import { emptyCounts, formatProblem, type CheckCounts, type Problem } from './problems.js';

export const CHECK_SPEC = defineCommand({
  name: 'check',
  summary: 'check a replica or backup store offline; one line per problem, exit status 1 when any',
  description:
    'Reads the stores of the configuration and reports what is wrong, one line per problem (level, kind, where, what). ' +
    'Replica: records whose message file is missing, files no record knows, files that do not hash to their GUID or have the wrong size, ' +
    'records whose stored CRCs differ from their contents, mailboxes whose sync_crc or last_uid/highestmodseq disagree with their records, ' +
    'staging files left by a process that is gone. Backups: each backup verified as ctl_backups verify does (every chunk checksum against the index, ' +
    'message and mailbox links, message GUIDs), staging left by a backupd that is gone. ' +
    'It only reads, and runs next to a live server. Exit status: 0 clean, 1 problems, 64 usage, 66 no store, 78 bad imapd.conf.',
  options: {
    ...CONFIG_OPTIONS,
    json: { long: 'json', type: 'boolean', help: 'one JSON object per problem (level, kind, store, user, mailbox, uid, partition, guid, chunk, path, detail)' },
    quick: { long: 'quick', type: 'boolean', help: 'do not hash message files (sizes and presence only)' },
    quiet: { short: 'q', long: 'quiet', type: 'boolean', help: 'no summary line on stderr' },
  },
  positionals: { name: '[USER...]', min: 0 },
  epilog: 'With USERs, only their mailboxes, the files their records refer to and their backups are checked.',
});

export interface CheckRunOptions extends CommandIO {
  /** pause before confirming suspects (tests use 0) */
  settleMs?: number;
}

export async function runCheck(argv: string[], io: CheckRunOptions = {}): Promise<number> {
  const out = io.stdout ?? process.stdout;
  const err = io.stderr ?? process.stderr;
  const p = parseCommandLine(CHECK_SPEC, argv, io);
  if (typeof p === 'number') return p;
  const { values: v, positionals: users } = p;
  const config = loadCommandConfig(CHECK_SPEC, v, io);
  if (typeof config === 'number') return config;
  const s = config.settings;
  const replicaDb = path.join(s.configdirectory, DATABASE_FILE);
  const hasReplica = Object.keys(s.partitions).length > 0 && fs.existsSync(replicaDb);
  const hasBackups = Object.keys(s.backuppartitions).length > 0 && fs.existsSync(backupsDbPath(s));
  if (!hasReplica && !hasBackups) {
    err.write(`cyrsync check: no store to check: neither ${replicaDb} nor ${backupsDbPath(s)} exists\n`);
    return EX_NOINPUT;
  }
  const counts = emptyCounts();
  const tally = { error: 0, warning: 0 };
  const report = (problem: Problem): void => {
    tally[problem.level]++;
    out.write(v.json ? JSON.stringify(problem) + '\n' : formatProblem(problem) + '\n');
  };
  if (hasReplica) {
    let store: ReplicaStore;
    try {
      store = ReplicaStore.openReadonly({ configdirectory: s.configdirectory, partitions: { ...s.partitions } });
    } catch (e) {
      err.write(`cyrsync check: cannot read the replica store ${replicaDb}: ${(e as Error).message}\n`);
      return EX_NOINPUT;
    }
    try {
      await checkReplica(store, counts, report, { users, hashContent: !v.quick, ...(io.settleMs !== undefined ? { settleMs: io.settleMs } : {}) });
    } finally {
      store.close();
    }
  }
  if (hasBackups) await checkBackups(s, counts, report, { users });
  if (!v.quiet) err.write(summary(tally, counts));
  return tally.error + tally.warning > 0 ? 1 : 0;
}

function summary(tally: { error: number; warning: number }, c: CheckCounts): string {
  const n = tally.error + tally.warning;
  const plural = (k: number, w: string): string => `${k} ${w}${k === 1 ? '' : 's'}`;
  const looked = [
    plural(c.mailboxes, 'mailbox').replace('mailboxs', 'mailboxes'),
    plural(c.records, 'record'),
    plural(c.blobs, 'message file'),
    plural(c.backups, 'backup'),
  ];
  const locked = c.lockedBackups > 0 ? `; ${plural(c.lockedBackups, 'backup')} locked by another process, not checked` : '';
  const verdict = n === 0 ? 'clean' : `${plural(n, 'problem')} (${plural(tally.error, 'error')}, ${plural(tally.warning, 'warning')})`;
  return `cyrsync check: ${verdict}; checked ${looked.join(', ')}${locked}\n`;
}
