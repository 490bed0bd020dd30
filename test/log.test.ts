import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../src/config.js';
import {
  DEFAULT_FACILITY,
  LOG_CRIT,
  LOG_DEBUG,
  LOG_ERR,
  LOG_INFO,
  LOG_NOTICE,
  LOG_PID,
  LOG_WARNING,
  createLogger,
  formatPrettyLine,
  loadLibcSyslog,
  makeSessionId,
  sessionBindings,
  syslogFacility,
  syslogIdent,
  syslogPriority,
  syslogStream,
  type SyslogBinding,
} from '../src/log.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const LOG_MODULE = fileURLToPath(new URL('../src/log.ts', import.meta.url));
const CONFIG_MODULE = fileURLToPath(new URL('../src/config.ts', import.meta.url));

const settingsWith = (extra = ''): ReturnType<typeof parseConfig>['settings'] =>
  parseConfig(`configdirectory: ${trackedTempDir('cyrsync-log-')}\n${extra}`).settings;

class Capture extends Writable {
  text = '';
  isTTY = false;
  override _write(chunk: Buffer, _e: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

test('pino levels map to syslog priorities', (t) => {
  t.is(syslogPriority(10), LOG_DEBUG);
  t.is(syslogPriority(20), LOG_DEBUG);
  t.is(syslogPriority(30), LOG_INFO);
  t.is(syslogPriority(35), LOG_NOTICE);
  t.is(syslogPriority(40), LOG_WARNING);
  t.is(syslogPriority(50), LOG_ERR);
  t.is(syslogPriority(60), LOG_CRIT);
});

test('facility names as Cyrus get_facility, default LOCAL6', (t) => {
  t.is(DEFAULT_FACILITY, 22 << 3);
  t.deepEqual(syslogFacility(null), { facility: 176, known: true });
  t.deepEqual(syslogFacility('mail'), { facility: 16, known: true });
  t.deepEqual(syslogFacility('Local0'), { facility: 128, known: true });
  t.deepEqual(syslogFacility('daemon'), { facility: 24, known: true });
  t.deepEqual(syslogFacility('kern'), { facility: 176, known: false });
});

test('syslog ident: $CYRUS_SYSLOG_PREFIX wins over syslog_prefix', (t) => {
  t.is(syslogIdent('syncserver', { syslog_prefix: null }, {}), 'syncserver');
  t.is(syslogIdent('syncserver', { syslog_prefix: 'cfg' }, {}), 'cfg/syncserver');
  t.is(syslogIdent('syncserver', { syslog_prefix: 'cfg' }, { CYRUS_SYSLOG_PREFIX: 'env' }), 'env/syncserver');
});

test('syslog stream: openlog once with LOG_PID, priority|facility per record, text with fields', (t) => {
  const calls: unknown[][] = [];
  const binding: SyslogBinding = {
    openlog: (...a) => void calls.push(['openlog', ...a]),
    syslog: (...a) => void calls.push(['syslog', ...a]),
    closelog: () => void calls.push(['closelog']),
  };
  const logger = createLogger({
    mode: 'master',
    settings: settingsWith(),
    level: 'debug',
    destination: syslogStream({ ident: 'pfx/cyrsync', facility: 16, binding }),
  });
  logger.info({ user: 'bob', bytes: 12 }, 'applied');
  logger.notice('login: host admin PLAIN User logged in');
  logger.error({ err: new Error('disk full') }, 'write failed');
  logger.debug({ note: 'two words' }, 'detail');
  logger.trace('not logged');
  t.deepEqual(calls[0], ['openlog', 'pfx/cyrsync', LOG_PID, 16]);
  t.deepEqual(calls.slice(1), [
    ['syslog', 16 | LOG_INFO, 'applied user=bob bytes=12'],
    ['syslog', 16 | LOG_NOTICE, 'login: host admin PLAIN User logged in'],
    ['syslog', 16 | LOG_ERR, 'write failed err="Error: disk full"'],
    ['syslog', 16 | LOG_DEBUG, 'detail note="two words"'],
  ]);
});

test('a syslog stream without a binding is a clear error', (t) => {
  t.throws(() => syslogStream({ ident: 'x', facility: 16, binding: null }), { message: /syslog is not available/ });
});

test('libc syslog binds through koffi on this platform', (t) => {
  const b = loadLibcSyslog();
  t.truthy(b);
  // Calling it is harmless without /dev/log: glibc drops the record.
  t.notThrows(() => {
    b!.openlog('cyrsync-test', LOG_PID, 16);
    b!.syslog(LOG_DEBUG, '100% literal %s %n');
    b!.closelog();
  });
});

test('standalone: JSON lines on a non-terminal stdout, readable lines on a terminal', (t) => {
  const out = new Capture();
  const logger = createLogger({ mode: 'standalone', settings: settingsWith(), stdout: out });
  t.is(logger.target.kind, 'stdout');
  logger.info({ peer: '127.0.0.1:5000' }, 'connection');
  logger.notice('login');
  const recs = out.text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.is(recs.length, 2);
  t.like(recs[0], { level: 30, msg: 'connection', peer: '127.0.0.1:5000', pid: process.pid });
  t.like(recs[1], { level: 35, msg: 'login' });

  const tty = new Capture();
  tty.isTTY = true;
  const pretty = createLogger({ mode: 'standalone', settings: settingsWith(), stdout: tty });
  t.is(pretty.target.kind, 'pretty');
  pretty.warn({ mailbox: 'user.bob' }, 'slow disk');
  // eslint-disable-next-line no-control-regex -- the ANSI colour escapes are what is under test
  t.regex(tty.text, /^\d\d:\d\d:\d\d\.\d{3} \x1b\[33mWARN {2}\x1b\[0m slow disk mailbox=user\.bob\n$/);
});

test('formatPrettyLine without colour, with error stack and odd input', (t) => {
  const line = formatPrettyLine(JSON.stringify({ level: 50, time: Date.UTC(2024, 0, 1), msg: 'boom', err: { type: 'Error', message: 'x', stack: 'Error: x\n    at f' } }), false);
  t.regex(line, /^\d\d:\d\d:\d\d\.000 ERROR {2}boom err="Error: x"\nError: x\n {4}at f\n$/);
  t.is(formatPrettyLine('not json', false), 'not json\n');
});

test('debug: yes lowers the level; passwords are redacted', (t) => {
  const out = new Capture();
  const logger = createLogger({ mode: 'standalone', settings: settingsWith('debug: yes\n'), stdout: out });
  logger.debug({ password: 'hunter2', creds: { password: 'x' } }, 'dbg');
  const rec = JSON.parse(out.text) as Record<string, unknown>;
  t.is(rec['msg'], 'dbg');
  t.is(rec['password'], '[redacted]');
  t.deepEqual(rec['creds'], { password: '[redacted]' });
  t.false(out.text.includes('hunter2'));
});

test('unknown syslog_facility: warning names it', (t) => {
  const s = settingsWith('syslog_facility: kern\n');
  const logger = createLogger({ mode: 'stdio', settings: s });
  t.is(logger.target.kind, 'syslog');
  t.is(logger.target.detail, 'cyrsync LOCAL6');
  t.regex(logger.target.warning ?? '', /syslog name kern not recognised/);
});

test('stdio mode with a log file writes nothing to stdout or stderr', async (t) => {
  const dir = trackedTempDir('cyrsync-logfile-');
  const file = join(dir, 'sub', 'cyrsync.log');
  const script = `
    const { parseConfig } = await import(${JSON.stringify(CONFIG_MODULE)});
    const { createLogger } = await import(${JSON.stringify(LOG_MODULE)});
    const s = parseConfig('configdirectory: ${dir}\\ncyrsync_log_file: ${file}\\n').settings;
    const log = createLogger({ mode: 'stdio', settings: s });
    log.info({ n: 1 }, 'first');
    log.child({ session: 'abc' }).warn('second');
  `;
  const r = spawnSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, '');
  t.is(r.stderr, '');
  const recs = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.like(recs[0], { level: 30, msg: 'first', n: 1 });
  t.like(recs[1], { level: 40, msg: 'second', session: 'abc' });
});

test('session helpers', (t) => {
  const a = makeSessionId('replica.example');
  const b = makeSessionId('replica.example');
  t.regex(a, new RegExp(`^replica\\.example-\\d{10}-${process.pid}-\\d+-\\d+$`));
  t.not(a, b);
  t.regex(makeSessionId({ syslog_prefix: 'pfx', servername: 'host' }), /^pfx-/);
  t.regex(makeSessionId({ syslog_prefix: null, servername: 'host' }), /^host-/);
  t.deepEqual(sessionBindings({ session: a, peer: '[127.0.0.1]:1' }), { session: a, peer: '[127.0.0.1]:1' });
  t.deepEqual(sessionBindings({ session: a, peer: 'p', user: 'admin' }), { session: a, peer: 'p', user: 'admin' });
});

// Real syslog: glibc writes to /dev/log, which this machine does not have. A
// child process runs in a private mount namespace whose /dev holds a `log`
// symlink to a datagram socket served by a small receiver (as the cyrus-peer
// harness does for Cyrus), so nothing outside the namespace changes.
const canNamespace =
  process.getuid?.() === 0 &&
  existsSync('/usr/bin/python3') &&
  spawnSync('unshare', ['-m', '--propagation', 'private', 'true']).status === 0;
const nsTest = canNamespace ? test : test.skip;

nsTest(
  canNamespace ? 'master mode logs to syslog through libc (received on a private /dev/log)' : 'master mode logs to syslog (skipped: needs root, python3 and unshare -m)',
  async (t) => {
    const dir = trackedTempDir('cyrsync-syslog-');
    const sock = join(dir, 'log.sock');
    const received = join(dir, 'received.txt');
    const receiver = spawn(
      '/usr/bin/python3',
      [
        '-c',
        `import socket,sys
s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.bind(sys.argv[1])
open(sys.argv[2]+'.ready','w').close()
out=open(sys.argv[2],'a',buffering=1)
while True:
    d=s.recv(65536)
    out.write(d.decode('utf-8','replace').rstrip('\\n\\0').replace('\\n','\\\\n')+'\\n')`,
        sock,
        received,
      ],
      { stdio: 'ignore' },
    );
    try {
      for (let i = 0; i < 200 && !existsSync(received + '.ready'); i++) await new Promise((r) => setTimeout(r, 25));
      t.true(existsSync(received + '.ready'), 'receiver ready');
      const script = `
        const { parseConfig } = await import(${JSON.stringify(CONFIG_MODULE)});
        const { createLogger } = await import(${JSON.stringify(LOG_MODULE)});
        const s = parseConfig('configdirectory: ${dir}\\nsyslog_prefix: cfgprefix\\n').settings;
        const log = createLogger({ mode: 'master', settings: s, service: 'syncserver' });
        log.info({ user: 'bob' }, 'hello 100%s');
        log.notice('login: [127.0.0.1] admin PLAIN User logged in');
        log.error('bad thing');
        console.log(process.pid);
      `;
      const setup = [
        'set -e',
        'd=$(mktemp -d)',
        'mount -t tmpfs -o mode=0755,size=64k cyrsynctest "$d"',
        'for n in null zero random urandom; do touch "$d/$n"; mount --bind "/dev/$n" "$d/$n"; done',
        `ln -s ${sock} "$d/log"`,
        'mount --bind "$d" /dev',
        `exec "${process.execPath}" --import=tsx --input-type=module -e "$CYRSYNC_SCRIPT"`,
      ].join('\n');
      const r = spawnSync('unshare', ['-m', '--propagation', 'private', '--', '/bin/sh', '-c', setup], {
        cwd: ROOT,
        encoding: 'utf8',
        env: { ...process.env, CYRSYNC_SCRIPT: script },
      });
      t.is(r.status, 0, r.stderr);
      const childPid = r.stdout.trim();
      let lines: string[] = [];
      for (let i = 0; i < 200; i++) {
        lines = existsSync(received) ? readFileSync(received, 'utf8').trim().split('\n').filter(Boolean) : [];
        if (lines.length >= 3) break;
        await new Promise((res) => setTimeout(res, 25));
      }
      t.is(lines.length, 3, lines.join('\n'));
      // <priority> Mmm dd hh:mm:ss ident[pid]: text   (glibc's /dev/log format)
      const re = new RegExp(`^<(\\d+)>\\w{3} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d cfgprefix/syncserver\\[${childPid}\\]: (.*)$`);
      const parsed = lines.map((l) => {
        const m = re.exec(l);
        t.truthy(m, l);
        return m ? [Number(m[1]), m[2]] : [];
      });
      t.deepEqual(parsed, [
        [176 | LOG_INFO, 'hello 100%s user=bob'],
        [176 | LOG_NOTICE, 'login: [127.0.0.1] admin PLAIN User logged in'],
        [176 | LOG_ERR, 'bad thing'],
      ]);
    } finally {
      receiver.kill('SIGTERM');
    }
  },
);

test('master mode without a usable syslog falls back to <configdirectory>/cyrsync.log, never stdout', (t) => {
  const s = settingsWith();
  const logger = createLogger({ mode: 'master', settings: s, syslogBinding: null });
  t.is(logger.target.kind, 'file');
  t.is(logger.target.detail, join(s.configdirectory, 'cyrsync.log'));
  logger.error('after fallback');
  const recs = readFileSync(join(s.configdirectory, 'cyrsync.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.like(recs[0], { level: 40, msg: 'syslog unavailable (libc could not be bound); logging to this file' });
  t.like(recs[1], { level: 50, msg: 'after fallback' });
});
