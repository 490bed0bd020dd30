/**
 * What the huge-message tests share: a deterministic message body of any
 * size, streamed in 64 KiB pieces and never held whole; a backup data file
 * holding one such message; and a child node process whose peak RSS
 * (VmHWM, a size, not a time) is read when it exits, so that it is the
 * child's own and not the test runner's.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { ChunkWriter } from '../../sinks/backup/datafile.js';
import type { DlistItem } from '../../transforms/dlist-types.js';

const PIECE = Buffer.alloc(64 * 1024);
for (let i = 0; i < PIECE.length; i++) PIECE[i] = (i * 7 + (i >> 9)) & 0xff;

/** `size` octets of a fixed pattern, 64 KiB a push. */
export function patternBody(size: number): Readable {
  let left = size;
  return new Readable({
    read() {
      if (left === 0) return void this.push(null);
      const n = Math.min(left, PIECE.length);
      left -= n;
      this.push(PIECE.subarray(0, n));
    },
  });
}

/** The SHA-1 (the GUID) of patternBody(size), computed as it streams. */
export async function patternGuid(size: number): Promise<string> {
  const h = createHash('sha1');
  for await (const c of patternBody(size)) h.update(c as Buffer);
  return h.digest('hex');
}

/**
 * A backup data file `file` with one chunk: `APPLY MESSAGE` with a body of
 * `size` octets, then the items `after(guid)` returns. Returns the GUID.
 */
export async function writeHugeBackup(file: string, size: number, after: (guid: string) => DlistItem[] = () => []): Promise<string> {
  const guid = await patternGuid(size);
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_APPEND, 0o600);
  try {
    const w = new ChunkWriter(fd, 0, { level: 1 });
    await w.start(1000);
    const message = { kind: 'file', partition: 'default', guid, size, source: () => patternBody(size) } as const;
    await w.append({ key: 'MESSAGE', value: { kind: 'list', items: [message] } }, 1000);
    for (const item of after(guid)) await w.append(item, 1000);
    await w.end(1001);
  } finally {
    fs.closeSync(fd);
  }
  return guid;
}

const HOOK = `import fs from 'node:fs';
process.on('exit', () => fs.writeFileSync(process.env.CYRSYNC_HWM_FILE, /VmHWM:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]));
`;

/**
 * Runs `node ARGS` to completion with a hook that records its peak RSS as
 * it exits (files kept in `dir`, which the caller removes). Rejects when
 * the child fails.
 */
export async function runMeasured(dir: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<{ stdout: string; hwmKiB: number }> {
  const hook = path.join(dir, 'hwm-hook.mjs');
  fs.writeFileSync(hook, HOOK);
  const hwmFile = fs.mkdtempSync(path.join(dir, 'hwm-'));
  const out = path.join(hwmFile, 'kib');
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', hook, ...args], {
    env: { ...process.env, ...env, CYRSYNC_HWM_FILE: out },
    maxBuffer: 1 << 20,
  });
  const hwmKiB = Number(fs.readFileSync(out, 'utf8'));
  fs.rmSync(hwmFile, { recursive: true, force: true });
  return { stdout, hwmKiB };
}
