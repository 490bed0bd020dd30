/**
 * Reply texts: the exact lines of Cyrus 3.6.1 sync_response (sync profile)
 * and backupd_response (backup profile); every NO line carrying a code is
 * recognised by a client's prefix match (`<code> `) except the bare
 * IMAP_PROTOCOL_BAD_PARAMETERS that sync_server itself prints.
 */
import test from 'ava';
import { CommandError, CyrsyncError, type CyrusCode } from '../transforms/errors.js';
import {
  badExtraArguments,
  badFailedToParse,
  badMissingArgument,
  codeOfReply,
  cyrusVerbName,
  enabledItem,
  greetingLines,
  lsubItem,
  messageNilItem,
  missingItem,
  noFromError,
  okSuccess,
} from '../src/protocol/replies.js';
import { serializeItem } from '../transforms/serializer.js';

const err = (code: CyrusCode): CyrsyncError => new CommandError(code, 'detail');

test('success texts per profile', (t) => {
  t.is(okSuccess('sync'), 'OK success');
  t.is(okSuccess('backup'), 'OK Success');
  t.is(okSuccess(), 'OK success');
});

test('noFromError: sync_response texts', (t) => {
  const table: [CyrusCode, string][] = [
    ['IMAP_INVALID_USER', 'NO IMAP_INVALID_USER No Such User'],
    ['IMAP_MAILBOX_NONEXISTENT', 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox'],
    ['IMAP_MAILBOX_LOCKED', 'NO IMAP_MAILBOX_LOCKED Mailbox locked'],
    ['IMAP_MAILBOX_MOVED', 'NO IMAP_MAILBOX_MOVED Mailbox exists with another name or uniqueid'],
    ['IMAP_MAILBOX_NOTSUPPORTED', 'NO IMAP_MAILBOX_NOTSUPPORTED Operation is not supported on mailbox'],
    ['IMAP_SYNC_CHECKSUM', 'NO IMAP_SYNC_CHECKSUM Checksum Failure'],
    ['IMAP_SYNC_CHANGED', 'NO IMAP_SYNC_CHANGED Changed since last sync'],
    ['IMAP_SYNC_BADSIEVE', 'NO IMAP_SYNC_BADSIEVE Sieve script compilation failure'],
    ['IMAP_PROTOCOL_ERROR', 'NO IMAP_PROTOCOL_ERROR Protocol error'],
    ['IMAP_PROTOCOL_BAD_PARAMETERS', 'NO IMAP_PROTOCOL_BAD_PARAMETERS'],
    ['IMAP_IOERROR', 'NO Unknown error'],
    ['IMAP_INTERNAL', 'NO Unknown error'],
    ['IMAP_MAILBOX_EXISTS', 'NO Unknown error'],
  ];
  for (const [code, line] of table) {
    t.is(noFromError(err(code)), line, code);
    if (line.startsWith('NO IMAP_') && code !== 'IMAP_PROTOCOL_BAD_PARAMETERS') t.is(codeOfReply(line), code);
  }
  t.is(noFromError(null), 'NO Unknown error');
  // a full disk names itself in both profiles (the real servers say `NO Unknown error`)
  const full = new CommandError('IMAP_NOSPACE', 'No space left on the replica disk while staging a message');
  t.is(noFromError(full), 'NO IMAP_NOSPACE No space left on the replica disk while staging a message');
  t.is(noFromError(full, 'backup'), 'NO IMAP_NOSPACE No space left on the replica disk while staging a message');
  t.is(noFromError(new CommandError('IMAP_NOSPACE', 'a\r\nb\u00e9' + 'x'.repeat(300))).length, 'NO IMAP_NOSPACE '.length + 200);
  t.is(noFromError({ code: 'IMAP_NOSPACE' }), 'NO IMAP_NOSPACE No space left on the disk');
  t.is(noFromError({ code: 'ENOENT' }), 'NO Unknown error');
});

test('noFromError: backupd_response texts', (t) => {
  t.is(noFromError(err('IMAP_MAILBOX_LOCKED'), 'backup'), 'NO IMAP_MAILBOX_LOCKED Mailbox locked');
  t.is(noFromError(err('IMAP_MAILBOX_NONEXISTENT'), 'backup'), 'NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox');
  t.is(noFromError(err('IMAP_PROTOCOL_ERROR'), 'backup'), 'NO IMAP_PROTOCOL_ERROR Protocol error');
  t.is(noFromError(err('IMAP_PROTOCOL_BAD_PARAMETERS'), 'backup'), 'NO IMAP_PROTOCOL_BAD_PARAMETERS Bad parameters');
  t.is(noFromError(err('IMAP_SYNC_CHECKSUM'), 'backup'), 'NO Unknown error');
  t.is(noFromError(err('IMAP_INVALID_USER'), 'backup'), 'NO Unknown error');
});

test('verb-echoing BAD lines', (t) => {
  t.is(cyrusVerbName('NOOP'), 'Noop');
  t.is(cyrusVerbName('aUTHENTICATE'), 'Authenticate');
  t.is(badExtraArguments('EXIT'), 'BAD Unexpected extra arguments to Exit');
  t.is(badMissingArgument('compress'), 'BAD Missing required argument to Compress');
  t.is(badFailedToParse('RESTORE'), 'BAD IMAP_PROTOCOL_ERROR Failed to parse RESTORE line');
});

test('generic data lines', (t) => {
  const line = (it: { key: string; value: Parameters<typeof serializeItem>[1] }): string =>
    serializeItem(it.key, it.value).toString('latin1');
  t.is(line(enabledItem([])), 'ENABLED ()');
  t.is(line(enabledItem(['SIEVE-MAILBOX'])), 'ENABLED (SIEVE-MAILBOX)');
  t.is(line(missingItem(['0123456789ABCDEF0123456789ABCDEF01234567'])), 'MISSING (0123456789abcdef0123456789abcdef01234567)');
  t.is(line(lsubItem(['user.fixt.Sent', 'user.fixt.a b'])), 'LSUB (user.fixt.Sent "user.fixt.a b")');
  t.is(line(messageNilItem()), 'MESSAGE NIL');
});

test('greeting lines', (t) => {
  t.deepEqual(greetingLines({ profile: 'sync', hostname: 'h', version: '3.6.1', sasl: ['PLAIN'], starttls: true, compress: true, sieveMailbox: true }), [
    '* SASL PLAIN',
    '* STARTTLS',
    '* COMPRESS DEFLATE',
    '* SIEVE-MAILBOX',
    '* OK h Cyrus sync server 3.6.1',
  ]);
  t.deepEqual(greetingLines({ profile: 'backup', hostname: 'h', version: 'v', sasl: ['PLAIN'], sieveMailbox: true }), [
    '* SASL PLAIN',
    '* OK h Cyrus backup server v',
  ]);
  t.deepEqual(greetingLines({ profile: 'sync', hostname: 'h', version: 'v', sasl: ['PLAIN'], preauth: true }), ['* OK h Cyrus sync server v']);
});
