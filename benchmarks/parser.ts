/**
 * Parser throughput, in process: MB/s over input fed in 64 KiB chunks (as a
 * socket delivers it) and the peak RSS of the process.
 *
 *   literal-heavy   APPLY MESSAGE lines of 1 MiB file literals (SHA-1 computed, bodies skipped)
 *   framer-only     the same input through FramerCore alone (no hashing): the framing cost
 *   big-literals    `{N+}` literals above the small threshold (streamed, hashed)
 *   dense-dlist     APPLY MAILBOX with 10,000 records (every value materialised)
 *
 * Reference rows (not our code): raw SHA-1 over the same octets (the bound
 * for literal-heavy input) and JSON.parse building the same value tree from
 * its JSON text (the cost of materialising that many objects in V8).
 *
 * Writes benchmarks/results/parser-<date>.json and parser-latest.json.
 * Args: --quick (fewer iterations).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DlistParserCore, FramerCore, parseCommandLines, type CommandLine } from '../transforms/index.js';

const CHUNK = 64 * 1024;
const RESULTS = join(import.meta.dirname, 'results');

function chunked(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let p = 0; p < buf.length; p += CHUNK) out.push(buf.subarray(p, p + CHUNK));
  return out;
}

function fileLiteralInput(messages: number, size: number): Buffer {
  const body = Buffer.alloc(size);
  for (let i = 0; i < size; i++) body[i] = 32 + ((i * 7) % 90);
  const guid = createHash('sha1').update(body).digest('hex');
  const parts: Buffer[] = [];
  for (let line = 0; line < messages / 16; line++) {
    parts.push(Buffer.from('APPLY MESSAGE ('));
    for (let k = 0; k < 16; k++) {
      parts.push(Buffer.from(`${k ? ' ' : ''}%{default ${guid} ${size}}\r\n`), body);
    }
    parts.push(Buffer.from(')\r\n'));
  }
  return Buffer.concat(parts);
}

function bigLiteralInput(count: number, size: number): Buffer {
  const body = Buffer.alloc(size, 'l');
  const parts: Buffer[] = [];
  for (let i = 0; i < count; i++) parts.push(Buffer.from(`APPLY SIEVE %(USERID u FILENAME f LAST_UPDATED 1 CONTENT {${size}+}\r\n`), body, Buffer.from(')\r\n'));
  return Buffer.concat(parts);
}

function mailboxInput(records: number): Buffer {
  const recs: string[] = [];
  for (let uid = 1; uid <= records; uid++) {
    const guid = createHash('sha1').update(String(uid)).digest('hex');
    recs.push(`%(UID ${uid} MODSEQ ${uid + 10} LAST_UPDATED 1795357012 FLAGS (\\Seen $Forwarded) INTERNALDATE 1795357012 SIZE ${1000 + uid} GUID ${guid} ANNOTATIONS (%(ENTRY /vendor/cmu/cyrus-imapd/savedate USERID "" MODSEQ 0 VALUE 1795357012) %(ENTRY /vendor/cmu/cyrus-imapd/createdmodseq USERID "" MODSEQ 0 VALUE ${uid})))`);
  }
  return Buffer.from(`APPLY MAILBOX %(UNIQUEID 0o7r6qcclw87n6m5t3aptmjp MBOXNAME user.bench SYNC_CRC 4004776112 SYNC_CRC_ANNOT 49809256 LAST_UID ${records} HIGHESTMODSEQ ${records + 10} RECENTUID ${records} RECENTTIME 1795357012 LAST_APPENDDATE 1795357012 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795357011 PARTITION default ACL "bench\tlrswipkxtecdan\tadmin\tlrswipkxtecdan\t" OPTIONS P RECORD (${recs.join(' ')}))\r\n`, 'latin1');
}

interface Row {
  case: string;
  inputMB: number;
  iterations: number;
  seconds: number;
  /** Mean over all iterations (garbage collection included). */
  MBps: number;
  /** The fastest single iteration. */
  bestMBps: number;
  commands: number;
}

function measure(name: string, input: Buffer, iterations: number, parse: (chunks: Buffer[]) => number): Row {
  const chunks = chunked(input);
  parse(chunks); // warm-up
  let commands = 0;
  let best = Infinity;
  let total = 0;
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    commands += parse(chunks);
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    total += dt;
    best = Math.min(best, dt);
  }
  const mb = input.length / 1e6;
  return {
    case: name,
    inputMB: +mb.toFixed(2),
    iterations,
    seconds: +total.toFixed(3),
    MBps: Math.round((mb * iterations) / total),
    bestMBps: Math.round(mb / best),
    commands,
  };
}

function parseDlist(chunks: Buffer[]): number {
  let n = 0;
  const core = new DlistParserCore({ onCommand: (_c: CommandLine) => void n++ });
  for (const c of chunks) core.push(c);
  core.end();
  return n;
}

function frameOnly(chunks: Buffer[]): number {
  let n = 0;
  const core = new FramerCore({ onSegment: (_t, h) => void (h === null && n++), onBodyData: () => true, onBodyEnd: () => undefined });
  for (const c of chunks) core.push(c);
  core.end();
  return n;
}

interface Case {
  name: string;
  iterations: number;
  /** Octets parsed per iteration are `input`; the input stays in memory during the run. */
  setup: () => { input: Buffer; parse: (chunks: Buffer[]) => number };
}

function cases(quick: boolean): Case[] {
  const literal = () => fileLiteralInput(quick ? 64 : 256, 1024 * 1024);
  const it = quick ? 2 : 5;
  const dense = quick ? 10 : 40;
  return [
    { name: 'literal-heavy (file literals, SHA-1)', iterations: it, setup: () => ({ input: literal(), parse: parseDlist }) },
    { name: 'framer-only (same input)', iterations: it, setup: () => ({ input: literal(), parse: frameOnly }) },
    {
      name: 'reference: raw SHA-1 of the same input',
      iterations: it,
      setup: () => ({
        input: literal(),
        parse: (chunks) => {
          const h = createHash('sha1');
          for (const c of chunks) h.update(c);
          h.digest();
          return 0;
        },
      }),
    },
    { name: 'big-literals ({N+}, SHA-1)', iterations: it, setup: () => ({ input: bigLiteralInput(quick ? 16 : 64, 4 * 1024 * 1024), parse: parseDlist }) },
    { name: 'dense-dlist (APPLY MAILBOX, 10,000 records)', iterations: dense, setup: () => ({ input: mailboxInput(10_000), parse: parseDlist }) },
    {
      // MB/s counted over the dlist octets, so the rows compare directly.
      name: 'reference: JSON.parse of the same tree',
      iterations: dense,
      setup: () => {
        const input = mailboxInput(10_000);
        const json = JSON.stringify(parseCommandLines(input));
        return { input, parse: () => (JSON.parse(json) as unknown[]).length };
      },
    },
  ];
}

/**
 * Each case runs in its own process (`--case=N`), so that its peak RSS is
 * its own; the parent collects the rows, prints the table and writes JSON.
 */
export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const one = args.find((a) => a.startsWith('--case='));
  if (one !== undefined) {
    const c = cases(quick)[Number(one.slice(7))]!;
    const { input, parse } = c.setup();
    const row = measure(c.name, input, c.iterations, parse);
    const peakRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
    process.stdout.write(JSON.stringify({ ...row, peakRssMB }) + '\n');
    return;
  }
  const { execFileSync } = await import('node:child_process');
  const { loadavg } = await import('node:os');
  const rows: (Row & { peakRssMB: number })[] = [];
  const all = cases(quick);
  for (let n = 0; n < all.length; n++) {
    const out = execFileSync(process.execPath, [...process.execArgv, process.argv[1]!, 'parser', `--case=${n}`, ...args], { encoding: 'utf8' });
    rows.push(JSON.parse(out) as Row & { peakRssMB: number });
  }
  console.table(rows);
  console.log('peakRssMB includes the input held in memory (inputMB) and, for the parse cases, what the parser allocates.');
  const result = {
    suite: 'parser',
    date: new Date().toISOString(),
    node: process.version,
    chunkSize: CHUNK,
    loadAverage: loadavg(),
    rows,
  };
  mkdirSync(RESULTS, { recursive: true });
  const stamp = result.date.replace(/[:.]/g, '-');
  writeFileSync(join(RESULTS, `parser-${stamp}.json`), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(RESULTS, 'parser-latest.json'), JSON.stringify(result, null, 2) + '\n');
}
