/**
 * CommandLine (verb + dlist arguments) => typed Command (src/protocol/types.ts).
 *
 * Follows what real Cyrus 3.6.1 does, in its order: imap/sync_server.c
 * `cmdloop` (verbs, argument counts), imap/sync_support.c `sync_apply` /
 * `sync_get` / `sync_restore` and the `sync_apply_*` / `sync_get_*` field
 * checks (sync profile); backup/backupd.c `cmdloop`, `cmd_apply*`, `cmd_get`
 * (backup profile).
 *
 * A line that must be refused is returned as `{ verb: 'REFUSED', reply }`
 * with the exact status line; nothing here throws for bad input. Field
 * checks that need connection or store state (authentication, SIEVE-MAILBOX
 * unless `opts.sieveMailbox` is given, GUID/SHA-1 agreement of file literals)
 * are left to the session, router and sink.
 */
import { CommandError, type CyrsyncError, type CyrusCode } from '../../transforms/errors.js';
import type { CommandLine, DlistFile, DlistValue } from '../../transforms/dlist-types.js';
import {
  BAD_INVALID_MECHANISM,
  BAD_NULL_COMMAND,
  BAD_UNRECOGNIZED,
  NO_PROTOCOL_ERROR,
  badExtraArguments,
  badFailedToParse,
  badMissingArgument,
  noBadParameters,
  type Profile,
} from './replies.js';
import type {
  Annot,
  ApplyCommand,
  BinaryValue,
  Command,
  GetCommand,
  MailboxIn,
  QuotaIn,
  RecordIn,
  RefusedCommand,
} from './types.js';

export interface DecodeOptions {
  profile: Profile;
  /**
   * Whether SIEVE-MAILBOX is enabled on this connection. When given, an APPLY
   * MAILBOX of a sieve-store folder (MBOXTYPE with `f`) is refused without it
   * (csync-wire §5.3 step 2); when omitted that check is left to the caller.
   */
  sieveMailbox?: boolean;
  /**
   * Whether TLS is configured (STARTTLS usable at all). Both real servers treat
   * STARTTLS as an unknown command when it is not; when omitted the verb is
   * returned for the session to decide.
   */
  starttls?: boolean;
}

/** Internal: unwinds a decoder to the refusal it decided on. */
class Refusal {
  constructor(
    readonly reply: string,
    readonly error: CyrsyncError,
  ) {}
}

function refused(reply: string, code: CyrusCode, message: string, probeTag?: string): RefusedCommand {
  const r: RefusedCommand = { verb: 'REFUSED', reply, error: new CommandError(code, message) };
  if (probeTag !== undefined) r.probeTag = probeTag;
  return r;
}

export function decodeCommand(line: CommandLine, opts: DecodeOptions): Command {
  const profile = opts.profile;
  const verb = line.verb;
  if (verb === '') return refused(BAD_NULL_COMMAND, 'IMAP_PROTOCOL_ERROR', 'empty command line');
  const upper = verb.toUpperCase();
  try {
    switch (upper) {
      case 'AUTHENTICATE':
        return decodeAuthenticate(line);
      case 'STARTTLS':
        // Without TLS configured both servers know no such verb. With it,
        // sync_server checks for arguments; backupd answers `NO command not
        // implemented` whatever follows (the session writes that).
        if (opts.starttls === false) break;
        if (profile === 'sync' && (line.error || line.args.length > 0)) return extraArgs(verb);
        return { verb: 'STARTTLS' };
      case 'COMPRESS':
        return decodeCompress(line);
      case 'NOOP':
      case 'RESTART':
      case 'EXIT':
        if (line.error || line.args.length > 0) return extraArgs(verb);
        return { verb: upper };
      case 'GET':
      case 'APPLY':
        return decodeDlistCommand(upper, line, opts);
      case 'RESTORE':
        if (profile === 'backup') break;
        return decodeDlistCommand(upper, line, opts);
      default:
        break;
    }
  } catch (e) {
    if (e instanceof Refusal) return { verb: 'REFUSED', reply: e.reply, error: e.error };
    // A decoder bug must not end the session: refuse the one command.
    return refused('NO Unknown error', 'IMAP_INTERNAL', `decoding ${upper} failed: ${(e as Error)?.message ?? e}`);
  }
  return unrecognized(line);
}

/**
 * Unknown verb. The IMAP probe of sync_client (`C01 CAPABILITY`, then
 * `Q01 LOGOUT`, csync-wire §2.4) waits for a line starting with its tag.
 * Cyrus 3.6.1 answers the untagged BAD and the client sits out its 10 s
 * timeout before it reconnects speaking csync; the tagged BAD ends the probe
 * at once (a one-user sync with `sync_try_imap: yes`: 0.8 s instead of 11 s).
 */
function unrecognized(line: CommandLine): RefusedCommand {
  const a = line.args;
  if (!line.error && a.length === 1 && a[0]!.kind === 'atom' && /^(CAPABILITY|LOGOUT)$/i.test(a[0]!.value) && isTag(line.verb)) {
    return refused(`${line.verb} ${BAD_UNRECOGNIZED}`, 'IMAP_PROTOCOL_ERROR', `IMAP probe ${a[0]!.value}`, line.verb);
  }
  return refused(BAD_UNRECOGNIZED, 'IMAP_PROTOCOL_ERROR', `unrecognized command ${printable(line.verb)}`);
}

function isTag(s: string): boolean {
  return s.length <= 64 && /^[\x21-\x7e]+$/.test(s) && !/[(){%*"\\+]/.test(s);
}

function printable(s: string): string {
  const t = s.length > 64 ? s.slice(0, 64) + '...' : s;
  return JSON.stringify(t);
}

function extraArgs(verb: string): RefusedCommand {
  return refused(badExtraArguments(verb), 'IMAP_PROTOCOL_ERROR', `unexpected arguments to ${verb.toUpperCase()}`);
}

function missingArgs(verb: string): RefusedCommand {
  return refused(badMissingArgument(verb), 'IMAP_PROTOCOL_ERROR', `missing argument to ${verb.toUpperCase()}`);
}

/** imparse_isatom: what Cyrus accepts as a SASL mechanism name. */
function isImapAtom(s: string): boolean {
  if (s.length === 0 || s.length >= 1024) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80 || c < 0x1f || c === 0x7f) return false;
    if (c === 0x20 || c === 0x7b || c === 0x28 || c === 0x29 || c === 0x22 || c === 0x25 || c === 0x2a || c === 0x5c) {
      return false;
    }
  }
  return true;
}

/** A verb argument as Cyrus's `getword` sees it: the token's text. */
function wordText(v: DlistValue): string | null {
  switch (v.kind) {
    case 'atom':
    case 'flag':
      return v.value;
    case 'nil':
      return 'NIL';
    default:
      return null;
  }
}

function decodeAuthenticate(line: CommandLine): Command {
  const a = line.args;
  if (a.length === 0 && !line.error) return missingArgs(line.verb);
  const mech = a.length > 0 ? wordText(a[0]!) : null;
  if (mech === null || !isImapAtom(mech)) {
    return refused(BAD_INVALID_MECHANISM, 'IMAP_PROTOCOL_ERROR', 'invalid SASL mechanism name');
  }
  if (line.error || a.length > 2) return extraArgs(line.verb);
  let initial: string | null = null;
  if (a.length === 2) {
    initial = wordText(a[1]!);
    if (initial === null) return extraArgs(line.verb);
  }
  return { verb: 'AUTHENTICATE', mechanism: mech, initial };
}

function decodeCompress(line: CommandLine): Command {
  const a = line.args;
  if (a.length === 0 && !line.error) return missingArgs(line.verb);
  if (line.error || a.length > 1) return extraArgs(line.verb);
  const alg = wordText(a[0]!) ?? scalarText(a[0]!);
  if (alg === null) return extraArgs(line.verb);
  return { verb: 'COMPRESS', algorithm: alg };
}

// ---------------------------------------------------------------------------
// GET / APPLY / RESTORE

type DlistVerb = 'GET' | 'APPLY' | 'RESTORE';

function decodeDlistCommand(verb: DlistVerb, line: CommandLine, opts: DecodeOptions): Command {
  const a = line.args;
  const profile = opts.profile;
  const keyText = a.length > 0 ? keyOf(a[0]!) : null;
  if (profile === 'backup') {
    // backupd: dlist_parse failing => missing argument; anything but the end
    // of line after the value => extra arguments.
    if (line.error || a.length < 2 || keyText === null) return missingArgs(verb);
    if (a.length > 2) return extraArgs(verb);
  } else if (line.error || a.length !== 2 || keyText === null) {
    return refused(badFailedToParse(verb), 'IMAP_PROTOCOL_ERROR', line.error?.message ?? `malformed ${verb} line`);
  }
  const value = a[1]!;
  const d = new Decoder(profile);
  // sync_get/sync_apply/sync_restore upper-case the key; backupd's cmd_get
  // does too, its cmd_apply does not.
  const sub = profile === 'backup' && verb === 'APPLY' ? keyText! : keyText!.toUpperCase();
  if (verb === 'GET') return d.get(sub, value);
  if (verb === 'APPLY') {
    const cmd = d.apply(sub, value, opts);
    if (cmd.verb === 'APPLY') cmd.raw = value;
    return cmd;
  }
  return d.restore(sub, value);
}

/** A dlist key: an astring without NUL. */
function keyOf(v: DlistValue): string | null {
  switch (v.kind) {
    case 'atom':
    case 'quoted':
      return v.value;
    case 'literal':
      return v.value.includes(0) ? null : v.value.toString('latin1');
    default:
      return null;
  }
}

/** Text of a scalar (`string` type without the NIL case); null when not a scalar. */
function scalarText(v: DlistValue): string | null {
  switch (v.kind) {
    case 'atom':
    case 'quoted':
    case 'flag':
      return v.value;
    case 'literal':
      // dlist_toatom refuses a buffer holding NUL
      return v.value.includes(0) ? null : v.value.toString('latin1');
    case 'string':
      if (v.value === null) return null;
      return typeof v.value === 'string' ? v.value : v.value.includes(0) ? null : v.value.toString('latin1');
    case 'num':
      return v.value.toString(10);
    default:
      return null;
  }
}

function kvGet(v: DlistValue | undefined, key: string): DlistValue | undefined {
  if (!v || v.kind !== 'kvlist') return undefined;
  // First occurrence wins (dlist_getchild).
  for (const it of v.items) if (it.key === key) return it.value;
  return undefined;
}

const U32_MAX = 0xffffffff;
const U64_MAX = 0xffffffffffffffffn;
const DIGITS = /^[0-9]+$/;
const GUID_RE = /^[0-9a-fA-F]{40}$/;

function parseU64(v: DlistValue | undefined): bigint | null {
  if (!v) return null;
  if (v.kind === 'num') {
    if (typeof v.value === 'number' && !Number.isSafeInteger(v.value)) return null;
    const b = BigInt(v.value);
    return b >= 0n && b <= U64_MAX ? b : null;
  }
  const t = scalarText(v);
  if (t === null || !DIGITS.test(t) || t.length > 40) return null;
  const b = BigInt(t);
  return b <= U64_MAX ? b : null;
}

/**
 * u32: Cyrus keeps the low 32 bits of a larger number; real clients never
 * send one, and truncating a UID or size would corrupt data, so it is refused.
 */
function parseU32(v: DlistValue | undefined): number | null {
  const b = parseU64(v);
  return b === null || b > BigInt(U32_MAX) ? null : Number(b);
}

/** Seconds since the epoch; must fit a JavaScript number exactly. */
function parseDate(v: DlistValue | undefined): number | null {
  const b = parseU64(v);
  return b === null || b > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(b);
}

function parseGuid(v: DlistValue | undefined): string | null {
  if (!v) return null;
  const t = scalarText(v);
  return t !== null && GUID_RE.test(t) ? t.toLowerCase() : null;
}

/** `map` type: binary-safe; NIL is the empty value (dlist_getbuf of DL_NIL). */
function parseMap(v: DlistValue | undefined): BinaryValue | null {
  if (!v) return null;
  switch (v.kind) {
    case 'atom':
    case 'quoted':
    case 'flag':
      return { kind: 'buffer', value: Buffer.from(v.value, 'latin1') };
    case 'literal':
      return { kind: 'buffer', value: v.value };
    case 'nil':
      return { kind: 'buffer', value: Buffer.alloc(0) };
    case 'bigliteral':
      return v.body ? { kind: 'staged', size: v.size, sha1: v.sha1, body: v.body } : null;
    case 'string':
      if (v.value === null) return { kind: 'buffer', value: Buffer.alloc(0) };
      return { kind: 'buffer', value: typeof v.value === 'string' ? Buffer.from(v.value, 'latin1') : v.value };
    case 'num':
      return { kind: 'buffer', value: Buffer.from(v.value.toString(10), 'latin1') };
    default:
      return null;
  }
}

function listItems(v: DlistValue | undefined): DlistValue[] | null {
  if (!v) return null;
  if (v.kind === 'list') return v.items;
  // dlist_getlist accepts any child; NIL simply has no members.
  if (v.kind === 'nil') return [];
  return null;
}

class Decoder {
  constructor(readonly profile: Profile) {}

  private badParams(what: string): Refusal {
    // backupd answers missing fields with a protocol error (cmd_apply_*).
    if (this.profile === 'backup') return new Refusal(NO_PROTOCOL_ERROR, new CommandError('IMAP_PROTOCOL_ERROR', what));
    return new Refusal(noBadParameters('sync'), new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', what));
  }

  /** Always the bad-parameters reply of the profile (backupd_response text). */
  private badParamsStrict(what: string): Refusal {
    return new Refusal(noBadParameters(this.profile), new CommandError('IMAP_PROTOCOL_BAD_PARAMETERS', what));
  }

  private protocolError(what: string): Refusal {
    return new Refusal(NO_PROTOCOL_ERROR, new CommandError('IMAP_PROTOCOL_ERROR', what));
  }

  // -- typed field readers over a kvlist ------------------------------------

  str(kv: DlistValue, key: string): string {
    const v = kvGet(kv, key);
    const t = v ? scalarText(v) : null;
    if (t === null) throw this.badParams(`${key} is missing or not a string`);
    return t;
  }

  strOpt(kv: DlistValue, key: string): string | undefined {
    const v = kvGet(kv, key);
    if (!v) return undefined;
    return scalarText(v) ?? undefined;
  }

  u32(kv: DlistValue, key: string): number {
    const n = parseU32(kvGet(kv, key));
    if (n === null) throw this.badParams(`${key} is missing or not a 32-bit number`);
    return n;
  }

  u64(kv: DlistValue, key: string): bigint {
    const n = parseU64(kvGet(kv, key));
    if (n === null) throw this.badParams(`${key} is missing or not a 64-bit number`);
    return n;
  }

  date(kv: DlistValue, key: string): number {
    const n = parseDate(kvGet(kv, key));
    if (n === null) throw this.badParams(`${key} is missing or not a date`);
    return n;
  }

  list(kv: DlistValue, key: string): DlistValue[] {
    const l = listItems(kvGet(kv, key));
    if (l === null) throw this.badParams(`${key} is missing or not a list`);
    return l;
  }

  map(kv: DlistValue, key: string): BinaryValue {
    const m = parseMap(kvGet(kv, key));
    if (m === null) throw this.badParams(`${key} is missing or not a value`);
    return m;
  }

  /**
   * The operand itself as a string (`GET USER bob`, `APPLY UNMAILBOX x`).
   * sync_server passes a NIL or container operand on as a NULL name, which
   * finds nothing (`GET USER NIL` => `OK success`, `APPLY UNMAILBOX NIL` =>
   * IMAP_MAILBOX_NONEXISTENT): it is read as "" and the store answers.
   * backupd refuses it (`!dl->sval` => bad parameters) where `strict`.
   */
  operand(v: DlistValue, what: string, strict: boolean): string {
    const t = scalarText(v);
    if (t !== null) return t;
    if (this.profile === 'backup' && strict) throw this.badParamsStrict(`${what} is missing or not a string`);
    return '';
  }

  /** A list of names; sync_server walks the members of whatever came, a scalar has none. */
  stringList(v: DlistValue, what: string): string[] {
    let l = listItems(v);
    if (l === null && this.profile === 'sync' && v.kind !== 'kvlist') l = [];
    if (l === null) throw this.badParams(`${what} is not a list`);
    return l.map((it) => {
      const t = scalarText(it);
      if (t === null) throw this.badParams(`${what} holds a non-string member`);
      return t;
    });
  }

  // -- GET --------------------------------------------------------------------

  get(sub: string, v: DlistValue): GetCommand {
    if (this.profile === 'backup' && !BACKUP_GETS.has(sub)) throw this.protocolError(`GET ${sub} is not supported`);
    switch (sub) {
      case 'USER':
        return { verb: 'GET', sub: 'USER', userid: this.operand(v, 'userid', true) };
      case 'META':
        return { verb: 'GET', sub: 'META', userid: this.operand(v, 'userid', true) };
      case 'MAILBOXES':
        return { verb: 'GET', sub: 'MAILBOXES', names: this.stringList(v, 'MAILBOXES') };
      case 'UNIQUEIDS':
        return { verb: 'GET', sub: 'UNIQUEIDS', uniqueids: this.stringList(v, 'UNIQUEIDS') };
      case 'FULLMAILBOX':
        return { verb: 'GET', sub: 'FULLMAILBOX', mboxname: this.operand(v, 'mailbox name', true) };
      case 'QUOTA':
        return { verb: 'GET', sub: 'QUOTA', root: this.operand(v, 'quota root', true) };
      case 'ANNOTATION':
        return { verb: 'GET', sub: 'ANNOTATION', mboxname: this.operand(v, 'mailbox name', true) };
      case 'FETCH': {
        const mboxname = this.str(v, 'MBOXNAME');
        const partition = this.str(v, 'PARTITION');
        const uniqueid = this.str(v, 'UNIQUEID');
        const guid = parseGuid(kvGet(v, 'GUID'));
        if (guid === null) throw this.badParams('GUID is missing or not 40 hex digits');
        const uid = this.u32(v, 'UID');
        return { verb: 'GET', sub: 'FETCH', mboxname, partition, uniqueid, guid, uid };
      }
      case 'FETCH_SIEVE':
        return { verb: 'GET', sub: 'FETCH_SIEVE', userid: this.str(v, 'USERID'), filename: this.str(v, 'FILENAME') };
      default:
        throw this.protocolError(`unknown GET ${printable(sub)}`);
    }
  }

  // -- APPLY ------------------------------------------------------------------

  apply(sub: string, v: DlistValue, opts: DecodeOptions): ApplyCommand {
    if (this.profile === 'backup') return this.applyBackup(sub, v);
    switch (sub) {
      case 'RESERVE':
        return this.reserve(v);
      case 'MESSAGE':
        return { verb: 'APPLY', sub: 'MESSAGE', files: fileItems(v) };
      case 'MAILBOX':
      case 'LOCAL_MAILBOX':
        return { verb: 'APPLY', sub: 'MAILBOX', local: sub === 'LOCAL_MAILBOX', mailbox: this.mailbox(v, opts, false) };
      case 'UNMAILBOX':
      case 'LOCAL_UNMAILBOX':
        return { verb: 'APPLY', sub: 'UNMAILBOX', local: sub === 'LOCAL_UNMAILBOX', mboxname: this.operand(v, 'mailbox name', true) };
      case 'RENAME':
      case 'LOCAL_RENAME':
        return this.rename(v, sub === 'LOCAL_RENAME');
      case 'EXPUNGE': {
        const mboxname = this.str(v, 'MBOXNAME');
        const uniqueid = this.str(v, 'UNIQUEID');
        const uids = this.list(v, 'UID').map((u) => {
          const n = parseU32(u);
          if (n === null) throw this.badParams('UID holds a non-number');
          return n;
        });
        return { verb: 'APPLY', sub: 'EXPUNGE', mboxname, uniqueid, uids };
      }
      case 'QUOTA':
        return { verb: 'APPLY', sub: 'QUOTA', quota: this.quota(v) };
      case 'UNQUOTA':
        return { verb: 'APPLY', sub: 'UNQUOTA', root: this.operand(v, 'quota root', true) };
      case 'SUB':
      case 'UNSUB': {
        // sync_apply_changesub reads MBOXNAME first
        const mboxname = this.str(v, 'MBOXNAME');
        const userid = this.str(v, 'USERID');
        return { verb: 'APPLY', sub, userid, mboxname };
      }
      case 'SEEN':
        return this.seen(v);
      case 'ANNOTATION': {
        const mboxname = this.str(v, 'MBOXNAME');
        const entry = this.str(v, 'ENTRY');
        const userid = this.str(v, 'USERID');
        const value = this.map(v, 'VALUE');
        return { verb: 'APPLY', sub: 'ANNOTATION', mboxname, entry, userid, value };
      }
      case 'UNANNOTATION': {
        const mboxname = this.str(v, 'MBOXNAME');
        const entry = this.str(v, 'ENTRY');
        const userid = this.str(v, 'USERID');
        return { verb: 'APPLY', sub: 'UNANNOTATION', mboxname, entry, userid };
      }
      case 'SIEVE':
        return this.sieve(v);
      case 'UNSIEVE':
        return { verb: 'APPLY', sub: 'UNSIEVE', userid: this.str(v, 'USERID'), filename: this.str(v, 'FILENAME') };
      case 'ACTIVATE_SIEVE':
        return { verb: 'APPLY', sub: 'ACTIVATE_SIEVE', userid: this.str(v, 'USERID'), filename: this.str(v, 'FILENAME') };
      case 'UNACTIVATE_SIEVE':
        return { verb: 'APPLY', sub: 'UNACTIVATE_SIEVE', userid: this.str(v, 'USERID') };
      case 'UNUSER':
      case 'LOCAL_UNUSER':
        // An empty (or NIL) userid is accepted and ignored by the store.
        return { verb: 'APPLY', sub: 'UNUSER', local: sub === 'LOCAL_UNUSER', userid: scalarText(v) ?? '' };
      case 'FORCE':
        return { verb: 'APPLY', sub: 'FORCE' };
      case 'CAPABILITIES': {
        // sync_apply_capabilities walks the members; a non-list has none.
        const names: string[] = [];
        for (const it of listItems(v) ?? []) {
          const t = scalarText(it);
          if (t !== null) names.push(t);
        }
        return { verb: 'APPLY', sub: 'CAPABILITIES', names };
      }
      default:
        throw this.protocolError(`unknown APPLY ${printable(sub)}`);
    }
  }

  /**
   * backupd (backup/backupd.c cmd_apply): exact-case names, only its own
   * checks; QUOTA, ACTIVATE_SIEVE, UNACTIVATE_SIEVE and UNUSER are accepted
   * without looking at the operand.
   */
  private applyBackup(sub: string, v: DlistValue): ApplyCommand {
    switch (sub) {
      case 'MAILBOX': {
        const mboxname = this.str(v, 'MBOXNAME');
        return { verb: 'APPLY', sub: 'MAILBOX', local: false, mailbox: this.mailboxLenient(v, mboxname) };
      }
      case 'UNMAILBOX':
        // backupd checks `!dl->sval`, but a parsed NIL arrives as an atom
        // there: `APPLY UNMAILBOX NIL` => `OK Success`.
        return { verb: 'APPLY', sub: 'UNMAILBOX', local: false, mboxname: this.operand(v, 'mailbox name', false) };
      case 'MESSAGE': {
        const files = fileItems(v);
        if (files.length === 0) throw this.protocolError('APPLY MESSAGE without file literals');
        return { verb: 'APPLY', sub: 'MESSAGE', files };
      }
      case 'RESERVE': {
        const partition = this.str(v, 'PARTITION');
        const ml = listItems(kvGet(v, 'MBOXNAME'));
        const gl = listItems(kvGet(v, 'GUID'));
        if (ml === null || gl === null) throw this.protocolError('RESERVE needs MBOXNAME and GUID lists');
        const mboxnames = ml.map((m) => scalarText(m)).filter((m): m is string => m !== null);
        // reserve_one skips members that are not guids.
        const guids = gl.map((g) => parseGuid(g)).filter((g): g is string => g !== null);
        return { verb: 'APPLY', sub: 'RESERVE', partition, mboxnames, guids };
      }
      case 'RENAME': {
        const oldname = this.str(v, 'OLDMBOXNAME');
        const newname = this.str(v, 'NEWMBOXNAME');
        return {
          verb: 'APPLY',
          sub: 'RENAME',
          local: false,
          oldname,
          newname,
          partition: this.strOpt(v, 'PARTITION') ?? '',
          uidvalidity: parseU32(kvGet(v, 'UIDVALIDITY')),
        };
      }
      case 'SEEN': {
        const userid = this.str(v, 'USERID');
        return {
          verb: 'APPLY',
          sub: 'SEEN',
          seen: {
            userid,
            uniqueid: this.strOpt(v, 'UNIQUEID') ?? '',
            lastread: parseDate(kvGet(v, 'LASTREAD')) ?? 0,
            lastuid: parseU32(kvGet(v, 'LASTUID')) ?? 0,
            lastchange: parseDate(kvGet(v, 'LASTCHANGE')) ?? 0,
            seenuids: this.strOpt(v, 'SEENUIDS') ?? '',
          },
        };
      }
      case 'SIEVE': {
        const userid = this.str(v, 'USERID');
        return {
          verb: 'APPLY',
          sub: 'SIEVE',
          userid,
          filename: this.strOpt(v, 'FILENAME') ?? '',
          lastUpdate: parseDate(kvGet(v, 'LAST_UPDATE')) ?? 0,
          content: parseMap(kvGet(v, 'CONTENT')) ?? { kind: 'buffer', value: Buffer.alloc(0) },
        };
      }
      case 'UNSIEVE':
        return { verb: 'APPLY', sub: 'UNSIEVE', userid: this.str(v, 'USERID'), filename: this.strOpt(v, 'FILENAME') ?? '' };
      case 'SUB':
      case 'UNSUB': {
        const userid = this.str(v, 'USERID');
        const mboxname = this.str(v, 'MBOXNAME');
        return { verb: 'APPLY', sub, userid, mboxname };
      }
      case 'QUOTA':
        return { verb: 'APPLY', sub: 'QUOTA', quota: this.quotaLenient(v) };
      case 'ACTIVATE_SIEVE':
        return { verb: 'APPLY', sub: 'ACTIVATE_SIEVE', userid: this.strOpt(v, 'USERID') ?? '', filename: this.strOpt(v, 'FILENAME') ?? '' };
      case 'UNACTIVATE_SIEVE':
        return { verb: 'APPLY', sub: 'UNACTIVATE_SIEVE', userid: this.strOpt(v, 'USERID') ?? '' };
      case 'UNUSER':
        return { verb: 'APPLY', sub: 'UNUSER', local: false, userid: scalarText(v) ?? '' };
      default:
        throw this.protocolError(`APPLY ${printable(sub)} is not supported by a backup server`);
    }
  }

  private reserve(v: DlistValue): ApplyCommand {
    const partition = this.str(v, 'PARTITION');
    const ml = this.list(v, 'MBOXNAME');
    const gl = this.list(v, 'GUID');
    const guids = gl.map((g) => {
      const s = parseGuid(g);
      if (s === null) throw this.badParams('GUID list holds an invalid guid');
      return s;
    });
    const mboxnames: string[] = [];
    for (const m of ml) {
      const t = scalarText(m);
      if (t !== null) mboxnames.push(t);
    }
    return { verb: 'APPLY', sub: 'RESERVE', partition, mboxnames, guids };
  }

  private rename(v: DlistValue, local: boolean): ApplyCommand {
    const oldname = this.str(v, 'OLDMBOXNAME');
    const newname = this.str(v, 'NEWMBOXNAME');
    const partition = this.str(v, 'PARTITION');
    return { verb: 'APPLY', sub: 'RENAME', local, oldname, newname, partition, uidvalidity: parseU32(kvGet(v, 'UIDVALIDITY')) };
  }

  private seen(v: DlistValue): ApplyCommand {
    const userid = this.str(v, 'USERID');
    const uniqueid = this.str(v, 'UNIQUEID');
    const lastread = this.date(v, 'LASTREAD');
    const lastuid = this.u32(v, 'LASTUID');
    const lastchange = this.date(v, 'LASTCHANGE');
    const seenuids = this.str(v, 'SEENUIDS');
    return { verb: 'APPLY', sub: 'SEEN', seen: { userid, uniqueid, lastread, lastuid, lastchange, seenuids } };
  }

  private sieve(v: DlistValue): ApplyCommand {
    const userid = this.str(v, 'USERID');
    const filename = this.str(v, 'FILENAME');
    const lastUpdate = this.date(v, 'LAST_UPDATE');
    const content = this.map(v, 'CONTENT');
    return { verb: 'APPLY', sub: 'SIEVE', userid, filename, lastUpdate, content };
  }

  /**
   * sync_decode_quota_limits: every resource unlimited (absent); LIMIT sets
   * STORAGE unless it is 4294967295; each named resource then overrides
   * (3.10+ names before the legacy `X-` names).
   */
  private quota(v: DlistValue): QuotaIn {
    const root = this.str(v, 'ROOT');
    return this.quotaLimits(v, root);
  }

  private quotaLenient(v: DlistValue): QuotaIn {
    return this.quotaLimits(v, this.strOpt(v, 'ROOT') ?? '');
  }

  private quotaLimits(v: DlistValue, root: string): QuotaIn {
    const limits: Record<string, number> = {};
    const limit = parseU32(kvGet(v, 'LIMIT'));
    if (limit !== null && limit !== U32_MAX) limits.STORAGE = limit;
    const named: [string, string[]][] = [
      ['STORAGE', ['STORAGE']],
      ['MESSAGE', ['MESSAGE']],
      ['X-ANNOTATION-STORAGE', ['ANNOTATION-STORAGE', 'X-ANNOTATION-STORAGE']],
      ['X-NUM-FOLDERS', ['MAILBOX', 'X-NUM-FOLDERS']],
    ];
    for (const [res, keys] of named) {
      for (const k of keys) {
        const n = parseU32(kvGet(v, k));
        if (n !== null) {
          limits[res] = n;
          break;
        }
      }
    }
    return { root, limits, modseq: parseU64(kvGet(v, 'MODSEQ')) };
  }

  /**
   * APPLY MAILBOX / RESTORE MAILBOX operand, in the order of
   * sync_apply_mailbox (csync-wire §5.3). Optional numeric fields that do not
   * parse are ignored, as Cyrus's dlist_get* calls ignore them.
   */
  mailbox(v: DlistValue, opts: DecodeOptions, restore: boolean): MailboxIn {
    if (restore) return this.mailboxLenient(v, this.str(v, 'MBOXNAME'));
    const uniqueid = this.str(v, 'UNIQUEID');
    const mboxname = this.str(v, 'MBOXNAME');
    const highestmodseq = this.u64(v, 'HIGHESTMODSEQ');
    const createdmodseq = parseU64(kvGet(v, 'CREATEDMODSEQ'));
    const mboxtype = this.strOpt(v, 'MBOXTYPE') ?? null;
    if (mboxtype !== null && mboxtype.includes('f') && opts.sieveMailbox === false) {
      throw this.badParams('sieve-store folder without SIEVE-MAILBOX');
    }
    if (mboxtype !== null && (mboxtype.includes('i') || mboxtype.includes('d'))) {
      const m: MailboxIn = { uniqueid, mboxname, mboxtype, highestmodseq };
      if (createdmodseq !== null) m.createdmodseq = createdmodseq;
      const fm = parseU64(kvGet(v, 'FOLDERMODSEQ'));
      if (fm !== null) m.foldermodseq = fm;
      return m;
    }
    const m: MailboxIn = {
      uniqueid,
      mboxname,
      mboxtype,
      highestmodseq,
      partition: this.str(v, 'PARTITION'),
      lastUid: this.u32(v, 'LAST_UID'),
      recentUid: this.u32(v, 'RECENTUID'),
      recentTime: this.date(v, 'RECENTTIME'),
      lastAppenddate: this.date(v, 'LAST_APPENDDATE'),
      pop3LastLogin: this.date(v, 'POP3_LAST_LOGIN'),
      uidvalidity: this.u32(v, 'UIDVALIDITY'),
      acl: this.str(v, 'ACL'),
      options: this.str(v, 'OPTIONS'),
    };
    const records = this.list(v, 'RECORD');
    this.mailboxOptionals(v, m, createdmodseq);
    const annots = listItems(kvGet(v, 'ANNOTATIONS'));
    if (annots !== null) {
      const out: Annot[] = [];
      for (const a of annots) {
        const d = parseAnnot(a);
        if (d === null) throw this.badParams('ANNOTATIONS holds an unreadable entry');
        out.push(d);
      }
      m.annotations = out;
    } else {
      m.annotations = null;
    }
    const parsed: RecordIn[] = [];
    for (const r of records) {
      const rec = parseRecord(r);
      if (rec === null) {
        // The store answers IMAP_PROTOCOL_ERROR at the point Cyrus does
        // (after its own mailbox checks); the good records are kept.
        m.badRecord = true;
        continue;
      }
      parsed.push(rec);
    }
    m.records = parsed;
    return m;
  }

  private mailboxOptionals(v: DlistValue, m: MailboxIn, createdmodseq: bigint | null): void {
    const d = (k: string): number | undefined => parseDate(kvGet(v, k)) ?? undefined;
    const u = (k: string): number | undefined => parseU32(kvGet(v, k)) ?? undefined;
    const q = (k: string): bigint | undefined => parseU64(kvGet(v, k)) ?? undefined;
    const set = <K extends keyof MailboxIn>(k: K, val: MailboxIn[K] | undefined): void => {
      if (val !== undefined) m[k] = val;
    };
    set('pop3ShowAfter', d('POP3_SHOW_AFTER'));
    set('xconvmodseq', q('XCONVMODSEQ'));
    set('raclmodseq', q('RACLMODSEQ'));
    set('foldermodseq', q('FOLDERMODSEQ'));
    set('createdmodseq', createdmodseq ?? undefined);
    m.syncCrc = u('SYNC_CRC') ?? 0;
    m.syncCrcAnnot = u('SYNC_CRC_ANNOT') ?? 0;
    set('sinceModseq', q('SINCE_MODSEQ'));
    set('sinceCrc', u('SINCE_CRC'));
    set('sinceCrcAnnot', u('SINCE_CRC_ANNOT'));
    const qr = kvGet(v, 'QUOTAROOT');
    if (qr) m.quotaroot = qr.kind === 'nil' ? null : scalarText(qr);
    const uf = listItems(kvGet(v, 'USERFLAGS'));
    m.userflags = uf === null ? null : uf.map((f) => scalarText(f)).filter((f): f is string => f !== null);
    const ug = kvGet(v, 'USERGROUPS');
    m.usergroups = ug ? scalarText(ug) : null;
  }

  /** RESTORE and backupd: only MBOXNAME required; the rest as far as it parses. */
  private mailboxLenient(v: DlistValue, mboxname: string): MailboxIn {
    const m: MailboxIn = {
      uniqueid: this.strOpt(v, 'UNIQUEID') ?? '',
      mboxname,
      mboxtype: this.strOpt(v, 'MBOXTYPE') ?? null,
      highestmodseq: parseU64(kvGet(v, 'HIGHESTMODSEQ')) ?? 0n,
    };
    const setS = (k: 'partition' | 'acl' | 'options', key: string): void => {
      const s = this.strOpt(v, key);
      if (s !== undefined) m[k] = s;
    };
    const setN = (k: 'lastUid' | 'recentUid' | 'uidvalidity', key: string): void => {
      const n = parseU32(kvGet(v, key));
      if (n !== null) m[k] = n;
    };
    const setD = (k: 'recentTime' | 'lastAppenddate' | 'pop3LastLogin', key: string): void => {
      const n = parseDate(kvGet(v, key));
      if (n !== null) m[k] = n;
    };
    setS('partition', 'PARTITION');
    setS('acl', 'ACL');
    setS('options', 'OPTIONS');
    setN('lastUid', 'LAST_UID');
    setN('recentUid', 'RECENTUID');
    setN('uidvalidity', 'UIDVALIDITY');
    setD('recentTime', 'RECENTTIME');
    setD('lastAppenddate', 'LAST_APPENDDATE');
    setD('pop3LastLogin', 'POP3_LAST_LOGIN');
    this.mailboxOptionals(v, m, parseU64(kvGet(v, 'CREATEDMODSEQ')));
    const annots = listItems(kvGet(v, 'ANNOTATIONS'));
    m.annotations = annots === null ? null : annots.map(parseAnnot).filter((a): a is Annot => a !== null);
    const records = listItems(kvGet(v, 'RECORD'));
    if (records !== null) {
      const parsed: RecordIn[] = [];
      for (const r of records) {
        const rec = parseRecord(r);
        if (rec === null) m.badRecord = true;
        else parsed.push(rec);
      }
      m.records = parsed;
    }
    return m;
  }

  // -- RESTORE ----------------------------------------------------------------

  restore(sub: string, v: DlistValue): Command {
    switch (sub) {
      case 'MAILBOX':
      case 'LOCAL_MAILBOX':
        return { verb: 'RESTORE', sub, mailbox: this.mailbox(v, { profile: this.profile }, true) };
      default:
        throw this.protocolError(`unknown RESTORE ${printable(sub)}`);
    }
  }
}

const BACKUP_GETS = new Set(['USER', 'MAILBOXES', 'FULLMAILBOX', 'META', 'UNIQUEIDS']);

/** MESSAGE operand: the file literals of the list; NIL (unreadable file) and others skipped. */
function fileItems(v: DlistValue): DlistFile[] {
  const l = listItems(v) ?? [];
  const files: DlistFile[] = [];
  for (const it of l) if (it.kind === 'file') files.push(it);
  return files;
}

/**
 * ANNOT: ENTRY, USERID, VALUE required; MODSEQ optional (3.0 clients omit it;
 * Cyrus 3.6.1 itself would refuse), USERID NIL (3.0 thrid) read as "".
 */
function parseAnnot(a: DlistValue): Annot | null {
  if (a.kind !== 'kvlist') return null;
  const e = kvGet(a, 'ENTRY');
  const entry = e ? scalarText(e) : null;
  if (entry === null) return null;
  const u = kvGet(a, 'USERID');
  if (!u) return null;
  const userid = u.kind === 'nil' ? '' : scalarText(u);
  if (userid === null) return null;
  const value = parseMap(kvGet(a, 'VALUE'));
  if (value === null) return null;
  const mv = kvGet(a, 'MODSEQ');
  let modseq = 0n;
  if (mv) {
    const n = parseU64(mv);
    if (n === null) return null;
    modseq = n;
  }
  return { entry, userid, modseq, value };
}

/** RECORD entry (parse_upload); null when any required field is bad. */
function parseRecord(r: DlistValue): RecordIn | null {
  if (r.kind !== 'kvlist') return null;
  const uid = parseU32(kvGet(r, 'UID'));
  const modseq = parseU64(kvGet(r, 'MODSEQ'));
  const lastUpdated = parseDate(kvGet(r, 'LAST_UPDATED'));
  const fl = listItems(kvGet(r, 'FLAGS'));
  const internaldate = parseDate(kvGet(r, 'INTERNALDATE'));
  const size = parseU32(kvGet(r, 'SIZE'));
  const guid = parseGuid(kvGet(r, 'GUID'));
  if (uid === null || modseq === null || lastUpdated === null || fl === null || internaldate === null || size === null || guid === null) {
    return null;
  }
  const flags: string[] = [];
  for (const f of fl) {
    const t = scalarText(f);
    if (t === null || t === '') return null;
    flags.push(t);
  }
  let annotations: Annot[] | null = null;
  const al = kvGet(r, 'ANNOTATIONS');
  if (al) {
    const items = listItems(al);
    if (items === null) return null;
    annotations = [];
    for (const a of items) {
      const d = parseAnnot(a);
      if (d === null) return null;
      annotations.push(d);
    }
  }
  return { uid, modseq, lastUpdated, flags, internaldate, size, guid, annotations };
}

/** For callers that build refusals themselves (e.g. the router). */
export function isRefused(c: Command): c is RefusedCommand {
  return c.verb === 'REFUSED';
}

