/**
 * Typed csync commands (csync-wire.md §2-§5), decoded from dlist CommandLines
 * by src/protocol/commands.ts. Field names follow the protocol's own words.
 * Text fields are latin1 strings (one char per octet, see transforms/dlist-types);
 * binary values (annotation values, sieve content) are `BinaryValue`.
 */
import type { CyrsyncError } from '../../transforms/errors.js';
import type { Readable } from 'node:stream';
import type { StagedBody } from '../../transforms/dlist-types.js';
import type { ApplyCommandOf, ApplySub, GetCommandOf, GetSub, RestoreCommandOf, RestoreSub } from './commands/table.js';

/** A `map`-typed value: small ones in memory, big ones staged on disk. */
export type BinaryValue =
  | { kind: 'buffer'; value: Buffer }
  | { kind: 'staged'; size: number; sha1: string; body: StagedBody; source?: () => Readable };

export interface Annot {
  entry: string;
  userid: string;
  modseq: bigint; // 0n when absent (3.0 clients)
  value: BinaryValue;
}

export interface RecordIn {
  uid: number;
  modseq: bigint;
  lastUpdated: number;
  /** exactly as received, e.g. ['\\Seen', '$Forwarded'] (\\Expunged included when sent) */
  flags: string[];
  internaldate: number;
  size: number;
  guid: string; // lower-case
  annotations: Annot[] | null;
}

export interface MailboxIn {
  uniqueid: string;
  mboxname: string;
  mboxtype: string | null;
  highestmodseq: bigint;
  // The rest is absent for placeholders / deleted-type entries (§5.3 step 3).
  partition?: string;
  lastUid?: number;
  recentUid?: number;
  recentTime?: number;
  lastAppenddate?: number;
  pop3LastLogin?: number;
  pop3ShowAfter?: number;
  uidvalidity?: number;
  acl?: string;
  options?: string;
  quotaroot?: string | null;
  createdmodseq?: bigint;
  foldermodseq?: bigint;
  xconvmodseq?: bigint;
  raclmodseq?: bigint;
  syncCrc?: number; // absent => 0
  syncCrcAnnot?: number; // absent => 0
  sinceModseq?: bigint;
  sinceCrc?: number;
  sinceCrcAnnot?: number;
  annotations?: Annot[] | null;
  userflags?: string[] | null;
  usergroups?: string | null;
  records?: RecordIn[];
  /** true when a RECORD entry could not be parsed (=> IMAP_PROTOCOL_ERROR) */
  badRecord?: boolean;
}

export interface QuotaIn {
  root: string;
  /** resource name => limit; absent = unlimited. Names: STORAGE MESSAGE X-ANNOTATION-STORAGE X-NUM-FOLDERS */
  limits: Record<string, number>;
  modseq: bigint | null;
}

export interface SeenIn {
  userid: string;
  uniqueid: string;
  lastread: number;
  lastuid: number;
  lastchange: number;
  seenuids: string;
}

/** GET and APPLY commands, derived from the sub-command table (./commands/table.ts). */
export type GetCommand = { [S in GetSub]: GetCommandOf<S> }[GetSub];
export type ApplyCommand = { [S in ApplySub]: ApplyCommandOf<S> }[ApplySub];
export type RestoreCommand = { [S in RestoreSub]: RestoreCommandOf<S> }[RestoreSub];
export type {
  ApplyCommandOf,
  ApplySub,
  GetCommandOf,
  GetSub,
  RestoreCommandOf,
  RestoreSub,
  SessionApplySub,
  StoreApplySub,
} from './commands/table.js';

export type SessionCommand =
  | { verb: 'AUTHENTICATE'; mechanism: string; initial: string | null }
  | { verb: 'STARTTLS' }
  | { verb: 'COMPRESS'; algorithm: string }
  | { verb: 'NOOP' }
  | { verb: 'RESTART' }
  | { verb: 'EXIT' };

/**
 * A line the session must refuse without any store call. `reply` is the full
 * status line without CRLF (e.g. `BAD IMAP_PROTOCOL_ERROR Unrecognized command`).
 * `probeTag` is set for an IMAP probe such as `C01 CAPABILITY`.
 */
export type RefusedCommand = { verb: 'REFUSED'; reply: string; error?: CyrsyncError; probeTag?: string };

export type Command = GetCommand | ApplyCommand | RestoreCommand | SessionCommand | RefusedCommand;
