/**
 * The frame every `cyrsync` tool runs in after its options are parsed
 * (src/cli-args.ts): the `-C FILE` / `--embedded` options, loading the
 * configuration they name (a bad imapd.conf is one line on stderr and exit
 * status 78, EX_CONFIG), and reporting a usage error found while checking the
 * parsed values, as `parseCommandLine` reports its own (exit status 64).
 *
 * A tool's entry point reads, step by step:
 *
 * ```ts
 * const p = parseCommandLine(FOO_SPEC, argv, io);
 * if (typeof p === 'number') return p;
 * const plan = checkUsage(FOO_SPEC, io, () => planFrom(p.values));
 * if (typeof plan === 'number') return plan;
 * const config = loadCommandConfig(FOO_SPEC, p.values, io);
 * if (typeof config === 'number') return config;
 * ```
 */
import { ConfigError, EX_CONFIG, embeddedDefaultConfig, loadConfigOrEmbedded, type Config, type LoadOptions } from './config.js';
import { EX_USAGE, UsageError, formatUsageError, type CommandIO, type CommandSpec } from './cli-args.js';

/** `-C FILE`: the imapd.conf to read. */
export const CONFIG_OPTION = { short: 'C', type: 'string', value: 'FILE', help: 'imapd.conf (default /etc/imapd.conf, else the built-in configuration)' } as const;

/** `--embedded`: the built-in configuration even when /etc/imapd.conf exists. */
export const EMBEDDED_OPTION = { long: 'embedded', type: 'boolean', help: 'ignore /etc/imapd.conf, use the built-in configuration under ./var' } as const;

/** The two options of a tool that reads the configuration. */
export const CONFIG_OPTIONS = { config: CONFIG_OPTION, embedded: EMBEDDED_OPTION } as const;

export interface ConfigChoice {
  /** `-C FILE` */
  config?: string | undefined;
  /** `--embedded` (ignored when -C is given) */
  embedded?: boolean;
}

export interface ConfigLoadIO extends CommandIO {
  /** Root of the built-in configuration (default: the working directory). */
  baseDir?: string;
  /** Read when there is no -C (default /etc/imapd.conf). */
  defaultConfigFile?: string;
}

/**
 * The configuration the command line names: the built-in one for
 * `--embedded` without `-C`, else `-C FILE`, /etc/imapd.conf or the built-in
 * one (loadConfigOrEmbedded). A bad imapd.conf is printed as
 * `cyrsync NAME: <file, line, key and problem>` and gives EX_CONFIG.
 */
export function loadCommandConfig(spec: CommandSpec, v: ConfigChoice, io: ConfigLoadIO = {}, options: LoadOptions = {}): Config | number {
  return loadConfigOrReport(v, io, `cyrsync ${spec.name}: `, options);
}

/** loadCommandConfig with its own start of the error line (the Cyrus backup tools print `fatal error: `). */
export function loadConfigOrReport(v: ConfigChoice, io: ConfigLoadIO, prefix: string, options: LoadOptions = {}): Config | number {
  const baseDir = io.baseDir ?? process.cwd();
  try {
    if (v.embedded && v.config === undefined) return embeddedDefaultConfig(baseDir, options);
    return loadConfigOrEmbedded(v.config, baseDir, { ...options, ...(io.defaultConfigFile !== undefined ? { defaultFile: io.defaultConfigFile } : {}) });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    (io.stderr ?? process.stderr).write(`${prefix}${err.message}\n`);
    return EX_CONFIG;
  }
}

/**
 * Runs `check` (what a tool derives from its parsed values); a UsageError it
 * throws is printed as parseCommandLine prints one and gives EX_USAGE.
 */
export function checkUsage<T extends object>(spec: CommandSpec, io: CommandIO, check: () => T): T | number {
  try {
    return check();
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    (io.stderr ?? process.stderr).write(formatUsageError(spec, err));
    return EX_USAGE;
  }
}
