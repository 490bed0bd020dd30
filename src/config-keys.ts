/**
 * The imapd.conf options cyrsync reads: their Cyrus type, default and
 * meaning (the README's table is made from it), the deprecated aliases, and
 * the check of one value against its option's type.
 */
import { ConfigError, normaliseEnum, parseCInt, parseDuration, parseSwitch, type DurationUnit } from './config-values.js';

type KeyType = 'string' | 'switch' | 'int' | 'duration' | 'stringlist' | 'enum';

export interface KeySpec {
  key: string;
  type: KeyType;
  /** The Cyrus (or cyrsync) default as the file would spell it; null = unset. */
  def: string | null;
  /** Default unit for bare numbers (durations only). */
  unit?: DurationUnit;
  /** Allowed values (stringlist and enum). */
  values?: readonly string[];
  /** How the default reads in the docs when it is computed. */
  defDoc?: string;
  meaning: string;
}

/**
 * Every imapd.conf option cyrsync reads, with Cyrus 3.6.1's type and
 * default (lib/imapoptions), plus the few `cyrsync_*` options of our own.
 */
const SPECS: readonly KeySpec[] = [
  { key: 'configdirectory', type: 'string', def: null, defDoc: '(required)', meaning: 'Configuration directory; holds the password file and the replica/backup databases.' },
  { key: 'defaultpartition', type: 'string', def: null, defDoc: '(unset: `default` if defined, else the first partition)', meaning: 'Partition used when the client names none; must be alphanumeric and have a `partition-<name>` line.' },
  { key: 'partition-<name>', type: 'string', def: null, defDoc: '(none)', meaning: 'Directory of mail partition `<name>` (sync-server profile).' },
  { key: 'backuppartition-<name>', type: 'string', def: null, defDoc: '(none)', meaning: 'Directory of backup partition `<name>` (backup-server profile).' },
  { key: 'temp_path', type: 'string', def: '/tmp', meaning: 'Directory for temporary files.' },
  { key: 'backup_staging_path', type: 'string', def: null, defDoc: '`<temp_path>/backup`', meaning: 'Staging area for incoming message files of the backup-server profile.' },
  { key: 'backup_db', type: 'stringlist', def: 'twoskip', values: ['skiplist', 'sql', 'twoskip', 'zeroskip'], meaning: 'Cyrus backend name of the backup locations database (validated for compatibility; cyrsync keeps its index in SQLite).' },
  { key: 'backup_db_path', type: 'string', def: null, defDoc: '`<configdirectory>/backups.db`', meaning: 'Backup locations database.' },
  { key: 'admins', type: 'string', def: '', defDoc: '(empty)', meaning: 'Whitespace-separated user ids allowed to replicate (Cyrus splits on whitespace only).' },
  { key: 'servername', type: 'string', def: null, defDoc: 'host name (gethostname)', meaning: 'Name shown in the greeting.' },
  { key: 'allowplaintext', type: 'switch', def: '0', meaning: 'Offer PLAIN/LOGIN without TLS (Cyrus refuses plaintext mechanisms on unencrypted connections unless this is on).' },
  { key: 'sasl_pwcheck_method', type: 'string', def: 'auxprop', meaning: 'Whitespace-separated password verifiers tried in order: `auxprop` (the cyrsync password file, then the system Cyrus SASL auxprop plugins such as sasldb) or `saslauthd`.' },
  { key: 'sasl_saslauthd_path', type: 'string', def: '/var/run/saslauthd/mux', meaning: 'UNIX socket of saslauthd.' },
  { key: 'sasl_mech_list', type: 'string', def: null, defDoc: '(all: `PLAIN LOGIN`)', meaning: 'Whitespace-separated SASL mechanisms to offer.' },
  { key: 'sasl_minimum_layer', type: 'int', def: '0', meaning: 'Minimum security strength; above 0, plaintext mechanisms need TLS.' },
  { key: 'username_tolower', type: 'switch', def: '1', meaning: 'Fold login names to lower case before checking them.' },
  { key: 'cyrsync_passwd_file', type: 'string', def: null, defDoc: '`<configdirectory>/cyrsync.passwd`', meaning: 'cyrsync password file (scrypt hashes), used by the `auxprop` verifier; managed with `cyrsync passwd`.' },
  { key: 'tls_server_cert', type: 'string', def: null, meaning: 'PEM certificate chain offered by STARTTLS (deprecated alias: tls_cert_file).' },
  { key: 'tls_server_key', type: 'string', def: null, meaning: 'PEM private key of tls_server_cert (deprecated alias: tls_key_file).' },
  { key: 'tls_client_ca_file', type: 'string', def: null, meaning: 'CA certificates for verifying client certificates (deprecated alias: tls_ca_file).' },
  { key: 'tls_server_ca_file', type: 'string', def: null, meaning: 'CA certificates for verifying servers when acting as a client.' },
  { key: 'tls_ciphers', type: 'string', def: 'DEFAULT', meaning: 'OpenSSL cipher list (deprecated alias: tls_cipher_list).' },
  { key: 'tls_versions', type: 'string', def: 'tls1_0 tls1_1 tls1_2 tls1_3', meaning: 'TLS versions to allow.' },
  { key: 'sync_timeout', type: 'duration', def: '30m', unit: 's', meaning: 'Idle timeout of a replication connection, in seconds when no unit is given; never less than 3 seconds.' },
  { key: 'timeout', type: 'duration', def: '32m', unit: 'm', meaning: 'IMAP inactivity timeout (minutes when no unit is given); read for completeness, not used by the csync server.' },
  { key: 'failedloginpause', type: 'duration', def: '3s', unit: 's', meaning: 'Pause after a failed AUTHENTICATE before answering.' },
  { key: 'maxword', type: 'int', def: '131072', meaning: 'Longest atom Cyrus accepts.' },
  { key: 'maxquoted', type: 'int', def: '131072', meaning: 'Longest quoted string Cyrus accepts.' },
  { key: 'sync_log', type: 'switch', def: '0', meaning: 'Write a rolling-replication log (the replica keeps it off).' },
  { key: 'sync_log_chain', type: 'switch', def: '0', meaning: 'Let the replica log what it applies for chained replication.' },
  { key: 'sync_log_channels', type: 'string', def: null, meaning: 'Names of the replication log channels.' },
  { key: 'sync_shutdown_file', type: 'string', def: null, meaning: 'File whose existence asks replication processes to stop.' },
  { key: 'restore_authname', type: 'string', def: null, defDoc: '(unset: `sync_authname`)', meaning: '`cyrsync restore`: user id it logs in to the destination server as.' },
  { key: 'restore_password', type: 'string', def: null, defDoc: '(unset: `sync_password`)', meaning: '`cyrsync restore`: password of restore_authname.' },
  { key: 'sync_authname', type: 'string', def: null, meaning: '`cyrsync restore`: user id used when restore_authname is unset (as Cyrus restore).' },
  { key: 'sync_password', type: 'string', def: null, meaning: '`cyrsync restore`: password used when restore_password is unset.' },
  { key: 'sync_port', type: 'string', def: null, defDoc: '(unset: `csync`, port 2005)', meaning: '`cyrsync restore`: port of the destination server when SERVER names none.' },
  { key: 'syslog_prefix', type: 'string', def: null, meaning: 'Prefix of the syslog identifier (`<prefix>/<ident>`); $CYRUS_SYSLOG_PREFIX wins.' },
  { key: 'syslog_facility', type: 'string', def: null, defDoc: 'LOCAL6 (Cyrus\'s compiled-in default)', meaning: 'Syslog facility: DAEMON, MAIL, NEWS, USER, LOCAL0..LOCAL7 (Debian\'s Cyrus packages are built with MAIL; set it to match them).' },
  { key: 'debug', type: 'switch', def: '0', meaning: 'Log debug messages.' },
  { key: 'telemetry_bysessionid', type: 'switch', def: '0', meaning: 'Name telemetry log files by session id instead of process id.' },
  { key: 'cyrus_user', type: 'string', def: 'cyrus', meaning: 'User a client of a UNIX-domain master(8) listen socket is logged in as (an administrator, without AUTHENTICATE).' },
  { key: 'debug_command', type: 'string', def: null, defDoc: '(unset)', meaning: 'Command run by `-D` at start, formatted with the program path, pid and service name.' },
  { key: 'tcp_keepalive', type: 'switch', def: '0', meaning: 'TCP keepalive on client connections.' },
  { key: 'tcp_keepalive_idle', type: 'duration', def: '0', unit: 's', meaning: 'Idle time before keepalive probes (0 = the system default).' },
  { key: 'umask', type: 'string', def: '077', meaning: 'Octal umask for files cyrsync creates.' },
  { key: 'sievedir', type: 'string', def: '/usr/sieve', meaning: 'Directory of sieve scripts.' },
  { key: 'unixhierarchysep', type: 'switch', def: '1', meaning: 'Use `/` as the IMAP hierarchy separator (affects name display only).' },
  { key: 'virtdomains', type: 'enum', def: 'off', values: ['off', 'userid', 'on'], meaning: 'Virtual domain support.' },
  { key: 'hashimapspool', type: 'switch', def: '0', meaning: 'Hash the mail spool by first letter.' },
  { key: 'fulldirhash', type: 'switch', def: '0', meaning: 'Hash on the whole user name.' },
  { key: 'cyrsync_log_file', type: 'string', def: null, defDoc: '(unset: syslog)', meaning: 'In master and stdio modes, write JSON log lines to this file instead of syslog.' },
  { key: 'cyrsync_memory_budget', type: 'int', def: '96', meaning: 'Memory budget of one server process, in MiB: its resident size, shared by all its sessions, their pending literals and replies. Near it the server collects garbage, then lets one session on at a time while the others wait with their connections paused; `0` turns the budget off.' },
  { key: 'cyrsync_expire_interval', type: 'duration', def: '1d', unit: 's', meaning: 'Standalone replica (`--listen`): time between housekeeping runs (as `cyrsync expire`), the first one within 5 minutes of the start; 0 turns them off.' },
  { key: 'cyrsync_expire_expunged', type: 'duration', def: '28d', unit: 'd', meaning: 'Age (days when no unit is given) past which those runs purge expunged records, as `cyrsync expire -X`; 0 keeps them.' },
  { key: 'cyrsync_expire_deleted', type: 'duration', def: '28d', unit: 'd', meaning: 'Age (days when no unit is given) past which those runs remove DELETED-namespace mailboxes, as `cyrsync expire -D`; 0 keeps them.' },
  { key: 'cyrsync_log_level', type: 'stringlist', def: 'info', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'], meaning: 'Lowest level logged (`debug: yes` also lowers it to debug).' },
];

/** Deprecated Cyrus names whose value is copied to the preferred key when that key is not set. */
export const ALIASES: Readonly<Record<string, string>> = {
  tls_cert_file: 'tls_server_cert',
  tls_key_file: 'tls_server_key',
  tls_ca_file: 'tls_client_ca_file',
  tls_cipher_list: 'tls_ciphers',
};

/** The options of fixed name (not `partition-<name>`), by key. */
export const SPEC_BY_KEY = new Map(SPECS.filter((s) => !s.key.includes('<')).map((s) => [s.key, s]));

/** The documentation table: every key cyrsync reads, its default and its meaning. */
export const CONFIG_KEYS: readonly { key: string; default: string; meaning: string }[] = SPECS.map((s) => ({
  key: s.key,
  default: s.defDoc ?? (s.def === null ? '(unset)' : `\`${s.def}\``),
  meaning: s.meaning,
}));

/** CONFIG_KEYS as a markdown table, ready for the README. */
export function configKeysMarkdown(): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|');
  const lines = ['| key | default | meaning |', '| --- | --- | --- |'];
  for (const k of CONFIG_KEYS) lines.push(`| \`${esc(k.key)}\` | ${esc(k.default)} | ${esc(k.meaning)} |`);
  return lines.join('\n') + '\n';
}

/** Checks one value against its option's type (unknown keys are not checked, as Cyrus keeps them unread). */
export function validateOption(key: string, value: string, file: string, line: number, warnings: string[]): void {
  const spec = SPEC_BY_KEY.get(key);
  if (!spec) return;
  switch (spec.type) {
    case 'switch':
      if (parseSwitch(value) < 0) throw new ConfigError(file, line, key, `non-switch value "${value}" (use yes/no, on/off, true/false or 1/0, lower case)`);
      return;
    case 'int': {
      const r = parseCInt(value);
      if (r === null) throw new ConfigError(file, line, key, `non-integer value "${value}"`);
      if (r.overflow) warnings.push(`${file} line ${line} (${key}): ${value} does not fit 32 bits; read as ${r.value}, as Cyrus does`);
      return;
    }
    case 'duration': {
      const r = parseDuration(value, spec.unit ?? 's');
      if (!r.ok) throw new ConfigError(file, line, key, `unparsable duration "${value}": ${r.error} (examples: 30, 90s, 30m, 1h30m, 2d)`);
      if (r.overflow) warnings.push(`${file} line ${line} (${key}): ${value} is more seconds than 32 bits hold; read as ${r.seconds}, as Cyrus does`);
      return;
    }
    case 'enum':
    case 'stringlist':
      if (!spec.values!.includes(spec.type === 'enum' ? normaliseEnum(value) : value)) throw new ConfigError(file, line, key, `invalid value "${value}" (allowed: ${spec.values!.join(', ')})`);
      return;
    case 'string':
      return;
  }
}
