/**
 * Limits checked at the frame header, before the bytes they govern arrive.
 * Every one is configurable; the defaults accept everything a real Cyrus
 * 3.6.1 sync_client sends (csync-wire.md §1.6) with room to spare.
 */
export interface Limits {
  /** One physical line (up to LF), literal bodies excluded. APPLY MAILBOX of a big folder is one line. */
  maxLineLength: number;
  /** `{N}` / `{N+}` / `~{N}` literal bodies. */
  maxLiteralSize: number;
  /** `%{partition guid size}` file literal bodies (csync: u32). */
  maxFileLiteralSize: number;
  /** Nesting depth of lists / kvlists. */
  maxDepth: number;
  /** One atom / quoted string / flag token. */
  maxAtomLength: number;
  /** Literals at or below this many bytes become Buffers; larger ones are streamed to a body sink. */
  smallLiteralThreshold: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxLineLength: 64 * 1024 * 1024,
  maxLiteralSize: 2 ** 31 - 1,
  maxFileLiteralSize: 2 ** 32 - 1,
  maxDepth: 64,
  maxAtomLength: 1024 * 1024,
  smallLiteralThreshold: 1024 * 1024,
});

export function resolveLimits(partial?: Partial<Limits>): Limits {
  return { ...DEFAULT_LIMITS, ...(partial ?? {}) };
}
