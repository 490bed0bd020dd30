/**
 * Many users at once: `npm run build && node --import=tsx
 * test/interop/stress-users.ts [--users 50] [--messages 20] [--size SIZE]
 * [--targets cyrsync-replica,cyrsync-backupd,cyrus-replica,cyrus-backupd]
 * [--jobs 4] [--client-timeout 60] [--budget MIB] [--json FILE]`
 * (`--budget`: cyrsync's `cyrsync_memory_budget`, default its own).
 *
 * The real Cyrus 3.6.1 master (cyrus-peer, root) is populated with USERS
 * users (folders, flags, expunges, subscriptions, sieve, quota,
 * annotations; MESSAGES messages each, of varied sizes with one of 1-3 MB
 * unless SIZE is given). Then, for each target in turn, on a fresh store,
 * one real `sync_client -u USER` per user is started, all at the same
 * moment, and the run measures:
 * - wall time from the first start to the last exit, users/s, messages/s,
 *   MB/s of message octets (as the master's dumps count them);
 * - the server side's memory, sampled every 200 ms: the highest sum of
 *   VmRSS over its processes (cyrsync: its one process; Cyrus: the
 *   sync_server or backupd children of its master) and the highest VmHWM of
 *   one process; its CPU seconds over the run (sampled).
 * sync_client waits for the greeting and each reply of the login at most
 * `client_timeout` (Cyrus default 10 s); fifty at once on a loaded machine
 * wait longer than that for either server, so the master's imapd.conf gets
 * `client_timeout: 60` (`--client-timeout 0` keeps Cyrus's default).
 * Then every user must converge: a sync that failed is retried once, one
 * by one (counted); `cyrus-peer compare` sends nothing for any user; for
 * the replicas the dump of each user (cyrsync dump, or the real replica's
 * imapd) equals the master's; for cyrsync's stores `cyrsync check` is clean
 * and no staging file is left; for cyrsync's backups the real `ctl_backups
 * verify -A` says ok for every user. The real Cyrus targets are the
 * reference: their figures are reported, their verify is reported but not
 * counted as a failure (the real 3.6.1 ctl_backups fails on the real
 * backupd's own backups of users with a special-use folder, see README).
 *
 * Prints one line per target and a JSON summary; exit status 1 when a
 * cyrsync target did not converge or a check failed.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { CLI, Peer, makeRunDir, run, stopOwnProcesses, tail } from './harness.js';
import { Daemon, filesBelow } from './faults.js';

type Target = 'cyrsync-replica' | 'cyrsync-backupd' | 'cyrus-replica' | 'cyrus-backupd';
const TARGETS: Target[] = ['cyrsync-replica', 'cyrsync-backupd', 'cyrus-replica', 'cyrus-backupd'];

interface Options {
  users: number;
  messages: number;
  size: string | undefined;
  targets: Target[];
  jobs: number;
  clientTimeout: number;
  budget: number | undefined;
  json: string | undefined;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { users: 50, messages: 20, size: undefined, targets: TARGETS, jobs: 4, clientTimeout: 60, budget: undefined, json: undefined };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[++i];
    if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`);
    switch (argv[i - 1]) {
      case '--users': o.users = Number(v); break;
      case '--messages': o.messages = Number(v); break;
      case '--size': o.size = v; break;
      case '--jobs': o.jobs = Number(v); break;
      case '--json': o.json = v; break;
      case '--client-timeout': o.clientTimeout = Number(v); break;
      case '--budget': o.budget = Number(v); break;
      case '--targets':
        o.targets = v.split(',') as Target[];
        for (const t of o.targets) if (!TARGETS.includes(t)) throw new Error(`unknown target ${t} (${TARGETS.join(', ')})`);
        break;
      default: throw new Error(`unknown option ${argv[i - 1]}`);
    }
  }
  if (!(o.users >= 1 && o.messages >= 1 && o.jobs >= 1)) throw new Error('--users, --messages and --jobs must be at least 1');
  return o;
}

/** Runs `fn` over `items`, at most `jobs` at a time; results in order. */
async function pool<T, R>(items: readonly T[], jobs: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, items.length) }, worker));
  return out;
}

// ------------------------------------------------------------------ sampling

interface ProcInfo {
  ppid: number;
  comm: string;
  ticks: number;
}

function readProc(pid: number): ProcInfo | undefined {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const open = st.indexOf('(');
    const close = st.lastIndexOf(')');
    const rest = st.slice(close + 2).split(' ');
    return { ppid: Number(rest[1]), comm: st.slice(open + 1, close), ticks: Number(rest[11]) + Number(rest[12]) };
  } catch {
    return undefined;
  }
}

/** VmRSS and VmHWM of a process, in KiB (0 when it is gone). */
function memoryKiB(pid: number): { rss: number; hwm: number } {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0);
    return { rss: field('VmRSS'), hwm: field('VmHWM') };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

/** Descendants of `root` (and `root` itself) whose command name is one of `names`. */
function processesNamed(root: number, names: readonly string[]): number[] {
  const kids = new Map<number, number[]>();
  const info = new Map<number, ProcInfo>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const p = readProc(Number(d));
    if (!p) continue;
    info.set(Number(d), p);
    kids.set(p.ppid, [...(kids.get(p.ppid) ?? []), Number(d)]);
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    if (names.includes(info.get(pid)?.comm ?? '')) out.push(pid);
    todo.push(...(kids.get(pid) ?? []));
  }
  return out;
}

interface Sample {
  peakRssMiB: number;
  peakHwmMiB: number;
  cpuS: number;
  processes: number;
}

/** Samples the memory and CPU time of the server's processes every 200 ms. */
class Sampler {
  private peakRss = 0;
  private peakHwm = 0;
  private readonly startTicks = new Map<number, number>();
  private readonly lastTicks = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pids: () => number[]) {
    for (const pid of pids()) this.startTicks.set(pid, readProc(pid)?.ticks ?? 0);
    this.timer = setInterval(() => this.sample(), 200);
  }

  private sample(): void {
    let sum = 0;
    for (const pid of this.pids()) {
      const m = memoryKiB(pid);
      sum += m.rss;
      this.peakHwm = Math.max(this.peakHwm, m.hwm);
      const p = readProc(pid);
      if (p) this.lastTicks.set(pid, p.ticks);
    }
    this.peakRss = Math.max(this.peakRss, sum);
  }

  stop(): Sample {
    this.sample();
    clearInterval(this.timer);
    let ticks = 0;
    for (const [pid, t] of this.lastTicks) ticks += t - (this.startTicks.get(pid) ?? 0);
    const mib = (kib: number): number => Math.round(kib / 102.4) / 10;
    return { peakRssMiB: mib(this.peakRss), peakHwmMiB: mib(this.peakHwm), cpuS: Math.round(ticks) / 100, processes: this.lastTicks.size };
  }
}

// -------------------------------------------------------------------- targets

interface Server {
  target: string;
  pids: () => number[];
  /** Problems that count as failures (cyrsync's stores). */
  check: (users: string[]) => Promise<string[]>;
  /** Notes on a reference target (its own verify). */
  notes: (users: string[]) => Promise<string[]>;
  stop: () => Promise<void>;
}

function masterPid(peer: Peer, inst: string): number {
  return Number(fs.readFileSync(path.join(peer.dir, inst, 'run', 'master.pid'), 'utf8').replace(/\D/g, ''));
}

/** `ctl_backups verify -A` on a conf: users not reported `ok`. */
async function verifyAll(peer: Peer, conf: string, users: string[]): Promise<string[]> {
  const v = await peer.cmd(['tool', conf, 'ctl_backups', 'verify', '-A'], { timeoutMs: 20 * 60_000 });
  const bad = users.filter((u) => !new RegExp(`^verify ${u}: ok$`, 'm').test(v.stdout));
  return bad.length === 0 ? [] : [`ctl_backups verify not ok for ${bad.length} users (${bad.slice(0, 5).join(' ')}): ${tail(v.stdout + v.stderr, 5).replace(/\s+/g, " ").trim()}`];
}

async function cyrsyncServer(peer: Peer, work: string, kind: 'sync-server' | 'backupd', o: Options): Promise<Server> {
  const jobs = o.jobs;
  const d = await Daemon.start(kind, path.join(work, kind), {}, o.budget === undefined ? [] : [`cyrsync_memory_budget: ${o.budget}`]);
  const pid = d.pid!;
  const check = async (users: string[]): Promise<string[]> => {
    const problems: string[] = [];
    const c = await run(process.execPath, [CLI, 'check', '-C', d.conf], { timeoutMs: 20 * 60_000 });
    if (c.code !== 0) problems.push(`cyrsync check (exit ${c.code}): ${tail(c.stdout + c.stderr, 8)}`);
    const left = [...filesBelow(d.dirs.temp), ...(kind === 'backupd' ? filesBelow(d.dirs.staging) : filesBelow(path.join(d.dirs.partition, 'blobs', 'tmp')))];
    if (left.length > 0) problems.push(`left over: ${left.slice(0, 5).join(' ')} (${left.length})`);
    if (kind === 'sync-server') {
      const dump = async (u: string): Promise<string> => (await run(process.execPath, [CLI, 'dump', '-C', d.conf, u])).stdout;
      const differ = await pool(users, jobs, async (u) => ((await dump(u)) === (await peer.masterDump(u)) ? null : u));
      const bad = differ.filter((u) => u !== null);
      if (bad.length > 0) problems.push(`the replica's dump differs from the master's for ${bad.join(' ')}`);
    } else {
      // the real tools run as the cyrus user, on a conf with its own temp and staging paths
      await run('chown', ['-R', 'cyrus:mail', d.dir]);
      problems.push(...(await verifyAll(peer, d.conf, users)));
    }
    return problems;
  };
  return {
    target: d.target,
    pids: () => (readProc(pid) ? [pid] : []),
    check,
    notes: () => Promise.resolve([]),
    stop: async () => {
      await d.stop();
    },
  };
}

async function cyrusServer(peer: Peer, inst: 'replica' | 'backupd', jobs: number): Promise<Server> {
  await peer.ok(['reset', inst]);
  await peer.ok([inst, 'start']);
  const root = masterPid(peer, inst);
  const names = inst === 'replica' ? ['sync_server'] : ['backupd'];
  const notes = async (users: string[]): Promise<string[]> => {
    if (inst === 'backupd') return verifyAll(peer, 'backupd', users);
    const differ = await pool(users, jobs, async (u) => ((await peer.replicaDump(u)) === (await peer.masterDump(u)) ? null : u));
    const bad = differ.filter((u) => u !== null);
    return bad.length > 0 ? [`the real replica's dump differs from the master's for ${bad.join(' ')}`] : [];
  };
  return {
    target: inst,
    pids: () => processesNamed(root, names),
    check: () => Promise.resolve([]),
    notes,
    stop: async () => {
      await peer.ok([inst, 'stop']);
    },
  };
}

function startTarget(peer: Peer, work: string, t: Target, o: Options): Promise<Server> {
  switch (t) {
    case 'cyrsync-replica': return cyrsyncServer(peer, work, 'sync-server', o);
    case 'cyrsync-backupd': return cyrsyncServer(peer, work, 'backupd', o);
    case 'cyrus-replica': return cyrusServer(peer, 'replica', o.jobs);
    case 'cyrus-backupd': return cyrusServer(peer, 'backupd', o.jobs);
  }
}

// ----------------------------------------------------------------------- runs

interface Row extends Sample {
  target: Target;
  users: number;
  wallS: number;
  usersPerS: number;
  messagesPerS: number;
  mbPerS: number;
  failedFirst: number;
  failedReasons: string[];
  retriedOk: number;
  notConverged: string[];
  problems: string[];
  notes: string[];
}

interface Population {
  users: string[];
  messages: number;
  bytes: number;
}

async function converge(peer: Peer, s: Server, t: Target, users: string[], jobs: number): Promise<string[]> {
  const allow = t.endsWith('backupd') ? ['--allow', 'APPLY QUOTA,APPLY ACTIVATE_SIEVE'] : [];
  const res = await pool(users, jobs, async (u) => {
    const cmp = await peer.cmd(['compare', u, '--to', s.target, ...allow]);
    return /^CONVERGED$/m.test(cmp.stdout) ? null : u;
  });
  return res.filter((u): u is string => u !== null);
}

/** Why syncs failed, counted: `N × <the line that says why>`. */
function reasons(outputs: string[]): string[] {
  const counts = new Map<string, number>();
  for (const out of outputs) {
    const lines = out.split('\n');
    const why = (lines.find((l) => /Can not connect|IMAP_[A-Z_]+|bailing out|error/i.test(l)) ?? tail(out, 1)).replace(/ '127\.0\.0\.1:\d+'/, '').trim();
    counts.set(why, (counts.get(why) ?? 0) + 1);
  }
  return [...counts].map(([why, n]) => `${n} × ${why}`);
}

async function runTarget(peer: Peer, work: string, t: Target, pop: Population, o: Options): Promise<Row> {
  const jobs = o.jobs;
  const s = await startTarget(peer, work, t, o);
  try {
    const sampler = new Sampler(s.pids);
    const t0 = Date.now();
    const first = await Promise.all(pop.users.map((u) => peer.sync(u, s.target)));
    const wallS = (Date.now() - t0) / 1000;
    const sample = sampler.stop();
    const failed = pop.users.filter((_, i) => first[i]!.code !== 0);
    const failedReasons = reasons(failed.map((u) => first[pop.users.indexOf(u)]!.output));
    let retriedOk = 0;
    for (const u of failed) if ((await peer.sync(u, s.target)).code === 0) retriedOk++;
    const notConverged = await converge(peer, s, t, pop.users, jobs);
    const problems = t.startsWith('cyrsync') ? await s.check(pop.users) : [];
    const notes = t.startsWith('cyrus') ? await s.notes(pop.users) : [];
    const r2 = (x: number): number => Math.round(x * 100) / 100;
    return {
      target: t,
      users: pop.users.length,
      wallS: r2(wallS),
      usersPerS: r2(pop.users.length / wallS),
      messagesPerS: r2(pop.messages / wallS),
      mbPerS: r2(pop.bytes / 1e6 / wallS),
      ...sample,
      failedFirst: failed.length,
      failedReasons,
      retriedOk,
      notConverged,
      problems,
      notes,
    };
  } finally {
    await s.stop();
  }
}

async function populate(peer: Peer, o: Options): Promise<Population> {
  const users = Array.from({ length: o.users }, (_, i) => `many${String(i + 1).padStart(2, '0')}`);
  const t0 = Date.now();
  await pool(users, o.jobs, (u) => peer.populate(u, o.messages, o.size));
  let messages = 0;
  let bytes = 0;
  for (const u of users) {
    for (const m of (await peer.masterDump(u)).matchAll(/^msg .* size=(\d+) /gm)) {
      messages++;
      bytes += Number(m[1]);
    }
  }
  console.log(`populated ${users.length} users, ${messages} messages, ${(bytes / 1e6).toFixed(1)} MB in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return { users, messages, bytes };
}

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  const peer = await Peer.create();
  // fifty sync_clients share two cores: give each one more time than the default
  peer.env['CYRUS_PEER_SYNC_DEADLINE'] = '900';
  const work = await makeRunDir('cyrsync-stress-users-');
  const rows: Row[] = [];
  let failed = false;
  try {
    await peer.startMaster();
    if (o.clientTimeout > 0) await fsp.appendFile(path.join(peer.dir, 'master', 'imapd.conf'), `client_timeout: ${o.clientTimeout}\n`);
    const pop = await populate(peer, o);
    for (const t of o.targets) {
      const r = await runTarget(peer, work, t, pop, o);
      rows.push(r);
      const bad = t.startsWith('cyrsync') && (r.notConverged.length > 0 || r.problems.length > 0);
      failed ||= bad;
      console.log(
        `${t}: ${r.users} users in ${r.wallS} s (${r.usersPerS} users/s, ${r.messagesPerS} msg/s, ${r.mbPerS} MB/s); ` +
          `peak RSS ${r.peakRssMiB} MiB over ${r.processes} processes (one process at most ${r.peakHwmMiB} MiB), CPU ${r.cpuS} s; ` +
          `first syncs failed ${r.failedFirst} (retried ok ${r.retriedOk}), not converged ${r.notConverged.length}` +
          `${bad ? `: FAIL ${[...r.notConverged, ...r.problems].join('; ')}` : ''}${r.notes.length ? ` (reference: ${r.notes.join('; ')})` : ''}`,
      );
      for (const why of r.failedReasons) console.log(`  first syncs failed: ${why}`);
    }
  } finally {
    await peer.stopAll();
    stopOwnProcesses();
  }
  const summary = { users: o.users, messages: o.messages, size: o.size ?? 'varied', clientTimeout: o.clientTimeout, budget: o.budget ?? 'default', rows };
  console.log(JSON.stringify(summary));
  if (o.json) await fsp.writeFile(o.json, JSON.stringify(summary, null, 2) + '\n');
  if (!failed) {
    await peer.remove();
    await fsp.rm(work, { recursive: true, force: true });
  } else {
    console.log(`kept for inspection: ${peer.dir} ${work}`);
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`stress-users: ${err instanceof Error ? err.stack : JSON.stringify(err)}`);
    stopOwnProcesses();
    process.exit(2);
  },
);
