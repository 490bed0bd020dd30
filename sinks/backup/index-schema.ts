/**
 * The backup index's schema (backup-format §6): Cyrus 3.6.1's schema text
 * (backup/lcb_sqlconsts.c, whitespace collapsed as its QUOTE() macro does),
 * the version upgrades, the statements, the row types and the octet-exact
 * text columns.
 */


/** `#define QUOTE(...) #__VA_ARGS__`: whitespace runs become one space. */
export function quote(sql: string): string {
  return sql.replace(/\s+/g, ' ').trim();
}

export const INDEX_VERSION = 3;

// Cyrus's schema text, a table to a paragraph (QUOTE() collapses the
// whitespace, so only the words count). The tables the later schema versions
// added (UPGRADES below) are written once, used both by the schema of a new
// index and by the upgrades of an old one (lcb_sqlconsts.c repeats them).
const SUBSCRIPTION_SQL = `
    CREATE TABLE subscription(
        id INTEGER PRIMARY KEY ASC, last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        mboxname CHAR UNIQUE NOT NULL, unsubscribed INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_sub_mbx ON subscription(mboxname);`;

const SEEN_SQL = `
    CREATE TABLE seen(
        id INTEGER PRIMARY KEY ASC, last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        uniqueid CHAR UNIQUE NOT NULL, lastread INTEGER, lastuid INTEGER, lastchange INTEGER, seenuids CHAR
    );
    CREATE INDEX IF NOT EXISTS idx_seen_unq ON seen(uniqueid);`;

const SIEVE_SQL = `
    CREATE TABLE sieve(
        id INTEGER PRIMARY KEY ASC, chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        last_update INTEGER, filename CHAR NOT NULL, guid CHAR NOT NULL, offset INTEGER, deleted INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_siv_fn ON sieve(filename);`;

export const INIT_SQL = quote(`
    CREATE TABLE chunk(
        id INTEGER PRIMARY KEY ASC, ts_start INTEGER, ts_end INTEGER, offset INTEGER unique,
        length INTEGER, file_sha1 TEXT, data_sha1 TEXT
    );

    CREATE TABLE message(
        id INTEGER PRIMARY KEY ASC, guid CHAR UNIQUE NOT NULL, partition CHAR,
        chunk_id INTEGER REFERENCES chunk(id), offset INTEGER, size INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_msg_guid ON message(guid);

    CREATE TABLE mailbox(
        id INTEGER PRIMARY KEY ASC, last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        uniqueid CHAR UNIQUE NOT NULL, mboxname CHAR NOT NULL, mboxtype CHAR,
        last_uid INTEGER, highestmodseq INTEGER, recentuid INTEGER, recenttime INTEGER,
        last_appenddate INTEGER, pop3_last_login INTEGER, pop3_show_after INTEGER,
        uidvalidity INTEGER, partition CHAR, acl CHAR, options CHAR,
        sync_crc INTEGER, sync_crc_annot INTEGER, quotaroot CHAR, xconvmodseq INTEGER,
        annotations CHAR, deleted INTEGER
    );
    CREATE INDEX IF NOT EXISTS idx_bmb_uid ON mailbox(uniqueid);

    CREATE TABLE mailbox_message(
        id INTEGER PRIMARY KEY ASC, mailbox_id INTEGER NOT NULL REFERENCES mailbox(id),
        message_id INTEGER NOT NULL REFERENCES message(id), last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),
        uid INTEGER NOT NULL, modseq INTEGER, last_updated INTEGER, flags CHAR,
        internaldate INTEGER, annotations CHAR, expunged INTEGER,
        UNIQUE (mailbox_id, message_id)
    );
    CREATE INDEX IF NOT EXISTS idx_mbr_uid ON mailbox_message(uid);
${SUBSCRIPTION_SQL}
${SEEN_SQL}
${SIEVE_SQL}
`);

export const UPGRADES: { to: number; sql: string }[] = [
  { to: 2, sql: quote(SUBSCRIPTION_SQL) },
  { to: 3, sql: quote(SEEN_SQL) },
  { to: 4, sql: quote(SIEVE_SQL) },
];

export const SQL = {
  chunkStart: quote(`INSERT INTO chunk ( ts_start, offset, file_sha1 ) VALUES ( :ts_start, :offset, :file_sha1 );`),
  chunkEnd: quote(`UPDATE chunk SET ts_end = :ts_end, length = :length, data_sha1 = :data_sha1 WHERE id = :id;`),
  mailboxUpdate: quote(`
    UPDATE mailbox SET
        last_chunk_id = :last_chunk_id, mboxname = :mboxname, mboxtype = :mboxtype, last_uid = :last_uid,
        highestmodseq = :highestmodseq, recentuid = :recentuid, recenttime = :recenttime,
        last_appenddate = :last_appenddate, pop3_last_login = :pop3_last_login,
        pop3_show_after = :pop3_show_after, uidvalidity = :uidvalidity, partition = :partition,
        acl = :acl, options = :options, sync_crc = :sync_crc, sync_crc_annot = :sync_crc_annot,
        quotaroot = :quotaroot, xconvmodseq = :xconvmodseq, annotations = :annotations, deleted = :deleted
    WHERE uniqueid = :uniqueid;`),
  mailboxInsert: quote(`
    INSERT INTO mailbox (
        last_chunk_id, uniqueid, mboxname, mboxtype, last_uid,
        highestmodseq, recentuid, recenttime, last_appenddate,
        pop3_last_login, pop3_show_after, uidvalidity, partition,
        acl, options, sync_crc, sync_crc_annot, quotaroot,
        xconvmodseq, annotations, deleted
    ) VALUES (
        :last_chunk_id, :uniqueid, :mboxname, :mboxtype, :last_uid,
        :highestmodseq, :recentuid, :recenttime, :last_appenddate,
        :pop3_last_login, :pop3_show_after, :uidvalidity, :partition,
        :acl, :options, :sync_crc, :sync_crc_annot, :quotaroot,
        :xconvmodseq, :annotations, :deleted
    );`),
  mailboxRename: quote(`UPDATE mailbox SET mboxname = :newmboxname, partition = :partition, uidvalidity = :uidvalidity WHERE mboxname = :oldmboxname;`),
  mailboxDelete: quote(`UPDATE mailbox SET deleted = :deleted WHERE mboxname = :mboxname;`),
  mmUpdate: quote(`
    UPDATE mailbox_message SET
        last_chunk_id = :last_chunk_id, uid = :uid, modseq = :modseq, last_updated = :last_updated,
        flags = :flags, internaldate = :internaldate, annotations = :annotations,
        expunged = COALESCE(
            (SELECT expunged FROM mailbox_message WHERE mailbox_id = :mailbox_id AND message_id = :message_id),
            :expunged
        )
    WHERE mailbox_id = :mailbox_id AND message_id = :message_id;`),
  mmInsert: quote(`
    INSERT INTO mailbox_message (
        mailbox_id, message_id, last_chunk_id, uid, modseq, last_updated, flags, internaldate, annotations, expunged
    ) VALUES (
        :mailbox_id, :message_id, :last_chunk_id, :uid, :modseq, :last_updated, :flags, :internaldate, :annotations, :expunged
    );`),
  mmExpunge: quote(`UPDATE mailbox_message SET expunged = :expunged WHERE mailbox_id = :mailbox_id AND uid = :uid;`),
  messageUpdate: quote(`UPDATE message SET guid = :guid, partition = :partition, chunk_id = :chunk_id, offset = :offset, size = :size WHERE guid = :guid;`),
  messageInsert: quote(`INSERT INTO message ( guid, partition, chunk_id, offset, size ) VALUES ( :guid, :partition, :chunk_id, :offset, :size );`),
  seenUpdate: quote(`UPDATE seen SET last_chunk_id = :last_chunk_id, lastread = :lastread, lastuid = :lastuid, lastchange = :lastchange, seenuids = :seenuids WHERE uniqueid = :uniqueid;`),
  seenInsert: quote(`INSERT INTO seen ( last_chunk_id, uniqueid, lastread, lastuid, lastchange, seenuids ) VALUES ( :last_chunk_id, :uniqueid, :lastread, :lastuid, :lastchange, :seenuids );`),
  subUpdate: quote(`UPDATE subscription SET last_chunk_id = :last_chunk_id, unsubscribed = :unsubscribed WHERE mboxname = :mboxname;`),
  subInsert: quote(`INSERT INTO subscription ( last_chunk_id, mboxname, unsubscribed ) VALUES ( :last_chunk_id, :mboxname, :unsubscribed );`),
  sieveInsert: quote(`INSERT INTO sieve ( chunk_id, last_update, filename, guid, offset ) VALUES ( :chunk_id, :last_update, :filename, :guid, :offset );`),
  sieveDelete: quote(`UPDATE sieve SET deleted = :deleted WHERE filename = :filename AND deleted IS NULL;`),
};

// ---------------------------------------------------------------------------
// Row types (text columns as latin1 octet strings)

export interface ChunkRow {
  id: number;
  ts_start: number | null;
  ts_end: number | null;
  offset: number;
  length: number | null;
  file_sha1: string | null;
  data_sha1: string | null;
}

export interface MailboxRow {
  id: number;
  last_chunk_id: number;
  uniqueid: string;
  mboxname: string;
  mboxtype: string | null;
  last_uid: number | bigint | null;
  highestmodseq: number | bigint | null;
  recentuid: number | bigint | null;
  recenttime: number | bigint | null;
  last_appenddate: number | bigint | null;
  pop3_last_login: number | bigint | null;
  pop3_show_after: number | bigint | null;
  uidvalidity: number | bigint | null;
  partition: string | null;
  acl: string | null;
  options: string | null;
  sync_crc: number | bigint | null;
  sync_crc_annot: number | bigint | null;
  quotaroot: string | null;
  xconvmodseq: number | bigint | null;
  annotations: string | null;
  deleted: number | null;
}

/** A mailbox_message row joined with its message and mailbox. */
export interface RecordRow {
  id: number;
  mailbox_id: number;
  mailbox_uniqueid: string;
  message_id: number;
  last_chunk_id: number;
  uid: number;
  modseq: number | bigint | null;
  last_updated: number | bigint | null;
  flags: string | null;
  internaldate: number | bigint | null;
  guid: string;
  size: number | null;
  annotations: string | null;
  expunged: number | null;
}

export interface MessageRow {
  id: number;
  guid: string;
  partition: string | null;
  chunk_id: number | null;
  offset: number | null;
  size: number | null;
}

export interface SeenRow {
  id: number;
  last_chunk_id: number;
  uniqueid: string;
  lastread: number | null;
  lastuid: number | null;
  lastchange: number | null;
  seenuids: string | null;
}

export interface SubscriptionRow {
  id: number;
  last_chunk_id: number;
  mboxname: string;
  unsubscribed: number | null;
}

export interface SieveRow {
  id: number;
  chunk_id: number;
  last_update: number | null;
  filename: string;
  guid: string;
  offset: number | null;
  deleted: number | null;
}

// ---------------------------------------------------------------------------
// Octet text <-> SQLite text

/** latin1 octet string -> the JS string whose UTF-8 encoding is those octets (when they are valid UTF-8). */
export function toDbText(s: string): string {
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(s)) return s;
  const b = Buffer.from(s, 'latin1');
  const u = b.toString('utf8');
  return Buffer.from(u, 'utf8').equals(b) ? u : s;
}

/** SQLite text -> latin1 octet string. */
export function fromDbText(s: string): string;
export function fromDbText(s: string | null): string | null;
export function fromDbText(s: string | null): string | null {
  if (s === null) return null;
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(s)) return s;
  return Buffer.from(s, 'utf8').toString('latin1');
}

export const TEXT_COLUMNS = new Set([
  'uniqueid', 'mailbox_uniqueid', 'mboxname', 'mboxtype', 'partition', 'acl', 'options', 'quotaroot',
  'annotations', 'flags', 'guid', 'seenuids', 'filename', 'file_sha1', 'data_sha1',
]);

export function rowFromDb<T>(row: unknown): T {
  if (row === undefined || row === null) return row as T;
  const r = row as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    const v = r[k];
    if (typeof v === 'string' && TEXT_COLUMNS.has(k)) r[k] = fromDbText(v);
  }
  return r as T;
}

