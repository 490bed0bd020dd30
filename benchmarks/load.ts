/**
 * `npm run bench -- load [--total 5G] [--size 20M] [--mailboxes 4] [--runs N] [--compress] [--workloads 20M,256k]`
 *
 * `cyrsync bench-client` streams a generated workload (at least 5 GB by
 * default) to cyrsync and to the real Cyrus 3.6.1 sync_server, alternating,
 * each run against a fresh, empty target; the target's data is deleted right
 * after each run, so the disk never holds more than one run. Per run: the
 * client's wall time (spawn to exit), MB/s of message octets, the server's
 * peak RSS and CPU over its process tree (peer_rss.py), bytes on disk.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ADMIN, ADMIN_PASSWORD } from '../test/interop/harness.js';
import {
  CLI,
  PEER_REPLICA_DIRS,
  PORTS,
  RESULTS_DIR,
  TreeWatch,
  diskBytes,
  eachOption,
  ensureBuilt,
  ensureSetup,
  log,
  machine,
  onFreshCyrsync,
  peer,
  peerReplicaPid,
  type TreeSample,
} from './lib/common.js';
import { appendSample, compare, goalLines, refreshReport, table, writeResult, type Sample, type ServerName } from './report.js';

interface Workload {
  size: string;
  total: string;
  mailboxes: number;
}

interface Options {
  runs: number;
  compress: boolean;
  workloads: Workload[];
}

function parseArgs(args: string[]): Options {
  let runs = 1;
  let compress = false;
  let total = '5G';
  let sizes = ['20M'];
  let mailboxes = 4;
  eachOption(args, (a, val) => {
    if (a === '--runs') runs = Number(val());
    else if (a === '--compress') compress = true;
    else if (a === '--total') total = val();
    else if (a === '--size' || a === '--workloads') sizes = val().split(',');
    else if (a === '--mailboxes') mailboxes = Number(val());
    else throw new Error(`load: unknown option ${a} (--total 5G, --size 20M[,256k], --mailboxes N, --runs N, --compress)`);
  });
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs wants a positive integer');
  return { runs, compress, workloads: sizes.map((size) => ({ size, total, mailboxes })) };
}

interface ClientRun {
  wallSeconds: number;
  clientCpuSeconds: number;
  summary: { messages: number; messageBytes: number; seconds: number; mbPerSecond: number; clientPeakRssKiB: number };
}

/** One bench-client process under GNU time; throws with its output when it fails. */
async function benchClient(target: string, w: Workload, compress: boolean): Promise<ClientRun> {
  const tfile = path.join(os.tmpdir(), `cyrsync-bench-load-time-${process.pid}-${Date.now()}`);
  const args = ['-f', '%e %U %S', '-o', tfile, process.execPath, CLI, 'bench-client', '--connect', target, '--json'];
  args.push('--size', w.size, '--total', w.total, '--mailboxes', String(w.mailboxes), '--authname', ADMIN);
  if (compress) args.push('--compress');
  const child = spawn('/usr/bin/time', args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, CYRSYNC_BENCH_PASSWORD: ADMIN_PASSWORD },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  const tm = (await fsp.readFile(tfile, 'utf8').catch(() => '')).trim().split('\n').pop() ?? '';
  await fsp.rm(tfile, { force: true });
  if (code !== 0) throw new Error(`bench-client to ${target} exited ${code}\n${err.slice(-3000)}${out.slice(-1000)}`);
  const [e, u, s] = tm.split(/\s+/).map(Number);
  const line = out.trim().split('\n').pop() ?? '';
  return { wallSeconds: e!, clientCpuSeconds: u! + s!, summary: JSON.parse(line) as ClientRun['summary'] };
}

function toSample(w: Workload, compress: boolean, server: ServerName, run: number, c: ClientRun, srv: { peakRssKiB: number; cpuSeconds: number }, disk: number): Sample {
  return {
    suite: 'load',
    dataset: `${w.total}/${w.size}`,
    compress,
    server,
    run,
    bytes: c.summary.messageBytes,
    wallSeconds: c.wallSeconds,
    mbPerSecond: c.summary.messageBytes / 1e6 / c.wallSeconds,
    peakRssKiB: srv.peakRssKiB,
    cpuSeconds: srv.cpuSeconds,
    diskBytes: disk,
    clientCpuSeconds: c.clientCpuSeconds,
  };
}

/** One bench-client run against the server at `target`, its process tree (from `pid`) watched. */
async function measured(pid: number, target: string, w: Workload, compress: boolean): Promise<[ClientRun, TreeSample]> {
  const watch = await TreeWatch.start(pid);
  const c = await benchClient(target, w, compress);
  await new Promise((r) => setTimeout(r, 500));
  return [c, await watch.stop()];
}

async function runCyrus(w: Workload, compress: boolean, run: number): Promise<Sample> {
  await peer(['reset', 'replica']);
  await peer(['replica', 'start']);
  try {
    const [c, srv] = await measured(await peerReplicaPid(), `127.0.0.1:${PORTS.replica}`, w, compress);
    return toSample(w, compress, 'cyrus', run, c, srv, await diskBytes(PEER_REPLICA_DIRS));
  } finally {
    await peer(['reset', 'replica']);
  }
}

async function runCyrsync(w: Workload, compress: boolean, run: number): Promise<Sample> {
  const { result, disk } = await onFreshCyrsync((s) => measured(s.pid!, s.target, w, compress));
  return toSample(w, compress, 'cyrsync', run, ...result, disk);
}

export async function run(args: string[]): Promise<void> {
  const o = parseArgs(args);
  const t0 = performance.now();
  await ensureBuilt();
  await ensureSetup();
  const free = fs.statfsSync('/tmp');
  const freeGB = (free.bavail * free.bsize) / 1e9;
  log(`free space on /tmp: ${freeGB.toFixed(1)} GB`);
  const m = machine();
  const stream = path.join(RESULTS_DIR, `load-${m.date.replace(/[:.]/g, '-')}.jsonl`);
  const samples: Sample[] = [];
  for (const w of o.workloads) {
    for (let i = 1; i <= o.runs; i++) {
      const order: ServerName[] = i % 2 ? ['cyrus', 'cyrsync'] : ['cyrsync', 'cyrus'];
      for (const server of order) {
        const s = server === 'cyrus' ? await runCyrus(w, o.compress, i) : await runCyrsync(w, o.compress, i);
        samples.push(s);
        appendSample(stream, s);
        log(
          `load ${s.dataset} run ${i} ${server}: ${(s.bytes / 1e9).toFixed(2)} GB in ${s.wallSeconds.toFixed(1)} s, ${s.mbPerSecond.toFixed(1)} MB/s, ` +
            `peak RSS ${(s.peakRssKiB / 1024).toFixed(1)} MiB, CPU ${s.cpuSeconds.toFixed(1)} s, disk ${(s.diskBytes / 1e9).toFixed(2)} GB`,
        );
      }
    }
  }
  const comparisons = compare(samples);
  const totalSeconds = (performance.now() - t0) / 1000;
  const file = writeResult({ suite: 'load', machine: m, options: { ...o }, totalSeconds, comparisons, samples });
  refreshReport();
  console.log(table(comparisons));
  console.log(goalLines(comparisons).join('\n'));
  console.log(`\nload: ${samples.length} runs in ${totalSeconds.toFixed(0)} s; results ${path.relative(process.cwd(), file)}`);
}
