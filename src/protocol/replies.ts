/**
 * Reply texts and generic data-line builders (csync-wire.md §2.3, §3, §6;
 * backup-format.md §9). Texts are the ones real Cyrus 3.6.1 prints:
 * imap/sync_support.c `sync_response`, imap/sync_server.c `cmdloop`,
 * backup/backupd.c `backupd_response`. Status lines are given without CRLF.
 */
import type { CyrsyncError, CyrusCode } from '../../transforms/errors.js';
import type { DlistItem, DlistValue } from '../../transforms/dlist-types.js';

export type Profile = 'sync' | 'backup';

/** Success of GET/APPLY/RESTORE. */
export function okSuccess(profile: Profile = 'sync'): string {
  return profile === 'backup' ? 'OK Success' : 'OK success';
}

export const OK_NOOP = 'OK Noop completed';
export const OK_RESTARTING = 'OK Restarting';
export const OK_FINISHED = 'OK Finished';
export const OK_BEGIN_TLS = 'OK Begin TLS negotiation now';
export const BYE_SHUTDOWN = 'BYE shutting down';

export const BAD_NULL_COMMAND = 'BAD Null command';
export const BAD_UNRECOGNIZED = 'BAD IMAP_PROTOCOL_ERROR Unrecognized command';
export const BAD_INVALID_MECHANISM = 'BAD Invalid mechanism';
export const BAD_ALREADY_AUTHENTICATED = 'BAD Already authenticated';
export const BAD_CLIENT_CANCELED = 'BAD Client canceled authentication';
export const BAD_STARTTLS_AFTER_AUTH = "BAD Can't Starttls after authentication";
export const BAD_STARTTLS_TWICE = 'BAD Already did a successful Starttls';
export const NO_PLEASE_AUTHENTICATE = 'NO Please authenticate first';
/** error_message(IMAP_PERMISSION_DENIED) */
export const NO_PERMISSION_DENIED = 'NO Permission denied';
export const NO_TLS_INIT = 'NO Error initializing TLS';
export const NO_STARTTLS_FAILED = 'NO Starttls failed';
/** backupd: STARTTLS (when TLS is configured) */
export const NO_NOT_IMPLEMENTED = 'NO command not implemented';
export const NO_ZLIB = 'NO ZLIB not available';
export const NO_UNKNOWN_ERROR = 'NO Unknown error';
export const NO_PROTOCOL_ERROR = 'NO IMAP_PROTOCOL_ERROR Protocol error';
/**
 * Cyrus 3.6.1 sync_server prints the code alone (sync_response has the text
 * commented out); backupd prints `... Bad parameters`. Clients of every
 * release read the bare form as a generic refusal, which is what it means.
 */
export const NO_BAD_PARAMETERS_SYNC = 'NO IMAP_PROTOCOL_BAD_PARAMETERS';
export const NO_BAD_PARAMETERS_BACKUP = 'NO IMAP_PROTOCOL_BAD_PARAMETERS Bad parameters';

export function noBadParameters(profile: Profile = 'sync'): string {
  return profile === 'backup' ? NO_BAD_PARAMETERS_BACKUP : NO_BAD_PARAMETERS_SYNC;
}

/** `Noop`, `Compress`: the verb as Cyrus echoes it (initial capital, rest lower case). */
export function cyrusVerbName(verb: string): string {
  if (verb.length === 0) return verb;
  return verb[0]!.toUpperCase() + verb.slice(1).toLowerCase();
}

export function badMissingArgument(verb: string): string {
  return `BAD Missing required argument to ${cyrusVerbName(verb)}`;
}

export function badExtraArguments(verb: string): string {
  return `BAD Unexpected extra arguments to ${cyrusVerbName(verb)}`;
}

/** sync profile: an argument of GET/APPLY/RESTORE that did not parse. */
export function badFailedToParse(verb: 'GET' | 'APPLY' | 'RESTORE'): string {
  return `BAD IMAP_PROTOCOL_ERROR Failed to parse ${verb} line`;
}

export function okCompressActive(algorithm: string): string {
  return `OK ${algorithm} active`;
}
export function noCompressionActive(algorithm: string): string {
  return `NO Compression already active: ${algorithm}`;
}
export function noUnknownCompression(algorithm: string): string {
  return `NO Unknown compression algorithm: ${algorithm}`;
}

export type SecurityLayer =
  | 'no protection'
  | 'integrity protection'
  | 'privacy protection'
  | 'tls protection'
  | 'tls plus integrity protection'
  | 'tls plus privacy protection';

export function okAuthenticated(layer: SecurityLayer = 'no protection'): string {
  return `OK Success (${layer})`;
}
export function noAuthentication(reason: string): string {
  return `NO ${reason}`;
}
export function noReadingClientResponse(detail: string): string {
  return `NO Error reading client response: ${detail}`;
}

/** `* Fatal error: <text>` before the connection closes. */
export function fatalError(text: string): string {
  return `* Fatal error: ${text}`;
}

/** The `NO` texts of sync_response (imap/sync_support.c) by code. */
const SYNC_TEXTS: Partial<Record<CyrusCode, string>> = {
  IMAP_INVALID_USER: 'NO IMAP_INVALID_USER No Such User',
  IMAP_MAILBOX_NONEXISTENT: 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox',
  IMAP_MAILBOX_LOCKED: 'NO IMAP_MAILBOX_LOCKED Mailbox locked',
  IMAP_MAILBOX_MOVED: 'NO IMAP_MAILBOX_MOVED Mailbox exists with another name or uniqueid',
  IMAP_MAILBOX_NOTSUPPORTED: 'NO IMAP_MAILBOX_NOTSUPPORTED Operation is not supported on mailbox',
  IMAP_SYNC_CHECKSUM: 'NO IMAP_SYNC_CHECKSUM Checksum Failure',
  IMAP_SYNC_CHANGED: 'NO IMAP_SYNC_CHANGED Changed since last sync',
  IMAP_SYNC_BADSIEVE: 'NO IMAP_SYNC_BADSIEVE Sieve script compilation failure',
  IMAP_PROTOCOL_ERROR: NO_PROTOCOL_ERROR,
  IMAP_PROTOCOL_BAD_PARAMETERS: NO_BAD_PARAMETERS_SYNC,
};

/** backupd_response (backup/backupd.c): four codes, the rest is `Unknown error`. */
const BACKUP_TEXTS: Partial<Record<CyrusCode, string>> = {
  IMAP_MAILBOX_LOCKED: 'NO IMAP_MAILBOX_LOCKED Mailbox locked',
  IMAP_MAILBOX_NONEXISTENT: 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox',
  IMAP_PROTOCOL_ERROR: NO_PROTOCOL_ERROR,
  IMAP_PROTOCOL_BAD_PARAMETERS: NO_BAD_PARAMETERS_BACKUP,
};

/** Longest plain reason put on a `NO IMAP_NOSPACE` line. */
const MAX_REASON = 200;

/**
 * The status line for a failed GET/APPLY/RESTORE. Codes without a Cyrus text
 * (I/O errors, internal errors, anything unknown) are `NO Unknown error`,
 * exactly as Cyrus answers them; the detail belongs in the log.
 *
 * One exception: a full disk is answered `NO IMAP_NOSPACE <plain reason>`
 * in both profiles. The real sync_server and backupd answer `NO Unknown
 * error` here (sync_response and backupd_response have no text for it).
 * sync_client's sync_parse_response knows neither line and treats both as
 * IMAP_REMOTE_DENIED, so its behaviour is the same, but it logs the line
 * ("... received NO response: ..."), and this one tells the master's
 * administrator what to fix.
 */
export function noFromError(err: CyrsyncError | { code?: unknown; message?: unknown } | null | undefined, profile: Profile = 'sync'): string {
  const code = err && typeof err === 'object' && typeof err.code === 'string' ? (err.code as CyrusCode) : undefined;
  if (code === 'IMAP_NOSPACE') return noSpace(err && typeof err.message === 'string' ? err.message : '');
  const table = profile === 'backup' ? BACKUP_TEXTS : SYNC_TEXTS;
  return (code && table[code]) || NO_UNKNOWN_ERROR;
}

/** `NO IMAP_NOSPACE <reason>`: the reason on one line of printable ASCII. */
function noSpace(reason: string): string {
  let text = reason.replace(/[^\x20-\x7e]+/g, ' ').trim();
  if (text.length > MAX_REASON) text = `${text.slice(0, MAX_REASON - 3)}...`;
  return `NO IMAP_NOSPACE ${text || 'No space left on the disk'}`;
}

/** The code a client recovers from a `NO` line (sync_parse_response), or null. */
export function codeOfReply(line: string): CyrusCode | null {
  const m = /^NO (IMAP_[A-Z_]+) /.exec(line);
  return m ? (m[1] as CyrusCode) : null;
}

// ---------------------------------------------------------------------------
// Generic data lines

function atomList(names: readonly string[]): DlistValue {
  return { kind: 'list', items: names.map((n) => ({ kind: 'string', value: n }) as DlistValue) };
}

/** `* ENABLED (<name> ...)`: always sent for APPLY CAPABILITIES, possibly `()`. */
export function enabledItem(names: readonly string[]): DlistItem {
  return { key: 'ENABLED', value: atomList(names) };
}

/** `* MISSING (<guid> ...)`: guids in lower case. Omit the line when empty. */
export function missingItem(guids: readonly string[]): DlistItem {
  return { key: 'MISSING', value: atomList(guids.map((g) => g.toLowerCase())) };
}

/** `* LSUB (<mboxname> ...)`: omit the line when there are no subscriptions. */
export function lsubItem(mboxnames: readonly string[]): DlistItem {
  return { key: 'LSUB', value: atomList(mboxnames) };
}

/** `* MESSAGE NIL`: GET FETCH of a file that cannot be read. */
export function messageNilItem(): DlistItem {
  return { key: 'MESSAGE', value: { kind: 'nil' } };
}

/** Greeting lines (csync-wire §2.1). */
export function greetingLines(opts: {
  profile: Profile;
  hostname: string;
  version: string;
  sasl?: readonly string[];
  starttls?: boolean;
  compress?: boolean;
  sieveMailbox?: boolean;
  replicationArchive?: boolean;
  preauth?: boolean;
}): string[] {
  const lines: string[] = [];
  const server = opts.profile === 'backup' ? 'Cyrus backup server' : 'Cyrus sync server';
  if (!opts.preauth) {
    if (opts.sasl && opts.sasl.length > 0) lines.push(`* SASL ${opts.sasl.join(' ')}`);
    if (opts.starttls) lines.push('* STARTTLS');
    if (opts.compress) lines.push('* COMPRESS DEFLATE');
    if (opts.profile === 'sync') {
      if (opts.sieveMailbox) lines.push('* SIEVE-MAILBOX');
      if (opts.replicationArchive) lines.push('* REPLICATION-ARCHIVE');
    }
  }
  lines.push(`* OK ${opts.hostname} ${server} ${opts.version}`);
  return lines;
}
