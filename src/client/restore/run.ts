/**
 * Carrying out a restore plan against a live server, in the order of Cyrus
 * 3.6.1 restore.c: per partition APPLY RESERVE (the server says which GUIDs
 * it lacks), APPLY MESSAGE with those bodies, then one RESTORE MAILBOX per
 * mailbox. Before that, as sync_client does, the destination is asked what
 * it already has (GET MAILBOXES, GET FULLMAILBOX): records whose GUID the
 * destination mailbox already holds are left out and a mailbox with nothing
 * left to add is not sent, so running the same restore again sends no
 * RESERVE, MESSAGE or RESTORE, and an interrupted restore completes.
 * After a whole-backup restore (-a) the subscriptions, seen state and sieve
 * scripts follow (APPLY SUB / SEEN / SIEVE), again only what is missing.
 */
import * as fs from 'node:fs';
import type { DlistFile, DlistItem, DlistValue } from '../../../transforms/dlist-types.js';
import { MAX_MESSAGE_FILES } from '../../../transforms/serializer.js';
import { dlistText } from '../../../sinks/backup/index-db.js';
import type { RecordRow } from '../../../sinks/backup/index-db.js';
import type { CsyncConnection, UploadProgress } from '../csync-client.js';
import { parseAnnot, scalarText } from '../../protocol/commands/fields.js';
import type { Annot, MailboxIn, RecordIn } from '../../protocol/types.js';
import type { ApplyCommand, GetCommand, RestoreCommand } from '../../protocol/types.js';
import { parseStoredList } from '../../../sinks/backup/get.js';
import type { Plan, PlanMailbox } from './plan.js';
import { stagedReader, type BackupSource } from './source.js';

// -- backup rows to typed commands (written by the protocol table's encoders) --

/** SQLite keeps 64-bit values signed: unwrapped as Cyrus's C cast does. */
function u64(v: number | bigint | null | undefined): bigint {
  if (v === null || v === undefined) return 0n;
  const b = BigInt(v);
  return b < 0n ? b + 2n ** 64n : b;
}

function n32(v: number | bigint | null | undefined): number {
  return v === null || v === undefined ? 0 : Number(v);
}

function storedAnnots(text: string | null): Annot[] | null {
  const l = parseStoredList(text);
  if (l === null || l.kind !== 'list') return null;
  return l.items.map(parseAnnot).filter((a): a is Annot => a !== null);
}

function recordIn(r: RecordRow, revive: boolean): RecordIn {
  const stored = parseStoredList(r.flags);
  const flags = (stored && stored.kind === 'list' ? stored.items : []).map((f) => scalarText(f)).filter((f): f is string => f !== null && f !== '');
  if (r.expunged !== null && !revive) flags.push('\\Expunged');
  return {
    uid: r.uid,
    modseq: u64(r.modseq),
    lastUpdated: n32(r.last_updated),
    flags,
    internaldate: n32(r.internaldate),
    size: r.size ?? 0,
    guid: r.guid,
    annotations: storedAnnots(r.annotations),
  };
}

/**
 * `RESTORE MAILBOX` (or `LOCAL_MAILBOX` with -L) of the planned mailbox, with
 * the fields of backup_mailbox_to_dlist (backup/lcb_indexr.c). What the plan
 * leaves unset (UNIQUEID, PARTITION, ACL without -U or a source row) is left
 * out, and the server chooses it. Mailbox annotations only when asked for
 * (see RestoreRun.run).
 */
export function restoreMailboxCommand(m: PlanMailbox, records: readonly RecordRow[], localOnly: boolean, annotations = true): RestoreCommand {
  const s = m.source;
  const mailbox: MailboxIn = {
    uniqueid: m.uniqueid ?? '',
    mboxname: m.mboxname,
    mboxtype: m.mboxtype,
    highestmodseq: u64(m.highestmodseq),
    lastUid: n32(s?.last_uid),
    recentUid: n32(s?.recentuid),
    recentTime: n32(s?.recenttime),
    lastAppenddate: n32(s?.last_appenddate),
    pop3LastLogin: n32(s?.pop3_last_login),
    pop3ShowAfter: n32(s?.pop3_show_after),
    uidvalidity: n32(m.uidvalidity),
    syncCrc: n32(s?.sync_crc),
    syncCrcAnnot: n32(s?.sync_crc_annot),
    quotaroot: s?.quotaroot ?? null,
    xconvmodseq: u64(s?.xconvmodseq),
    annotations: s && annotations ? storedAnnots(s.annotations) : null,
    records: records.map((r) => recordIn(r, m.revive.has(r.id))),
  };
  if (m.partition !== null) mailbox.partition = m.partition;
  if (m.acl !== null) mailbox.acl = m.acl;
  if (s?.options != null) mailbox.options = s.options;
  return { verb: 'RESTORE', sub: 'MAILBOX', local: localOnly, mailbox };
}

/** The mailbox annotations the backup holds for the planned mailbox (with a value). */
export function mailboxAnnotations(m: PlanMailbox): Annot[] {
  return (m.source ? (storedAnnots(m.source.annotations) ?? []) : []).filter((a) => a.value.kind !== 'buffer' || a.value.value.length > 0);
}

/** GUIDs per APPLY RESERVE (sync_reserve_partition stops after 8192). */
const RESERVE_BATCH = 8192;
/** Octets per APPLY MESSAGE: "upload in small(ish) blocks to avoid timeouts". */
const MESSAGE_BATCH_BYTES = 64 * 1024 * 1024;

export interface RestoreEvent {
  event: string;
  [k: string]: unknown;
}

export interface RunOptions {
  localOnly: boolean;
  /** Restore subscriptions, seen state and sieve scripts of `userid` too. */
  meta: boolean;
  userid: string | null;
  onEvent: (e: RestoreEvent) => void;
  onProgress?: (p: UploadProgress) => void;
}

export interface RunSummary {
  mailboxes: number;
  mailboxesSkipped: number;
  records: number;
  messagesUploaded: number;
  bytesUploaded: number;
  subscriptions: number;
  annotations: number;
  seen: number;
  sieve: number;
  commands: number;
}

function items(v: DlistValue | undefined): DlistItem[] {
  return v !== undefined && v.kind === 'kvlist' ? v.items : [];
}

function values(v: DlistValue | undefined): DlistValue[] {
  if (v === undefined) return [];
  if (v.kind === 'list') return v.items;
  if (v.kind === 'kvlist') return v.items.map((i) => i.value);
  return [];
}

function field(v: DlistValue | undefined, key: string): DlistValue | undefined {
  return items(v).find((i) => i.key.toUpperCase() === key)?.value;
}

export class RestoreRun {
  readonly summary: RunSummary = { mailboxes: 0, mailboxesSkipped: 0, records: 0, messagesUploaded: 0, bytesUploaded: 0, subscriptions: 0, annotations: 0, seen: 0, sieve: 0, commands: 0 };
  private progress: UploadProgress = { bytes: 0, totalBytes: 0, messages: 0, totalMessages: 0 };

  constructor(
    private readonly conn: CsyncConnection,
    private readonly source: BackupSource,
    private readonly plan: Plan,
    private readonly opts: RunOptions,
  ) {}

  /** One typed command; the data items of its reply. */
  private async call(cmd: GetCommand | ApplyCommand | RestoreCommand): Promise<DlistItem[]> {
    this.summary.commands++;
    const r = await this.conn.send(cmd);
    return r.data;
  }

  async run(): Promise<RunSummary> {
    const todo = await this.filterExisting();
    const needed = new Map<string, Set<string>>();
    for (const { m, records } of todo) {
      const part = m.partition ?? 'default';
      let s = needed.get(part);
      if (!s) needed.set(part, (s = new Set()));
      for (const r of records) s.add(r.guid);
    }
    for (const [part, guids] of this.plan.reserve) {
      const want = needed.get(part);
      if (!want || want.size === 0) continue;
      const missing = await this.reserve(part, guids.filter((g) => want.has(g)));
      await this.upload(part, missing);
    }
    for (const { m, records, skip } of todo) {
      if (!skip) {
        // Mailbox annotations do not travel in RESTORE MAILBOX: the real
        // Cyrus 3.6.1 sync_server aborts (assertion user_isnamespacelocked,
        // imap/mboxlist.c:1088) on a RESTORE MAILBOX that creates a mailbox
        // and carries ANNOTATIONS (it writes them after releasing the
        // namespace lock it created the mailbox under), and ignores them for
        // a mailbox that exists. They follow as APPLY ANNOTATION, as
        // sync_client sends them.
        await this.call(restoreMailboxCommand(m, records, this.opts.localOnly, false));
        this.summary.mailboxes++;
        this.summary.records += records.length;
        this.opts.onEvent({ event: 'mailbox', mboxname: m.mboxname, records: records.length });
      }
      await this.restoreAnnotations(m);
    }
    if (this.opts.meta && this.opts.userid !== null) await this.restoreMeta(this.opts.userid);
    return this.summary;
  }

  /** The destination's mailbox annotations (from its GET MAILBOXES reply): `entry NUL userid`. */
  private readonly destAnnotations = new Map<string, Set<string>>();

  /** The backup's mailbox annotations the destination lacks, as APPLY ANNOTATION. */
  private async restoreAnnotations(m: PlanMailbox): Promise<void> {
    const want = mailboxAnnotations(m);
    if (want.length === 0) return;
    const have = this.destAnnotations.get(m.mboxname) ?? new Set<string>();
    for (const a of want) {
      if (have.has(`${a.entry}\0${a.userid}`)) continue;
      await this.call({ verb: 'APPLY', sub: 'ANNOTATION', mboxname: m.mboxname, entry: a.entry, userid: a.userid, value: a.value });
      this.summary.annotations++;
    }
  }

  /** GET MAILBOXES + GET FULLMAILBOX: drop what the destination already has. */
  private async filterExisting(): Promise<{ m: PlanMailbox; records: RecordRow[]; isNew: boolean; skip: boolean }[]> {
    const names = this.plan.mailboxes.map((m) => m.mboxname);
    const existing = new Set<string>();
    if (names.length > 0) {
      for (const d of await this.call({ verb: 'GET', sub: 'MAILBOXES', names })) {
        const n = dlistText(field(d.value, 'MBOXNAME'));
        if (d.key !== 'MAILBOX' || n === undefined) continue;
        existing.add(n);
        const annots = new Set<string>();
        for (const v of values(field(d.value, 'ANNOTATIONS'))) {
          const a = parseAnnot(v);
          if (a && (a.value.kind !== 'buffer' || a.value.value.length > 0)) annots.add(`${a.entry}\0${a.userid}`);
        }
        this.destAnnotations.set(n, annots);
      }
    }
    const out: { m: PlanMailbox; records: RecordRow[]; isNew: boolean; skip: boolean }[] = [];
    for (const m of this.plan.mailboxes) {
      let records = m.records;
      if (existing.has(m.mboxname)) {
        // guid -> whether the destination holds it visible (not expunged).
        const have = new Map<string, boolean>();
        for (const d of await this.call({ verb: 'GET', sub: 'FULLMAILBOX', mboxname: m.mboxname })) {
          for (const r of values(field(d.value, 'RECORD'))) {
            const g = dlistText(field(r, 'GUID'))?.toLowerCase();
            if (g === undefined) continue;
            const expunged = values(field(r, 'FLAGS')).some((f) => dlistText(f)?.toLowerCase() === '\\expunged');
            have.set(g, (have.get(g) ?? false) || !expunged);
          }
        }
        records = records.filter((r) => {
          const there = have.get(r.guid);
          if (there === undefined) return true;
          const visible = r.expunged === null || m.revive.has(r.id);
          return visible && !there;
        });
        if (records.length === 0) {
          this.summary.mailboxesSkipped++;
          this.opts.onEvent({ event: 'skip', mboxname: m.mboxname, reason: 'the destination has every message' });
          out.push({ m, records, isNew: false, skip: true });
          continue;
        }
      }
      out.push({ m, records, isNew: !existing.has(m.mboxname), skip: false });
    }
    for (const { records } of out) {
      this.progress.totalMessages += records.length;
      for (const r of records) this.progress.totalBytes += r.size ?? 0;
    }
    return out;
  }

  /** APPLY RESERVE in batches; returns the GUIDs the server reports MISSING. */
  private async reserve(partition: string, guids: string[]): Promise<string[]> {
    const missing: string[] = [];
    for (let i = 0; i < guids.length; i += RESERVE_BATCH) {
      const batch = guids.slice(i, i + RESERVE_BATCH);
      const data = await this.call({ verb: 'APPLY', sub: 'RESERVE', partition, mboxnames: this.plan.reserveFolders, guids: batch });
      for (const d of data) {
        if (d.key !== 'MISSING') continue;
        for (const g of values(d.value)) {
          const t = dlistText(g);
          if (t !== undefined) missing.push(t.toLowerCase());
        }
      }
      // Reserved bodies count as done for the progress display.
      const reserved = batch.length - missing.filter((g) => batch.includes(g)).length;
      this.progress.messages += reserved;
      this.opts.onEvent({ event: 'reserve', partition, guids: batch.length, missing: missing.length });
    }
    return missing;
  }

  /** APPLY MESSAGE for `guids`, chunk by chunk, each body streamed from a staging file. */
  private async upload(partition: string, guids: string[]): Promise<void> {
    const byChunk = new Map<number, Set<string>>();
    for (const g of guids) {
      const row = this.source.messageRow(g);
      if (row === null || row.chunk_id === null) {
        this.opts.onEvent({ event: 'warning', message: `message ${g} is not in the backup` });
        continue;
      }
      let s = byChunk.get(row.chunk_id);
      if (!s) byChunk.set(row.chunk_id, (s = new Set()));
      s.add(g);
    }
    for (const [chunkId, want] of [...byChunk].sort((a, b) => a[0] - b[0])) {
      const chunk = this.source.index.chunk(chunkId);
      if (chunk === null) continue;
      const staged = await this.source.extract(chunk, want);
      try {
        let batch: DlistFile[] = [];
        let bytes = 0;
        const flush = async (): Promise<void> => {
          if (batch.length === 0) return;
          await this.call({ verb: 'APPLY', sub: 'MESSAGE', files: batch });
          this.summary.messagesUploaded += batch.length;
          this.summary.bytesUploaded += bytes;
          this.progress.messages += batch.length;
          this.progress.bytes += bytes;
          this.opts.onProgress?.({ ...this.progress });
          batch = [];
          bytes = 0;
        };
        for (const [guid, file] of staged) {
          const size = fs.statSync(file).size;
          batch.push({ kind: 'file', partition, guid, size, source: () => stagedReader(file) });
          bytes += size;
          if (batch.length >= MAX_MESSAGE_FILES || bytes >= MESSAGE_BATCH_BYTES) await flush();
        }
        await flush();
      } finally {
        for (const f of staged.values()) fs.rmSync(f, { force: true });
      }
    }
  }

  /** Subscriptions, seen state and sieve scripts the destination lacks. */
  private async restoreMeta(userid: string): Promise<void> {
    const subs = new Set<string>();
    const sieve = new Map<string, string>();
    const seen = new Map<string, string>();
    for (const d of await this.call({ verb: 'GET', sub: 'META', userid })) {
      if (d.key === 'LSUB') for (const v of values(d.value)) subs.add(dlistText(v) ?? '');
      if (d.key === 'SIEVE') sieve.set(dlistText(field(d.value, 'FILENAME')) ?? '', (dlistText(field(d.value, 'GUID')) ?? '').toLowerCase());
      if (d.key === 'SEEN') seen.set(dlistText(field(d.value, 'UNIQUEID')) ?? '', dlistText(field(d.value, 'SEENUIDS')) ?? '');
    }
    for (const s of this.source.index.subscriptions(true)) {
      if (subs.has(s.mboxname)) continue;
      await this.call({ verb: 'APPLY', sub: 'SUB', userid, mboxname: s.mboxname });
      this.summary.subscriptions++;
    }
    for (const s of this.source.index.seen()) {
      if (seen.get(s.uniqueid) === (s.seenuids ?? '')) continue;
      await this.call({
        verb: 'APPLY',
        sub: 'SEEN',
        seen: { userid, uniqueid: s.uniqueid, lastread: s.lastread ?? 0, lastuid: s.lastuid ?? 0, lastchange: s.lastchange ?? 0, seenuids: s.seenuids ?? '' },
      });
      this.summary.seen++;
    }
    for (const s of this.source.index.sieve(true)) {
      if (sieve.get(s.filename) === s.guid.toLowerCase()) continue;
      if (s.offset === null) continue;
      const content = await this.source.sieveContent(s.chunk_id, s.offset);
      if (content === null) {
        this.opts.onEvent({ event: 'warning', message: `sieve script ${s.filename}: its content is not in the backup` });
        continue;
      }
      await this.call({ verb: 'APPLY', sub: 'SIEVE', userid, filename: s.filename, lastUpdate: s.last_update ?? 0, content: { kind: 'buffer', value: content } });
      this.summary.sieve++;
    }
  }
}
