/**
 * imapd.conf reader and the typed settings cyrsync uses.
 *
 * The file is read the way Cyrus 3.6.1 reads it (lib/libconfig.c,
 * config_read_file): one `key: value` per logical line, a trailing `\` joins
 * the next physical line, lines whose first non-blank octet is `#` are
 * comments, keys are folded to lower case and may hold only letters, digits,
 * `-` and `_` (a leading `@` marks a directive: `@include: FILE`), the colon
 * must follow the key directly, the value is trimmed and must not be empty,
 * and a key given twice is an error. Keys cyrsync does not read are kept
 * (reachable through `Config.get`) but never validated, as Cyrus keeps
 * unknown keys in its overflow table.
 *
 * Typed values follow Cyrus's rules exactly, including its quirks: a switch
 * is judged by its first octet(s) (`0`,`n*`,`of*`,`f*` are off; `1`,`y*`,
 * `on*`,`t*` are on; upper case is refused), integers are C `strtol(.., 0)`
 * (so `0x10` is 16 and `010` is 8), durations are `[-]N[dhms]...` with a
 * per-key default unit, and numbers wrap at 32 bits as in Cyrus (each such
 * value is reported in `Config.warnings`). This agreement is checked by a
 * differential test against the real Cyrus reader (test/config-cyrus.test.ts).
 *
 * Every error is a ConfigError naming the file, the line and the key; the
 * command line turns it into exit status EX_CONFIG (78), as Cyrus's
 * `fatal(..., EX_CONFIG)` does.
 */
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';

/** sysexits.h EX_CONFIG: the exit status of every Cyrus configuration fatal(). */
export const EX_CONFIG = 78;

/** Cyrus's compiled-in CONFIG_FILENAME. */
export const DEFAULT_CONFIG_FILE = '/etc/imapd.conf';

/** A configuration problem: the daemon must not start. */
export class ConfigError extends Error {
  /** Always EX_CONFIG: the exit status the command line uses. */
  readonly exitCode = EX_CONFIG;
  constructor(
    /** The file in which the problem was found ('<embedded>' for the built-in configuration). */
    readonly file: string,
    /** 1-based line number of the offending logical line's last physical line; 0 when not tied to a line. */
    readonly line: number,
    /** The option concerned (lower case), or '' when the key itself is unreadable. */
    readonly key: string,
    /** Plain-words description (Cyrus's own wording where Cyrus has one). */
    readonly detail: string,
  ) {
    super(
      `configuration error in ${file}${line > 0 ? ` line ${line}` : ''}${key ? ` (${key})` : ''}: ${detail}`,
    );
    this.name = 'ConfigError';
  }
}

// ---------------------------------------------------------------------------
// Value parsers (exported for reuse and tests)

const INT32_MAX = 2147483647;

export type DurationUnit = 'd' | 'h' | 'm' | 's';

/**
 * Cyrus 3.6.1 config_parseduration: optional `-`, then groups of digits
 * each followed by a unit (`d`,`h`,`m`,`s`); a trailing bare number takes
 * `defunit`. The result is seconds. 3.6.1 does no overflow checking: its
 * `int` arithmetic wraps at 32 bits, and so does this function (the result
 * says when that happened, so the caller can warn). Returns the parse error
 * text instead of throwing.
 */
export function parseDuration(
  str: string,
  defunit: DurationUnit = 's',
): { ok: true; seconds: number; overflow: boolean } | { ok: false; error: string } {
  let s = str;
  if (s.length > 0 && isDigit(s.charCodeAt(s.length - 1))) s += defunit;
  let i = 0;
  let neg = false;
  if (s[0] === '-') {
    neg = true;
    i = 1;
  }
  // `exact` follows the same computation without wrapping, to detect overflow.
  let accum = 0;
  let duration = 0;
  let exact = 0;
  let exactAccum = 0;
  let sawDigit = false;
  for (; i < s.length; i++) {
    const ch = s[i]!;
    const code = s.charCodeAt(i);
    if (isDigit(code)) {
      accum = (Math.imul(accum, 10) + (code - 48)) | 0;
      exactAccum = exactAccum * 10 + (code - 48);
      sawDigit = true;
      continue;
    }
    if (!sawDigit) return { ok: false, error: `no digit before '${ch}'` };
    sawDigit = false;
    const mult = ch === 'd' ? 86400 : ch === 'h' ? 3600 : ch === 'm' ? 60 : ch === 's' ? 1 : 0;
    if (mult === 0) return { ok: false, error: `bad unit '${ch}'` };
    // Cyrus multiplies step by step (24, 60, 60); wrapping makes the order irrelevant.
    accum = Math.imul(accum, mult);
    duration = (duration + accum) | 0;
    exact += exactAccum * mult;
    accum = 0;
    exactAccum = 0;
  }
  const seconds = neg ? -duration | 0 : duration;
  return { ok: true, seconds, overflow: exact > INT32_MAX };
}

/** Cyrus config_parse_switch: 1 on, 0 off, -1 not a switch. */
export function parseSwitch(p: string): 0 | 1 | -1 {
  const c = p[0];
  if (c === '0' || c === 'n' || (c === 'o' && p[1] === 'f') || c === 'f') return 0;
  if (c === '1' || c === 'y' || (c === 'o' && p[1] === 'n') || c === 't') return 1;
  return -1;
}

/**
 * C `strtol(p, &end, 0)` requiring the whole string to be consumed, then
 * stored in an `int`, as Cyrus 3.6.1 does for INT options: `0x10` is 16,
 * `010` is 8, values beyond the 64-bit range clamp (strtol's ERANGE is not
 * checked) and the result is truncated to 32 bits. `overflow` tells that the
 * written number did not fit, so the caller can warn.
 */
export function parseCInt(p: string): { value: number; overflow: boolean } | null {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(p);
  if (!m) return null;
  const body = m[2]!;
  let v: bigint;
  if (/^0[xX]/.test(body)) v = BigInt(body);
  else if (body.length > 1 && body[0] === '0') v = BigInt('0o' + body.slice(1));
  else v = BigInt(body);
  if (m[1] === '-') v = -v;
  const LONG_MAX = (1n << 63n) - 1n;
  const LONG_MIN = -(1n << 63n);
  const clamped = v > LONG_MAX ? LONG_MAX : v < LONG_MIN ? LONG_MIN : v;
  const value = Number(BigInt.asIntN(32, clamped));
  return { value, overflow: BigInt(value) !== v };
}

function isDigit(code: number): boolean {
  return code >= 48 && code <= 57;
}

/** Cyrus Uisspace: the C locale's isspace. */
function isSpace(ch: string | undefined): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\v' || ch === '\f' || ch === '\r';
}

function isAlnum(ch: string): boolean {
  return /^[A-Za-z0-9]$/.test(ch);
}

// ---------------------------------------------------------------------------
// The options cyrsync reads

type KeyType = 'string' | 'switch' | 'int' | 'duration' | 'stringlist' | 'enum';

interface KeySpec {
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
const ALIASES: Readonly<Record<string, string>> = {
  tls_cert_file: 'tls_server_cert',
  tls_key_file: 'tls_server_key',
  tls_ca_file: 'tls_client_ca_file',
  tls_cipher_list: 'tls_ciphers',
};

const SPEC_BY_KEY = new Map(SPECS.filter((s) => !s.key.includes('<')).map((s) => [s.key, s]));

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

// ---------------------------------------------------------------------------
// Typed settings

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

interface Entry {
  value: string;
  file: string;
  line: number;
  /** 2 when set through `<ident>_<key>`, 1 otherwise (Cyrus imapopts[].seen). */
  seen: 1 | 2;
}

class Reader {
  readonly entries = new Map<string, Entry>();
  readonly warnings: string[] = [];
  private readonly included = new Set<string>();
  constructor(
    private readonly ident: string | undefined,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  readFile(filename: string, from?: { file: string; line: number }): void {
    let text: string;
    let opened = filename;
    const prefix = this.env.CYRUS_PREFIX;
    try {
      if (prefix && existsSync(prefix + filename)) opened = prefix + filename;
      text = readFileSync(opened, 'utf8');
    } catch (err) {
      const reason = err instanceof Error && 'code' in err ? describeFsError(err as NodeJS.ErrnoException) : String(err);
      throw new ConfigError(from?.file ?? filename, from?.line ?? 0, from ? '@include' : '', `can't open configuration file ${filename}: ${reason}`);
    }
    const id = resolve(opened);
    if (this.included.has(id)) {
      throw new ConfigError(from?.file ?? filename, from?.line ?? 0, '@include', `configuration file ${filename} included twice`);
    }
    this.included.add(id);
    this.readText(text, filename);
  }

  readText(text: string, filename: string): void {
    const physical = text.split('\n');
    // A final '\n' leaves an empty last element that is not a line.
    if (physical.length > 0 && physical[physical.length - 1] === '') physical.pop();
    let lineno = 0;
    let logical = '';
    for (let i = 0; i < physical.length; i++) {
      const piece = physical[i]!;
      const terminated = i < physical.length - 1 || text.endsWith('\n');
      lineno++;
      if (terminated && piece.endsWith('\\')) {
        logical += piece.slice(0, -1);
        continue;
      }
      logical += piece;
      const line = logical;
      logical = '';
      this.readLine(line, filename, lineno);
    }
    // Cyrus's reader stops at end of file while still joining: the dangling line is dropped.
    if (logical !== '') {
      this.warnings.push(`${filename} line ${lineno}: the last line ends with '\\' (continued past the end of the file) and is ignored, as Cyrus does`);
    }
  }

  private readLine(buf: string, filename: string, lineno: number): void {
    let p = 0;
    while (p < buf.length && isSpace(buf[p])) p++;
    if (p >= buf.length || buf[p] === '#') return;
    const keyStart = p;
    if (buf[p] === '@') p++;
    while (p < buf.length && (isAlnum(buf[p]!) || buf[p] === '-' || buf[p] === '_')) p++;
    if (buf[p] !== ':') {
      const shown = buf.slice(keyStart, Math.min(buf.length, keyStart + 40)).trim();
      throw new ConfigError(filename, lineno, '', `invalid option name "${shown}" (expected "key: value"; keys hold only letters, digits, '-' and '_', followed directly by ':')`);
    }
    const fullkey = buf.slice(keyStart, p).toLowerCase();
    let value = buf.slice(p + 1);
    let a = 0;
    let b = value.length;
    while (a < b && isSpace(value[a])) a++;
    while (b > a && isSpace(value[b - 1])) b--;
    value = value.slice(a, b);
    if (value === '') throw new ConfigError(filename, lineno, fullkey, 'empty option value');

    if (fullkey.startsWith('@')) {
      if (fullkey === '@include') {
        this.readFile(value, { file: filename, line: lineno });
        return;
      }
      throw new ConfigError(filename, lineno, fullkey, 'invalid directive (only @include is known)');
    }

    let key = fullkey;
    let seen: 1 | 2 = 1;
    if (this.ident) {
      const pre = this.ident.toLowerCase() + '_';
      const rest = fullkey.slice(pre.length);
      if (fullkey.startsWith(pre) && (SPEC_BY_KEY.has(rest) || rest in ALIASES)) {
        key = rest;
        seen = 2;
      }
    }
    const prev = this.entries.get(key);
    if (prev) {
      if (prev.seen === 2 && seen === 1) return; // the service-specific form wins silently
      if (prev.seen === seen) {
        throw new ConfigError(filename, lineno, fullkey, `option specified twice (first on line ${prev.line} of ${prev.file})`);
      }
    }
    validate(key, value, filename, lineno, this.warnings);
    this.entries.set(key, { value, file: filename, line: lineno, seen });
  }
}

function describeFsError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENOENT':
      return 'No such file or directory';
    case 'EACCES':
      return 'Permission denied';
    case 'EISDIR':
      return 'Is a directory';
    default:
      return err.message;
  }
}

/** Cyrus ENUM options also take switch spellings for on/off (lib/libconfig.c). */
function normaliseEnum(v: string): string {
  if (v === '1' || v === 'yes' || v === 't' || v === 'true') return 'on';
  if (v === '0' || v === 'no' || v === 'f' || v === 'false') return 'off';
  return v;
}

function validate(key: string, value: string, file: string, line: number, warnings: string[]): void {
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

function buildConfig(reader: Reader, file: string, ident: string | undefined, need: LoadOptions['need']): Config {
  const entries = reader.entries;
  // Deprecated names fill their replacement when it is unset.
  for (const [old, preferred] of Object.entries(ALIASES)) {
    const e = entries.get(old);
    if (e && !entries.has(preferred)) entries.set(preferred, e);
  }

  const raw = new Map<string, string>();
  for (const [k, e] of entries) raw.set(k, e.value);
  const where = (key: string): { file: string; line: number } => {
    const e = entries.get(key);
    return e ? { file: e.file, line: e.line } : { file, line: 0 };
  };

  const configdirectory = entries.get('configdirectory')?.value;
  if (!configdirectory) throw new ConfigError(file, 0, 'configdirectory', 'configdirectory option not specified in configuration file');

  // Cyrus replaces a leading "{configdirectory}" in known string options only.
  const str = (key: string): string | null => {
    const e = entries.get(key);
    const v = e ? e.value : (SPEC_BY_KEY.get(key)?.def ?? null);
    if (v === null) return null;
    if (key !== 'configdirectory' && v.toLowerCase().startsWith('{configdirectory}')) return configdirectory + v.slice(17);
    return v;
  };
  const sw = (key: string): boolean => parseSwitch(str(key)!) === 1;
  const int = (key: string): number => parseCInt(str(key)!)!.value;
  const dur = (key: string): number => {
    const r = parseDuration(str(key)!, SPEC_BY_KEY.get(key)!.unit ?? 's');
    if (!r.ok) throw new Error(`unreachable: validated duration ${key}`);
    return r.seconds;
  };
  const words = (v: string | null): string[] => (v ? v.split(/[ \t\n\v\f\r]+/).filter((w) => w !== '') : []);

  const partitions: Record<string, string> = {};
  const backuppartitions: Record<string, string> = {};
  for (const [k, e] of entries) {
    if (k.startsWith('partition-') && k.length > 10) partitions[k.slice(10)] = e.value;
    else if (k.startsWith('backuppartition-') && k.length > 16) backuppartitions[k.slice(16)] = e.value;
  }
  // `<ident>_partition-x` style overrides for overflow keys (config_getoverflowstring).
  if (ident) {
    const pre = ident.toLowerCase() + '_';
    for (const [k, e] of entries) {
      if (!k.startsWith(pre)) continue;
      const rest = k.slice(pre.length);
      if (rest.startsWith('partition-') && rest.length > 10) partitions[rest.slice(10)] = e.value;
      else if (rest.startsWith('backuppartition-') && rest.length > 16) backuppartitions[rest.slice(16)] = e.value;
    }
  }

  let defaultpartition = str('defaultpartition');
  if (defaultpartition !== null) {
    if (!/^[A-Za-z0-9]+$/.test(defaultpartition)) {
      const w = where('defaultpartition');
      throw new ConfigError(w.file, w.line, 'defaultpartition', `defaultpartition option contains non-alphanumeric character ("${defaultpartition}")`);
    }
    defaultpartition = defaultpartition.toLowerCase();
  }
  if (need === 'partition') {
    if (defaultpartition !== null && !(defaultpartition in partitions)) {
      throw new ConfigError(file, 0, `partition-${defaultpartition}`, `partition-${defaultpartition} option not specified in configuration file`);
    }
    if (Object.keys(partitions).length === 0) {
      throw new ConfigError(file, 0, 'partition-<name>', 'partition-<name> option not specified in configuration file');
    }
  } else if (need === 'backuppartition' && Object.keys(backuppartitions).length === 0) {
    throw new ConfigError(file, 0, 'backuppartition-<name>', 'backuppartition-<name> option not specified in configuration file');
  }

  const umaskText = str('umask')!;
  let umask = 0;
  // Cyrus reads the umask digit by digit, skipping anything that is not 0-7.
  for (const ch of umaskText) if (ch >= '0' && ch <= '7') umask = umask * 8 + (ch.charCodeAt(0) - 48);

  const mechs = str('sasl_mech_list');
  const temp_path = str('temp_path')!;
  const debug = sw('debug');
  let level = str('cyrsync_log_level') as LogLevelName;
  if (debug && (level === 'info' || level === 'warn' || level === 'error' || level === 'fatal')) level = 'debug';

  const settings: Settings = {
    configdirectory,
    defaultpartition,
    partitions,
    backuppartitions,
    temp_path,
    backup_staging_path: str('backup_staging_path') ?? `${temp_path}/backup`,
    backup_db: str('backup_db')!,
    backup_db_path: str('backup_db_path') ?? join(configdirectory, 'backups.db'),
    admins: words(str('admins')),
    servername: str('servername') ?? hostname(),
    allowplaintext: sw('allowplaintext'),
    sasl_pwcheck_method: words(str('sasl_pwcheck_method')),
    sasl_saslauthd_path: str('sasl_saslauthd_path')!,
    sasl_mech_list: mechs === null ? null : words(mechs).map((m) => m.toUpperCase()),
    sasl_minimum_layer: int('sasl_minimum_layer'),
    username_tolower: sw('username_tolower'),
    cyrsync_passwd_file: str('cyrsync_passwd_file') ?? join(configdirectory, 'cyrsync.passwd'),
    tls_server_cert: str('tls_server_cert'),
    tls_server_key: str('tls_server_key'),
    tls_client_ca_file: str('tls_client_ca_file'),
    tls_server_ca_file: str('tls_server_ca_file'),
    tls_ciphers: str('tls_ciphers')!,
    tls_versions: words(str('tls_versions')),
    // imap/sync_server.c: `if (timeout < 3) timeout = 3;`
    sync_timeout: Math.max(3, dur('sync_timeout')),
    timeout: dur('timeout'),
    failedloginpause: dur('failedloginpause'),
    maxword: int('maxword'),
    maxquoted: int('maxquoted'),
    sync_log: sw('sync_log'),
    sync_log_chain: sw('sync_log_chain'),
    sync_log_channels: str('sync_log_channels'),
    sync_shutdown_file: str('sync_shutdown_file'),
    syslog_prefix: str('syslog_prefix'),
    syslog_facility: str('syslog_facility'),
    debug,
    telemetry_bysessionid: sw('telemetry_bysessionid'),
    umask,
    sievedir: str('sievedir')!,
    unixhierarchysep: sw('unixhierarchysep'),
    virtdomains: normaliseEnum(str('virtdomains')!),
    hashimapspool: sw('hashimapspool'),
    fulldirhash: sw('fulldirhash'),
    cyrsync_log_file: str('cyrsync_log_file'),
    cyrsync_log_level: level,
    cyrsync_memory_budget: memoryBudget(int('cyrsync_memory_budget'), where('cyrsync_memory_budget')),
    cyrsync_expire_interval: dur('cyrsync_expire_interval'),
    cyrsync_expire_expunged: dur('cyrsync_expire_expunged'),
    cyrsync_expire_deleted: dur('cyrsync_expire_deleted'),
  };

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

/** `cyrsync_memory_budget` in octets: 0 (off) or at least 16 MiB, below which no session could run. */
function memoryBudget(mib: number, at: { file: string; line: number }): number {
  if (mib === 0) return 0;
  if (mib < 16) throw new ConfigError(at.file, at.line, 'cyrsync_memory_budget', `${mib} MiB is too small (0 turns the budget off; otherwise at least 16)`);
  return mib * 1024 * 1024;
}

/**
 * Parse configuration text (as if it were the file `file`). `@include`
 * directives inside it are read from disk.
 */
export function parseConfig(text: string, file = '<text>', options: LoadOptions = {}): Config {
  const reader = new Reader(options.ident, options.env ?? process.env);
  reader.readText(text, file);
  return buildConfig(reader, file, options.ident, options.need);
}

/** Read imapd.conf (default /etc/imapd.conf, the `-C FILE` of the command line). */
export function loadConfig(path: string = DEFAULT_CONFIG_FILE, options: LoadOptions = {}): Config {
  const reader = new Reader(options.ident, options.env ?? process.env);
  reader.readFile(path);
  return buildConfig(reader, path, options.ident, options.need);
}

/**
 * The imapd.conf text `npm start` uses when there is no -C and no
 * /etc/imapd.conf: everything under `<baseDir>/var`, the administrator
 * `admin`, plaintext logins allowed (a local trial has no certificate).
 */
export function embeddedConfigText(baseDir: string): string {
  const v = resolve(baseDir, 'var');
  // Paths go in verbatim: the reader only trims surrounding whitespace.
  return [
    '# built-in configuration used when no imapd.conf exists',
    `configdirectory: ${v}/conf`,
    'defaultpartition: default',
    `partition-default: ${v}/spool`,
    `backuppartition-default: ${v}/backups`,
    `backup_staging_path: ${v}/staging`,
    `temp_path: ${v}/tmp`,
    `sievedir: ${v}/sieve`,
    'admins: admin',
    `servername: ${hostname()}`,
    'allowplaintext: yes',
    'sasl_pwcheck_method: auxprop',
    '',
  ].join('\n');
}

/** The built-in configuration (see embeddedConfigText). */
export function embeddedDefaultConfig(baseDir: string, options: Omit<LoadOptions, 'env'> = {}): Config {
  return parseConfig(embeddedConfigText(baseDir), '<embedded>', options);
}

/**
 * Startup rule of the command line: `-C FILE` when given; otherwise
 * /etc/imapd.conf when it exists; otherwise the built-in configuration
 * rooted at `baseDir`.
 */
export function loadConfigOrEmbedded(
  path: string | undefined,
  baseDir: string,
  options: LoadOptions & { defaultFile?: string } = {},
): Config {
  if (path !== undefined) return loadConfig(path, options);
  const def = options.defaultFile ?? DEFAULT_CONFIG_FILE;
  if (existsSync(def)) return loadConfig(def, options);
  return embeddedDefaultConfig(baseDir, options);
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
