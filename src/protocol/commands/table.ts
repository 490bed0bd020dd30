/**
 * The csync sub-commands, each defined once (one file per group: ./mailboxes,
 * ./user, ./sieve, ./session), gathered in one table per verb. Everything else
 * is derived from these tables: the typed commands (src/protocol/types.ts),
 * the store's handler maps (sinks/sink.ts), the router's dispatch, and the
 * client-side encoders.
 *
 * Encoder API, for clients (restore, bench-client):
 *
 *   const { verb, item } = encodeCommand({ verb: 'APPLY', sub: 'UNMAILBOX', local: false, mboxname: 'user.bob.x' });
 *   await commandWriter.command(verb, item);          // `APPLY UNMAILBOX user.bob.x`
 *
 * `encodeCommand` takes a typed command (`GetCommand`, `ApplyCommand`; the
 * fields are those the decoder produces, see each group file's `*Op`
 * interfaces) and returns the verb and the `KEY value` dlist item, in
 * sync_client's field order; a `local: true` command gets the `LOCAL_` key.
 * Decoding what it encodes gives the same command back (test/commands-roundtrip).
 * Staged `map` values (annotation values, sieve scripts too big for memory)
 * are written as big literals from their `source`, or through `o.staged`.
 */
import type { DlistItem, DlistValue } from '../../../transforms/dlist-types.js';
import type { ApplyCommand, GetCommand, RestoreCommand } from '../types.js';
import type { DecodeContext, DecodeOptions, Handling, OpOf, SubDef } from './define.js';
import { FieldReader, printable, type EncodeOptions } from './fields.js';
import { EXPUNGE, GET_ANNOTATION, GET_FETCH, GET_FULLMAILBOX, GET_MAILBOXES, GET_UNIQUEIDS, MAILBOX, MESSAGE, RENAME, RESERVE, RESTORE_MAILBOX, UNMAILBOX } from './mailboxes.js';
import { CAPABILITIES, FORCE } from './session.js';
import { ACTIVATE_SIEVE, GET_FETCH_SIEVE, SIEVE, UNACTIVATE_SIEVE, UNSIEVE } from './sieve.js';
import { ANNOTATION, GET_META, GET_QUOTA, GET_USER, QUOTA, SEEN, SUB, UNANNOTATION, UNQUOTA, UNSUB, UNUSER } from './user.js';

export const GET_TABLE = {
  USER: GET_USER,
  META: GET_META,
  MAILBOXES: GET_MAILBOXES,
  UNIQUEIDS: GET_UNIQUEIDS,
  FULLMAILBOX: GET_FULLMAILBOX,
  QUOTA: GET_QUOTA,
  ANNOTATION: GET_ANNOTATION,
  FETCH: GET_FETCH,
  FETCH_SIEVE: GET_FETCH_SIEVE,
} as const;

export const APPLY_TABLE = {
  RESERVE,
  MESSAGE,
  MAILBOX,
  UNMAILBOX,
  RENAME,
  EXPUNGE,
  QUOTA,
  UNQUOTA,
  SUB,
  UNSUB,
  SEEN,
  ANNOTATION,
  UNANNOTATION,
  SIEVE,
  UNSIEVE,
  ACTIVATE_SIEVE,
  UNACTIVATE_SIEVE,
  UNUSER,
  FORCE,
  CAPABILITIES,
} as const;

/** RESTORE (sync_server's sync_restore; backupd does not know the verb). */
export const RESTORE_TABLE = { MAILBOX: RESTORE_MAILBOX } as const;

type GetTable = typeof GET_TABLE;
type ApplyTable = typeof APPLY_TABLE;
type RestoreTable = typeof RESTORE_TABLE;
export type GetSub = keyof GetTable;
export type ApplySub = keyof ApplyTable;
export type RestoreSub = keyof RestoreTable;
export type GetOps = { [S in GetSub]: OpOf<GetTable[S]> };
export type ApplyOps = { [S in ApplySub]: OpOf<ApplyTable[S]> };
export type RestoreOps = { [S in RestoreSub]: OpOf<RestoreTable[S]> };

/** `GET <S>`: the verb and sub-command with the typed operand's fields. */
export type GetCommandOf<S extends GetSub> = { verb: 'GET'; sub: S } & GetOps[S];
/**
 * `APPLY <S>`. `raw` is the operand exactly as parsed, for stores that keep
 * what the client sent (the backup store writes it to its data file).
 */
export type ApplyCommandOf<S extends ApplySub> = { verb: 'APPLY'; sub: S; raw?: DlistValue } & ApplyOps[S];
/** `RESTORE <S>`. */
export type RestoreCommandOf<S extends RestoreSub> = { verb: 'RESTORE'; sub: S } & RestoreOps[S];

/** APPLY sub-commands the store handles; the others are the session's (FORCE, CAPABILITIES). */
export type StoreApplySub = { [S in ApplySub]: ApplyTable[S]['handler'] extends 'store' ? S : never }[ApplySub];
export type SessionApplySub = Exclude<ApplySub, StoreApplySub>;

// The tables seen through their derived types, so that a lookup by a
// generic key keeps the key's operand type.
const GET_DEFS: { [S in GetSub]: SubDef<GetOps[S], Handling> } = GET_TABLE;
const APPLY_DEFS: { [S in ApplySub]: SubDef<ApplyOps[S], Handling> } = APPLY_TABLE;
const RESTORE_DEFS: { [S in RestoreSub]: SubDef<RestoreOps[S], Handling> } = RESTORE_TABLE;

export function isGetSub(key: string): key is GetSub {
  return Object.hasOwn(GET_TABLE, key);
}

export function isApplySub(key: string): key is ApplySub {
  return Object.hasOwn(APPLY_TABLE, key);
}

export function isRestoreSub(key: string): key is RestoreSub {
  return Object.hasOwn(RESTORE_TABLE, key);
}

/** The sub-command a key names: itself, or for the replica `LOCAL_<SUB>` of a sub-command that has that form. */
function subOf(table: Record<string, SubDef<unknown, Handling>>, key: string, opts: DecodeOptions): string {
  if (opts.profile !== 'sync' || !key.startsWith('LOCAL_')) return key;
  const sub = key.slice(6);
  return Object.hasOwn(table, sub) && table[sub]!.local ? sub : key;
}

export type StoreApplyCommand = { [S in StoreApplySub]: ApplyCommandOf<S> }[StoreApplySub];

/** Whether the store handles this APPLY (otherwise the session does: FORCE, CAPABILITIES). */
export function isStoreApply(cmd: ApplyCommand): cmd is StoreApplyCommand {
  return APPLY_TABLE[cmd.sub].handler === 'store';
}

function context(key: string, opts: DecodeOptions): DecodeContext {
  return { key, f: new FieldReader(opts.profile), opts };
}

function decodeGetOf<S extends GetSub>(sub: S, v: DlistValue, c: DecodeContext): GetCommandOf<S> {
  const def = GET_DEFS[sub];
  // eslint-disable-next-line @typescript-eslint/unbound-method -- the decoders are plain functions that never use `this`
  const decode = c.opts.profile === 'backup' ? def.decodeBackup : def.decode;
  // backupd (cmd_get) knows only USER, MAILBOXES, FULLMAILBOX, META, UNIQUEIDS.
  if (!decode) throw c.f.protocolError(`GET ${sub} is not supported`);
  return { verb: 'GET', sub, ...decode(v, c) };
}

/** `GET <key> <value>` (the key as the server reads it); throws a Refusal. */
export function decodeGet(key: string, v: DlistValue, opts: DecodeOptions): GetCommand {
  const c = context(key, opts);
  if (!isGetSub(key)) {
    if (opts.profile === 'backup') throw c.f.protocolError(`GET ${key} is not supported`);
    throw c.f.protocolError(`unknown GET ${printable(key)}`);
  }
  // A key known only at run time: the one place its operand type is asserted.
  return decodeGetOf(key, v, c) as GetCommand;
}

function decodeApplyOf<S extends ApplySub>(sub: S, v: DlistValue, c: DecodeContext): ApplyCommandOf<S> {
  const def = APPLY_DEFS[sub];
  // eslint-disable-next-line @typescript-eslint/unbound-method -- the decoders are plain functions that never use `this`
  const decode = c.opts.profile === 'backup' ? def.decodeBackup : def.decode;
  if (!decode) throw c.f.protocolError(`APPLY ${printable(c.key)} is not supported by a backup server`);
  return { verb: 'APPLY', sub, ...decode(v, c), raw: v };
}

/**
 * `APPLY <key> <value>`; throws a Refusal. The replica also takes the
 * `LOCAL_` forms; backupd only the exact names (cmd_apply compares case and
 * all).
 */
export function decodeApply(key: string, v: DlistValue, opts: DecodeOptions): ApplyCommand {
  const c = context(key, opts);
  const sub = subOf(APPLY_TABLE, key, opts);
  if (!isApplySub(sub)) {
    if (opts.profile === 'backup') throw c.f.protocolError(`APPLY ${printable(key)} is not supported by a backup server`);
    throw c.f.protocolError(`unknown APPLY ${printable(key)}`);
  }
  // A key known only at run time: the one place its operand type is asserted.
  return decodeApplyOf(sub, v, c) as ApplyCommand;
}

function decodeRestoreOf<S extends RestoreSub>(sub: S, v: DlistValue, c: DecodeContext): RestoreCommandOf<S> {
  return { verb: 'RESTORE', sub, ...RESTORE_DEFS[sub].decode(v, c) };
}

/** `RESTORE <key> <value>` (sync_restore); null when the table has no such sub-command. */
export function decodeRestore(key: string, v: DlistValue, opts: DecodeOptions): RestoreCommand | null {
  const sub = subOf(RESTORE_TABLE, key, opts);
  if (!isRestoreSub(sub)) return null;
  // A key known only at run time: the one place its operand type is asserted.
  return decodeRestoreOf(sub, v, context(key, opts)) as RestoreCommand;
}

// -- encoders -------------------------------------------------------------------

export interface EncodedCommand {
  verb: 'GET' | 'APPLY' | 'RESTORE';
  /** `KEY value`: write with CommandWriter.command(verb, item). */
  item: DlistItem;
}

function encodeGetOf<S extends GetSub>(cmd: GetCommandOf<S>, o: EncodeOptions): EncodedCommand {
  return { verb: 'GET', item: { key: cmd.sub, value: GET_DEFS[cmd.sub].encode(cmd, o) } };
}

function encodeApplyOf<S extends ApplySub>(cmd: ApplyCommandOf<S>, o: EncodeOptions): EncodedCommand {
  const def = APPLY_DEFS[cmd.sub];
  const local = def.local === true && 'local' in cmd && cmd.local === true;
  return { verb: 'APPLY', item: { key: local ? `LOCAL_${cmd.sub}` : cmd.sub, value: def.encode(cmd, o) } };
}

function encodeRestoreOf<S extends RestoreSub>(cmd: RestoreCommandOf<S>, o: EncodeOptions): EncodedCommand {
  const def = RESTORE_DEFS[cmd.sub];
  const local = def.local === true && 'local' in cmd && cmd.local === true;
  return { verb: 'RESTORE', item: { key: local ? `LOCAL_${cmd.sub}` : cmd.sub, value: def.encode(cmd, o) } };
}

/** A typed GET, APPLY or RESTORE as the verb and `KEY value` item a client sends. */
export function encodeCommand(cmd: GetCommand | ApplyCommand | RestoreCommand, o: EncodeOptions = {}): EncodedCommand {
  if (cmd.verb === 'GET') return encodeGetOf(cmd, o);
  if (cmd.verb === 'APPLY') return encodeApplyOf(cmd, o);
  return encodeRestoreOf(cmd, o);
}

/** Only the operand of a typed APPLY (e.g. the record a backup data file keeps). */
export function encodeOperand(cmd: ApplyCommand, o: EncodeOptions = {}): DlistItem {
  return encodeApplyOf(cmd, o).item;
}
