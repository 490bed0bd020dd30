/**
 * What a replica acknowledged in a recorded sync_client session (a cyrus-peer
 * `--tap` recording, decompressed): the commands paired in order with the
 * server's replies; those answered `OK` count. A session cut by a kill ends
 * in a partial command or a command without a reply: neither counts.
 * Also the store-side checks of what was acknowledged, shared by the crash
 * campaign and the graceful-stop test.
 */
import fs from 'node:fs';
import path from 'node:path';
import { memoryBodySink } from '../../transforms/dlist-parser.js';
import { openSqliteReadOnly } from '../../sinks/sqlite-readonly.js';
import { dataFiles } from '../backup-sink-helpers.js';
import { filesBelow } from './faults.js';
import { decodeCommand } from '../../src/protocol/commands.js';
import { serverResponses, tapStreams } from '../replica-helpers.js';
import { commandLines } from '../helpers/replay.js';

export interface Acknowledged {
  /** GUIDs of file literals in APPLY MESSAGE commands answered OK */
  guids: Set<string>;
  /** uniqueid -> highest HIGHESTMODSEQ of an APPLY MAILBOX answered OK (minus folders later deleted with OK) */
  mailboxes: Map<string, bigint>;
}

export async function acknowledgedByReplica(tapFile: string): Promise<Acknowledged> {
  const { client, server } = tapStreams(tapFile);
  const statuses = serverResponses(server).map((r) => {
    const lines = r.toString('latin1').trimEnd().split('\r\n');
    return lines[lines.length - 1] ?? '';
  });
  const out: Acknowledged = { guids: new Set(), mailboxes: new Map() };
  const names = new Map<string, string>(); // mboxname -> uniqueid
  let i = 0;
  try {
    for await (const line of commandLines(client, () => memoryBodySink())) {
      const status = statuses[i++];
      if (status === undefined) break;
      if (!status.startsWith('OK')) continue;
      const cmd = decodeCommand(line, { profile: 'sync', sieveMailbox: true });
      if (cmd.verb !== 'APPLY') continue;
      if (cmd.sub === 'MESSAGE') {
        for (const f of cmd.files) out.guids.add(f.guid.toLowerCase());
      } else if (cmd.sub === 'MAILBOX') {
        const m = cmd.mailbox;
        names.set(m.mboxname, m.uniqueid);
        const prev = out.mailboxes.get(m.uniqueid) ?? 0n;
        if (m.highestmodseq > prev) out.mailboxes.set(m.uniqueid, m.highestmodseq);
      } else if (cmd.sub === 'UNMAILBOX') {
        const u = names.get(cmd.mboxname);
        if (u) out.mailboxes.delete(u);
      }
    }
  } catch {
    // the recording ends inside a command cut by the kill
  }
  return out;
}

/** Where a daemon under test keeps its store. */
export interface StoreDirs {
  kind: 'sync-server' | 'backupd';
  dirs: { configdirectory: string; partition: string; staging: string; temp: string };
}

/** Staging and temporary files of a stopped or restarted daemon. */
export function leftovers(d: StoreDirs): string[] {
  const staging = d.kind === 'backupd' ? filesBelow(d.dirs.staging) : filesBelow(path.join(d.dirs.partition, 'blobs', 'tmp'));
  return [...staging, ...filesBelow(d.dirs.temp)];
}

/**
 * GUIDs every backup data file's index holds. An index without its tables
 * holds nothing: a process killed while creating a new backup leaves one
 * (with no chunk committed).
 */
export function backupGuids(d: StoreDirs): Set<string> {
  const out = new Set<string>();
  for (const f of dataFiles(d.dirs.partition)) {
    if (!fs.existsSync(`${f}.index`)) continue;
    const db = openSqliteReadOnly(`${f}.index`);
    try {
      if (!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message'").get()) continue;
      for (const r of db.prepare('SELECT guid FROM message').all() as { guid: string }[]) out.add(r.guid);
    } finally {
      db.close();
    }
  }
  return out;
}

/** Problems with what the replica acknowledged in the recorded session. */
export async function replicaLosses(d: StoreDirs, tapFile: string): Promise<{ count: number; problems: string[] }> {
  const ack = await acknowledgedByReplica(tapFile);
  const problems: string[] = [];
  for (const g of ack.guids) {
    const p = path.join(d.dirs.partition, 'blobs', g.slice(0, 2), g);
    if (!fs.existsSync(p)) problems.push(`acknowledged message ${g} has no file`);
  }
  const dbFile = path.join(d.dirs.configdirectory, 'replica.sqlite3');
  if (ack.mailboxes.size > 0) {
    const db = openSqliteReadOnly(dbFile);
    db.defaultSafeIntegers(true);
    try {
      const q = db.prepare('SELECT highestmodseq FROM mailbox WHERE uniqueid = ?');
      for (const [uniqueid, hms] of ack.mailboxes) {
        const row = q.get(uniqueid) as { highestmodseq: bigint } | undefined;
        if (!row) problems.push(`acknowledged mailbox ${uniqueid} is missing`);
        else if (row.highestmodseq < hms) problems.push(`mailbox ${uniqueid}: highestmodseq ${row.highestmodseq} < acknowledged ${hms}`);
      }
    } finally {
      db.close();
    }
  }
  return { count: ack.guids.size + ack.mailboxes.size, problems };
}
