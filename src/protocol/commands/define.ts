/**
 * The shape of one csync sub-command definition (see ./table.ts).
 *
 * A definition is the single place that knows a sub-command: the operand type
 * `Op` (the typed fields; the command the store receives is
 * `{ verb, sub } & Op`), how each server profile decodes it from its dlist
 * operand, and how a client encodes it.
 */
import type { DlistValue } from '../../../transforms/dlist-types.js';
import type { Profile } from '../replies.js';
import type { EncodeOptions, FieldReader } from './fields.js';

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

export interface DecodeContext {
  /** The key as sent, upper-cased where the server upper-cases it (e.g. `LOCAL_MAILBOX`). */
  key: string;
  f: FieldReader;
  opts: DecodeOptions;
}

/** Who handles a decoded command: the store's handler map, or the session itself. */
export type Handling = 'store' | 'session';

export interface SubDef<Op, H extends Handling = 'store'> {
  handler: H;
  /** The replica also accepts `LOCAL_<SUB>`, decoded with `local: true`; encoded from `op.local`. */
  local?: true;
  /** sync_server's decoder (imap/sync_support.c). Throws a Refusal for bad input. */
  decode(v: DlistValue, c: DecodeContext): Op;
  /** backupd's decoder (backup/backupd.c); absent: backupd refuses the sub-command. */
  decodeBackup?: (v: DlistValue, c: DecodeContext) => Op;
  /** The operand as sync_client writes it (its field order). */
  encode(op: Op, o: EncodeOptions): DlistValue;
}

/** The operand type of a definition. */
export type OpOf<D> = D extends SubDef<infer O, Handling> ? O : never;
