/**
 * Dlist values: the typed form of everything csync puts on the wire.
 *
 * Scalar text is held as a JavaScript string in which every character is one
 * octet (latin1 mapping), so text round-trips byte-exactly without assuming an
 * encoding. Literal bodies are Buffers (small) or staged bodies (large): a
 * large literal or a file literal is never held whole in memory.
 *
 * The parser produces: atom, flag, nil, quoted, literal, bigliteral, list,
 * kvlist, file. The serializer additionally accepts the builder kinds `num`,
 * `hex`, `guid`, `string` (text whose wire form the serializer chooses, as
 * Cyrus's dlist printer does) and a `file` with a `source` to stream from.
 */
import type { Readable } from 'node:stream';

export interface DlistAtom { kind: 'atom'; value: string }
export interface DlistFlag { kind: 'flag'; value: string /* including the leading backslash */ }
export interface DlistNil { kind: 'nil' }
export interface DlistQuoted { kind: 'quoted'; value: string }
/** `{N}`/`{N+}`/`~{N}` with N at or below the small-literal threshold. */
export interface DlistLiteral { kind: 'literal'; value: Buffer }
/**
 * A literal above the threshold: its bytes went to a body sink. For output,
 * `source` supplies exactly `size` bytes with SHA-1 `sha1`, checked on the way
 * out (as for file literals).
 */
export interface DlistBigLiteral {
  kind: 'bigliteral';
  size: number;
  sha1: string;
  body: StagedBody | null;
  source?: () => Readable;
}
export interface DlistList { kind: 'list'; items: DlistValue[] }
export interface DlistItem { key: string; value: DlistValue }
export interface DlistKvList { kind: 'kvlist'; items: DlistItem[] }
/**
 * `%{partition guid size}` file literal. Parsed: `sha1` is the SHA-1 of the
 * bytes actually received (compare with `guid`), `body` is where they went
 * (null when they were skipped). Serialized: `source` supplies exactly `size`
 * bytes, checked on the way out.
 */
export interface DlistFile {
  kind: 'file';
  partition: string;
  guid: string;
  size: number;
  sha1?: string;
  body?: StagedBody | null;
  source?: () => Readable;
}
/** Builders for output only. */
export interface DlistNum { kind: 'num'; value: number | bigint }
export interface DlistHex { kind: 'hex'; value: bigint | number /* written as 16 lower-case hex digits */ }
export interface DlistString { kind: 'string'; value: string | Buffer | null /* null => NIL */ }

export type DlistValue =
  | DlistAtom
  | DlistFlag
  | DlistNil
  | DlistQuoted
  | DlistLiteral
  | DlistBigLiteral
  | DlistList
  | DlistKvList
  | DlistFile
  | DlistNum
  | DlistHex
  | DlistString;

/**
 * Where a streamed body (file literal or big literal) went. Created by a
 * BodySink at the literal header; `done` settles once every byte has been
 * written and the target closed (resolves with the final size/sha1, rejects on
 * I/O error). The router awaits `done` of every body of a command before it
 * hands the command to a store.
 */
export interface StagedBody {
  readonly done: Promise<void>;
  /** Sink-specific handle (for example a temp-file path). */
  readonly ref: unknown;
}

export interface BodyHeader {
  kind: 'file' | 'literal';
  /** file literals only */
  partition?: string;
  /** file literals only: the announced guid (lower-cased) */
  guid?: string;
  size: number;
}

/**
 * Receives streamed bodies. `open` is called at the header, before any body
 * byte; return null to have the bytes skipped (counted, not buffered).
 */
export interface BodySink {
  open(header: BodyHeader): BodyWriter | null;
}

export interface BodyWriter {
  /** false => the producer waits for `onDrain` before writing more. */
  write(chunk: Buffer): boolean;
  onDrain(cb: () => void): void;
  /** All `size` bytes were written; `sha1` is their SHA-1 (lower-case hex). */
  end(sha1: string): StagedBody;
  /** The body will not complete (connection lost, framing error): remove partial data. */
  abort(err: Error): void;
}

/**
 * One top-level command line: `verb` then the values up to the end of the
 * logical line. `GET USER bob` => verb 'GET', args [atom USER, atom bob].
 * A line whose arguments could not be parsed carries `error`; its announced
 * literal bytes have still been consumed, so the session stays in sync.
 */
export interface CommandLine {
  verb: string;
  args: DlistValue[];
  error?: import('./errors.js').CyrsyncError;
  /** Every streamed body of this line, in order (the router awaits them). */
  bodies: StagedBody[];
}
