/**
 * A 1 GiB file literal streamed through CommandReader to a file on disk, in
 * a child process so its peak RSS (VmHWM) is its own: the SHA-1 must be
 * right and the peak must stay under 100 MB, and about the same as for a
 * 32 MiB literal (memory is flat in the body size).
 *
 * The child runs on plain `node`: its TypeScript is transpiled (TypeScript's
 * transpileModule, per file, no bundling) into a temporary tree first.
 * Under `--import=tsx` the loader's own hook thread adds about 28 MB of RSS,
 * which would measure the test harness rather than the code under test.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import ts from 'typescript';

const ROOT = join(import.meta.dirname, '..');
const run = promisify(execFile);

interface ChildResult {
  size: number;
  expectedSha1: string;
  parsedSha1: string;
  parsedSize: number;
  onDisk: number;
  next: string | null;
  vmHwmKiB: number;
  ms: number;
}

function transpileChild(out: string): string {
  const files = [
    ...readdirSync(join(ROOT, 'transforms')).filter((f) => f.endsWith('.ts')).map((f) => `transforms/${f}`),
    'test/helpers/huge-child.ts',
  ];
  for (const f of files) {
    const { outputText } = ts.transpileModule(readFileSync(join(ROOT, f), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
      fileName: f,
    });
    const p = join(out, f.replace(/\.ts$/, '.js'));
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, outputText);
  }
  writeFileSync(join(out, 'package.json'), '{"type":"module"}\n');
  return join(out, 'test', 'helpers', 'huge-child.js');
}

async function child(script: string, size: number): Promise<ChildResult> {
  const { stdout } = await run(process.execPath, [script], {
    env: { ...process.env, HUGE_SIZE: String(size) },
    maxBuffer: 1 << 20,
  });
  return JSON.parse(stdout) as ChildResult;
}

test('1 GiB file literal: right SHA-1, all octets on disk, peak RSS under 100 MB and flat', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cyrsync-huge-js-'));
  try {
    const script = transpileChild(dir);
    const small = await child(script, 32 * 2 ** 20);
    const big = await child(script, 2 ** 30);
    t.log(`32 MiB: peak ${small.vmHwmKiB} KiB; 1 GiB: peak ${big.vmHwmKiB} KiB in ${big.ms} ms`);
    for (const r of [small, big]) {
      t.is(r.parsedSha1, r.expectedSha1);
      t.is(r.parsedSize, r.size);
      t.is(r.onDisk, r.size);
      t.is(r.next, 'EXIT');
    }
    t.true(big.vmHwmKiB > 0 && big.vmHwmKiB < 100 * 1000, `peak ${big.vmHwmKiB} KiB`);
    // 32x the octets, about the same memory.
    t.true(big.vmHwmKiB - small.vmHwmKiB < 32 * 1024, `grew ${big.vmHwmKiB - small.vmHwmKiB} KiB`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
