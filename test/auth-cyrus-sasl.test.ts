/**
 * Users of an existing Cyrus installation's sasldb, checked through the
 * system's libsasl2 (the sasldb is made with the real saslpasswd2 in a
 * temporary directory).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../src/config.js';
import { loadCyrusSasl, cyrusSaslLoadError } from '../src/server/auth/cyrus-sasl.js';
import { authenticate, createPasswordChecker } from '../src/server/auth/verify.js';
import { setPasswordSync } from '../src/server/auth/passwd.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

const SASLPASSWD2 = '/usr/sbin/saslpasswd2';
const have = existsSync(SASLPASSWD2) && loadCyrusSasl() !== null;
const t2 = have ? test : test.skip;
const title = (s: string): string => (have ? s : `${s} (skipped: sasl2-bin or libsasl2 missing: ${cyrusSaslLoadError() || 'no saslpasswd2'})`);
const FAST = { N: 1024, r: 8, p: 1 };

function saslpasswd(db: string, realm: string, user: string, password: string): void {
  const r = spawnSync(SASLPASSWD2, ['-p', '-c', '-f', db, '-u', realm, user], { input: password });
  if (r.status !== 0) throw new Error(`saslpasswd2 failed: ${r.stderr.toString()}`);
}

function setup(extra = ''): { dir: string; text: string } {
  const dir = trackedTempDir('cyrsync-sasldb-');
  chmodSync(dir, 0o755);
  const db = join(dir, 'sasldb2');
  saslpasswd(db, 'peer-replica', 'alice', 'Pw1secret');
  saslpasswd(db, 'peer-replica', 'carol', 'dbpw');
  saslpasswd(db, 'elsewhere', 'dave', 'davepw');
  const text = `configdirectory: ${dir}\nservername: peer-replica\nadmins: alice\nsasl_pwcheck_method: auxprop\nsasl_auxprop_plugin: sasldb\nsasl_sasldb_path: ${db}\n${extra}`;
  return { dir, text };
}

const creds = (authcid: string, password: string) => ({ mechanism: 'PLAIN' as const, authcid, authzid: '', password: Buffer.from(password) });

t2(title('sasldb users log in through libsasl2 with Cyrus replies'), async (t) => {
  const { text } = setup();
  const s = parseConfig(text).settings;
  const checker = createPasswordChecker(s);
  t.deepEqual(await authenticate(creds('alice', 'Pw1secret'), s, checker), { ok: true, userid: 'alice', admin: true });
  t.deepEqual(await authenticate(creds('Alice', 'Pw1secret'), s, checker), { ok: true, userid: 'alice', admin: true });
  const bad = await authenticate(creds('alice', 'nope'), s, checker);
  t.is(bad.ok ? '' : bad.reply, 'NO authentication failure');
  const ghost = await authenticate(creds('ghost', 'x'), s, checker);
  t.is(ghost.ok ? '' : ghost.reply, 'NO user not found');
  // sasldb entries are per realm; the realm is the servername, as for sync_server.
  const dave = await authenticate(creds('dave', 'davepw'), s, checker);
  t.is(dave.ok ? '' : dave.reply, 'NO user not found');
});

t2(title('the cyrsync password file is authoritative for the users it lists'), async (t) => {
  const { text } = setup();
  const s = parseConfig(text).settings;
  setPasswordSync(s.cyrsync_passwd_file, 'carol', 'filepw', FAST);
  const checker = createPasswordChecker(s);
  t.deepEqual(await checker.check('carol', Buffer.from('filepw')), { result: 'ok' });
  t.is((await checker.check('carol', Buffer.from('dbpw'))).result, 'badauth');
  t.deepEqual(await checker.check('alice', Buffer.from('Pw1secret')), { result: 'ok' });
});

t2(title('without libsasl2 lookups only the password file counts'), async (t) => {
  const { text } = setup();
  const s = parseConfig(text).settings;
  const checker = createPasswordChecker(s, { cyrusSasl: false });
  t.is((await checker.check('alice', Buffer.from('Pw1secret'))).result, 'nouser');
});

t2(title('service-specific sasl options and concurrent checks'), async (t) => {
  const { dir, text } = setup();
  const other = join(dir, 'other.sasldb2');
  saslpasswd(other, 'peer-replica', 'erin', 'erinpw');
  const cfg = parseConfig(`${text}syncserver_sasl_sasldb_path: ${other}\n`, 'x.conf', { ident: 'syncserver' });
  const checker = createPasswordChecker(cfg.settings);
  const results = await Promise.all([
    checker.check('erin', Buffer.from('erinpw')),
    checker.check('alice', Buffer.from('Pw1secret')),
    checker.check('erin', Buffer.from('wrong')),
    checker.check('erin', Buffer.from('erinpw')),
  ]);
  t.deepEqual(results.map((r) => r.result), ['ok', 'nouser', 'badauth', 'ok']);
});
