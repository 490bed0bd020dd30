/**
 * The command line of `cyrsync restore`, as Cyrus 3.6 restore(8) reads it
 * (backup/restore.c: getopt ":A:C:DF:LM:P:UXaf:m:nru:vw:xz"), plus
 * `--at TIME`, `-j`/`--json` and `--embedded`, on the shared parser
 * (src/cli-args.ts):
 *
 *   cyrsync restore [options] SERVER [MODE] BACKUP [mboxname|uniqueid|guid]...
 *
 * The conflicts restore.c refuses with its usage message are refused here
 * too (-U with -A/-M/-P, -X with -x, -a with -F, more than one of -f/-m/-u,
 * objects with -a/-F). One difference: `-A` always takes a value (`-A ""`
 * for the owner's default ACL), where getopt also accepts a bare `-A` last.
 */
import { defineCommand, intValue, parseCommandArgs, UsageError } from '../../cli-args.js';
import { parseTime } from '../backup/pit.js';

export { UsageError };

export type BackupMode = 'user' | 'mboxname' | 'filename';
export type ExpungedMode = 'all' | 'exclude' | 'only';

export interface RestoreArgs {
  configFile?: string;
  embedded: boolean;
  server: string;
  mode: BackupMode;
  backup: string;
  objects: string[];
  inputFile?: string;
  all: boolean;
  /** -A: undefined = the backup's ACL, '' = the owner's default ACL. */
  acl?: string;
  keepDeletedPrefix: boolean;
  localOnly: boolean;
  overrideMboxname?: string;
  overridePartition?: string;
  keepUidvalidity: boolean;
  expunged: ExpungedMode;
  dryRun: boolean;
  recurse: boolean;
  verbose: number;
  wait: number;
  requireCompression: boolean;
  /** --at: Unix seconds, or undefined for the latest state. */
  at?: number;
  json: boolean;
  help: boolean;
}

export const RESTORE_SPEC = defineCommand({
  name: 'restore',
  summary: 'restore mailboxes and messages from a backup to a live server (Cyrus restore; --at TIME: as of then)',
  description:
    'Cyrus restore(8) for backups kept by cyrsync backupd or the real backupd: pushes mailboxes, messages, flags, ' +
    'annotations, subscriptions, seen state and sieve scripts from BACKUP to SERVER (host[:port], a Cyrus sync_server, ' +
    'a replication-enabled imapd or cyrsync sync-server), sending only what SERVER lacks. Logs in with restore_authname / ' +
    'restore_password (else sync_authname / sync_password). BACKUP is a user id unless -f or -m says otherwise.',
  options: {
    acl: { short: 'A', type: 'string', value: 'ACL', help: 'apply ACL to restored mailboxes ("": the owner\'s default ACL)' },
    config: { short: 'C', type: 'string', value: 'FILE', help: 'imapd.conf (default /etc/imapd.conf)' },
    keepDeleted: { short: 'D', type: 'boolean', help: "don't trim the deleted prefix before restoring" },
    inputFile: { short: 'F', type: 'string', value: 'FILE', help: 'read mailboxes/messages from FILE ("-": stdin)' },
    localOnly: { short: 'L', type: 'boolean', help: 'local mailbox operations only (no mupdate)' },
    intoMailbox: { short: 'M', type: 'string', value: 'MBOXNAME', help: 'restore messages to MBOXNAME' },
    partition: { short: 'P', type: 'string', value: 'PARTITION', help: 'restore mailboxes to PARTITION' },
    keepUid: { short: 'U', type: 'boolean', help: 'try to preserve uniqueid, uidvalidity, uids and modseqs' },
    noExpunged: { short: 'X', type: 'boolean', help: "don't restore expunged messages" },
    all: { short: 'a', type: 'boolean', help: 'restore every mailbox in the backup' },
    file: { short: 'f', type: 'string', value: 'FILE', help: 'mode: the backup is the data file FILE' },
    mbox: { short: 'm', type: 'string', value: 'MBOXNAME', help: 'mode: the backup holding MBOXNAME' },
    dryRun: { short: 'n', type: 'boolean', help: 'print the plan, connect to nothing' },
    recurse: { short: 'r', type: 'boolean', help: 'recurse into submailboxes' },
    user: { short: 'u', type: 'string', value: 'USERID', help: "mode: USERID's backup (the default)" },
    verbose: { short: 'v', type: 'count', help: 'verbose (repeat for more)' },
    wait: { short: 'w', type: 'string', value: 'SECONDS', help: 'wait before starting' },
    onlyExpunged: { short: 'x', type: 'boolean', help: 'only restore expunged messages' },
    compress: { short: 'z', type: 'boolean', help: 'require compression (fail when the server offers none)' },
    at: { long: 'at', type: 'string', value: 'TIME', help: 'restore the state as of TIME (ISO 8601 or Unix seconds)' },
    json: { short: 'j', long: 'json', type: 'boolean', help: 'one JSON object per line on stdout' },
    embedded: { long: 'embedded', type: 'boolean', help: 'use the built-in configuration under ./var' },
  },
  positionals: { name: 'SERVER [BACKUP] [mboxname|uniqueid|guid]...', min: 0 },
  epilog:
    'Examples: restore a deleted folder: cyrsync restore imap.example.org bob user.bob.Projects\n' +
    'restore a user as of yesterday 18:00, keeping uids: cyrsync restore -U -a --at 2026-12-06T18:00:00Z imap.example.org bob',
});

/** Parses argv (after `restore`); throws UsageError for anything restore.c would refuse. */
export function parseRestoreArgs(argv: readonly string[]): RestoreArgs {
  const p = parseCommandArgs(RESTORE_SPEC, argv);
  const v = p.values;
  const base = { embedded: v.embedded, json: v.json, help: p.help, verbose: v.verbose };
  if (p.help) return { ...base, server: '', mode: 'user', backup: '', objects: [], all: false, keepDeletedPrefix: false, localOnly: false, keepUidvalidity: false, expunged: 'all', dryRun: false, recurse: false, wait: 0, requireCompression: false };
  if (v.keepUid && (v.acl !== undefined || v.intoMailbox !== undefined || v.partition !== undefined)) throw new UsageError('-U cannot be combined with -A, -M or -P');
  if (v.noExpunged && v.onlyExpunged) throw new UsageError('only one of -X and -x');
  if (v.all && v.inputFile !== undefined) throw new UsageError('-a cannot be combined with -F');
  const modes = p.seen.filter((f) => f === '-f' || f === '-m' || f === '-u');
  if (modes.length > 1) throw new UsageError('only one of -f, -m, -u');
  let at: number | undefined;
  if (v.at !== undefined) {
    try {
      at = parseTime(v.at);
    } catch (err) {
      throw new UsageError(`--at: ${(err as Error).message}`);
    }
  }
  const pos = [...p.positionals];
  const server = pos.shift();
  if (server === undefined) throw new UsageError('expected SERVER');
  let mode: BackupMode = 'user';
  let backup: string | undefined;
  if (v.file !== undefined) [mode, backup] = ['filename', v.file];
  else if (v.mbox !== undefined) [mode, backup] = ['mboxname', v.mbox];
  else if (v.user !== undefined) backup = v.user;
  else backup = pos.shift();
  if (backup === undefined) throw new UsageError('expected BACKUP');
  if (!v.all && v.inputFile === undefined && pos.length === 0) throw new UsageError('name what to restore: objects, -F FILE or -a');
  if ((v.all || v.inputFile !== undefined) && pos.length > 0) throw new UsageError('objects cannot be combined with -a or -F');
  return {
    ...base,
    configFile: v.config,
    server,
    mode,
    backup,
    objects: pos,
    inputFile: v.inputFile,
    all: v.all,
    acl: v.acl,
    keepDeletedPrefix: v.keepDeleted,
    localOnly: v.localOnly,
    overrideMboxname: v.intoMailbox,
    overridePartition: v.partition,
    keepUidvalidity: v.keepUid,
    expunged: v.onlyExpunged ? 'only' : v.noExpunged ? 'exclude' : 'all',
    dryRun: v.dryRun,
    recurse: v.recurse,
    wait: v.wait === undefined ? 0 : intValue('-w', v.wait),
    requireCompression: v.compress,
    at,
  };
}
