/**
 * `npm run bench -- e2e [--runs N] [--quick] [--datasets 4k,20M,1G] [--modes deflate,plain] [--budget MINUTES]`
 *
 * The real Cyrus 3.6.1 sync_client on the real master pushes one user, full
 * (`sync_client -u USER`), to the real sync_server and to cyrsync, alternating
 * run by run, each run against a fresh, empty target. Per run: sync_client's
 * wall time (GNU time), the server's peak RSS and CPU over its process tree
 * (peer_rss.py), bytes on disk of the target afterwards.
 *
 * "deflate" is sync_client's default against a server offering COMPRESS
 * DEFLATE (both do); "plain" puts cyrus-peer's relay in front of the server to
 * hide that offer, for both servers alike.
 *
 * Runs go in rounds (every data set and mode once per round); a round is
 * started only when it is expected to end within --budget (default 27 min,
 * populating a fresh master included), so the suite stays under 30 min.
 */
import path from 'node:path';
import {
  PEER_REPLICA_DIRS,
  RESULTS_DIR,
  diskBytes,
  eachOption,
  ensureBuilt,
  ensureDataset,
  ensureMaster,
  log,
  machine,
  onFreshCyrsync,
  parseClientLine,
  parseTreeLine,
  peer,
  peerReplicaPid,
  type Dataset,
  type PopulatedDataset,
} from './lib/common.js';
import { appendSample, compare, goalLines, refreshReport, table, writeResult, type Sample, type ServerName } from './report.js';

export const DATASETS: Dataset[] = [
  { name: '10000x4k', user: 'small4k', count: 10_000, size: '4k' },
  { name: '20x20M', user: 'mid20m', count: 20, size: '20M' },
  { name: '1x1G', user: 'big1g', count: 1, size: '1G' },
];

interface Options {
  runs: number;
  budgetSeconds: number;
  datasets: Dataset[];
  modes: boolean[];
}

function parseArgs(args: string[]): Options {
  let runs = 3;
  let budgetSeconds = 27 * 60;
  let datasets = DATASETS;
  let modes = [true, false];
  eachOption(args, (a, val) => {
    if (a === '--runs') runs = Number(val());
    else if (a === '--quick') runs = 1;
    else if (a === '--budget') budgetSeconds = Number(val()) * 60;
    else if (a === '--datasets') {
      const want = val().split(',');
      datasets = DATASETS.filter((d) => want.includes(d.name) || want.includes(d.size));
      if (datasets.length !== want.length) throw new Error(`--datasets: known are ${DATASETS.map((d) => d.size).join(', ')}`);
    } else if (a === '--modes') modes = val().split(',').map((m) => m === 'deflate');
    else throw new Error(`e2e: unknown option ${a} (--runs N, --quick, --datasets 4k,20M,1G, --modes deflate,plain, --budget MINUTES)`);
  });
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs wants a positive integer');
  return { runs, budgetSeconds, datasets, modes };
}

function benchArgs(user: string, target: string, serverPid: number, compress: boolean): string[] {
  return ['bench', user, '--to', target, '--server-pid', String(serverPid), ...(compress ? [] : ['--no-compress'])];
}

function sampleFrom(
  output: string,
  d: PopulatedDataset,
  server: ServerName,
  compress: boolean,
  run: number,
  disk: number,
): Sample {
  const client = parseClientLine(output);
  if (client.exit !== 0) throw new Error(`sync_client to ${server} exited ${client.exit}\n${output.split('\n').slice(-30).join('\n')}`);
  const srvLine = /^server side .*$/m.exec(output)?.[0] ?? '';
  const srv = parseTreeLine(srvLine);
  return {
    suite: 'e2e',
    dataset: d.name,
    compress,
    server,
    run,
    bytes: d.bytes,
    wallSeconds: client.wallSeconds,
    mbPerSecond: d.bytes / 1e6 / client.wallSeconds,
    peakRssKiB: srv.peakRssKiB,
    cpuSeconds: srv.cpuSeconds,
    diskBytes: disk,
    clientCpuSeconds: client.clientCpuSeconds,
  };
}

const datasetRank = (s: Sample): number => DATASETS.findIndex((d) => d.name === s.dataset) * 2 + (s.compress ? 0 : 1);

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 500));

async function runCyrus(d: PopulatedDataset, compress: boolean, run: number): Promise<Sample> {
  await peer(['reset', 'replica']);
  await peer(['replica', 'start']);
  const pid = await peerReplicaPid();
  await settle();
  const r = await peer(benchArgs(d.user, 'replica', pid, compress));
  const disk = await diskBytes(PEER_REPLICA_DIRS);
  await peer(['replica', 'stop']);
  return sampleFrom(r.output, d, 'cyrus', compress, run, disk);
}

async function runCyrsync(d: PopulatedDataset, compress: boolean, run: number): Promise<Sample> {
  const { result: r, disk } = await onFreshCyrsync(async (c) => {
    await settle();
    return peer(benchArgs(d.user, c.target, c.pid!, compress));
  });
  return sampleFrom(r.output, d, 'cyrsync', compress, run, disk);
}

export async function run(args: string[]): Promise<void> {
  const o = parseArgs(args);
  const t0 = performance.now();
  await ensureBuilt();
  await ensureMaster();
  const populated: PopulatedDataset[] = [];
  for (const d of o.datasets) populated.push(await ensureDataset(d));
  const m = machine();
  const stream = path.join(RESULTS_DIR, `e2e-${m.date.replace(/[:.]/g, '-')}.jsonl`);
  const samples: Sample[] = [];
  // Rounds: each round is one run of every (data set, mode) on both servers.
  // A round starts only while the projected end stays within the budget, so
  // the suite ends in time on a slow or busy machine with fewer runs, never
  // with a half-measured data set.
  const roundTimes: number[] = [];
  let rounds = 0;
  for (let i = 1; i <= o.runs; i++) {
    const elapsed = (performance.now() - t0) / 1000;
    const perRound = roundTimes.length ? Math.max(...roundTimes) : 0;
    if (i > 1 && elapsed + perRound > o.budgetSeconds) {
      log(`stopping after ${rounds} of ${o.runs} rounds: another would end past the ${(o.budgetSeconds / 60).toFixed(0)} min budget (--budget)`);
      break;
    }
    const r0 = performance.now();
    for (const d of populated) {
      for (const compress of o.modes) {
        // alternate which server goes first, so neither always meets a warm page cache
        const order: ServerName[] = i % 2 ? ['cyrus', 'cyrsync'] : ['cyrsync', 'cyrus'];
        for (const server of order) {
          const s = server === 'cyrus' ? await runCyrus(d, compress, i) : await runCyrsync(d, compress, i);
          samples.push(s);
          appendSample(stream, s);
          log(
            `${d.name} ${compress ? 'deflate' : 'plain'} run ${i} ${server}: wall ${s.wallSeconds.toFixed(2)} s, ` +
              `${s.mbPerSecond.toFixed(1)} MB/s, peak RSS ${(s.peakRssKiB / 1024).toFixed(1)} MiB, CPU ${s.cpuSeconds.toFixed(2)} s, ` +
              `disk ${(s.diskBytes / 1e6).toFixed(1)} MB`,
          );
        }
      }
    }
    roundTimes.push((performance.now() - r0) / 1000);
    rounds = i;
  }
  // samples of data sets compared in input order, not round order
  samples.sort((a, b) => datasetRank(a) - datasetRank(b));
  const comparisons = compare(samples);
  const totalSeconds = (performance.now() - t0) / 1000;
  const options = { runs: o.runs, roundsDone: rounds, budgetMinutes: o.budgetSeconds / 60, modes: o.modes.map((c) => (c ? 'deflate' : 'plain')), datasets: o.datasets.map((d) => d.name) };
  const file = writeResult({ suite: 'e2e', machine: m, options, totalSeconds, comparisons, samples });
  refreshReport();
  console.log(table(comparisons));
  console.log(goalLines(comparisons).join('\n'));
  console.log(`\ne2e: ${samples.length} runs in ${totalSeconds.toFixed(0)} s; results ${path.relative(process.cwd(), file)}; per-run lines ${path.relative(process.cwd(), stream)}`);
}
