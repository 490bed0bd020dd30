/**
 * Typed errors shared by every stage of the pipeline.
 *
 * `code` is always a Cyrus error-code name (`IMAP_PROTOCOL_ERROR`,
 * `IMAP_MESSAGE_TOO_LARGE`, ...) so the session can answer or log it exactly as
 * Cyrus would. Framing errors are terminal for the connection; command-level
 * refusals are not (the router answers NO/BAD and the session goes on).
 */
export type CyrusCode =
  | 'IMAP_PROTOCOL_ERROR'
  | 'IMAP_PROTOCOL_BAD_PARAMETERS'
  | 'IMAP_MESSAGE_TOO_LARGE'
  | 'IMAP_LITERAL_TOO_LARGE'
  | 'IMAP_LITERAL_MINUS_TOO_LARGE'
  | 'IMAP_IOERROR'
  | 'IMAP_MAILBOX_NONEXISTENT'
  | 'IMAP_MAILBOX_LOCKED'
  | 'IMAP_MAILBOX_MOVED'
  | 'IMAP_MAILBOX_NOTSUPPORTED'
  | 'IMAP_MAILBOX_BADNAME'
  | 'IMAP_MAILBOX_EXISTS'
  | 'IMAP_SYNC_CHECKSUM'
  | 'IMAP_SYNC_CHANGED'
  | 'IMAP_SYNC_BADSIEVE'
  | 'IMAP_INVALID_USER'
  | 'IMAP_PERMISSION_DENIED'
  | 'IMAP_QUOTA_EXCEEDED'
  | 'IMAP_NOSPACE'
  | 'IMAP_INTERNAL';

export class CyrsyncError extends Error {
  readonly code: CyrusCode;
  constructor(code: CyrusCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A violation of the wire framing or a hard limit: the connection must end. */
export class FramingError extends CyrsyncError {
  /** Which limit was hit, when one was (`maxLineLength`, `maxLiteralSize`, ...). */
  readonly limit: string | undefined;
  /** The offending size announced or reached, when known. */
  readonly actual: number | undefined;
  /** The configured maximum, when a limit was hit. */
  readonly max: number | undefined;
  constructor(
    code: CyrusCode,
    message: string,
    details: { limit?: string; actual?: number; max?: number; cause?: unknown } = {},
  ) {
    super(code, message, { cause: details.cause });
    this.limit = details.limit;
    this.actual = details.actual;
    this.max = details.max;
  }
}

/** A refusal of one command: answered with NO/BAD; the session stays in sync. */
export class CommandError extends CyrsyncError {}
