/**
 * `cyrsync ctl-backups`: the Cyrus 3.6 `ctl_backups` as a drop-in (same
 * options, modes, sub-commands, output and exit status), for sites whose
 * Cyrus no longer ships it. Beyond Cyrus: `--json` (JSON lines through
 * stream-json's stringer), a progress bar on a terminal for verify, compact
 * and reindex, and a verify that names the file, chunk and offset of the
 * damage it finds.
 *
 * Every backup is opened under the same fcntl lock as the real tools and
 * backupd take (sinks/backup/lock.ts); without -w a locked backup is
 * reported `locked` and skipped.
 */
import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import JsonlStringer from 'stream-json/jsonl/Stringer.js';
import type { Config } from '../../config.js';
import { formatHelp } from '../../cli-args.js';
import { CTL_SPEC, CTL_USAGE, HelpWanted, parseCtlArgs, type CtlOptions } from './ctl-args.js';

export { CTL_SPEC };
import {
  EX_OK, EX_SOFTWARE, EX_TEMPFAIL, EX_USAGE, LockedError, UsageError, errorText, fileSize, janssonText, loadToolConfig,
  localTime, fixed, openToolBackup, resolveTargets, write, type JValue, type Target, type ToolBackup,
} from './common.js';
import { compactBackup } from './compact.js';
import { compactSettings, liveChunkIds, liveMessages, sinceOf } from './live.js';
import { Progress } from './progress.js';
import { reindexStreaming } from './reindex.js';
import { problemText, verifyFull } from './verify.js';

export interface ToolIO {
  stdin: Readable;
  stdout: Writable & { isTTY?: boolean; columns?: number };
  stderr: Writable;
}

const processIO = (): ToolIO => ({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });

/** Writes JSON: Cyrus's indented objects (-j) or JSON lines (--json). */
class JsonOut {
  private lines: ReturnType<typeof JsonlStringer.make> | null = null;
  private done: Promise<void> | null = null;
  constructor(private readonly o: CtlOptions, private readonly out: Writable) {}

  get active(): boolean {
    return this.o.jansson || this.o.jsonLines;
  }

  async put(v: Record<string, JValue>): Promise<void> {
    if (this.o.jsonLines) {
      if (this.lines === null) {
        this.lines = JsonlStringer.make();
        this.lines.pipe(this.out, { end: false });
        this.done = new Promise((resolve) => this.lines!.on('end', resolve));
      }
      const plain = JSON.parse(JSON.stringify(v, (_k, x: unknown) => (x !== null && typeof x === 'object' && 'real' in x ? (x as { real: number }).real : x))) as unknown;
      if (!this.lines.write(plain)) await new Promise((resolve) => this.lines!.once('drain', resolve));
      return;
    }
    await write(this.out, `${janssonText(v)}\n`);
  }

  async close(): Promise<void> {
    if (this.lines === null) return;
    this.lines.end();
    await this.done;
    await write(this.out, '\n');
  }
}

interface Run {
  o: CtlOptions;
  config: Config;
  io: ToolIO;
  json: JsonOut;
  /** Backups that failed, were skipped or were locked (exit 75). */
  skipsFails: number;
}

type Status = 'ok' | 'skipped' | 'locked' | { failed: string };

async function printStatus(run: Run, cmd: string, t: Target, s: Status): Promise<void> {
  const status = typeof s === 'string' ? s : `failed (${s.failed})`;
  if (run.json.active) await run.json.put({ command: cmd, userid: t.userid, fname: t.fname, status });
  else await write(run.io.stdout, `${cmd} ${t.userid ?? t.fname}: ${status}\n`);
}

function statusOf(err: unknown): Status {
  return err instanceof LockedError ? 'locked' : { failed: errorText(err) };
}

export async function runCtlBackups(argv: string[], io: ToolIO = processIO()): Promise<number> {
  let o: CtlOptions;
  try {
    o = parseCtlArgs(argv);
  } catch (err) {
    if (err instanceof HelpWanted) {
      io.stdout.write(formatHelp(CTL_SPEC));
      return EX_OK;
    }
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(CTL_USAGE);
    return EX_USAGE;
  }
  const config = loadToolConfig(o.config, io.stderr);
  if (typeof config === 'number') return config;
  const run: Run = { o, config, io, json: new JsonOut(o, io.stdout), skipsFails: 0 };
  if (o.command === 'reconstruct') return EX_OK;
  const { targets, missing } = resolveTargets(config, o.mode, o.names, io.stderr);
  let r = 0;
  try {
    for (const t of targets) {
      r = await runOne(run, t);
      if (r !== 0 && (o.stopOnError || o.command === 'lock')) break;
    }
  } finally {
    await run.json.close();
  }
  if (o.command === 'lock' && r !== 0) return r;
  return r !== 0 || missing > 0 || run.skipsFails > 0 ? EX_TEMPFAIL : EX_OK;
}

/** One backup; a non-zero result stops the run with -S. */
async function runOne(run: Run, t: Target): Promise<number> {
  switch (run.o.command) {
    case 'list':
      return listOne(run, t);
    case 'stat':
      return statOne(run, t);
    case 'verify':
      return verifyOne(run, t);
    case 'reindex':
      return reindexOne(run, t);
    case 'compact':
      return compactOne(run, t);
    case 'lock':
      return lockOne(run, t);
    default:
      run.io.stderr.write(`unimplemented: ${run.o.command} ${t.userid ?? ''} ${t.fname}\n`);
      run.skipsFails++;
      return -1;
  }
}

/** Opens `t` for list and stat (quick-verified unless -V); what fails is printed `name: error` and returned. */
async function openListed(run: Run, t: Target): Promise<ToolBackup | { error: unknown }> {
  try {
    return await openToolBackup(t.fname, { wait: run.o.wait, verify: !run.o.noverify });
  } catch (error) {
    run.io.stderr.write(`${t.userid ?? t.fname}: ${errorText(error)}\n`);
    return { error };
  }
}

async function listOne(run: Run, t: Target): Promise<number> {
  const { o, io } = run;
  const b = await openListed(run, t);
  if ('error' in b) {
    run.skipsFails++;
    return b.error instanceof LockedError || !o.stopOnError ? 0 : 1;
  }
  try {
    const latest = b.index.latestChunk();
    if (latest !== null && o.stale && Math.floor(Date.now() / 1000) - (latest.ts_end ?? 0) < 3600 * o.stale) return 0;
    const timestamp = latest === null ? '[unknown]' : localTime(latest.ts_end);
    const size = fileSize(b.lock.fd);
    if (run.json.active) await run.json.put({ timestamp, compressed: size, userid: t.userid, fname: t.fname });
    else await write(io.stdout, `${timestamp}\t${size}\t${t.userid ?? '[unknown]'}\t${t.fname}\n`);
    return 0;
  } finally {
    b.close();
  }
}

async function statOne(run: Run, t: Target): Promise<number> {
  const { o, io } = run;
  const b = await openListed(run, t);
  // Unlike list, stat does not count a backup it cannot open for exit status 75.
  if ('error' in b) return o.stopOnError ? 1 : 0;
  try {
    const since = sinceOf(compactSettings(run.config));
    const chunks = b.index.chunks();
    const live = liveChunkIds(b.index, since);
    const uncompressed = chunks.reduce((s, c) => s + (c.length ?? 0), 0);
    let compactable = 0;
    for (const c of chunks) if (live.has(c.id)) for (const size of liveMessages(b.index, c.id, since).values()) compactable += size;
    const compressed = fileSize(b.lock.fd);
    const cmp = (100 * compressed) / uncompressed;
    const utl = (100 * compactable) / uncompressed;
    const latest = b.index.latestChunk();
    const start = latest === null ? '[unknown]' : localTime(latest.ts_start);
    const end = latest === null ? '[unknown]' : localTime(latest.ts_end);
    if (run.json.active) {
      await run.json.put({
        userid: t.userid, fname: t.fname, compressed, uncompressed, compactable,
        compression_ratio: { real: cmp }, utilisation_ratio: { real: utl }, last_start_time: start, last_end_time: end,
      });
    } else {
      await write(io.stdout, `${t.userid ?? t.fname}\t${compressed}\t${uncompressed}\t${compactable}\t${fixed(cmp, 6, 1)}%\t${fixed(utl, 6, 1)}%\t${start.padStart(21)}\t${end}\n`);
    }
    return 0;
  } finally {
    b.close();
  }
}

/**
 * A sub-command that ends in one status line per backup (verify, reindex,
 * compact): `body` gives the status, a throw is `locked` or `failed (...)`.
 * Anything but ok counts for exit status 75; a failure stops the run with -S.
 */
async function withStatus(run: Run, cmd: string, t: Target, body: () => Promise<Status>): Promise<number> {
  let status: Status;
  try {
    status = await body();
  } catch (err) {
    status = statusOf(err);
  }
  await printStatus(run, cmd, t, status);
  if (status === 'ok') return 0;
  run.skipsFails++;
  return status === 'locked' || !run.o.stopOnError ? 0 : 1;
}

function verbosePrinter(run: Run): ((line: string) => void) | undefined {
  return run.o.verbose > 0 ? (line: string): void => void run.io.stdout.write(`${line}\n`) : undefined;
}

function verifyOne(run: Run, t: Target): Promise<number> {
  return withStatus(run, 'verify', t, async () => {
    const b = await openToolBackup(t.fname, { wait: run.o.wait, verify: false });
    const progress = new Progress(run.io.stdout, `verify ${t.userid ?? t.fname}`, fileSize(b.lock.fd));
    try {
      const problems = await verifyFull(b.lock.fd, b.index, { fname: t.fname, verbose: verbosePrinter(run), progress });
      progress.done();
      for (const p of problems) run.io.stderr.write(`${problemText(t.fname, p)}\n`);
      return problems.length > 0 ? { failed: problemText(t.fname, problems[0]!) } : 'ok';
    } finally {
      progress.done();
      b.close();
    }
  });
}

function reindexOne(run: Run, t: Target): Promise<number> {
  const { o, io } = run;
  return withStatus(run, 'reindex', t, async () => {
    const progress = new Progress(io.stdout, `reindex ${t.userid ?? t.fname}`, 0);
    try {
      const found = o.verbose > 0 ? (off: number): Promise<void> => write(io.stdout, `\nfound chunk at offset ${off}\n\n`) : undefined;
      const errors = await reindexStreaming(t.fname, { wait: o.wait, keepPrevious: compactSettings(run.config).keepPrevious, found, progress: progress.sized(t.fname) });
      progress.done();
      if (errors === null) return 'locked';
      for (const e of errors) io.stderr.write(`${e}\n`);
      if (o.verbose > 0) await write(io.stdout, 'reached end of file\n');
      return 'ok';
    } finally {
      progress.done();
    }
  });
}

function compactOne(run: Run, t: Target): Promise<number> {
  const { o, io, config } = run;
  return withStatus(run, 'compact', t, async () => {
    const r = await compactBackup(t.fname, { wait: o.wait, force: o.force, settings: compactSettings(config), staging: config.settings.backup_staging_path, verbose: verbosePrinter(run), progressOut: io.stdout });
    return r === 'skipped' ? 'skipped' : 'ok';
  });
}

/** `lock`: -p (default) until EOF on stdin, -s sqlite3 on the index, -x a shell command. */
async function lockOne(run: Run, t: Target): Promise<number> {
  const { o, io } = run;
  const who = t.userid ?? t.fname;
  const pipe = o.lockMode === null || o.lockMode === 'pipe';
  if (pipe) io.stdout.write(`* Trying to obtain lock on ${who}...\n`);
  else io.stderr.write(`trying to obtain lock on ${who}...\n`);
  let b;
  try {
    b = await openToolBackup(t.fname, { wait: o.wait, create: o.create });
  } catch (err) {
    if (pipe) io.stdout.write(`NO failed (${errorText(err)})\n`);
    else io.stderr.write(`unable to lock ${who}: ${errorText(err)}\n`);
    run.skipsFails++;
    return EX_SOFTWARE;
  }
  try {
    if (pipe) {
      io.stdout.write('OK locked\n');
      await new Promise<void>((resolve) => {
        io.stdin.on('end', resolve);
        io.stdin.on('close', resolve);
        io.stdin.on('error', () => resolve());
        io.stdin.resume();
      });
      return 0;
    }
    const index = `${t.fname}.index`;
    const child = o.lockMode === 'sql'
      ? spawn('sqlite3', [index], { stdio: 'inherit' })
      : spawn('/bin/sh', ['-c', o.lockCommand!], { stdio: 'inherit', env: { ...process.env, ctl_backups_lock_data_fname: t.fname, ctl_backups_lock_index_fname: index } });
    const code = await new Promise<number>((resolve) => {
      child.on('error', () => resolve(EX_SOFTWARE));
      child.on('exit', (c) => resolve(c ?? EX_SOFTWARE));
    });
    if (code !== 0) run.skipsFails++;
    return code;
  } finally {
    b.close();
  }
}
