/**
 * Fuzzing the framer and the dlist parser with random token soups and with
 * mutated windows of real recorded sessions. Properties:
 * - never a crash: the only exceptions are FramingErrors (typed, with a Cyrus
 *   code); syntax errors come back as CommandLine.error (CommandError);
 * - the same output whatever the chunking (so no state is lost at a boundary);
 * - bounded memory: the core never holds more than the input it was given,
 *   and the heap does not grow across the runs;
 * - no hang: every run is synchronous and finishes.
 * Runs: CYRSYNC_FUZZ_RUNS (default 100000; `npm run test:fuzz` uses 10^6).
 */
import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import {
  CommandError,
  CommandReader,
  CyrsyncError,
  DlistParserCore,
  FramerCore,
  FramingError,
  type BodySink,
  type CommandLine,
  type DlistValue,
} from '../transforms/index.js';
import { drainSoon, laggingSink, type DrainLater } from './helpers/body-writers.js';
import { readTap } from './helpers/tap.js';

const RUNS = Number(process.env.CYRSYNC_FUZZ_RUNS ?? 100_000);
const DIR = join(import.meta.dirname, 'fixtures', 'transcripts');
const CORPUS = ['01-full-replica.tap', '03-incremental-replica.tap', '02-full-backupd.tap']
  .map((n) => readTap(join(DIR, n)))
  .flatMap((s) => [s.client, s.server]);

const LIMITS = {
  maxLineLength: 4096,
  maxLiteralSize: 1 << 16,
  maxFileLiteralSize: 1 << 16,
  maxDepth: 12,
  maxAtomLength: 512,
  smallLiteralThreshold: 64,
};

const TOKENS = [
  '(', ')', '%(', '%', '{', '}', '"', '\\', ' ', ' ', ' ', '\t', '\r\n', '\n', '\r', 'NIL', 'APPLY', 'GET',
  'MESSAGE', 'MAILBOX', '\\Seen', '$Flag', '"q\\"s"', '""', '%()', '()', '{3+}\r\nabc', '{0}\r\n', '{2}\n\r\n',
  '%{default 0123456789abcdef0123456789abcdef01234567 5}\r\nhello', '%{p g 2}\n\r\n', '%{p g 99999}\r\n',
  '{70000}\r\n', '~{1}\r\n', '\0', '\xff', 'UID', '1', '18446744073709551615',
].map((s) => Buffer.from(s, 'latin1'));

const soup = fc.array(
  fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...TOKENS) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }).map((a) => Buffer.from(a)) },
  ),
  { maxLength: 60 },
).map((parts) => Buffer.concat(parts));

const mutated = fc.record({
  src: fc.integer({ min: 0, max: CORPUS.length - 1 }),
  start: fc.nat(),
  length: fc.integer({ min: 1, max: 3000 }),
  edits: fc.array(fc.tuple(fc.constantFrom('flip', 'insert', 'delete', 'dup'), fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
}).map(({ src, start, length, edits }) => {
  const s = CORPUS[src]!;
  const from = start % s.length;
  let b = Buffer.from(s.subarray(from, from + length));
  for (const [op, at, byte] of edits) {
    if (b.length === 0) break;
    const p = at % b.length;
    if (op === 'flip') b[p] = byte;
    else if (op === 'insert') b = Buffer.concat([b.subarray(0, p), Buffer.from([byte]), b.subarray(p)]);
    else if (op === 'delete') b = Buffer.concat([b.subarray(0, p), b.subarray(p + 1)]);
    else b = Buffer.concat([b.subarray(0, p), b.subarray(p, p + (byte % 64)), b.subarray(p)]);
  }
  return b;
});

const input = fc.record({
  data: fc.oneof(soup, mutated),
  cuts: fc.array(fc.nat(), { maxLength: 4 }),
});

function render(v: DlistValue): string {
  switch (v.kind) {
    case 'list': return '(' + v.items.map(render).join(' ') + ')';
    case 'kvlist': return '%(' + v.items.map((i) => `${JSON.stringify(i.key)} ${render(i.value)}`).join(' ') + ')';
    case 'literal': return `{${v.value.toString('hex')}}`;
    case 'bigliteral': return `{big ${v.size} ${v.sha1}}`;
    case 'file': return `%{${v.partition} ${v.guid} ${v.size} ${v.sha1}}`;
    case 'nil': return 'NIL';
    default: return `${v.kind}:${JSON.stringify((v as { value: unknown }).value)}`;
  }
}

/** Parse; returns a transcript of commands and the terminal error, if any. */
function run(chunks: Buffer[], total: number): string {
  const out: string[] = [];
  const core = new DlistParserCore({
    limits: LIMITS,
    onCommand: (c: CommandLine) => {
      if (c.error !== undefined && !(c.error instanceof CommandError)) throw new Error('untyped command error');
      out.push(`${c.verb}|${c.args.map(render).join(' ')}|${c.error?.message ?? ''}`);
    },
  });
  try {
    for (const c of chunks) {
      core.push(c);
      if (core.pendingBytes + core.carriedBytes > total) throw new Error('core holds more than its input');
    }
    core.end();
  } catch (err) {
    if (!(err instanceof FramingError) || typeof err.code !== 'string') throw err;
    out.push(`! ${err.code} ${err.message}`);
  }
  return out.join('\n');
}

function runFramer(chunks: Buffer[]): string {
  const h = createHash('sha1');
  const core = new FramerCore({
    onSegment: (text, lit) => void h.update(`${text.toString('hex')} ${lit ? JSON.stringify(lit) : '-'}\n`),
    onBodyData: (c) => void h.update(c),
    onBodyEnd: () => void h.update('|'),
  }, { limits: LIMITS });
  try {
    for (const c of chunks) core.push(c);
    core.end();
  } catch (err) {
    if (!(err instanceof CyrsyncError)) throw err;
    h.update(`! ${err.code}`);
  }
  return h.digest('hex');
}

function split(data: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => (data.length === 0 ? 0 : c % (data.length + 1))))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    chunks.push(data.subarray(prev, p));
    prev = p;
  }
  chunks.push(data.subarray(prev));
  return chunks;
}

test(`fuzz: ${RUNS} random and mutated inputs, typed errors only, chunking-independent`, (t) => {
  const heapBefore = process.memoryUsage().heapUsed;
  let commands = 0;
  let framingErrors = 0;
  fc.assert(fc.property(input, ({ data, cuts }) => {
    const whole = run([data], data.length);
    const pieces = run(split(data, cuts), data.length);
    if (whole !== pieces) return false;
    if (runFramer([data]) !== runFramer(split(data, cuts))) return false;
    commands += whole === '' ? 0 : whole.split('\n').length;
    if (whole.includes('\n! ') || whole.startsWith('! ')) framingErrors++;
    return true;
  }), { numRuns: RUNS });
  global.gc?.();
  const growth = process.memoryUsage().heapUsed - heapBefore;
  t.log(`${RUNS} inputs, ${commands} command lines, ${framingErrors} terminal framing errors, heap growth ${(growth / 1e6).toFixed(1)} MB`);
  t.true(commands > RUNS / 10);
  t.true(framingErrors > 0);
  t.true(growth < 256 * 1024 * 1024);
});

/**
 * The stream adapter under random backpressure: writers that refuse chunks
 * and drain later (or synchronously, or after end()), random chunking. Every
 * run must end: all commands, then null or a typed rejection; never a hang.
 */
function randomSink(decisions: number[]): BodySink {
  let k = 0;
  const next = () => decisions[k++ % decisions.length]!;
  const later: (DrainLater | null)[] = [null, queueMicrotask, setImmediate, drainSoon];
  const lagging = laggingSink({ onWrite: () => later[next() % 4]! });
  return { open: (h) => (next() % 7 === 0 ? null : lagging.open(h)) };
}

async function readAll(chunks: Buffer[], sink: BodySink): Promise<string> {
  const reader = new CommandReader({ sink, limits: LIMITS });
  reader.on('error', () => undefined);
  void (async () => {
    for (const c of chunks) {
      if (reader.destroyed) return;
      if (!reader.write(c)) await Promise.race([new Promise((r) => reader.once('drain', r)), new Promise((r) => reader.once('close', r))]);
    }
    if (!reader.destroyed) reader.end();
  })();
  const out: string[] = [];
  try {
    for (let c = await reader.nextCommand(); c !== null; c = await reader.nextCommand()) {
      out.push(`${c.verb}|${c.args.map(render).join(' ')}|${c.error?.message ?? ''}`);
    }
  } catch (err) {
    if (!(err instanceof FramingError)) throw err;
    out.push(`! ${err.code} ${err.message}`);
  }
  return out.join('\n');
}

test(`fuzz: CommandReader under random writer backpressure always finishes (${Math.max(200, Math.floor(RUNS / 200))} runs)`, async (t) => {
  let runs = 0;
  await fc.assert(fc.asyncProperty(input, fc.array(fc.nat(), { minLength: 1, maxLength: 16 }), async ({ data, cuts }, decisions) => {
    const expected = run([data], data.length);
    const got = await Promise.race([
      readAll(split(data, cuts), randomSink(decisions)),
      delay(10_000).then(() => 'HANG'),
    ]);
    runs++;
    return got === expected;
  }), { numRuns: Math.max(200, Math.floor(RUNS / 200)) });
  t.true(runs > 0);
});
