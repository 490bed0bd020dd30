/**
 * Internal mailbox names (replica-semantics §1.10) and validation of every
 * name that arrives from the wire.
 *
 * Internal names use `.` as the hierarchy separator; the INBOX of userid
 * `local[@domain]` is `[domain!]user.<local'>` with every `.` of local
 * replaced by `^`. Delayed-delete copies live under `[domain!]<P>.user.…`.
 *
 * Invariant: nothing validated here ever becomes a filesystem path. Stores
 * key files by validated GUIDs only; names are database keys. Validation
 * still refuses anything that could be dangerous if a future layout did use
 * them (`..`, `/`, NUL, control characters) and anything longer than Cyrus
 * accepts (MAX_MAILBOX_NAME 490).
 */
import { CommandError } from '../../transforms/errors.js';

/** Cyrus MAX_MAILBOX_NAME. */
export const MAX_MAILBOX_NAME = 490;
/** Cyrus limits a userid to MAX_MAILBOX_NAME too (it becomes part of a mailbox name). */
export const MAX_USERID = 490;
export const MAX_PARTITION = 256;
export const MAX_FILENAME = 255;
export const DEFAULT_DELETED_PREFIX = 'DELETED';

export interface NameOptions {
  /** delayed-delete prefix (imapd.conf deletedprefix) */
  deletedPrefix?: string;
  /** domain omitted from internal names (imapd.conf defaultdomain) */
  defaultDomain?: string | null;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
const GUID_RE = /^[0-9a-f]{40}$/;

function bad(what: string, value: string, why: string): never {
  const shown = value.length > 60 ? `${value.slice(0, 60)}...` : value;
  throw new CommandError('IMAP_MAILBOX_BADNAME', `Invalid ${what} ${JSON.stringify(shown)}: ${why}`);
}

function checkCommon(what: string, value: unknown, max: number): string {
  if (typeof value !== 'string') {
    throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', `Missing or ill-typed ${what}`);
  }
  if (value.length > max) bad(what, value, `longer than ${max} octets`);
  if (CONTROL.test(value)) bad(what, value, 'contains NUL or a control character');
  if (value.includes('/')) bad(what, value, "contains '/'");
  return value;
}

/**
 * A mailbox name as it arrives in MBOXNAME, OLDMBOXNAME, LSUB subscriptions,
 * GET MAILBOXES. Empty hierarchy components (`..`, leading or trailing `.`)
 * are refused: Cyrus never produces them.
 */
export function validateMailboxName(name: unknown, what = 'mailbox name'): string {
  const s = checkCommon(what, name, MAX_MAILBOX_NAME);
  if (s.length === 0) bad(what, s, 'empty');
  const bang = s.indexOf('!');
  const local = bang >= 0 ? s.slice(bang + 1) : s;
  if (bang >= 0) validateDomain(s.slice(0, bang), what, s);
  if (local.length === 0) bad(what, s, 'empty after the domain');
  if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) {
    bad(what, s, 'empty hierarchy component');
  }
  return s;
}

function validateDomain(domain: string, what: string, whole: string): void {
  if (domain.length === 0 || domain.includes('!') || domain.includes('..') || domain.startsWith('.')) {
    bad(what, whole, 'malformed domain part');
  }
}

/** A userid (GET USER, SEEN, SUB, SIEVE ...). The empty userid is allowed only where the caller says so. */
export function validateUserid(userid: unknown, allowEmpty = false): string {
  const s = checkCommon('user id', userid, MAX_USERID);
  if (s.length === 0) {
    if (allowEmpty) return s;
    bad('user id', s, 'empty');
  }
  if (s.includes('..') || s.startsWith('.')) bad('user id', s, "contains '..' or starts with '.'");
  if (s.includes('!')) bad('user id', s, "contains '!'");
  return s;
}

/** A partition label: an opaque name chosen by the master, echoed back; never a path. */
export function validatePartition(partition: unknown): string {
  const s = checkCommon('partition', partition, MAX_PARTITION);
  if (!/^[A-Za-z0-9_.-]+$/.test(s) || s.startsWith('.') || s.includes('..')) {
    bad('partition', s, 'only letters, digits, "_", "-" and inner "." are allowed');
  }
  return s;
}

/** A sieve FILENAME (`<name>.script`, `<name>.bc`). */
export function validateFilename(filename: unknown): string {
  const s = checkCommon('file name', filename, MAX_FILENAME);
  if (s.length === 0) bad('file name', s, 'empty');
  if (s === '.' || s === '..' || s.includes('..')) bad('file name', s, "contains '..'");
  return s;
}

/** A GUID: 40 lower-case hex digits (upper case is folded). */
export function validateGuid(guid: unknown): string {
  if (typeof guid !== 'string') throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', 'Missing or ill-typed GUID');
  const g = guid.toLowerCase();
  if (!GUID_RE.test(g)) {
    throw new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', `Invalid GUID ${JSON.stringify(guid.slice(0, 60))}: not 40 hex digits`);
  }
  return g;
}

export function isGuid(s: string): boolean {
  return GUID_RE.test(s);
}

/** Splits `[domain!]rest`. */
export function splitDomain(name: string): { domain: string | null; local: string } {
  const bang = name.indexOf('!');
  return bang < 0 ? { domain: null, local: name } : { domain: name.slice(0, bang), local: name.slice(bang + 1) };
}

/** INBOX of a userid: `[domain!]user.<local with . -> ^>`. */
export function useridToInbox(userid: string, opts: NameOptions = {}): string {
  const at = userid.indexOf('@');
  let local = at < 0 ? userid : userid.slice(0, at);
  let domain: string | null = at < 0 ? null : userid.slice(at + 1);
  if (domain !== null && opts.defaultDomain && domain === opts.defaultDomain) domain = null;
  if (domain === '') domain = null;
  local = local.replace(/\./g, '^');
  return `${domain ? `${domain}!` : ''}user.${local}`;
}

/** The user's DELETED-namespace prefix (every delayed-delete copy starts with it). */
export function deletedUserPrefix(userid: string, opts: NameOptions = {}): string {
  const inbox = useridToInbox(userid, opts);
  const { domain, local } = splitDomain(inbox);
  return `${domain ? `${domain}!` : ''}${opts.deletedPrefix ?? DEFAULT_DELETED_PREFIX}.${local}.`;
}

function localToUserid(localPart: string, domain: string | null): string {
  const u = localPart.replace(/\^/g, '.');
  return domain ? `${u}@${domain}` : u;
}

export interface ParsedName {
  domain: string | null;
  /** owner userid, null for shared mailboxes */
  userid: string | null;
  /** inside the DELETED namespace */
  deleted: boolean;
  /** path below the INBOX (or below the top for shared), '' for the INBOX itself */
  rest: string;
  /** exactly a user INBOX (not DELETED) */
  isInbox: boolean;
}

/** Owner and shape of an internal name; `#sieve` and DELETED copies belong to their user. */
export function parseMailboxName(name: string, opts: NameOptions = {}): ParsedName {
  const { domain, local } = splitDomain(name);
  const prefix = opts.deletedPrefix ?? DEFAULT_DELETED_PREFIX;
  let deleted = false;
  let body = local;
  if (body.startsWith(`${prefix}.`)) {
    deleted = true;
    body = body.slice(prefix.length + 1);
  }
  if (body.startsWith('user.')) {
    const parts = body.slice(5).split('.');
    const user = parts[0] ?? '';
    if (user.length > 0) {
      const rest = parts.slice(1).join('.');
      return {
        domain,
        userid: localToUserid(user, domain),
        deleted,
        rest,
        isInbox: !deleted && rest === '',
      };
    }
  }
  return { domain, userid: null, deleted, rest: body, isInbox: false };
}

export function mailboxOwner(name: string, opts: NameOptions = {}): string | null {
  return parseMailboxName(name, opts).userid;
}

export function isDeletedName(name: string, opts: NameOptions = {}): boolean {
  return parseMailboxName(name, opts).deleted;
}

/** Is `name` the user's INBOX, one of its descendants, or one of the user's DELETED copies? */
export function belongsToUser(name: string, userid: string, opts: NameOptions = {}): boolean {
  const inbox = useridToInbox(userid, opts);
  return name === inbox || name.startsWith(`${inbox}.`) || name.startsWith(deletedUserPrefix(userid, opts));
}

/** Proper ancestors of a name, nearest first (`a.b.c` -> `a.b`, `a`), domain kept. */
export function ancestors(name: string): string[] {
  const { domain, local } = splitDomain(name);
  const out: string[] = [];
  let i = local.lastIndexOf('.');
  while (i > 0) {
    out.push(`${domain ? `${domain}!` : ''}${local.slice(0, i)}`);
    i = local.lastIndexOf('.', i - 1);
  }
  return out;
}

/**
 * Cyrus mailbox-list order: the hierarchy separator sorts before every other
 * octet, so a parent is immediately followed by its children.
 */
export function mailboxSortKey(name: string): string {
  return name.replace(/\./g, '\x01');
}

export function compareMailboxNames(a: string, b: string): number {
  const ka = mailboxSortKey(a);
  const kb = mailboxSortKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
