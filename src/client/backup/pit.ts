/**
 * Point-in-time view of a backup: the user's state at TIME, got by replaying
 * the append-only chunks of the data file up to TIME (the index only knows
 * the latest state). Used by `cyrsync cyr-backup --at` and `cyrsync restore
 * --at`.
 *
 * API
 *
 *   parseTime(text): unix seconds from ISO 8601 (`2026-12-01T10:00:00Z`,
 *     `2026-12-01 10:00`, a date alone is midnight UTC) or a Unix time
 *     (digits); throws a CyrsyncError for anything else.
 *
 *   viewAt(fd, at, opts?): Promise<BackupView>
 *     reads the data file (through the lock descriptor `fd`) with the shared
 *     reader (reader.ts), applies every record with ts <= at, and stops at
 *     the first chunk whose records all come later. A TIME before the first
 *     record of the backup is an error (TooEarlyError), so is a data file
 *     that cannot be read up to TIME (BackupReadError).
 *
 *   new PointInTime() / .apply(entry) / .view(at): the same, fed entry by
 *     entry (for callers that run their own reader).
 *
 * BackupView:
 *   mailboxes   Map uniqueid -> ViewMailbox: every mailbox the backup knew at
 *               TIME, `deleted` = ts of its UNMAILBOX (null when it existed
 *               then), `fields` = its last MAILBOX record without RECORD
 *               (UNIQUEID, MBOXNAME, UIDVALIDITY, ACL, ANNOTATIONS, ...),
 *               `records` = Map uid -> ViewRecord (uid, modseq,
 *               last_updated, internaldate, guid, size, flags without
 *               \Expunged, annotations, `expunged` = ts when first seen
 *               expunged, `fields` = the RECORD item as written).
 *   messages    Map guid -> ViewMessage: where the body lives (chunk offset
 *               and record offset of the latest MESSAGE record up to TIME,
 *               partition, size). Read a body with messageBody().
 *   seen        Map uniqueid -> SEEN fields (LASTREAD, LASTUID, LASTCHANGE, SEENUIDS).
 *   subscriptions  Set of subscribed mailbox names at TIME.
 *   sieve       Map filename -> { content, lastUpdate, guid } (current scripts).
 *   firstTs / lastTs  timestamps of the first record and the last applied one.
 *
 * Only metadata is kept in memory; message bodies stay in the data file.
 *
 *   messageBody(fd, message, out): streams one body from the data file into
 *     the Writable `out` with backpressure (the other bodies of that MESSAGE
 *     record are skipped by counting).
 */
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { CyrsyncError } from '../../../transforms/errors.js';
import type { BodySink, BodyWriter, DlistItem, DlistValue, StagedBody } from '../../../transforms/dlist-types.js';
import { DataFileReader, type BackupEntry } from './reader.js';
import { bigText, bytes, field, kv, list, num, text, texts } from './dlist-util.js';

export interface ViewRecord {
  uid: number;
  modseq: string;
  lastUpdated: number;
  internaldate: number;
  guid: string;
  size: number;
  flags: string[];
  expunged: number | null;
  fields: DlistItem[];
}

export interface ViewMailbox {
  uniqueid: string;
  mboxname: string;
  deleted: number | null;
  lastAppenddate: number;
  fields: DlistItem[];
  records: Map<number, ViewRecord>;
}

export interface ViewMessage {
  guid: string;
  partition: string;
  size: number;
  /** Offset of the gzip member holding the MESSAGE record. */
  chunkOffset: number;
  /** Offset of that record inside the inflated chunk. */
  recordOffset: number;
}

export interface ViewSieve {
  filename: string;
  content: Buffer;
  lastUpdate: number;
  guid: string;
}

export interface BackupView {
  at: number;
  firstTs: number;
  lastTs: number;
  mailboxes: Map<string, ViewMailbox>;
  messages: Map<string, ViewMessage>;
  seen: Map<string, DlistItem[]>;
  subscriptions: Set<string>;
  sieve: Map<string, ViewSieve>;
}

export class TooEarlyError extends CyrsyncError {
  constructor(readonly at: number, readonly firstTs: number | null) {
    super(
      'IMAP_MAILBOX_NONEXISTENT',
      firstTs === null
        ? `the backup holds no records, so it has no state at ${iso(at)}`
        : `${iso(at)} is before the first chunk of the backup (${iso(firstTs)})`,
    );
  }
}

export function iso(ts: number): string {
  return new Date(ts * 1000).toISOString().replace('.000Z', 'Z');
}

/** Unix seconds from ISO 8601 or decimal Unix time. */
export function parseTime(s: string): number {
  const t = s.trim();
  if (/^-?[0-9]{1,12}$/.test(t)) return Number(t);
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$/i.exec(t);
  if (m) {
    const [, y, mo, d, h = '00', mi = '00', sec = '00', zone] = m;
    let z = zone ?? 'Z';
    if (z !== 'Z' && z !== 'z' && !z.includes(':')) z = `${z.slice(0, 3)}:${z.slice(3)}`;
    const ms = Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${sec}${z.toUpperCase()}`);
    if (Number.isFinite(ms)) return Math.floor(ms / 1000);
  }
  throw new CyrsyncError('IMAP_PROTOCOL_BAD_PARAMETERS', `${JSON.stringify(s)} is not a time: give ISO 8601 (2026-12-01T10:00:00Z) or Unix seconds`);
}

/** Replays records in order; see the module comment. */
export class PointInTime {
  readonly mailboxes = new Map<string, ViewMailbox>();
  readonly messages = new Map<string, ViewMessage>();
  readonly seen = new Map<string, DlistItem[]>();
  readonly subscriptions = new Set<string>();
  readonly sieve = new Map<string, ViewSieve>();
  firstTs: number | null = null;
  lastTs = 0;
  /** Records that could not be applied (bad lines): kept for reporting. */
  readonly problems: string[] = [];

  apply(e: BackupEntry): void {
    if (e.type !== 'record') return;
    const r = e.record;
    if (r.item === null || r.command.toUpperCase() !== 'APPLY') {
      if (r.error) this.problems.push(`chunk ${e.chunk.seq} at offset ${e.chunk.offset}, record at ${r.offset}: ${r.error.message}`);
      return;
    }
    this.firstTs ??= r.ts;
    this.lastTs = Math.max(this.lastTs, r.ts);
    const T = r.ts;
    const key = r.item.key.toUpperCase();
    const v = r.item.value;
    switch (key) {
      case 'MAILBOX':
        return this.mailbox(kv(v), T);
      case 'UNMAILBOX':
        return this.unmailbox(text([{ key: 'N', value: v }], 'N'), T);
      case 'MESSAGE':
        return this.message(v, e.chunk.offset, r.offset);
      case 'RENAME':
        return this.rename(kv(v));
      case 'SEEN':
        return this.seenState(kv(v));
      case 'SUB':
      case 'UNSUB':
        return this.subscription(text(kv(v), 'MBOXNAME'), key === 'SUB');
      case 'SIEVE':
        return this.sieveScript(kv(v));
      case 'UNSIEVE': {
        const filename = text(kv(v), 'FILENAME');
        if (filename !== null) this.sieve.delete(filename);
        return;
      }
      case 'EXPUNGE':
        return this.expunge(kv(v), T);
      default:
        return; // RESERVE and anything else change no state
    }
  }

  private unmailbox(name: string | null, T: number): void {
    for (const mb of this.mailboxes.values()) if (mb.mboxname === name) mb.deleted = T;
  }

  /** The bodies of APPLY MESSAGE: where each one is in the data file. */
  private message(v: DlistValue, chunkOffset: number, recordOffset: number): void {
    for (const f of list(v) ?? []) {
      if (f.kind !== 'file') continue;
      const guid = f.guid.toLowerCase();
      this.messages.set(guid, { guid, partition: f.partition, size: f.size, chunkOffset, recordOffset });
    }
  }

  private rename(items: DlistItem[] | null): void {
    const from = text(items, 'OLDMBOXNAME');
    const to = text(items, 'NEWMBOXNAME');
    for (const mb of this.mailboxes.values()) {
      if (mb.mboxname !== from || to === null) continue;
      mb.mboxname = to;
      mb.fields = mb.fields.map((it) => (it.key === 'MBOXNAME' ? { key: 'MBOXNAME', value: { kind: 'atom', value: to } } : it));
    }
  }

  private seenState(items: DlistItem[] | null): void {
    const u = text(items, 'UNIQUEID');
    if (u !== null && items) this.seen.set(u, items.filter((it) => it.key !== 'USERID'));
  }

  private subscription(name: string | null, subscribed: boolean): void {
    if (name === null) return;
    if (subscribed) this.subscriptions.add(name);
    else this.subscriptions.delete(name);
  }

  private sieveScript(items: DlistItem[] | null): void {
    const filename = text(items, 'FILENAME');
    const content = bytes(field(items, 'CONTENT')) ?? Buffer.alloc(0);
    if (filename !== null) {
      this.sieve.set(filename, { filename, content, lastUpdate: num(items, 'LAST_UPDATE'), guid: createHash('sha1').update(content).digest('hex') });
    }
  }

  private expunge(items: DlistItem[] | null, T: number): void {
    const mb = this.mailboxes.get(text(items, 'UNIQUEID') ?? '');
    if (!mb) return;
    for (const uid of texts(field(items, 'UID'))) {
      const rec = mb.records.get(Number(uid));
      if (rec) rec.expunged ??= T;
    }
  }

  private mailbox(items: DlistItem[] | null, T: number): void {
    const uniqueid = text(items, 'UNIQUEID');
    const mboxname = text(items, 'MBOXNAME');
    if (items === null || uniqueid === null || mboxname === null) {
      this.problems.push(`a MAILBOX record at ${T} has no UNIQUEID or MBOXNAME`);
      return;
    }
    let mb = this.mailboxes.get(uniqueid);
    const fields = items.filter((it) => it.key !== 'RECORD');
    if (!mb) {
      mb = { uniqueid, mboxname, deleted: null, lastAppenddate: 0, fields, records: new Map() };
      this.mailboxes.set(uniqueid, mb);
    }
    mb.mboxname = mboxname;
    mb.deleted = null;
    mb.fields = fields;
    mb.lastAppenddate = num(items, 'LAST_APPENDDATE');
    for (const ri of list(field(items, 'RECORD')) ?? []) {
      const rec = kv(ri);
      const guid = text(rec, 'GUID')?.toLowerCase();
      if (!rec || !guid) continue;
      const uid = num(rec, 'UID');
      const flags = texts(field(rec, 'FLAGS'));
      const expunged = flags.some((f) => f.toLowerCase() === '\\expunged');
      const old = mb.records.get(uid);
      mb.records.set(uid, {
        uid,
        modseq: bigText(rec, 'MODSEQ'),
        lastUpdated: num(rec, 'LAST_UPDATED'),
        internaldate: num(rec, 'INTERNALDATE'),
        guid,
        size: num(rec, 'SIZE'),
        flags: flags.filter((f) => f.toLowerCase() !== '\\expunged'),
        expunged: old?.expunged ?? (expunged ? T : null),
        fields: rec,
      });
    }
  }

  view(at: number): BackupView {
    if (this.firstTs === null || at < this.firstTs) throw new TooEarlyError(at, this.firstTs);
    return {
      at,
      firstTs: this.firstTs,
      lastTs: this.lastTs,
      mailboxes: this.mailboxes,
      messages: this.messages,
      seen: this.seen,
      subscriptions: this.subscriptions,
      sieve: this.sieve,
    };
  }
}

export interface ViewOptions {
  /** Named in errors. */
  name?: string;
}

/** Replays the data file up to `at`; see the module comment. */
export async function viewAt(fd: number, at: number, opts: ViewOptions = {}): Promise<BackupView> {
  const pit = new PointInTime();
  const reader = new DataFileReader(fd, { name: opts.name });
  let chunkHasEarly = true;
  let chunkRecords = 0;
  for await (const e of reader as AsyncIterable<BackupEntry>) {
    if (e.type === 'chunk-start') {
      chunkHasEarly = false;
      chunkRecords = 0;
    } else if (e.type === 'record') {
      chunkRecords++;
      if (e.record.ts <= at) {
        chunkHasEarly = true;
        pit.apply(e);
      } else if (chunkRecords === 1 && pit.firstTs !== null) {
        // Chunks start in time order (§5.2): this one and every later one are after TIME.
        reader.destroy();
        break;
      } else if (pit.firstTs === null) {
        throw new TooEarlyError(at, e.record.ts);
      }
    } else if (e.type === 'chunk-end' && !chunkHasEarly && e.records > 0 && pit.firstTs !== null) {
      reader.destroy();
      break;
    }
  }
  return pit.view(at);
}

/** A BodySink that sends the body of `guid` to `out` and skips the others. */
export function singleBodySink(guid: string, out: Writable): BodySink & { found: () => boolean } {
  let found = false;
  return {
    found: () => found,
    open(h): BodyWriter | null {
      if (h.kind !== 'file' || h.guid?.toLowerCase() !== guid || found) return null;
      found = true;
      return {
        write: (c: Buffer) => out.write(c),
        onDrain: (cb: () => void) => void out.once('drain', cb),
        end: (): StagedBody => ({ done: Promise.resolve(), ref: out }),
        abort: (err: Error) => void out.destroy(err),
      };
    },
  };
}

/** Streams the body of `m` from its MESSAGE record into `out` (not ended). */
export async function messageBody(fd: number, m: { guid: string; chunkOffset: number }, out: Writable, name?: string): Promise<boolean> {
  const sink = singleBodySink(m.guid.toLowerCase(), out);
  const reader = new DataFileReader(fd, { from: m.chunkOffset, sink, name });
  for await (const e of reader as AsyncIterable<BackupEntry>) {
    if (e.type === 'chunk-end' || (e.type === 'record' && sink.found())) {
      reader.destroy();
      break;
    }
  }
  return sink.found();
}
