/**
 * `npm run bench -- budget [--sessions 50] [--messages 200] [--size 4k] [--budget MIB]`
 *
 * One standalone cyrsync sync-server (its own configuration, the memory
 * budget `cyrsync_memory_budget`) takes, in this order and without restart:
 *  1. the hostile-input catalogue: 10-MB command lines, a 100,000-GUID
 *     APPLY RESERVE whose `* MISSING` reply names them all, repeated logins,
 *     each from several connections at once;
 *  2. N concurrent sessions (`runBench` of cyrsync bench-client, one user
 *     each) of M messages of S octets.
 * Reported: the server's peak RSS (VmHWM) of each phase (reset between
 * them through /proc/PID/clear_refs) next to the budget, sessions that failed, wall time, and the load average.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import * as net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setPasswordSync } from '../src/server/auth/index.js';
import { runBench, parseSize } from '../src/client/bench-client.js';
import { CLI, RESULTS_DIR, eachOption, ensureBuilt, log, machine } from './lib/common.js';

interface Options {
  sessions: number;
  messages: number;
  size: number;
  budgetMiB: number;
}

function parseArgs(args: string[]): Options {
  const o: Options = { sessions: 50, messages: 200, size: 4096, budgetMiB: 96 };
  eachOption(args, (a, val) => {
    if (a === '--sessions') o.sessions = Number(val());
    else if (a === '--messages') o.messages = Number(val());
    else if (a === '--size') o.size = parseSize(val());
    else if (a === '--budget') o.budgetMiB = Number(val());
    else throw new Error(`unknown option ${a}`);
  });
  return o;
}

const PASSWORD = 'bench-budget-pw';

interface Server {
  child: ChildProcess;
  port: number;
  dir: string;
}

async function startServer(budgetMiB: number): Promise<Server> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cyrsync-bench-budget-'));
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(
    conf,
    [`configdirectory: ${dir}/conf`, `partition-default: ${dir}/spool`, `temp_path: ${dir}/tmp`, 'admins: admin', 'allowplaintext: yes', 'failedloginpause: 0', `cyrsync_memory_budget: ${budgetMiB}`, ''].join('\n'),
  );
  fs.mkdirSync(path.join(dir, 'conf'), { recursive: true });
  setPasswordSync(path.join(dir, 'conf', 'cyrsync.passwd'), 'admin', PASSWORD);
  const child = spawn(process.execPath, [CLI, 'sync-server', '-C', conf, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"port":(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`server exited (${code}) before listening:\n${out}`)));
  });
  child.stdout!.resume();
  return { child, port, dir };
}

/** VmHWM (peak resident set) and VmRSS of a process, MiB. */
function memory(pid: number): { hwm: number; rss: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { hwm: kib('VmHWM') / 1024, rss: kib('VmRSS') / 1024 };
}

function resetPeak(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** A raw csync connection: send lines, read replies up to the tagged status line. */
async function raw(port: number, script: (send: (s: string) => void, reply: () => Promise<string>) => Promise<void>): Promise<void> {
  const sock = net.connect(port, '127.0.0.1');
  await once(sock, 'connect');
  let buf = '';
  let wake: (() => void) | null = null;
  let closed = false;
  sock.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    // Keep only what a reply check needs: the last lines.
    if (buf.length > 1 << 20) buf = buf.slice(buf.length - 4096);
    wake?.();
  });
  sock.on('close', () => {
    closed = true;
    wake?.();
  });
  sock.on('error', () => undefined);
  const reply = async (status = /(?:^|\n)((?:OK|NO|BAD)[^\r\n]*)\r?\n/): Promise<string> => {
    for (;;) {
      const m = status.exec(buf);
      if (m) {
        buf = buf.slice(m.index + m[0].length);
        return m[1]!;
      }
      if (closed) return 'closed';
      await new Promise<void>((r) => (wake = r));
    }
  };
  const send = (s: string): void => void sock.write(s);
  await reply(/(?:^|\n)(\* OK[^\r\n]*)\r?\n/); // greeting
  send(`AUTHENTICATE PLAIN ${Buffer.from(`\0admin\0${PASSWORD}`).toString('base64')}\r\n`);
  await reply();
  try {
    await script(send, reply);
  } finally {
    sock.destroy();
  }
}

function guids(n: number, salt: string): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(createHash('sha1').update(`${salt}-${i}`).digest('hex'));
  return out.join(' ');
}

async function hostile(port: number): Promise<string[]> {
  const results: string[] = [];
  const reserve = (n: number, salt: string): string => `APPLY RESERVE %(PARTITION default MBOXNAME (user.hostile) GUID (${guids(n, salt)}))\r\n`;
  // 100,000 GUIDs the replica does not hold: the * MISSING reply names every one.
  const big = reserve(100_000, 'missing');
  await Promise.all(Array.from({ length: 5 }, () => raw(port, async (send, reply) => {
    send(big);
    results.push(`reserve 100000: ${await reply()}`);
  })));
  // 10-MB lines (250,000 GUIDs).
  const huge = reserve(250_000, 'huge');
  await Promise.all(Array.from({ length: 5 }, () => raw(port, async (send, reply) => {
    send(huge);
    results.push(`10 MB line: ${await reply()}`);
  })));
  // Repeated logins, 10 connections at a time.
  for (let round = 0; round < 10; round++) {
    await Promise.all(Array.from({ length: 10 }, () => raw(port, async (send, reply) => {
      send('NOOP\r\n');
      results.push(`login: ${await reply()}`);
    })));
  }
  return results;
}

export async function run(args: string[]): Promise<void> {
  const o = parseArgs(args);
  await ensureBuilt();
  const started = Date.now();
  const server = await startServer(o.budgetMiB);
  const pid = server.child.pid!;
  try {
    const idle = memory(pid);
    log(`server pid ${pid} on port ${server.port}, budget ${o.budgetMiB} MiB, idle RSS ${idle.rss.toFixed(1)} MiB; load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    const hostileResults = await hostile(server.port);
    const afterHostile = memory(pid);
    const tally = new Map<string, number>();
    for (const r of hostileResults) tally.set(r.replace(/ \(.*$/, ''), (tally.get(r.replace(/ \(.*$/, '')) ?? 0) + 1);
    log(`hostile inputs: ${[...tally].map(([k, n]) => `${n} × ${k}`).join('; ')}`);
    log(`after hostile inputs: peak RSS ${afterHostile.hwm.toFixed(1)} MiB, RSS ${afterHostile.rss.toFixed(1)} MiB`);
    // Linux: writing 5 to clear_refs resets VmHWM, so the next phase reports its own peak.
    const phasePeak = resetPeak(pid);
    const t0 = Date.now();
    const outcomes = await Promise.allSettled(
      Array.from({ length: o.sessions }, (_, i) =>
        runBench({
          host: '127.0.0.1',
          port: server.port,
          authname: 'admin',
          password: PASSWORD,
          compress: false,
          workload: { users: 1, mailboxesPerUser: 1, messages: o.messages, size: o.size, seed: i + 1, userPrefix: `load${i}-`, partition: 'default' },
          batchFiles: 1024,
          batchBytes: 8 * 1024 * 1024,
        }),
      ),
    );
    const failed = outcomes.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    const loadSeconds = (Date.now() - t0) / 1000;
    const end = memory(pid);
    const loadAvg = os.loadavg();
    for (const f of failed.slice(0, 5)) log(`session failed: ${String((f.reason as Error)?.message ?? f.reason)}`);
    const result = {
      machine: machine(),
      loadAvg,
      options: o,
      idleRssMiB: idle.rss,
      hostile: Object.fromEntries(tally),
      peakAfterHostileMiB: afterHostile.hwm,
      peakMiB: end.hwm,
      peakIsPhaseOnly: phasePeak,
      sessions: o.sessions,
      sessionsFailed: failed.length,
      loadSeconds,
      totalSeconds: (Date.now() - started) / 1000,
      withinBudget: end.hwm <= o.budgetMiB,
    };
    console.log(
      [
        '| phase | server peak RSS MiB | budget MiB | sessions failed | seconds | load avg (1/5/15 min) |',
        '| --- | ---: | ---: | ---: | ---: | --- |',
        `| hostile inputs | ${afterHostile.hwm.toFixed(1)} | ${o.budgetMiB} | - | - | |`,
        `| then ${o.sessions} sessions × ${o.messages} × ${o.size} B | ${end.hwm.toFixed(1)} | ${o.budgetMiB} | ${failed.length} | ${loadSeconds.toFixed(1)} | ${loadAvg.map((l) => l.toFixed(1)).join(' / ')} |`,
      ].join('\n'),
    );
    fs.mkdirSync(RESULTS_DIR, { recursive: true });
    fs.writeFileSync(path.join(RESULTS_DIR, 'budget-latest.json'), JSON.stringify(result, null, 2) + '\n');
    if (failed.length > 0) process.exitCode = 1;
  } finally {
    server.child.kill('SIGTERM');
    await once(server.child, 'exit').catch(() => undefined);
    fs.rmSync(server.dir, { recursive: true, force: true });
  }
}
