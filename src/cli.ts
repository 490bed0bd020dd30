#!/usr/bin/env node
/**
 * The `cyrsync` command: `cyrsync COMMAND [options]`, `cyrsync help
 * [COMMAND]`, `cyrsync COMMAND --help`. Each command declares its options
 * with src/cli-args.ts; this table names it, says what it does in one line
 * and loads it.
 */
import { VERSION } from './version.js';
import { EX_USAGE, formatHelp, type CommandSpec } from './cli-args.js';

interface LoadedCommand {
  spec: CommandSpec;
  run: (argv: string[]) => Promise<number>;
}

interface CommandEntry {
  name: string;
  aliases?: string[];
  summary: string;
  /** Imported when used: a daemon started per connection by master(8) must reach its greeting fast. */
  load: () => Promise<LoadedCommand>;
}

const COMMANDS: CommandEntry[] = [
  {
    name: 'sync-server',
    aliases: ['sync_server'],
    summary: 'the replica (Cyrus sync_server): --listen, a master(8) service, or one session on stdin/stdout',
    load: async () => {
      const m = await import('./server/daemon.js');
      return { spec: m.daemonSpec('sync'), run: (argv) => m.runDaemon('sync', argv) };
    },
  },
  {
    name: 'backupd',
    summary: 'the backup server (Cyrus backupd): per-user backups in the Cyrus Backups format',
    load: async () => {
      const m = await import('./server/daemon.js');
      return { spec: m.daemonSpec('backup'), run: (argv) => m.runDaemon('backup', argv) };
    },
  },
  {
    name: 'passwd',
    summary: "set (-d: delete) USER's password in the cyrsync password file",
    load: async () => {
      const m = await import('./server/auth/passwd.js');
      return { spec: m.PASSWD_SPEC, run: (argv) => m.runPasswd(argv) };
    },
  },
  {
    name: 'dump',
    summary: 'print what the replica holds for USER (the form of cyrus-peer dump; --json)',
    load: async () => {
      const m = await import('./client/dump-cli.js');
      return { spec: m.DUMP_SPEC, run: m.runDump };
    },
  },
  {
    name: 'check',
    summary: 'check a replica or backup store offline, one line per problem (exit status 1 when any)',
    load: async () => {
      const m = await import('./client/check/cli.js');
      return { spec: m.CHECK_SPEC, run: (argv) => m.runCheck(argv) };
    },
  },
  {
    name: 'restore',
    summary: 'restore mailboxes and messages from a backup to a live server (Cyrus restore; --at TIME: as of then)',
    load: async () => {
      const m = await import('./client/restore/cli.js');
      return { spec: m.RESTORE_SPEC, run: m.runRestore };
    },
  },
  {
    name: 'expire',
    summary: "the replica's housekeeping with cyr_expire's flags (-X expunged, -D DELETED mailboxes), then unreferenced message files",
    load: async () => {
      const m = await import('./client/expire.js');
      return { spec: m.EXPIRE_SPEC, run: (argv) => m.runExpire(argv) };
    },
  },
  {
    name: 'bench-client',
    summary: 'stream a generated replication workload to a csync server',
    load: async () => {
      const m = await import('./client/bench-client.js');
      return { spec: m.BENCH_SPEC, run: m.runBenchClient };
    },
  },
  {
    name: 'ctl-backups',
    aliases: ['ctl_backups'],
    summary: 'Cyrus ctl_backups: list, stat, verify, reindex, compact, lock backups',
    load: async () => {
      const m = await import('./client/backup/ctl-backups.js');
      return { spec: m.CTL_SPEC, run: (argv) => m.runCtlBackups(argv) };
    },
  },
  {
    name: 'cyr-backup',
    aliases: ['cyr_backup'],
    summary: 'Cyrus cyr_backup: list, show, dump, json of one backup (--at TIME: as it was then)',
    load: async () => {
      const m = await import('./client/backup/cyr-backup.js');
      return { spec: m.CYR_SPEC, run: (argv) => m.runCyrBackup(argv) };
    },
  },
];

function overview(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length), 'version'.length) + 2;
  const lines = ['usage: cyrsync COMMAND [options]', '', 'commands:'];
  for (const c of COMMANDS) lines.push(`  ${c.name.padEnd(width)}${c.summary}`);
  lines.push(`  ${'help'.padEnd(width)}this list; help COMMAND: the options of COMMAND (also COMMAND --help)`);
  lines.push(`  ${'version'.padEnd(width)}print the version`);
  return lines.join('\n') + '\n';
}

function find(name: string | undefined): CommandEntry | undefined {
  return COMMANDS.find((c) => c.name === name || c.aliases?.includes(name ?? ''));
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const entry = find(command);
  if (entry) return (await entry.load()).run(rest);
  switch (command) {
    case 'version':
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case 'help':
    case '--help':
    case '-h': {
      if (rest.length === 0) {
        process.stdout.write(overview());
        return 0;
      }
      const target = find(rest[0]);
      if (!target || rest.length > 1) {
        process.stderr.write(`cyrsync help: ${target ? 'one command at a time' : `unknown command "${rest[0]}"`}\n${overview()}`);
        return EX_USAGE;
      }
      process.stdout.write(formatHelp((await target.load()).spec));
      return 0;
    }
    default:
      process.stderr.write(command ? `cyrsync: unknown command "${command}"\n${overview()}` : overview());
      return EX_USAGE;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`cyrsync: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 70; // EX_SOFTWARE
  },
);
