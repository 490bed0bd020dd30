/**
 * Fixtures of the backup tools tests: backups written through the store's
 * own writer (openBackup + BackupAppender) with chosen timestamps, and
 * registered in backups.db, plus an imapd.conf the tools can read.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { parseCommandLines } from '../transforms/dlist-parser.js';
import type { DlistFile, DlistItem, DlistValue } from '../transforms/dlist-types.js';
import { BackupAppender, openBackup } from '../sinks/backup/index-db.js';
import { openBackupsDb } from '../sinks/backup/backupsdb.js';
import { createDataFile } from '../sinks/backup/paths.js';

export const sha1 = (b: Buffer | string): string => createHash('sha1').update(b).digest('hex');

export interface ToolsFixture {
  dir: string;
  conf: string;
  partition: string;
  configdirectory: string;
  settings: { backuppartitions: Record<string, string>; configdirectory: string };
}

export function toolsFixture(extra: string[] = []): ToolsFixture {
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'cyrsync-btools-'));
  const configdirectory = path.join(dir, 'conf');
  const partition = path.join(dir, 'backups');
  fs.mkdirSync(configdirectory, { recursive: true });
  fs.mkdirSync(partition, { recursive: true });
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  const conf = path.join(dir, 'imapd.conf');
  fs.writeFileSync(conf, [`configdirectory: ${configdirectory}`, `backuppartition-default: ${partition}`, `temp_path: ${path.join(dir, 'tmp')}`, `backup_staging_path: ${path.join(dir, 'staging')}`, ...extra, ''].join('\n'));
  return { dir, conf, partition, configdirectory, settings: { backuppartitions: { default: partition }, configdirectory } };
}

export function msg(n: number, extra = ''): Buffer {
  return Buffer.from(`From: a${n}@example.org\r\nTo: bob@example.org\r\nSubject: message ${n}${extra}\r\nMessage-ID: <m${n}@x>\r\n\r\nbody ${n}\r\n`, 'latin1');
}

/** A record: dlist text `KEY value`, or bodies for an APPLY MESSAGE. */
export type FixtureRecord = string | { messages: Buffer[] };

export interface FixtureChunk {
  ts: number;
  records: FixtureRecord[];
}

function itemOf(r: FixtureRecord): DlistItem {
  if (typeof r !== 'string') {
    const files: DlistFile[] = r.messages.map((b) => ({ kind: 'file', partition: 'default', guid: sha1(b), size: b.length, source: () => Readable.from([b]) }));
    return { key: 'MESSAGE', value: { kind: 'list', items: files } };
  }
  const [cmd] = parseCommandLines(Buffer.from(`X ${r}\r\n`, 'latin1'));
  const [k, v] = cmd!.args as [DlistValue, DlistValue];
  return { key: (k as { value: string }).value, value: v };
}

/** Creates (or extends) the backup of `owner` with the given chunks; returns the data file path. */
export async function writeBackup(fx: ToolsFixture, owner: string, chunks: FixtureChunk[]): Promise<string> {
  const db = openBackupsDb({ configdirectory: fx.configdirectory });
  let dataPath: string;
  try {
    dataPath = db.getOrCreate(owner, () => createDataFile(fx.settings, owner), (p) => fs.rmSync(p, { force: true })).path;
  } finally {
    db.close();
  }
  const b = await openBackup(dataPath, { wait: true, create: true });
  const app = new BackupAppender(b!);
  try {
    for (const c of chunks) {
      await app.start(c.ts);
      let ts = c.ts;
      for (const r of c.records) await app.append(itemOf(r), ts++);
      await app.end(ts);
    }
  } finally {
    await app.close();
  }
  return dataPath;
}

export function mailboxRecord(p: { uniqueid: string; name: string; lastUid: number; records: string[]; extra?: string }): string {
  return `MAILBOX %(UNIQUEID ${p.uniqueid} MBOXNAME ${p.name} LAST_UID ${p.lastUid} HIGHESTMODSEQ ${p.lastUid + 10} RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 1700000000 POP3_LAST_LOGIN 0 UIDVALIDITY 1234 PARTITION default ACL "bob lrswipkxtecdan " OPTIONS P SYNC_CRC 0 SYNC_CRC_ANNOT 0${p.extra ?? ''} RECORD (${p.records.join(' ')}))`;
}

export function rec(uid: number, body: Buffer, flags = ''): string {
  return `%(UID ${uid} MODSEQ ${uid + 1} LAST_UPDATED ${1700000000 + uid} FLAGS (${flags}) INTERNALDATE 1700000000 SIZE ${body.length} GUID ${sha1(body)})`;
}

/** A two-user-session history of bob: three chunks at 1000, 2000, 3000. */
export async function bobHistory(fx: ToolsFixture): Promise<{ dataPath: string; bodies: Buffer[] }> {
  const bodies = [msg(1), msg(2), msg(3)];
  const dataPath = await writeBackup(fx, 'bob', [
    {
      ts: 1000,
      records: [
        { messages: [bodies[0]!, bodies[1]!] },
        mailboxRecord({ uniqueid: 'u-inbox', name: 'user.bob', lastUid: 2, records: [rec(1, bodies[0]!, '\\Seen'), rec(2, bodies[1]!)] }),
        mailboxRecord({ uniqueid: 'u-old', name: 'user.bob.Old', lastUid: 0, records: [] }),
        'SUB %(USERID bob MBOXNAME user.bob.Old)',
        'SIEVE %(USERID bob FILENAME a.script LAST_UPDATE 1000 CONTENT keep;)',
      ],
    },
    {
      ts: 2000,
      records: [
        { messages: [bodies[2]!] },
        mailboxRecord({ uniqueid: 'u-inbox', name: 'user.bob', lastUid: 3, records: [rec(2, bodies[1]!, '\\Flagged \\Expunged'), rec(3, bodies[2]!)] }),
        'SEEN %(USERID bob UNIQUEID u-inbox LASTREAD 2000 LASTUID 3 LASTCHANGE 2000 SEENUIDS 1:3)',
      ],
    },
    {
      ts: 3000,
      records: ['UNMAILBOX user.bob.Old', 'UNSUB %(USERID bob MBOXNAME user.bob.Old)', 'UNSIEVE %(USERID bob FILENAME a.script)'],
    },
  ]);
  return { dataPath, bodies };
}
