/**
 * Client of saslauthd's UNIX-socket protocol, as Cyrus SASL 2.1.28 speaks
 * it (lib/checkpw.c saslauthd_verify_password): the request is four counted
 * strings — login, password, service, realm — each a 2-octet big-endian
 * length followed by the octets; the reply is one counted string that starts
 * with `OK` on success (anything else, usually `NO ...`, is a refusal).
 * A `user@realm` login is split at the last `@`, the part after it sent as
 * the realm.
 */
import { connect } from 'node:net';

export type SaslauthdResult =
  | { result: 'ok' }
  | { result: 'badauth'; text: string }
  /** saslauthd could not be asked (no socket, I/O error, timeout, request too large, bad reply). */
  | { result: 'unavailable'; text: string };

/** Cyrus SASL's request buffer (8192 octets, 30 reserved). */
const MAX_REQUEST = 8192 - 30;
/** Cyrus SASL reads at most this much of the reply text. */
const MAX_REPLY = 1023;

function counted(b: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length, 0);
  return Buffer.concat([len, b]);
}

/** Build the request octets, or null when Cyrus SASL would refuse it as too large. */
export function buildSaslauthdRequest(login: string, password: Buffer | string, service: string, realm: string): Buffer | null {
  let user = login;
  let r = realm;
  const at = login.lastIndexOf('@');
  if (at >= 0) {
    user = login.slice(0, at);
    r = login.slice(at + 1);
  }
  const parts = [Buffer.from(user), typeof password === 'string' ? Buffer.from(password) : password, Buffer.from(service), Buffer.from(r)];
  if (parts.some((p) => p.length > 0xffff)) return null;
  if (parts.reduce((n, p) => n + p.length, 0) > MAX_REQUEST) return null;
  return Buffer.concat(parts.map(counted));
}

/**
 * Ask saslauthd at `socketPath` to check `login`/`password` for `service`
 * (cyrsync uses `csync`, the SASL service name of sync_server) and `realm`
 * (empty, as sync_server passes no user realm).
 */
export function saslauthdCheck(
  socketPath: string,
  login: string,
  password: Buffer | string,
  options: { service?: string; realm?: string; timeoutMs?: number } = {},
): Promise<SaslauthdResult> {
  const request = buildSaslauthdRequest(login, password, options.service ?? 'csync', options.realm ?? '');
  if (!request) return Promise.resolve({ result: 'unavailable', text: 'saslauthd request too large' });
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolvePromise) => {
    let settled = false;
    const chunks: Buffer[] = [];
    let have = 0;
    const sock = connect(socketPath);
    const done = (r: SaslauthdResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolvePromise(r);
    };
    const timer = setTimeout(() => done({ result: 'unavailable', text: `no answer from saslauthd at ${socketPath} within ${timeoutMs} ms` }), timeoutMs);
    const tryParse = (final: boolean): void => {
      const buf = Buffer.concat(chunks, have);
      if (buf.length < 2) {
        if (final) done({ result: 'unavailable', text: 'size read failed' });
        return;
      }
      const count = buf.readUInt16BE(0);
      if (count < 2) return done({ result: 'unavailable', text: 'bad response from saslauthd' });
      const want = Math.min(count, MAX_REPLY);
      if (buf.length - 2 < want) {
        if (final) done({ result: 'unavailable', text: 'read failed' });
        return;
      }
      const text = buf.subarray(2, 2 + want).toString('utf8');
      if (text.startsWith('OK')) done({ result: 'ok' });
      else done({ result: 'badauth', text });
    };
    sock.on('connect', () => sock.write(request));
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      have += d.length;
      tryParse(false);
    });
    sock.on('end', () => tryParse(true));
    sock.on('close', () => tryParse(true));
    sock.on('error', (err: NodeJS.ErrnoException) =>
      done({ result: 'unavailable', text: `cannot connect to saslauthd server at ${socketPath}: ${err.code ?? err.message}` }),
    );
  });
}
