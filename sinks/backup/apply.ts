/**
 * Data-file records of the backup store: the canonical dlist of each APPLY
 * (backup-format §5.3-§5.6) and the index updates it implies (§6.4).
 *
 * Records are written in the canonical form with synchronizing `{N}`
 * literals: Cyrus 3.6.1 as packaged in Debian 12 stops reading a chunk at
 * the first `{N+}` literal that is not a file literal, so a backup holding
 * a `/specialuse` value such as `\Drafts` (a literal: `\` is not allowed in a
 * quoted string) would not verify with the real tools. Every release reads
 * `{N}`.
 *
 * The typed command is turned back into the dlist in the field order of the
 * Cyrus 3.6.1 sync_client (imap/sync_support.c sync_mailbox_version_array and
 * friends); a command that carries its own decoded operand (`raw`) is written
 * from that instead, so fields a later client adds are kept.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type Database from 'better-sqlite3';
import type { DlistFile, DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import { CommandError } from '../../transforms/errors.js';
import { serializeValue, type SerializeOptions } from '../../transforms/serializer.js';
import type { Annot, ApplyCommand, BinaryValue, MailboxIn, RecordIn } from '../../src/protocol/types.js';
import { isBackupStagedRef, stagedSource } from './staging.js';

/** Canonical strings, synchronizing literals (see the module comment). */
export const RECORD_MODE: SerializeOptions = Object.freeze({ literal: 'sync', canonical: true });

type A<S extends string> = Extract<ApplyCommand, { sub: S }>;

/** The APPLY sub-commands a backup server appends and indexes. */
export type StoredApply = A<'MAILBOX' | 'UNMAILBOX' | 'MESSAGE' | 'RESERVE' | 'RENAME' | 'SEEN' | 'SUB' | 'UNSUB' | 'SIEVE' | 'UNSIEVE'>;

const str = (v: string | null | undefined): DlistValue => ({ kind: 'string', value: v ?? null });
const num = (v: number | bigint): DlistValue => ({ kind: 'num', value: v });
const list = (items: DlistValue[]): DlistValue => ({ kind: 'list', items });
const kv = (items: DlistItem[]): DlistValue => ({ kind: 'kvlist', items });

function binary(v: BinaryValue): DlistValue {
  if (v.kind === 'buffer') return { kind: 'string', value: v.value };
  const ref = v.body.ref;
  if (!isBackupStagedRef(ref) || !ref.complete) {
    throw new CommandError('IMAP_IOERROR', 'a staged value is no longer available');
  }
  return { kind: 'bigliteral', size: v.size, sha1: v.sha1, body: v.body, source: stagedSource(ref) };
}

function flagValue(f: string): DlistValue {
  return f.startsWith('\\') ? { kind: 'flag', value: f } : { kind: 'string', value: f };
}

function annotList(annots: readonly Annot[]): DlistValue {
  return list(
    annots.map((a) =>
      kv([
        { key: 'ENTRY', value: str(a.entry) },
        { key: 'USERID', value: str(a.userid) },
        { key: 'MODSEQ', value: num(a.modseq) },
        { key: 'VALUE', value: binary(a.value) },
      ]),
    ),
  );
}

function recordItem(r: RecordIn): DlistValue {
  const items: DlistItem[] = [
    { key: 'UID', value: num(r.uid) },
    { key: 'MODSEQ', value: num(r.modseq) },
    { key: 'LAST_UPDATED', value: num(r.lastUpdated) },
    { key: 'FLAGS', value: list(r.flags.map(flagValue)) },
    { key: 'INTERNALDATE', value: num(r.internaldate) },
    { key: 'SIZE', value: num(r.size) },
    { key: 'GUID', value: str(r.guid) },
  ];
  if (r.annotations) items.push({ key: 'ANNOTATIONS', value: annotList(r.annotations) });
  return kv(items);
}

function mailboxValue(m: MailboxIn): DlistValue {
  const items: DlistItem[] = [];
  const add = (key: string, value: DlistValue | undefined): void => {
    if (value !== undefined) items.push({ key, value });
  };
  const n = (v: number | bigint | undefined): DlistValue | undefined => (v === undefined ? undefined : num(v));
  add('UNIQUEID', str(m.uniqueid));
  add('MBOXNAME', str(m.mboxname));
  if (m.mboxtype !== null) add('MBOXTYPE', str(m.mboxtype));
  add('SYNC_CRC', n(m.syncCrc));
  add('SYNC_CRC_ANNOT', n(m.syncCrcAnnot));
  add('LAST_UID', n(m.lastUid));
  add('HIGHESTMODSEQ', num(m.highestmodseq));
  add('RECENTUID', n(m.recentUid));
  add('RECENTTIME', n(m.recentTime));
  add('LAST_APPENDDATE', n(m.lastAppenddate));
  add('POP3_LAST_LOGIN', n(m.pop3LastLogin));
  add('POP3_SHOW_AFTER', n(m.pop3ShowAfter));
  add('UIDVALIDITY', n(m.uidvalidity));
  if (m.partition !== undefined) add('PARTITION', str(m.partition));
  if (m.acl !== undefined) add('ACL', str(m.acl));
  if (m.options !== undefined) add('OPTIONS', str(m.options));
  if (m.quotaroot !== undefined) add('QUOTAROOT', str(m.quotaroot));
  add('CREATEDMODSEQ', n(m.createdmodseq));
  add('FOLDERMODSEQ', n(m.foldermodseq));
  add('XCONVMODSEQ', n(m.xconvmodseq));
  add('RACLMODSEQ', n(m.raclmodseq));
  if (m.userflags) add('USERFLAGS', list(m.userflags.map((f) => str(f))));
  if (m.annotations) add('ANNOTATIONS', annotList(m.annotations));
  if (m.records) add('RECORD', list(m.records.map(recordItem)));
  return kv(items);
}

/** `KEY value` of the record to append for a stored APPLY. */
export function recordOf(cmd: StoredApply): DlistItem {
  const raw = (cmd as { raw?: DlistValue }).raw;
  if (raw !== undefined && cmd.sub !== 'MESSAGE') return { key: cmd.sub, value: raw };
  switch (cmd.sub) {
    case 'MAILBOX':
      return { key: 'MAILBOX', value: mailboxValue(cmd.mailbox) };
    case 'UNMAILBOX':
      return { key: 'UNMAILBOX', value: str(cmd.mboxname) };
    case 'MESSAGE':
      return { key: 'MESSAGE', value: list(cmd.files) };
    case 'RESERVE':
      return {
        key: 'RESERVE',
        value: kv([
          { key: 'PARTITION', value: str(cmd.partition) },
          { key: 'MBOXNAME', value: list(cmd.mboxnames.map((m) => str(m))) },
          { key: 'GUID', value: list(cmd.guids.map((g) => str(g))) },
        ]),
      };
    case 'RENAME': {
      const items: DlistItem[] = [
        { key: 'OLDMBOXNAME', value: str(cmd.oldname) },
        { key: 'NEWMBOXNAME', value: str(cmd.newname) },
        { key: 'PARTITION', value: str(cmd.partition) },
      ];
      if (cmd.uidvalidity !== null) items.push({ key: 'UIDVALIDITY', value: num(cmd.uidvalidity) });
      return { key: 'RENAME', value: kv(items) };
    }
    case 'SEEN':
      return {
        key: 'SEEN',
        value: kv([
          { key: 'USERID', value: str(cmd.seen.userid) },
          { key: 'UNIQUEID', value: str(cmd.seen.uniqueid) },
          { key: 'LASTREAD', value: num(cmd.seen.lastread) },
          { key: 'LASTUID', value: num(cmd.seen.lastuid) },
          { key: 'LASTCHANGE', value: num(cmd.seen.lastchange) },
          { key: 'SEENUIDS', value: str(cmd.seen.seenuids) },
        ]),
      };
    case 'SUB':
    case 'UNSUB':
      return {
        key: cmd.sub,
        value: kv([
          { key: 'USERID', value: str(cmd.userid) },
          { key: 'MBOXNAME', value: str(cmd.mboxname) },
        ]),
      };
    case 'SIEVE':
      return {
        key: 'SIEVE',
        value: kv([
          { key: 'USERID', value: str(cmd.userid) },
          { key: 'FILENAME', value: str(cmd.filename) },
          { key: 'LAST_UPDATE', value: num(cmd.lastUpdate) },
          { key: 'CONTENT', value: binary(cmd.content) },
        ]),
      };
    case 'UNSIEVE':
      return {
        key: 'UNSIEVE',
        value: kv([
          { key: 'USERID', value: str(cmd.userid) },
          { key: 'FILENAME', value: str(cmd.filename) },
        ]),
      };
  }
}

/** Canonical text of a list for the index (`flags`, `annotations` columns). */
export function listText(items: DlistValue[]): string {
  return serializeValue(list(items), RECORD_MODE).toString('latin1');
}

export function flagsText(flags: readonly string[]): string {
  return listText(flags.filter((f) => f.toLowerCase() !== '\\expunged').map(flagValue));
}

/** Annotations as stored in the index; the empty string when absent. Staged values are read back small only. */
export function annotationsText(annots: readonly Annot[] | null | undefined): string {
  if (!annots || annots.length === 0) return '';
  return serializeValue(annotList(annots.map(inMemory)), RECORD_MODE).toString('latin1');
}

function inMemory(a: Annot): Annot {
  if (a.value.kind === 'buffer') return a;
  const ref = a.value.body.ref;
  if (!isBackupStagedRef(ref) || !ref.complete) throw new CommandError('IMAP_IOERROR', 'a staged annotation value is no longer available');
  // Annotation values above the parser's in-memory threshold are read back once for the index text.
  return { ...a, value: { kind: 'buffer', value: readStaged(ref.path) } };
}

function readStaged(p: string): Buffer {
  try {
    return readFileSync(p);
  } catch (err) {
    throw new CommandError('IMAP_IOERROR', `reading a staged value failed: ${(err as Error).message}`, { cause: err });
  }
}

// ---------------------------------------------------------------------------
// Index updates (§6.4), inside the chunk's transaction

export interface RecordContext {
  /** record timestamp */
  ts: number;
  /** current chunk id */
  chunkId: number;
  /** record offset within the inflated chunk */
  offset: number;
}

const I = (n: number | bigint | undefined | null): number | bigint => (n === undefined || n === null ? 0 : n);

/** Checks a MAILBOX has every field the index requires (§6.4 step 1). */
export function checkMailbox(m: MailboxIn): void {
  const missing: string[] = [];
  if (!m.uniqueid) missing.push('UNIQUEID');
  if (!m.mboxname) missing.push('MBOXNAME');
  if (m.lastUid === undefined) missing.push('LAST_UID');
  if (m.recentUid === undefined) missing.push('RECENTUID');
  if (m.recentTime === undefined) missing.push('RECENTTIME');
  if (m.lastAppenddate === undefined) missing.push('LAST_APPENDDATE');
  if (m.pop3LastLogin === undefined) missing.push('POP3_LAST_LOGIN');
  if (m.uidvalidity === undefined) missing.push('UIDVALIDITY');
  if (m.partition === undefined) missing.push('PARTITION');
  if (m.acl === undefined) missing.push('ACL');
  if (m.options === undefined) missing.push('OPTIONS');
  if (m.records === undefined) missing.push('RECORD');
  if (missing.length > 0) {
    throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', `APPLY MAILBOX ${m.mboxname || '(unnamed)'} lacks ${missing.join(', ')}`);
  }
}

/** Prepared statements of one index connection. */
export class IndexWriter {
  private readonly s: Record<string, Database.Statement>;

  constructor(readonly db: Database.Database) {
    const p = (sql: string): Database.Statement => db.prepare(sql);
    this.s = {
      mbUpdate: p(
        'UPDATE mailbox SET last_chunk_id = ?, mboxname = ?, mboxtype = ?, last_uid = ?, highestmodseq = ?, recentuid = ?, ' +
          'recenttime = ?, last_appenddate = ?, pop3_last_login = ?, pop3_show_after = ?, uidvalidity = ?, partition = ?, ' +
          'acl = ?, options = ?, sync_crc = ?, sync_crc_annot = ?, quotaroot = NULL, xconvmodseq = ?, annotations = ?, deleted = NULL ' +
          'WHERE uniqueid = ?',
      ),
      mbInsert: p(
        'INSERT INTO mailbox (last_chunk_id, mboxname, mboxtype, last_uid, highestmodseq, recentuid, recenttime, last_appenddate, ' +
          'pop3_last_login, pop3_show_after, uidvalidity, partition, acl, options, sync_crc, sync_crc_annot, quotaroot, xconvmodseq, ' +
          'annotations, deleted, uniqueid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, NULL, ?)',
      ),
      mbId: p('SELECT id FROM mailbox WHERE uniqueid = ?'),
      msgId: p('SELECT id FROM message WHERE guid = ?'),
      mmUpdate: p(
        'UPDATE mailbox_message SET last_chunk_id = ?, uid = ?, modseq = ?, last_updated = ?, flags = ?, internaldate = ?, ' +
          'annotations = ?, expunged = COALESCE(expunged, ?) WHERE mailbox_id = ? AND message_id = ?',
      ),
      mmInsert: p(
        'INSERT INTO mailbox_message (last_chunk_id, uid, modseq, last_updated, flags, internaldate, annotations, expunged, ' +
          'mailbox_id, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      unmailbox: p('UPDATE mailbox SET deleted = ? WHERE mboxname = ?'),
      msgUpdate: p('UPDATE message SET partition = ?, chunk_id = ?, offset = ?, size = ? WHERE guid = ?'),
      msgInsert: p('INSERT INTO message (partition, chunk_id, offset, size, guid) VALUES (?, ?, ?, ?, ?)'),
      rename: p('UPDATE mailbox SET mboxname = ?, partition = ?, uidvalidity = ? WHERE mboxname = ?'),
      seenUpdate: p('UPDATE seen SET last_chunk_id = ?, lastread = ?, lastuid = ?, lastchange = ?, seenuids = ? WHERE uniqueid = ?'),
      seenInsert: p('INSERT INTO seen (last_chunk_id, lastread, lastuid, lastchange, seenuids, uniqueid) VALUES (?, ?, ?, ?, ?, ?)'),
      subUpdate: p('UPDATE subscription SET last_chunk_id = ?, unsubscribed = ? WHERE mboxname = ?'),
      subInsert: p('INSERT INTO subscription (last_chunk_id, unsubscribed, mboxname) VALUES (?, ?, ?)'),
      sieveDelete: p('UPDATE sieve SET deleted = ? WHERE filename = ? AND deleted IS NULL'),
      sieveInsert: p('INSERT INTO sieve (chunk_id, last_update, filename, guid, offset) VALUES (?, ?, ?, ?, ?)'),
    };
  }

  /** Is this GUID in the message table? */
  hasMessage(guid: string): boolean {
    return this.s.msgId!.get(guid) !== undefined;
  }

  /** Applies §6.4 for one appended record. */
  index(cmd: StoredApply, ctx: RecordContext): void {
    const s = this.s;
    const T = ctx.ts;
    const C = ctx.chunkId;
    switch (cmd.sub) {
      case 'MAILBOX': {
        const m = cmd.mailbox;
        checkMailbox(m);
        // All-or-nothing: a nested savepoint inside the chunk's transaction.
        this.db.transaction(() => {
          const annots = annotationsText(m.annotations);
          const vals = [
            C,
            m.mboxname,
            m.mboxtype ?? null,
            I(m.lastUid),
            I(m.highestmodseq),
            I(m.recentUid),
            I(m.recentTime),
            I(m.lastAppenddate),
            I(m.pop3LastLogin),
            I(m.pop3ShowAfter),
            I(m.uidvalidity),
            m.partition ?? null,
            m.acl ?? null,
            m.options ?? null,
            I(m.syncCrc),
            I(m.syncCrcAnnot),
            I(m.xconvmodseq),
            annots,
          ];
          const r = s.mbUpdate!.run(...vals, m.uniqueid);
          if (r.changes === 0) s.mbInsert!.run(...vals, m.uniqueid);
          const mb = s.mbId!.get(m.uniqueid) as { id: number };
          for (const rec of m.records ?? []) {
            const msg = s.msgId!.get(rec.guid) as { id: number } | undefined;
            if (!msg) continue;
            const expunged = rec.flags.some((f) => f.toLowerCase() === '\\expunged') ? T : null;
            const rv = [C, rec.uid, rec.modseq, rec.lastUpdated, flagsText(rec.flags), rec.internaldate, annotationsText(rec.annotations), expunged];
            const u = s.mmUpdate!.run(...rv, mb.id, msg.id);
            if (u.changes === 0) s.mmInsert!.run(...rv, mb.id, msg.id);
          }
        })();
        return;
      }
      case 'UNMAILBOX':
        s.unmailbox!.run(T, cmd.mboxname);
        return;
      case 'MESSAGE':
        for (const f of cmd.files) {
          const guid = f.guid.toLowerCase();
          const r = s.msgUpdate!.run(f.partition, C, ctx.offset, f.size, guid);
          if (r.changes === 0) s.msgInsert!.run(f.partition, C, ctx.offset, f.size, guid);
        }
        return;
      case 'RESERVE':
        return;
      case 'RENAME':
        s.rename!.run(cmd.newname, cmd.partition, cmd.uidvalidity ?? 0, cmd.oldname);
        return;
      case 'SEEN': {
        const v = cmd.seen;
        const r = s.seenUpdate!.run(C, v.lastread, v.lastuid, v.lastchange, v.seenuids, v.uniqueid);
        if (r.changes === 0) s.seenInsert!.run(C, v.lastread, v.lastuid, v.lastchange, v.seenuids, v.uniqueid);
        return;
      }
      case 'SUB':
      case 'UNSUB': {
        const un = cmd.sub === 'UNSUB' ? T : null;
        const r = s.subUpdate!.run(C, un, cmd.mboxname);
        if (r.changes === 0) s.subInsert!.run(C, un, cmd.mboxname);
        return;
      }
      case 'SIEVE': {
        s.sieveDelete!.run(T, cmd.filename);
        s.sieveInsert!.run(C, cmd.lastUpdate, cmd.filename, sieveGuid(cmd.content), ctx.offset);
        return;
      }
      case 'UNSIEVE':
        s.sieveDelete!.run(T, cmd.filename);
        return;
    }
  }
}

function sieveGuid(v: BinaryValue): string {
  if (v.kind === 'staged') return v.sha1.toLowerCase();
  return createHash('sha1').update(v.value).digest('hex');
}

/** The file literals of a MESSAGE, for callers that need them typed. */
export type MessageFiles = DlistFile[];
