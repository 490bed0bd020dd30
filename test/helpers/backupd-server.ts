/**
 * A standalone backup server for tests: the daemon's session, listener and
 * authenticator with the backup sink.
 *
 *   npx tsx test/helpers/backupd-server.ts -C <imapd.conf> --listen HOST:PORT [--grace MS]
 *
 * `--grace MS`: how long SIGTERM waits for busy sessions (default: the daemon's).
 *
 * Prints `listening <port>` on stdout once bound; logs go to stderr.
 */
import pino from 'pino';
import { loadConfigOrEmbedded } from '../../src/config.js';
import { createAuthenticator } from '../../src/server/daemon.js';
import { parseListen, serveListener } from '../../src/server/listener.js';
import { VERSION } from '../../src/version.js';
import { createBackupSink } from '../../sinks/backup/index.js';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let conf: string | undefined;
  let listen = '127.0.0.1:0';
  let grace: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-C') conf = argv[++i];
    else if (argv[i] === '--listen') listen = argv[++i]!;
    else if (argv[i] === '--grace') grace = Number(argv[++i]);
  }
  const config = loadConfigOrEmbedded(conf, process.cwd(), { ident: 'backupd' });
  const settings = config.settings;
  const log = pino({ level: process.env.CYRSYNC_TEST_LOG ?? 'info' }, pino.destination(2));
  const sink = await createBackupSink({ settings, logger: log });
  try {
    await serveListener(
      parseListen(listen),
      (_conn, peer) => ({
        profile: 'backup',
        sink,
        auth: createAuthenticator(settings),
        servername: settings.servername,
        version: VERSION,
        log,
        idleTimeout: settings.sync_timeout,
        peer,
      }),
      log,
      (addr) => process.stdout.write(`listening ${addr.port}\n`),
      grace,
    );
  } finally {
    await sink.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`backupd-server: ${err instanceof Error ? err.stack : JSON.stringify(err)}\n`);
  process.exit(1);
});
