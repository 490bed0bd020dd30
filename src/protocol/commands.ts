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
import { CommandError, type CyrusCode } from '../../transforms/errors.js';
import type { CommandLine, DlistValue } from '../../transforms/dlist-types.js';
import {
  BAD_INVALID_MECHANISM,
  BAD_NULL_COMMAND,
  BAD_UNRECOGNIZED,
  badExtraArguments,
  badFailedToParse,
  badMissingArgument,
} from './replies.js';
import type { Command, RefusedCommand } from './types.js';
import type { DecodeOptions } from './commands/define.js';
import { FieldReader, Refusal, printable, scalarText } from './commands/fields.js';
import { decodeApply, decodeGet, decodeRestore } from './commands/table.js';

export type { DecodeOptions } from './commands/define.js';
export { encodeCommand, encodeOperand, type EncodedCommand } from './commands/table.js';

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
  // sync_get/sync_apply/sync_restore upper-case the key; backupd's cmd_get
  // does too, its cmd_apply does not.
  const sub = profile === 'backup' && verb === 'APPLY' ? keyText! : keyText!.toUpperCase();
  if (verb === 'GET') return decodeGet(sub, value, opts);
  if (verb === 'APPLY') return decodeApply(sub, value, opts);
  return restoreCommand(sub, value, opts);
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

/** RESTORE (sync_restore): MAILBOX and LOCAL_MAILBOX. */
function restoreCommand(sub: string, v: DlistValue, opts: DecodeOptions): Command {
  const cmd = decodeRestore(sub, v, opts);
  if (cmd === null) throw new FieldReader(opts.profile).protocolError(`unknown RESTORE ${printable(sub)}`);
  return cmd;
}

/** For callers that build refusals themselves (e.g. the router). */
export function isRefused(c: Command): c is RefusedCommand {
  return c.verb === 'REFUSED';
}

