import test from 'ava';
import fc from 'fast-check';
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import {
  ConfigError,
  CONFIG_KEYS,
  EX_CONFIG,
  configKeysMarkdown,
  defaultPartitionName,
  embeddedDefaultConfig,
  loadConfig,
  loadConfigOrEmbedded,
  parseCInt,
  parseConfig,
  parseDuration,
  parseSwitch,
} from '../src/config.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

const tmp = (): string => trackedTempDir('cyrsync-config-');

const base = 'configdirectory: /var/lib/cyrus\n';

function configError(t: import('ava').ExecutionContext, fn: () => unknown): ConfigError {
  const err = t.throws(fn, { instanceOf: ConfigError });
  return err as ConfigError;
}

test('comments, blank lines, whitespace and case-folded keys', (t) => {
  const c = parseConfig(
    [
      '# a comment',
      '',
      '   # indented comment',
      '\t',
      'ConfigDirectory:   /var/lib/cyrus   ',
      'Partition-Default: /var/spool/cyrus/mail',
      'servername:\treplica.example.net\t',
      'admins: admin  repl\tother',
      'unknown_option_for_someone_else: anything at all',
    ].join('\n'),
    'x.conf',
  );
  t.is(c.settings.configdirectory, '/var/lib/cyrus');
  t.deepEqual(c.settings.partitions, { default: '/var/spool/cyrus/mail' });
  t.is(c.settings.servername, 'replica.example.net');
  t.deepEqual(c.settings.admins, ['admin', 'repl', 'other']);
  t.is(c.get('unknown_option_for_someone_else'), 'anything at all');
  t.is(c.get('UNKNOWN_OPTION_FOR_SOMEONE_ELSE'), 'anything at all');
});

test('defaults match Cyrus 3.6.1 imapoptions', (t) => {
  const s = parseConfig(base).settings;
  t.is(s.sync_timeout, 1800);
  t.is(s.timeout, 32 * 60);
  t.is(s.failedloginpause, 3);
  t.is(s.maxword, 131072);
  t.false(s.allowplaintext);
  t.deepEqual(s.sasl_pwcheck_method, ['auxprop']);
  t.is(s.sasl_saslauthd_path, '/var/run/saslauthd/mux');
  t.is(s.sasl_mech_list, null);
  t.is(s.backup_db, 'twoskip');
  t.is(s.backup_db_path, '/var/lib/cyrus/backups.db');
  t.is(s.backup_staging_path, '/tmp/backup');
  t.is(s.cyrsync_passwd_file, '/var/lib/cyrus/cyrsync.passwd');
  t.is(s.servername, hostname());
  t.deepEqual(s.admins, []);
  t.is(s.umask, 0o077);
  t.true(s.unixhierarchysep);
  t.true(s.username_tolower);
  t.is(s.syslog_facility, null);
  t.is(s.defaultpartition, null);
  t.is(s.cyrsync_log_level, 'info');
  t.deepEqual(s.tls_versions, ['tls1_0', 'tls1_1', 'tls1_2', 'tls1_3']);
});

test('switches follow config_parse_switch exactly', (t) => {
  for (const v of ['yes', 'on', 'true', '1', 't', 'y', 'onward']) {
    t.true(parseConfig(`${base}allowplaintext: ${v}\n`).settings.allowplaintext, v);
  }
  for (const v of ['no', 'off', 'false', '0', 'f', 'n', 'nope']) {
    t.false(parseConfig(`${base}allowplaintext: ${v}\n`).settings.allowplaintext, v);
  }
  // Cyrus compares raw octets: upper case is not a switch.
  const err = configError(t, () => parseConfig(`${base}allowplaintext: Yes\n`, 'imapd.conf'));
  t.is(err.file, 'imapd.conf');
  t.is(err.line, 2);
  t.is(err.key, 'allowplaintext');
  t.is(err.exitCode, EX_CONFIG);
  t.is(EX_CONFIG, 78);
  t.regex(err.message, /imapd\.conf line 2 \(allowplaintext\): non-switch value "Yes"/);
  t.is(parseSwitch('o'), -1);
  t.is(parseSwitch(''), -1);
});

test('durations with units and per-key default units', (t) => {
  t.is(parseConfig(`${base}sync_timeout: 90\n`).settings.sync_timeout, 90);
  t.is(parseConfig(`${base}sync_timeout: 30m\n`).settings.sync_timeout, 1800);
  t.is(parseConfig(`${base}sync_timeout: 1h30m15s\n`).settings.sync_timeout, 5415);
  t.is(parseConfig(`${base}sync_timeout: 2d\n`).settings.sync_timeout, 172800);
  // sync_server raises the idle timeout to at least 3 seconds.
  t.is(parseConfig(`${base}sync_timeout: 1\n`).settings.sync_timeout, 3);
  // `timeout` counts bare numbers in minutes.
  t.is(parseConfig(`${base}timeout: 45\n`).settings.timeout, 45 * 60);
  const err = configError(t, () => parseConfig(`${base}\n\nsync_timeout: 10x\n`, 'a.conf'));
  t.is(err.line, 4);
  t.is(err.key, 'sync_timeout');
  t.regex(err.detail, /bad unit 'x'/);
  t.deepEqual(parseDuration('m5'), { ok: false, error: "no digit before 'm'" });
  t.deepEqual(parseDuration('5x'), { ok: false, error: "bad unit 'x'" });
  // Cyrus 3.6.1 accepts a lone '-' (zero) and wraps at 32 bits without complaint.
  t.deepEqual(parseDuration('-'), { ok: true, seconds: 0, overflow: false });
  t.deepEqual(parseDuration('-5m'), { ok: true, seconds: -300, overflow: false });
  t.deepEqual(parseDuration('30000d'), { ok: true, seconds: 30000 * 86400 - 2 ** 32, overflow: true });
  t.deepEqual(parseDuration('2147483647'), { ok: true, seconds: 2147483647, overflow: false });
  t.deepEqual(parseDuration('2147483648'), { ok: true, seconds: -2147483648, overflow: true });
  t.deepEqual(parseDuration(''), { ok: true, seconds: 0, overflow: false });
  const wrapped = parseConfig(`${base}sync_timeout: 3000000000s\n`, 'w.conf');
  t.is(wrapped.settings.sync_timeout, 3);
  t.deepEqual(wrapped.warnings, ['w.conf line 2 (sync_timeout): 3000000000s is more seconds than 32 bits hold; read as -1294967296, as Cyrus does']);
  t.deepEqual(parseConfig(base).warnings, []);
});

test('durations: a sum of unit groups equals the arithmetic value', (t) => {
  fc.assert(
    fc.property(
      fc.nat(20),
      fc.nat(23),
      fc.nat(59),
      fc.nat(59),
      (d, h, m, s) => {
        const text = `${d}d${h}h${m}m${s}s`;
        const r = parseDuration(text);
        return r.ok && r.seconds === ((d * 24 + h) * 60 + m) * 60 + s;
      },
    ),
  );
  t.pass();
});

test('integers are strtol(..., 0)', (t) => {
  t.deepEqual(parseCInt('0x10'), { value: 16, overflow: false });
  t.deepEqual(parseCInt('010'), { value: 8, overflow: false });
  t.deepEqual(parseCInt('-12'), { value: -12, overflow: false });
  t.deepEqual(parseCInt('+7'), { value: 7, overflow: false });
  t.deepEqual(parseCInt('0'), { value: 0, overflow: false });
  t.is(parseCInt('12abc'), null);
  t.is(parseCInt('08'), null);
  t.is(parseCInt('0x'), null);
  t.is(parseCInt('1e3'), null);
  // Stored in a C int: truncated to 32 bits; past the 64-bit range strtol clamps to LONG_MAX.
  t.deepEqual(parseCInt('4294967297'), { value: 1, overflow: true });
  t.deepEqual(parseCInt('99999999999999999999'), { value: -1, overflow: true });
  const w = parseConfig(`${base}maxword: 4294967297\n`, 'm.conf');
  t.is(w.settings.maxword, 1);
  t.is(w.warnings.length, 1);
  t.is(parseConfig(`${base}maxword: 0x100\n`).settings.maxword, 256);
  const err = configError(t, () => parseConfig(`${base}maxword: lots\n`, 'b.conf'));
  t.is(err.key, 'maxword');
  t.is(err.line, 2);
  t.regex(err.message, /non-integer value "lots"/);
});

test('stringlist values are checked', (t) => {
  t.is(parseConfig(`${base}backup_db: skiplist\n`).settings.backup_db, 'skiplist');
  const err = configError(t, () => parseConfig(`${base}backup_db: sqlite\n`, 'c.conf'));
  t.is(err.key, 'backup_db');
  t.regex(err.message, /invalid value "sqlite" \(allowed: skiplist, sql, twoskip, zeroskip\)/);
});

test('syntax errors name file, line and key', (t) => {
  let err = configError(t, () => parseConfig(`${base}this is not an option\n`, 'd.conf'));
  t.is(err.line, 2);
  t.regex(err.message, /invalid option name "this is not an option"/);
  // The colon must follow the key directly (Cyrus rule).
  err = configError(t, () => parseConfig(`${base}servername : x\n`, 'd.conf'));
  t.is(err.line, 2);
  err = configError(t, () => parseConfig(`${base}servername:   \n`, 'd.conf'));
  t.is(err.key, 'servername');
  t.regex(err.detail, /empty option value/);
  err = configError(t, () => parseConfig(`${base}servername: a\nServerName: b\n`, 'd.conf'));
  t.is(err.line, 3);
  t.is(err.key, 'servername');
  t.regex(err.detail, /specified twice \(first on line 2 of d\.conf\)/);
  err = configError(t, () => parseConfig(`${base}@import: x\n`, 'd.conf'));
  t.is(err.key, '@import');
  err = configError(t, () => parseConfig('servername: x\n', 'e.conf'));
  t.is(err.key, 'configdirectory');
  t.regex(err.message, /configdirectory option not specified/);
});

test('backslash continues a line; the error line is the last physical line', (t) => {
  const c = parseConfig(`${base}admins: one \\\n two\n`);
  t.deepEqual(c.settings.admins, ['one', 'two']);
  const err = configError(t, () => parseConfig(`${base}maxword: 1\\\n2x\n`, 'f.conf'));
  t.is(err.line, 3);
  t.is(parseConfig(`${base}maxword: 1\\\n2\n`).settings.maxword, 12);
});

test('CRLF files are read (trailing whitespace includes CR)', (t) => {
  const c = parseConfig('configdirectory: /c\r\nsync_timeout: 40s\r\n');
  t.is(c.settings.configdirectory, '/c');
  t.is(c.settings.sync_timeout, 40);
});

test('partitions, backup partitions and defaultpartition', (t) => {
  const c = parseConfig(
    `${base}defaultpartition: Main\npartition-main: /p/main\npartition-other: /p/other\nbackuppartition-default: /b\n`,
  );
  t.is(c.settings.defaultpartition, 'main');
  t.deepEqual(c.settings.partitions, { main: '/p/main', other: '/p/other' });
  t.deepEqual(c.settings.backuppartitions, { default: '/b' });
  t.is(defaultPartitionName(c.settings), 'main');
  t.is(defaultPartitionName(c.settings, 'backuppartition'), 'default');
  const err = configError(t, () => parseConfig(`${base}defaultpartition: a-b\n`, 'g.conf'));
  t.is(err.key, 'defaultpartition');
  t.is(err.line, 2);
  const need = configError(t, () =>
    parseConfig(`${base}defaultpartition: x\npartition-y: /y\n`, 'g.conf', { need: 'partition' }),
  );
  t.is(need.key, 'partition-x');
  configError(t, () => parseConfig(base, 'g.conf', { need: 'partition' }));
  configError(t, () => parseConfig(base, 'g.conf', { need: 'backuppartition' }));
  t.notThrows(() => parseConfig(`${base}backuppartition-a: /a\n`, 'g.conf', { need: 'backuppartition' }));
});

test('{configdirectory} is substituted in known string options only', (t) => {
  const c = parseConfig(`${base}backup_db_path: {configdirectory}/b.db\npartition-x: {configdirectory}/x\n`);
  t.is(c.settings.backup_db_path, '/var/lib/cyrus/b.db');
  // Overflow keys are left alone, as in Cyrus.
  t.is(c.settings.partitions['x'], '{configdirectory}/x');
});

test('service-specific <ident>_key overrides the generic key', (t) => {
  const text = `${base}syncserver_sync_timeout: 10s\nsync_timeout: 20s\nsyncserver_partition-default: /s\npartition-default: /g\n`;
  const c = parseConfig(text, 'h.conf', { ident: 'syncserver' });
  t.is(c.settings.sync_timeout, 10);
  t.is(c.settings.partitions['default'], '/s');
  t.is(c.get('partition-default'), '/s');
  const plain = parseConfig(text, 'h.conf');
  t.is(plain.settings.sync_timeout, 20);
  t.is(plain.settings.partitions['default'], '/g');
  const dup = configError(t, () =>
    parseConfig(`${base}syncserver_sync_timeout: 1\nsyncserver_sync_timeout: 2\n`, 'h.conf', { ident: 'syncserver' }),
  );
  t.is(dup.line, 3);
});

test('deprecated tls names fill their replacements', (t) => {
  const c = parseConfig(`${base}tls_cert_file: /c.pem\ntls_key_file: /k.pem\ntls_server_key: /k2.pem\n`);
  t.is(c.settings.tls_server_cert, '/c.pem');
  t.is(c.settings.tls_server_key, '/k2.pem');
});

test('@include reads another file; loops and missing files are errors', (t) => {
  const dir = tmp();
  const inc = join(dir, 'inc.conf');
  const main = join(dir, 'imapd.conf');
  writeFileSync(inc, 'servername: included.example\n');
  writeFileSync(main, `configdirectory: ${dir}\n@include: ${inc}\nadmins: a\n`);
  const c = loadConfig(main);
  t.is(c.file, main);
  t.is(c.settings.servername, 'included.example');
  t.deepEqual(c.settings.admins, ['a']);

  writeFileSync(inc, `@include: ${main}\n`);
  const loop = configError(t, () => loadConfig(main));
  t.is(loop.file, inc);
  t.is(loop.line, 1);
  t.regex(loop.detail, /included twice/);

  writeFileSync(inc, 'servername: x\nmaxword: zz\n');
  const nested = configError(t, () => loadConfig(main));
  t.is(nested.file, inc);
  t.is(nested.line, 2);
  t.is(nested.key, 'maxword');

  writeFileSync(main, `configdirectory: ${dir}\n@include: ${join(dir, 'missing.conf')}\n`);
  const missing = configError(t, () => loadConfig(main));
  t.is(missing.file, main);
  t.is(missing.line, 2);
  t.regex(missing.detail, /can't open configuration file .*missing\.conf: No such file or directory/);
});

test('loadConfig of a missing file is a ConfigError', (t) => {
  const p = join(tmp(), 'nope.conf');
  const err = configError(t, () => loadConfig(p));
  t.is(err.file, p);
  t.is(err.exitCode, 78);
});

test('embedded default configuration lives under ./var', (t) => {
  const dir = tmp();
  const c = embeddedDefaultConfig(dir);
  const v = resolve(dir, 'var');
  t.is(c.file, '<embedded>');
  t.is(c.settings.configdirectory, `${v}/conf`);
  t.deepEqual(c.settings.partitions, { default: `${v}/spool` });
  t.deepEqual(c.settings.backuppartitions, { default: `${v}/backups` });
  t.is(c.settings.backup_staging_path, `${v}/staging`);
  t.is(c.settings.cyrsync_passwd_file, `${v}/conf/cyrsync.passwd`);
  t.deepEqual(c.settings.admins, ['admin']);
  t.is(c.settings.servername, hostname());
  t.is(c.settings.defaultpartition, 'default');
  t.true(c.settings.allowplaintext);
  const explicit = join(dir, 'x.conf');
  writeFileSync(explicit, 'configdirectory: /explicit\n');
  t.is(loadConfigOrEmbedded(explicit, dir).settings.configdirectory, '/explicit');
});

test('CONFIG_KEYS documents every Settings field', (t) => {
  const s = parseConfig(base).settings;
  const documented = new Set(CONFIG_KEYS.map((k) => k.key));
  for (const field of Object.keys(s)) {
    if (field === 'partitions') t.true(documented.has('partition-<name>'));
    else if (field === 'backuppartitions') t.true(documented.has('backuppartition-<name>'));
    else t.true(documented.has(field), `${field} is documented`);
  }
  const md = configKeysMarkdown();
  t.true(md.startsWith('| key | default | meaning |\n| --- | --- | --- |\n'));
  t.regex(md, /\| `sync_timeout` \| `30m` \|/);
  t.is(md.trim().split('\n').length, CONFIG_KEYS.length + 2);
});

test('random garbage never escapes as anything but ConfigError', (t) => {
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (text) => {
      try {
        parseConfig(base + text, 'fuzz.conf');
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
      }
    }),
    { numRuns: 500 },
  );
  t.pass();
});

test('a continuation at the end of the file drops that line, as Cyrus does', (t) => {
  const c = parseConfig(`${base}admins: one \\\n`, 'e.conf');
  t.deepEqual(c.settings.admins, []);
  t.is(c.warnings.length, 1);
  t.regex(c.warnings[0]!, /e\.conf line 2: the last line ends with '\\'/);
  // Without a final newline the last line is read normally.
  t.deepEqual(parseConfig(`${base}admins: one`).settings.admins, ['one']);
});
