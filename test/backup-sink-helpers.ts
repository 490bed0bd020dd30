/**
 * Helpers of the backup store tests: temporary stores, staged bodies, the
 * router in the backup profile, recorded sessions replayed, and an
 * independent reader of data files and indexes (gzip members, chunk
 * checksums) used to check what the store wrote.
 */
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type Database from 'better-sqlite3';
import { openSqliteReadOnly } from '../sinks/sqlite-readonly.js';
import { parseConfig, type Settings } from '../src/config.js';
import type { ApplyCommand, GetCommand, MailboxIn, RecordIn } from '../src/protocol/types.js';
import { Readable } from 'node:stream';
import type { DlistFile, DlistItem, DlistValue } from '../transforms/dlist-types.js';
import { memoryBodySink, parseCommandLines, type MemoryStagedBody } from '../transforms/dlist-parser.js';
import { readTap } from './helpers/tap.js';
import { createBackupSink, type BackupSink } from '../sinks/backup/index.js';
import type { BackupSession } from '../sinks/backup/session.js';
import { replayInto, routeCommand, silentLog, type Exchange, type Routed } from './helpers/replay.js';
import { mailboxIn as baseMailboxIn, sha1, stageFiles } from './helpers/store-input.js';

export { message, sha1 } from './helpers/store-input.js';


export interface TempBackupStore {
  dir: string;
  settings: Settings;
  sink: BackupSink;
  partition: string;
}

export function backupSettings(dir: string, extra: string[] = []): Settings {
  const text = [
    `configdirectory: ${path.join(dir, 'conf')}`,
    `backuppartition-default: ${path.join(dir, 'backups')}`,
    `temp_path: ${path.join(dir, 'tmp')}`,
    'admins: admin',
    ...extra,
  ].join('\n');
  fs.mkdirSync(path.join(dir, 'conf'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  return parseConfig(text, path.join(dir, 'imapd.conf'), { need: 'backuppartition' }).settings;
}

export async function tempBackupStore(dir = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-bsink-')), extra: string[] = []): Promise<TempBackupStore> {
  const settings = backupSettings(dir, extra);
  const sink = await createBackupSink({ settings, logger: silentLog });
  return { dir, settings, sink, partition: path.join(dir, 'backups') };
}

export function openSession(sink: BackupSink): BackupSession {
  return sink.openSession({ authUser: 'admin', peer: 'test' });
}

/** Streams bodies through the session's body sink as the parser does; `guids` may announce wrong GUIDs. */
export function stage(session: BackupSession, bodies: Buffer[], guids?: string[]): Promise<DlistFile[]> {
  return stageFiles(session.bodySink, bodies, { split: 11, mayFail: true, ...(guids ? { guids } : {}) });
}

export function mailboxIn(p: Partial<MailboxIn> & { uniqueid: string; mboxname: string }): MailboxIn {
  return baseMailboxIn({ syncCrc: 0, syncCrcAnnot: 0, annotations: null, ...p });
}

export function recordIn(uid: number, body: Buffer, flags: string[] = []): RecordIn {
  return { uid, modseq: BigInt(uid + 1), lastUpdated: 1700000000 + uid, flags, internaldate: 1700000000, size: body.length, guid: sha1(body), annotations: null };
}

/** One typed command through the real router in the backup profile. */
export function run(session: BackupSession, cmd: GetCommand | ApplyCommand): Promise<Routed> {
  return routeCommand('backup', session, cmd);
}

/** Replays a recorded client stream; returns every reply (data lines and status line) in order, banner excluded. */
export function replay(session: BackupSession, client: Buffer): Promise<Exchange[]> {
  return replayInto('backup', session, client);
}

// ---------------------------------------------------------------------------
// Independent reading of what the store wrote

export interface Member {
  offset: number;
  end: number;
  data: Buffer;
}

/** Splits a data file into its gzip members (each inflated on its own). */
export function members(file: Buffer): Member[] {
  const out: Member[] = [];
  let pos = 0;
  while (pos < file.length) {
    // Inflating the raw deflate body alone tells where this member ends.
    let end: number;
    let data: Buffer;
    try {
      const hdr = gzipHeaderLength(file, pos);
      const raw = zlib.inflateRawSync(file.subarray(pos + hdr), { info: true }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
      end = pos + hdr + raw.engine.bytesWritten + 8;
      data = raw.buffer;
    } catch {
      break; // a torn member: nothing after it is readable
    }
    if (end > file.length) break;
    out.push({ offset: pos, end, data });
    pos = end;
  }
  return out;
}

function gzipHeaderLength(b: Buffer, at: number): number {
  if (b[at] !== 0x1f || b[at + 1] !== 0x8b) throw new Error(`no gzip member at ${at}`);
  const flg = b[at + 3]!;
  let p = at + 10;
  if (flg & 4) p += 2 + b.readUInt16LE(p);
  if (flg & 8) p = b.indexOf(0, p) + 1;
  if (flg & 16) p = b.indexOf(0, p) + 1;
  if (flg & 2) p += 2;
  return p - at;
}

export interface ChunkRow {
  id: number;
  ts_start: number;
  ts_end: number | null;
  offset: number;
  length: number | null;
  file_sha1: string;
  data_sha1: string | null;
}

/** Data file path registered for the only backup of the store (by listing the partition). */
export function dataFiles(partition: string): string[] {
  const out: string[] = [];
  if (!fs.existsSync(partition)) return out;
  for (const d of fs.readdirSync(partition)) {
    for (const f of fs.readdirSync(path.join(partition, d))) if (!f.includes('.index')) out.push(path.join(partition, d, f));
  }
  return out.sort();
}

export function openIndexRO(dataPath: string): Database.Database {
  return openSqliteReadOnly(`${dataPath}.index`);
}

/**
 * Full checksum verification of §7.1 level 2, done independently: each
 * chunk row's file_sha1, offset, length and data_sha1 against the file.
 * Returns the problems found (empty when all agree).
 */
export function checkChunks(dataPath: string): string[] {
  const file = fs.readFileSync(dataPath);
  const db = openIndexRO(dataPath);
  try {
    const rows = db.prepare('SELECT * FROM chunk ORDER BY id').all() as ChunkRow[];
    const ms = members(file);
    const problems: string[] = [];
    for (const r of rows) {
      const m = ms.find((x) => x.offset === r.offset);
      if (!m) {
        problems.push(`chunk ${r.id}: no member at ${r.offset}`);
        continue;
      }
      if (sha1(file.subarray(0, r.offset)) !== r.file_sha1) problems.push(`chunk ${r.id}: file_sha1`);
      if (m.data.length !== r.length) problems.push(`chunk ${r.id}: length ${m.data.length} != ${r.length}`);
      if (sha1(m.data) !== r.data_sha1) problems.push(`chunk ${r.id}: data_sha1`);
      if (!m.data.subarray(0, 29).equals(Buffer.from('# cyrus backup: chunk start\r\n'))) problems.push(`chunk ${r.id}: header`);
    }
    const last = rows.at(-1);
    const lastEnd = last ? ms.find((x) => x.offset === last.offset)?.end : 0;
    if (lastEnd !== file.length) problems.push(`data after the last chunk: ${file.length} octets, last chunk ends at ${lastEnd}`);
    return problems;
  } finally {
    db.close();
  }
}

/** Every record line of every chunk, as text (bodies included). */
export function recordLines(dataPath: string): string[] {
  const file = fs.readFileSync(dataPath);
  const lines: string[] = [];
  for (const m of members(file)) {
    const t = m.data.subarray(29).toString('latin1');
    // records end with CRLF; literals inside carry their own CRLFs, so split on the timestamp marker
    for (const part of t.split(/\r\n(?=-?\d+ APPLY )/)) if (part.length > 0) lines.push(part.replace(/\r\n$/, ''));
  }
  return lines;
}

/** Every file under `dir`, recursively. */
export function walk(dir: string): string[] {
  const out: string[] = [];
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/** APPLYs a backup server writes to the owner's data file (§9.5). */
const WRITTEN = new Set(['MAILBOX', 'UNMAILBOX', 'MESSAGE', 'RESERVE', 'RENAME', 'SEEN', 'SUB', 'UNSUB', 'SIEVE', 'UNSIEVE']);

/** The value with each file literal's body in memory given a source again, as a writer reads it. */
function withSources(v: DlistValue): DlistValue {
  if (v.kind === 'file') {
    const b = (v.body as MemoryStagedBody).ref;
    return { ...v, source: () => Readable.from([b]) };
  }
  if (v.kind === 'list') return { kind: 'list', items: v.items.map(withSources) };
  if (v.kind === 'kvlist') return { kind: 'kvlist', items: v.items.map((i) => ({ key: i.key, value: withSources(i.value) })) };
  return v;
}

/** The APPLYs that the real sync_client sent in a recorded session (a .tap file) and a backup server writes, bodies in memory. */
export function recordedApplies(tapFile: string): DlistItem[] {
  const { client } = readTap(tapFile);
  const out: DlistItem[] = [];
  for (const c of parseCommandLines(client, { sink: memoryBodySink() })) {
    if (c.verb.toUpperCase() !== 'APPLY' || c.error) continue;
    const [k, v] = c.args;
    if (k?.kind === 'atom' && v !== undefined && WRITTEN.has(k.value)) out.push({ key: k.value, value: withSources(v) });
  }
  return out;
}
