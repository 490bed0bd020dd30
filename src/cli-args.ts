/**
 * One argument parser for every `cyrsync` command, on node's
 * `util.parseArgs` (its tokens; the checks and the messages are ours).
 *
 * A command declares its options in a table and gets, for free: Cyrus-style
 * short flags (`-C FILE`, grouped booleans `-vX`), long options
 * (`--listen HOST:PORT` or `--listen=HOST:PORT`), `-h`/`--help`, the usage
 * line and help text (also shown by `cyrsync help COMMAND`), and one clear
 * error with exit status 64 (EX_USAGE) for bad usage.
 *
 * Adopting it in a new command (`src/client/foo.ts`):
 *
 * ```ts
 * import { defineCommand, parseCommandLine, type CommandIO } from '../cli-args.js';
 *
 * export const FOO_SPEC = defineCommand({
 *   name: 'foo',
 *   summary: 'one line for `cyrsync help`',
 *   description: 'a paragraph for `cyrsync help foo`',     // optional
 *   options: {
 *     config: { short: 'C', type: 'string', value: 'FILE', help: 'imapd.conf' },
 *     user: { short: 'u', type: 'list', value: 'USER', help: 'this user (repeatable)' },
 *     verbose: { short: 'v', type: 'count', help: 'more output' },
 *     json: { long: 'json', type: 'boolean', help: 'JSON lines' },
 *   },
 *   positionals: { name: 'MAILBOX...', min: 0 },
 * });
 *
 * export async function runFoo(argv: string[], io: CommandIO = {}): Promise<number> {
 *   const p = parseCommandLine(FOO_SPEC, argv, io);
 *   if (typeof p === 'number') return p;                  // help shown (0) or usage error (64)
 *   p.values.config;     // string | undefined
 *   p.values.user;       // string[]
 *   p.values.verbose;    // number
 *   p.values.json;       // boolean
 *   p.positionals;       // string[]
 *   ...
 * }
 * ```
 *
 * then add one line to the command table in `src/cli.ts` (name, summary,
 * the module loader, the spec and the run function). Values are strings:
 * convert numbers with `intValue` (or check them yourself and throw
 * `UsageError`, which `parseCommandLine`'s callers report the same way).
 *
 * Option types: `boolean` (a flag), `count` (a flag counted, `-vv` = 2),
 * `string` (one value, the last one wins), `list` (repeatable, all values).
 * `separateValues: true` refuses values merged with short options (`-U5`), as
 * Cyrus's master/service.c does for the daemons.
 */
import { parseArgs } from 'node:util';

/** sysexits.h: the exit statuses of the tools (EX_CONFIG, 78, is config.ts's). */
export const EX_USAGE = 64;
export const EX_DATAERR = 65;
export const EX_NOINPUT = 66;
export const EX_UNAVAILABLE = 69;
export const EX_IOERR = 74;
export const EX_TEMPFAIL = 75;

export class UsageError extends Error {
  readonly exitCode = EX_USAGE;
}

export interface OptionSpec {
  /** one letter: `-C` */
  readonly short?: string;
  /** the long name without dashes: `listen` for `--listen` */
  readonly long?: string;
  readonly type: 'boolean' | 'count' | 'string' | 'list';
  /** name of the value in help (`FILE`); string and list options */
  readonly value?: string;
  readonly help: string;
  /** accepted but left out of the usage line and help (compatibility flags) */
  readonly hidden?: boolean;
}

export interface CommandSpec {
  /** as typed after `cyrsync` */
  readonly name: string;
  readonly summary: string;
  readonly description?: string;
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** `name` as shown in the usage line (`USER`, `[USER...]`); min/max counts (max absent: any number) */
  readonly positionals?: { readonly name: string; readonly min: number; readonly max?: number };
  /** refuse `-U5` (value merged with a short option), as Cyrus's service.c does */
  readonly separateValues?: boolean;
  /** extra text after the option list (examples, notes) */
  readonly epilog?: string;
}

type ValueOf<O extends OptionSpec> = O['type'] extends 'boolean'
  ? boolean
  : O['type'] extends 'count'
    ? number
    : O['type'] extends 'list'
      ? string[]
      : string | undefined;

export type OptionValues<S extends CommandSpec> = { -readonly [K in keyof S['options']]: ValueOf<S['options'][K]> };

export interface ParsedCommand<S extends CommandSpec> {
  values: OptionValues<S>;
  positionals: string[];
  /** `-h` or `--help` was given */
  help: boolean;
  /** the option names as typed, in order (`-s`, `--listen`), for logging */
  seen: string[];
}

/** Checks the table once (a mistake in it is a programming error) and keeps its literal types. */
export function defineCommand<const S extends CommandSpec>(spec: S): S {
  const flags = new Set<string>(['-h', '--help']);
  for (const [key, o] of Object.entries(spec.options)) {
    if (o.short === undefined && o.long === undefined) throw new Error(`${spec.name}: option ${key} has neither a short nor a long name`);
    if (o.short !== undefined && o.short.length !== 1) throw new Error(`${spec.name}: short option ${o.short} is not one character`);
    for (const f of [o.short && `-${o.short}`, o.long && `--${o.long}`]) {
      if (!f) continue;
      if (flags.has(f)) throw new Error(`${spec.name}: option ${f} declared twice`);
      flags.add(f);
    }
  }
  return spec;
}

/** The spelling shown in the usage line: the long one when there is one. */
function flagOf(o: OptionSpec): string {
  return o.long !== undefined ? `--${o.long}` : `-${o.short}`;
}

function initialValues(spec: CommandSpec): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  for (const [key, o] of Object.entries(spec.options)) {
    values[key] = o.type === 'boolean' ? false : o.type === 'count' ? 0 : o.type === 'list' ? [] : undefined;
  }
  return values;
}

/** The parseArgs configuration: every option under a private key, with its short form. */
function parseArgsOptions(spec: CommandSpec): {
  config: Record<string, { type: 'boolean' | 'string'; short?: string }>;
  byKey: Map<string, [string, OptionSpec]>;
} {
  const config: Record<string, { type: 'boolean' | 'string'; short?: string }> = {
    'cyrsync-help': { type: 'boolean', short: 'h' },
  };
  const byKey = new Map<string, [string, OptionSpec]>();
  for (const [key, o] of Object.entries(spec.options)) {
    // parseArgs wants a long name for every option; a short-only option gets
    // one nobody can type (`--U` is refused below as an unknown option).
    const name = o.long ?? `cyrsync-short-${o.short}`;
    const type = o.type === 'string' || o.type === 'list' ? 'string' : 'boolean';
    config[name] = o.short !== undefined ? { type, short: o.short } : { type };
    byKey.set(name, [key, o]);
  }
  return { config, byKey };
}

/**
 * Parses argv against the table. Throws UsageError (exit status 64) for an
 * unknown option, a missing or unexpected value, or a wrong number of
 * positionals; `-h`/`--help` sets `help` and skips the positional count.
 */
export function parseCommandArgs<S extends CommandSpec>(spec: S, argv: readonly string[]): ParsedCommand<S> {
  const { config, byKey } = parseArgsOptions(spec);
  // Not strict: the checks below give Cyrus-like messages, and a value may
  // start with '-' (`-U -5`, as getopt takes it).
  const { tokens } = parseArgs({ args: [...argv], options: config, strict: false, allowPositionals: true, tokens: true });
  const values = initialValues(spec);
  const positionals: string[] = [];
  const seen: string[] = [];
  let help = false;
  for (const t of tokens) {
    if (t.kind === 'positional') positionals.push(t.value);
    if (t.kind !== 'option') continue;
    if (t.rawName === '-h' || t.rawName === '--help') {
      help = true;
      continue;
    }
    const entry = byKey.get(t.name);
    // parseArgs matches a private long name too (`--cyrsync-short-U`): only the declared spellings count.
    if (entry === undefined || (t.rawName.startsWith('--') && entry[1].long === undefined)) {
      throw new UsageError(`unknown option ${t.rawName}`);
    }
    const [key, o] = entry;
    seen.push(t.rawName);
    if (o.type === 'boolean' || o.type === 'count') {
      if (t.value !== undefined) throw new UsageError(`option ${t.rawName} takes no value`);
      values[key] = o.type === 'boolean' ? true : (values[key] as number) + 1;
      continue;
    }
    if (t.value === undefined) throw new UsageError(`option ${t.rawName} needs a value`);
    if (spec.separateValues && t.inlineValue && !t.rawName.startsWith('--')) {
      throw new UsageError(`options and arguments MUST be separated by whitespace (${t.rawName}${t.value})`);
    }
    if (o.type === 'list') (values[key] as string[]).push(t.value);
    else values[key] = t.value;
  }
  if (!help) checkPositionals(spec, positionals);
  return { values: values as OptionValues<S>, positionals, help, seen };
}

function checkPositionals(spec: CommandSpec, positionals: string[]): void {
  const p = spec.positionals ?? { name: '', min: 0, max: 0 };
  if (positionals.length < p.min) throw new UsageError(p.min === 1 && p.max === 1 ? `expected ${p.name}` : `expected at least ${p.min} ${p.name}`);
  if (p.max !== undefined && positionals.length > p.max) {
    throw new UsageError(p.max === 0 ? `unexpected argument "${positionals[p.max]}"` : `too many arguments (at most ${p.max} ${p.name})`);
  }
}

/** `usage: cyrsync NAME [-C FILE] [--json] USER` */
export function usageLine(spec: CommandSpec): string {
  const parts = ['usage: cyrsync', spec.name];
  for (const o of Object.values(spec.options)) {
    if (o.hidden) continue;
    const v = o.type === 'string' || o.type === 'list' ? ` ${o.value ?? 'VALUE'}` : '';
    parts.push(`[${flagOf(o)}${v}]${o.type === 'list' ? '...' : ''}`);
  }
  if (spec.positionals) parts.push(spec.positionals.name);
  return parts.join(' ');
}

/** The help text of `cyrsync help NAME` and `cyrsync NAME --help`. */
export function formatHelp(spec: CommandSpec): string {
  const rows: [string, string][] = [];
  for (const o of Object.values(spec.options)) {
    if (o.hidden) continue;
    const names = [o.short && `-${o.short}`, o.long && `--${o.long}`].filter(Boolean).join(', ');
    const v = o.type === 'string' || o.type === 'list' ? ` ${o.value ?? 'VALUE'}` : '';
    rows.push([names + v, o.help + (o.type === 'list' ? ' (repeatable)' : '')]);
  }
  rows.push(['-h, --help', 'show this help']);
  const width = Math.min(28, Math.max(...rows.map(([l]) => l.length)) + 2);
  const lines = [usageLine(spec), '', wrap(spec.description ?? spec.summary, 2), '', 'options:'];
  for (const [l, h] of rows) {
    const head = `  ${l.padEnd(width)}`;
    lines.push(head.length > width + 2 ? `  ${l}\n${' '.repeat(width + 2)}${h}` : head + h);
  }
  if (spec.epilog) lines.push('', wrap(spec.epilog, 2));
  return lines.join('\n') + '\n';
}

/** Wraps prose at 78 columns, keeping blank-line paragraph breaks and lines starting with a space. */
function wrap(text: string, indent: number): string {
  const pad = ' '.repeat(indent);
  return text
    .split('\n')
    .map((para) => {
      if (para.startsWith(' ') || para === '') return para === '' ? '' : pad + para;
      const out: string[] = [];
      let line = '';
      for (const w of para.split(/\s+/)) {
        if (line && pad.length + line.length + 1 + w.length > 78) {
          out.push(pad + line);
          line = w;
        } else line = line ? `${line} ${w}` : w;
      }
      if (line) out.push(pad + line);
      return out.join('\n');
    })
    .join('\n');
}

export interface CommandIO {
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
}

/** The usage error as printed: `cyrsync NAME: message`, the usage line and where to find help. */
export function formatUsageError(spec: CommandSpec, err: UsageError): string {
  return `cyrsync ${spec.name}: ${err.message}\n${usageLine(spec)}\nTry 'cyrsync help ${spec.name}' for more information.\n`;
}

/**
 * parseCommandArgs for a command's entry point: prints the help (returns 0)
 * or the usage error (returns 64) itself, else returns the parsed line.
 */
export function parseCommandLine<S extends CommandSpec>(spec: S, argv: readonly string[], io: CommandIO = {}): ParsedCommand<S> | number {
  try {
    const p = parseCommandArgs(spec, argv);
    if (!p.help) return p;
    (io.stdout ?? process.stdout).write(formatHelp(spec));
    return 0;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    (io.stderr ?? process.stderr).write(formatUsageError(spec, err));
    return EX_USAGE;
  }
}

/** atoi(3), as Cyrus reads numeric options: leading digits with a sign, 0 when there are none. */
export function atoi(s: string): number {
  const m = /^\s*([+-]?\d+)/.exec(s);
  return m ? Number.parseInt(m[1]!, 10) : 0;
}

/** A whole number in [min, max] or a UsageError naming the option. */
export function intValue(flag: string, s: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^[+-]?\d+$/.test(s.trim()) ? Number(s) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`option ${flag} needs a whole number${min > 0 || max < Number.MAX_SAFE_INTEGER ? ` from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ''}` : ''}, not "${s}"`);
  }
  return n;
}
