/**
 * Shared pieces of the side-by-side benchmarks: one private real Cyrus 3.6.1
 * (master + real sync_server replica) driven through the bundled cyrus-peer,
 * cyrsync listeners from dist/, and the measurements taken on both.
 *
 * Invariants:
 * - The benchmark's Cyrus lives in its own directory and on its own ports
 *   (BENCH_PEER_DIR, 18143/18190/18205/18243/18305 unless overridden), so it
 *   never meets the interop tests' instances or a developer's cyrus-peer.
 * - A populated master is kept between runs (populating is the slow part);
 *   datasets.json in BENCH_PEER_DIR records what each user holds.
 * - Server memory and CPU are sampled the same way for both servers: the
 *   bundled peer_rss.py over the server's process tree (the Cyrus replica's
 *   master and its sync_server children; the cyrsync node process).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Cyrsync, PEER, describe, ensureSetup, run, type RunResult, type RunOptions } from '../../test/interop/harness.js';

export const BENCH_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(BENCH_DIR, '..');
export const RESULTS_DIR = path.join(BENCH_DIR, 'results');
export const CLI = path.join(REPO, 'dist', 'src', 'cli.js');
export const PEER_RSS = path.join(REPO, 'test', 'interop', 'peer', 'lib', 'peer_rss.py');

export const BENCH_PEER_DIR = process.env['CYRSYNC_BENCH_PEER_DIR'] ?? '/tmp/peer-bench';
const port = (name: string, def: number): number => Number(process.env[name] ?? def);
export const PORTS = {
  imap: port('CYRSYNC_BENCH_IMAP_PORT', 18143),
  sieve: port('CYRSYNC_BENCH_SIEVE_PORT', 18190),
  replica: port('CYRSYNC_BENCH_REPLICA_PORT', 18205),
  replicaImap: port('CYRSYNC_BENCH_REPLICA_IMAP_PORT', 18243),
  backupd: port('CYRSYNC_BENCH_BACKUPD_PORT', 18305),
};

export const peerEnv: NodeJS.ProcessEnv = {
  ...process.env,
  CYRUS_PEER_DIR: BENCH_PEER_DIR,
  CYRUS_PEER_IMAP_PORT: String(PORTS.imap),
  CYRUS_PEER_SIEVE_PORT: String(PORTS.sieve),
  CYRUS_PEER_REPLICA_PORT: String(PORTS.replica),
  CYRUS_PEER_REPLICA_IMAP_PORT: String(PORTS.replicaImap),
  CYRUS_PEER_BACKUPD_PORT: String(PORTS.backupd),
  CYRUS_PEER_TARGET: 'replica',
  // a 1 GiB sync on a loaded 2-core machine takes minutes, never half an hour
  CYRUS_PEER_SYNC_DEADLINE: '1200',
};

/** `cyrus-peer ARGS` on the benchmark's instances; throws with the output on failure. */
export async function peer(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(PEER, args, { timeoutMs: 30 * 60_000, ...opts, env: { ...peerEnv, ...(opts.env ?? {}) } });
  if (r.code !== 0) throw new Error(`cyrus-peer ${args.join(' ')} failed\n${describe(r)}`);
  return r;
}

export { ensureSetup };

/**
 * Walks a benchmark's options: `on(option, value)` for each, where value()
 * takes the next argument as the option's value (an error when there is none).
 */
export function eachOption(args: readonly string[], on: (option: string, value: () => string) => void): void {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    on(a, () => {
      const v = args[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    });
  }
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

// ------------------------------------------------------------------ datasets

export interface Dataset {
  /** Short name used in tables and JSON (4k, 20M, 1G). */
  name: string;
  user: string;
  count: number;
  size: string;
}

export interface PopulatedDataset extends Dataset {
  /** Message octets delivered (as populate reports them). */
  bytes: number;
  populateSeconds: number;
}

const DATASETS_FILE = path.join(BENCH_PEER_DIR, 'datasets.json');

function readDatasets(): Record<string, PopulatedDataset> {
  try {
    return JSON.parse(fs.readFileSync(DATASETS_FILE, 'utf8')) as Record<string, PopulatedDataset>;
  } catch {
    return {};
  }
}

/** Starts the benchmark's master when it is not running (idempotent). */
export async function ensureMaster(): Promise<void> {
  await ensureSetup();
  const st = await peer(['status']);
  if (!/^master: running/m.test(st.stdout)) await peer(['master', 'start']);
}

/**
 * Makes sure the master holds `d` (N messages of one size in INBOX), reusing
 * an earlier population of the same shape.
 */
export async function ensureDataset(d: Dataset): Promise<PopulatedDataset> {
  const known = readDatasets()[d.user];
  if (known && known.count === d.count && known.size === d.size) return known;
  if (known) throw new Error(`user ${d.user} on ${BENCH_PEER_DIR} holds another data set; remove the directory (cyrus-peer reset all)`);
  log(`populating ${d.user}: ${d.count} x ${d.size} (slow, done once per ${BENCH_PEER_DIR})`);
  const t0 = performance.now();
  const r = await peer(['populate', d.user, String(d.count), d.size, '--plain'], { timeoutMs: 60 * 60_000 });
  const seconds = (performance.now() - t0) / 1000;
  const m = /delivered (\d+) messages, ([\d.]+) MB/.exec(r.output);
  if (!m) throw new Error(`populate ${d.user}: no delivery summary\n${describe(r)}`);
  const p: PopulatedDataset = { ...d, bytes: Math.round(Number(m[2]) * 1e6), populateSeconds: seconds };
  const all = readDatasets();
  all[d.user] = p;
  fs.writeFileSync(DATASETS_FILE, JSON.stringify(all, null, 2) + '\n');
  log(`populated ${d.user} in ${seconds.toFixed(0)} s`);
  return p;
}

// ------------------------------------------------------------ measurements

/** Peak RSS and CPU of a process tree over a window (peer_rss.py). */
export interface TreeSample {
  /** Highest VmHWM of one process in the tree (the worker: sync_server child or cyrsync), KiB. */
  peakRssKiB: number;
  /** CPU seconds (user + system) the tree used during the window. */
  cpuSeconds: number;
  process: string;
}

export class TreeWatch {
  private constructor(
    private readonly child: ChildProcess,
    private readonly out: string,
  ) {}

  static async start(rootPid: number): Promise<TreeWatch> {
    const out = path.join(os.tmpdir(), `cyrsync-bench-rss-${process.pid}-${rootPid}-${Date.now()}`);
    const child = spawn(process.env['CYRUS_PEER_PYTHON'] ?? 'python3', [PEER_RSS, String(rootPid), out, '0.05'], {
      stdio: 'ignore',
    });
    // the first sample (CPU baseline) is taken right after start
    await new Promise((r) => setTimeout(r, 300));
    return new TreeWatch(child, out);
  }

  async stop(): Promise<TreeSample> {
    const exited = once(this.child, 'exit');
    this.child.kill('SIGTERM');
    await exited;
    const line = await fsp.readFile(this.out, 'utf8').catch(() => '');
    await fsp.rm(this.out, { force: true });
    return parseTreeLine(line);
  }
}

/** Parses peer_rss.py's summary line. */
export function parseTreeLine(line: string): TreeSample {
  const hwm = /peak RSS \(VmHWM\) (\d+) KB in (.+?) pid/.exec(line);
  const cpu = /tree CPU ([\d.]+)s/.exec(line);
  if (!cpu) throw new Error(`no server sample: ${JSON.stringify(line)}`);
  return { peakRssKiB: hwm ? Number(hwm[1]) : 0, process: hwm ? hwm[2]! : '?', cpuSeconds: Number(cpu[1]) };
}

/** sync_client's own figures from a `cyrus-peer bench|sync` line. */
export interface ClientSample {
  exit: number;
  wallSeconds: number;
  clientCpuSeconds: number;
  clientPeakRssKiB: number;
}

export function parseClientLine(output: string): ClientSample {
  const m = /sync_client exit=(\d+) wall=([\d.]+)s user=([\d.]+)s sys=([\d.]+)s maxrss=(\d+)KB/.exec(output);
  if (!m) throw new Error(`no sync_client summary in:\n${output.split('\n').slice(-30).join('\n')}`);
  return {
    exit: Number(m[1]),
    wallSeconds: Number(m[2]),
    clientCpuSeconds: Number(m[3]) + Number(m[4]),
    clientPeakRssKiB: Number(m[5]),
  };
}

/** Bytes on disk (allocated blocks) of some directories, 0 for missing ones. */
export async function diskBytes(dirs: readonly string[]): Promise<number> {
  const present = dirs.filter((d) => fs.existsSync(d));
  if (present.length === 0) return 0;
  const r = await run('du', ['-s', '--block-size=1', '-c', ...present]);
  const total = /^(\d+)\s+total$/m.exec(r.stdout);
  return total ? Number(total[1]) : 0;
}

/** The reference replica's spool and configdirectory, for diskBytes. */
export const PEER_REPLICA_DIRS = [path.join(BENCH_PEER_DIR, 'replica', 'spool'), path.join(BENCH_PEER_DIR, 'replica', 'conf')] as const;

/** pid of the reference replica's Cyrus master (running). */
export async function peerReplicaPid(): Promise<number> {
  return Number((await fsp.readFile(path.join(BENCH_PEER_DIR, 'replica', 'run', 'master.pid'), 'utf8')).trim());
}

/**
 * Runs `measure` against a fresh cyrsync replica, then stops it, takes its
 * bytes on disk (configdirectory and partition) and removes it, also when
 * `measure` fails.
 */
export async function onFreshCyrsync<T>(measure: (c: Cyrsync) => Promise<T>): Promise<{ result: T; disk: number }> {
  const c = await Cyrsync.start();
  try {
    const result = await measure(c);
    await c.stop();
    return { result, disk: await diskBytes([c.configDir, c.partitionDir]) };
  } finally {
    await c.stop();
    await c.remove();
  }
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export interface Machine {
  cpus: number;
  model: string;
  ramGiB: number;
  node: string;
  date: string;
}

export function machine(): Machine {
  let model = os.cpus()[0]?.model ?? '?';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) model = m[1]!.trim();
  } catch {
    /* not Linux */
  }
  return {
    cpus: os.availableParallelism(),
    model,
    ramGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    date: new Date().toISOString(),
  };
}

/** Rebuilds dist/ when it is missing, so a fresh checkout can bench right away. */
export async function ensureBuilt(): Promise<void> {
  if (fs.existsSync(CLI)) return;
  log('dist/ missing: npm run build');
  const r = await run('npm', ['run', 'build'], { cwd: REPO, timeoutMs: 10 * 60_000 });
  if (r.code !== 0) throw new Error(`npm run build failed\n${describe(r)}`);
}
