/**
 * Every csync sub-command's encoder against its decoder: decode(encode(x))
 * equals x, through the octets a client writes (serializer, then parser) and,
 * for file literals, at the value level.
 */
import test from 'ava';
import fc from 'fast-check';
import { decodeCommand, encodeCommand } from '../src/protocol/commands.js';
import { APPLY_TABLE, GET_TABLE } from '../src/protocol/commands/table.js';
import type { Annot, ApplyCommand, Command, GetCommand, MailboxIn, RecordIn } from '../src/protocol/types.js';
import { memoryBodySink, parseCommandLines } from '../transforms/dlist-parser.js';
import { serializeLine } from '../transforms/serializer.js';

const text = fc.string({ unit: fc.integer({ min: 1, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 24 });
const name = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz.0123456789_-'), minLength: 1, maxLength: 20 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: 0xffffffffffffffffn });
const date = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const guid = fc.stringMatching(/^[0-9a-f]{40}$/);
const bytes = fc.uint8Array({ maxLength: 40 }).map((a) => ({ kind: 'buffer' as const, value: Buffer.from(a) }));
const flag = fc.oneof(fc.constantFrom('\\Seen', '\\Answered', '\\Flagged', '\\Deleted', '\\Draft', '\\Expunged'), name.map((n) => `$${n}`));

const annot: fc.Arbitrary<Annot> = fc.record({ entry: text, userid: text, modseq: u64, value: bytes });
const record: fc.Arbitrary<RecordIn> = fc.record({
  uid: u32,
  modseq: u64,
  lastUpdated: date,
  flags: fc.array(flag, { maxLength: 4 }),
  internaldate: date,
  size: u32,
  guid,
  annotations: fc.option(fc.array(annot, { maxLength: 2 }), { nil: null }),
});

const fullMailbox: fc.Arbitrary<MailboxIn> = fc
  .record({
    uniqueid: text,
    mboxname: text,
    mboxtype: fc.constantFrom(null, 'e', 'f', 'n'),
    highestmodseq: u64,
    partition: text,
    lastUid: u32,
    recentUid: u32,
    recentTime: date,
    lastAppenddate: date,
    pop3LastLogin: date,
    uidvalidity: u32,
    acl: text,
    options: text,
    syncCrc: u32,
    syncCrcAnnot: u32,
    annotations: fc.option(fc.array(annot, { maxLength: 3 }), { nil: null }),
    userflags: fc.option(fc.array(text, { maxLength: 3 }), { nil: null }),
    usergroups: fc.option(text, { nil: null }),
    records: fc.array(record, { maxLength: 4 }),
  })
  .chain((m) =>
    fc
      .record(
        {
          pop3ShowAfter: date,
          quotaroot: fc.option(text, { nil: null }),
          createdmodseq: u64,
          foldermodseq: u64,
          xconvmodseq: u64,
          raclmodseq: u64,
          sinceModseq: u64,
          sinceCrc: u32,
          sinceCrcAnnot: u32,
        },
        { requiredKeys: [] },
      )
      .map((o) => ({ ...m, ...o }) as MailboxIn),
  );

const deletedMailbox: fc.Arbitrary<MailboxIn> = fc
  .record(
    { uniqueid: text, mboxname: text, mboxtype: fc.constantFrom('d', 'i', 'di'), highestmodseq: u64, createdmodseq: u64, foldermodseq: u64 },
    { requiredKeys: ['uniqueid', 'mboxname', 'mboxtype', 'highestmodseq'] },
  )
  .map((m) => m as MailboxIn);

const limits = fc
  .record({ STORAGE: u32, MESSAGE: u32, 'X-ANNOTATION-STORAGE': u32, 'X-NUM-FOLDERS': u32 }, { requiredKeys: [] })
  .map((l) => l as Record<string, number>);

// The generated fields are those of the sub-command named by `sub` (checked by the round trip itself).
const get = (c: fc.Arbitrary<{ sub: string }>): fc.Arbitrary<Command> => c.map((x) => ({ verb: 'GET', ...x }) as unknown as Command);
const apply = (c: fc.Arbitrary<{ sub: string }>): fc.Arbitrary<Command> => c.map((x) => ({ verb: 'APPLY', ...x }) as unknown as Command);
const local = fc.boolean();

/** One generator per sub-command; the test checks that none is missing. */
const GETS: Record<keyof typeof GET_TABLE, fc.Arbitrary<Command>> = {
  USER: get(fc.record({ sub: fc.constant('USER' as const), userid: text })),
  META: get(fc.record({ sub: fc.constant('META' as const), userid: text })),
  MAILBOXES: get(fc.record({ sub: fc.constant('MAILBOXES' as const), names: fc.array(text, { maxLength: 4 }) })),
  UNIQUEIDS: get(fc.record({ sub: fc.constant('UNIQUEIDS' as const), uniqueids: fc.array(text, { maxLength: 4 }) })),
  FULLMAILBOX: get(fc.record({ sub: fc.constant('FULLMAILBOX' as const), mboxname: text })),
  QUOTA: get(fc.record({ sub: fc.constant('QUOTA' as const), root: text })),
  ANNOTATION: get(fc.record({ sub: fc.constant('ANNOTATION' as const), mboxname: text })),
  FETCH: get(fc.record({ sub: fc.constant('FETCH' as const), mboxname: text, partition: text, uniqueid: text, guid, uid: u32 })),
  FETCH_SIEVE: get(fc.record({ sub: fc.constant('FETCH_SIEVE' as const), userid: text, filename: text })),
};

const APPLIES: Record<keyof typeof APPLY_TABLE, fc.Arbitrary<Command>> = {
  RESERVE: apply(fc.record({ sub: fc.constant('RESERVE' as const), partition: text, mboxnames: fc.array(text, { maxLength: 3 }), guids: fc.array(guid, { maxLength: 3 }) })),
  MESSAGE: apply(
    fc.record({
      sub: fc.constant('MESSAGE' as const),
      files: fc.array(fc.record({ kind: fc.constant('file' as const), partition: name, guid, size: u32 }), { minLength: 1, maxLength: 3 }),
    }),
  ),
  MAILBOX: apply(fc.record({ sub: fc.constant('MAILBOX' as const), local, mailbox: fc.oneof(fullMailbox, deletedMailbox) })),
  UNMAILBOX: apply(fc.record({ sub: fc.constant('UNMAILBOX' as const), local, mboxname: text })),
  RENAME: apply(
    fc.record({ sub: fc.constant('RENAME' as const), local, oldname: text, newname: text, partition: text, uidvalidity: fc.option(u32, { nil: null }) }),
  ),
  EXPUNGE: apply(fc.record({ sub: fc.constant('EXPUNGE' as const), mboxname: text, uniqueid: text, uids: fc.array(u32, { maxLength: 5 }) })),
  QUOTA: apply(fc.record({ sub: fc.constant('QUOTA' as const), quota: fc.record({ root: text, limits, modseq: fc.option(u64, { nil: null }) }) })),
  UNQUOTA: apply(fc.record({ sub: fc.constant('UNQUOTA' as const), root: text })),
  SUB: apply(fc.record({ sub: fc.constant('SUB' as const), userid: text, mboxname: text })),
  UNSUB: apply(fc.record({ sub: fc.constant('UNSUB' as const), userid: text, mboxname: text })),
  SEEN: apply(
    fc.record({
      sub: fc.constant('SEEN' as const),
      seen: fc.record({ userid: text, uniqueid: text, lastread: date, lastuid: u32, lastchange: date, seenuids: text }),
    }),
  ),
  ANNOTATION: apply(fc.record({ sub: fc.constant('ANNOTATION' as const), mboxname: text, entry: text, userid: text, value: bytes })),
  UNANNOTATION: apply(fc.record({ sub: fc.constant('UNANNOTATION' as const), mboxname: text, entry: text, userid: text })),
  SIEVE: apply(fc.record({ sub: fc.constant('SIEVE' as const), userid: text, filename: text, lastUpdate: date, content: bytes })),
  UNSIEVE: apply(fc.record({ sub: fc.constant('UNSIEVE' as const), userid: text, filename: text })),
  ACTIVATE_SIEVE: apply(fc.record({ sub: fc.constant('ACTIVATE_SIEVE' as const), userid: text, filename: text })),
  UNACTIVATE_SIEVE: apply(fc.record({ sub: fc.constant('UNACTIVATE_SIEVE' as const), userid: text })),
  UNUSER: apply(fc.record({ sub: fc.constant('UNUSER' as const), local, userid: text })),
  FORCE: apply(fc.record({ sub: fc.constant('FORCE' as const) })),
  CAPABILITIES: apply(fc.record({ sub: fc.constant('CAPABILITIES' as const), names: fc.array(name, { maxLength: 3 }) })),
};

function withoutRaw(c: Command): Command {
  if (c.verb !== 'APPLY') return c;
  const { raw: _raw, ...rest } = c;
  return rest as Command;
}

/** Through octets: the client's line, parsed and decoded as the replica does. */
function viaOctets(cmd: GetCommand | ApplyCommand): Command {
  const { verb, item } = encodeCommand(cmd);
  const lines = parseCommandLines(serializeLine(`${verb} `, item, 'client'), { sink: memoryBodySink() });
  if (lines.length !== 1) throw new Error(`${lines.length} lines`);
  return decodeCommand(lines[0]!, { profile: 'sync' });
}

/** At the value level (file literals carry no octets here). */
function viaValue(cmd: GetCommand | ApplyCommand): Command {
  const { verb, item } = encodeCommand(cmd);
  return decodeCommand({ verb, args: [{ kind: 'atom', value: item.key }, item.value], bodies: [] }, { profile: 'sync' });
}

for (const [table, gens] of [
  [GET_TABLE, GETS],
  [APPLY_TABLE, APPLIES],
] as const) {
  for (const sub of Object.keys(table)) {
    const gen = (gens as Record<string, fc.Arbitrary<Command>>)[sub]!;
    test(`${gen === GETS[sub as keyof typeof GETS] ? 'GET' : 'APPLY'} ${sub}: decode(encode(x)) == x`, (t) => {
      fc.assert(
        fc.property(gen, (cmd) => {
          const c = cmd as GetCommand | ApplyCommand;
          const back = sub === 'MESSAGE' ? viaValue(c) : viaOctets(c);
          t.deepEqual(withoutRaw(back), cmd);
        }),
        { numRuns: 200 },
      );
    });
  }
}

test('every sub-command of the tables has a generator', (t) => {
  t.deepEqual(Object.keys(GETS).sort(), Object.keys(GET_TABLE).sort());
  t.deepEqual(Object.keys(APPLIES).sort(), Object.keys(APPLY_TABLE).sort());
});

test('a local command is encoded with the LOCAL_ key', (t) => {
  const { verb, item } = encodeCommand({ verb: 'APPLY', sub: 'UNMAILBOX', local: true, mboxname: 'user.bob.x' });
  t.is(serializeLine(`${verb} `, item, 'client').toString('latin1'), 'APPLY LOCAL_UNMAILBOX user.bob.x\r\n');
});
