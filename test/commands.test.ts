/**
 * decodeCommand: every verb and sub-command of csync-wire §2-§5 with valid
 * and invalid operands; refusals are values carrying the exact Cyrus 3.6.1
 * status line (sync_server / backupd), never exceptions.
 */
import test from 'ava';
import { decodeCommand, type DecodeOptions } from '../src/protocol/commands.js';
import type { ApplyCommand, ApplyCommandOf, ApplySub, Command, GetCommand, GetCommandOf, GetSub, MailboxIn } from '../src/protocol/types.js';
import { memoryBodySink, parseCommandLines } from '../transforms/dlist-parser.js';
import { expectEach } from './helpers/tables.js';

function dec(wire: string, opts: DecodeOptions = { profile: 'sync' }): Command {
  const lines = parseCommandLines(Buffer.from(wire.endsWith('\n') ? wire : wire + '\r\n', 'latin1'), {
    sink: memoryBodySink(),
  });
  if (lines.length !== 1) throw new Error(`expected one line, got ${lines.length}`);
  const c = decodeCommand(lines[0]!, opts);
  if (c.verb === 'APPLY') {
    // The operand as parsed rides along for stores that keep it; the typed fields are what these tests check.
    if (c.raw !== lines[0]!.args[1]) throw new Error('APPLY without its parsed operand');
    const { raw: _raw, ...typed } = c;
    return typed as Command;
  }
  return c;
}

const backup: DecodeOptions = { profile: 'backup' };

function reply(c: Command): string | null {
  return c.verb === 'REFUSED' ? c.reply : null;
}

/** The decoded `APPLY <sub>` with these operand fields (without the parsed operand, as dec() returns it). */
function applied<S extends ApplySub>(sub: S, fields: Omit<ApplyCommandOf<S>, 'verb' | 'sub' | 'raw'>): Command {
  return { verb: 'APPLY', sub, ...fields } as unknown as Command;
}

/** The decoded `GET <sub>` with these operand fields. */
function got<S extends GetSub>(sub: S, fields: Omit<GetCommandOf<S>, 'verb' | 'sub'>): Command {
  return { verb: 'GET', sub, ...fields } as unknown as Command;
}

/** The reply refusing a wire line (null when it is not refused). */
const refusal = (opts?: DecodeOptions) => (wire: string): string | null => reply(dec(wire, opts));

function applyOf(c: Command): ApplyCommand {
  if (c.verb !== 'APPLY') throw new Error(`not an APPLY: ${JSON.stringify(c, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))}`);
  return c;
}

function getOf(c: Command): GetCommand {
  if (c.verb !== 'GET') throw new Error(`not a GET: ${reply(c)}`);
  return c;
}

const G1 = '0123456789abcdef0123456789abcdef01234567';
const G2 = 'FEDCBA9876543210FEDCBA9876543210FEDCBA98';

// ---------------------------------------------------------------------------
// Simple verbs

test('simple verbs, any case', (t) => {
  t.deepEqual(dec('NOOP'), { verb: 'NOOP' });
  t.deepEqual(dec('noop'), { verb: 'NOOP' });
  t.deepEqual(dec('Restart'), { verb: 'RESTART' });
  t.deepEqual(dec('EXIT'), { verb: 'EXIT' });
  t.deepEqual(dec('STARTTLS'), { verb: 'STARTTLS' });
  t.deepEqual(dec('COMPRESS DEFLATE'), { verb: 'COMPRESS', algorithm: 'DEFLATE' });
  t.deepEqual(dec('compress deflate'), { verb: 'COMPRESS', algorithm: 'deflate' });
});

test('simple verbs: Cyrus refusal texts', (t) => {
  t.is(reply(dec('\r\n')), 'BAD Null command');
  t.is(reply(dec('NOOP x')), 'BAD Unexpected extra arguments to Noop');
  t.is(reply(dec('exit now')), 'BAD Unexpected extra arguments to Exit');
  t.is(reply(dec('RESTART 1')), 'BAD Unexpected extra arguments to Restart');
  t.is(reply(dec('STARTTLS x')), 'BAD Unexpected extra arguments to Starttls');
  t.is(reply(dec('STARTTLS', { profile: 'sync', starttls: false })), 'BAD IMAP_PROTOCOL_ERROR Unrecognized command');
  t.is(reply(dec('STARTTLS x', { profile: 'backup', starttls: false })), 'BAD IMAP_PROTOCOL_ERROR Unrecognized command');
  t.deepEqual(dec('STARTTLS x', { profile: 'backup', starttls: true }), { verb: 'STARTTLS' });
  t.is(reply(dec('COMPRESS')), 'BAD Missing required argument to Compress');
  t.is(reply(dec('COMPRESS DEFLATE x')), 'BAD Unexpected extra arguments to Compress');
  t.is(reply(dec('FROB x')), 'BAD IMAP_PROTOCOL_ERROR Unrecognized command');
  t.is(reply(dec('RESTORE MAILBOX %(MBOXNAME a)', backup)), 'BAD IMAP_PROTOCOL_ERROR Unrecognized command');
  const r = dec('NOOP x');
  t.is(r.verb === 'REFUSED' ? r.error?.code : null, 'IMAP_PROTOCOL_ERROR');
});

test('IMAP probe lines get a tagged BAD', (t) => {
  const c = dec('C01 CAPABILITY');
  t.is(reply(c), 'C01 BAD IMAP_PROTOCOL_ERROR Unrecognized command');
  t.is(c.verb === 'REFUSED' ? c.probeTag : null, 'C01');
  t.is(reply(dec('Q01 LOGOUT')), 'Q01 BAD IMAP_PROTOCOL_ERROR Unrecognized command');
  const other = dec('C01 SELECT INBOX');
  t.is(reply(other), 'BAD IMAP_PROTOCOL_ERROR Unrecognized command');
  t.is(other.verb === 'REFUSED' ? other.probeTag : 'x', undefined);
});

test('AUTHENTICATE', (t) => {
  t.deepEqual(dec('AUTHENTICATE PLAIN AGFkbWluAGFkbWlucHc='), {
    verb: 'AUTHENTICATE',
    mechanism: 'PLAIN',
    initial: 'AGFkbWluAGFkbWlucHc=',
  });
  t.deepEqual(dec('authenticate LOGIN'), { verb: 'AUTHENTICATE', mechanism: 'LOGIN', initial: null });
  t.deepEqual(dec('AUTHENTICATE PLAIN ='), { verb: 'AUTHENTICATE', mechanism: 'PLAIN', initial: '=' });
  t.is(reply(dec('AUTHENTICATE')), 'BAD Missing required argument to Authenticate');
  t.is(reply(dec('AUTHENTICATE PLAIN a b')), 'BAD Unexpected extra arguments to Authenticate');
  t.is(reply(dec('AUTHENTICATE "PLAIN"')), 'BAD Invalid mechanism');
  t.is(reply(dec('AUTHENTICATE PL*IN')), 'BAD Invalid mechanism');
});

// ---------------------------------------------------------------------------
// Parse failures of GET / APPLY / RESTORE

test('unparsable GET/APPLY/RESTORE lines', (t) => {
  expectEach(t, refusal(), [
    ['APPLY %(A)x', 'BAD IMAP_PROTOCOL_ERROR Failed to parse APPLY line'],
    ['GET USER a b', 'BAD IMAP_PROTOCOL_ERROR Failed to parse GET line'],
    ['GET', 'BAD IMAP_PROTOCOL_ERROR Failed to parse GET line'],
    ['APPLY FORCE', 'BAD IMAP_PROTOCOL_ERROR Failed to parse APPLY line'],
    ['RESTORE (x)', 'BAD IMAP_PROTOCOL_ERROR Failed to parse RESTORE line'],
    ['APPLY (A) B', 'BAD IMAP_PROTOCOL_ERROR Failed to parse APPLY line'],
  ]);
  // backupd: parse failure => missing argument, trailing junk => extra arguments
  expectEach(t, refusal(backup), [
    ['APPLY %(A)x', 'BAD Missing required argument to Apply'],
    ['GET', 'BAD Missing required argument to Get'],
    ['GET USER a b', 'BAD Unexpected extra arguments to Get'],
  ]);
});

test('unknown sub-commands', (t) => {
  const protocolError = 'NO IMAP_PROTOCOL_ERROR Protocol error';
  expectEach(t, refusal(), [
    ['GET FROB x', protocolError],
    ['APPLY FROB %()', protocolError],
    ['RESTORE UNMAILBOX x', protocolError],
  ]);
  expectEach(t, refusal(backup), [
    ['APPLY EXPUNGE %(MBOXNAME a UNIQUEID b UID (1))', protocolError],
    ['APPLY LOCAL_MAILBOX %(MBOXNAME a)', protocolError],
    ['GET FETCH %(MBOXNAME a)', protocolError],
  ]);
});

// ---------------------------------------------------------------------------
// GET

test('GET sub-commands', (t) => {
  t.deepEqual(dec('GET USER fixt'), { verb: 'GET', sub: 'USER', userid: 'fixt' });
  t.deepEqual(dec('get user fixt'), { verb: 'GET', sub: 'USER', userid: 'fixt' });
  t.deepEqual(dec('GET USER fixt', backup), { verb: 'GET', sub: 'USER', userid: 'fixt' });
  t.deepEqual(dec('GET META "a b"'), { verb: 'GET', sub: 'META', userid: 'a b' });
  t.deepEqual(dec('GET MAILBOXES (user.fixt "user.fixt.a b")'), got('MAILBOXES', {
    names: ['user.fixt', 'user.fixt.a b'],
  }));
  t.deepEqual(dec('GET UNIQUEIDS (u1 u2)'), { verb: 'GET', sub: 'UNIQUEIDS', uniqueids: ['u1', 'u2'] });
  t.deepEqual(dec('GET FULLMAILBOX user.fixt'), { verb: 'GET', sub: 'FULLMAILBOX', mboxname: 'user.fixt' });
  t.deepEqual(dec('GET QUOTA user.fixt'), { verb: 'GET', sub: 'QUOTA', root: 'user.fixt' });
  t.deepEqual(dec('GET ANNOTATION ""'), { verb: 'GET', sub: 'ANNOTATION', mboxname: '' });
  t.deepEqual(dec(`GET FETCH %(MBOXNAME user.fixt PARTITION default UNIQUEID u1 GUID ${G2} UID 7)`), got('FETCH', {
    mboxname: 'user.fixt',
    partition: 'default',
    uniqueid: 'u1',
    guid: G2.toLowerCase(),
    uid: 7,
  }));
  t.deepEqual(dec('GET FETCH_SIEVE %(USERID fixt FILENAME a.script)'), got('FETCH_SIEVE', {
    userid: 'fixt',
    filename: 'a.script',
  }));
});

test('GET with missing or bad operands', (t) => {
  const bp = 'NO IMAP_PROTOCOL_BAD_PARAMETERS';
  // sync_server looks up a NULL name and finds nothing (checked against the real one)
  t.deepEqual(dec('GET USER NIL'), { verb: 'GET', sub: 'USER', userid: '' });
  t.deepEqual(dec('GET USER (a)'), { verb: 'GET', sub: 'USER', userid: '' });
  t.is(reply(dec('GET USER NIL', backup)), 'NO IMAP_PROTOCOL_BAD_PARAMETERS Bad parameters');
  t.deepEqual(dec('GET MAILBOXES x'), { verb: 'GET', sub: 'MAILBOXES', names: [] });
  t.is(reply(dec('GET MAILBOXES x', backup)), 'NO IMAP_PROTOCOL_ERROR Protocol error');
  t.is(reply(dec('GET FETCH %(MBOXNAME a PARTITION p UNIQUEID u UID 1)')), bp);
  t.is(reply(dec(`GET FETCH %(MBOXNAME a PARTITION p UNIQUEID u GUID ${G1}0 UID 1)`)), bp);
  t.is(reply(dec(`GET FETCH %(MBOXNAME a PARTITION p UNIQUEID u GUID ${G1} UID x)`)), bp);
  t.is(reply(dec(`GET FETCH %(MBOXNAME a PARTITION p UNIQUEID u GUID ${G1} UID 4294967296)`)), bp);
  t.is(reply(dec('GET FETCH_SIEVE %(USERID a)')), bp);
  t.is(getOf(dec('GET MAILBOXES NIL')).sub, 'MAILBOXES');
});

// ---------------------------------------------------------------------------
// APPLY

test('APPLY RESERVE', (t) => {
  t.deepEqual(dec(`APPLY RESERVE %(PARTITION default MBOXNAME (user.fixt user.fixt.Sent) GUID (${G1} ${G2}))`), applied('RESERVE', {
    partition: 'default',
    mboxnames: ['user.fixt', 'user.fixt.Sent'],
    guids: [G1, G2.toLowerCase()],
  }));
  t.is(reply(dec(`APPLY RESERVE %(PARTITION default GUID (${G1}))`)), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(reply(dec('APPLY RESERVE %(PARTITION default MBOXNAME () GUID (abc))')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(reply(dec(`APPLY RESERVE %(MBOXNAME () GUID (${G1}))`, backup)), 'NO IMAP_PROTOCOL_ERROR Protocol error');
  // backupd's reserve_one skips members that are not guids
  t.deepEqual(dec(`APPLY RESERVE %(PARTITION default MBOXNAME (user.a) GUID (abc ${G1}))`, backup), applied('RESERVE', {
    partition: 'default',
    mboxnames: ['user.a'],
    guids: [G1],
  }));
});

test('APPLY MESSAGE keeps file literals and skips NIL', (t) => {
  const c = applyOf(dec('APPLY MESSAGE (%{default a9993e364706816aba3e25717850c26c9cd0d89d 3}\r\nabc NIL)'));
  t.is(c.sub, 'MESSAGE');
  if (c.sub !== 'MESSAGE') return;
  t.is(c.files.length, 1);
  t.is(c.files[0]!.guid, 'a9993e364706816aba3e25717850c26c9cd0d89d');
  t.is(c.files[0]!.sha1, 'a9993e364706816aba3e25717850c26c9cd0d89d');
  t.is(c.files[0]!.size, 3);
  t.is(reply(dec('APPLY MESSAGE (NIL)', backup)), 'NO IMAP_PROTOCOL_ERROR Protocol error');
  t.deepEqual(applyOf(dec('APPLY MESSAGE ()')), { verb: 'APPLY', sub: 'MESSAGE', files: [] });
});

const MAILBOX_FULL =
  'APPLY MAILBOX %(UNIQUEID 0o7r6qcclw87n6m5t3aptmjp MBOXNAME user.fixt SYNC_CRC 4004776112 SYNC_CRC_ANNOT 49809256 ' +
  'LAST_UID 6 HIGHESTMODSEQ 14 RECENTUID 6 RECENTTIME 1795357012 LAST_APPENDDATE 1795357012 POP3_LAST_LOGIN 0 ' +
  'POP3_SHOW_AFTER 0 UIDVALIDITY 1795357013 PARTITION default ACL "fixt\tlrswipkxtecdan\t" OPTIONS P QUOTAROOT user.fixt ' +
  'CREATEDMODSEQ 1 FOLDERMODSEQ 3 ANNOTATIONS (%(ENTRY /comment USERID "" MODSEQ 0 VALUE "set by admin")) ' +
  `RECORD (%(UID 1 MODSEQ 10 LAST_UPDATED 1795357012 FLAGS (\\Seen $Forwarded) INTERNALDATE 1795357012 SIZE 1509 GUID ${G1} ` +
  'ANNOTATIONS (%(ENTRY /vendor/cmu/cyrus-imapd/thrid USERID NIL VALUE 00a1b2c3d4e5f607))) ' +
  `%(UID 2 MODSEQ 12 LAST_UPDATED 1795357013 FLAGS () INTERNALDATE 1795357013 SIZE 1485 GUID ${G2})))`;

function mailboxOf(c: Command): MailboxIn {
  const a = applyOf(c);
  if (a.sub !== 'MAILBOX') throw new Error('not MAILBOX');
  return a.mailbox;
}

test('APPLY MAILBOX: full form', (t) => {
  const c = applyOf(dec(MAILBOX_FULL));
  t.is(c.sub === 'MAILBOX' && c.local, false);
  const m = mailboxOf(c);
  t.is(m.uniqueid, '0o7r6qcclw87n6m5t3aptmjp');
  t.is(m.mboxname, 'user.fixt');
  t.is(m.mboxtype, null);
  t.is(m.highestmodseq, 14n);
  t.is(m.syncCrc, 4004776112);
  t.is(m.syncCrcAnnot, 49809256);
  t.is(m.lastUid, 6);
  t.is(m.recentTime, 1795357012);
  t.is(m.uidvalidity, 1795357013);
  t.is(m.acl, 'fixt\tlrswipkxtecdan\t');
  t.is(m.options, 'P');
  t.is(m.quotaroot, 'user.fixt');
  t.is(m.createdmodseq, 1n);
  t.is(m.foldermodseq, 3n);
  t.is(m.pop3ShowAfter, 0);
  t.is(m.sinceModseq, undefined);
  t.is(m.badRecord, undefined);
  t.deepEqual(m.annotations, [{ entry: '/comment', userid: '', modseq: 0n, value: { kind: 'buffer', value: Buffer.from('set by admin') } }]);
  t.is(m.records!.length, 2);
  t.deepEqual(m.records![0], {
    uid: 1,
    modseq: 10n,
    lastUpdated: 1795357012,
    flags: ['\\Seen', '$Forwarded'],
    internaldate: 1795357012,
    size: 1509,
    guid: G1,
    annotations: [
      // 3.0 form: no MODSEQ, USERID NIL
      { entry: '/vendor/cmu/cyrus-imapd/thrid', userid: '', modseq: 0n, value: { kind: 'buffer', value: Buffer.from('00a1b2c3d4e5f607') } },
    ],
  });
  t.is(m.records![1]!.guid, G2.toLowerCase());
  t.is(m.records![1]!.annotations, null);
  t.true(mailboxOf(dec(MAILBOX_FULL.replace('APPLY MAILBOX', 'apply local_mailbox'))).mboxname === 'user.fixt');
  const local = applyOf(dec(MAILBOX_FULL.replace('APPLY MAILBOX', 'APPLY LOCAL_MAILBOX')));
  t.true(local.sub === 'MAILBOX' && local.local);
});

test('APPLY MAILBOX: placeholder and deleted short forms', (t) => {
  const m = mailboxOf(dec('APPLY MAILBOX %(UNIQUEID u1 MBOXNAME user.fixt.Archive MBOXTYPE i HIGHESTMODSEQ 4 CREATEDMODSEQ 2 FOLDERMODSEQ 3)'));
  t.deepEqual(m, { uniqueid: 'u1', mboxname: 'user.fixt.Archive', mboxtype: 'i', highestmodseq: 4n, createdmodseq: 2n, foldermodseq: 3n });
  const d = mailboxOf(dec('APPLY MAILBOX %(UNIQUEID u2 MBOXNAME DELETED.user.x.1 MBOXTYPE ed HIGHESTMODSEQ 9)'));
  t.is(d.mboxtype, 'ed');
  t.is(d.records, undefined);
});

test('APPLY MAILBOX: validation order and failures', (t) => {
  const bp = 'NO IMAP_PROTOCOL_BAD_PARAMETERS';
  t.is(reply(dec('APPLY MAILBOX %(MBOXNAME a HIGHESTMODSEQ 1)')), bp);
  t.is(reply(dec('APPLY MAILBOX %(UNIQUEID u MBOXNAME a HIGHESTMODSEQ x MBOXTYPE i)')), bp);
  // a non-placeholder needs the rest
  t.is(reply(dec('APPLY MAILBOX %(UNIQUEID u MBOXNAME a HIGHESTMODSEQ 1)')), bp);
  t.is(reply(dec(MAILBOX_FULL.replace(' RECORD (', ' XRECORD ('))), bp);
  t.is(reply(dec(MAILBOX_FULL.replace('LAST_UID 6', 'LAST_UID -6'))), bp);
  t.is(reply(dec(MAILBOX_FULL.replace('ACL "fixt', 'XACL "fixt'))), bp);
  t.is(reply(dec(MAILBOX_FULL.replace('VALUE "set by admin"', 'XVALUE "set by admin"'))), bp, 'bad mailbox annotation');
  // sieve-store folder only with SIEVE-MAILBOX, when the caller says
  const sieve = 'APPLY MAILBOX %(UNIQUEID u MBOXNAME user.x.#sieve MBOXTYPE f HIGHESTMODSEQ 1)';
  t.is(reply(dec(sieve, { profile: 'sync', sieveMailbox: false })), bp);
  t.is(reply(dec(sieve, { profile: 'sync', sieveMailbox: true })), bp, 'then the full field set is required');
  // malformed optional numbers are ignored, as dlist_get* ignores them
  t.is(mailboxOf(dec(MAILBOX_FULL.replace('SYNC_CRC 4004776112', 'SYNC_CRC x'))).syncCrc, 0);
  // backupd needs MBOXNAME only, and says Protocol error
  t.is(mailboxOf(dec('APPLY MAILBOX %(MBOXNAME user.fixt)', backup)).mboxname, 'user.fixt');
  t.is(reply(dec('APPLY MAILBOX %(UNIQUEID u)', backup)), 'NO IMAP_PROTOCOL_ERROR Protocol error');
  t.is(reply(dec('APPLY mailbox %(MBOXNAME user.fixt)', backup)), 'NO IMAP_PROTOCOL_ERROR Protocol error');
});

test('APPLY MAILBOX: a bad RECORD is flagged, the good ones kept', (t) => {
  const m = mailboxOf(dec(MAILBOX_FULL.replace('SIZE 1485', 'SIZE big')));
  t.true(m.badRecord);
  t.is(m.records!.length, 1);
  t.true(mailboxOf(dec(MAILBOX_FULL.replace(`GUID ${G1}`, 'GUID 1234'))).badRecord);
  t.true(mailboxOf(dec(MAILBOX_FULL.replace('RECORD (%(UID 1', 'RECORD (x %(UID 1'))).badRecord);
  t.true(mailboxOf(dec(MAILBOX_FULL.replace('FLAGS ()', 'FLAGS x'))).badRecord);
});

test('APPLY UNMAILBOX / RENAME / EXPUNGE', (t) => {
  t.deepEqual(dec('APPLY UNMAILBOX user.fixt.Old'), { verb: 'APPLY', sub: 'UNMAILBOX', local: false, mboxname: 'user.fixt.Old' });
  t.deepEqual(dec('APPLY LOCAL_UNMAILBOX user.fixt.Old'), { verb: 'APPLY', sub: 'UNMAILBOX', local: true, mboxname: 'user.fixt.Old' });
  // both real servers go on with a NIL name (NONEXISTENT / OK Success)
  t.deepEqual(dec('APPLY UNMAILBOX NIL'), { verb: 'APPLY', sub: 'UNMAILBOX', local: false, mboxname: '' });
  t.deepEqual(dec('APPLY UNMAILBOX NIL', backup), { verb: 'APPLY', sub: 'UNMAILBOX', local: false, mboxname: '' });
  t.deepEqual(dec('APPLY RENAME %(OLDMBOXNAME a NEWMBOXNAME b PARTITION default UIDVALIDITY 5)'), applied('RENAME', {
    local: false,
    oldname: 'a',
    newname: 'b',
    partition: 'default',
    uidvalidity: 5,
  }));
  const lr = applyOf(dec('APPLY LOCAL_RENAME %(OLDMBOXNAME a NEWMBOXNAME b PARTITION default)'));
  t.true(lr.sub === 'RENAME' && lr.local && lr.uidvalidity === null);
  t.is(reply(dec('APPLY RENAME %(OLDMBOXNAME a NEWMBOXNAME b)')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(applyOf(dec('APPLY RENAME %(OLDMBOXNAME a NEWMBOXNAME b)', backup)).sub, 'RENAME');
  t.is(reply(dec('APPLY RENAME %(OLDMBOXNAME a)', backup)), 'NO IMAP_PROTOCOL_ERROR Protocol error');
  t.deepEqual(dec('APPLY EXPUNGE %(MBOXNAME a UNIQUEID u UID (1 2 30))'), applied('EXPUNGE', {
    mboxname: 'a',
    uniqueid: 'u',
    uids: [1, 2, 30],
  }));
  t.is(reply(dec('APPLY EXPUNGE %(MBOXNAME a UNIQUEID u UID (1 x))')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(reply(dec('APPLY EXPUNGE %(MBOXNAME a UID (1))')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
});

test('APPLY QUOTA / UNQUOTA', (t) => {
  t.deepEqual(dec('APPLY QUOTA %(ROOT user.fixt LIMIT 102400 STORAGE 102400 MODSEQ 4)'), applied('QUOTA', {
    quota: { root: 'user.fixt', limits: { STORAGE: 102400 }, modseq: 4n },
  }));
  t.deepEqual(dec('APPLY QUOTA %(ROOT r LIMIT 4294967295)'), applied('QUOTA', {
    quota: { root: 'r', limits: {}, modseq: null },
  }));
  t.deepEqual(dec('APPLY QUOTA %(ROOT r LIMIT 5 MESSAGE 7 X-NUM-FOLDERS 3 MAILBOX 4 X-ANNOTATION-STORAGE 9)'), applied('QUOTA', {
    quota: { root: 'r', limits: { STORAGE: 5, MESSAGE: 7, 'X-NUM-FOLDERS': 4, 'X-ANNOTATION-STORAGE': 9 }, modseq: null },
  }));
  t.is(reply(dec('APPLY QUOTA %(LIMIT 5)')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(applyOf(dec('APPLY QUOTA %(LIMIT 5)', backup)).sub, 'QUOTA', 'backupd ignores QUOTA');
  t.deepEqual(dec('APPLY UNQUOTA user.fixt'), { verb: 'APPLY', sub: 'UNQUOTA', root: 'user.fixt' });
  t.is(reply(dec('APPLY UNQUOTA user.fixt', backup)), 'NO IMAP_PROTOCOL_ERROR Protocol error');
});

test('APPLY SUB / UNSUB / SEEN', (t) => {
  t.deepEqual(dec('APPLY SUB %(USERID fixt MBOXNAME user.fixt.Sent)'), applied('SUB', {
    userid: 'fixt',
    mboxname: 'user.fixt.Sent',
  }));
  t.deepEqual(dec('APPLY UNSUB %(USERID fixt MBOXNAME user.fixt.Sent)', backup), applied('UNSUB', {
    userid: 'fixt',
    mboxname: 'user.fixt.Sent',
  }));
  t.is(reply(dec('APPLY SUB %(USERID fixt)')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.deepEqual(dec('APPLY SEEN %(USERID fixt UNIQUEID u LASTREAD 10 LASTUID 3 LASTCHANGE 11 SEENUIDS "")'), applied('SEEN', {
    seen: { userid: 'fixt', uniqueid: 'u', lastread: 10, lastuid: 3, lastchange: 11, seenuids: '' },
  }));
  t.is(reply(dec('APPLY SEEN %(USERID fixt UNIQUEID u LASTREAD 10 LASTCHANGE 11 SEENUIDS 1:3)')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(applyOf(dec('APPLY SEEN %(USERID fixt)', backup)).sub, 'SEEN');
});

test('APPLY ANNOTATION / UNANNOTATION: map values are binary', (t) => {
  t.deepEqual(dec('APPLY ANNOTATION %(MBOXNAME "" ENTRY /comment USERID "" VALUE {3+}\r\na\0b)'), applied('ANNOTATION', {
    mboxname: '',
    entry: '/comment',
    userid: '',
    value: { kind: 'buffer', value: Buffer.from('a\0b', 'latin1') },
  }));
  t.deepEqual(dec('APPLY UNANNOTATION %(MBOXNAME x ENTRY /comment USERID fixt)'), applied('UNANNOTATION', {
    mboxname: 'x',
    entry: '/comment',
    userid: 'fixt',
  }));
  t.is(reply(dec('APPLY ANNOTATION %(MBOXNAME x ENTRY /comment USERID fixt)')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(reply(dec('APPLY UNANNOTATION %(MBOXNAME x ENTRY {3+}\r\na\0b USERID fixt)')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS', 'NUL in a string field');
});

test('APPLY SIEVE family', (t) => {
  t.deepEqual(dec('APPLY SIEVE %(USERID fixt FILENAME v.script LAST_UPDATE 1711230000 CONTENT {5+}\r\nkeep;)'), applied('SIEVE', {
    userid: 'fixt',
    filename: 'v.script',
    lastUpdate: 1711230000,
    content: { kind: 'buffer', value: Buffer.from('keep;') },
  }));
  t.is(reply(dec('APPLY SIEVE %(USERID fixt FILENAME v.script CONTENT x)')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.deepEqual(dec('APPLY UNSIEVE %(USERID fixt FILENAME v.script)'), { verb: 'APPLY', sub: 'UNSIEVE', userid: 'fixt', filename: 'v.script' });
  t.deepEqual(dec('APPLY ACTIVATE_SIEVE %(USERID fixt FILENAME v.bc)'), applied('ACTIVATE_SIEVE', {
    userid: 'fixt',
    filename: 'v.bc',
  }));
  t.is(reply(dec('APPLY ACTIVATE_SIEVE %(USERID fixt)')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.deepEqual(dec('APPLY UNACTIVATE_SIEVE %(USERID fixt)'), { verb: 'APPLY', sub: 'UNACTIVATE_SIEVE', userid: 'fixt' });
  t.is(reply(dec('APPLY UNACTIVATE_SIEVE %()')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(reply(dec('APPLY SIEVE %(FILENAME x)', backup)), 'NO IMAP_PROTOCOL_ERROR Protocol error');
});

test('a big literal value becomes a staged BinaryValue', (t) => {
  const body = Buffer.alloc(2000, 0x61);
  const lines = parseCommandLines(
    Buffer.concat([
      Buffer.from('APPLY SIEVE %(USERID fixt FILENAME v.script LAST_UPDATE 1 CONTENT {2000+}\r\n'),
      body,
      Buffer.from(')\r\n'),
    ]),
    { sink: memoryBodySink(), limits: { smallLiteralThreshold: 1000 } },
  );
  const c = applyOf(decodeCommand(lines[0]!, { profile: 'sync' }));
  if (c.sub !== 'SIEVE') return t.fail();
  t.is(c.content.kind, 'staged');
  if (c.content.kind === 'staged') {
    t.is(c.content.size, 2000);
    t.deepEqual((c.content.body as { ref: Buffer }).ref, body);
  }
});

test('APPLY UNUSER / FORCE / CAPABILITIES', (t) => {
  t.deepEqual(dec('APPLY UNUSER fixt'), { verb: 'APPLY', sub: 'UNUSER', local: false, userid: 'fixt' });
  t.deepEqual(dec('APPLY LOCAL_UNUSER fixt'), { verb: 'APPLY', sub: 'UNUSER', local: true, userid: 'fixt' });
  t.deepEqual(dec('APPLY UNUSER ""'), { verb: 'APPLY', sub: 'UNUSER', local: false, userid: '' });
  t.deepEqual(dec('APPLY FORCE %()'), { verb: 'APPLY', sub: 'FORCE' });
  t.is(reply(dec('APPLY FORCE %()', backup)), 'NO IMAP_PROTOCOL_ERROR Protocol error');
  t.deepEqual(dec('APPLY CAPABILITIES (SIEVE-MAILBOX REPLICATION-ARCHIVE)'), applied('CAPABILITIES', {
    names: ['SIEVE-MAILBOX', 'REPLICATION-ARCHIVE'],
  }));
  t.deepEqual(dec('APPLY CAPABILITIES ()'), { verb: 'APPLY', sub: 'CAPABILITIES', names: [] });
  t.deepEqual(dec('apply capabilities (SIEVE-MAILBOX)'), { verb: 'APPLY', sub: 'CAPABILITIES', names: ['SIEVE-MAILBOX'] });
});

test('RESTORE MAILBOX needs only MBOXNAME', (t) => {
  const c = dec('RESTORE MAILBOX %(MBOXNAME user.fixt UNIQUEID u LAST_UID 3)');
  t.is(c.verb, 'RESTORE');
  if (c.verb !== 'RESTORE') return;
  t.is(c.sub, 'MAILBOX');
  t.is(c.mailbox!.mboxname, 'user.fixt');
  t.is(c.mailbox!.lastUid, 3);
  t.is(reply(dec('RESTORE LOCAL_MAILBOX %(UNIQUEID u)')), 'NO IMAP_PROTOCOL_BAD_PARAMETERS');
});

test('a line that failed to parse is refused even when its verb is known', (t) => {
  const lines = parseCommandLines(Buffer.from('APPLY MESSAGE (%x)\r\n'));
  const c = decodeCommand(lines[0]!, { profile: 'sync' });
  t.is(reply(c), 'BAD IMAP_PROTOCOL_ERROR Failed to parse APPLY line');
  t.is(c.verb === 'REFUSED' ? c.error?.code : null, 'IMAP_PROTOCOL_ERROR');
});

// ---------------------------------------------------------------------------
// Robustness: any line decodes to a command or a refusal, never an exception

import fc from 'fast-check';
import type { CommandLine, DlistValue } from '../transforms/dlist-types.js';

const word = fc.constantFrom('GET', 'APPLY', 'RESTORE', 'get', 'Apply', 'NOOP', 'AUTHENTICATE', 'COMPRESS', 'EXIT', 'C01', 'STARTTLS', 'X');
const sub = fc.constantFrom(
  'USER', 'META', 'MAILBOXES', 'UNIQUEIDS', 'FULLMAILBOX', 'QUOTA', 'ANNOTATION', 'FETCH', 'FETCH_SIEVE', 'RESERVE', 'MESSAGE',
  'MAILBOX', 'LOCAL_MAILBOX', 'UNMAILBOX', 'RENAME', 'EXPUNGE', 'UNQUOTA', 'SUB', 'UNSUB', 'SEEN', 'UNANNOTATION', 'SIEVE',
  'UNSIEVE', 'ACTIVATE_SIEVE', 'UNACTIVATE_SIEVE', 'UNUSER', 'FORCE', 'CAPABILITIES', 'CAPABILITY', 'mailbox',
);
const keyName = fc.constantFrom(
  'UNIQUEID', 'MBOXNAME', 'MBOXTYPE', 'HIGHESTMODSEQ', 'PARTITION', 'LAST_UID', 'RECENTUID', 'RECENTTIME', 'LAST_APPENDDATE',
  'POP3_LAST_LOGIN', 'UIDVALIDITY', 'ACL', 'OPTIONS', 'RECORD', 'ANNOTATIONS', 'UID', 'MODSEQ', 'FLAGS', 'GUID', 'SIZE',
  'INTERNALDATE', 'LAST_UPDATED', 'ENTRY', 'USERID', 'VALUE', 'ROOT', 'LIMIT', 'FILENAME', 'CONTENT', 'OLDMBOXNAME',
  'NEWMBOXNAME', 'SYNC_CRC', 'QUOTAROOT', 'USERFLAGS', 'LASTREAD', 'LASTUID', 'LASTCHANGE', 'SEENUIDS', 'LAST_UPDATE',
);
const text = fc.oneof(
  fc.constantFrom('0', '1', '4294967295', '4294967296', '18446744073709551616', 'i', 'f', 'd', 'NIL', '', '-1', '0123456789abcdef0123456789abcdef01234567'),
  fc.string({ maxLength: 8 }),
);
const anyValue: fc.Arbitrary<DlistValue> = fc.letrec<{ v: DlistValue }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    text.map((value) => ({ kind: 'atom', value }) as DlistValue),
    text.map((value) => ({ kind: 'quoted', value }) as DlistValue),
    text.map((s) => ({ kind: 'literal', value: Buffer.from(s, 'latin1') }) as DlistValue),
    fc.constant<DlistValue>({ kind: 'nil' }),
    fc.constant<DlistValue>({ kind: 'flag', value: '\\Seen' }),
    fc.constant<DlistValue>({ kind: 'bigliteral', size: 5, sha1: 'a'.repeat(40), body: null }),
    fc.constant<DlistValue>({ kind: 'file', partition: 'p', guid: 'a'.repeat(40), size: 1, sha1: 'b'.repeat(40), body: null }),
    fc.array(tie('v'), { maxLength: 4 }).map((items) => ({ kind: 'list', items }) as DlistValue),
    fc.array(fc.tuple(keyName, tie('v')), { maxLength: 6 }).map((kv) => ({ kind: 'kvlist', items: kv.map(([key, value]) => ({ key, value })) }) as DlistValue),
  ),
})).v;

test('property: every line decodes to a typed command or a refusal line', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(word, fc.option(sub, { nil: undefined }), fc.array(anyValue, { maxLength: 3 }), fc.constantFrom<'sync' | 'backup'>('sync', 'backup'), (verb, s, rest, profile) => {
        const args: DlistValue[] = s === undefined ? rest : [{ kind: 'atom', value: s }, ...rest];
        const line: CommandLine = { verb, args, bodies: [] };
        const c = decodeCommand(line, { profile });
        // IMAP_INTERNAL would mean the decoder threw and was caught.
        if (c.verb === 'REFUSED') return /^(\S+ )?(BAD|NO) \S/.test(c.reply) && c.error !== undefined && c.error.code !== 'IMAP_INTERNAL';
        return typeof c.verb === 'string';
      }),
      { numRuns: 5000 },
    ),
  );
});

test('APPLY carries its operand exactly as parsed', (t) => {
  const lines = parseCommandLines(Buffer.from('APPLY SUB %(USERID fixt MBOXNAME user.fixt.Sent)\r\n', 'latin1'));
  const c = decodeCommand(lines[0]!, { profile: 'sync' });
  t.is(c.verb, 'APPLY');
  t.is((c as ApplyCommand).raw, lines[0]!.args[1]);
  t.like((c as ApplyCommand).raw, { kind: 'kvlist' });
});
