/**
 * The typed Settings cyrsync uses, built from what the reader collected
 * (src/config-reader.ts): defaults, aliases, `{configdirectory}`
 * substitution, the partition tables and the checks that need the whole
 * file (a configdirectory, the partitions a profile needs).
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ALIASES, SPEC_BY_KEY } from './config-keys.js';
import type { ConfigReader, Entry } from './config-reader.js';
import { ConfigError, normaliseEnum, parseCInt, parseDuration, parseSwitch } from './config-values.js';

export type LogLevelName = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

export interface Settings {
  configdirectory: string;
  /** Lower-cased; null when the file sets none (see `defaultPartitionName`). */
  defaultpartition: string | null;
  /** `partition-<name>` lines, name lower-cased as Cyrus folds keys. */
  partitions: Readonly<Record<string, string>>;
  /** `backuppartition-<name>` lines. */
  backuppartitions: Readonly<Record<string, string>>;
  temp_path: string;
  backup_staging_path: string;
  backup_db: string;
  backup_db_path: string;
  admins: readonly string[];
  servername: string;
  allowplaintext: boolean;
  /** The verifiers of `sasl_pwcheck_method`, in order. */
  sasl_pwcheck_method: readonly string[];
  sasl_saslauthd_path: string;
  /** Upper-cased mechanism names, or null for "all we implement". */
  sasl_mech_list: readonly string[] | null;
  sasl_minimum_layer: number;
  username_tolower: boolean;
  cyrsync_passwd_file: string;
  tls_server_cert: string | null;
  tls_server_key: string | null;
  tls_client_ca_file: string | null;
  tls_server_ca_file: string | null;
  tls_ciphers: string;
  tls_versions: readonly string[];
  /** Seconds, already raised to Cyrus's minimum of 3. */
  sync_timeout: number;
  /** Seconds. */
  timeout: number;
  /** Seconds. */
  failedloginpause: number;
  maxword: number;
  maxquoted: number;
  sync_log: boolean;
  sync_log_chain: boolean;
  sync_log_channels: string | null;
  sync_shutdown_file: string | null;
  syslog_prefix: string | null;
  syslog_facility: string | null;
  debug: boolean;
  telemetry_bysessionid: boolean;
  /** Numeric umask (from the octal text). */
  umask: number;
  sievedir: string;
  unixhierarchysep: boolean;
  virtdomains: string;
  hashimapspool: boolean;
  fulldirhash: boolean;
  cyrsync_log_file: string | null;
  cyrsync_log_level: LogLevelName;
  /** Octets; 0 = no budget. */
  cyrsync_memory_budget: number;
  /** Seconds; 0 = no housekeeping timer. */
  cyrsync_expire_interval: number;
  /** Seconds; 0 = expunged records are kept. */
  cyrsync_expire_expunged: number;
  /** Seconds; 0 = DELETED mailboxes are kept. */
  cyrsync_expire_deleted: number;
}

export interface Config {
  /** The file read, or '<embedded>'. */
  readonly file: string;
  /** Service name used for `<ident>_<key>` overrides, if any. */
  readonly ident: string | undefined;
  readonly settings: Settings;
  /**
   * Raw value of any key (known or not), as Cyrus's config_getoverflowstring:
   * `<ident>_<key>` first, then `<key>`. Keys are lower case.
   */
  get(key: string): string | undefined;
  /** Every raw key/value read (after @include), keys lower case. */
  readonly raw: ReadonlyMap<string, string>;
  /** Values Cyrus accepts but that are surely not what was meant (numbers wrapping at 32 bits): log them. */
  readonly warnings: readonly string[];
}

export interface LoadOptions {
  /**
   * Service name for `<ident>_<key>` overrides (Cyrus config_ident: the
   * service name from cyrus.conf, passed by master(8) in $CYRUS_SERVICE).
   */
  ident?: string;
  /** Environment for CYRUS_PREFIX (default process.env). */
  env?: NodeJS.ProcessEnv;
  /**
   * Require storage: 'partition' for the sync-server profile,
   * 'backuppartition' for the backup-server profile.
   */
  need?: 'partition' | 'backuppartition';
}

/** The raw-option lookup (Config.get) of each Settings object, for code handed only the Settings. */
const OPTION_LOOKUP = new WeakMap<Settings, (key: string) => string | undefined>();

/**
 * Raw imapd.conf lookup for options outside Settings (e.g. the `sasl_*`
 * options Cyrus passes to SASL plugins), with `<ident>_` overrides: the
 * same as Config.get of the Config these Settings came from.
 */
export function rawOption(settings: Settings, key: string): string | undefined {
  return OPTION_LOOKUP.get(settings)?.(key);
}

/** The Config of what `reader` read from `file`; `need` names the partitions the profile requires. */
export function buildConfig(reader: ConfigReader, file: string, ident: string | undefined, need: LoadOptions['need']): Config {
  const entries = reader.entries;
  // Deprecated names fill their replacement when it is unset.
  for (const [old, preferred] of Object.entries(ALIASES)) {
    const e = entries.get(old);
    if (e && !entries.has(preferred)) entries.set(preferred, e);
  }
  const raw = new Map<string, string>();
  for (const [k, e] of entries) raw.set(k, e.value);
  const options = new OptionValues(entries, file);
  const tables = partitionTables(entries, ident);
  const defaultpartition = defaultPartition(options);
  requireStorage(need, file, defaultpartition, tables);
  const settings = settingsFrom(options, defaultpartition, tables);
  const get = (key: string): string | undefined => {
    const k = key.toLowerCase();
    if (ident) {
      const v = raw.get(`${ident.toLowerCase()}_${k}`);
      if (v !== undefined) return v;
    }
    return raw.get(k);
  };
  OPTION_LOOKUP.set(settings, get);
  return { file, ident, settings, get, raw, warnings: reader.warnings };
}

/** Typed reads of the options, with their defaults; the values were validated as they were read. */
class OptionValues {
  readonly configdirectory: string;

  constructor(
    private readonly entries: ReadonlyMap<string, Entry>,
    private readonly file: string,
  ) {
    const configdirectory = entries.get('configdirectory')?.value;
    if (!configdirectory) throw new ConfigError(file, 0, 'configdirectory', 'configdirectory option not specified in configuration file');
    this.configdirectory = configdirectory;
  }

  /** Where a key was set (line 0 of the main file when it was not). */
  where(key: string): { file: string; line: number } {
    const e = this.entries.get(key);
    return e ? { file: e.file, line: e.line } : { file: this.file, line: 0 };
  }

  /** The value or the default; Cyrus replaces a leading "{configdirectory}" in known string options only. */
  str(key: string): string | null {
    const e = this.entries.get(key);
    const v = e ? e.value : (SPEC_BY_KEY.get(key)?.def ?? null);
    if (v === null) return null;
    if (key !== 'configdirectory' && v.toLowerCase().startsWith('{configdirectory}')) return this.configdirectory + v.slice(17);
    return v;
  }

  sw(key: string): boolean {
    return parseSwitch(this.str(key)!) === 1;
  }

  int(key: string): number {
    return parseCInt(this.str(key)!)!.value;
  }

  /** Seconds. */
  dur(key: string): number {
    const r = parseDuration(this.str(key)!, SPEC_BY_KEY.get(key)!.unit ?? 's');
    if (!r.ok) throw new Error(`unreachable: validated duration ${key}`);
    return r.seconds;
  }

  /** The whitespace-separated words of an option (none when it is unset). */
  words(key: string): string[] {
    const v = this.str(key);
    return v ? v.split(/[ \t\n\v\f\r]+/).filter((w) => w !== '') : [];
  }
}

interface PartitionTables {
  partitions: Record<string, string>;
  backuppartitions: Record<string, string>;
}

/** The `partition-<name>` and `backuppartition-<name>` lines, `<ident>_` overrides last. */
function partitionTables(entries: ReadonlyMap<string, Entry>, ident: string | undefined): PartitionTables {
  const tables: PartitionTables = { partitions: {}, backuppartitions: {} };
  const add = (k: string, value: string): void => {
    if (k.startsWith('partition-') && k.length > 10) tables.partitions[k.slice(10)] = value;
    else if (k.startsWith('backuppartition-') && k.length > 16) tables.backuppartitions[k.slice(16)] = value;
  };
  for (const [k, e] of entries) add(k, e.value);
  // `<ident>_partition-x` style overrides for overflow keys (config_getoverflowstring).
  if (ident) {
    const pre = ident.toLowerCase() + '_';
    for (const [k, e] of entries) if (k.startsWith(pre)) add(k.slice(pre.length), e.value);
  }
  return tables;
}

/** `defaultpartition`, lower-cased; Cyrus refuses a name that is not alphanumeric. */
function defaultPartition(options: OptionValues): string | null {
  const name = options.str('defaultpartition');
  if (name === null) return null;
  if (!/^[A-Za-z0-9]+$/.test(name)) {
    const w = options.where('defaultpartition');
    throw new ConfigError(w.file, w.line, 'defaultpartition', `defaultpartition option contains non-alphanumeric character ("${name}")`);
  }
  return name.toLowerCase();
}

/** The sync-server profile needs mail partitions (and the default one), the backup server backup partitions. */
function requireStorage(need: LoadOptions['need'], file: string, defaultpartition: string | null, tables: PartitionTables): void {
  if (need === 'partition') {
    if (defaultpartition !== null && !(defaultpartition in tables.partitions)) {
      throw new ConfigError(file, 0, `partition-${defaultpartition}`, `partition-${defaultpartition} option not specified in configuration file`);
    }
    if (Object.keys(tables.partitions).length === 0) {
      throw new ConfigError(file, 0, 'partition-<name>', 'partition-<name> option not specified in configuration file');
    }
  } else if (need === 'backuppartition' && Object.keys(tables.backuppartitions).length === 0) {
    throw new ConfigError(file, 0, 'backuppartition-<name>', 'backuppartition-<name> option not specified in configuration file');
  }
}

/** The Settings object: every option of the table, typed. */
function settingsFrom(o: OptionValues, defaultpartition: string | null, tables: PartitionTables): Settings {
  const { configdirectory } = o;
  const mechs = o.str('sasl_mech_list');
  const temp_path = o.str('temp_path')!;
  return {
    configdirectory,
    defaultpartition,
    partitions: tables.partitions,
    backuppartitions: tables.backuppartitions,
    temp_path,
    backup_staging_path: o.str('backup_staging_path') ?? `${temp_path}/backup`,
    backup_db: o.str('backup_db')!,
    backup_db_path: o.str('backup_db_path') ?? join(configdirectory, 'backups.db'),
    admins: o.words('admins'),
    servername: o.str('servername') ?? hostname(),
    allowplaintext: o.sw('allowplaintext'),
    sasl_pwcheck_method: o.words('sasl_pwcheck_method'),
    sasl_saslauthd_path: o.str('sasl_saslauthd_path')!,
    sasl_mech_list: mechs === null ? null : o.words('sasl_mech_list').map((m) => m.toUpperCase()),
    sasl_minimum_layer: o.int('sasl_minimum_layer'),
    username_tolower: o.sw('username_tolower'),
    cyrsync_passwd_file: o.str('cyrsync_passwd_file') ?? join(configdirectory, 'cyrsync.passwd'),
    tls_server_cert: o.str('tls_server_cert'),
    tls_server_key: o.str('tls_server_key'),
    tls_client_ca_file: o.str('tls_client_ca_file'),
    tls_server_ca_file: o.str('tls_server_ca_file'),
    tls_ciphers: o.str('tls_ciphers')!,
    tls_versions: o.words('tls_versions'),
    // imap/sync_server.c: `if (timeout < 3) timeout = 3;`
    sync_timeout: Math.max(3, o.dur('sync_timeout')),
    timeout: o.dur('timeout'),
    failedloginpause: o.dur('failedloginpause'),
    maxword: o.int('maxword'),
    maxquoted: o.int('maxquoted'),
    sync_log: o.sw('sync_log'),
    sync_log_chain: o.sw('sync_log_chain'),
    sync_log_channels: o.str('sync_log_channels'),
    sync_shutdown_file: o.str('sync_shutdown_file'),
    syslog_prefix: o.str('syslog_prefix'),
    syslog_facility: o.str('syslog_facility'),
    debug: o.sw('debug'),
    telemetry_bysessionid: o.sw('telemetry_bysessionid'),
    umask: umaskValue(o.str('umask')!),
    sievedir: o.str('sievedir')!,
    unixhierarchysep: o.sw('unixhierarchysep'),
    virtdomains: normaliseEnum(o.str('virtdomains')!),
    hashimapspool: o.sw('hashimapspool'),
    fulldirhash: o.sw('fulldirhash'),
    cyrsync_log_file: o.str('cyrsync_log_file'),
    cyrsync_log_level: logLevel(o),
    cyrsync_memory_budget: memoryBudget(o.int('cyrsync_memory_budget'), o.where('cyrsync_memory_budget')),
    cyrsync_expire_interval: o.dur('cyrsync_expire_interval'),
    cyrsync_expire_expunged: o.dur('cyrsync_expire_expunged'),
    cyrsync_expire_deleted: o.dur('cyrsync_expire_deleted'),
  };
}

/** Cyrus reads the umask digit by digit, skipping anything that is not 0-7. */
function umaskValue(text: string): number {
  let umask = 0;
  for (const ch of text) if (ch >= '0' && ch <= '7') umask = umask * 8 + (ch.charCodeAt(0) - 48);
  return umask;
}

/** `cyrsync_log_level`, lowered to debug by `debug: yes`. */
function logLevel(o: OptionValues): LogLevelName {
  const level = o.str('cyrsync_log_level') as LogLevelName;
  if (o.sw('debug') && (level === 'info' || level === 'warn' || level === 'error' || level === 'fatal')) return 'debug';
  return level;
}

/** `cyrsync_memory_budget` in octets: 0 (off) or at least 16 MiB, below which no session could run. */
function memoryBudget(mib: number, at: { file: string; line: number }): number {
  if (mib === 0) return 0;
  if (mib < 16) throw new ConfigError(at.file, at.line, 'cyrsync_memory_budget', `${mib} MiB is too small (0 turns the budget off; otherwise at least 16)`);
  return mib * 1024 * 1024;
}

/**
 * The partition to use when the client names none: `defaultpartition`, else
 * `default` when defined, else the first partition in file order. (Cyrus
 * picks the one with the most free space; a replica always receives the
 * partition from the client, so this is only a fallback.)
 */
export function defaultPartitionName(settings: Settings, kind: 'partition' | 'backuppartition' = 'partition'): string | null {
  const table = kind === 'partition' ? settings.partitions : settings.backuppartitions;
  if (settings.defaultpartition !== null && settings.defaultpartition in table) return settings.defaultpartition;
  if ('default' in table) return 'default';
  const names = Object.keys(table);
  return names.length > 0 ? names[0]! : null;
}
