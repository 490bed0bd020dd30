import test from 'ava';
import fc from 'fast-check';
import { CommandError, type CyrusCode } from '../transforms/errors.js';
import {
  ancestors,
  belongsToUser,
  compareMailboxNames,
  deletedUserPrefix,
  mailboxOwner,
  parseMailboxName,
  useridToInbox,
  validateFilename,
  validateGuid,
  validateMailboxName,
  validatePartition,
  validateUserid,
  MAX_MAILBOX_NAME,
} from '../src/protocol/names.js';
import { MAILBOX_OWNERS } from './helpers/mailbox-owners.js';
import { expectEach } from './helpers/tables.js';

test('userid -> INBOX name', (t) => {
  t.is(useridToInbox('fixt'), 'user.fixt');
  t.is(useridToInbox('bob.smith'), 'user.bob^smith');
  t.is(useridToInbox('bob.smith@example.com'), 'example.com!user.bob^smith');
  t.is(useridToInbox('bob@example.com', { defaultDomain: 'example.com' }), 'user.bob');
});

test('owner of a mailbox name, DELETED namespace and #sieve included', (t) => {
  expectEach(t, (name: string) => mailboxOwner(name), MAILBOX_OWNERS);
  const p = parseMailboxName('DELETED.user.fixt.Archive.2024.6B02F957');
  t.true(p.deleted);
  t.false(p.isInbox);
  t.true(parseMailboxName('user.fixt').isInbox);
  t.false(parseMailboxName('user.fixt.Sent').isInbox);
});

test('user membership and ancestors', (t) => {
  t.true(belongsToUser('user.fixt', 'fixt'));
  t.true(belongsToUser('user.fixt.Sent', 'fixt'));
  t.true(belongsToUser('DELETED.user.fixt.5F00', 'fixt'));
  t.false(belongsToUser('user.fixtx', 'fixt'));
  t.false(belongsToUser('DELETED.user.fixtx.5F00', 'fixt'));
  t.is(deletedUserPrefix('bob@example.com'), 'example.com!DELETED.user.bob.');
  t.deepEqual(ancestors('user.fixt.Archive.2024'), ['user.fixt.Archive', 'user.fixt', 'user']);
  t.deepEqual(ancestors('d.org!user.a.b'), ['d.org!user.a', 'd.org!user']);
});

test('Cyrus list order: children follow their parent', (t) => {
  const names = ['user.fixt.Archive-x', 'user.fixt.Archive.2024', 'user.fixt.Archive', 'user.fixt', 'user.fixt.#sieve'];
  t.deepEqual([...names].sort(compareMailboxNames), [
    'user.fixt',
    'user.fixt.#sieve',
    'user.fixt.Archive',
    'user.fixt.Archive.2024',
    'user.fixt.Archive-x',
  ]);
});

function rejects(t: import('ava').ExecutionContext, fn: () => unknown, code: CyrusCode): void {
  const err = t.throws(fn, { instanceOf: CommandError });
  t.is(err?.code, code);
  t.true((err?.message.length ?? 0) > 10);
}

test('bad names are refused with a code and plain words', (t) => {
  for (const bad of ['user..fixt', '.user', 'user.', 'user/fixt', 'user.a\x00b', 'user.a\nb', 'a'.repeat(MAX_MAILBOX_NAME + 1), '', '!user.x']) {
    rejects(t, () => validateMailboxName(bad), 'IMAP_MAILBOX_BADNAME');
  }
  rejects(t, () => validateMailboxName(undefined), 'IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(validateMailboxName('DELETED.user.fixt.Archive.2024.6B02F957'), 'DELETED.user.fixt.Archive.2024.6B02F957');
  t.is(validateMailboxName('user.fixt.#sieve'), 'user.fixt.#sieve');
  t.is(validateMailboxName('a'.repeat(MAX_MAILBOX_NAME)).length, MAX_MAILBOX_NAME);
  for (const bad of ['..', '../etc', 'a/b', 'a\x00', '', 'x!y']) rejects(t, () => validateUserid(bad), 'IMAP_MAILBOX_BADNAME');
  t.is(validateUserid('', true), '');
  t.is(validateUserid('bob.smith@example.com'), 'bob.smith@example.com');
  for (const bad of ['..', '../x', 'a/b', 'a b', '', 'p\x01']) rejects(t, () => validatePartition(bad), 'IMAP_MAILBOX_BADNAME');
  t.is(validatePartition('default'), 'default');
  for (const bad of ['..', '../x.script', 'a/b.script', '', 'a\x00.script']) rejects(t, () => validateFilename(bad), 'IMAP_MAILBOX_BADNAME');
  t.is(validateFilename('peer.script'), 'peer.script');
  rejects(t, () => validateGuid('xyz'), 'IMAP_PROTOCOL_BAD_PARAMETERS');
  rejects(t, () => validateGuid('../../../../etc/passwd0000000000000000000'), 'IMAP_PROTOCOL_BAD_PARAMETERS');
  t.is(validateGuid('88A5E5E7814C2ACD9184051C4E7C01DE36B67884'), '88a5e5e7814c2acd9184051c4e7c01de36b67884');
});

test('property: validated names never contain path escapes; userid <-> INBOX round-trips', (t) => {
  t.notThrows(() => fc.assert(
    fc.property(fc.string({ maxLength: 40 }), (s) => {
      try {
        const v = validateMailboxName(s);
        // eslint-disable-next-line no-control-regex -- control octets are what the names must not hold
        return !v.includes('/') && !v.includes('..') && !/[\x00-\x1f]/.test(v);
      } catch (e) {
        return e instanceof CommandError;
      }
    }),
  ));
  t.notThrows(() => fc.assert(
    fc.property(fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/), (local) => {
      if (local.includes('..')) return true;
      return mailboxOwner(useridToInbox(local)) === local;
    }),
  ));
});
