/**
 * Durability proven from the system calls: each daemon (dist/src/cli.js)
 * serves one session under `strace -f`, and the order of the calls is
 * checked for everything the session stored:
 * - replica: every message file is fsynced, then renamed into place, then
 *   its directory is fsynced, all before the `OK` that acknowledges its
 *   APPLY MESSAGE is written to the socket; every SQLite commit (WAL,
 *   synchronous=FULL: the WAL is fsynced at each commit) completes before the
 *   `OK` of the APPLY that made it;
 * - backup server: the chunk's data file is fsynced before the index commits
 *   (rollback journal, synchronous=EXTRA: journal fsynced, database fsynced,
 *   journal deleted, directory fsynced), and all of it before `OK Finished`
 *   (the chunk ends at EXIT);
 *   backups.db is fsynced before the `OK` of the command that created the
 *   user's backup.
 * Skipped, with the reason, when strace is not installed (.ci/run installs it).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CsyncClient, adminSession, applyMailbox, fileLiteral, freePort, message, portOpen, sha1, waitFor } from './interop/harness.js';
import { parseStrace, type Call } from './helpers/strace.js';

const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const haveStrace = spawnSync('strace', ['-V']).status === 0;

interface Traced {
  dir: string;
  calls: Call[];
}

/** Runs `kind` under strace with a fresh store, lets `session` talk to it, stops it, returns the calls. */
async function traced(t: ExecutionContext, kind: 'sync-server' | 'backupd', session: (c: CsyncClient) => Promise<void>): Promise<Traced> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cyrsync-durability-'));
  t.teardown(() => {
    if (!process.env['CYRSYNC_KEEP']) fs.rmSync(dir, { recursive: true, force: true });
  });
  const conf = path.join(dir, 'imapd.conf');
  const lines = [
    `configdirectory: ${dir}/conf`,
    kind === 'backupd' ? `backuppartition-default: ${dir}/backups` : `partition-default: ${dir}/spool`,
    `temp_path: ${dir}/tmp`,
    'admins: admin',
    'allowplaintext: yes',
    'failedloginpause: 0',
  ];
  fs.mkdirSync(path.join(dir, 'tmp'));
  fs.writeFileSync(conf, lines.join('\n') + '\n');
  const pw = spawnSync(process.execPath, [cli, 'passwd', '-C', conf, 'admin'], { input: 'adminpw\n' });
  t.is(pw.status, 0, String(pw.stderr));
  const port = await freePort();
  const trace = path.join(dir, 'strace.txt');
  const child = spawn('strace', ['-f', '-y', '-s', '96', '-o', trace,
    '-e', 'trace=openat,rename,renameat,renameat2,fsync,fdatasync,write,writev,pwrite64,unlink,unlinkat',
    process.execPath, cli, kind, '-C', conf, '--listen', `127.0.0.1:${port}`], { stdio: 'ignore' });
  const exited = once(child, 'exit');
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  t.true(await waitFor(() => portOpen(port), 60_000, 100), 'the daemon listens');
  const c = await adminSession(port);
  try {
    await session(c);
    t.deepEqual(await c.command('EXIT'), { data: [], status: 'OK Finished' });
  } finally {
    await c.close();
  }
  // SIGTERM to the daemon itself (strace would detach on its own SIGTERM); strace exits with it
  const daemonPid = Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
  process.kill(daemonPid, 'SIGTERM');
  await exited;
  return { dir, calls: parseStrace(fs.readFileSync(trace, 'utf8')) };
}

const socketWrite = (c: Call, text: string): boolean => (c.name === 'write' || c.name === 'writev') && /^\d+<(?:TCP|socket)/.test(c.args) && c.args.includes(text);
const fdPath = (c: Call): string => /^\d+<([^>]*)>/.exec(c.args)?.[1] ?? '';
const renameArgs = (c: Call): [string, string] => {
  const m = [...c.args.matchAll(/"([^"]*)"/g)].map((x) => x[1]!);
  return [m[0] ?? '', m[1] ?? ''];
};

/** The first call at or after `from` (by entry) matching `pred`. */
function next(calls: Call[], from: number, pred: (c: Call) => boolean): Call | undefined {
  return calls.find((c) => c.entry >= from && pred(c));
}

test('replica: message file fsync -> rename -> directory fsync, and the SQLite commit, all before the OK', async (t) => {
  if (!haveStrace) return t.pass('skipped: strace is not installed');
  if (!fs.existsSync(cli)) return t.fail('run npm run build first');
  const bodies = [1, 2, 3].map((i) => message(`durable-${i}`, 3000 * i));
  const { dir, calls } = await traced(t, 'sync-server', async (c) => {
    const files = Buffer.concat(bodies.map((b) => Buffer.concat([fileLiteral(b), Buffer.from(' ')])));
    t.is((await c.command(Buffer.concat([Buffer.from('APPLY MESSAGE ('), files, Buffer.from(')\r\n')]))).status, 'OK success');
    const mb = applyMailbox('user.bob', 'durable-bob', bodies.map((b, i) => ({ uid: i + 1, guid: sha1(b), size: b.length })), 'bob');
    t.is((await c.command(mb)).status, 'OK success');
  });
  const okMessage = calls.find((c) => socketWrite(c, 'OK success'))!;
  t.truthy(okMessage, 'the OK of APPLY MESSAGE was written');
  for (const b of bodies) {
    const guid = sha1(b);
    const rename = calls.find((c) => c.name.startsWith('rename') && renameArgs(c)[1].endsWith(`/blobs/${guid.slice(0, 2)}/${guid}`));
    t.truthy(rename, `${guid} renamed into place`);
    const staged = renameArgs(rename!)[0];
    const fileSync = calls.filter((c) => c.name === 'fsync' && fdPath(c) === staged).at(-1);
    t.truthy(fileSync, `${guid}: the staged file was fsynced`);
    t.true(fileSync!.exit < rename!.entry, `${guid}: fsync(file) returned before rename`);
    const dirSync = next(calls, rename!.exit, (c) => c.name === 'fsync' && fdPath(c) === path.join(dir, 'spool', 'blobs', guid.slice(0, 2)));
    t.truthy(dirSync, `${guid}: its directory was fsynced after the rename`);
    t.true(dirSync!.exit < okMessage.entry, `${guid}: fsync(dir) returned before the OK was written`);
  }
  // each OK is preceded by a WAL fsync that completed after the command arrived
  const wal = path.join(dir, 'conf', 'replica.sqlite3-wal');
  const oks = calls.filter((c) => socketWrite(c, 'OK success'));
  t.is(oks.length, 2);
  let from = 0;
  for (const ok of oks) {
    const commit = calls.filter((c) => c.entry >= from && c.exit < ok.entry && c.name === 'fsync' && fdPath(c) === wal);
    t.true(commit.length > 0, 'a WAL fsync (commit) completed before the OK');
    from = ok.exit;
  }
});

test('backup server: data file fsync, then the index commit (journal and database fsynced), before OK Finished; backups.db fsynced before the first OK', async (t) => {
  if (!haveStrace) return t.pass('skipped: strace is not installed');
  if (!fs.existsSync(cli)) return t.fail('run npm run build first');
  const bodies = [1, 2].map((i) => message(`durable-backup-${i}`, 5000 * i));
  const { dir, calls } = await traced(t, 'backupd', async (c) => {
    const guids = bodies.map((b) => sha1(b)).join(' ');
    const r = await c.command(`APPLY RESERVE %(PARTITION default MBOXNAME (user.bob) GUID (${guids}))`);
    t.regex(r.status ?? '', /^OK success$/i);
    const files = Buffer.concat(bodies.map((b) => Buffer.concat([fileLiteral(b), Buffer.from(' ')])));
    t.regex((await c.command(Buffer.concat([Buffer.from('APPLY MESSAGE ('), files, Buffer.from(')\r\n')]))).status ?? '', /^OK success$/i);
    const mb = applyMailbox('user.bob', 'durable-bob', bodies.map((b, i) => ({ uid: i + 1, guid: sha1(b), size: b.length })), 'bob');
    t.regex((await c.command(mb)).status ?? '', /^OK success$/i);
  });
  const finished = calls.find((c) => socketWrite(c, 'OK Finished'))!;
  t.truthy(finished, 'OK Finished was written');
  const data = calls.find((c) => c.name === 'openat' && /\/backups\/b\/bob_[A-Za-z0-9]+"/.test(c.args));
  t.truthy(data, 'the data file was opened');
  const dataPath = /"([^"]+)"/.exec(data!.args)![1]!;
  const dataSync = calls.filter((c) => c.name === 'fsync' && fdPath(c) === dataPath && c.exit < finished.entry).at(-1);
  t.truthy(dataSync, 'the data file was fsynced before OK Finished');
  const index = `${dataPath}.index`;
  const journal = `${index}-journal`;
  const journalSync = next(calls, dataSync!.exit, (c) => c.name === 'fsync' && fdPath(c) === journal);
  const indexSync = next(calls, dataSync!.exit, (c) => c.name === 'fsync' && fdPath(c) === index);
  const journalGone = next(calls, dataSync!.exit, (c) => c.name.startsWith('unlink') && c.args.includes(`"${journal}"`));
  t.truthy(journalSync, 'the index journal was fsynced after the data file');
  t.truthy(indexSync, 'the index was fsynced after the data file');
  t.truthy(journalGone, 'the commit deleted the journal');
  t.true(journalSync!.exit < indexSync!.entry && indexSync!.exit < journalGone!.entry, 'journal fsync -> index fsync -> journal delete');
  // synchronous=EXTRA: the deletion of the journal (the commit point) is made durable too
  const dirSync = next(calls, journalGone!.exit, (c) => c.name === 'fsync' && fdPath(c) === path.dirname(index));
  t.truthy(dirSync, 'the index directory was fsynced after the journal was deleted');
  t.true(dirSync!.exit < finished.entry, 'the index commit was durable before OK Finished');
  const firstOk = calls.find((c) => (c.name === 'write' || c.name === 'writev') && /^\d+<(?:TCP|socket)/.test(c.args) && /OK [Ss]uccess\\r\\n/.test(c.args))!;
  t.truthy(firstOk, 'the OK of RESERVE was written');
  // twoskip commits with fdatasync (as Cyrus's twoskip does): the new record, then the header
  const login = calls.find((c) => socketWrite(c, 'OK Success (no protection)'))!;
  const dbWrites = calls.filter((c) => c.name === 'pwrite64' && fdPath(c) === path.join(dir, 'conf', 'backups.db') && c.entry > login.exit);
  t.true(dbWrites.length > 0 && dbWrites.some((w) => w.args.includes('bob')), 'the new backup was registered in backups.db');
  const lastWrite = dbWrites.filter((w) => w.exit < firstOk.entry).at(-1)!;
  const dbSync = next(calls, lastWrite.exit, (c) => /^f(data)?sync$/.test(c.name) && fdPath(c) === path.join(dir, 'conf', 'backups.db'));
  t.truthy(dbSync, 'backups.db was synced after its last write');
  t.true(dbSync!.exit < firstOk.entry, 'backups.db was synced before the OK of the command that created the backup');
});
