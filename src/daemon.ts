/**
 * `cyrsync sync-server` (and later `cyrsync backupd`): configuration, store,
 * authentication and the front-end (listener or stdin/stdout) wired together.
 */
import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContext } from 'node:tls';
import pino, { type Logger } from 'pino';
import {
  advertisedMechanisms,
  authenticate as verifyCredentials,
  createPasswordChecker,
  createSaslExchange,
  ensureAdminPassword,
  isAdmin,
  type SaslStep,
} from './auth/index.js';
import { ConfigError, EX_CONFIG, embeddedDefaultConfig, loadConfigOrEmbedded, type Config, type Settings } from './config.js';
import type { Sink } from '../sinks/sink.js';
import { createReplicaSink } from '../sinks/replica/index.js';
import type { Profile } from './router.js';
import { parseListen, serveListener, serveStdio, type SessionFactory } from './server.js';
import type { Authenticator } from './session.js';
import { VERSION } from './version.js';

export interface DaemonArgs {
  configFile: string | undefined;
  listen: string | undefined;
  embedded: boolean;
}

export const EX_USAGE = 64;

export function parseDaemonArgs(argv: string[]): DaemonArgs {
  const args: DaemonArgs = { configFile: undefined, listen: undefined, embedded: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (a === '-C') args.configFile = value();
    else if (a === '--listen' || a === '-l') args.listen = value();
    else if (a.startsWith('--listen=')) args.listen = a.slice('--listen='.length);
    else if (a === '--embedded') args.embedded = true;
    else throw new UsageError(`unknown option ${a}`);
  }
  return args;
}

export class UsageError extends Error {}

/** Implements the session's Authenticator with SASL PLAIN/LOGIN and the configured verifiers. */
export function createAuthenticator(settings: Settings): Authenticator {
  const checker = createPasswordChecker(settings);
  return {
    mechanisms: (tls) => advertisedMechanisms(settings, { tls }),
    async authenticate(mechanism, initial, challenge) {
      const mechanisms = advertisedMechanisms(settings, { tls: false });
      const exchange = createSaslExchange(mechanism, initial, { mechanisms });
      let step: SaslStep = exchange.first;
      while ('challenge' in step) step = exchange.respond(await challenge(step.challenge));
      if ('error' in step) return { ok: false, reply: step.error.reply };
      const outcome = await verifyCredentials(step.done, settings, checker);
      if (!outcome.ok) {
        if (settings.failedloginpause > 0) await new Promise((r) => setTimeout(r, settings.failedloginpause * 1000));
        return { ok: false, reply: outcome.reply };
      }
      return { ok: true, user: outcome.userid };
    },
    isAdmin: (user) => isAdmin(settings, user),
  };
}

export async function openSink(profile: Profile, settings: Settings, log: Logger): Promise<Sink> {
  if (profile === 'sync') {
    return createReplicaSink({
      configdirectory: settings.configdirectory,
      partitions: { ...settings.partitions },
      logger: log,
    });
  }
  throw new UsageError('the backup store is not available in this build');
}

async function loadTls(settings: Settings): Promise<SecureContext | undefined> {
  if (!settings.tls_server_cert || !settings.tls_server_key) return undefined;
  const [cert, key] = await Promise.all([readFile(settings.tls_server_cert), readFile(settings.tls_server_key)]);
  return createSecureContext({ cert, key });
}

export function loadDaemonConfig(args: DaemonArgs): Config {
  const base = process.cwd();
  // --embedded (npm start) ignores /etc/imapd.conf: a trial run must not pick up a system Cyrus set-up.
  if (args.embedded && args.configFile === undefined) return embeddedDefaultConfig(base);
  return loadConfigOrEmbedded(args.configFile, base);
}

export async function runDaemon(profile: Profile, argv: string[]): Promise<number> {
  let args: DaemonArgs;
  try {
    args = parseDaemonArgs(argv);
  } catch (err) {
    process.stderr.write(`cyrsync: ${(err as Error).message}\n`);
    return EX_USAGE;
  }
  let config: Config;
  try {
    config = loadDaemonConfig(args);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`cyrsync: ${err.message}\n`);
      return EX_CONFIG;
    }
    throw err;
  }
  const settings = config.settings;
  const standalone = args.listen !== undefined;
  // With no --listen, fds 0-2 are the client connection: never log there.
  const log = standalone
    ? pino({ level: settings.cyrsync_log_level, base: { service: profile } })
    : pino({ level: settings.cyrsync_log_level, base: { service: profile } }, pino.destination({ dest: settings.cyrsync_log_file ?? '/dev/null', sync: false }));

  const sink = await openSink(profile, settings, log);
  const tlsContext = await loadTls(settings);
  const auth = createAuthenticator(settings);
  const factory: SessionFactory = (_conn, peer) => ({
    profile,
    sink,
    auth,
    servername: settings.servername,
    version: VERSION,
    log,
    tlsContext,
    idleTimeout: settings.sync_timeout,
    peer,
  });
  try {
    if (standalone) {
      const addr = parseListen(args.listen!);
      if (args.embedded) announceEmbedded(config, addr.host, addr.port);
      await serveListener(addr, factory, log);
    } else {
      await serveStdio(factory);
    }
  } finally {
    await sink.close();
  }
  return 0;
}

/** First start of the embedded configuration: an admin password and the lines a Cyrus master needs. */
function announceEmbedded(config: Config, host: string, port: number): void {
  const created = ensureAdminPassword(config.settings);
  const out = process.stdout;
  out.write(`cyrsync ${VERSION}: ${config.file === '<embedded>' ? 'embedded configuration under ./var' : config.file}\n`);
  if (created.created) {
    out.write(`created administrator "${created.user}" with password: ${created.password}\n`);
    out.write('Add to the Cyrus master\'s imapd.conf:\n');
    out.write(`  sync_host: ${host}\n  sync_port: ${port}\n  sync_authname: ${created.user}\n  sync_password: ${created.password}\n`);
  } else {
    out.write(`administrator password file: ${config.settings.cyrsync_passwd_file} (change it with: cyrsync passwd -C <imapd.conf> admin)\n`);
  }
}
