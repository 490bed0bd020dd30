/**
 * ChunkWriter on a full disk: the data file's write fails (ENOSPC) in the
 * middle of a streamed file literal. The append must reject with that cause
 * (never hang waiting for a gzip drain or flush that cannot come), abort()
 * must cut the file back to where the chunk began, and the writer must work
 * again once there is space. Uses a 1 MiB tmpfs (needs root; skipped with
 * that reason otherwise) and /dev/full.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { ChunkWriter, scanMembers } from '../sinks/backup/datafile.js';
import { lockExclusive } from '../sinks/backup/lock.js';
import type { DlistValue } from '../transforms/dlist-types.js';

const root = process.getuid?.() === 0;

/** An incompressible body of `size` octets, as a re-readable source, and its SHA-1. */
function noise(size: number): { guid: string; source: () => Readable } {
  const piece = Buffer.alloc(64 * 1024);
  let x = 2463534242;
  for (let i = 0; i < piece.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    piece[i] = x & 0xff;
  }
  const n = Math.ceil(size / piece.length);
  const h = createHash('sha1');
  for (let i = 0; i < n; i++) h.update(piece);
  return { guid: h.digest('hex'), source: () => Readable.from((function* () { for (let i = 0; i < n; i++) yield piece; })()) };
}

function causes(err: unknown): string[] {
  const out: string[] = [];
  for (let e = err as { code?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) out.push(String(e.code));
  return out;
}

test('ENOSPC in the middle of a file literal: the append rejects with the cause, abort cuts back, the writer works after freeing space', async (t) => {
  if (!root) {
    t.log('skipped: mounting a tmpfs needs root');
    t.pass();
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cyrsync-nospace-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir]);
  t.teardown(() => {
    execFileSync('umount', ['-l', dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const file = path.join(dir, 'bob_ABCDEF');
  const lock = (await lockExclusive(file, { wait: false, create: true, append: true }))!;
  t.teardown(() => lock.release());
  const w = new ChunkWriter(lock.fd);
  await w.start(1);
  await w.append({ key: 'UNMAILBOX', value: { kind: 'atom', value: 'x' } }, 1);
  const first = await w.end(2);
  await w.start(3);
  const size = 4 * 1024 * 1024;
  const { guid, source } = noise(size);
  const msg: DlistValue = { kind: 'list', items: [{ kind: 'file', partition: 'default', guid, size, source }] };
  const err = await t.throwsAsync(w.append({ key: 'MESSAGE', value: msg }, 4));
  t.true(causes(err).includes('ENOSPC'), `causes: ${causes(err).join(' <- ')}`);
  t.is(err!.name === 'OutputLiteralError' ? 'wrapped' : 'own', 'own', err!.message);
  await w.abort();
  t.is(fs.statSync(file).size, first.compressedLength, 'cut back to the end of the last good chunk');
  // small records fit again
  await w.start(5);
  await w.append({ key: 'UNMAILBOX', value: { kind: 'atom', value: 'y' } }, 5);
  await w.end(6);
  const scan = await scanMembers(lock.fd);
  t.is(scan.members.length, 2);
  t.is(scan.error, null);
});

test('a data file that refuses every write (/dev/full): start() rejects with ENOSPC, it does not hang', async (t) => {
  const fd = fs.openSync('/dev/full', 'r+');
  t.teardown(() => fs.closeSync(fd));
  const w = new ChunkWriter(fd);
  const big: DlistValue = { kind: 'list', items: [{ kind: 'file', partition: 'default', ...noise(2 * 1024 * 1024), size: 2 * 1024 * 1024 }] };
  const err = await t.throwsAsync(async () => {
    await w.start(1);
    await w.append({ key: 'MESSAGE', value: big }, 2);
  });
  t.true(causes(err).includes('ENOSPC'), `causes: ${causes(err).join(' <- ')}`);
});
