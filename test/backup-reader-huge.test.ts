/**
 * The backup reading pipeline keeps memory flat in the message size: a data
 * file holding one 512 MiB message is read in a child process (plain node on
 * the built dist/, so the peak RSS is the reader's own), through the reader
 * (bodies hashed while skipped) and through messageBody (the body streamed
 * out); the SHA-1 is right and the peak RSS stays under 100 MB and close to
 * the peak for an 8 MiB message. Needs `npm run build` first.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { runMeasured, writeHugeBackup } from './helpers/huge.js';

const ROOT = path.join(import.meta.dirname, '..');
const DIST = path.join(ROOT, 'dist');

const CHILD = `
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
const { DataFileReader } = await import(process.env.DIST + '/src/client/backup/reader.js');
const { messageBody } = await import(process.env.DIST + '/src/client/backup/pit.js');
const fd = fs.openSync(process.env.FILE, 'r');
let parsed = null;
for await (const e of new DataFileReader(fd)) {
  if (e.type === 'record' && e.record.item?.key === 'MESSAGE') parsed = e.record.item.value.items[0].sha1;
}
const h = createHash('sha1');
let n = 0;
const out = new Writable({ highWaterMark: 64 * 1024, write(c, _e, cb) { h.update(c); n += c.length; setImmediate(cb); } });
await messageBody(fd, { guid: process.env.GUID, chunkOffset: 0 }, out);
process.stdout.write(JSON.stringify({ parsed, streamed: h.digest('hex'), n }));
`;

async function measure(dir: string, file: string, guid: string): Promise<{ parsed: string; streamed: string; n: number; hwmKiB: number }> {
  const { stdout, hwmKiB } = await runMeasured(dir, ['--input-type=module', '-e', CHILD], { DIST, FILE: file, GUID: guid });
  return { ...(JSON.parse(stdout) as { parsed: string; streamed: string; n: number }), hwmKiB };
}

test('a 512 MiB message is read and streamed out with flat memory', async (t) => {
  if (!fs.existsSync(path.join(DIST, 'src', 'client', 'backup', 'reader.js'))) {
    t.fail('run npm run build first');
    return;
  }
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-bhuge-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const small = path.join(dir, 'small');
  const big = path.join(dir, 'big');
  const gs = await writeHugeBackup(small, 8 * 1024 * 1024);
  const gb = await writeHugeBackup(big, 512 * 1024 * 1024);
  const s = await measure(dir, small, gs);
  const b = await measure(dir, big, gb);
  t.is(b.parsed, gb);
  t.is(b.streamed, gb);
  t.is(b.n, 512 * 1024 * 1024);
  t.is(s.streamed, gs);
  t.log(`peak RSS: ${Math.round(s.hwmKiB / 1024)} MiB for 8 MiB, ${Math.round(b.hwmKiB / 1024)} MiB for 512 MiB`);
  t.true(b.hwmKiB < 100 * 1024, `peak ${b.hwmKiB} KiB`);
  t.true(b.hwmKiB - s.hwmKiB < 24 * 1024, `peak grows with the message: ${s.hwmKiB} -> ${b.hwmKiB} KiB`);
});
