/**
 * `npm run bench -- coldstart [--runs N]`
 *
 * Time from spawning `cyrsync sync-server` to its greeting (the `* OK` line
 * that ends the capability banner): on stdin/stdout (inetd mode), and as a
 * listener (`--listen`, polled with a connect every 2 ms until the banner
 * arrives). Each run is a new process on a new, empty configuration; the goal
 * is 150 ms. `node -e 0` (spawn to exit) is measured alongside as the floor
 * any Node program pays on the same machine at the same moment.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { freePort, makeRunDir } from '../test/interop/harness.js';
import { CLI, ensureBuilt, log, machine, median } from './lib/common.js';
import { coldTable, writeResult, type ColdStart } from './report.js';

const GREETING = /^\* OK[^\n]*\n/m;

async function freshConf(): Promise<{ dir: string; conf: string }> {
  const dir = await makeRunDir('cyrsync-bench-cold-');
  for (const d of ['conf', 'spool', 'tmp']) await fsp.mkdir(path.join(dir, d));
  const conf = path.join(dir, 'imapd.conf');
  await fsp.writeFile(
    conf,
    [
      `configdirectory: ${path.join(dir, 'conf')}`,
      'defaultpartition: default',
      `partition-default: ${path.join(dir, 'spool')}`,
      `temp_path: ${path.join(dir, 'tmp')}`,
      'servername: cyrsync-bench',
      'admins: admin',
      'allowplaintext: yes',
    ].join('\n') + '\n',
  );
  return { dir, conf };
}

/** ms from spawn to the greeting on stdout, one session on stdin/stdout. */
async function stdioOnce(conf: string): Promise<number> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [CLI, 'sync-server', '-C', conf], { stdio: ['pipe', 'pipe', 'ignore'] });
  let text = '';
  const ms = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => {
      text += b.toString('latin1');
      if (GREETING.test(text)) resolve(performance.now() - t0);
    });
    child.once('exit', (code) => reject(new Error(`sync-server exited ${code} before its greeting: ${JSON.stringify(text)}`)));
  });
  const gone = once(child, 'exit');
  child.stdin.end('LOGOUT\r\n');
  child.kill('SIGTERM');
  await gone;
  return ms;
}

/** ms from spawn to exit of `node -e 0`: what any Node program pays before its first line runs. */
async function nodeBaselineOnce(): Promise<number> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await once(child, 'exit');
  return performance.now() - t0;
}

function greetingOn(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let text = '';
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.on('data', (b: Buffer) => {
      text += b.toString('latin1');
      if (GREETING.test(text)) done(true);
    });
    s.once('error', () => done(false));
    s.once('close', () => done(GREETING.test(text)));
  });
}

/** ms from spawn to the first greeting a client connecting to the listener reads. */
async function listenOnce(conf: string): Promise<number> {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(process.execPath, [CLI, 'sync-server', '-C', conf, '--listen', `127.0.0.1:${port}`], { stdio: 'ignore' });
  let exited = false;
  child.once('exit', () => (exited = true));
  try {
    for (;;) {
      if (await greetingOn(port)) return performance.now() - t0;
      if (exited) throw new Error('sync-server --listen exited before it greeted');
      if (performance.now() - t0 > 30_000) throw new Error('sync-server --listen did not greet within 30 s');
      await new Promise((r) => setTimeout(r, 2));
    }
  } finally {
    const gone = new Promise((r) => child.once('exit', r));
    if (!exited) {
      child.kill('SIGTERM');
      await gone;
    }
  }
}

function summary(mode: string, xs: number[]): ColdStart {
  return { mode, runs: xs.length, medianMs: median(xs), minMs: Math.min(...xs), maxMs: Math.max(...xs) };
}

export async function measureColdStart(runs: number): Promise<ColdStart[]> {
  await ensureBuilt();
  const stdio: number[] = [];
  const listen: number[] = [];
  const baseline: number[] = [];
  // one untimed start of each, so the first timed run does not pay for a cold page cache
  for (let i = 0; i <= runs; i++) {
    for (const mode of ['stdio', 'listen'] as const) {
      const { dir, conf } = await freshConf();
      try {
        const ms = mode === 'stdio' ? await stdioOnce(conf) : await listenOnce(conf);
        if (i > 0) (mode === 'stdio' ? stdio : listen).push(ms);
      } finally {
        await fsp.rm(dir, { recursive: true, force: true, maxRetries: 5 });
      }
    }
    const ms = await nodeBaselineOnce();
    if (i > 0) baseline.push(ms);
  }
  return [summary('stdin/stdout', stdio), summary('--listen', listen), summary('node -e 0 (spawn to exit, reference)', baseline)];
}

export async function run(args: string[]): Promise<void> {
  const i = args.indexOf('--runs');
  const runs = i >= 0 ? Number(args[i + 1]) : 10;
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs wants a positive integer');
  const t0 = performance.now();
  const coldStart = await measureColdStart(runs);
  const file = writeResult({ suite: 'coldstart', machine: machine(), options: { runs }, totalSeconds: (performance.now() - t0) / 1000, comparisons: [], coldStart, samples: [] });
  console.log(coldTable(coldStart));
  log(`results ${path.relative(process.cwd(), file)} (goal: 150 ms)`);
}
