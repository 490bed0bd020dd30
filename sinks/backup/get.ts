/**
 * GET answers of the backup server, from the index only (backup-format §9.4;
 * Cyrus 3.6.1 backup/backupd.c cmd_get_*, imap/backup/backup.c
 * backup_mailbox_to_dlist).
 *
 * MAILBOX field order: UNIQUEID MBOXNAME MBOXTYPE LAST_UID HIGHESTMODSEQ
 * RECENTUID RECENTTIME LAST_APPENDDATE POP3_LAST_LOGIN POP3_SHOW_AFTER
 * UIDVALIDITY PARTITION ACL OPTIONS SYNC_CRC SYNC_CRC_ANNOT QUOTAROOT
 * XCONVMODSEQ [ANNOTATIONS] [RECORD]. The client's own SYNC_CRC values come
 * back unchanged, which is what makes it consider a mailbox up to date.
 */
import type { DlistItem, DlistValue } from '../../transforms/dlist-types.js';
import { parseCommandLines } from '../../transforms/dlist-parser.js';
import type { ReplyOut } from '../sink.js';
import { lsubItem } from '../../src/protocol/replies.js';
import type { BackupIndex, MailboxRow, RecordRow } from './index-db.js';

const str = (v: string | null | undefined): DlistValue => ({ kind: 'string', value: v ?? null });
/** SQLite integers are signed: a 64-bit value stored wrapped (as Cyrus's C cast does) is unwrapped here. */
const num = (v: number | bigint | null | undefined): DlistValue => {
  if (v === null || v === undefined) return { kind: 'num', value: 0 };
  if (v < 0) return { kind: 'num', value: BigInt(v) + 2n ** 64n };
  return { kind: 'num', value: v };
};
const kv = (items: DlistItem[]): DlistValue => ({ kind: 'kvlist', items });

/**
 * A stored list text (`flags`, `annotations`) parsed back into a value;
 * null when absent, empty or unparsable (Cyrus then leaves the field out).
 * Both literal forms are read: Cyrus writes `{N+}`, cyrsync `{N}`.
 */
export function parseStoredList(text: string | null): DlistValue | null {
  if (text === null || text === '') return null;
  try {
    const lines = parseCommandLines(Buffer.from(`X ${text}\r\n`, 'latin1'));
    if (lines.length !== 1) return null;
    const l = lines[0]!;
    if (l.error || l.args.length !== 1) return null;
    const v = l.args[0]!;
    return v.kind === 'list' ? v : null;
  } catch {
    return null;
  }
}

function mailboxItems(m: MailboxRow): DlistItem[] {
  const items: DlistItem[] = [
    { key: 'UNIQUEID', value: str(m.uniqueid) },
    { key: 'MBOXNAME', value: str(m.mboxname) },
    { key: 'MBOXTYPE', value: str(m.mboxtype) },
    { key: 'LAST_UID', value: num(m.last_uid) },
    { key: 'HIGHESTMODSEQ', value: num(m.highestmodseq) },
    { key: 'RECENTUID', value: num(m.recentuid) },
    { key: 'RECENTTIME', value: num(m.recenttime) },
    { key: 'LAST_APPENDDATE', value: num(m.last_appenddate) },
    { key: 'POP3_LAST_LOGIN', value: num(m.pop3_last_login) },
    { key: 'POP3_SHOW_AFTER', value: num(m.pop3_show_after) },
    { key: 'UIDVALIDITY', value: num(m.uidvalidity) },
    { key: 'PARTITION', value: str(m.partition) },
    { key: 'ACL', value: str(m.acl) },
    { key: 'OPTIONS', value: str(m.options) },
    { key: 'SYNC_CRC', value: num(m.sync_crc) },
    { key: 'SYNC_CRC_ANNOT', value: num(m.sync_crc_annot) },
    { key: 'QUOTAROOT', value: str(null) },
    { key: 'XCONVMODSEQ', value: num(m.xconvmodseq) },
  ];
  const annots = parseStoredList(m.annotations);
  if (annots) items.push({ key: 'ANNOTATIONS', value: annots });
  return items;
}

function recordValue(r: RecordRow): DlistValue {
  const flags = parseStoredList(r.flags) ?? { kind: 'list', items: [] };
  const flagItems = flags.kind === 'list' ? [...flags.items] : [];
  if (r.expunged !== null) flagItems.push({ kind: 'flag', value: '\\Expunged' });
  const items: DlistItem[] = [
    { key: 'UID', value: num(r.uid) },
    { key: 'MODSEQ', value: num(r.modseq) },
    { key: 'LAST_UPDATED', value: num(r.last_updated) },
    { key: 'INTERNALDATE', value: num(r.internaldate) },
    { key: 'GUID', value: str(r.guid) },
    { key: 'SIZE', value: num(r.size) },
    { key: 'FLAGS', value: { kind: 'list', items: flagItems } },
  ];
  const annots = parseStoredList(r.annotations);
  if (annots) items.push({ key: 'ANNOTATIONS', value: annots });
  return kv(items);
}

/** Read side of one open index. */
export class IndexReader {
  constructor(private readonly index: BackupIndex) {}

  /** `* MAILBOX` (no records) for every mailbox not deleted, then what `meta` sends. */
  async user(out: ReplyOut): Promise<void> {
    for (const m of this.index.mailboxes(true)) await out({ key: 'MAILBOX', value: kv(mailboxItems(m)) });
    await this.meta(out);
  }

  /** `* SEEN` per seen row, one `* LSUB` of the active subscriptions, `* SIEVE` per current script. */
  async meta(out: ReplyOut): Promise<void> {
    for (const s of this.index.seen()) {
      await out({
        key: 'SEEN',
        value: kv([
          { key: 'UNIQUEID', value: str(s.uniqueid) },
          { key: 'LASTREAD', value: num(s.lastread) },
          { key: 'LASTUID', value: num(s.lastuid) },
          { key: 'LASTCHANGE', value: num(s.lastchange) },
          { key: 'SEENUIDS', value: str(s.seenuids ?? '') },
        ]),
      });
    }
    const subs = this.index.subscriptions(true);
    if (subs.length > 0) await out(lsubItem(subs.map((s) => s.mboxname)));
    for (const s of this.index.sieve(true)) {
      await out({
        key: 'SIEVE',
        value: kv([
          { key: 'FILENAME', value: str(s.filename) },
          { key: 'LAST_UPDATE', value: num(s.last_update) },
          { key: 'GUID', value: str(s.guid) },
          { key: 'ISACTIVE', value: num(0) },
        ]),
      });
    }
  }

  /** `* MAILBOX` for each name that exists and is not deleted; others are left out. */
  async mailboxes(names: readonly string[], out: ReplyOut): Promise<void> {
    for (const n of names) {
      const m = this.index.mailboxByName(n);
      if (m && m.deleted === null) await out({ key: 'MAILBOX', value: kv(mailboxItems(m)) });
    }
  }

  /** `* MAILBOX` with every record; false when no mailbox has this name. */
  async fullMailbox(name: string, out: ReplyOut): Promise<boolean> {
    const m = this.index.mailboxByName(name);
    if (!m) return false;
    const items = mailboxItems(m);
    items.push({ key: 'RECORD', value: { kind: 'list', items: this.index.mailboxRecords(m.id).map(recordValue) } });
    await out({ key: 'MAILBOX', value: kv(items) });
    return true;
  }
}
