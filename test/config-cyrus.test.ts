/**
 * Differential test of the imapd.conf reader against the real Cyrus 3.6.1
 * reader: random configuration files are given to both `cyr_info conf-all`
 * (Debian's cyrus-common) and parseConfig. Both must refuse the same files
 * (Cyrus exits with EX_CONFIG), and for accepted files every option set in
 * the file must have the same value.
 */
import test from 'ava';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, parseConfig, parseDuration, type Settings } from '../src/config.js';
import { removeTrackedDirs, trackedTempDir } from './helpers/teardown.js';

test.after.always(removeTrackedDirs);

const CYR_INFO = '/usr/lib/cyrus/bin/cyr_info';
const have = existsSync(CYR_INFO);

type Kind = 'switch' | 'int' | 'duration' | 'enum' | 'string' | 'words';
const KEYS: Record<string, { kind: Kind; unit?: 'm' | 's'; pool: string[] }> = {
  allowplaintext: { kind: 'switch', pool: ['yes', 'no', 'on', 'off', 'true', 'false', '1', '0', 'Yes', 'OFF', 'maybe', 't', 'nah', 'onward', 'of', 'o'] },
  sync_log: { kind: 'switch', pool: ['1', '0', 'y', 'n', '2', 'f'] },
  debug: { kind: 'switch', pool: ['yes', 'no', 'x'] },
  maxword: { kind: 'int', pool: ['0', '12', '0x1f', '0X10', '010', '08', '-5', '+7', '1e3', '12abc', '2147483647', '99999999999', '0x'] },
  sasl_minimum_layer: { kind: 'int', pool: ['0', '56', '-1', 'abc'] },
  sync_timeout: { kind: 'duration', unit: 's', pool: ['30', '30m', '1h30m', '2d', 'm', '-', '-5', '10x', '1h5', '99999999999', '5M', '1d2h3m4s', '0', '3000000000s', '24855d'] },
  timeout: { kind: 'duration', unit: 'm', pool: ['45', '2h', '1s', 'h'] },
  failedloginpause: { kind: 'duration', unit: 's', pool: ['0', '3s', '1m', 'x'] },
  backup_db: { kind: 'enum', pool: ['twoskip', 'skiplist', 'sql', 'zeroskip', 'sqlite', 'Twoskip', 'twoskip zeroskip'] },
  virtdomains: { kind: 'enum', pool: ['off', 'on', 'userid', 'yes', 'no', '1', '0', 'true', 'f', 'maybe', 'On'] },
  servername: { kind: 'string', pool: ['replica.example.net', 'a b', 'x#y', 'é'] },
  sievedir: { kind: 'string', pool: ['/var/sieve', '{configdirectory}/sieve', '{CONFIGDIRECTORY}/s'] },
  admins: { kind: 'words', pool: ['admin', 'admin repl', 'a,b c'] },
  defaultpartition: { kind: 'string', pool: ['default', 'Main', 'a-b', 'x_y', 'p1'] },
};

const keyNames = Object.keys(KEYS);

/** One generated line: an option, a comment, a blank, or a malformed line. */
const lineArb = fc.oneof(
  { weight: 6, arbitrary: fc.record({ key: fc.constantFrom(...keyNames), upper: fc.boolean(), lead: fc.constantFrom('', ' ', '\t'), sep: fc.constantFrom(':', ': ', ':\t', ':   '), trail: fc.constantFrom('', ' ', '\t', '\r'), vi: fc.nat() }).map((r) => {
    const spec = KEYS[r.key]!;
    const key = r.upper ? r.key.toUpperCase() : r.key;
    return `${r.lead}${key}${r.sep}${spec.pool[r.vi % spec.pool.length]}${r.trail}`;
  }) },
  // Service-specific form: cyr_info's service name is its own ident.
  { weight: 2, arbitrary: fc.record({ key: fc.constantFrom(...keyNames), vi: fc.nat() }).map((r) => `cyr_info_${r.key}: ${KEYS[r.key]!.pool[r.vi % KEYS[r.key]!.pool.length]}`) },
  { weight: 1, arbitrary: fc.constantFrom('# comment', '   # indented comment', '', '   ', 'unknown_option_x: whatever', 'partition-other: /p/other') },
  { weight: 1, arbitrary: fc.constantFrom('servername : x', 'no colon here', 'allowplaintext:', 'bad key: v', '@include', 'admins: one \\', 'ke.y: v', '-dash-: ok') },
);

interface Outcome {
  ok: boolean;
  values: Map<string, string>;
  text: string;
}

function cyrus(file: string): Outcome {
  const r = spawnSync(CYR_INFO, ['-C', file, 'conf-all'], { encoding: 'utf8' });
  const values = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const i = line.indexOf(': ');
    if (i > 0) values.set(line.slice(0, i), line.slice(i + 2));
  }
  if (r.status !== 0 && r.status !== 78) throw new Error(`cyr_info exited ${r.status}: ${r.stderr}${r.stdout}`);
  return { ok: r.status === 0, values, text: r.stdout + r.stderr };
}

function expectedFromCyrus(key: string, cy: string): unknown {
  const spec = KEYS[key]!;
  switch (spec.kind) {
    case 'switch':
      return cy === 'yes';
    case 'int':
      // cyr_info prints the stored `long`; Cyrus's config_getint() hands out an `int`.
      return Number(BigInt.asIntN(32, BigInt(cy)));
    case 'duration': {
      const d = parseDuration(cy, spec.unit ?? 's');
      if (!d.ok) throw new Error(`Cyrus accepted a duration we cannot read: ${cy}`);
      return key === 'sync_timeout' ? Math.max(3, d.seconds) : d.seconds;
    }
    case 'words':
      return cy.split(/\s+/).filter(Boolean);
    case 'enum':
    case 'string':
      return key === 'defaultpartition' ? cy.toLowerCase() : cy;
  }
}

(have ? test : test.skip)(
  have ? 'imapd.conf reader agrees with the real Cyrus 3.6.1 reader (cyr_info)' : 'imapd.conf reader agrees with real Cyrus (skipped: cyrus-common is not installed)',
  (t) => {
    const dir = trackedTempDir('cyrsync-cfgdiff-');
    // cyr_info runs as the cyrus user: the directory and files must be readable by it.
    chmodSync(dir, 0o755);
    let n = 0;
    fc.assert(
      fc.property(fc.array(lineArb, { maxLength: 6 }), fc.boolean(), (lines, continuation) => {
        let body = lines.join('\n');
        if (continuation && body.length > 4) body = body.slice(0, 3) + '\\\n' + body.slice(3);
        const text = `configdirectory: ${dir}\npartition-default: ${dir}\n${body}\n`;
        const file = join(dir, `c${n++}.conf`);
        writeFileSync(file, text, { mode: 0o644 });
        const cy = cyrus(file);
        let ours: Settings | null = null;
        let err: unknown = null;
        try {
          ours = parseConfig(text, file, { ident: 'cyr_info' }).settings;
        } catch (e) {
          if (!(e instanceof ConfigError)) throw e;
          err = e;
        }
        if (cy.ok !== (ours !== null)) {
          throw new Error(`disagreement on:\n${text}\nCyrus: ${cy.ok ? 'accepted' : cy.text}\nours: ${ours ? 'accepted' : String(err)}`);
        }
        if (!ours) return;
        for (const key of keyNames) {
          const set = new RegExp(`^\\s*(cyr_info_)?${key}:`, 'im').test(text.replace(/\\\n/g, ''));
          if (!set || !cy.values.has(key)) continue;
          const want = expectedFromCyrus(key, cy.values.get(key)!);
          const got = (ours as unknown as Record<string, unknown>)[key];
          if (JSON.stringify(got) !== JSON.stringify(want)) {
            throw new Error(`value of ${key} differs on:\n${text}\nCyrus: ${JSON.stringify(want)} ours: ${JSON.stringify(got)}`);
          }
        }
      }),
      { numRuns: 250 },
    );
    t.true(n >= 250);
  },
);
