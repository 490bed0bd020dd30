/**
 * Shared helpers of the replica tests: temporary stores, .tap recordings
 * split by direction, and commands run and recordings replayed into a
 * replica session (through ./helpers/replay.ts).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { DlistFile } from '../transforms/dlist-types.js';
import type { ApplyCommand, GetCommand, MailboxIn, RecordIn } from '../src/protocol/types.js';
import { createReplicaSink, type ReplicaSink, type ReplicaStoreOptions } from '../sinks/replica/index.js';
import type { ReplicaSession } from '../sinks/replica/session.js';
import { mailboxIn as baseMailboxIn, sha1, stageFiles } from './helpers/store-input.js';

export { message, sha1 } from './helpers/store-input.js';
import { replayInto, routeCommand, type Exchange, type Routed } from './helpers/replay.js';

export const TRANSCRIPTS = '/work/shared/fixtures/transcripts';

export interface TempStore {
  dir: string;
  configdirectory: string;
  partitions: Record<string, string>;
  sink: ReplicaSink;
}

export async function tempStore(extra: Partial<ReplicaStoreOptions> = {}, dir?: string): Promise<TempStore> {
  const root = dir ?? mkdtempSync(path.join(tmpdir(), 'cyrsync-replica-'));
  const configdirectory = path.join(root, 'conf');
  const partitions = { default: path.join(root, 'spool') };
  const sink = await createReplicaSink({ configdirectory, partitions, fsync: false, ...extra });
  return { dir: root, configdirectory, partitions, sink };
}

export function openSession(sink: ReplicaSink): ReplicaSession {
  return sink.openSession({ authUser: 'admin', peer: 'test' });
}

const TAP_NOTE = '\n---------- tap: ';

/** Both directions of a .tap recording, markers removed. */
export function tapStreams(file: string): { client: Buffer; server: Buffer } {
  const data = readFileSync(file);
  const text = data.toString('latin1');
  const mark = /([<>])(\d{9,11})\1/g;
  const marks: { dir: string; start: number; end: number }[] = [];
  let m: RegExpExecArray | null;
  while ((m = mark.exec(text))) marks.push({ dir: m[1]!, start: m.index, end: mark.lastIndex });
  const c: Buffer[] = [];
  const s: Buffer[] = [];
  for (let i = 0; i < marks.length; i++) {
    let body = data.subarray(marks[i]!.end, i + 1 < marks.length ? marks[i + 1]!.start : data.length);
    // The relay's own note when a connection broke (peer_tap.py) is not part of either stream.
    const note = body.indexOf(TAP_NOTE, 0, 'latin1');
    if (note >= 0) body = body.subarray(0, note);
    (marks[i]!.dir === '>' ? c : s).push(body);
  }
  return { client: Buffer.concat(c), server: Buffer.concat(s) };
}

/**
 * Server responses in order, banner skipped: each is the data lines plus the
 * status line, literals included, as exact octets.
 */
export function serverResponses(server: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  let start = 0;
  let inBanner = true;
  let lineStart = 0;
  while (pos < server.length) {
    const nl = server.indexOf('\n', pos);
    const end = nl < 0 ? server.length : nl + 1;
    const seg = server.subarray(pos, end).toString('latin1');
    const lit = /(?:\{(\d+)\+?\}|%\{\S+ \S+ (\d+)\})\r\n$/.exec(seg);
    if (lit) {
      // the logical line goes on after the literal's octets (plain or file literal)
      pos = end + Number(lit[1] ?? lit[2]);
      continue;
    }
    const line = server.subarray(lineStart, end).toString('latin1');
    pos = end;
    lineStart = end;
    if (inBanner) {
      if (line.startsWith('* OK ')) {
        inBanner = false;
        start = pos;
      }
      continue;
    }
    if (!line.startsWith('* ')) {
      out.push(server.subarray(start, pos));
      start = pos;
    }
  }
  return out;
}

/** Runs one decoded GET/APPLY through the real router; returns the reply octets. */
export function runCommand(session: ReplicaSession, cmd: GetCommand | ApplyCommand): Promise<Routed> {
  return routeCommand('sync', session, cmd);
}

/** Replays a recorded client stream into a session. AUTHENTICATE/COMPRESS are answered as the recording did. */
export function replay(session: ReplicaSession, client: Buffer): Promise<Exchange[]> {
  return replayInto('sync', session, client);
}

/** Streams `bodies` through the session's body sink as file literals (as the parser would). */
export function stage(session: ReplicaSession, bodies: Buffer[], opts: { guids?: string[]; split?: number } = {}): Promise<DlistFile[]> {
  return stageFiles(session.bodySink, bodies, { ...opts, split: opts.split ?? 7 });
}

export function mailboxIn(p: Partial<MailboxIn> & { uniqueid: string; mboxname: string }): MailboxIn {
  return baseMailboxIn({ createdmodseq: 1n, foldermodseq: 1n, ...p });
}

export function recordIn(uid: number, body: Buffer, p: Partial<RecordIn> = {}): RecordIn {
  return {
    uid,
    modseq: BigInt(uid + 1),
    lastUpdated: 1700000100 + uid,
    flags: [],
    internaldate: 1700000000 + uid,
    size: body.length,
    guid: sha1(body),
    annotations: null,
    ...p,
  };
}
