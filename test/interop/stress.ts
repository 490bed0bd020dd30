/**
 * Crash campaign: `npm run stress [-- --daemons sync-server,backupd --trials N --seed S --mode standalone|master]`.
 *
 * The real Cyrus 3.6.1 sync_client replicates one populated user into a
 * cyrsync daemon (from dist/), and the daemon is killed with SIGKILL at a
 * random moment of the sync: even trials are full syncs into a fresh store,
 * odd ones incremental syncs after `mutate` on the master. `--mode
 * standalone` (the default) kills the `--listen` daemon at a random moment
 * after sync_client started; `--mode master` runs both daemons as services of
 * the real Cyrus master(8) (stress-master.ts) and kills the child master
 * spawned for the sync's connection at a random moment after its session
 * logged in; master spawns the next child. After every kill:
 * - restart; no staging or temporary file outlives the recovery;
 * - nothing acknowledged is lost: replica: every APPLY MESSAGE answered OK
 *   has its message files, every APPLY MAILBOX answered OK its highestmodseq
 *   (read from the session's recording); backup: every message the backup
 *   held before the sync (chunks committed by an earlier session's EXIT) is
 *   still indexed;
 * - one sync succeeds and converges (cyrus-peer compare), the replica's dump
 *   equals the master's;
 * - `cyrsync check` finds nothing; for backups the real `ctl_backups verify`
 *   says ok.
 * Prints one line per trial and a JSON summary; exit status 1 when a trial failed.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { CLI, Peer, makeRunDir, run, sleep, stopOwnProcesses, tail } from './harness.js';
import { Daemon, type DaemonKind } from './faults.js';
import { backupGuids, leftovers, replicaLosses } from './stress-ack.js';
import { MasterRun, MasterTarget, type StressTarget } from './stress-master.js';

interface Options {
  daemons: DaemonKind[];
  trials: number;
  seed: number;
  user: string;
  messages: number;
  mode: 'standalone' | 'master';
}

function parseArgs(argv: string[]): Options {
  const o: Options = { daemons: ['sync-server', 'backupd'], trials: 200, seed: Date.now() % 100000, user: 'stress', messages: 30, mode: 'standalone' };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--daemons': o.daemons = v!.split(',') as DaemonKind[]; i++; break;
      case '--trials': o.trials = Number(v); i++; break;
      case '--seed': o.seed = Number(v); i++; break;
      case '--user': o.user = v!; i++; break;
      case '--messages': o.messages = Number(v); i++; break;
      case '--mode':
        if (v !== 'standalone' && v !== 'master') throw new Error(`--mode wants standalone or master, got ${v}`);
        o.mode = v; i++; break;
      default: throw new Error(`unknown option ${argv[i]}`);
    }
  }
  return o;
}

/** A small deterministic PRNG (mulberry32), so a campaign can be replayed with --seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Trial {
  daemon: DaemonKind;
  n: number;
  mode: 'full' | 'incremental';
  killAfterMs: number;
  /** what the SIGKILL hit (master mode: the session's child, an idle child, or none) */
  killed: string;
  syncFailed: boolean;
  acknowledged: number;
  problems: string[];
  recoveryMs: number;
}

/** A standalone `--listen` daemon (faults.ts), a new one in a directory of its own for each fresh store. */
class StandaloneTarget implements StressTarget {
  private d: Daemon | null = null;
  private storeNo = 0;

  constructor(
    readonly kind: DaemonKind,
    private readonly work: string,
  ) {}

  private get daemon(): Daemon {
    if (!this.d) throw new Error('no daemon started');
    return this.d;
  }

  get conf(): string {
    return this.daemon.conf;
  }

  get dirs(): StressTarget['dirs'] {
    return this.daemon.dirs;
  }

  get target(): string {
    return this.daemon.target;
  }

  async fresh(): Promise<void> {
    if (this.d) {
      await this.d.stop();
      await fsp.rm(this.d.dir, { recursive: true, force: true });
    }
    const dir = path.join(this.work, `${this.kind}-${++this.storeNo}`);
    await fsp.mkdir(dir, { recursive: true });
    this.d = await Daemon.start(this.kind, dir);
  }

  watchSession(): () => Promise<boolean> {
    return () => Promise.resolve(true);
  }

  async kill9(): Promise<string> {
    await this.daemon.kill9();
    return 'daemon';
  }

  restart(): Promise<void> {
    return this.daemon.launch();
  }

  async handOver(): Promise<void> {
    // the real tools run as the cyrus user
    await run('chown', ['-R', 'cyrus:mail', this.daemon.dir]);
  }

  async close(): Promise<void> {
    await this.d?.stop();
  }

  log(): string {
    return this.d?.log() ?? '';
  }
}

class Campaign {
  private fullMs = 0;
  private incMs = 0;

  constructor(
    private readonly peer: Peer,
    private readonly d: StressTarget,
    private readonly work: string,
    private readonly o: Options,
    private readonly random: () => number,
  ) {}

  private get kind(): DaemonKind {
    return this.d.kind;
  }

  /** The duration of one sync from the moment its session is served (standalone: from sync_client's start). */
  private async timedSync(): Promise<number> {
    const d = this.d;
    await d.handOver();
    const watch = d.watchSession();
    const t0 = Date.now();
    const sync = this.peer.sync(this.o.user, d.target);
    const seen = await watch(sync);
    const t1 = Date.now();
    const r = await sync;
    if (r.code !== 0 || !seen) throw new Error(`calibration sync failed\n${tail(r.stdout + r.stderr)}\n${tail(d.log())}`);
    return Date.now() - (this.o.mode === 'master' ? t1 : t0);
  }

  async calibrate(): Promise<void> {
    await this.d.fresh();
    this.fullMs = await this.timedSync();
    await this.peer.mutate(this.o.user);
    this.incMs = await this.timedSync();
    console.log(`${this.kind}: a full sync takes ${this.fullMs} ms, an incremental one ${this.incMs} ms`);
  }

  private compareArgs(): string[] {
    return this.kind === 'backupd' ? ['--allow', 'APPLY QUOTA,APPLY ACTIVATE_SIEVE'] : [];
  }

  async trial(n: number): Promise<Trial> {
    const mode = n % 2 === 0 ? 'full' : 'incremental';
    const d = this.d;
    if (mode === 'full') await d.fresh();
    if (mode === 'incremental') await this.peer.mutate(this.o.user);
    const before = d.kind === 'backupd' ? backupGuids(d) : new Set<string>();
    const tap = path.join(this.work, `trial-${this.kind}.tap`);
    await fsp.rm(tap, { force: true });
    const span = mode === 'full' ? this.fullMs : this.incMs;
    const killAfterMs = Math.round(this.random() * span * 1.1);
    await d.handOver();
    const watch = d.watchSession();
    const sync = this.peer.sync(this.o.user, d.target, { tap });
    await watch(sync);
    await sleep(killAfterMs);
    const killed = await d.kill9();
    const first = await sync;
    const problems: string[] = [];
    const t0 = Date.now();
    await d.restart();
    let acknowledged = 0;
    if (d.kind === 'sync-server') {
      const loss = await replicaLosses(d, tap);
      acknowledged = loss.count;
      problems.push(...loss.problems);
    } else {
      const after = backupGuids(d);
      acknowledged = before.size;
      for (const g of before) if (!after.has(g)) problems.push(`committed message ${g} is no longer indexed`);
    }
    await d.handOver();
    const again = await this.peer.sync(this.o.user, d.target);
    const recoveryMs = Date.now() - t0;
    if (again.code !== 0) problems.push(`the recovery sync failed: ${tail(again.stdout + again.stderr, 5)}`);
    const cmp = await this.peer.cmd(['compare', this.o.user, '--to', d.target, ...this.compareArgs()]);
    if (!/^CONVERGED$/m.test(cmp.stdout)) problems.push(`not converged after one sync: ${tail(cmp.stdout + cmp.stderr, 8)}`);
    const left = leftovers(d);
    if (left.length > 0) problems.push(`left over after recovery: ${left.join(' ')}`);
    problems.push(...(await this.storeChecks(d)));
    return { daemon: this.kind, n, mode, killAfterMs, killed, syncFailed: first.code !== 0, acknowledged, problems, recoveryMs };
  }

  private async storeChecks(d: StressTarget): Promise<string[]> {
    const problems: string[] = [];
    const check = await run(process.execPath, [CLI, 'check', '-C', d.conf, '--quiet']);
    if (check.code !== 0) problems.push(`cyrsync check (exit ${check.code}): ${tail(check.stdout + check.stderr, 8)}`);
    if (d.kind === 'sync-server') {
      const ours = await run(process.execPath, [CLI, 'dump', '-C', d.conf, this.o.user]);
      if (ours.stdout !== (await this.peer.masterDump(this.o.user))) problems.push('the replica dump differs from the master');
    } else {
      await d.handOver();
      const v = await this.peer.cmd(['tool', d.conf, 'ctl_backups', 'verify', '-u', this.o.user]);
      if (!new RegExp(`^verify ${this.o.user}: ok$`, 'm').test(v.stdout)) problems.push(`ctl_backups verify: ${tail(v.stdout + v.stderr, 5)}`);
    }
    return problems;
  }

  async close(): Promise<void> {
    await this.d.close();
  }
}

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  const peer = await Peer.create();
  const work = await makeRunDir('cyrsync-stress-');
  const trials: Trial[] = [];
  const started = Date.now();
  let cyrmaster: MasterRun | undefined;
  try {
    await peer.startMaster();
    await peer.populate(o.user, o.messages);
    console.log(`seed ${o.seed}; mode ${o.mode}; master ${peer.dir}; work ${work}`);
    if (o.mode === 'master') {
      cyrmaster = await MasterRun.create();
      await cyrmaster.start();
      console.log(`cyrmaster run dir ${cyrmaster.dir}`);
    }
    for (const kind of o.daemons) {
      const target = cyrmaster ? new MasterTarget(cyrmaster, kind) : new StandaloneTarget(kind, work);
      const c = new Campaign(peer, target, work, o, rng(o.seed));
      try {
        await c.calibrate();
        for (let n = 0; n < o.trials; n++) {
          const t = await c.trial(n);
          trials.push(t);
          console.log(`${kind} #${n} ${t.mode} kill@${t.killAfterMs}ms (${t.killed}) sync ${t.syncFailed ? 'interrupted' : 'finished'}, ${t.acknowledged} acknowledged checked, recovery ${t.recoveryMs} ms: ${t.problems.length ? `FAIL ${t.problems.join('; ')}` : 'ok'}`);
        }
      } finally {
        await c.close();
      }
    }
  } finally {
    await cyrmaster?.stop();
    await peer.stopAll();
    stopOwnProcesses();
  }
  const failed = trials.filter((t) => t.problems.length > 0);
  const summary = o.daemons.map((daemon) => {
    const ts = trials.filter((t) => t.daemon === daemon);
    return {
      daemon,
      trials: ts.length,
      full: ts.filter((t) => t.mode === 'full').length,
      incremental: ts.filter((t) => t.mode === 'incremental').length,
      interrupted: ts.filter((t) => t.syncFailed).length,
      sessionKills: ts.filter((t) => t.killed.startsWith('session') || t.killed === 'daemon').length,
      acknowledgedChecked: ts.reduce((s, t) => s + t.acknowledged, 0),
      failed: ts.filter((t) => t.problems.length > 0).length,
      medianRecoveryMs: ts.map((t) => t.recoveryMs).sort((a, b) => a - b)[Math.floor(ts.length / 2)] ?? 0,
    };
  });
  console.log(JSON.stringify({ seed: o.seed, mode: o.mode, minutes: Math.round((Date.now() - started) / 600) / 100, summary }));
  if (failed.length === 0) {
    await peer.remove();
    await fsp.rm(work, { recursive: true, force: true });
    if (cyrmaster) await fsp.rm(cyrmaster.dir, { recursive: true, force: true });
  } else {
    console.log(`kept for inspection: ${peer.dir} ${work} ${cyrmaster?.dir ?? ''}`);
  }
  return failed.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`stress: ${err instanceof Error ? err.stack : JSON.stringify(err)}`);
    stopOwnProcesses();
    process.exit(2);
  },
);

