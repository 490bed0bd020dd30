/**
 * What the tests of both stores feed a session: messages, a MailboxIn with
 * plausible defaults, and file literals streamed through a session's body
 * sink in small pieces, as the parser streams them.
 */
import { createHash } from 'node:crypto';
import type { BodySink, DlistFile } from '../../transforms/dlist-types.js';
import type { MailboxIn } from '../../src/protocol/types.js';

export const sha1 = (b: Buffer | string): string => createHash('sha1').update(b).digest('hex');

/** A small distinct message, number `n` (its GUID is its SHA-1). */
export function message(n: number, extra = ''): Buffer {
  return Buffer.from(
    `From: a${n}@example.org\r\nTo: bob@example.org\r\nSubject: message ${n}${extra}\r\nMessage-ID: <m${n}@x>\r\n\r\nbody ${n}\r\n`,
    'latin1',
  );
}

/** A MailboxIn of user bob with no records; `p` overrides any field. */
export function mailboxIn(p: Partial<MailboxIn> & { uniqueid: string; mboxname: string }): MailboxIn {
  return {
    mboxtype: null,
    highestmodseq: 1n,
    partition: 'default',
    lastUid: 0,
    recentUid: 0,
    recentTime: 0,
    lastAppenddate: 0,
    pop3LastLogin: 0,
    pop3ShowAfter: 0,
    uidvalidity: 1700000000,
    acl: 'bob\tlrswipkxtecdan\t',
    options: 'P',
    records: [],
    ...p,
  };
}

export interface StageOptions {
  /** the GUIDs announced, one per body (default: each body's SHA-1); a wrong one tests verification */
  guids?: string[];
  /** octets per write */
  split: number;
  /** return a file whose staging failed (its `done` rejected) instead of throwing */
  mayFail?: boolean;
}

/** Streams `bodies` through `bodySink` as file literals of partition `default`. */
export async function stageFiles(bodySink: BodySink, bodies: Buffer[], opts: StageOptions): Promise<DlistFile[]> {
  const files: DlistFile[] = [];
  for (let i = 0; i < bodies.length; i++) {
    const b = bodies[i]!;
    const guid = opts.guids?.[i] ?? sha1(b);
    const w = bodySink.open({ kind: 'file', partition: 'default', guid, size: b.length })!;
    for (let off = 0; off < b.length; off += opts.split) {
      if (!w.write(b.subarray(off, off + opts.split))) await new Promise<void>((r) => w.onDrain(r));
    }
    const body = w.end(sha1(b));
    if (opts.mayFail) await body.done.catch(() => {});
    else await body.done;
    files.push({ kind: 'file', partition: 'default', guid, size: b.length, sha1: sha1(b), body });
  }
  return files;
}
