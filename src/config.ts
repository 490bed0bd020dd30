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
 *
 * This module is the entry the rest of the code imports. The pieces live
 * beside it: config-values.ts (ConfigError and the value parsers),
 * config-keys.ts (the table of options), config-reader.ts (the file
 * reader), config-settings.ts (the typed Settings).
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { ConfigReader } from './config-reader.js';
import { buildConfig, type Config, type LoadOptions } from './config-settings.js';

export { ConfigError, EX_CONFIG, parseCInt, parseDuration, parseSwitch, type DurationUnit } from './config-values.js';
export { CONFIG_KEYS, configKeysMarkdown } from './config-keys.js';
export { defaultPartitionName, rawOption, type Config, type LoadOptions, type LogLevelName, type Settings } from './config-settings.js';

/** Cyrus's compiled-in CONFIG_FILENAME. */
export const DEFAULT_CONFIG_FILE = '/etc/imapd.conf';

/**
 * Parse configuration text (as if it were the file `file`). `@include`
 * directives inside it are read from disk.
 */
export function parseConfig(text: string, file = '<text>', options: LoadOptions = {}): Config {
  const reader = new ConfigReader(options.ident, options.env ?? process.env);
  reader.readText(text, file);
  return buildConfig(reader, file, options.ident, options.need);
}

/** Read imapd.conf (default /etc/imapd.conf, the `-C FILE` of the command line). */
export function loadConfig(path: string = DEFAULT_CONFIG_FILE, options: LoadOptions = {}): Config {
  const reader = new ConfigReader(options.ident, options.env ?? process.env);
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
