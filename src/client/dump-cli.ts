/**
 * `cyrsync dump [-C imapd.conf] [--embedded] [--json] USER`: what the replica
 * holds for USER, in the canonical form of the cyrus-peer dump of a Cyrus
 * master, so the two can be compared with diff; with --json, the same entries
 * as JSON lines (stream-json's JSONL stringer). Either way the entries are
 * read, formatted and written one at a time with backpressure, so a user of
 * any size is dumped with flat memory.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import JsonlStringer from 'stream-json/jsonl/Stringer.js';
import { ConfigError, EX_CONFIG, embeddedDefaultConfig, loadConfigOrEmbedded, type Config } from '../config.js';
import { dumpEntries, formatDumpEntry } from '../../sinks/replica/dump.js';
import { ReplicaStore } from '../../sinks/replica/store.js';

const EX_USAGE = 64;
const EX_NOINPUT = 66;

export async function runDump(argv: string[]): Promise<number> {
  let configFile: string | undefined;
  let embedded = false;
  let json = false;
  let user: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-C') configFile = argv[++i];
    else if (a === '--embedded') embedded = true;
    else if (a === '--json') json = true;
    else if (a.startsWith('-')) {
      process.stderr.write(`cyrsync dump: unknown option ${a}\n`);
      return EX_USAGE;
    } else if (user === undefined) user = a;
    else {
      process.stderr.write('cyrsync dump: one user at a time\n');
      return EX_USAGE;
    }
  }
  if (!user) {
    process.stderr.write('usage: cyrsync dump [-C imapd.conf] [--embedded] [--json] USER\n');
    return EX_USAGE;
  }
  let config: Config;
  try {
    config = embedded && configFile === undefined ? embeddedDefaultConfig(process.cwd()) : loadConfigOrEmbedded(configFile, process.cwd());
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`cyrsync dump: ${err.message}\n`);
      return EX_CONFIG;
    }
    throw err;
  }
  const s = config.settings;
  let store: ReplicaStore;
  try {
    store = ReplicaStore.openReadonly({ configdirectory: s.configdirectory, partitions: { ...s.partitions } });
  } catch (err) {
    process.stderr.write(`cyrsync dump: cannot read the replica store under ${s.configdirectory}: ${(err as Error).message}\n`);
    return EX_NOINPUT;
  }
  try {
    let count = 0;
    const entries = Readable.from(dumpEntries(store, user)).map((e) => {
      count++;
      return e;
    });
    if (json) {
      await pipeline(entries, JsonlStringer.make(), process.stdout, { end: false });
      // The JSONL stringer separates lines; the last one still ends a line.
      if (count > 0) process.stdout.write('\n');
    } else {
      await pipeline(entries.map((e) => formatDumpEntry(e) + '\n'), process.stdout, { end: false });
    }
  } catch (err) {
    // The reader went away (`| head`): stop quietly, as Unix tools do.
    if ((err as NodeJS.ErrnoException).code !== 'EPIPE') throw err;
  } finally {
    store.close();
  }
  return 0;
}
