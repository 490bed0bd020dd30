import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../src/config.js';
import {
  canonicalUser,
  ensureAdminPassword,
  hashPassword,
  hashPasswordSync,
  lookupPasswdEntry,
  parseHash,
  parsePasswdFile,
  runPasswd,
  setPasswordSync,
  verifyPasswordHash,
  type ScryptParams,
} from '../src/server/auth/passwd.js';
import { advertisedMechanisms, authenticate, createPasswordChecker, isAdmin, mechanismRefusal, unixGroupsOf } from '../src/server/auth/verify.js';
import { createSaslExchange } from '../src/server/auth/sasl.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

/** Cheap parameters for tests; the format and code path are the same. */
const FAST: ScryptParams = { N: 1024, r: 8, p: 1 };

const tmp = (): string => trackedTempDir('cyrsync-passwd-');

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

function confFile(dir: string, extra = ''): string {
  const p = join(dir, 'imapd.conf');
  writeFileSync(p, `configdirectory: ${dir}/conf\nadmins: admin\n${extra}`);
  return p;
}

async function passwd(argv: string[], stdinText: string | null, baseDir?: string, defaultConfigFile?: string): Promise<{ code: number; out: string; err: string }> {
  const stdin = new PassThrough();
  if (stdinText !== null) stdin.end(stdinText);
  else stdin.end();
  const stdout = new Sink();
  const stderr = new Sink();
  // Never fall back to the machine's /etc/imapd.conf in tests.
  const code = await runPasswd(argv, {
    stdin,
    stdout,
    stderr,
    scrypt: FAST,
    defaultConfigFile: defaultConfigFile ?? join(tmpdir(), 'cyrsync-no-such-imapd.conf'),
    ...(baseDir ? { baseDir } : {}),
  });
  return { code, out: stdout.text, err: stderr.text };
}

test('hash format stores N, r, p and verifies only the right password', async (t) => {
  const h = await hashPassword('s3cret', FAST);
  t.regex(h, /^\$scrypt\$N=1024,r=8,p=1\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$/);
  t.deepEqual(parseHash(h)?.params, FAST);
  t.true(await verifyPasswordHash(h, 's3cret'));
  t.true(await verifyPasswordHash(h, Buffer.from('s3cret')));
  t.false(await verifyPasswordHash(h, 's3cret '));
  t.false(await verifyPasswordHash(h, ''));
  // Random salt: the same password hashes differently.
  t.not(hashPasswordSync('s3cret', FAST), hashPasswordSync('s3cret', FAST));
  // Hostile or broken hashes are refused, not computed.
  t.false(await verifyPasswordHash('$scrypt$N=1073741824,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', 'x'));
  t.false(await verifyPasswordHash('$scrypt$N=1000,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', 'x'));
  t.false(await verifyPasswordHash('plaintext', 'plaintext'));
});

test('default scrypt parameters verify (real cost)', async (t) => {
  const h = await hashPassword('pw');
  t.deepEqual(parseHash(h)?.params, { N: 16384, r: 8, p: 1 });
  t.true(await verifyPasswordHash(h, 'pw'));
});

test('canonical user names', (t) => {
  t.is(canonicalUser('Admin'), 'admin');
  t.is(canonicalUser('Admin', false), 'Admin');
  t.is(canonicalUser('a:b'), null);
  // Cyrus's unix canonicalisation allows a space, refuses % & * / : ? control and 8-bit octets.
  t.is(canonicalUser('a b'), 'a b');
  for (const bad of ['a%b', 'a&b', 'a*b', 'a/b', 'a?b', 'a\x7fb', 'a\x01b', 'é']) t.is(canonicalUser(bad), null, bad);
  t.is(canonicalUser('x'.repeat(80)), 'x'.repeat(80));
  t.is(canonicalUser(''), null);
  t.is(canonicalUser('x'.repeat(81)), null);
  t.is(canonicalUser('bob@example.com'), 'bob@example.com');
});

test('passwd from stdin creates a 0600 file, keeps comments and other users, replaces atomically', async (t) => {
  const dir = tmp();
  const conf = confFile(dir);
  const file = join(dir, 'conf', 'cyrsync.passwd');
  let r = await passwd(['-C', conf, 'Admin'], 'first\n');
  t.is(r.code, 0, r.err);
  t.regex(r.out, /password set for admin in .*cyrsync\.passwd/);
  t.is(statSync(file).mode & 0o777, 0o600);
  t.true(await verifyPasswordHash((await lookupPasswdEntry(file, 'admin'))!, 'first'));

  writeFileSync(file, `# operators\n${readFileSync(file, 'utf8')}`, { mode: 0o600 });
  r = await passwd(['-C', conf, 'bob'], 'bobpw\r\nignored second line\n');
  t.is(r.code, 0, r.err);
  r = await passwd(['-C', conf, 'admin'], 'second');
  t.is(r.code, 0, r.err);
  t.regex(r.out, /password changed for admin/);
  const text = readFileSync(file, 'utf8');
  t.true(text.startsWith('# operators\nadmin:$scrypt$'));
  const users = parsePasswdFile(text);
  t.deepEqual([...users.keys()], ['admin', 'bob']);
  t.true(await verifyPasswordHash(users.get('admin')!, 'second'));
  t.false(await verifyPasswordHash(users.get('admin')!, 'first'));
  t.true(await verifyPasswordHash(users.get('bob')!, 'bobpw'));
  t.is(statSync(file).mode & 0o777, 0o600);
  // No temporary or lock files left behind.
  t.deepEqual(readdirSync(join(dir, 'conf')).sort(), ['cyrsync.passwd']);

  r = await passwd(['-C', conf, '-d', 'bob'], null);
  t.is(r.code, 0, r.err);
  t.deepEqual([...parsePasswdFile(readFileSync(file, 'utf8')).keys()], ['admin']);
  r = await passwd(['-C', conf, '-d', 'bob'], null);
  t.is(r.code, 1);
});

test('passwd errors: usage, config, empty password, bad user, broken file', async (t) => {
  const dir = tmp();
  const conf = confFile(dir);
  t.is((await passwd([], 'x')).code, 64);
  t.is((await passwd(['-C'], 'x')).code, 64);
  t.is((await passwd(['-C', conf, 'a', 'b'], 'x')).code, 64);
  t.is((await passwd(['-C', conf, '--bogus', 'a'], 'x')).code, 64);
  const help = await passwd(['--help'], null);
  t.is(help.code, 0);
  t.regex(help.out, /usage: cyrsync passwd/);

  const bad = join(dir, 'bad.conf');
  writeFileSync(bad, 'configdirectory: /x\nmaxword: many\n');
  const cfg = await passwd(['-C', bad, 'a'], 'pw');
  t.is(cfg.code, 78);
  t.regex(cfg.err, /bad\.conf line 2 \(maxword\)/);

  const empty = await passwd(['-C', conf, 'a'], '\n');
  t.is(empty.code, 1);
  t.regex(empty.err, /empty password refused/);
  t.is((await passwd(['-C', conf, 'a:b'], 'pw')).code, 65);
  t.is((await passwd(['-C', conf, '#x'], 'pw')).code, 65);

  const file = join(dir, 'conf', 'cyrsync.passwd');
  t.is((await passwd(['-C', conf, 'a'], 'pw')).code, 0);
  writeFileSync(file, 'a:$scrypt$x\ngarbage line\n');
  const broken = await passwd(['-C', conf, 'b'], 'pw');
  t.is(broken.code, 65);
  t.regex(broken.err, /line 2/);
  // The broken file was left untouched.
  t.is(readFileSync(file, 'utf8'), 'a:$scrypt$x\ngarbage line\n');
});

test('passwd without -C: the default file when it exists, else the built-in configuration under baseDir', async (t) => {
  const dir = tmp();
  const r = await passwd(['someone'], 'pw', dir);
  t.is(r.code, 0, r.err);
  const file = join(dir, 'var', 'conf', 'cyrsync.passwd');
  t.true(r.out.includes(`password set for someone in ${file}`));
  t.true(await verifyPasswordHash((await lookupPasswdEntry(file, 'someone'))!, 'pw'));
  const conf = confFile(dir);
  const r2 = await passwd(['other'], 'pw', dir, conf);
  t.is(r2.code, 0, r2.err);
  t.true(r2.out.includes(`password set for other in ${join(dir, 'conf', 'cyrsync.passwd')}`));
});

test('ensureAdminPassword creates a random password once', async (t) => {
  const dir = tmp();
  const s = parseConfig(`configdirectory: ${dir}/conf\nadmins: anyone group:wheel Upper admin other\n`).settings;
  const first = ensureAdminPassword(s, FAST);
  t.true(first.created);
  t.is(first.user, 'admin');
  t.true(typeof first.password === 'string' && first.password.length >= 20);
  t.true(await verifyPasswordHash((await lookupPasswdEntry(s.cyrsync_passwd_file, 'admin'))!, first.password!));
  const second = ensureAdminPassword(s, FAST);
  t.deepEqual(second, { created: false });
  const none = parseConfig(`configdirectory: ${dir}/c2\n`).settings;
  t.deepEqual(ensureAdminPassword(none, FAST), { created: false });
  // Another admin already present: nothing created.
  const d2 = tmp();
  const s2 = parseConfig(`configdirectory: ${d2}\nadmins: root other\n`).settings;
  setPasswordSync(s2.cyrsync_passwd_file, 'other', 'pw', FAST);
  t.false(ensureAdminPassword(s2, FAST).created);
});

test('authenticate: success, wrong password, unknown user, authzid rules, admin flag', async (t) => {
  const dir = tmp();
  const s = parseConfig(`configdirectory: ${dir}\nadmins: admin\n`).settings;
  setPasswordSync(s.cyrsync_passwd_file, 'admin', 'adminpw', FAST);
  setPasswordSync(s.cyrsync_passwd_file, 'bob', 'bobpw', FAST);
  const checker = createPasswordChecker(s);
  t.deepEqual(checker.methods, ['auxprop']);
  const run = async (mech: string, initial: string): Promise<unknown> => {
    const step = createSaslExchange(mech, Buffer.from(initial).toString('base64')).first;
    if (!('done' in step)) throw new Error('no credentials');
    const r = await authenticate(step.done, s, checker);
    return r.ok ? { ok: true, userid: r.userid, admin: r.admin } : { ok: false, reply: r.reply };
  };
  t.deepEqual(await run('PLAIN', '\0admin\0adminpw'), { ok: true, userid: 'admin', admin: true });
  t.deepEqual(await run('PLAIN', '\0ADMIN\0adminpw'), { ok: true, userid: 'admin', admin: true });
  t.deepEqual(await run('PLAIN', 'admin\0admin\0adminpw'), { ok: true, userid: 'admin', admin: true });
  t.deepEqual(await run('PLAIN', '\0bob\0bobpw'), { ok: true, userid: 'bob', admin: false });
  t.deepEqual(await run('PLAIN', '\0admin\0wrong'), { ok: false, reply: 'NO authentication failure' });
  t.deepEqual(await run('PLAIN', '\0admin\0'), { ok: false, reply: 'NO authentication failure' });
  t.deepEqual(await run('PLAIN', '\0ghost\0x'), { ok: false, reply: 'NO user not found' });
  t.deepEqual(await run('PLAIN', '\0\0x'), { ok: false, reply: 'NO generic failure' });
  // Replies of the real sync_server for odd login names:
  t.deepEqual(await run('PLAIN', '\0ad min\0x'), { ok: false, reply: 'NO user not found' });
  t.deepEqual(await run('PLAIN', `\0${'a'.repeat(100)}\0x`), { ok: false, reply: 'NO authentication failure' });
  t.deepEqual(await run('PLAIN', '\0ad\x01min\0x'), { ok: false, reply: 'NO authentication failure' });
  t.deepEqual(await run('PLAIN', 'ADMIN\0admin\0adminpw'), { ok: true, userid: 'admin', admin: true });
  t.deepEqual(await run('PLAIN', 'bob\0admin\0adminpw'), { ok: false, reply: 'NO authorization failure' });
  // Wrong password with a foreign authzid: the password check comes first.
  t.deepEqual(await run('PLAIN', 'bob\0admin\0nope'), { ok: false, reply: 'NO authentication failure' });

  const failed = await authenticate({ mechanism: 'PLAIN', authcid: 'admin', authzid: '', password: Buffer.from('nope') }, s, checker);
  t.false(failed.ok);
  if (!failed.ok) {
    t.is(failed.authcid, 'admin');
    t.false(failed.reason.includes('nope'));
  }

  const unreadable = parseConfig(`configdirectory: ${dir}\ncyrsync_passwd_file: ${dir}\n`).settings;
  const r = await authenticate({ mechanism: 'PLAIN', authcid: 'admin', authzid: '', password: Buffer.from('x') }, unreadable, createPasswordChecker(unreadable));
  t.deepEqual(r.ok ? null : r.reply, 'NO generic failure');

  const nomech = parseConfig(`configdirectory: ${dir}\nsasl_pwcheck_method: pam\n`).settings;
  const c2 = createPasswordChecker(nomech);
  t.deepEqual(c2.unknownMethods, ['pam']);
  const r2 = await authenticate({ mechanism: 'PLAIN', authcid: 'admin', authzid: '', password: Buffer.from('x') }, nomech, c2);
  t.deepEqual(r2.ok ? null : r2.reply, 'NO no mechanism available');
});

test('isAdmin as Cyrus: white space separated, exact entries, anyone, group:', (t) => {
  const s = parseConfig('configdirectory: /x\nadmins: admin\trepl  a,b Upper group:wheel\n').settings;
  t.true(isAdmin(s, 'admin'));
  // The login name is canonicalised (lower case); list entries are compared as written.
  t.true(isAdmin(s, 'ADMIN'));
  t.false(isAdmin(s, 'upper'));
  t.true(isAdmin(s, 'repl'));
  t.true(isAdmin(s, 'a,b'));
  t.false(isAdmin(s, 'a'));
  t.false(isAdmin(s, 'bob'));
  t.false(isAdmin(s, ''));
  const system = {
    passwd: 'root:x:0:0::/root:/bin/sh\ncarol:x:1001:10::/home/carol:/bin/sh\ndan:x:1002:1002::/home/dan:/bin/sh\n',
    group: 'root:x:0:\nwheel:x:10:\nstaff:x:50:dan,erin\n',
  };
  t.true(isAdmin(s, 'carol', system));
  t.false(isAdmin(s, 'dan', system));
  t.deepEqual([...unixGroupsOf('dan', system)], ['staff']);
  t.deepEqual([...unixGroupsOf('carol', system)], ['wheel']);
  const everyone = parseConfig('configdirectory: /x\nadmins: anyone\n').settings;
  t.true(isAdmin(everyone, 'whoever'));
});

test('advertised mechanisms follow allowplaintext, TLS, sasl_mech_list and sasl_minimum_layer', (t) => {
  const base = 'configdirectory: /x\n';
  const s = (extra: string): ReturnType<typeof parseConfig>['settings'] => parseConfig(base + extra).settings;
  t.deepEqual(advertisedMechanisms(s(''), { tls: false }), []);
  t.deepEqual(advertisedMechanisms(s(''), { tls: true }), ['PLAIN', 'LOGIN']);
  t.deepEqual(advertisedMechanisms(s('allowplaintext: yes\n'), { tls: false }), ['PLAIN', 'LOGIN']);
  t.deepEqual(advertisedMechanisms(s('allowplaintext: yes\nsasl_mech_list: plain CRAM-MD5\n'), { tls: false }), ['PLAIN']);
  t.deepEqual(advertisedMechanisms(s('allowplaintext: yes\nsasl_minimum_layer: 56\n'), { tls: false }), []);
  t.deepEqual(advertisedMechanisms(s('sasl_minimum_layer: 56\n'), { tls: true, tlsBits: 128 }), ['PLAIN', 'LOGIN']);
  t.deepEqual(advertisedMechanisms(s('sasl_minimum_layer: 256\n'), { tls: true, tlsBits: 128 }), []);
});

/** A stand-in terminal: raw-mode calls are recorded, bytes arrive as typed. */
class FakeTty extends PassThrough {
  isTTY = true;
  rawModes: boolean[] = [];
  setRawMode(mode: boolean): this {
    this.rawModes.push(mode);
    return this;
  }
}

async function ttyPasswd(argv: string[], typed: (Buffer | string)[]): Promise<{ code: number; err: string; out: string; raw: boolean[] }> {
  const stdin = new FakeTty();
  const stdout = new Sink();
  const stderr = new Sink();
  const run = runPasswd(argv, { stdin, stdout, stderr, scrypt: FAST, defaultConfigFile: join(tmpdir(), 'cyrsync-no-such-imapd.conf') });
  for (const chunk of typed) {
    await new Promise((r) => setImmediate(r));
    stdin.write(chunk);
  }
  const code = await run;
  return { code, err: stderr.text, out: stdout.text, raw: stdin.rawModes };
}

test('passwd on a terminal asks twice without echo, with editing keys', async (t) => {
  const dir = tmp();
  const conf = confFile(dir);
  const file = join(dir, 'conf', 'cyrsync.passwd');
  // Typed with a mistake corrected by backspace; the second entry pasted in one go with CR LF.
  const r = await ttyPasswd(['-C', conf, 'admin'], ['s3x', '\x7f', 'cret\r', 's3cret\r\n']);
  t.is(r.code, 0, r.err);
  t.true(r.err.includes('New password for admin: '));
  t.true(r.err.includes('Retype new password: '));
  t.false(r.err.includes('s3cret'));
  t.false(r.out.includes('s3cret'));
  t.deepEqual(r.raw, [true, false]);
  t.true(await verifyPasswordHash((await lookupPasswdEntry(file, 'admin'))!, 's3cret'));

  // Both lines in one chunk: the second prompt uses what was typed ahead.
  const ahead = await ttyPasswd(['-C', conf, 'bob'], ['one\rone\r']);
  t.is(ahead.code, 0, ahead.err);
  t.true(await verifyPasswordHash((await lookupPasswdEntry(file, 'bob'))!, 'one'));

  const differ = await ttyPasswd(['-C', conf, 'admin'], ['aaa\r', 'bbb\r']);
  t.is(differ.code, 1);
  t.regex(differ.err, /the passwords differ; nothing changed/);
  t.true(await verifyPasswordHash((await lookupPasswdEntry(file, 'admin'))!, 's3cret'));

  const interrupted = await ttyPasswd(['-C', conf, 'admin'], ['abc\x03']);
  t.is(interrupted.code, 1);
  t.deepEqual(interrupted.raw, [true, false]);
});

test('passwd notes when the password file is not consulted', async (t) => {
  const dir = tmp();
  const conf = confFile(dir, 'sasl_pwcheck_method: saslauthd\n');
  const r = await passwd(['-C', conf, 'admin'], 'pw');
  t.is(r.code, 0, r.err);
  t.regex(r.err, /note: sasl_pwcheck_method is "saslauthd", so logins do not consult/);
});

// A real pseudo-terminal (Python's pty module): the typed password must not be echoed.
const havePython = existsSync('/usr/bin/python3');
(havePython ? test : test.skip)(
  havePython ? 'passwd on a real pseudo-terminal does not echo' : 'passwd on a real pseudo-terminal (skipped: python3 missing)',
  (t) => {
    const dir = tmp();
    const conf = confFile(dir);
    const root = fileURLToPath(new URL('..', import.meta.url));
    const mod = fileURLToPath(new URL('../src/server/auth/passwd.ts', import.meta.url));
    const script = `const { runPasswd } = await import(${JSON.stringify(mod)}); process.exitCode = await runPasswd(['-C', ${JSON.stringify(conf)}, 'admin'], { scrypt: { N: 1024, r: 8, p: 1 } });`;
    const py = `
import os, pty, sys, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], '--import=tsx', '--input-type=module', '-e', sys.argv[2]])
out = b''
def until(marker):
    global out
    while marker not in out:
        r, _, _ = select.select([fd], [], [], 30)
        if not r: raise SystemExit('timeout waiting for %r; got %r' % (marker, out))
        out += os.read(fd, 4096)
until(b'New password for admin: ')
os.write(fd, b'Zq9secret\\r')
until(b'Retype new password: ')
os.write(fd, b'Zq9secret\\r')
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk: break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode('utf-8', 'replace'))
sys.exit(os.waitstatus_to_exitcode(status))
`;
    const r = spawnSync('/usr/bin/python3', ['-c', py, process.execPath, script], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    t.is(r.status, 0, r.stdout + r.stderr);
    t.true(r.stdout.includes('password set for admin'), r.stdout);
    t.false(r.stdout.includes('Zq9secret'));
    const file = join(dir, 'conf', 'cyrsync.passwd');
    t.regex(readFileSync(file, 'utf8'), /^admin:\$scrypt\$N=1024,r=8,p=1\$/);
  },
);

const asRoot = process.getuid?.() === 0;
(asRoot ? test : test.skip)(
  asRoot ? 'run as root, the password file keeps the owner of its directory or its previous owner' : 'password file ownership (skipped: needs root)',
  (t) => {
    const dir = tmp();
    const conf = join(dir, 'conf');
    mkdirSync(conf);
    chownSync(conf, 65534, 65534);
    const file = join(conf, 'cyrsync.passwd');
    setPasswordSync(file, 'admin', 'pw', FAST);
    let st = statSync(file);
    t.deepEqual([st.uid, st.gid, st.mode & 0o777], [65534, 65534, 0o600]);
    // An existing file keeps its own owner even when the directory's differs.
    chownSync(file, 12345, 23456);
    setPasswordSync(file, 'bob', 'pw', FAST);
    st = statSync(file);
    t.deepEqual([st.uid, st.gid, st.mode & 0o777], [12345, 23456, 0o600]);
  },
);

test('mechanism refusals carry Cyrus SASL reasons, in its order', (t) => {
  const s = (extra: string): ReturnType<typeof parseConfig>['settings'] => parseConfig(`configdirectory: /x\n${extra}`).settings;
  const plain = { tls: false };
  const tls = { tls: true };
  t.is(mechanismRefusal(s(''), plain, 'PLAIN'), 'NO encryption needed to use mechanism');
  t.is(mechanismRefusal(s(''), tls, 'plain'), null);
  t.is(mechanismRefusal(s('allowplaintext: yes\n'), plain, 'LOGIN'), null);
  t.is(mechanismRefusal(s('allowplaintext: yes\nsasl_mech_list: PLAIN\n'), plain, 'LOGIN'), 'NO no mechanism available');
  t.is(mechanismRefusal(s('allowplaintext: yes\n'), plain, 'CRAM-MD5'), 'NO no mechanism available');
  t.is(mechanismRefusal(s('allowplaintext: yes\nsasl_minimum_layer: 1\n'), plain, 'PLAIN'), 'NO mechanism too weak for this user');
  t.is(mechanismRefusal(s('sasl_minimum_layer: 1\n'), plain, 'PLAIN'), 'NO mechanism too weak for this user');
  t.is(mechanismRefusal(s('sasl_minimum_layer: 128\n'), { tls: true, tlsBits: 128 }, 'PLAIN'), null);
  const settings = s('');
  const ex = createSaslExchange('PLAIN', Buffer.from('\0a\0b').toString('base64'), { refuse: (m) => mechanismRefusal(settings, plain, m) });
  t.deepEqual(ex.first, { error: { reply: 'NO encryption needed to use mechanism' } });
  const ok = createSaslExchange('PLAIN', Buffer.from('\0a\0b').toString('base64'), { refuse: (m) => mechanismRefusal(settings, tls, m) });
  t.true('done' in ok.first);
});

test('hashes demanding too much memory are refused', (t) => {
  const salt = 'AAAAAAAAAAAAAAAAAAAAAA==';
  const key = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
  t.truthy(parseHash(`$scrypt$N=262144,r=8,p=1$${salt}$${key}`));
  t.is(parseHash(`$scrypt$N=1048576,r=32,p=1$${salt}$${key}`), null);
  t.is(parseHash(`$scrypt$N=524288,r=8,p=1$${salt}$${key}`), null);
});
