/**
 * Command line of `cyrsync ctl-backups`, as Cyrus 3.6 ctl_backups reads it
 * (getopt ":AC:DFPSVcfjmpst:x:uvw", options anywhere, GNU style), plus the
 * long option `--json` (JSON lines).
 */
import { defineCommand } from '../../cli-args.js';
import { TOOL_OPTIONS, UsageError, modeOfFlag, modeOptions, modeUsage, type Mode } from './common.js';

/** ctl_backups's mode flags. */
const CTL_MODES = 'ADPfmu';

export type CtlCommand = 'compact' | 'delete' | 'list' | 'lock' | 'move' | 'reconstruct' | 'reindex' | 'stat' | 'verify';
export type LockMode = 'pipe' | 'sql' | 'exec';

export interface CtlOptions {
  command: CtlCommand;
  names: string[];
  config?: string;
  mode: Mode;
  lockMode: LockMode | null;
  lockCommand?: string;
  create: boolean;
  wait: boolean;
  verbose: number;
  stopOnError: boolean;
  stale: number;
  force: boolean;
  noverify: boolean;
  /** -j: JSON objects as the Cyrus tool prints them (indented). */
  jansson: boolean;
  /** --json: one JSON object per line. */
  jsonLines: boolean;
}

export const CTL_USAGE = `Usage:
    ctl-backups [options] compact [mode] backup...
    ctl-backups [options] list [list_opts] [[mode] backup...]
    ctl-backups [options] lock [lock_opts] [mode] backup
    ctl-backups [options] reindex [mode] backup...
    ctl-backups [options] stat [mode] backup...
    ctl-backups [options] verify [mode] backup...

Options:
    -C alt_config       # alternate config file
    -F                  # force (run command even if not needed)
    -S                  # stop on error
    -V                  # don't verify checksums (faster read-only ops)
    -j                  # output in JSON format (as Cyrus: indented objects)
    --json              # output JSON lines (list, stat, verify, compact, reindex)
    -v                  # verbose (repeat for more verbosity)
    -w                  # wait for locks (don't skip locked backups)

List options:
    -t [hours]          # stale (no update in hours) backups only (default: 24)

Lock options:
    -c                  # exclusively create backup
    -p                  # lock backup and wait for eof on stdin (default)
    -s                  # lock backup and open index in sqlite3
    -x command          # lock backup and execute command

Modes:
${modeUsage(CTL_MODES, true)}`;

/**
 * For `cyrsync help ctl-backups`. The options are read by parseCtlArgs
 * (Cyrus getopt rules: options before or after the sub-command, `-t` with an
 * optional value), not by the shared parser.
 */
export const CTL_SPEC = defineCommand({
  name: 'ctl-backups',
  summary: 'Cyrus ctl_backups: list, stat, verify, reindex, compact, lock backups',
  description: 'The Cyrus 3.6 ctl_backups, same options, modes, sub-commands, output and exit status. SUB is compact, list [-t [hours]], lock [-c] [-p|-s|-x command], reindex, stat or verify; MODE is one of -A -D -P -f -m -u (default -u).',
  options: {
    ...TOOL_OPTIONS,
    force: { short: 'F', type: 'boolean', help: 'force (compact even when not needed)' },
    stop: { short: 'S', type: 'boolean', help: 'stop at the first failing backup' },
    noverify: { short: 'V', type: 'boolean', help: 'no quick verification for list and stat' },
    jansson: { short: 'j', type: 'boolean', help: 'JSON as Cyrus prints it (indented objects)' },
    json: { long: 'json', type: 'boolean', help: 'JSON lines (list, stat, verify, reindex, compact)' },
    wait: { short: 'w', type: 'boolean', help: 'wait for locked backups instead of skipping them' },
    ...modeOptions(CTL_MODES, true),
  },
  positionals: { name: 'SUB [MODE] backup...', min: 1 },
  epilog: CTL_USAGE,
});

export class HelpWanted extends Error {}

const COMMANDS = new Set<CtlCommand>(['compact', 'delete', 'list', 'lock', 'move', 'reconstruct', 'reindex', 'stat', 'verify']);

/** Options and words; throws UsageError where ctl_backups calls usage(). */
export function parseCtlArgs(argv: string[]): CtlOptions {
  let mode: Mode | null = null;
  const o: Omit<CtlOptions, 'command' | 'names' | 'mode'> = {
    lockMode: null, create: false, wait: false, verbose: 0, stopOnError: false, stale: 0, force: false, noverify: false, jansson: false, jsonLines: false,
  };
  const words: string[] = [];
  const setLock = (m: LockMode): void => {
    if (o.lockMode !== null) throw new UsageError('one lock mode');
    o.lockMode = m;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      words.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-h' || a === '--help') throw new HelpWanted();
    if (a === '--json') {
      o.jsonLines = true;
      continue;
    }
    if (!a.startsWith('-') || a === '-') {
      words.push(a);
      continue;
    }
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      const value = (): string | undefined => {
        const rest = a.slice(j + 1);
        j = a.length;
        if (rest !== '') return rest;
        return i + 1 < argv.length ? argv[++i] : undefined;
      };
      const m = modeOfFlag(c, CTL_MODES);
      if (m !== null) {
        if (mode !== null) throw new UsageError('one mode');
        mode = m;
      } else if (c === 'C') {
        o.config = value();
        if (o.config === undefined) throw new UsageError('-C needs a file');
      } else if (c === 'F') o.force = true;
      else if (c === 'S') o.stopOnError = true;
      else if (c === 'V') o.noverify = true;
      else if (c === 'c') o.create = true;
      else if (c === 'j') {
        if (o.verbose) throw new UsageError('-j and -v');
        o.jansson = true;
      } else if (c === 'p') setLock('pipe');
      else if (c === 's') setLock('sql');
      else if (c === 'x') {
        setLock('exec');
        o.lockCommand = value();
        if (o.lockCommand === undefined) throw new UsageError('-x needs a command');
      } else if (c === 't') {
        const v = value();
        o.stale = v === undefined ? 24 : Number.parseInt(v, 10) || 0;
        if (!o.stale) throw new UsageError('-t needs hours');
      } else if (c === 'v') {
        if (o.jansson) throw new UsageError('-j and -v');
        o.verbose++;
      } else if (c === 'w') o.wait = true;
      else throw new UsageError(`unknown option -${c}`);
    }
  }
  const cmd = words.shift();
  if (cmd === undefined || !COMMANDS.has(cmd as CtlCommand)) throw new UsageError('no command');
  const command = cmd as CtlCommand;
  if (o.lockMode !== null && command !== 'lock') throw new UsageError('lock options without lock');
  if (command === 'list' && mode === null && words.length === 0) mode = 'all';
  if (command === 'lock' || command === 'move' || command === 'delete') {
    if (mode === 'all' || mode === 'domain' || mode === 'prefix' || words.length > 1) throw new UsageError('one backup');
  }
  if (command === 'reconstruct' && (mode !== null || words.length > 0)) throw new UsageError('reconstruct takes no backups');
  mode ??= 'user';
  if (mode === 'all' && words.length > 0) throw new UsageError('-A takes no backups');
  return { ...o, command, names: words, mode };
}
