import test from 'ava';
import fs, { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, EX_CONFIG } from '../src/config.js';
import { UsageError, formatDebugCommand, loadDaemonConfig, parseDaemonArgs, serviceIdent } from '../src/server/daemon.js';

const made: string[] = [];
test.after.always(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'cyrsync-daemon-'));
  made.push(d);
  return d;
}

test('defaults: -U 250, -T 60, no external layer', (t) => {
  const a = parseDaemonArgs([]);
  t.is(a.maxUses, 250);
  t.is(a.reuseTimeout, 60);
  t.is(a.externalSsf, 0);
  t.false(a.debugger);
  t.false(a.stdio);
  t.is(a.configFile, undefined);
  t.is(a.listen, undefined);
});

test('master(8) and sync_server/backupd options', (t) => {
  const a = parseDaemonArgs(['-C', '/etc/x.conf', '-U', '30', '-T', '5', '-D', '-p', '2', '-s', '-N', '-f']);
  t.is(a.configFile, '/etc/x.conf');
  t.is(a.maxUses, 30);
  t.is(a.reuseTimeout, 5);
  t.true(a.debugger);
  t.is(a.externalSsf, 2);
  t.deepEqual(a.ignored, ['-s', '-N', '-f']);
  t.true(parseDaemonArgs(['-X']).stdio);
});

test('numbers are read like atoi(3); negative uses and timeouts count as 0', (t) => {
  t.is(parseDaemonArgs(['-U', '-5']).maxUses, 0);
  t.is(parseDaemonArgs(['-T', '-1']).reuseTimeout, 0);
  t.is(parseDaemonArgs(['-U', '12abc']).maxUses, 12);
  t.is(parseDaemonArgs(['-T', 'x']).reuseTimeout, 0);
});

test('options merged with their values are refused, as service.c does', (t) => {
  const err = t.throws(() => parseDaemonArgs(['-U5']), { instanceOf: UsageError });
  t.regex(err!.message, /separated by whitespace/);
  t.throws(() => parseDaemonArgs(['-C']), { instanceOf: UsageError, message: /needs a value/ });
  t.throws(() => parseDaemonArgs(['--bogus']), { instanceOf: UsageError, message: /unknown option --bogus/ });
});

test('--listen forms', (t) => {
  t.is(parseDaemonArgs(['--listen', '127.0.0.1:2005']).listen, '127.0.0.1:2005');
  t.is(parseDaemonArgs(['--listen=2005']).listen, '2005');
});

test('service ident: $CYRUS_SERVICE under master, else the usual service names', (t) => {
  t.is(serviceIdent('sync', { CYRUS_SERVICE: 'replica2' }), 'replica2');
  t.is(serviceIdent('sync', {}), 'syncserver');
  t.is(serviceIdent('backup', {}), 'backupd');
});

test('debug_command is formatted with argv[0], pid and service', (t) => {
  t.is(formatDebugCommand('gdb -batch %s %d # %s 100%%', '/usr/bin/cli.js', 42, 'syncserver'), 'gdb -batch /usr/bin/cli.js 42 # syncserver 100%');
});

test('a bad imapd.conf names the file, the line and the key; exit status EX_CONFIG', (t) => {
  const dir = tempDir();
  const conf = join(dir, 'imapd.conf');
  writeFileSync(conf, `configdirectory: ${dir}\npartition-default: ${dir}/spool\nsync_timeout: soon\n`);
  const err = t.throws(() => loadDaemonConfig(parseDaemonArgs(['-C', conf]), 'sync', {}), { instanceOf: ConfigError });
  t.is(err!.exitCode, EX_CONFIG);
  t.is(EX_CONFIG, 78);
  t.true(err!.message.includes(conf));
  t.regex(err!.message, /line 3/);
  t.regex(err!.message, /sync_timeout/);
});

test('<service>_<key> overrides follow $CYRUS_SERVICE', (t) => {
  const dir = tempDir();
  const conf = join(dir, 'imapd.conf');
  writeFileSync(conf, `configdirectory: ${dir}\npartition-default: ${dir}/spool\nservername: plain\nrep2_servername: special\n`);
  t.is(loadDaemonConfig(parseDaemonArgs(['-C', conf]), 'sync', { CYRUS_SERVICE: 'rep2' }).settings.servername, 'special');
  t.is(loadDaemonConfig(parseDaemonArgs(['-C', conf]), 'sync', {}).settings.servername, 'plain');
});

test('-p ssf: an external layer above 1 allows the plaintext mechanisms, as TLS does', async (t) => {
  const dir = tempDir();
  const { parseConfig } = await import('../src/config.js');
  const { createAuthenticator } = await import('../src/server/daemon.js');
  const settings = parseConfig(`configdirectory: ${dir}\npartition-default: ${dir}/spool\nallowplaintext: no\n`, 'x.conf').settings;
  t.deepEqual(createAuthenticator(settings).mechanisms(false), []);
  t.deepEqual(createAuthenticator(settings, { externalSsf: 1 }).mechanisms(false), []);
  const withLayer = createAuthenticator(settings, { externalSsf: 256 }).mechanisms(false);
  t.true(withLayer.includes('PLAIN'), withLayer.join(' '));
  t.deepEqual(createAuthenticator(settings).mechanisms(true), withLayer);
});

test('a UNIX-socket client (the Cyrus user) is an administrator without being listed in admins', async (t) => {
  const dir = tempDir();
  const { parseConfig } = await import('../src/config.js');
  const { createAuthenticator } = await import('../src/server/daemon.js');
  const settings = parseConfig(`configdirectory: ${dir}\npartition-default: ${dir}/spool\nadmins: admin\n`, 'x.conf').settings;
  t.true(createAuthenticator(settings, { preauthUser: 'cyrus' }).isAdmin('cyrus'));
  t.false(createAuthenticator(settings).isAdmin('cyrus'));
  t.true(createAuthenticator(settings).isAdmin('admin'));
});

test('tcp_keepalive and tcp_keepalive_idle as Cyrus reads them', async (t) => {
  const { tcpKeepalive } = await import('../src/server/daemon.js');
  const conf = (kv: Record<string, string>) => ({ get: (k: string) => kv[k] });
  t.is(tcpKeepalive(conf({})), null);
  t.is(tcpKeepalive(conf({ tcp_keepalive: 'no' })), null);
  t.deepEqual(tcpKeepalive(conf({ tcp_keepalive: 'yes' })), { idleMs: 0 });
  t.deepEqual(tcpKeepalive(conf({ tcp_keepalive: 'on', tcp_keepalive_idle: '2m' })), { idleMs: 120_000 });
  t.deepEqual(tcpKeepalive(conf({ tcp_keepalive: '1', tcp_keepalive_idle: '45' })), { idleMs: 45_000 });
});

test('systemd socket activation is recognised only for this process', async (t) => {
  const { systemdListenFd } = await import('../src/server/daemon.js');
  t.is(systemdListenFd({ LISTEN_PID: '42', LISTEN_FDS: '1' }, 42), 3);
  t.is(systemdListenFd({ LISTEN_PID: '43', LISTEN_FDS: '1' }, 42), null);
  t.is(systemdListenFd({ LISTEN_PID: '42', LISTEN_FDS: '0' }, 42), null);
  t.is(systemdListenFd({}, 42), null);
});
