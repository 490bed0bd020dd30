/**
 * Backup data files (backup-format §5): a concatenation of gzip members, one
 * per chunk, each inflating to the 29-octet header line and then records
 * `<ts> APPLY <dlist>` CRLF.
 *
 * Split by concern: positional I/O and hashing on the locked descriptor
 * (datafile-io), the chunk writer (datafile-write) and the member and record
 * readers with the torn-tail check (datafile-read); this module is the entry
 * point the rest of the code base imports.
 */
export * from './datafile-io.js';
export * from './datafile-write.js';
export * from './datafile-read.js';
