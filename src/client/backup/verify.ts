/**
 * Full verification of a backup (`ctl-backups verify`, backup-format §7.1
 * all levels) in one streaming pass over the data file with the shared
 * reader: every chunk's file_sha1, length and data_sha1; every message row
 * against the MESSAGE record at its offset, and each body's SHA-1 against
 * its GUID (bodies are hashed as they stream past, never held); every
 * mailbox and mailbox_message row against a MAILBOX record of its chunk.
 *
 * Each problem is located: chunk id, the member's offset in the data file
 * and, where there is one, the record's position in the inflated chunk. A
 * flipped byte, a truncated file, an index row that disagrees with the data
 * and a message whose bytes do not hash to its GUID are all found.
 */
import { createHash, type Hash } from 'node:crypto';
import type { DlistItem, DlistValue } from '../../../transforms/dlist-types.js';
import { hashPrefix } from '../../../sinks/backup/datafile.js';
import type { BackupIndex, ChunkRow } from '../../../sinks/backup/index-db.js';
import { BackupReadError, DataFileReader, type BackupEntry } from './reader.js';
import { bigText, field, kv, list, text } from './dlist-util.js';
import type { Progress } from './progress.js';

export interface Problem {
  chunkId: number | null;
  /** Offset of the chunk's gzip member in the data file. */
  offset: number;
  /** Position of the record in the inflated chunk, when known. */
  position: number | null;
  what: string;
}

export function problemText(fname: string, p: Problem): string {
  const chunk = p.chunkId === null ? 'data' : `chunk ${p.chunkId}`;
  const at = p.position === null ? '' : `, record at ${p.position}`;
  return `${fname}: ${chunk} at offset ${p.offset}${at}: ${p.what}`;
}

export interface VerifyOptions {
  fname: string;
  /** Cyrus's `-v` lines ("checking chunk N checksums..." / "ok"). */
  verbose?: (line: string) => void;
  progress?: Progress;
}

interface ChunkState {
  row: ChunkRow | undefined;
  fileSha1?: string;
  messages: Map<number, Map<string, string | undefined>>;
  mailboxes: DlistItem[][];
}

const n = (x: number | bigint | null | undefined): string => String(BigInt(x ?? 0));

/** See the module comment. Problems in file order; empty when the backup is sound. */
export async function verifyFull(fd: number, index: BackupIndex, opts: VerifyOptions): Promise<Problem[]> {
  const rows = index.chunks();
  const byOffset = new Map(rows.map((r) => [r.offset, r]));
  const seen = new Set<number>();
  const problems: Problem[] = [];
  let hash: Hash = createHash('sha1');
  let hashed = 0;
  let cur: ChunkState | null = null;
  let messages = 0;
  const reader = new DataFileReader(fd, { name: opts.fname });
  try {
    for await (const e of reader as AsyncIterable<BackupEntry>) {
      if (e.type === 'chunk-start') {
        const row = byOffset.get(e.chunk.offset);
        cur = { row, messages: new Map(), mailboxes: [] };
        if (row === undefined) {
          if (rows.length > 0 && e.chunk.offset > rows[rows.length - 1]!.offset) break; // §7.1: data after the last chunk is not examined
          problems.push({ chunkId: null, offset: e.chunk.offset, position: null, what: 'a chunk in the data file that the index does not list' });
          continue;
        }
        seen.add(row.id);
        hash = await hashPrefix(fd, e.chunk.offset, hash, hashed);
        hashed = e.chunk.offset;
        cur.fileSha1 = hash.copy().digest('hex');
      } else if (e.type === 'record' && cur !== null) {
        const item = e.record.item;
        if (item?.key === 'MESSAGE') {
          const files = new Map<string, string | undefined>();
          for (const f of list(item.value) ?? []) if (f.kind === 'file') files.set(f.guid.toLowerCase(), f.sha1);
          cur.messages.set(e.record.offset, files);
          messages += files.size;
          for (const [guid, sha1] of files) {
            if (sha1 !== guid) problems.push({ chunkId: cur.row?.id ?? null, offset: e.chunk.offset, position: e.record.offset, what: `message ${guid}: its bytes hash to ${sha1}` });
          }
        } else if (item?.key === 'MAILBOX') {
          const items = kv(item.value);
          if (items) cur.mailboxes.push(items);
        }
        opts.progress?.update(e.chunk.offset, messages);
      } else if (e.type === 'chunk-end' && cur?.row !== undefined) {
        checkChunk(index, cur.row, e, cur, problems, opts.verbose);
        opts.progress?.update(e.member.end, messages);
        cur = null;
      }
    }
  } catch (err) {
    if (!(err instanceof BackupReadError)) throw err;
    const row = byOffset.get(err.chunk.offset);
    problems.push({ chunkId: row?.id ?? null, offset: err.chunk.offset, position: err.position, what: err.reason });
  } finally {
    reader.destroy();
  }
  for (const r of rows) {
    if (!seen.has(r.id) && !problems.some((p) => p.chunkId === r.id)) {
      problems.push({ chunkId: r.id, offset: r.offset, position: null, what: 'the index lists this chunk but the data file has no chunk there' });
    }
  }
  return problems;
}

type EndEntry = Extract<BackupEntry, { type: 'chunk-end' }>;

/** The three checks of a chunk, with Cyrus's `-v` lines around each. */
function checkChunk(index: BackupIndex, row: ChunkRow, e: EndEntry, cur: ChunkState, problems: Problem[], verbose?: (line: string) => void): void {
  const step = (what: string, f: () => void): void => {
    verbose?.(`checking chunk ${row.id} ${what}...`);
    const before = problems.filter((p) => p.chunkId === row.id).length;
    f();
    verbose?.(problems.filter((p) => p.chunkId === row.id).length === before ? 'ok' : 'failed');
  };
  step('checksums', () => checkSums(row, e, cur, problems));
  step('messages', () => checkMessages(index, row, cur, problems));
  step('mailbox links', () => checkMailboxes(index, row, cur, problems));
}

function checkSums(row: ChunkRow, e: EndEntry, cur: ChunkState, problems: Problem[]): void {
  const at = (what: string): void => void problems.push({ chunkId: row.id, offset: row.offset, position: null, what });
  if (cur.fileSha1 !== row.file_sha1) at('file_sha1 does not match the data before this chunk');
  if (e.member.length !== row.length) at(`the chunk inflates to ${e.member.length} octets, the index says ${row.length}`);
  if (e.member.dataSha1 !== row.data_sha1) at(`data_sha1 does not match the inflated chunk`);
}

function checkMessages(index: BackupIndex, row: ChunkRow, cur: ChunkState, problems: Problem[]): void {
  const at = (what: string, position: number | null): void => void problems.push({ chunkId: row.id, offset: row.offset, position, what });
  for (const m of index.messagesInChunk(row.id)) {
    const files = cur.messages.get(m.offset ?? -1);
    if (!files?.has(m.guid)) at(`index row for message ${m.guid} points at offset ${m.offset}, where no MESSAGE record holds it`, m.offset);
  }
}

function checkMailboxes(index: BackupIndex, row: ChunkRow, cur: ChunkState, problems: Problem[]): void {
  const at = (what: string): void => void problems.push({ chunkId: row.id, offset: row.offset, position: null, what });
  const g = (items: DlistItem[], k: string): DlistValue | undefined => field(items, k);
  for (const mb of index.mailboxesInChunk(row.id)) {
    const ok = cur.mailboxes.some((items) =>
      text(items, 'UNIQUEID') === mb.uniqueid && text(items, 'MBOXNAME') === mb.mboxname && text(items, 'PARTITION') === mb.partition &&
      text(items, 'ACL') === mb.acl && text(items, 'OPTIONS') === mb.options &&
      ['LAST_UID', 'HIGHESTMODSEQ', 'RECENTUID', 'RECENTTIME', 'LAST_APPENDDATE', 'UIDVALIDITY', 'XCONVMODSEQ', 'SYNC_CRC', 'SYNC_CRC_ANNOT']
        .every((k) => bigText(items, k) === n(mb[k.toLowerCase() as keyof typeof mb] as number | bigint | null)));
    if (!ok) at(`index row for mailbox ${mb.uniqueid} (${mb.mboxname}) matches no MAILBOX record of the chunk`);
  }
  for (const r of index.recordsInChunk(row.id)) {
    const ok = cur.mailboxes.some((items) => text(items, 'UNIQUEID') === r.mailbox_uniqueid && (list(g(items, 'RECORD')) ?? []).some((ri) => {
      const rec = kv(ri);
      return rec !== null && bigText(rec, 'UID') === n(r.uid) && bigText(rec, 'MODSEQ') === n(r.modseq) && bigText(rec, 'LAST_UPDATED') === n(r.last_updated) &&
        bigText(rec, 'INTERNALDATE') === n(r.internaldate) && bigText(rec, 'SIZE') === n(r.size) && text(rec, 'GUID')?.toLowerCase() === r.guid;
    }));
    if (!ok) at(`index row for ${r.mailbox_uniqueid} uid ${r.uid} matches no RECORD of the chunk`);
  }
}
