/**
 * The per-backup SQLite index `<data file>.index` (backup-format §6), with
 * Cyrus 3.6.1's schema text (backup/lcb_sqlconsts.c, whitespace collapsed
 * as its QUOTE() macro does), connection settings (lib/sqldb.c), version
 * handling and update rules (backup/lcb_indexw.c).
 *
 * Invariants:
 * - One transaction per chunk: beginChunk() opens it with the chunk row,
 *   endChunk() fills the row in and commits; every record indexed between
 *   them belongs to that chunk. A MAILBOX record is all-or-nothing inside
 *   its own savepoint.
 * - Storage classes are those the columns declare: integers are bound as
 *   integers (BigInt past 2^53), text as text; `flags` is never the empty
 *   string (some readers crash on it).
 * - Text is octets: values from the wire are latin1 strings (one char per
 *   octet) and are stored as the same octets (valid UTF-8 passes through
 *   unchanged); reads give latin1 strings back.
 * - The index is only opened while the data file's lock is held (§4); a
 *   non-empty data file without an index is an error ("reindex needed"),
 *   never a fresh empty index.
 */
//
// The index is split by concern; this module is the entry point the rest of
// the code base imports.
export * from './index-schema.js';
export * from './index-core.js';
export * from './index-verify.js';
