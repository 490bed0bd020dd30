/**
 * Fault-injection helpers for the interop suite and `npm run stress`: either
 * cyrsync daemon (`sync-server` or `backupd`, from dist/) on a configuration
 * whose directories the caller places (e.g. on a small tmpfs), and the file
 * system faults themselves (a tmpfs of a given size, filled up to a given
 * free space).
 *
 * Invariants: every daemon runs in its own process group and is stopped by
 * its pid; every tmpfs mounted here is unmounted by the function returned
 * with it.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ADMIN, ADMIN_PASSWORD, CLI, ServerProcess, describe, freePort, run, tail } from './harness.js';

export type DaemonKind = 'sync-server' | 'backupd';

/** Where a daemon keeps its files; unset ones go below its run directory. */
export interface DaemonDirs {
  configdirectory?: string;
  partition?: string;
  /** backupd: backup_staging_path (the replica stages inside its partition) */
  staging?: string;
  temp?: string;
}

/** One cyrsync daemon (`cyrsync sync-server|backupd -C conf --listen`). */
export class Daemon extends ServerProcess {
  readonly conf: string;
  readonly dirs: Required<DaemonDirs>;

  private constructor(
    readonly kind: DaemonKind,
    readonly dir: string,
    port: number,
    dirs: DaemonDirs,
  ) {
    super(path.join(dir, 'server.log'), port);
    this.conf = path.join(dir, 'imapd.conf');
    this.dirs = {
      configdirectory: dirs.configdirectory ?? path.join(dir, 'conf'),
      partition: dirs.partition ?? path.join(dir, kind === 'backupd' ? 'backups' : 'spool'),
      staging: dirs.staging ?? path.join(dir, 'staging'),
      temp: dirs.temp ?? path.join(dir, 'tmp'),
    };
  }

  /** Writes the configuration, sets admin's password and starts listening. */
  static async start(kind: DaemonKind, dir: string, dirs: DaemonDirs = {}, extraConf: string[] = []): Promise<Daemon> {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    const d = new Daemon(kind, dir, await freePort(), dirs);
    for (const p of Object.values(d.dirs)) await fsp.mkdir(p, { recursive: true });
    const lines = [
      `configdirectory: ${d.dirs.configdirectory}`,
      kind === 'backupd' ? `backuppartition-default: ${d.dirs.partition}` : `partition-default: ${d.dirs.partition}`,
      `temp_path: ${d.dirs.temp}`,
      `servername: cyrsync-faults`,
      `admins: ${ADMIN}`,
      'allowplaintext: yes',
      // the password file stays out of a configdirectory that a test fills up
      `cyrsync_passwd_file: ${path.join(dir, 'passwd')}`,
      ...(kind === 'backupd' ? [`backup_staging_path: ${d.dirs.staging}`] : []),
      ...extraConf,
    ];
    await fsp.writeFile(d.conf, lines.join('\n') + '\n');
    const pw = await run(process.execPath, [CLI, 'passwd', '-C', d.conf, ADMIN], { input: `${ADMIN_PASSWORD}\n` });
    if (pw.code !== 0) throw new Error(`cyrsync passwd failed\n${describe(pw)}`);
    await d.launch();
    return d;
  }

  async launch(): Promise<void> {
    if (!(await this.spawnListening(process.execPath, [CLI, this.kind, '-C', this.conf, '--listen', this.target], 30_000, 50))) {
      throw new Error(`cyrsync ${this.kind} did not start on ${this.target}\n${tail(this.log(), 30)}`);
    }
  }

  /** SIGTERM (BYE at the next command boundary); SIGKILL after 20 s. Resolves with the exit code. */
  stop(): Promise<number | null> {
    return this.terminate(20_000);
  }
}

// ------------------------------------------------------------------- tmpfs

export const isRoot = (): boolean => process.getuid?.() === 0;

/** Mounts a tmpfs of `bytes` on `dir` (created); returns the unmount. Needs root. */
export async function mountTmpfs(dir: string, bytes: number): Promise<() => Promise<void>> {
  await fsp.mkdir(dir, { recursive: true });
  const r = await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0755`, 'tmpfs', dir]);
  if (r.code !== 0) throw new Error(`mount tmpfs on ${dir} failed\n${describe(r)}`);
  return async () => {
    const u = await run('umount', ['-l', dir]);
    if (u.code !== 0) throw new Error(`umount ${dir} failed\n${describe(u)}`);
  };
}

/** Free octets of the file system holding `dir`. */
export function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

const FILLER = '.filler';

/** Fills the file system of `dir` until at most `leave` octets are free (a file `.filler` in `dir`). */
export function fillUp(dir: string, leave: number): void {
  const fd = fs.openSync(path.join(dir, FILLER), 'a');
  try {
    const chunk = Buffer.alloc(64 * 1024, 0x5a);
    for (;;) {
      const free = freeBytes(dir);
      if (free <= leave) return;
      const n = Math.min(chunk.length, free - leave);
      try {
        fs.writeSync(fd, chunk, 0, n);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') return;
        throw err;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Frees what fillUp took. */
export function freeUp(dir: string): void {
  fs.rmSync(path.join(dir, FILLER), { force: true });
}

/** Every regular file below `dir` (relative paths), except fillUp's. */
export function filesBelow(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    let names: fs.Dirent[];
    try {
      names = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of names) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(d, e.name), r);
      else if (e.name !== FILLER) out.push(r);
    }
  };
  walk(dir, '');
  return out.sort();
}
