/**
 * `ctl-backups compact` (backup-format §8): rewrites a backup without the
 * chunks and messages that retention lets go, combining small chunks and
 * splitting large ones (backup_compact_minsize / _maxsize), when there is
 * enough work (backup_compact_work_threshold) or with -F.
 *
 * Crash safety: the new index `<P>.index.new` is created first, then the
 * new data file `<P>.new` (exclusive create, locked); both are written and
 * fsynced; then `<P>.index.new` is renamed over `<P>.index` and `<P>.new`
 * over `<P>`, and the directory fsynced. Whoever next opens the backup
 * under its lock (these tools, and backupd) finishes or undoes an
 * interrupted compaction: sinks/backup/compaction-recovery.ts. A crash
 * therefore leaves either the old backup or the new one.
 *
 * Bodies of kept messages are streamed from the old file through staging
 * files into the new one (never held whole in memory).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BodySink, BodyWriter, DlistItem, DlistValue, StagedBody } from '../../../transforms/dlist-types.js';
import { CyrsyncError } from '../../../transforms/errors.js';
import { ChunkWriter } from '../../../sinks/backup/datafile.js';
import { BackupIndex, type ChunkRow } from '../../../sinks/backup/index-db.js';
import { lockExclusive, type FileLock } from '../../../sinks/backup/lock.js';
import { recoverCompaction, syncDir } from '../../../sinks/backup/compaction-recovery.js';
import { openToolBackup, type ToolBackup } from './common.js';
import { kv, list, text } from './dlist-util.js';
import { liveChunkIds, liveMessages, sinceOf, type CompactSettings } from './live.js';
import { Progress } from './progress.js';
import { DataFileReader, type BackupEntry } from './reader.js';

export interface CompactOptions {
  wait: boolean;
  force: boolean;
  settings: CompactSettings;
  /** Directory for bodies in transit (backup_staging_path). */
  staging: string;
  verbose?: (line: string) => void;
  progressOut?: NodeJS.WritableStream & { isTTY?: boolean };
  now?: number;
}

/** Test hook: the process kills itself at the named step (crash tests). */
function crashPoint(step: string): void {
  if (process.env['CYRSYNC_COMPACT_CRASH_AT'] === step) process.kill(process.pid, 'SIGKILL');
}

const combine = (s: CompactSettings, len: number, next: ChunkRow | undefined): boolean =>
  next !== undefined && !(len >= s.minsize && (next.length ?? 0) >= s.minsize) && (s.maxsize <= 0 || len + (next.length ?? 0) <= s.maxsize);

const split = (s: CompactSettings, c: ChunkRow, written: number | null): boolean =>
  s.maxsize > 0 && (c.length ?? 0) >= s.maxsize + s.minsize && (written === null || (written >= s.maxsize && (c.length ?? 0) - written > s.minsize));

function worthIt(s: CompactSettings, all: ChunkRow[], live: ChunkRow[]): boolean {
  let work = all.length - live.length;
  if (work >= s.workThreshold) return true;
  if ((s.minsize <= 0 && s.maxsize <= 0) || (s.minsize > 0 && s.maxsize > 0 && s.minsize >= s.maxsize)) return false;
  for (let i = 0; i < live.length; i++) {
    if (combine(s, live[i]!.length ?? 0, live[i + 1])) work++;
    if (split(s, live[i]!, null)) work++;
    if (work >= s.workThreshold) return true;
  }
  return false;
}

/** Bodies of kept messages parked in staging files between the old and new file. */
class StagingSink implements BodySink {
  private n = 0;
  wanted: Set<string> = new Set();
  private readonly dir: string;
  /** A directory of its own under `staging`: compactions running at once never share one. */
  constructor(staging: string) {
    fs.mkdirSync(staging, { recursive: true, mode: 0o700 });
    this.dir = fs.mkdtempSync(path.join(staging, `compact.${process.pid}.`));
  }

  open(h: { kind: 'file' | 'literal'; guid?: string }): BodyWriter | null {
    if (h.kind === 'file' && !this.wanted.has(h.guid ?? '')) return null;
    const p = path.join(this.dir, String(++this.n));
    const ws = fs.createWriteStream(p, { mode: 0o600, highWaterMark: 256 * 1024 });
    const done = new Promise<void>((resolve, reject) => {
      ws.on('close', resolve);
      ws.on('error', reject);
    });
    done.catch(() => undefined);
    return {
      write: (c) => ws.write(c),
      onDrain: (cb) => void ws.once('drain', cb),
      end: (): StagedBody => {
        ws.end();
        return { done, ref: p };
      },
      abort: () => {
        ws.destroy();
        fs.rmSync(p, { force: true });
      },
    };
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Gives staged bodies a source to stream from; collects their paths for
 * removal and the promises of their writes (a body is read only once its
 * staging file is complete).
 */
function withSources(v: DlistValue, paths: string[], written: Promise<void>[]): DlistValue {
  if ((v.kind === 'file' || v.kind === 'bigliteral') && v.body && typeof v.body.ref === 'string') {
    const p = v.body.ref;
    paths.push(p);
    written.push(v.body.done);
    return { ...v, source: () => fs.createReadStream(p, { highWaterMark: 256 * 1024 }) };
  }
  if (v.kind === 'list') return { kind: 'list', items: v.items.map((x) => withSources(x, paths, written)) };
  if (v.kind === 'kvlist') return { kind: 'kvlist', items: v.items.map((i) => ({ key: i.key, value: withSources(i.value, paths, written) })) };
  return v;
}

/** §8 step 3: what of a record the compacted backup keeps (null: nothing). */
function keep(old: BackupIndex, chunk: ChunkRow, item: DlistItem, liveGuids: Set<string>): DlistItem | null {
  const key = item.key.toUpperCase();
  if (key === 'MESSAGE') {
    const files = (list(item.value) ?? []).filter((f) => f.kind === 'file' && liveGuids.has(f.guid.toLowerCase()));
    return files.length > 0 ? { key: item.key, value: { kind: 'list', items: files } } : null;
  }
  if (key !== 'MAILBOX') return item;
  const items = kv(item.value);
  const uniqueid = text(items, 'UNIQUEID');
  const mb = uniqueid === null ? null : old.mailboxByUniqueid(uniqueid);
  const records = (list(items?.find((i) => i.key === 'RECORD')?.value) ?? []);
  if (items === null || mb === null || records.some((r) => text(kv(r), 'GUID') === null)) return item;
  const stmt = old.db.prepare('SELECT mm.last_chunk_id AS c FROM mailbox_message mm JOIN message m ON m.id = mm.message_id WHERE mm.mailbox_id = ? AND m.guid = ?');
  const kept = records.filter((r) => (stmt.get(mb.id, text(kv(r), 'GUID')!.toLowerCase()) as { c: number } | undefined)?.c === chunk.id);
  if (kept.length === 0 && mb.last_chunk_id !== chunk.id) return null;
  return { key: item.key, value: { kind: 'kvlist', items: items.map((i) => (i.key === 'RECORD' ? { key: 'RECORD', value: { kind: 'list', items: kept } } : i)) } };
}

interface Output {
  writer: ChunkWriter;
  index: BackupIndex;
  open: boolean;
  lastTs: number;
}

async function endChunk(out: Output): Promise<void> {
  if (!out.open) return;
  const e = await out.writer.end(out.lastTs);
  out.index.endChunk(e.tsEnd, e.length, e.dataSha1);
  out.open = false;
  crashPoint('chunk-written');
}

/** Copies the kept records of the live chunks into `out`. */
async function copyLive(b: ToolBackup, live: ChunkRow[], since: number, out: Output, s: CompactSettings, sink: StagingSink, progress: Progress): Promise<void> {
  for (let i = 0; i < live.length; i++) {
    const c = live[i]!;
    const guids = new Set(liveMessages(b.index, c.id, since).keys());
    sink.wanted = guids;
    const reader = new DataFileReader(b.lock.fd, { from: c.offset, until: c.offset + 1, sink, name: b.lock.path });
    for await (const e of reader as AsyncIterable<BackupEntry>) {
      if (e.type !== 'record' || e.record.item === null || e.record.command.toUpperCase() !== 'APPLY') continue;
      const paths: string[] = [];
      try {
        const item = keep(b.index, c, e.record.item, guids);
        if (item === null) continue;
        const ts = e.record.ts;
        if (!out.open) {
          const start = await out.writer.start(ts);
          out.index.beginChunk(start.tsStart, start.offset, start.fileSha1);
          out.open = true;
        }
        const written: Promise<void>[] = [];
        const full: DlistItem = { key: item.key, value: withSources(item.value, paths, written) };
        await Promise.all(written);
        const w = await out.writer.append(full, ts);
        out.index.indexRecord(w.ts, w.offset, { key: item.key.toUpperCase(), value: item.value });
        out.lastTs = w.ts;
        if (split(s, c, out.writer.length)) await endChunk(out);
      } finally {
        for (const p of paths) fs.rmSync(p, { force: true });
        progress.update(c.offset);
      }
    }
    if (!combine(s, out.writer.length, live[i + 1])) await endChunk(out);
  }
  await endChunk(out);
}

/** Compacts one backup; 'skipped' when it is not needed (without force). */
export async function compactBackup(fname: string, opts: CompactOptions): Promise<'ok' | 'skipped'> {
  const b = await openToolBackup(fname, { wait: opts.wait });
  const s = opts.settings;
  const dataNew = `${fname}.new`;
  const indexNew = `${fname}.index.new`;
  let newIndex: BackupIndex | null = null;
  let newLock: FileLock | null = null;
  let committed = false;
  let indexReplaced = false;
  const sink = new StagingSink(opts.staging);
  try {
    if (fs.existsSync(dataNew) || fs.existsSync(indexNew)) throw new CyrsyncError('IMAP_IOERROR', `${dataNew} or ${indexNew} already exists`);
    const since = sinceOf(s, opts.now);
    const all = b.index.chunks();
    const liveIds = liveChunkIds(b.index, since);
    const live = all.filter((c) => liveIds.has(c.id));
    if (!opts.force && !worthIt(s, all, live)) return 'skipped';
    opts.verbose?.(`keeping ${live.length} chunks:`);
    opts.verbose?.(live.map((c) => ` ${c.id}`).join(''));
    newIndex = BackupIndex.open(indexNew, { dataFileSize: 0 });
    newLock = await lockExclusive(dataNew, { wait: false, exclusiveCreate: true, append: true });
    if (newLock === null) throw new CyrsyncError('IMAP_MAILBOX_LOCKED', `${dataNew} is locked`);
    crashPoint('created');
    const progress = new Progress((opts.progressOut ?? process.stdout) as never, `compact ${path.basename(fname)}`, b.lock.size());
    const out: Output = { writer: new ChunkWriter(newLock.fd, 0), index: newIndex, open: false, lastTs: 0 };
    try {
      await copyLive(b, live, since, out, s, sink, progress);
    } finally {
      progress.done();
    }
    newIndex.close();
    newIndex = null;
    fs.fsyncSync(newLock.fd);
    const dir = path.dirname(fname);
    syncDir(dir);
    crashPoint('before-rename');
    const stamp = Math.floor(Date.now() / 1000);
    if (s.keepPrevious) {
      fs.linkSync(fname, `${fname}.${stamp}`);
      fs.linkSync(`${fname}.index`, `${fname}.index.${stamp}`);
    }
    b.index.close();
    fs.renameSync(indexNew, `${fname}.index`);
    indexReplaced = true;
    crashPoint('between-renames');
    fs.renameSync(dataNew, fname);
    syncDir(dir);
    committed = true;
    crashPoint('after-rename');
    return 'ok';
  } finally {
    sink.remove();
    if (indexReplaced && !committed) {
      // The index already describes the new file: finish (as recoverCompaction would).
      recoverCompaction(fname);
    } else if (!committed) {
      newIndex?.close();
      if (newIndex !== null || newLock !== null) {
        fs.rmSync(indexNew, { force: true });
        fs.rmSync(`${indexNew}-journal`, { force: true });
      }
      if (newLock !== null) fs.rmSync(dataNew, { force: true });
    }
    newLock?.release();
    b.close();
  }
}
