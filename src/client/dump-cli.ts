/**
 * `cyrsync dump [-C imapd.conf] [--embedded] [--json] USER`: what the replica
 * holds for USER, in the canonical form of the cyrus-peer dump of a Cyrus
 * master, so the two can be compared with diff; with --json, the same entries
 * as JSON lines (stream-json's JSONL stringer). Either way the entries are
 * read, formatted and written one at a time with backpressure, so a user of
 * any size is dumped with flat memory.
 */
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import JsonlStringer from 'stream-json/jsonl/Stringer.js';
import { dumpEntries, formatDumpEntry, type DumpEntry } from '../../sinks/replica/dump.js';
import { ReplicaStore } from '../../sinks/replica/store.js';
import { EX_NOINPUT, defineCommand, parseCommandLine } from '../cli-args.js';
import { CONFIG_OPTIONS, loadCommandConfig } from '../cli-frame.js';

export const DUMP_SPEC = defineCommand({
  name: 'dump',
  summary: 'print what the replica holds for USER (same form as cyrus-peer dump; --json: JSON lines)',
  description:
    "Prints what the replica holds for USER: mailboxes, each message (uid, modseq, size, SHA-1 of the stored file, internaldate, flags), subscriptions, annotations and the quota, in the canonical form of the test harness's `cyrus-peer dump USER`, so diff of the two is empty for a converged user. It opens the store read-only and runs next to a live server.",
  options: {
    ...CONFIG_OPTIONS,
    json: { long: 'json', type: 'boolean', help: 'the same entries as JSON lines' },
  },
  positionals: { name: 'USER', min: 1, max: 1 },
});

export async function runDump(argv: string[]): Promise<number> {
  const p = parseCommandLine(DUMP_SPEC, argv);
  if (typeof p === 'number') return p;
  const { json } = p.values;
  const user = p.positionals[0]!;
  const config = loadCommandConfig(DUMP_SPEC, p.values);
  if (typeof config === 'number') return config;
  const s = config.settings;
  let store: ReplicaStore;
  try {
    store = ReplicaStore.openReadonly({ configdirectory: s.configdirectory, partitions: { ...s.partitions } });
  } catch (err) {
    process.stderr.write(`cyrsync dump: cannot read the replica store under ${s.configdirectory}: ${(err as Error).message}\n`);
    return EX_NOINPUT;
  }
  const source = Readable.from(dumpEntries(store, user));
  try {
    let count = 0;
    const entries = source.map((e: DumpEntry) => {
      count++;
      return e;
    });
    if (json) {
      await pipeline(entries, JsonlStringer.make(), process.stdout, { end: false });
      // The JSONL stringer separates lines; the last one still ends a line.
      if (count > 0) process.stdout.write('\n');
    } else {
      await pipeline(entries.map((e: DumpEntry) => formatDumpEntry(e) + '\n'), process.stdout, { end: false });
    }
  } catch (err) {
    // The reader went away (`| head`): stop quietly, as Unix tools do.
    if ((err as NodeJS.ErrnoException).code !== 'EPIPE') throw err;
  } finally {
    // A pipeline cut short returns the entry generator asynchronously; its
    // database cursor must be finished before the store can close.
    source.destroy();
    if (!source.closed) await once(source, 'close');
    store.close();
  }
  return 0;
}
