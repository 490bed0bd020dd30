/**
 * A GET from a second session while a first one applies sees a consistent
 * replica: a writer session uploads messages (APPLY MESSAGE) and applies two
 * mailboxes of one user (APPLY MAILBOX: new records, flag changes) round
 * after round, while a reader session, over and over, asks GET MAILBOXES,
 * GET FULLMAILBOX and GET FETCH of every record it was told about. Every
 * answer must describe one committed state:
 * - every record a GET FULLMAILBOX reports has its message file: GET FETCH
 *   returns it, of the reported size, hashing to the reported GUID; the
 *   file is also on disk where the store keeps it;
 * - the counts agree: LAST_UID is the highest UID, HIGHESTMODSEQ is not
 *   below any record's MODSEQ, the record count is what some round of the
 *   writer committed, and SYNC_CRC is the CRC of exactly the records
 *   reported;
 * - nothing goes backwards between two reads (LAST_UID, HIGHESTMODSEQ).
 * Run with both sessions in one server process, and with each session in a
 * process of its own on the same store (as under Cyrus master(8), one
 * process per connection).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FLAG_ANSWERED, FLAG_DELETED, FLAG_DRAFT, FLAG_FLAGGED, FLAG_SEEN, mailboxCrcs, type CrcRecord } from '../src/protocol/crc.js';
import { CsyncClient, adminSession, fileLiteral, freePort, message, portOpen, sha1, waitFor } from './interop/harness.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE_ARGS = ['--import', 'tsx', path.join(ROOT, 'src', 'cli.ts')];
const USER = 'getter';
const ROUNDS = 12;
const PER_ROUND = 3;
const MAILBOXES = [
  { name: `user.${USER}`, uniqueid: 'f0e1d2c3-0000-4000-8000-000000000001' },
  { name: `user.${USER}.Sent`, uniqueid: 'f0e1d2c3-0000-4000-8000-000000000002' },
];

interface Store {
  dir: string;
  conf: string;
  spool: string;
}

function makeStore(t: ExecutionContext): Store {
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-get-apply-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const spool = path.join(dir, 'spool');
  for (const d of ['conf', 'spool', 'tmp']) fs.mkdirSync(path.join(dir, d));
  const conf = path.join(dir, 'imapd.conf');
  const lines = [`configdirectory: ${dir}/conf`, `partition-default: ${spool}`, `temp_path: ${dir}/tmp`, 'admins: admin', 'allowplaintext: yes', 'failedloginpause: 0'];
  fs.writeFileSync(conf, lines.join('\n') + '\n');
  return { dir, conf, spool };
}

async function runCli(args: string[], input: string): Promise<void> {
  const child = spawn(process.execPath, [...NODE_ARGS, ...args], { cwd: ROOT, stdio: ['pipe', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  child.stdin!.end(input);
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`cyrsync ${args.join(' ')} failed (${code}): ${err}`);
}

/** `cyrsync sync-server -C conf --listen`, stopped in t.teardown. */
async function startServer(t: ExecutionContext, s: Store): Promise<number> {
  const port = await freePort();
  const child: ChildProcess = spawn(process.execPath, [...NODE_ARGS, 'sync-server', '-C', s.conf, '--listen', `127.0.0.1:${port}`], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = once(child, 'exit');
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  });
  const up = await waitFor(async () => child.exitCode !== null || (await portOpen(port)), 60_000, 100);
  if (!up || child.exitCode !== null) throw new Error(`the server did not start: ${err}`);
  return port;
}

// --------------------------------------------------------------------- writer

interface Rec {
  uid: number;
  modseq: number;
  flags: string[];
  guid: string;
  size: number;
}

/** One APPLY MAILBOX of a whole mailbox, as sync_client sends it. */
function applyMailboxLine(mb: (typeof MAILBOXES)[number], recs: Rec[]): string {
  const last = recs.reduce((m, r) => Math.max(m, r.uid), 0);
  const hms = recs.reduce((m, r) => Math.max(m, r.modseq), 1);
  const items = recs
    .map((r) => `%(UID ${r.uid} MODSEQ ${r.modseq} LAST_UPDATED 1767225600 FLAGS (${r.flags.join(' ')}) INTERNALDATE 1767225600 SIZE ${r.size} GUID ${r.guid})`)
    .join(' ');
  return (
    `APPLY MAILBOX %(UNIQUEID ${mb.uniqueid} MBOXNAME ${mb.name} SYNC_CRC 0 LAST_UID ${last} HIGHESTMODSEQ ${hms} ` +
    `RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 1767225600 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1767225600 ` +
    `PARTITION default ACL "${USER}\tlrswipkxtecdan\t" OPTIONS "" CREATEDMODSEQ 1 FOLDERMODSEQ 1 RECORD (${items}))`
  );
}

/**
 * Round after round, for each mailbox: PER_ROUND new messages uploaded, then
 * the mailbox applied with them and one older record's flags changed.
 */
async function writer(port: number, t: ExecutionContext): Promise<void> {
  const c = await adminSession(port);
  t.teardown(() => c.destroy());
  const recs = new Map<string, Rec[]>(MAILBOXES.map((mb) => [mb.name, []]));
  let modseq = 1;
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mb of MAILBOXES) {
      const list = recs.get(mb.name)!;
      const bodies = Array.from({ length: PER_ROUND }, (_, i) => message(`${mb.uniqueid}-r${round}-m${i}`, 2000 + round * 100 + i * 7000));
      const upload = Buffer.concat([Buffer.from('APPLY MESSAGE ('), ...bodies.flatMap((b, i) => (i ? [Buffer.from(' '), fileLiteral(b)] : [fileLiteral(b)])), Buffer.from(')\r\n')]);
      const up = await c.command(upload);
      if (!up.status?.startsWith('OK')) throw new Error(`APPLY MESSAGE: ${up.status}`);
      for (const b of bodies) list.push({ uid: list.length + 1, modseq: ++modseq, flags: [], guid: sha1(b), size: b.length });
      const old = list[(round * 7) % list.length]!;
      old.flags = old.flags.length ? [] : ['\\Flagged', '$Label1'];
      old.modseq = ++modseq;
      const ap = await c.command(applyMailboxLine(mb, list));
      if (!ap.status?.startsWith('OK')) throw new Error(`APPLY MAILBOX ${mb.name} round ${round}: ${ap.status}`);
    }
  }
  await c.command('EXIT');
}

// --------------------------------------------------------------------- reader

const SYSTEM: Record<string, number> = {
  '\\deleted': FLAG_DELETED,
  '\\answered': FLAG_ANSWERED,
  '\\flagged': FLAG_FLAGGED,
  '\\draft': FLAG_DRAFT,
  '\\seen': FLAG_SEEN,
};

interface Seen {
  name: string;
  uniqueid: string;
  lastUid: number;
  highestModseq: number;
  syncCrc: number;
  records: (CrcRecord & { size: number })[];
}

function num(text: string, key: string): number {
  const m = new RegExp(`\\b${key} (\\d+)`).exec(text);
  if (!m) throw new Error(`no ${key} in ${text.slice(0, 300)}`);
  return Number(m[1]);
}

/** The mailbox of a `* MAILBOX %(...)` reply line, with its records. */
function parseMailbox(line: string): Seen {
  const recordAt = line.indexOf(' RECORD (');
  const head = recordAt < 0 ? line : line.slice(0, recordAt);
  const records = (recordAt < 0 ? [] : line.slice(recordAt).split('%(UID ').slice(1)).map((chunk) => {
    const text = `UID ${chunk}`;
    const flags = /FLAGS \(([^)]*)\)/.exec(text)?.[1]?.split(' ').filter(Boolean) ?? [];
    const lower = flags.map((f) => f.toLowerCase());
    return {
      uid: num(text, 'UID'),
      modseq: BigInt(num(text, 'MODSEQ')),
      lastUpdated: num(text, 'LAST_UPDATED'),
      internaldate: num(text, 'INTERNALDATE'),
      guid: /GUID ([0-9a-f]{40})/.exec(text)![1]!,
      size: num(text, 'SIZE'),
      systemFlags: lower.reduce((bits, f) => bits | (SYSTEM[f] ?? 0), 0),
      userFlags: flags.filter((f) => !f.startsWith('\\')),
      expunged: lower.includes('\\expunged'),
      annotations: [],
      thrid: 0n,
      savedate: 0,
      createdmodseq: 0n,
    };
  });
  return {
    name: /MBOXNAME ("?)([^ "]+)\1/.exec(head)![2]!,
    uniqueid: /UNIQUEID ([^ ]+)/.exec(head)![1]!,
    lastUid: num(head, 'LAST_UID'),
    highestModseq: num(head, 'HIGHESTMODSEQ'),
    syncCrc: num(head, 'SYNC_CRC'),
    records,
  };
}

/** The problems of one GET FULLMAILBOX answer (and the GET FETCH of each of its records). */
async function checkMailbox(c: CsyncClient, spool: string, mb: Seen, committed: Set<number>): Promise<string[]> {
  const problems: string[] = [];
  const maxUid = mb.records.reduce((m, r) => Math.max(m, r.uid), 0);
  const maxModseq = mb.records.reduce((m, r) => (r.modseq > m ? r.modseq : m), 0n);
  if (mb.lastUid !== maxUid) problems.push(`${mb.name}: LAST_UID ${mb.lastUid} but highest UID ${maxUid}`);
  if (BigInt(mb.highestModseq) < maxModseq) problems.push(`${mb.name}: HIGHESTMODSEQ ${mb.highestModseq} below a record's ${maxModseq}`);
  if (!committed.has(mb.records.length)) problems.push(`${mb.name}: ${mb.records.length} records, a count no APPLY MAILBOX committed`);
  const crc = mailboxCrcs(mb.records).basic;
  if (mb.syncCrc !== crc) problems.push(`${mb.name}: SYNC_CRC ${mb.syncCrc}, the records reported give ${crc}`);
  for (const r of mb.records) {
    const onDisk = path.join(spool, 'blobs', r.guid.slice(0, 2), r.guid);
    if (!fs.existsSync(onDisk)) problems.push(`${mb.name} UID ${r.uid}: no file ${onDisk}`);
    const f = await c.command(`GET FETCH %(MBOXNAME ${mb.name} PARTITION default UNIQUEID ${mb.uniqueid} GUID ${r.guid} UID ${r.uid})`);
    const lit = /^\* MESSAGE %\{default ([0-9a-f]{40}) (\d+)\}\r\n([\s\S]*)$/.exec(f.data[0] ?? '');
    if (!f.status?.startsWith('OK') || !lit) {
      problems.push(`${mb.name} UID ${r.uid}: GET FETCH answered ${f.status} ${JSON.stringify((f.data[0] ?? '').slice(0, 80))}`);
      continue;
    }
    const body = Buffer.from(lit[3]!, 'latin1');
    if (Number(lit[2]) !== r.size || body.length !== r.size) problems.push(`${mb.name} UID ${r.uid}: fetched ${body.length} octets, record says ${r.size}`);
    if (sha1(body) !== r.guid) problems.push(`${mb.name} UID ${r.uid}: fetched file does not hash to its GUID`);
  }
  return problems;
}

interface ReadStats {
  reads: number;
  recordsFetched: number;
  problems: string[];
}

/** Reads until `done()`, then once more; checks every answer. */
async function reader(port: number, spool: string, t: ExecutionContext, done: () => boolean, committed: Map<string, Set<number>>): Promise<ReadStats> {
  const c = await adminSession(port);
  t.teardown(() => c.destroy());
  const stats: ReadStats = { reads: 0, recordsFetched: 0, problems: [] };
  const last = new Map<string, { lastUid: number; hms: number }>();
  for (let final = false; ; ) {
    final = done();
    const list = await c.command(`GET MAILBOXES (${MAILBOXES.map((m) => m.name).join(' ')})`);
    if (!list.status?.startsWith('OK')) stats.problems.push(`GET MAILBOXES: ${list.status}`);
    for (const line of list.data) {
      const mb = parseMailbox(line);
      const before = last.get(mb.name) ?? { lastUid: 0, hms: 0 };
      const full = await c.command(`GET FULLMAILBOX ${mb.name}`);
      if (!full.status?.startsWith('OK') || full.data.length !== 1) {
        stats.problems.push(`GET FULLMAILBOX ${mb.name}: ${full.status} (${full.data.length} lines)`);
        continue;
      }
      const seen = parseMailbox(full.data[0]!);
      if (seen.lastUid < mb.lastUid || seen.highestModseq < mb.highestModseq || mb.lastUid < before.lastUid || mb.highestModseq < before.hms) {
        stats.problems.push(`${mb.name} went backwards: ${before.lastUid}/${before.hms} then ${mb.lastUid}/${mb.highestModseq} then ${seen.lastUid}/${seen.highestModseq}`);
      }
      last.set(mb.name, { lastUid: seen.lastUid, hms: seen.highestModseq });
      stats.problems.push(...(await checkMailbox(c, spool, seen, committed.get(mb.name)!)));
      stats.recordsFetched += seen.records.length;
    }
    stats.reads++;
    if (final) break;
  }
  await c.command('EXIT');
  return stats;
}

async function getDuringApply(t: ExecutionContext, processes: 1 | 2): Promise<void> {
  const s = makeStore(t);
  await runCli(['passwd', '-C', s.conf, 'admin'], 'adminpw\n');
  const writePort = await startServer(t, s);
  const readPort = processes === 1 ? writePort : await startServer(t, s);
  let finished = false;
  const writing = writer(writePort, t).finally(() => {
    finished = true;
  });
  // the record counts APPLY MAILBOX commits: PER_ROUND more each round
  const committed = new Map(MAILBOXES.map((mb) => [mb.name, new Set(Array.from({ length: ROUNDS + 1 }, (_, r) => r * PER_ROUND))]));
  const [, stats] = await Promise.all([writing, reader(readPort, s.spool, t, () => finished, committed)]);
  t.log(`${stats.reads} reads while ${ROUNDS} rounds were applied; ${stats.recordsFetched} records fetched and checked`);
  t.deepEqual(stats.problems, []);
  const final = await adminSession(readPort);
  t.teardown(() => final.destroy());
  for (const mb of MAILBOXES) {
    const full = await final.command(`GET FULLMAILBOX ${mb.name}`);
    t.is(parseMailbox(full.data[0] ?? '').records.length, ROUNDS * PER_ROUND, `${mb.name} holds every record at the end`);
  }
}

test('one process: a GET session next to an APPLY session always sees committed records whose files exist', (t) => getDuringApply(t, 1));

test('two processes on one store: a GET session next to an APPLY session always sees committed records whose files exist', (t) => getDuringApply(t, 2));
