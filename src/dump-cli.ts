/**
 * `cyrsync dump [-C imapd.conf] [--embedded] USER`: what the replica holds for
 * USER, in the canonical form of the cyrus-peer dump of a Cyrus master, so
 * the two can be compared with diff.
 */
import { ConfigError, EX_CONFIG, embeddedDefaultConfig, loadConfigOrEmbedded, type Config } from './config.js';
import { dumpUser } from '../sinks/replica/dump.js';

const EX_USAGE = 64;
const EX_NOINPUT = 66;

export async function runDump(argv: string[]): Promise<number> {
  let configFile: string | undefined;
  let embedded = false;
  let user: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-C') configFile = argv[++i];
    else if (a === '--embedded') embedded = true;
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
    process.stderr.write('usage: cyrsync dump [-C imapd.conf] [--embedded] USER\n');
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
  let text: string;
  try {
    text = dumpUser({ configdirectory: s.configdirectory, partitions: { ...s.partitions } }, user);
  } catch (err) {
    process.stderr.write(`cyrsync dump: cannot read the replica store under ${s.configdirectory}: ${(err as Error).message}\n`);
    return EX_NOINPUT;
  }
  process.stdout.write(text + '\n');
  return 0;
}
