/**
 * Credential verification after a SASL exchange: canonicalisation of the
 * login name, the password verifiers of `sasl_pwcheck_method`, the
 * authorization-identity rule and the administrator check, with the reply
 * texts of Cyrus 3.6.1 + Cyrus SASL 2.1.28 (checked against the real
 * sync_server):
 *
 * | outcome | reply |
 * |---|---|
 * | wrong password (or empty password) | `NO authentication failure` |
 * | no such user (password file, Cyrus SASL auxprop) | `NO user not found` |
 * | empty login name, verifier unreachable | `NO generic failure` (or Cyrus SASL's own text) |
 * | no usable verifier configured | `NO no mechanism available` |
 * | authzid neither empty nor the login name | `NO authorization failure` |
 *
 * Cyrus lets an administrator or a `proxyservers` member log in *as*
 * another user through a PLAIN authzid; cyrsync refuses any authzid other
 * than the login name (replication clients never send one).
 */
import { readFileSync } from 'node:fs';
import { rawOption, type Settings } from '../../config.js';
import { loadCyrusSasl, SASL_BADAUTH, SASL_NOUSER, SASL_OK } from './cyrus-sasl.js';
import { canonicalUser, lookupPasswdEntry, PasswdFileError, verifyPasswordHash } from './passwd.js';
import {
  REPLY_ENCRYPTION_NEEDED,
  REPLY_GENERIC_FAILURE,
  REPLY_NO_MECHANISM,
  REPLY_TOO_WEAK,
  SASL_MECHANISMS,
  type SaslCredentials,
} from './sasl.js';
import { saslauthdCheck } from './saslauthd.js';

export type CheckResult =
  | { result: 'ok' }
  | { result: 'badauth'; detail: string }
  | { result: 'nouser'; detail: string }
  /** The verifier could not answer (file unreadable, saslauthd down): not the client's fault. */
  | { result: 'unavailable'; detail: string; reply?: string }
  | { result: 'nomech'; detail: string };

export interface PasswordChecker {
  /** The verifiers in use, in order. */
  readonly methods: readonly string[];
  /** Verifier names in `sasl_pwcheck_method` that cyrsync does not implement (they are skipped). */
  readonly unknownMethods: readonly string[];
  /** Check a canonical user name and password. Never rejects. */
  check(user: string, password: Buffer): Promise<CheckResult>;
}

export const KNOWN_PWCHECK_METHODS = ['auxprop', 'saslauthd'] as const;

/**
 * The verifier chain of `sasl_pwcheck_method`, tried in order until one
 * accepts (Cyrus SASL _sasl_checkpass): `auxprop` = the cyrsync password
 * file, then — for users not in it — the system's Cyrus SASL auxprop
 * plugins configured as for Cyrus (sasldb at `sasl_sasldb_path`, default
 * /etc/sasldb2); `saslauthd` = saslauthd at `sasl_saslauthd_path` with
 * service `csync` and an empty realm. The result is that of the last
 * verifier tried.
 */
export function createPasswordChecker(
  settings: Settings,
  options: {
    saslauthdTimeoutMs?: number;
    /** Consult libsasl2's auxprop plugins for users not in the password file (default: when libsasl2 loads). */
    cyrusSasl?: boolean;
    /** Raw imapd.conf lookup for `sasl_*` plugin options (default: rawOption(settings, key)). */
    option?: (key: string) => string | undefined;
  } = {},
): PasswordChecker {
  const methods = settings.sasl_pwcheck_method.filter((m) => (KNOWN_PWCHECK_METHODS as readonly string[]).includes(m));
  const unknownMethods = settings.sasl_pwcheck_method.filter((m) => !(KNOWN_PWCHECK_METHODS as readonly string[]).includes(m));

  const cyrusSasl = options.cyrusSasl === false ? null : loadCyrusSasl();
  const option = options.option ?? ((key: string) => rawOption(settings, key));

  const auxprop = async (user: string, password: Buffer): Promise<CheckResult> => {
    let hash: string | null;
    try {
      hash = await lookupPasswdEntry(settings.cyrsync_passwd_file, user);
    } catch (err) {
      const detail = err instanceof PasswdFileError ? err.message : String(err);
      return { result: 'unavailable', detail };
    }
    if (hash === null) {
      const notInFile = `${user} is not in ${settings.cyrsync_passwd_file}`;
      if (!cyrusSasl) return { result: 'nouser', detail: notInFile };
      // Not ours: ask the auxprop plugins a Cyrus installation uses (its sasldb by default).
      const r = await cyrusSasl.checkpass(settings.servername, option, user, password);
      if (r.code === SASL_OK) return { result: 'ok' };
      const detail = `${notInFile}; Cyrus SASL auxprop: ${r.detail || r.text}`;
      if (r.code === SASL_NOUSER) return { result: 'nouser', detail };
      if (r.code === SASL_BADAUTH) return { result: 'badauth', detail };
      return { result: 'unavailable', detail, reply: `NO ${r.text}` };
    }
    if (password.length === 0) return { result: 'badauth', detail: 'empty password' };
    try {
      return (await verifyPasswordHash(hash, password))
        ? { result: 'ok' }
        : { result: 'badauth', detail: 'password mismatch' };
    } catch (err) {
      return { result: 'unavailable', detail: `cannot compute hash: ${(err as Error).message}` };
    }
  };

  const saslauthd = async (user: string, password: Buffer): Promise<CheckResult> => {
    const r = await saslauthdCheck(settings.sasl_saslauthd_path, user, password, {
      service: 'csync',
      realm: '',
      ...(options.saslauthdTimeoutMs !== undefined ? { timeoutMs: options.saslauthdTimeoutMs } : {}),
    });
    if (r.result === 'ok') return { result: 'ok' };
    if (r.result === 'badauth') return { result: 'badauth', detail: `saslauthd: ${r.text}` };
    return { result: 'unavailable', detail: `saslauthd: ${r.text}` };
  };

  return {
    methods,
    unknownMethods,
    async check(user: string, password: Buffer): Promise<CheckResult> {
      let last: CheckResult = { result: 'nomech', detail: `no usable password verifier in sasl_pwcheck_method (${settings.sasl_pwcheck_method.join(' ') || 'empty'})` };
      for (const m of methods) {
        last = m === 'auxprop' ? await auxprop(user, password) : await saslauthd(user, password);
        if (last.result === 'ok') return last;
      }
      return last;
    },
  };
}

/**
 * Whether `userid` is an administrator, as Cyrus decides with its default
 * `auth_mech: unix` (imap/global.c global_authisa, lib/auth_unix.c): the
 * `admins` list is split on white space only; an entry matches when it
 * equals the canonical user id exactly (entries are not case-folded),
 * `anyone` matches every user, and `group:NAME` matches members of the
 * UNIX group NAME (primary group from /etc/passwd, supplementary ones from
 * /etc/group).
 */
export function isAdmin(settings: Settings, userid: string, system: { passwd?: string; group?: string } = {}): boolean {
  const id = canonicalUser(userid, settings.username_tolower);
  if (id === null) return false;
  let groups: Set<string> | undefined;
  for (const entry of settings.admins) {
    if (entry === 'anyone' || entry === id) return true;
    if (entry.startsWith('group:')) {
      groups ??= unixGroupsOf(id, system);
      if (groups.has(entry.slice(6))) return true;
    }
  }
  return false;
}

/** Names of the UNIX groups `user` belongs to (empty when the files cannot be read). */
export function unixGroupsOf(user: string, system: { passwd?: string; group?: string } = {}): Set<string> {
  const read = (path: string): string => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return '';
    }
  };
  const out = new Set<string>();
  let primary: string | undefined;
  for (const line of (system.passwd ?? read('/etc/passwd')).split('\n')) {
    const f = line.split(':');
    if (f[0] === user && f.length >= 4) primary = f[3];
  }
  for (const line of (system.group ?? read('/etc/group')).split('\n')) {
    const f = line.split(':');
    if (f.length < 4) continue;
    if (f[2] === primary || f[3]!.split(',').includes(user)) out.add(f[0]!);
  }
  return out;
}

/** What a connection offers below SASL: TLS, with its cipher strength (`tlsBits`, default 256), or an external layer. */
export interface ConnectionSecurity {
  tls: boolean;
  tlsBits?: number;
}

/**
 * Why `mechanism` may not be used on this connection (the reply line), or
 * null when it may. Cyrus SASL's order and texts (lib/server.c
 * sasl_server_start, mech_permitted): not in `sasl_mech_list` (or not
 * implemented) → `NO no mechanism available`; `sasl_minimum_layer` above
 * what TLS gives → `NO mechanism too weak for this user`; a plaintext
 * mechanism without TLS while `allowplaintext` is off (Cyrus sets
 * SASL_SEC_NOPLAINTEXT) → `NO encryption needed to use mechanism`.
 * (The last two checked against the real 3.6.1 sync_server.)
 */
export function mechanismRefusal(settings: Settings, connection: ConnectionSecurity, mechanism: string): string | null {
  const m = mechanism.toUpperCase();
  if (!(SASL_MECHANISMS as readonly string[]).includes(m)) return REPLY_NO_MECHANISM;
  if (settings.sasl_mech_list !== null && !settings.sasl_mech_list.includes(m)) return REPLY_NO_MECHANISM;
  const external = connection.tls ? (connection.tlsBits ?? 256) : 0;
  // PLAIN and LOGIN provide no layer of their own (max_ssf 0).
  if (settings.sasl_minimum_layer - external > 0) return REPLY_TOO_WEAK;
  const plaintextAllowed = settings.allowplaintext || (settings.sasl_minimum_layer <= external && external > 1);
  if (!plaintextAllowed) return REPLY_ENCRYPTION_NEEDED;
  return null;
}

/** Mechanisms to list in the `* SASL` greeting line: those mechanismRefusal lets through, PLAIN first. */
export function advertisedMechanisms(settings: Settings, connection: ConnectionSecurity): string[] {
  return SASL_MECHANISMS.filter((m) => mechanismRefusal(settings, connection, m) === null);
}

export type AuthOutcome =
  | {
      ok: true;
      /** Canonical user id: what the session is logged in as. */
      userid: string;
      /** In `admins`: may replicate. A non-admin gets `NO Permission denied` for every later command. */
      admin: boolean;
    }
  | {
      ok: false;
      /** The line to write (no CRLF). */
      reply: string;
      /** For the log: why, in plain words (never the password). */
      reason: string;
      /** The login name as sent, for the log. */
      authcid: string;
    };

/** Verify the credentials a finished SASL exchange produced. */
export async function authenticate(creds: SaslCredentials, settings: Settings, checker: PasswordChecker): Promise<AuthOutcome> {
  const fail = (reply: string, reason: string): AuthOutcome => ({ ok: false, reply, reason, authcid: creds.authcid });
  if (creds.authcid === '') return fail(REPLY_GENERIC_FAILURE, 'empty login name');
  const userid = canonicalUser(creds.authcid, settings.username_tolower);
  if (userid === null) return fail('NO authentication failure', 'login name is not a valid user id');
  const r = await checker.check(userid, creds.password);
  switch (r.result) {
    case 'ok':
      break;
    case 'badauth':
      return fail('NO authentication failure', r.detail);
    case 'nouser':
      return fail('NO user not found', r.detail);
    case 'unavailable':
      return fail(r.reply ?? REPLY_GENERIC_FAILURE, r.detail);
    case 'nomech':
      return fail(REPLY_NO_MECHANISM, r.detail);
  }
  if (creds.authzid !== '' && canonicalUser(creds.authzid, settings.username_tolower) !== userid) {
    return fail('NO authorization failure', `authorization identity "${creds.authzid}" differs from login name "${userid}"`);
  }
  return { ok: true, userid, admin: isAdmin(settings, userid) };
}
