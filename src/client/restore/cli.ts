/**
 * `cyrsync restore`: Cyrus 3.6 restore(8) for backups kept by `cyrsync
 * backupd` (or the real backupd), with `--at TIME` for point-in-time
 * restores. Credentials: `restore_authname`, `restore_password` (falling
 * back to `sync_authname` / `sync_password`; there are no SASL realms);
 * port: `sync_port`, else csync (2005).
 *
 * Output: one summary line (and per-mailbox lines with -v); with -j one JSON
 * object per line (stream-json's JSONL stringer); a progress bar on stderr
 * when both stdout and stderr are terminals.
 */
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { PassThrough } from 'node:stream';
import JsonlStringer from 'stream-json/jsonl/Stringer.js';
import { ConfigError, EX_CONFIG, embeddedDefaultConfig, loadConfigOrEmbedded, type Config } from '../../config.js';
import { openBackupsDb } from '../../../sinks/backup/backupsdb.js';
import { ownerOfMailbox } from '../../../sinks/backup/paths.js';
import { CyrsyncError } from '../../../transforms/errors.js';
import { formatHelp, formatUsageError } from '../../cli-args.js';
import { parseRestoreArgs, RESTORE_SPEC, UsageError, type RestoreArgs } from './args.js';
import { CsyncConnection, parseServer, type UploadProgress } from '../csync-client.js';
import { Planner, type Plan } from './plan.js';
import { RestoreRun, type RestoreEvent } from './run.js';
import { BackupSource, defaultTempDir } from './source.js';

const EX_USAGE = 64;
const EX_NOINPUT = 66;
const EX_TEMPFAIL = 75;

interface Output {
  event(e: RestoreEvent): void;
  text(line: string): void;
  progress(p: UploadProgress, startedMs: number): void;
  close(): Promise<void>;
}

function makeOutput(json: boolean, verbose: number): Output {
  const tty = !json && process.stdout.isTTY === true && process.stderr.isTTY === true;
  let stringer: PassThrough | null = null;
  let done: Promise<void> = Promise.resolve();
  if (json) {
    stringer = new PassThrough({ objectMode: true });
    const s = JsonlStringer.make();
    stringer.pipe(s).pipe(process.stdout, { end: false });
    done = new Promise((resolve) => s.on('end', () => resolve()));
  }
  let drawn = false;
  const clear = (): void => {
    if (drawn) process.stderr.write('\r\x1b[K');
    drawn = false;
  };
  return {
    event(e) {
      if (stringer) stringer.write(e);
      else if (verbose > 0 || e.event === 'warning') {
        clear();
        const { event, ...rest } = e;
        process.stderr.write(`${event} ${Object.entries(rest).map(([k, v]) => `${k}=${String(v)}`).join(' ')}\n`);
      }
    },
    text(line) {
      if (stringer) return;
      clear();
      process.stdout.write(line + '\n');
    },
    progress(p, startedMs) {
      if (!tty) return;
      const secs = Math.max((Date.now() - startedMs) / 1000, 0.001);
      const rate = p.bytes / secs;
      const frac = p.totalBytes > 0 ? p.bytes / p.totalBytes : 1;
      const eta = rate > 0 ? (p.totalBytes - p.bytes) / rate : 0;
      const width = 30;
      const fill = Math.round(frac * width);
      process.stderr.write(
        `\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(p.bytes / 1e6).toFixed(1)}/${(p.totalBytes / 1e6).toFixed(1)} MB ` +
          `${p.messages}/${p.totalMessages} msgs ${(rate / 1e6).toFixed(1)} MB/s ETA ${eta.toFixed(0)}s\x1b[K`,
      );
      drawn = true;
    },
    async close() {
      clear();
      if (stringer) {
        stringer.end();
        await done;
        process.stdout.write('\n');
      }
    },
  };
}

function loadConfig(a: RestoreArgs): Config {
  if (a.embedded && a.configFile === undefined) return embeddedDefaultConfig(process.cwd());
  return loadConfigOrEmbedded(a.configFile, process.cwd(), { ident: 'restore' });
}

/** The data file of the backup named on the command line (backups.db for -u/-m). */
function backupPath(a: RestoreArgs, config: Config): { path: string; owner: string | null } {
  if (a.mode === 'filename') return { path: a.backup, owner: null };
  const s = config.settings;
  const owner = a.mode === 'user' ? a.backup : ownerOfMailbox(a.backup);
  const db = openBackupsDb({ configdirectory: s.configdirectory, backup_db: s.backup_db, backup_db_path: s.backup_db_path });
  try {
    const p = db.get(owner);
    if (p === null) throw new CyrsyncError('IMAP_MAILBOX_NONEXISTENT', `no backup of ${owner} in ${db.path}`);
    return { path: p, owner };
  } finally {
    db.close();
  }
}

/** The owner a file-mode backup belongs to: from its mailbox names. */
function ownerFromIndex(source: BackupSource): string | null {
  for (const m of source.index.mailboxes()) {
    const o = ownerOfMailbox(m.mboxname);
    if (o !== '%SHARED') return o;
  }
  return null;
}

async function readObjects(file: string): Promise<string[]> {
  const input = file === '-' ? process.stdin : fs.createReadStream(file);
  const out: string[] = [];
  for await (const line of readline.createInterface({ input, crlfDelay: Infinity })) {
    if (line.length === 0 || line.startsWith('#')) continue;
    out.push(line);
  }
  return out;
}

function printPlan(plan: Plan, out: Output, source: BackupSource): void {
  for (const m of plan.mailboxes) {
    const bytes = m.records.reduce((n, r) => n + (r.size ?? 0), 0);
    out.event({ event: 'plan-mailbox', mboxname: m.mboxname, from: m.source?.mboxname ?? null, partition: m.partition, records: m.records.length, bytes });
    out.text(`mailbox ${m.mboxname}${m.source && m.source.mboxname !== m.mboxname ? ` (from ${m.source.mboxname})` : ''} records=${m.records.length} bytes=${bytes}`);
  }
  for (const [part, guids] of plan.reserve) {
    out.event({ event: 'plan-reserve', partition: part, messages: guids.length });
    out.text(`reserve ${part} messages=${guids.length}`);
  }
  if (source.at !== null) out.text(`as of ${new Date(source.at * 1000).toISOString()}`);
}

export { RESTORE_SPEC };

export async function runRestore(argv: string[]): Promise<number> {
  let a: RestoreArgs;
  try {
    a = parseRestoreArgs(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(formatUsageError(RESTORE_SPEC, err));
      return EX_USAGE;
    }
    throw err;
  }
  if (a.help) {
    process.stdout.write(formatHelp(RESTORE_SPEC));
    return 0;
  }
  let config: Config;
  try {
    config = loadConfig(a);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`cyrsync restore: ${err.message}\n`);
      return EX_CONFIG;
    }
    throw err;
  }
  const out = makeOutput(a.json, a.verbose);
  try {
    return await restoreWith(a, config, out);
  } catch (err) {
    const msg = err instanceof CyrsyncError ? `${err.code} ${err.message}` : (err as Error).message;
    out.event({ event: 'error', message: msg });
    if (!a.json) process.stderr.write(`cyrsync restore: ${a.backup}: ${msg}\n`);
    return err instanceof CyrsyncError && err.code === 'IMAP_MAILBOX_NONEXISTENT' ? EX_NOINPUT : EX_TEMPFAIL;
  } finally {
    await out.close();
  }
}

async function restoreWith(a: RestoreArgs, config: Config, out: Output): Promise<number> {
  const s = config.settings;
  if (a.wait > 0) await new Promise((r) => setTimeout(r, a.wait * 1000));
  const located = backupPath(a, config);
  const source = await BackupSource.open(located.path, { at: a.at, tempDir: defaultTempDir(s.temp_path) });
  try {
    const planner = new Planner(source.index, {
      acl: a.acl,
      overrideMboxname: a.overrideMboxname,
      overridePartition: a.overridePartition,
      keepUidvalidity: a.keepUidvalidity,
      keepDeletedPrefix: a.keepDeletedPrefix,
      expunged: a.expunged,
      recurse: a.recurse,
      unixhierarchysep: s.unixhierarchysep,
      deletedPrefix: config.get('deletedprefix'),
    });
    if (a.all) planner.addAll();
    else for (const o of a.inputFile !== undefined ? await readObjects(a.inputFile) : a.objects) planner.addObject(o);
    const plan = planner.plan();
    for (const n of plan.notFound) {
      out.event({ event: 'warning', message: `${n}: not found in the backup` });
    }
    if (plan.mailboxes.length === 0) throw new CyrsyncError('IMAP_MAILBOX_NONEXISTENT', 'nothing to restore: no named object is in the backup');
    if (a.dryRun) {
      printPlan(plan, out, source);
      return 0;
    }
    const authname = config.get('restore_authname') ?? config.get('sync_authname');
    const password = config.get('restore_password') ?? config.get('sync_password');
    if (!authname || password === undefined) {
      throw new CyrsyncError('IMAP_INTERNAL', `set restore_authname and restore_password in ${config.file}`);
    }
    const portText = config.get('sync_port');
    const { host, port } = parseServer(a.server, portText && /^\d+$/.test(portText) ? Number(portText) : 2005);
    const conn = await CsyncConnection.connect({
      host,
      port,
      authname,
      password,
      compress: true,
      requireCompression: a.requireCompression,
      starttls: s.tls_server_ca_file !== null,
      tlsCaFile: s.tls_server_ca_file ?? undefined,
      timeoutMs: s.sync_timeout * 1000,
    });
    const started = Date.now();
    try {
      const userid = located.owner ?? ownerFromIndex(source);
      const run = new RestoreRun(conn, source, plan, {
        localOnly: a.localOnly,
        meta: a.all,
        userid: userid === '%SHARED' ? null : userid,
        onEvent: (e) => out.event(e),
        onProgress: (p) => out.progress(p, started),
      });
      const sum = await run.run();
      out.event({ event: 'done', ...sum, seconds: (Date.now() - started) / 1000 });
      out.text(
        `restored ${sum.mailboxes} mailboxes (${sum.mailboxesSkipped} already complete), ${sum.records} records, ` +
          `${sum.messagesUploaded} messages uploaded (${sum.bytesUploaded} bytes), ${sum.annotations} annotations, ${sum.subscriptions} subscriptions, ${sum.seen} seen, ${sum.sieve} sieve`,
      );
      await conn.exit();
      return 0;
    } finally {
      conn.close();
    }
  } finally {
    source.close();
  }
}
