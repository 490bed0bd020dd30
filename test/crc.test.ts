import test from 'ava';
import { readFileSync } from 'node:fs';
import {
  ANNOT_CRC_INIT,
  crc32,
  crcMatch,
  flagCrc,
  mailboxCrcs,
  plainCrcRecord,
  recordAnnotCrc,
  recordBasicCrc,
  FLAG_ANSWERED,
  FLAG_DELETED,
  FLAG_DRAFT,
  FLAG_FLAGGED,
  FLAG_SEEN,
  type CrcRecord,
} from '../src/protocol/crc.js';

const TRANSCRIPTS = '/work/shared/fixtures/transcripts';

function rec(p: Partial<CrcRecord> & { uid: number }): CrcRecord {
  return plainCrcRecord({ modseq: 1n, lastUpdated: 0, internaldate: 0, guid: '0'.repeat(40), ...p });
}

// csync-wire.md §7.4
const example: CrcRecord[] = [
  rec({
    uid: 1,
    modseq: 3n,
    lastUpdated: 1711234500,
    internaldate: 1711234500,
    systemFlags: FLAG_SEEN,
    userFlags: ['$Forwarded'],
    guid: '0123456789abcdef0123456789abcdef01234567',
    thrid: 0x00a1b2c3d4e5f607n,
    savedate: 1711234501,
    createdmodseq: 3n,
    annotations: [{ entry: '/comment', userid: 'cassandane', value: Buffer.from('hello') }],
  }),
  rec({
    uid: 2,
    modseq: 7n,
    lastUpdated: 1711234530,
    internaldate: 1711234530,
    guid: 'fedcba9876543210fedcba9876543210fedcba98',
  }),
  rec({ uid: 3, modseq: 9n, systemFlags: FLAG_DELETED, expunged: true, guid: 'ab'.repeat(20) }),
];

test('worked example of csync-wire §7.4', (t) => {
  t.is(crc32('\\seen'), 3201761491);
  t.is(crc32('$forwarded'), 2528186923);
  t.is(flagCrc(FLAG_SEEN, ['$Forwarded']), 677778168);
  t.is(recordBasicCrc(example[0]!), 1983503960);
  t.is(recordBasicCrc(example[1]!), 140403771);
  t.is(recordBasicCrc(example[2]!), 0);
  t.is(recordAnnotCrc(example[2]!), 0);
  t.is((recordAnnotCrc(example[0]!) ^ 0) >>> 0, 3430486687);
  t.deepEqual(mailboxCrcs(example), { basic: 2120727139, annot: 3435492305 });
});

test('empty mailbox: basic 0, annot 12345678 (0 with INIT 0)', (t) => {
  t.deepEqual(mailboxCrcs([]), { basic: 0, annot: ANNOT_CRC_INIT });
  t.deepEqual(mailboxCrcs([], 0), { basic: 0, annot: 0 });
});

test('flag CRC is order independent and case-folds user flags only in ASCII', (t) => {
  const all = FLAG_DELETED | FLAG_ANSWERED | FLAG_FLAGGED | FLAG_DRAFT | FLAG_SEEN;
  t.is(flagCrc(all, ['A', 'b']), flagCrc(all, ['B', 'a']));
  t.is(flagCrc(0, ['$Junk']), crc32('$junk'));
  t.not(flagCrc(0, ['\xc9']), crc32('\xe9'));
});

test('crcMatch: zero is a wildcard per component; INIT-0 annotation variant accepted', (t) => {
  t.true(crcMatch({ basic: 0, annot: 0 }, { basic: 5, annot: 6 }));
  t.true(crcMatch({ basic: 5, annot: 6 }, { basic: 0, annot: 6 }));
  t.true(crcMatch({ basic: 5, annot: 0 }, { basic: 5, annot: 9 }));
  t.false(crcMatch({ basic: 5, annot: 6 }, { basic: 7, annot: 6 }));
  t.false(crcMatch({ basic: 5, annot: 6 }, { basic: 5, annot: 7 }));
  const c = mailboxCrcs(example);
  t.true(crcMatch({ basic: c.basic, annot: mailboxCrcs(example, 0).annot }, c));
});

test('annotation with null userid or empty value contributes nothing', (t) => {
  const base = rec({ uid: 4 });
  const withEmpty = rec({
    uid: 4,
    annotations: [
      { entry: '/x', userid: null, value: Buffer.from('v') },
      { entry: '/y', userid: '', value: Buffer.alloc(0) },
    ],
  });
  t.is(recordAnnotCrc(withEmpty), recordAnnotCrc(base));
  // synthetic entries stored as annotations are ignored in favour of the fields
  const synth = rec({ uid: 4, annotations: [{ entry: '/vendor/cmu/cyrus-imapd/thrid', userid: '', value: Buffer.from('1') }] });
  t.is(recordAnnotCrc(synth), 0);
});

/** Client-to-server bytes of a .tap recording (markers removed, client chunks joined). */
function clientStream(file: string): string {
  const data = readFileSync(file).toString('latin1');
  const mark = /([<>])(\d{9,11})\1/g;
  let out = '';
  let m: RegExpExecArray | null;
  const marks: { dir: string; start: number; end: number }[] = [];
  while ((m = mark.exec(data))) marks.push({ dir: m[1]!, start: m.index, end: mark.lastIndex });
  for (let i = 0; i < marks.length; i++) {
    const body = data.slice(marks[i]!.end, i + 1 < marks.length ? marks[i + 1]!.start : data.length);
    if (marks[i]!.dir === '>') out += body;
  }
  return out;
}

/** Replaces `{N+}CRLF<N octets>` literals by a quoted placeholder so that each command is one line. */
function inlineLiterals(s: string): string {
  let out = '';
  let pos = 0;
  const re = /\{(\d+)\+?\}\r\n/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) {
    const n = Number(m[1]);
    out += s.slice(pos, m.index) + '"literal"';
    pos = re.lastIndex + n;
    re.lastIndex = pos;
  }
  return out + s.slice(pos);
}

const SYS: Record<string, number> = {
  '\\deleted': FLAG_DELETED,
  '\\answered': FLAG_ANSWERED,
  '\\flagged': FLAG_FLAGGED,
  '\\draft': FLAG_DRAFT,
  '\\seen': FLAG_SEEN,
};

function recordsOf(line: string): CrcRecord[] {
  const recs: CrcRecord[] = [];
  const re =
    /%\(UID (\d+) MODSEQ (\d+) LAST_UPDATED (\d+) FLAGS \(([^)]*)\) INTERNALDATE (\d+) SIZE \d+ GUID ([0-9a-f]{40})(?: ANNOTATIONS \(((?:%\([^)]*\)\s?)*)\))?\)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line))) {
    const flags = m[4]!.split(' ').filter(Boolean);
    let systemFlags = 0;
    const userFlags: string[] = [];
    let expunged = false;
    for (const f of flags) {
      const lf = f.toLowerCase();
      if (lf === '\\expunged') expunged = true;
      else if (lf in SYS) systemFlags |= SYS[lf]!;
      else userFlags.push(f);
    }
    const r = rec({
      uid: Number(m[1]),
      modseq: BigInt(m[2]!),
      lastUpdated: Number(m[3]),
      internaldate: Number(m[5]),
      guid: m[6]!,
      systemFlags,
      userFlags,
      expunged,
    });
    const annots: CrcRecord['annotations'][number][] = [];
    const are = /%\(ENTRY (\S+) USERID (""|\S+) MODSEQ \d+ VALUE ([^)\s]+)\)/g;
    let a: RegExpExecArray | null;
    while ((a = are.exec(m[7] ?? ''))) {
      const [entry, userid, value] = [a[1]!, a[2] === '""' ? '' : a[2]!, a[3]!];
      if (entry.endsWith('/thrid')) r.thrid = BigInt(`0x${value}`);
      else if (entry.endsWith('/savedate')) r.savedate = Number(value);
      else if (entry.endsWith('/createdmodseq')) r.createdmodseq = BigInt(value);
      else annots.push({ entry, userid, value: Buffer.from(value, 'latin1') });
    }
    r.annotations = annots;
    recs.push(r);
  }
  return recs;
}

test('recomputes the SYNC_CRC/SYNC_CRC_ANNOT the real 3.6.1 master sent with full RECORD lists', (t) => {
  const stream = clientStream(`${TRANSCRIPTS}/01-full-replica.tap`);
  const lines = inlineLiterals(stream).split('\r\n').filter((l) => l.startsWith('APPLY MAILBOX %('));
  let checked = 0;
  let withRecords = 0;
  for (const line of lines) {
    const crc = /SYNC_CRC (\d+) SYNC_CRC_ANNOT (\d+)/.exec(line);
    if (!crc) continue;
    const recs = recordsOf(line);
    if (recs.length > 0) withRecords++;
    t.deepEqual(mailboxCrcs(recs), { basic: Number(crc[1]), annot: Number(crc[2]) }, line.slice(0, 120));
    checked++;
  }
  t.true(checked >= 9, `checked ${checked} mailboxes`);
  t.true(withRecords >= 4);
});
