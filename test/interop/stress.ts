/**
 * Crash campaign: `npm run stress [-- --daemons sync-server,backupd --trials N --seed S]`.
 *
 * The real Cyrus 3.6.1 sync_client replicates one populated user into a
 * cyrsync daemon (from dist/), and the daemon is killed with SIGKILL at a
 * random moment of the sync: even trials are full syncs into a fresh store,
 * odd ones incremental syncs after `mutate` on the master. After every kill:
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
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { CLI, Peer, makeRunDir, run, sleep, stopOwnProcesses, tail } from './harness.js';
import { Daemon, type DaemonKind, filesBelow } from './faults.js';
import { acknowledgedByReplica } from './stress-ack.js';
import { openSqliteReadOnly } from '../../sinks/sqlite-readonly.js';
import { dataFiles } from '../backup-sink-helpers.js';

interface Options {
  daemons: DaemonKind[];
  trials: number;
  seed: number;
  user: string;
  messages: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { daemons: ['sync-server', 'backupd'], trials: 200, seed: Date.now() % 100000, user: 'stress', messages: 30 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--daemons': o.daemons = v!.split(',') as DaemonKind[]; i++; break;
      case '--trials': o.trials = Number(v); i++; break;
      case '--seed': o.seed = Number(v); i++; break;
      case '--user': o.user = v!; i++; break;
      case '--messages': o.messages = Number(v); i++; break;
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
  syncFailed: boolean;
  acknowledged: number;
  problems: string[];
  recoveryMs: number;
}

/** Staging and temporary files of a stopped or restarted daemon. */
function leftovers(d: Daemon): string[] {
  const staging = d.kind === 'backupd' ? filesBelow(d.dirs.staging) : filesBelow(path.join(d.dirs.partition, 'blobs', 'tmp'));
  return [...staging, ...filesBelow(d.dirs.temp)];
}

/** GUIDs every backup data file's index holds. */
function backupGuids(d: Daemon): Set<string> {
  const out = new Set<string>();
  for (const f of dataFiles(d.dirs.partition)) {
    if (!fs.existsSync(`${f}.index`)) continue;
    const db = openSqliteReadOnly(`${f}.index`);
    try {
      for (const r of db.prepare('SELECT guid FROM message').all() as { guid: string }[]) out.add(r.guid);
    } finally {
      db.close();
    }
  }
  return out;
}

/** Problems with what the replica acknowledged in the recorded session. */
async function replicaLosses(d: Daemon, tapFile: string): Promise<{ count: number; problems: string[] }> {
  const ack = await acknowledgedByReplica(tapFile);
  const problems: string[] = [];
  for (const g of ack.guids) {
    const p = path.join(d.dirs.partition, 'blobs', g.slice(0, 2), g);
    if (!fs.existsSync(p)) problems.push(`acknowledged message ${g} has no file`);
  }
  const dbFile = path.join(d.dirs.configdirectory, 'replica.sqlite3');
  if (ack.mailboxes.size > 0) {
    const db = openSqliteReadOnly(dbFile);
    db.defaultSafeIntegers(true);
    try {
      const q = db.prepare('SELECT highestmodseq FROM mailbox WHERE uniqueid = ?');
      for (const [uniqueid, hms] of ack.mailboxes) {
        const row = q.get(uniqueid) as { highestmodseq: bigint } | undefined;
        if (!row) problems.push(`acknowledged mailbox ${uniqueid} is missing`);
        else if (row.highestmodseq < hms) problems.push(`mailbox ${uniqueid}: highestmodseq ${row.highestmodseq} < acknowledged ${hms}`);
      }
    } finally {
      db.close();
    }
  }
  return { count: ack.guids.size + ack.mailboxes.size, problems };
}

class Campaign {
  private d: Daemon | null = null;
  private fullMs = 0;
  private incMs = 0;
  private storeNo = 0;

  constructor(
    private readonly peer: Peer,
    private readonly kind: DaemonKind,
    private readonly work: string,
    private readonly o: Options,
    private readonly random: () => number,
  ) {}

  private async freshDaemon(): Promise<Daemon> {
    if (this.d) {
      await this.d.stop();
      await fsp.rm(this.d.dir, { recursive: true, force: true });
    }
    const dir = path.join(this.work, `${this.kind}-${++this.storeNo}`);
    await fsp.mkdir(dir, { recursive: true });
    this.d = await Daemon.start(this.kind, dir);
    return this.d;
  }

  private async timedSync(d: Daemon): Promise<number> {
    const t0 = Date.now();
    const r = await this.peer.sync(this.o.user, d.target);
    if (r.code !== 0) throw new Error(`calibration sync failed\n${tail(r.stdout + r.stderr)}\n${tail(d.log())}`);
    return Date.now() - t0;
  }

  async calibrate(): Promise<void> {
    const d = await this.freshDaemon();
    this.fullMs = await this.timedSync(d);
    await this.peer.mutate(this.o.user);
    this.incMs = await this.timedSync(d);
    console.log(`${this.kind}: a full sync takes ${this.fullMs} ms, an incremental one ${this.incMs} ms`);
  }

  private compareArgs(): string[] {
    return this.kind === 'backupd' ? ['--allow', 'APPLY QUOTA,APPLY ACTIVATE_SIEVE'] : [];
  }

  async trial(n: number): Promise<Trial> {
    const mode = n % 2 === 0 ? 'full' : 'incremental';
    const d = mode === 'full' ? await this.freshDaemon() : this.d!;
    if (mode === 'incremental') await this.peer.mutate(this.o.user);
    const before = d.kind === 'backupd' ? backupGuids(d) : new Set<string>();
    const tap = path.join(this.work, `trial-${this.kind}.tap`);
    await fsp.rm(tap, { force: true });
    const span = mode === 'full' ? this.fullMs : this.incMs;
    const killAfterMs = Math.round(this.random() * span * 1.1);
    const sync = this.peer.sync(this.o.user, d.target, { tap });
    await sleep(killAfterMs);
    await d.kill9();
    const first = await sync;
    const problems: string[] = [];
    const t0 = Date.now();
    await d.launch();
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
    const again = await this.peer.sync(this.o.user, d.target);
    const recoveryMs = Date.now() - t0;
    if (again.code !== 0) problems.push(`the recovery sync failed: ${tail(again.stdout + again.stderr, 5)}`);
    const cmp = await this.peer.cmd(['compare', this.o.user, '--to', d.target, ...this.compareArgs()]);
    if (!/^CONVERGED$/m.test(cmp.stdout)) problems.push(`not converged after one sync: ${tail(cmp.stdout + cmp.stderr, 8)}`);
    const left = leftovers(d);
    if (left.length > 0) problems.push(`left over after recovery: ${left.join(' ')}`);
    problems.push(...(await this.storeChecks(d)));
    return { daemon: this.kind, n, mode, killAfterMs, syncFailed: first.code !== 0, acknowledged, problems, recoveryMs };
  }

  private async storeChecks(d: Daemon): Promise<string[]> {
    const problems: string[] = [];
    const check = await run(process.execPath, [CLI, 'check', '-C', d.conf, '--quiet']);
    if (check.code !== 0) problems.push(`cyrsync check (exit ${check.code}): ${tail(check.stdout + check.stderr, 8)}`);
    if (d.kind === 'sync-server') {
      const ours = await run(process.execPath, [CLI, 'dump', '-C', d.conf, this.o.user]);
      if (ours.stdout !== (await this.peer.masterDump(this.o.user))) problems.push('the replica dump differs from the master');
    } else {
      // the real tools run as the cyrus user
      await run('chown', ['-R', 'cyrus:mail', d.dir]);
      const v = await this.peer.cmd(['tool', d.conf, 'ctl_backups', 'verify', '-u', this.o.user]);
      if (!new RegExp(`^verify ${this.o.user}: ok$`, 'm').test(v.stdout)) problems.push(`ctl_backups verify: ${tail(v.stdout + v.stderr, 5)}`);
    }
    return problems;
  }

  async close(): Promise<void> {
    await this.d?.stop();
  }
}

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  const peer = await Peer.create();
  const work = await makeRunDir('cyrsync-stress-');
  const trials: Trial[] = [];
  const started = Date.now();
  try {
    await peer.startMaster();
    await peer.populate(o.user, o.messages);
    console.log(`seed ${o.seed}; master ${peer.dir}; work ${work}`);
    for (const kind of o.daemons) {
      const c = new Campaign(peer, kind, work, o, rng(o.seed));
      try {
        await c.calibrate();
        for (let n = 0; n < o.trials; n++) {
          const t = await c.trial(n);
          trials.push(t);
          console.log(`${kind} #${n} ${t.mode} kill@${t.killAfterMs}ms sync ${t.syncFailed ? 'interrupted' : 'finished'}, ${t.acknowledged} acknowledged checked, recovery ${t.recoveryMs} ms: ${t.problems.length ? `FAIL ${t.problems.join('; ')}` : 'ok'}`);
        }
      } finally {
        await c.close();
      }
    }
  } finally {
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
      acknowledgedChecked: ts.reduce((s, t) => s + t.acknowledged, 0),
      failed: ts.filter((t) => t.problems.length > 0).length,
      medianRecoveryMs: ts.map((t) => t.recoveryMs).sort((a, b) => a - b)[Math.floor(ts.length / 2)] ?? 0,
    };
  });
  console.log(JSON.stringify({ seed: o.seed, minutes: Math.round((Date.now() - started) / 600) / 100, summary }));
  if (failed.length === 0) {
    await peer.remove();
    await fsp.rm(work, { recursive: true, force: true });
  } else {
    console.log(`kept for inspection: ${peer.dir} ${work}`);
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

