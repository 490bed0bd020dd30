/**
 * Processes and ports for the interop suite: commands run to completion in
 * their own process groups (run, stopOwnProcesses), free ports, polling, and
 * ServerProcess, what every long-running server the suite starts (cyrsync's
 * daemons in their several set-ups) shares.
 *
 * Invariant: only processes started here are stopped, by their process
 * group, never by name.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const INTEROP_DIR = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(INTEROP_DIR, '..', '..');

// ------------------------------------------------------------------ processes

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout then stderr, for messages and assertions on "what it printed". */
  output: string;
  /** The command line, for failure messages. */
  command: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  cwd?: string;
  /** The whole process group is killed after this long (default 5 min). */
  timeoutMs?: number;
}

/** Process groups of commands still running, killed by stopOwnProcesses(). */
const running = new Set<ChildProcess>();

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

/**
 * Runs a command to completion in its own process group and collects its
 * output. Never rejects for a non-zero exit: callers assert on `code`.
 */
export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const child = spawn(cmd, args, {
    cwd: opts.cwd ?? REPO_ROOT,
    env: opts.env ?? process.env,
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  running.add(child);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  child.stdin!.on('error', () => {});
  child.stdin!.end(opts.input ?? '');
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), opts.timeoutMs ?? 5 * 60_000);
  try {
    const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
    const stdout = Buffer.concat(out).toString('utf8');
    const stderr = Buffer.concat(err).toString('utf8');
    return {
      code,
      signal,
      stdout,
      stderr,
      output: stdout + (stderr ? `\n${stderr}` : ''),
      command: [cmd, ...args].join(' '),
    };
  } finally {
    clearTimeout(timer);
    running.delete(child);
  }
}

/** Kills what run() started and has not finished (a test that timed out). */
export function stopOwnProcesses(): void {
  for (const child of running) killGroup(child, 'SIGKILL');
}

/** The last lines of a text, for failure messages that stay readable. */
export function tail(text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n');
}

export function describe(r: RunResult): string {
  return `$ ${r.command}\nexit=${r.code}${r.signal ? ` signal=${r.signal}` : ''}\n${tail(r.output, 60)}`;
}

// ---------------------------------------------------------------------- ports

/** A TCP port free on 127.0.0.1 right now (the kernel's pick). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  srv.close();
  await once(srv, 'close');
  return port;
}

/** `n` different ports free right now. */
export async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

export function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it holds or `ms` pass; returns its last value. */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, stepMs = 200): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= end) return false;
    await sleep(stepMs);
  }
}

// ------------------------------------------------------------------ servers

/**
 * A server in a process group of its own, its output appended to `logFile`,
 * listening on 127.0.0.1:`port` once started.
 */
export class ServerProcess {
  protected child: ChildProcess | undefined;
  protected exited: Promise<void> | undefined;

  constructor(
    readonly logFile: string,
    readonly port: number,
  ) {}

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The whole log so far ('' before the first start). */
  log(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** Sends `sig` to the server's process group (nothing once it is gone). */
  signal(sig: NodeJS.Signals): void {
    if (this.child !== undefined && this.running) killGroup(this.child, sig);
  }

  /** SIGKILL, no goodbye; resolves once the process is gone. */
  async kill9(): Promise<void> {
    this.signal('SIGKILL');
    await this.exited;
  }

  /** SIGTERM, then SIGKILL when it is still there after `graceMs`. Resolves with the exit code. */
  protected async terminate(graceMs: number): Promise<number | null> {
    if (!this.child || !this.running) return this.child?.exitCode ?? null;
    this.signal('SIGTERM');
    const done = await Promise.race([this.exited!.then(() => true), sleep(graceMs).then(() => false)]);
    if (!done) await this.kill9();
    return this.child.exitCode;
  }

  /**
   * Starts `cmd args` detached from the repository's root, its output to
   * the log, and waits up to `waitMs` for the port to open. False when it
   * exited first or the port stayed closed.
   */
  protected async spawnListening(cmd: string, args: readonly string[], waitMs: number, stepMs: number): Promise<boolean> {
    const log = fs.openSync(this.logFile, 'a');
    const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ['ignore', log, log], detached: true });
    fs.closeSync(log);
    this.child = child;
    this.exited = once(child, 'exit').then(() => undefined);
    const up = await waitFor(async () => !this.running || (await portOpen(this.port)), waitMs, stepMs);
    return up && this.running;
  }
}
