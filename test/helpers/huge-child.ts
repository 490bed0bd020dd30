/**
 * Child process of test/huge.test.ts: streams one `APPLY MESSAGE` with a
 * file literal of HUGE_SIZE octets (default 1 GiB) through CommandReader
 * into a BodySink that writes a temporary file, then prints one JSON line:
 * the SHA-1 computed by the generator and by the parser, the octets on disk,
 * and the peak RSS (VmHWM) of this process. The temporary file is removed.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CommandReader, type BodySink, type BodyWriter, type DlistValue, type StagedBody } from '../../transforms/index.js';

const SIZE = Number(process.env.HUGE_SIZE ?? 2 ** 30);
const CHUNK = 64 * 1024;

function vmHwmKiB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : -1;
}

/** Streams every body to its own file; `ref` is the path. */
function fileSink(dir: string): BodySink {
  let n = 0;
  return {
    open(): BodyWriter {
      const path = join(dir, `body-${n++}`);
      const ws = createWriteStream(path);
      const done = new Promise<void>((resolve, reject) => {
        ws.on('finish', resolve);
        ws.on('error', reject);
      });
      return {
        write: (chunk) => ws.write(chunk),
        onDrain: (cb) => void ws.once('drain', cb),
        end: (): StagedBody => {
          ws.end();
          return { done, ref: path };
        },
        abort: () => {
          ws.destroy();
          rmSync(path, { force: true });
        },
      };
    },
  };
}

/** Deterministic, non-repeating content: a 64 KiB block stamped with its index. */
function generator(guidOut: { sha1: string }): Readable {
  const block = Buffer.alloc(CHUNK);
  for (let i = 0; i < CHUNK; i++) block[i] = (i * 131 + 7) & 0xff;
  const hash = createHash('sha1');
  let sent = 0;
  let stage = 0;
  return new Readable({
    highWaterMark: CHUNK,
    read() {
      if (stage === 0) {
        stage = 1;
        // The announced guid is not known in advance; the parser reports the SHA-1 it saw.
        this.push(Buffer.from(`APPLY MESSAGE (%{default 0000000000000000000000000000000000000000 ${SIZE}}\r\n`));
        return;
      }
      if (sent < SIZE) {
        const n = Math.min(CHUNK, SIZE - sent);
        const chunk = Buffer.from(block.subarray(0, n));
        if (n >= 4) chunk.writeUInt32BE((sent / CHUNK) >>> 0, 0);
        hash.update(chunk);
        sent += n;
        this.push(chunk);
        return;
      }
      if (stage === 1) {
        stage = 2;
        guidOut.sha1 = hash.digest('hex');
        this.push(Buffer.from(')\r\nEXIT\r\n'));
        this.push(null);
      }
    },
  });
}

const dir = mkdtempSync(join(tmpdir(), 'cyrsync-huge-'));
try {
  const started = Date.now();
  const expected = { sha1: '' };
  const reader = new CommandReader({ sink: fileSink(dir) });
  generator(expected).pipe(reader);
  const cmd = await reader.nextCommand();
  if (cmd === null || cmd.error) throw new Error(`unexpected command: ${JSON.stringify(cmd)}`);
  const file = (cmd.args[1] as { items: DlistValue[] }).items[0] as Extract<DlistValue, { kind: 'file' }>;
  await Promise.all(cmd.bodies.map((b) => b.done));
  const onDisk = statSync(file.body!.ref as string).size;
  const exit = await reader.nextCommand();
  const result = {
    size: SIZE,
    expectedSha1: expected.sha1,
    parsedSha1: file.sha1,
    parsedSize: file.size,
    onDisk,
    next: exit?.verb ?? null,
    vmHwmKiB: vmHwmKiB(),
    ms: Date.now() - started,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
