/**
 * What `cyr-backup` shows, in one shape whether it comes from the index (the
 * latest state, as Cyrus's cyr_backup shows it) or from a point-in-time
 * view replayed from the data file (`--at TIME`, pit.ts).
 */
import * as fs from 'node:fs';
import type { BackupIndex } from '../../../sinks/backup/index-db.js';
import type { BackupView } from './pit.js';

export interface CatChunk {
  id: number;
  offset: number;
  length: number;
  /** Octets of the gzip member (next chunk's offset, or the file size, minus offset). */
  compressed: number;
  tsStart: number | null;
  tsEnd: number | null;
}

export interface CatRecord {
  uid: number;
  guid: string;
  expunged: number | null;
}

export interface CatMailbox {
  uniqueid: string;
  mboxname: string;
  lastAppenddate: number;
  deleted: number | null;
  records: CatRecord[];
}

export interface CatMessage {
  guid: string;
  /** Offset of the member holding its latest MESSAGE record. */
  chunkOffset: number | null;
}

export interface Catalog {
  chunks: CatChunk[];
  mailboxes: CatMailbox[];
  messages: CatMessage[];
}

function withCompressed(rows: { id: number; offset: number; length: number | null; ts_start: number | null; ts_end: number | null }[], fileSize: number): CatChunk[] {
  return rows.map((c, i) => ({
    id: c.id,
    offset: c.offset,
    length: c.length ?? 0,
    compressed: (i + 1 < rows.length ? rows[i + 1]!.offset : fileSize) - c.offset,
    tsStart: c.ts_start,
    tsEnd: c.ts_end,
  }));
}

export function catalogFromIndex(index: BackupIndex, fd: number): Catalog {
  const chunks = withCompressed(index.chunks(), fs.fstatSync(fd).size);
  const offsetOf = new Map(chunks.map((c) => [c.id, c.offset]));
  const mailboxes = index.mailboxes().map((m) => ({
    uniqueid: m.uniqueid,
    mboxname: m.mboxname,
    lastAppenddate: Number(m.last_appenddate ?? 0),
    deleted: m.deleted,
    records: index.mailboxRecords(m.id).map((r) => ({ uid: r.uid, guid: r.guid, expunged: r.expunged })),
  }));
  const messages = index.messages().map((m) => ({ guid: m.guid, chunkOffset: m.chunk_id === null ? null : offsetOf.get(m.chunk_id) ?? null }));
  return { chunks, mailboxes, messages };
}

/** The view at TIME; chunks are those started by then. */
export function catalogFromView(view: BackupView, index: BackupIndex, fd: number): Catalog {
  const chunks = withCompressed(index.chunks(), fs.fstatSync(fd).size).filter((c) => (c.tsStart ?? 0) <= view.at);
  const mailboxes = [...view.mailboxes.values()].map((m) => ({
    uniqueid: m.uniqueid,
    mboxname: m.mboxname,
    lastAppenddate: m.lastAppenddate,
    deleted: m.deleted,
    records: [...m.records.values()].sort((a, b) => a.uid - b.uid).map((r) => ({ uid: r.uid, guid: r.guid, expunged: r.expunged })),
  }));
  const messages = [...view.messages.values()].map((m) => ({ guid: m.guid, chunkOffset: m.chunkOffset }));
  return { chunks, mailboxes, messages };
}

/** Mailboxes holding `guid`, in mailbox order. */
export function mailboxesOf(cat: Catalog, guid: string): CatMailbox[] {
  return cat.mailboxes.filter((m) => m.records.some((r) => r.guid === guid));
}
