/**
 * Internal mailbox names and the user who owns each (null: no user, a
 * shared mailbox), for the tests of the functions that derive an owner:
 * mailboxOwner (src/protocol/names.ts) and the backup's ownerOfMailbox
 * (sinks/backup/paths.ts), which names the unowned `%SHARED`.
 */
export const MAILBOX_OWNERS: readonly (readonly [string, string | null])[] = [
  ['user.bob', 'bob'],
  ['user.bob.Sent', 'bob'],
  ['user.fixt.Archive.2024', 'fixt'],
  ['user.fixt.#sieve', 'fixt'],
  ['user.bob^smith.Sent', 'bob.smith'],
  ['user.john^smith.Drafts', 'john.smith'],
  ['example.com!user.bob.Sent', 'bob@example.com'],
  ['example.com!user.anne.Trash', 'anne@example.com'],
  ['DELETED.user.fixt.Archive.2024.6B02F957', 'fixt'],
  ['DELETED.user.bob.Archive.5F1A2B3C', 'bob'],
  ['example.com!DELETED.user.bob.5F00AA', 'bob@example.com'],
  ['shared.folder', null],
  ['user', null],
];
