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
  MBps: number;
  commands: number;
}

function measure(name: string, input: Buffer, iterations: number, parse: (chunks: Buffer[]) => number): Row {
  const chunks = chunked(input);
  parse(chunks); // warm-up
  let commands = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) commands += parse(chunks);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const mb = (input.length * iterations) / 1e6;
  return { case: name, inputMB: +(input.length / 1e6).toFixed(2), iterations, seconds: +seconds.toFixed(3), MBps: Math.round(mb / seconds), commands };
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

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const literal = fileLiteralInput(quick ? 64 : 256, 1024 * 1024);
  const big = bigLiteralInput(quick ? 16 : 64, 4 * 1024 * 1024);
  const mailbox = mailboxInput(10_000);
  const json = JSON.stringify(parseCommandLines(mailbox));
  const rows: Row[] = [
    measure('literal-heavy (file literals, SHA-1)', literal, quick ? 2 : 5, parseDlist),
    measure('framer-only (same input)', literal, quick ? 2 : 5, frameOnly),
    measure('reference: raw SHA-1 of the same input', literal, quick ? 2 : 5, (chunks) => {
      const h = createHash('sha1');
      for (const c of chunks) h.update(c);
      h.digest();
      return 0;
    }),
    measure('big-literals ({N+}, SHA-1)', big, quick ? 2 : 5, parseDlist),
    measure('dense-dlist (APPLY MAILBOX, 10,000 records)', mailbox, quick ? 10 : 40, parseDlist),
    // MB/s counted over the dlist octets, so the rows compare directly.
    measure('reference: JSON.parse of the same tree', mailbox, quick ? 10 : 40, () => (JSON.parse(json) as unknown[]).length),
  ];
  const peakRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
  console.table(rows);
  console.log(`peak RSS: ${peakRssMB} MB (inputs are held in memory: ${((literal.length + big.length + mailbox.length) / 1e6).toFixed(0)} MB)`);
  const result = {
    suite: 'parser',
    date: new Date().toISOString(),
    node: process.version,
    chunkSize: CHUNK,
    peakRssMB,
    loadAverage: (await import('node:os')).loadavg(),
    rows,
  };
  mkdirSync(RESULTS, { recursive: true });
  const stamp = result.date.replace(/[:.]/g, '-');
  writeFileSync(join(RESULTS, `parser-${stamp}.json`), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(RESULTS, 'parser-latest.json'), JSON.stringify(result, null, 2) + '\n');
}
