import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { EX_USAGE, UsageError, defineCommand, formatHelp, intValue, parseCommandArgs, parseCommandLine, usageLine } from '../src/cli-args.js';

const SPEC = defineCommand({
  name: 'demo',
  summary: 'a demonstration command',
  options: {
    config: { short: 'C', type: 'string', value: 'FILE', help: 'imapd.conf' },
    user: { short: 'u', long: 'user', type: 'list', value: 'USER', help: 'a user' },
    verbose: { short: 'v', type: 'count', help: 'more output' },
    all: { short: 'a', type: 'boolean', help: 'everything' },
    json: { long: 'json', type: 'boolean', help: 'JSON lines' },
    compat: { short: 'x', type: 'boolean', help: 'no effect', hidden: true },
  },
  positionals: { name: '[MAILBOX...]', min: 0 },
});

test('defaults by type', (t) => {
  const p = parseCommandArgs(SPEC, []);
  t.deepEqual(p.values, { config: undefined, user: [], verbose: 0, all: false, json: false, compat: false });
  t.deepEqual(p.positionals, []);
  t.false(p.help);
});

test('short flags as Cyrus takes them: separate, merged, grouped; long with = or a separate word', (t) => {
  const p = parseCommandArgs(SPEC, ['-C', '/etc/x.conf', '-vva', '-u', 'a', '--user=b', '--user', 'c', '--json', 'INBOX', 'Sent']);
  t.is(p.values.config, '/etc/x.conf');
  t.is(p.values.verbose, 2);
  t.true(p.values.all);
  t.true(p.values.json);
  t.deepEqual(p.values.user, ['a', 'b', 'c']);
  t.deepEqual(p.positionals, ['INBOX', 'Sent']);
  t.deepEqual(p.seen, ['-C', '-v', '-v', '-a', '-u', '--user', '--user', '--json']);
  t.is(parseCommandArgs(SPEC, ['-C/etc/y.conf']).values.config, '/etc/y.conf');
  // A value may start with a dash, as getopt takes it.
  t.is(parseCommandArgs(SPEC, ['-C', '-x']).values.config, '-x');
  // After --, everything is a positional.
  t.deepEqual(parseCommandArgs(SPEC, ['--', '-a']).positionals, ['-a']);
});

test('bad usage is a UsageError naming the problem (exit status 64)', (t) => {
  const bad = (argv: string[], message: RegExp): void => {
    const err = t.throws(() => parseCommandArgs(SPEC, argv), { instanceOf: UsageError, message });
    t.is(err!.exitCode, 64);
  };
  bad(['--bogus'], /unknown option --bogus/);
  bad(['-q'], /unknown option -q/);
  bad(['-vq'], /unknown option -q/);
  // A short-only option has no long spelling.
  bad(['--all'], /unknown option --all/);
  bad(['--config', 'x'], /unknown option --config/);
  bad(['-C'], /option -C needs a value/);
  bad(['--json=yes'], /option --json takes no value/);
  const two = defineCommand({ name: 'two', summary: 's', options: {}, positionals: { name: 'USER', min: 1, max: 1 } });
  t.throws(() => parseCommandArgs(two, []), { instanceOf: UsageError, message: /expected USER/ });
  t.throws(() => parseCommandArgs(two, ['a', 'b']), { instanceOf: UsageError, message: /too many arguments/ });
  const none = defineCommand({ name: 'none', summary: 's', options: {} });
  t.throws(() => parseCommandArgs(none, ['a']), { instanceOf: UsageError, message: /unexpected argument "a"/ });
});

test('separateValues refuses a value merged with a short option, as service.c does', (t) => {
  const spec = defineCommand({ name: 'd', summary: 's', options: { uses: { short: 'U', type: 'string', help: 'u' }, listen: { long: 'listen', type: 'string', help: 'l' } }, separateValues: true });
  t.throws(() => parseCommandArgs(spec, ['-U5']), { instanceOf: UsageError, message: /separated by whitespace \(-U5\)/ });
  t.is(parseCommandArgs(spec, ['-U', '5']).values.uses, '5');
  t.is(parseCommandArgs(spec, ['--listen=2005']).values.listen, '2005');
});

test('help: usage line from the table, every visible option, hidden ones left out', (t) => {
  t.is(usageLine(SPEC), 'usage: cyrsync demo [-C FILE] [--user USER]... [-v] [-a] [--json] [MAILBOX...]');
  const help = formatHelp(SPEC);
  t.true(help.startsWith(usageLine(SPEC) + '\n\n  a demonstration command\n'));
  t.regex(help, /-u, --user USER +a user \(repeatable\)/);
  t.regex(help, /--json +JSON lines/);
  t.regex(help, /-h, --help +show this help/);
  t.false(help.includes('-x'));
  t.true(parseCommandArgs(SPEC, ['--help']).help);
  t.true(parseCommandArgs(SPEC, ['-h']).help);
});

test('parseCommandLine prints the help or the error and returns the exit status', (t) => {
  const sink = () => {
    let text = '';
    return { stream: { write: (s: string) => ((text += s), true) } as unknown as NodeJS.WritableStream, text: () => text };
  };
  const out = sink();
  const err = sink();
  t.is(parseCommandLine(SPEC, ['--help'], { stdout: out.stream, stderr: err.stream }), 0);
  t.is(out.text(), formatHelp(SPEC));
  t.is(parseCommandLine(SPEC, ['--nope'], { stdout: out.stream, stderr: err.stream }), EX_USAGE);
  t.is(err.text(), `cyrsync demo: unknown option --nope\n${usageLine(SPEC)}\nTry 'cyrsync help demo' for more information.\n`);
});

test('a table with a mistake is refused at once', (t) => {
  t.throws(() => defineCommand({ name: 'x', summary: 's', options: { a: { short: 'h', type: 'boolean', help: '' } } }), { message: /-h declared twice/ });
  t.throws(() => defineCommand({ name: 'x', summary: 's', options: { a: { type: 'boolean', help: '' } } }), { message: /neither/ });
});

test('intValue', (t) => {
  t.is(intValue('-n', '12'), 12);
  t.throws(() => intValue('-n', '12x'), { instanceOf: UsageError, message: /option -n needs a whole number/ });
  t.throws(() => intValue('-n', '0', 1), { instanceOf: UsageError });
});

const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

test('cyrsync help, help COMMAND and COMMAND --help; bad usage exits 64', (t) => {
  if (!existsSync(cli)) return t.fail('run npm run build first');
  const overview = run(['help']);
  t.is(overview.status, 0);
  for (const c of ['sync-server', 'backupd', 'passwd', 'dump', 'check', 'expire', 'bench-client', 'version']) t.true(overview.stdout.includes(`  ${c} `), c);
  for (const c of ['sync-server', 'backupd', 'passwd', 'dump', 'check', 'expire', 'bench-client']) {
    const a = run(['help', c]);
    const b = run([c, '--help']);
    t.is(a.status, 0, c);
    t.is(b.status, 0, c);
    t.true(a.stdout.startsWith(`usage: cyrsync ${c} `), a.stdout);
    t.is(a.stdout, b.stdout);
  }
  t.regex(run(['help', 'sync-server']).stdout, /-C FILE/);
  t.is(run(['help', 'nosuch']).status, 64);
  t.is(run(['nosuch']).status, 64);
  const dump = run(['dump', '--frob', 'u']);
  t.is(dump.status, 64);
  t.regex(dump.stderr, /^cyrsync dump: unknown option --frob\nusage: cyrsync dump /);
  t.is(run(['dump']).status, 64);
  t.is(run(['bench-client']).status, 64);
  t.regex(run(['bench-client', '--connect', 'x:1', '--users', 'many']).stderr, /--users needs a whole number/);
});
