import test from 'ava';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CommandReader } from '../transforms/dlist-parser.js';
import { ResponseWriter } from '../transforms/serializer.js';
import { createCompressDeflate } from '../transforms/deflate.js';
import { TelemetryLog, ctime, tapPlaintext, telemetryFile } from '../src/server/telemetry.js';

const made: string[] = [];
test.after.always(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-telemetry-'));
  made.push(d);
  return d;
}

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'transcripts');

function withTZ<T>(tz: string, f: () => T): T {
  const old = process.env.TZ;
  process.env.TZ = tz;
  try {
    return f();
  } finally {
    if (old === undefined) delete process.env.TZ;
    else process.env.TZ = old;
  }
}

test('ctime(3) form, local time, day padded with a space', (t) => {
  withTZ('UTC', () => {
    t.is(ctime(new Date(Date.UTC(2026, 10, 2, 4, 5, 6))), 'Mon Nov  2 04:05:06 2026\n');
    t.is(ctime(new Date(Date.UTC(2024, 1, 29, 23, 59, 59))), 'Thu Feb 29 23:59:59 2024\n');
  });
  withTZ('Asia/Tokyo', () => t.is(ctime(new Date(Date.UTC(2026, 10, 2, 20, 0, 0))), 'Tue Nov  3 05:00:00 2026\n'));
});

test('the header is the one the real 3.6.1 sync_server wrote (recorded telemetry, same instant, UTC)', (t) => {
  const recorded = fs.readFileSync(path.join(FIXTURES, '01-full-replica.telemetry'), 'latin1');
  const firstStamp = Number(/<(\d+)</.exec(recorded)![1]);
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'log', 'admin'), { recursive: true });
  withTZ('UTC', () => {
    const log = TelemetryLog.open({ configdirectory: dir, user: 'admin', ident: 'syncserver', pid: 8581, now: () => new Date(firstStamp * 1000) })!;
    log.close();
  });
  const ours = fs.readFileSync(telemetryFile(dir, 'admin', 'syncserver', 8581), 'latin1');
  t.is(ours, recorded.slice(0, recorded.indexOf('\n\n') + 2));
  t.regex(ours, /^---------- admin \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n\n$/);
});

function openLog(dir: string, clock: { now: number }): TelemetryLog {
  fs.mkdirSync(path.join(dir, 'log', 'admin'), { recursive: true });
  return TelemetryLog.open({ configdirectory: dir, user: 'admin', ident: 'syncserver', pid: 77, now: () => new Date(clock.now * 1000) })!;
}

test('records: <T< for what was read, >T> for what was sent, replies gathered until the client speaks', (t) => {
  const dir = tempDir();
  const clock = { now: 1795357013 };
  const log = openLog(dir, clock);
  t.is(log.file, path.join(dir, 'log', 'admin', 'syncserver-77'));
  log.input(Buffer.from('GET USER fixt\r\n'));
  log.output(Buffer.from('* MAILBOX (a)\r\n'));
  clock.now++;
  log.output(Buffer.from('OK success\r\n'));
  log.input(Buffer.from('EXIT\r\n'));
  log.output(Buffer.from('OK Finished\r\n'));
  log.close();
  log.output(Buffer.from('after close\r\n'));
  const text = fs.readFileSync(log.file, 'latin1');
  const body = text.slice(text.indexOf('\n\n') + 2);
  // The reply's record carries the time its first byte was produced.
  t.is(body, '<1795357013<GET USER fixt\r\n>1795357013>* MAILBOX (a)\r\nOK success\r\n<1795357014<EXIT\r\n>1795357014>OK Finished\r\n');
});

test('records: a long reply is cut into records of 4 KiB or more, none lost', (t) => {
  const dir = tempDir();
  const log = openLog(dir, { now: 5 });
  const line = Buffer.from('* ' + 'x'.repeat(998) + '\r\n');
  for (let i = 0; i < 10; i++) log.output(line);
  log.close();
  const body = fs.readFileSync(log.file, 'latin1').split('\n\n')[1]!;
  t.is(body.replace(/>5>/g, ''), line.toString('latin1').repeat(10));
  t.is(body.match(/>5>/g)!.length, 2);
});

test('appends: a second session of the same process adds its own header', (t) => {
  const dir = tempDir();
  const a = openLog(dir, { now: 1 });
  a.input(Buffer.from('NOOP\r\n'));
  a.close();
  const b = openLog(dir, { now: 2 });
  b.input(Buffer.from('EXIT\r\n'));
  b.close();
  const text = fs.readFileSync(a.file, 'latin1');
  t.is(text.match(/^---------- admin /gm)!.length, 2);
  t.regex(text, /<1<NOOP\r\n---------- admin .*\n\n<2<EXIT\r\n$/);
});

test('no telemetry without <configdirectory>/log/<user>/, nor for names that would leave it', (t) => {
  const dir = tempDir();
  t.is(TelemetryLog.open({ configdirectory: dir, user: 'admin', ident: 'syncserver' }), null);
  fs.mkdirSync(path.join(dir, 'log', 'admin'), { recursive: true });
  for (const user of ['', '..', '.', 'admin/../x', 'a\0b']) t.is(TelemetryLog.open({ configdirectory: dir, user, ident: 'syncserver' }), null, JSON.stringify(user));
  t.deepEqual(fs.readdirSync(path.join(dir, 'log', 'admin')), []);
  const ok = TelemetryLog.open({ configdirectory: dir, user: 'admin', ident: 'backupd', pid: 9 });
  t.truthy(ok);
  ok!.close();
  t.deepEqual(fs.readdirSync(path.join(dir, 'log', 'admin')), ['backupd-9']);
  t.is((fs.statSync(path.join(dir, 'log', 'admin', 'backupd-9')).mode & 0o777) & ~0o022, 0o644 & ~0o022);
});

test('tap: the plaintext protocol, whatever feeds the reader and even with the writer compressing', async (t) => {
  const seen: [string, string][] = [];
  const reader = new CommandReader();
  const writer = new ResponseWriter();
  tapPlaintext(reader, writer, (d, c) => seen.push([d, c.toString('latin1')]));
  const wire: Buffer[] = [];
  writer.on('data', (b: Buffer) => wire.push(b));

  reader.write(Buffer.from('NOOP\r\n'));
  t.deepEqual((await reader.nextCommand())!.verb, 'NOOP');
  await writer.status('OK Noop completed');
  writer.startCompression(createCompressDeflate());
  await writer.status('OK after compression');
  await writer.finish();

  t.deepEqual(seen, [
    ['in', 'NOOP\r\n'],
    ['out', 'OK Noop completed\r\n'],
    ['out', 'OK after compression\r\n'],
  ]);
  const sent = Buffer.concat(wire);
  // The connection carried compressed bytes after the switch; the tap saw plaintext.
  t.true(sent.subarray(0, 19).equals(Buffer.from('OK Noop completed\r\n')));
  t.false(sent.includes(Buffer.from('OK after compression')));
});

test('telemetry_bysessionid: the file is named after the session id', (t) => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'log', 'admin'), { recursive: true });
  const log = TelemetryLog.open({ configdirectory: dir, user: 'admin', ident: 'syncserver', sessionId: 'replica-1795357013-77-1-123' })!;
  log.close();
  t.deepEqual(fs.readdirSync(path.join(dir, 'log', 'admin')), ['syncserver-replica-1795357013-77-1-123']);
  t.is(TelemetryLog.open({ configdirectory: dir, user: 'admin', ident: 'syncserver', sessionId: '../x' }), null);
});
