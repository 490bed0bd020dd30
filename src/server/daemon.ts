/**
 * `cyrsync sync-server` (and later `cyrsync backupd`): options, configuration,
 * logging, store, authentication and the front-end wired together.
 *
 * Front-ends:
 *  - `--listen HOST:PORT`: a standalone listener (many sessions at once);
 *  - no `--listen`, fd 4 a listening socket and fd 3 a pipe: a Cyrus master(8)
 *    service (src/server/master-service.ts);
 *  - otherwise one session on stdin/stdout (inetd, socat, ssh; `-X`).
 *
 * Start-up is on the path of every connection under master (a process per
 * connection is normal there), so what only some modes need is imported on
 * demand.
 */
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import { formatWithOptions } from 'node:util';
import type { SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import {
  advertisedMechanisms,
  authenticate as verifyCredentials,
  createPasswordChecker,
  createSaslExchange,
  mechanismRefusal,
  pausesAfterFailure,
  ensureAdminPassword,
  isAdmin,
  KNOWN_PWCHECK_METHODS,
  type SaslStep,
} from './auth/index.js';
import {
  ConfigError,
  EX_CONFIG,
  embeddedDefaultConfig,
  loadConfigOrEmbedded,
  parseDuration,
  parseSwitch,
  type Config,
  type Settings,
} from '../config.js';
import { createLogger, LOG_ERR, LOG_PID, loadLibcSyslog, makeSessionId, syslogFacility, syslogIdent, type LogMode } from '../log.js';
import type { Profile } from './router.js';
import type { SessionFactory } from './listener.js';
import type { Authenticator } from './session.js';
import { openDaemonStore, type DaemonStore } from './daemon-store.js';
import { TelemetryLog } from './telemetry.js';
import { VERSION } from '../version.js';
import { EX_USAGE, UsageError, atoi, defineCommand, formatHelp, parseCommandArgs, type ParsedCommand } from '../cli-args.js';
import { MemoryBudget } from '../memory.js';

/** sysexits.h */
export { EX_USAGE };
export const EX_SOFTWARE = 70;
export const EX_OSERR = 71;
export { EX_CONFIG };

export interface DaemonArgs {
  configFile: string | undefined;
  listen: string | undefined;
  embedded: boolean;
  /** `-U`: connections per process under master (default 250). */
  maxUses: number;
  /** `-T`: idle seconds before a used process exits under master (default 60, 0 = never). */
  reuseTimeout: number;
  /** `-D`: run `debug_command` at start-up. */
  debugger: boolean;
  /** `-p`: security strength factor of an external layer (SASL_SSF_EXTERNAL). */
  externalSsf: number;
  /** `-X`: one session on stdin/stdout even when started by master (service.c debug_stdio). */
  stdio: boolean;
  /** Options accepted for compatibility that change nothing here (`-s`, `-N`, `-f`). */
  ignored: string[];
}

export { UsageError };

const MAX_USE = 250;
const REUSE_TIMEOUT = 60;

/**
 * The options of master/service.c (`-C -U -T -D -X`) and of sync_server /
 * backupd (`-p ssf`, `-f`, and `-s -N` from backupd(8)'s synopsis), plus
 * cyrsync's own `--listen` and `--embedded`. As in Cyrus, values are read
 * like atoi(3), negative -U and -T count as 0, and a value merged with its
 * option (`-U5`) is refused.
 */
export function daemonSpec(profile: Profile) {
  return defineCommand({
    name: profile === 'sync' ? 'sync-server' : 'backupd',
    summary:
      profile === 'sync'
        ? 'the replica (Cyrus sync_server): a standalone listener with --listen, a master(8) service when started by Cyrus master (fds 3 and 4), else one session on stdin/stdout (inetd, socat)'
        : 'the backup server (Cyrus backupd): per-user backups in the Cyrus Backups format; the same options and front-ends as sync-server',
    options: {
      configFile: { short: 'C', type: 'string', value: 'FILE', help: 'imapd.conf (default /etc/imapd.conf, else the built-in configuration under ./var)' },
      listen: { short: 'l', long: 'listen', type: 'string', value: 'HOST:PORT', help: 'standalone listener (PORT alone: 127.0.0.1)' },
      embedded: { long: 'embedded', type: 'boolean', help: 'ignore /etc/imapd.conf, use the built-in configuration under ./var' },
      maxUses: { short: 'U', type: 'string', value: 'USES', help: `master: connections per process before it exits (default ${MAX_USE}; 0 acts as 1)` },
      reuseTimeout: { short: 'T', type: 'string', value: 'TIMEOUT', help: `master: seconds a used process waits for the next connection (default ${REUSE_TIMEOUT}; 0 = never)` },
      debugger: { short: 'D', type: 'boolean', help: 'run debug_command at start' },
      externalSsf: { short: 'p', type: 'string', value: 'SSF', help: 'an external security layer of this strength exists; above 1, plaintext mechanisms are allowed as under TLS' },
      stdio: { short: 'X', type: 'boolean', help: 'one session on stdin/stdout even with fds 3/4 (master debug mode)' },
      s: { short: 's', type: 'boolean', help: 'accepted for compatibility, no effect', hidden: true },
      N: { short: 'N', type: 'boolean', help: 'accepted for compatibility, no effect', hidden: true },
      f: { short: 'f', type: 'boolean', help: 'accepted for compatibility, no effect', hidden: true },
    },
    separateValues: true,
    epilog: 'Also accepted for compatibility, without effect: -s, -N, -f. SIGTERM/SIGINT: stop accepting, let each session finish its current command, answer BYE, exit.',
  });
}

const SYNC_SPEC = daemonSpec('sync');

export function parseDaemonArgs(argv: string[]): DaemonArgs {
  return daemonArgsFrom(parseCommandArgs(SYNC_SPEC, argv));
}

function daemonArgsFrom(p: ParsedCommand<typeof SYNC_SPEC>): DaemonArgs {
  const v = p.values;
  return {
    configFile: v.configFile,
    listen: v.listen,
    embedded: v.embedded,
    maxUses: v.maxUses === undefined ? MAX_USE : Math.max(0, atoi(v.maxUses)),
    reuseTimeout: v.reuseTimeout === undefined ? REUSE_TIMEOUT : Math.max(0, atoi(v.reuseTimeout)),
    debugger: v.debugger,
    externalSsf: v.externalSsf === undefined ? 0 : Math.max(0, atoi(v.externalSsf)),
    stdio: v.stdio,
    ignored: p.seen.filter((f) => f === '-s' || f === '-N' || f === '-f'),
  };
}

export interface AuthenticatorOptions {
  /** `-p`: an external layer of this strength (> 1 allows plaintext mechanisms, as TLS does). */
  externalSsf?: number;
  /** Already authenticated by the transport (UNIX socket): always an administrator, as in Cyrus. */
  preauthUser?: string;
  /**
   * Awaited before a login succeeds (the store must be open before the first
   * command can reach it); a rejection fails the session.
   */
  beforeSuccess?: () => Promise<void>;
}

/**
 * The session's Authenticator with SASL PLAIN/LOGIN and the configured
 * verifiers. One per connection: it remembers whether the session last
 * asked for its mechanisms with TLS active, so a mechanism allowed only
 * under TLS is accepted after STARTTLS.
 */
export function createAuthenticator(settings: Settings, o: AuthenticatorOptions = {}): Authenticator {
  // Made on the first login, not before the greeting: it may bind libsasl2.
  let checker: ReturnType<typeof createPasswordChecker> | undefined;
  const ssf = o.externalSsf ?? 0;
  let tlsActive = false;
  const connection = (tls: boolean) => (tls ? { tls: true } : ssf > 1 ? { tls: true, tlsBits: ssf } : { tls: false });
  return {
    mechanisms(tls) {
      tlsActive = tls;
      return advertisedMechanisms(settings, connection(tls));
    },
    async authenticate(mechanism, initial, challenge) {
      // Cyrus's own refusal texts (no mechanism, too weak, encryption needed).
      const refuse = (m: string): string | null => mechanismRefusal(settings, connection(tlsActive), m);
      const exchange = createSaslExchange(mechanism, initial, { refuse });
      // Cyrus pauses after every failed login except a cancel or an unreadable response.
      const failed = async (reply: string): Promise<{ ok: false; reply: string }> => {
        if (settings.failedloginpause > 0 && pausesAfterFailure(reply)) {
          await new Promise((r) => setTimeout(r, settings.failedloginpause * 1000));
        }
        return { ok: false, reply };
      };
      let step: SaslStep = exchange.first;
      while ('challenge' in step) step = exchange.respond(await challenge(step.challenge));
      if ('error' in step) return failed(step.error.reply);
      const outcome = await verifyCredentials(step.done, settings, (checker ??= createPasswordChecker(settings)));
      if (!outcome.ok) return failed(outcome.reply);
      await o.beforeSuccess?.();
      return { ok: true, user: outcome.userid };
    },
    isAdmin: (user) => (o.preauthUser !== undefined && user === o.preauthUser) || isAdmin(settings, user),
  };
}

async function loadTls(settings: Settings): Promise<SecureContext | undefined> {
  if (!settings.tls_server_cert || !settings.tls_server_key) return undefined;
  const [{ createSecureContext }, cert, key] = await Promise.all([
    import('node:tls'),
    readFile(settings.tls_server_cert),
    readFile(settings.tls_server_key),
  ]);
  return createSecureContext({ cert, key });
}

/**
 * `tcp_keepalive` / `tcp_keepalive_idle` as Cyrus's tcp_enable_keepalive
 * (idle 0 = the system default). `tcp_keepalive_cnt` and `_intvl` have no
 * Node API: the system defaults apply.
 */
export function tcpKeepalive(config: Pick<Config, 'get'>): { idleMs: number } | null {
  const on = config.get('tcp_keepalive');
  if (on === undefined || parseSwitch(on) !== 1) return null;
  const idle = config.get('tcp_keepalive_idle');
  const d = idle === undefined ? null : parseDuration(idle, 's');
  return { idleMs: d && d.ok && d.seconds > 0 ? d.seconds * 1000 : 0 };
}

/** Cyrus config_ident: the cyrus.conf service name under master, else the program's usual one. */
export function serviceIdent(profile: Profile, env: NodeJS.ProcessEnv = process.env): string {
  return env.CYRUS_SERVICE || (profile === 'sync' ? 'syncserver' : 'backupd');
}

export function loadDaemonConfig(args: DaemonArgs, profile: Profile = 'sync', env: NodeJS.ProcessEnv = process.env): Config {
  const base = process.cwd();
  const options = { ident: serviceIdent(profile, env), env, need: profile === 'sync' ? ('partition' as const) : ('backuppartition' as const) };
  // --embedded (npm start) ignores /etc/imapd.conf: a trial run must not pick up a system Cyrus set-up.
  if (args.embedded && args.configFile === undefined) return embeddedDefaultConfig(base, { ident: options.ident, need: options.need });
  return loadConfigOrEmbedded(args.configFile, base, options);
}

/**
 * systemd socket activation (sd_listen_fds(3)): the first passed socket, fd 3,
 * when LISTEN_PID names this process. With `Accept=no` it is a listening
 * socket served like `--listen` (with `Accept=yes` it is the connection).
 */
export function systemdListenFd(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | null {
  if (env.LISTEN_PID !== String(pid)) return null;
  const n = Number(env.LISTEN_FDS);
  return Number.isInteger(n) && n >= 1 ? 3 : null;
}

/** Where the front-end will be: decides where errors may be written before a logger exists. */
export async function chooseFrontEnd(args: DaemonArgs, env: NodeJS.ProcessEnv = process.env): Promise<LogMode> {
  if (args.listen !== undefined) return 'standalone';
  if (args.stdio) return 'stdio';
  const { detectFrontEnd, systemProbe } = await import('./master-service.js');
  // With Accept=yes systemd passes the connection itself as fd 3: that one is served on stdin/stdout.
  const sd = systemdListenFd(env);
  if (sd !== null && systemProbe.kind(sd) === 'socket' && systemProbe.listening(sd)) return 'standalone';
  return detectFrontEnd();
}

/**
 * A message for the administrator before a logger exists: stderr when it
 * can reach a person without touching the protocol (standalone, or
 * stdin/stdout on a terminal), syslog otherwise.
 */
function earlyError(mode: LogMode, profile: Profile, text: string, config?: Config): void {
  const toTerminal = mode === 'standalone' || (mode === 'stdio' && process.stdin.isTTY === true);
  if (toTerminal) {
    process.stderr.write(`cyrsync: ${text}\n`);
    return;
  }
  const s = config?.settings;
  const sys = loadLibcSyslog();
  if (!sys) return; // no syslog and no terminal: the exit status is all master gets
  // Cyrus's own wording for fatal() lines, under the service's ident.
  sys.openlog(syslogIdent(serviceIdent(profile), { syslog_prefix: s?.syslog_prefix ?? null }), LOG_PID, syslogFacility(s?.syslog_facility).facility);
  sys.syslog(LOG_ERR, `Fatal error: ${text}`);
}


/** `-D`: debug_command formatted with argv[0], pid and service, as service.c does. */
export function formatDebugCommand(template: string, argv0: string, pid: number, service: string): string {
  const values: (string | number)[] = [argv0, pid, service];
  let n = 0;
  return template.replace(/%(%|[sd])/g, (_m, c: string) => (c === '%' ? '%' : String(values[n++] ?? '')));
}

export async function runDaemon(profile: Profile, argv: string[]): Promise<number> {
  const state: { mode: LogMode } = { mode: argv.includes('--listen') ? 'standalone' : 'stdio' };
  try {
    return await runDaemonIn(profile, argv, (m) => (state.mode = m));
  } catch (err) {
    // Whatever escaped: reported where this mode may write, never on the protocol stream.
    earlyError(state.mode, profile, `unexpected failure: ${(err as Error)?.stack ?? String(err)}`);
    if (state.mode === 'master') process.exit(EX_SOFTWARE);
    return EX_SOFTWARE;
  }
}

async function runDaemonIn(profile: Profile, argv: string[], setMode: (m: LogMode) => void): Promise<number> {
  const args = parseArgsOrReport(profile, argv);
  if (typeof args === 'number') return args;
  const mode = await chooseFrontEnd(args);
  setMode(mode);
  const config = loadConfigOrReport(args, profile, mode);
  if (typeof config === 'number') return config;
  const ident = serviceIdent(profile);
  const log = openLogOrReport(mode, profile, config, ident);
  if (log === null) return EX_CONFIG;
  noteStartup(log, args, config, ident);
  const tlsContext = await loadTls(config.settings).catch((err: unknown) => {
    log.error({ err }, 'cannot load tls_server_cert / tls_server_key');
    return null;
  });
  if (tlsContext === null) return finish(mode, log, EX_CONFIG);
  const store = await openDaemonStore(profile, mode, config.settings, log);
  if (store === null) return finish(mode, log, EX_SOFTWARE);
  const factory = sessionFactory({ profile, config, args, ident, log, tlsContext, store });
  const code = await serveFrontEnd({ profile, mode, args, config, log, store }, factory);
  return finish(mode, log, code);
}

/** The command line, or the exit status after a usage error (or `--help`) was reported. */
function parseArgsOrReport(profile: Profile, argv: string[]): DaemonArgs | number {
  try {
    const parsed = parseCommandArgs(daemonSpec(profile), argv);
    if (parsed.help) {
      process.stdout.write(formatHelp(daemonSpec(profile)));
      return 0;
    }
    return daemonArgsFrom(parsed);
  } catch (err) {
    // Mode unknown yet: the terminal only if there is one (never the protocol stream).
    earlyError(argv.includes('--listen') ? 'standalone' : 'stdio', profile, (err as Error).message);
    return EX_USAGE;
  }
}

/** The configuration, or EX_CONFIG after its error was reported where this mode may write. */
function loadConfigOrReport(args: DaemonArgs, profile: Profile, mode: LogMode): Config | number {
  try {
    return loadDaemonConfig(args, profile);
  } catch (err) {
    if (err instanceof ConfigError) {
      earlyError(mode, profile, err.message);
      return EX_CONFIG;
    }
    throw err;
  }
}

/** The process's logger (null after a log that cannot be opened was reported); off stdio unless standalone. */
function openLogOrReport(mode: LogMode, profile: Profile, config: Config, ident: string): Logger | null {
  let log: Logger;
  try {
    // The extra `notice` level is not part of the plain Logger type the session and stores take.
    log = createLogger({ mode, settings: config.settings, service: ident }) as unknown as Logger;
  } catch (err) {
    earlyError(mode, profile, `cannot open the log: ${(err as Error).message}`, config);
    return null;
  }
  if (mode !== 'standalone') keepOffStdio(log);
  return log;
}

/** What the administrator should know at start (ignored options, odd values), and `-D`. */
function noteStartup(log: Logger, args: DaemonArgs, config: Config, ident: string): void {
  if (args.ignored.length > 0) log.debug({ options: args.ignored }, 'options accepted for compatibility, no effect');
  for (const warning of config.warnings) log.warn({ file: config.file }, `imapd.conf: ${warning}`);
  const unknownVerifiers = config.settings.sasl_pwcheck_method.filter((m) => !(KNOWN_PWCHECK_METHODS as readonly string[]).includes(m));
  if (unknownVerifiers.length > 0) log.warn({ methods: unknownVerifiers }, 'sasl_pwcheck_method names verifiers cyrsync does not implement; they are skipped');
  if (!args.debugger) return;
  const template = config.get('debug_command');
  if (!template) return;
  const cmd = formatDebugCommand(template, process.argv[1] ?? 'cyrsync', process.pid, ident);
  log.debug({ command: cmd }, 'running external debugger');
  const r = spawnSync('/bin/sh', ['-c', cmd], { stdio: 'ignore' });
  log.debug({ status: r.status }, 'debugger returned');
}

interface FactoryContext {
  profile: Profile;
  config: Config;
  args: DaemonArgs;
  ident: string;
  log: Logger;
  tlsContext: SecureContext | undefined;
  store: DaemonStore;
}

/** The options of each new session: its authenticator, telemetry, keepalive, and the process's memory budget. */
function sessionFactory(c: FactoryContext): SessionFactory {
  const { profile, config, args, ident, log, tlsContext, store } = c;
  const settings = config.settings;
  const cyrusUser = config.get('cyrus_user') || 'cyrus';
  const keepalive = tcpKeepalive(config);
  const bySessionId = parseSwitch(config.get('telemetry_bysessionid') ?? '0') === 1;
  // One budget for every session of this process.
  const budget = settings.cyrsync_memory_budget > 0 ? new MemoryBudget({ limit: settings.cyrsync_memory_budget }) : undefined;
  return (conn, peer) => {
    // Cyrus sync_server: a UNIX-domain client is the Cyrus user, an administrator, without AUTHENTICATE.
    const preauthUser = peer === 'unix socket' ? cyrusUser : undefined;
    // Runs after the greeting's writes (they are queued in this turn's microtasks).
    store.start();
    if (keepalive && conn instanceof Socket && peer !== 'unix socket') conn.setKeepAlive(true, keepalive.idleMs);
    let telemetry: TelemetryLog | null = null;
    // The last reply (EXIT's) is out before the connection closes.
    conn.once('close', () => telemetry?.close());
    return {
      profile,
      sink: store.sink,
      auth: createAuthenticator(settings, { externalSsf: args.externalSsf, preauthUser, beforeSuccess: store.ready }),
      servername: settings.servername,
      version: VERSION,
      log,
      tlsContext,
      idleTimeout: settings.sync_timeout,
      budget,
      peer,
      preauthUser,
      onAuthenticated(user) {
        // Only an AUTHENTICATE opens telemetry in Cyrus (not the UNIX-socket login).
        if (user === preauthUser) return;
        telemetry?.close();
        telemetry = TelemetryLog.open({
          configdirectory: settings.configdirectory,
          user,
          ident,
          log,
          sessionId: bySessionId ? makeSessionId(settings) : undefined,
        });
        if (telemetry) log.debug({ file: telemetry.file }, 'telemetry log opened');
      },
      telemetry(direction, chunk) {
        telemetry?.record(direction, chunk);
      },
    };
  };
}

interface FrontEndContext {
  profile: Profile;
  mode: LogMode;
  args: DaemonArgs;
  config: Config;
  log: Logger;
  store: DaemonStore;
}

/** Serves connections in the chosen mode until it ends; closes the store; resolves with the exit status. */
async function serveFrontEnd(c: FrontEndContext, factory: SessionFactory): Promise<number> {
  const { profile, mode, args, config, log, store } = c;
  let code = 0;
  let stopHousekeeping = (): void => {};
  try {
    if (mode === 'standalone') {
      const { parseListen, serveListener } = await import('./listener.js');
      if (profile === 'sync') stopHousekeeping = (await import('./expire-timer.js')).startHousekeepingTimer(config.settings, log);
      if (args.listen !== undefined) {
        const addr = parseListen(args.listen);
        if (args.embedded) announceEmbedded(profile, config, addr.host, addr.port);
        await serveListener(addr, factory, log);
      } else {
        await serveListener({ fd: systemdListenFd()! }, factory, log);
      }
    } else if (mode === 'master') {
      await serveUnderMaster(args, log, store, factory);
    } else {
      const { serveStdio } = await import('./listener.js');
      await serveStdio(factory);
    }
  } catch (err) {
    log.fatal({ err }, 'service failed');
    code = EX_OSERR;
  } finally {
    stopHousekeeping();
    await store.sink.close().catch((err: unknown) => log.error({ err }, 'closing the store failed'));
  }
  if (code === 0 && store.deferred?.failed) code = EX_SOFTWARE;
  return code;
}

/** A Cyrus master(8) service: connections one after another until -U, -T or a store that cannot open. */
async function serveUnderMaster(args: DaemonArgs, log: Logger, store: DaemonStore, factory: SessionFactory): Promise<void> {
  const { serveMaster } = await import('./master-service.js');
  const why = await serveMaster(factory, {
    maxUses: args.maxUses,
    reuseTimeout: args.reuseTimeout,
    log,
    // A store that cannot be opened: no point serving more connections.
    shouldExit: () => store.deferred?.failed != null,
    beforePreauthSession: async () => {
      store.start();
      await store.ready();
    },
  });
  log.debug({ reason: why }, 'service exiting');
}

/**
 * Master and stdin/stdout modes: fds 0-2 are never written, whatever happens.
 * Node's own warnings, uncaught errors and any console output go to the log
 * instead of stderr/stdout.
 */
export function keepOffStdio(log: Logger): void {
  // The default 'warning' listener prints to stderr.
  process.removeAllListeners('warning');
  process.on('warning', (w) => log.warn({ err: w }, `node warning: ${w.message}`));
  const die = (what: string) => (err: unknown) => {
    log.fatal({ err }, what);
    log.flush?.();
    process.exit(EX_SOFTWARE);
  };
  process.on('uncaughtException', die('uncaught exception'));
  process.on('unhandledRejection', die('unhandled promise rejection'));
  const toLog =
    (level: 'info' | 'warn' | 'error' | 'debug') =>
    (...a: unknown[]) =>
      log[level]({ console: true }, formatWithOptions({ breakLength: Infinity }, ...a));
  console.log = toLog('info');
  console.info = toLog('info');
  console.warn = toLog('warn');
  console.error = toLog('error');
  console.debug = toLog('debug');
  console.trace = toLog('debug');
}

/**
 * Under master the process must end now: a poll() still waiting on a worker
 * thread would otherwise hold it. Records are written synchronously there.
 */
function finish(mode: LogMode, log: Logger, code: number): number {
  if (mode === 'master') {
    log.flush?.();
    process.exit(code);
  }
  return code;
}

/** First start of the embedded configuration: an admin password and the lines a Cyrus master needs. */
function announceEmbedded(profile: Profile, config: Config, host: string, port: number): void {
  const created = ensureAdminPassword(config.settings);
  const out = process.stdout;
  out.write(`cyrsync ${VERSION}: ${config.file === '<embedded>' ? 'embedded configuration under ./var' : config.file}\n`);
  if (created.created) {
    out.write(`created administrator "${created.user}" with password: ${created.password}\n`);
    if (profile === 'sync') {
      out.write("Add to the Cyrus master's imapd.conf:\n");
      out.write(`  sync_host: ${host}\n  sync_port: ${port}\n  sync_authname: ${created.user}\n  sync_password: ${created.password}\n`);
      out.write('then run: sync_client -u USER (or -A, -m MAILBOX, -R)\n');
    } else {
      // A backup server is a sync_client channel of its own next to the replica.
      out.write("Add to the Cyrus master's imapd.conf (channel \"backup\"):\n");
      out.write(`  backup_sync_host: ${host}\n  backup_sync_port: ${port}\n  backup_sync_authname: ${created.user}\n  backup_sync_password: ${created.password}\n`);
      out.write('  sync_log_channels: backup   (add to the existing list, for rolling backups)\n');
      out.write('then run: sync_client -n backup -u USER (or -A; rolling: sync_client -r -n backup)\n');
    }
  } else {
    out.write(`administrator password file: ${config.settings.cyrsync_passwd_file} (change it with: cyrsync passwd -C <imapd.conf> admin)\n`);
  }
}
