#!/usr/bin/env node
/**
 * The `cyrsync` command.
 *
 *   cyrsync sync-server [-C imapd.conf] [--listen HOST:PORT] [--embedded]
 *   cyrsync backupd [-C imapd.conf] [--listen HOST:PORT] [--embedded]
 *   cyrsync passwd -C imapd.conf USER
 *   cyrsync dump [-C imapd.conf] [--json] USER
 *   cyrsync bench-client --connect HOST:PORT ...
 */
import { VERSION } from './version.js';

// Subcommands are imported when used: a daemon started per connection by
// master(8) must reach its greeting fast.
const EX_USAGE = 64;

const USAGE = `usage: cyrsync <command> [options]

commands:
  sync-server [-C imapd.conf] [--listen HOST:PORT] [--embedded]
        the replica (Cyrus sync_server). With --listen: a standalone listener;
        without: a master(8) service when started by Cyrus master (fds 3 and 4),
        else one session on stdin/stdout (inetd, socat). Also: -U uses, -T timeout,
        -D, -p ssf, -X (see README).
        --embedded: ignore /etc/imapd.conf and use the built-in configuration under ./var
  backupd [-C imapd.conf] [--listen HOST:PORT] [--embedded]
        the backup server (Cyrus backupd): per-user backups in the Cyrus Backups format
  passwd -C imapd.conf [-d] USER
        set (-d: delete) USER's password in the password file (cyrsync_passwd_file); read from stdin when it is not a terminal
  dump [-C imapd.conf] [--embedded] [--json] USER
        print what the replica holds for USER (same form as cyrus-peer dump; --json: JSON lines)
  bench-client --connect HOST:PORT [options]
        stream a generated replication workload to a csync server (cyrsync bench-client --help)
  version
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'sync-server':
    case 'sync_server':
      return (await import('./server/daemon.js')).runDaemon('sync', rest);
    case 'backupd':
      return (await import('./server/daemon.js')).runDaemon('backup', rest);
    case 'passwd':
      return (await import('./server/auth/index.js')).runPasswd(rest);
    case 'dump':
      return (await import('./client/dump-cli.js')).runDump(rest);
    case 'bench-client':
      return (await import('./client/bench-client.js')).runBenchClient(rest);
    case 'version':
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      process.stderr.write(command ? `cyrsync: unknown command "${command}"\n${USAGE}` : USAGE);
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
