/**
 * SASL server side of AUTHENTICATE for PLAIN and LOGIN, as a pure state
 * machine: it is fed the command's arguments and then each client line, and
 * says what to write next. It never checks passwords (see verify.ts).
 *
 * Behaviour and reply texts are those of Cyrus 3.6.1 sync_server with Cyrus
 * SASL 2.1.28 (imap/saslserver.c, plugins/plain.c, plugins/login.c,
 * lib/saslutil.c sasl_decode64), checked against the real server:
 *
 * - an unknown mechanism is `NO no mechanism available`; a mechanism word
 *   that is not an IMAP atom is `BAD Invalid mechanism`; names match
 *   case-insensitively;
 * - `=` is a zero-length initial response; a line starting with `*`
 *   cancels (`BAD Client canceled authentication`);
 * - undecodable base64 (in the initial response or a later line) is
 *   `NO bad protocol / cancel`, as is a malformed PLAIN message — not
 *   `NO Error reading client response: ...`, which Cyrus only sends when the
 *   line cannot be read at all (see readErrorReply);
 * - base64 whose length is not a multiple of four (and has no `=`) is
 *   "incomplete": in a response it gives
 *   `NO another step is needed in authentication`; as an initial response it
 *   makes Cyrus send an empty challenge (`+ `) first;
 * - PLAIN without an initial response gets an empty challenge; LOGIN asks
 *   `Username:` (unless the initial response carried the user name) and
 *   then `Password:`.
 */

/** Mechanisms implemented here, in the order the real server lists them. */
export const SASL_MECHANISMS = ['PLAIN', 'LOGIN'] as const;
export type SaslMechanism = (typeof SASL_MECHANISMS)[number];

/**
 * Longest client response line Cyrus reads (BASE64_BUF_SIZE - 1 octets:
 * ((16K / 3) + 1) * 4, imap/saslserver.c).
 */
export const MAX_SASL_RESPONSE = 21847;

export interface SaslCredentials {
  mechanism: SaslMechanism;
  /** Authentication identity exactly as sent (not canonicalised). */
  authcid: string;
  /** Authorization identity; '' when none was sent (LOGIN never sends one). */
  authzid: string;
  /** Password octets (a NUL ends it, as in the C plugins). */
  password: Buffer;
}

export type SaslStep =
  /** Write `+ <base64 of challenge>` (`+ ` for an empty one), then feed the next client line to respond(). */
  | { challenge: Buffer }
  /** The exchange is complete: verify these credentials (verify.ts authenticate()). */
  | { done: SaslCredentials }
  /** Write `reply` and stay unauthenticated. */
  | { error: { reply: string } };

export interface SaslExchange {
  readonly mechanism: string;
  /** The first step, decided by the AUTHENTICATE arguments alone. */
  readonly first: SaslStep;
  /**
   * Feed one client line (without its CRLF/LF; a trailing CR is removed
   * anyway). Only valid after a `challenge` step.
   */
  respond(line: string | Buffer): SaslStep;
}

export const REPLY_CANCELED = 'BAD Client canceled authentication';
export const REPLY_INVALID_MECHANISM = 'BAD Invalid mechanism';
export const REPLY_NO_MECHANISM = 'NO no mechanism available';
export const REPLY_BAD_PROTOCOL = 'NO bad protocol / cancel';
export const REPLY_INCOMPLETE = 'NO another step is needed in authentication';
export const REPLY_GENERIC_FAILURE = 'NO generic failure';
export const REPLY_ENCRYPTION_NEEDED = 'NO encryption needed to use mechanism';
export const REPLY_TOO_WEAK = 'NO mechanism too weak for this user';

/** The line Cyrus writes when a response line could not be read (EOF, I/O error, overlong line). */
export function readErrorReply(detail: string): string {
  return `NO Error reading client response: ${detail}`;
}

/**
 * Whether Cyrus waits `failedloginpause` before writing this AUTHENTICATE
 * refusal: it does for every `NO` of a failed exchange (bad credentials,
 * unknown mechanism, bad protocol), not for a cancel (`BAD ...`) nor for
 * an unreadable response line.
 */
export function pausesAfterFailure(reply: string): boolean {
  return reply.startsWith('NO ') && !reply.startsWith('NO Error reading client response');
}

/** The success line; `tls` is whether STARTTLS completed (PLAIN/LOGIN add no security layer). */
export function successReply(tls: boolean): string {
  return tls ? 'OK Success (tls protection)' : 'OK Success (no protection)';
}

/** The challenge line to write for a challenge step (no line end). */
export function challengeLine(challenge: Buffer): string {
  return '+ ' + challenge.toString('base64');
}

/** Cyrus imparse_isatom. */
export function isAtom(word: string): boolean {
  if (word.length === 0 || Buffer.byteLength(word) >= 1024) return false;
  for (let i = 0; i < word.length; i++) {
    const c = word.charCodeAt(i);
    if (c >= 0x80 || c < 0x1f || c === 0x7f) return false;
    if (' {()"%*\\'.includes(word[i]!)) return false;
  }
  return true;
}

/** Value of each base64 octet, -1 for others. */
const B64 = (() => {
  const t = new Int8Array(128).fill(-1);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let i = 0; i < alphabet.length; i++) t[alphabet.charCodeAt(i)] = i;
  return t;
})();

type Decoded = { ok: Buffer } | { fail: 'badprot' | 'fail' | 'incomplete'; partial?: Buffer };

/** Cyrus SASL sasl_decode64, with its result classes. */
export function saslDecode64(input: string): Decoded {
  if (input.length > 0 && input[0] === '\r') return { fail: 'fail' };
  const out: number[] = [];
  let i = 0;
  let sawEqual = false;
  const v = (ch: string): number => {
    const c = ch.charCodeAt(0);
    return c < 128 ? B64[c]! : -1;
  };
  while (input.length - i > 3) {
    if (sawEqual) return { fail: 'badprot' };
    const c0 = input[i]!, c1 = input[i + 1]!, c2 = input[i + 2]!, c3 = input[i + 3]!;
    i += 4;
    if (v(c0) < 0 || v(c1) < 0) return { fail: 'badprot' };
    if (c2 !== '=' && v(c2) < 0) return { fail: 'badprot' };
    if (c3 !== '=' && v(c3) < 0) return { fail: 'badprot' };
    if (c2 === '=' && c3 !== '=') return { fail: 'badprot' };
    if (c2 === '=' || c3 === '=') sawEqual = true;
    out.push(((v(c0) << 2) | (v(c1) >> 4)) & 0xff);
    if (c2 !== '=') {
      out.push(((v(c1) << 4) & 0xf0) | (v(c2) >> 2));
      if (c3 !== '=') out.push(((v(c2) << 6) & 0xc0) | v(c3));
    }
  }
  if (i !== input.length) return sawEqual ? { fail: 'badprot' } : { fail: 'incomplete', partial: Buffer.from(out) };
  return { ok: Buffer.from(out) };
}

function decodeFailureReply(kind: 'badprot' | 'fail' | 'incomplete'): string {
  switch (kind) {
    case 'badprot':
      return REPLY_BAD_PROTOCOL;
    case 'fail':
      return REPLY_GENERIC_FAILURE;
    case 'incomplete':
      return REPLY_INCOMPLETE;
  }
}

/** C string semantics of the plugins: the value ends at the first NUL. */
function cstr(buf: Buffer): Buffer {
  const nul = buf.indexOf(0);
  return nul < 0 ? buf : buf.subarray(0, nul);
}

/** plugins/plain.c: authzid NUL authcid NUL password, nothing after. */
function parsePlain(msg: Buffer): SaslStep {
  const first = msg.indexOf(0);
  if (first < 0) return { error: { reply: REPLY_BAD_PROTOCOL } };
  const second = msg.indexOf(0, first + 1);
  if (second < 0) return { error: { reply: REPLY_BAD_PROTOCOL } };
  if (msg.indexOf(0, second + 1) >= 0) return { error: { reply: REPLY_BAD_PROTOCOL } };
  return {
    done: {
      mechanism: 'PLAIN',
      authzid: msg.subarray(0, first).toString('utf8'),
      authcid: msg.subarray(first + 1, second).toString('utf8'),
      password: Buffer.from(msg.subarray(second + 1)),
    },
  };
}

const USERNAME_CHALLENGE = Buffer.from('Username:');
const PASSWORD_CHALLENGE = Buffer.from('Password:');
/** plugins/login.c refuses longer user names and passwords. */
const LOGIN_MAX = 1024;

type State =
  | { kind: 'plain' }
  | { kind: 'login-user' }
  | { kind: 'login-pass'; user: string }
  /** Cyrus quirk: an incomplete initial response got an empty challenge and the exchange cannot continue. */
  | { kind: 'broken' }
  | { kind: 'finished' };

/** Which mechanisms an exchange may use (see createSaslExchange). */
export interface SaslExchangeOptions {
  mechanisms?: readonly string[];
  refuse?: (mechanism: string) => string | null;
}

/**
 * Start an AUTHENTICATE exchange.
 *
 * @param mech the mechanism word as sent
 * @param initial the initial-response word as sent (`=` for empty), or
 *   null/undefined when the client sent none
 * @param options.mechanisms mechanisms usable on this connection now
 *   (see advertisedMechanisms); others are `NO no mechanism available`
 * @param options.refuse instead of `mechanisms`: the refusal line for a
 *   mechanism, or null when it may be used (see mechanismRefusal, which
 *   gives Cyrus SASL's exact reasons)
 */
export function createSaslExchange(mech: string, initial?: string | null, options: SaslExchangeOptions = {}): SaslExchange {
  return new Exchange(mech, initial, options);
}

/** The refusal line for a mechanism word on this connection, or null when it may be used. */
function refusedMechanism(mech: string, mechanism: string, options: SaslExchangeOptions): string | null {
  if (!isAtom(mech)) return REPLY_INVALID_MECHANISM;
  if (!(SASL_MECHANISMS as readonly string[]).includes(mechanism)) return REPLY_NO_MECHANISM;
  if (options.refuse) return options.refuse(mechanism);
  const usable = options.mechanisms ?? SASL_MECHANISMS;
  return usable.some((m) => m.toUpperCase() === mechanism) ? null : REPLY_NO_MECHANISM;
}

/** The initial response: null when none was sent, or the refusal, or Cyrus's "incomplete" quirk. */
function decodeInitial(initial: string | null | undefined): { data: Buffer | null } | { error: string } | 'incomplete' {
  if (initial === undefined || initial === null) return { data: null };
  if (initial === '=') return { data: Buffer.alloc(0) };
  const d = saslDecode64(initial);
  if (!('fail' in d)) return { data: d.ok };
  return d.fail === 'incomplete' ? 'incomplete' : { error: decodeFailureReply(d.fail) };
}

class Exchange implements SaslExchange {
  readonly mechanism: string;
  readonly first: SaslStep;
  private state: State = { kind: 'finished' };

  constructor(mech: string, initial: string | null | undefined, options: SaslExchangeOptions) {
    this.mechanism = mech.toUpperCase();
    this.first = this.finish(this.start(mech, initial, options));
  }

  respond(line: string | Buffer): SaslStep {
    let text = typeof line === 'string' ? line : line.toString('latin1');
    if (text.endsWith('\n')) text = text.slice(0, -1);
    if (text.endsWith('\r')) text = text.slice(0, -1);
    const state = this.state;
    if (state.kind === 'finished') {
      throw new Error('SASL exchange: respond() called after the exchange ended');
    }
    if (text.length > MAX_SASL_RESPONSE) return this.finish({ error: { reply: readErrorReply('line too long') } });
    if (text.startsWith('*')) return this.finish({ error: { reply: REPLY_CANCELED } });
    const d = saslDecode64(text);
    if ('fail' in d) return this.finish({ error: { reply: decodeFailureReply(d.fail) } });
    return this.finish(this.step(state, d.ok));
  }

  /** A step ends the exchange unless it is a challenge. */
  private finish(step: SaslStep): SaslStep {
    if (!('challenge' in step)) this.state = { kind: 'finished' };
    return step;
  }

  private start(mech: string, initial: string | null | undefined, options: SaslExchangeOptions): SaslStep {
    const refusal = refusedMechanism(mech, this.mechanism, options);
    if (refusal !== null) return { error: { reply: refusal } };
    const decoded = decodeInitial(initial);
    if (decoded === 'incomplete') {
      this.state = { kind: 'broken' };
      return { challenge: Buffer.alloc(0) };
    }
    if ('error' in decoded) return { error: { reply: decoded.error } };
    const clientin = decoded.data;
    if (this.mechanism === 'PLAIN') {
      if (clientin === null) {
        this.state = { kind: 'plain' };
        return { challenge: Buffer.alloc(0) };
      }
      return parsePlain(clientin);
    }
    // LOGIN: a non-empty initial response is the user name.
    if (clientin === null || clientin.length === 0) {
      this.state = { kind: 'login-user' };
      return { challenge: USERNAME_CHALLENGE };
    }
    return this.loginUser(clientin);
  }

  /** One decoded client response, in the state the exchange is in. */
  private step(state: Exclude<State, { kind: 'finished' }>, data: Buffer): SaslStep {
    switch (state.kind) {
      case 'broken':
        // Cyrus steps an exchange it never started and drops the connection; answer instead.
        return { error: { reply: REPLY_BAD_PROTOCOL } };
      case 'plain':
        return parsePlain(data);
      case 'login-user':
        return this.loginUser(data);
      case 'login-pass':
        if (data.length > LOGIN_MAX) return { error: { reply: REPLY_BAD_PROTOCOL } };
        return { done: { mechanism: 'LOGIN', authcid: state.user, authzid: '', password: Buffer.from(cstr(data)) } };
    }
  }

  private loginUser(data: Buffer): SaslStep {
    if (data.length > LOGIN_MAX) return { error: { reply: REPLY_BAD_PROTOCOL } };
    this.state = { kind: 'login-pass', user: cstr(data).toString('utf8') };
    return { challenge: PASSWORD_CHALLENGE };
  }
}
