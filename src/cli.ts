#!/usr/bin/env node
/**
 * The `cyrsync` command.
 *
 *   cyrsync sync-server [-C imapd.conf] [--listen HOST:PORT] [--embedded]
 *   cyrsync passwd -C FILE USER
 *   cyrsync dump -C imapd.conf USER
 */
import { runPasswd } from './auth/index.js';
import { runDaemon, EX_USAGE } from './daemon.js';
import { runDump } from './dump-cli.js';
import { VERSION } from './version.js';

const USAGE = `usage: cyrsync <command> [options]

commands:
  sync-server [-C imapd.conf] [--listen HOST:PORT] [--embedded]
        the replica (Cyrus sync_server). With --listen: a standalone listener;
        without: one session on stdin/stdout (inetd, socat).
        --embedded: ignore /etc/imapd.conf and use the built-in configuration under ./var
  passwd -C FILE USER
        set USER's password in the password file FILE (read from stdin when it is not a terminal)
  dump [-C imapd.conf] [--embedded] USER
        print what the replica holds for USER (same form as cyrus-peer dump)
  version
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'sync-server':
    case 'sync_server':
      return runDaemon('sync', rest);
    case 'passwd':
      return runPasswd(rest);
    case 'dump':
      return runDump(rest);
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
