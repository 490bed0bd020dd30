/**
 * Refusal texts checked against the real servers: every line below was sent
 * to the real Cyrus 3.6.1 (Debian 12 build) sync_server and backupd, TLS not
 * configured, after AUTHENTICATE as an administrator, and the reply that came
 * back is recorded next to it. decodeCommand must refuse each line with that
 * very reply. Lines whose reply depends on the store are not listed.
 *
 * Known difference, not listed: backupd answers `APPLY %(A)x` with
 * `BAD Unexpected extra arguments to Apply` (its key reader stops early);
 * we say `BAD Missing required argument to Apply` for every line the parser
 * rejects. `C01 CAPABILITY` is answered tagged on purpose (csync-wire §2.4).
 */
import test from 'ava';
import { decodeCommand } from '../src/protocol/commands.js';
import { memoryBodySink, parseCommandLines } from '../transforms/dlist-parser.js';

/** After authentication, both servers alike. */
const BOTH: [string, string][] = [
  ["", "BAD Null command"],
  ["NOOP x", "BAD Unexpected extra arguments to Noop"],
  ["RESTART 1", "BAD Unexpected extra arguments to Restart"],
  ["EXIT now", "BAD Unexpected extra arguments to Exit"],
  ["COMPRESS", "BAD Missing required argument to Compress"],
  ["COMPRESS DEFLATE x", "BAD Unexpected extra arguments to Compress"],
  ["STARTTLS", "BAD IMAP_PROTOCOL_ERROR Unrecognized command"],
  ["STARTTLS x", "BAD IMAP_PROTOCOL_ERROR Unrecognized command"],
  ["FROB x", "BAD IMAP_PROTOCOL_ERROR Unrecognized command"],
  ["GET FROB x", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY FROB %()", "NO IMAP_PROTOCOL_ERROR Protocol error"],
];

const SYNC_SERVER: [string, string][] = [
  ...BOTH,
  ["APPLY %(A)x", "BAD IMAP_PROTOCOL_ERROR Failed to parse APPLY line"],
  ["GET USER a b", "BAD IMAP_PROTOCOL_ERROR Failed to parse GET line"],
  ["GET", "BAD IMAP_PROTOCOL_ERROR Failed to parse GET line"],
  ["RESTORE (x)", "BAD IMAP_PROTOCOL_ERROR Failed to parse RESTORE line"],
  ["APPLY (A) B", "BAD IMAP_PROTOCOL_ERROR Failed to parse APPLY line"],
  ["RESTORE UNMAILBOX x", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["GET FETCH %(MBOXNAME a)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["GET FETCH_SIEVE %(USERID a)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY RESERVE %(PARTITION default GUID (x))", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY RESERVE %(PARTITION default MBOXNAME () GUID (abc))", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY MAILBOX %(MBOXNAME a HIGHESTMODSEQ 1)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY MAILBOX %(UNIQUEID u MBOXNAME a HIGHESTMODSEQ 1)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY mailbox %(MBOXNAME user.fixt)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY SEEN %(USERID x)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY QUOTA %(LIMIT 5)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY SUB %(USERID fixt)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY EXPUNGE %(MBOXNAME a UID (1))", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY RENAME %(OLDMBOXNAME a NEWMBOXNAME b)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY ANNOTATION %(MBOXNAME x ENTRY /comment USERID fixt)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY UNANNOTATION %(MBOXNAME x ENTRY /comment)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY SIEVE %(USERID fixt FILENAME v.script CONTENT x)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY UNSIEVE %(USERID fixt)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY ACTIVATE_SIEVE %(USERID fixt)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY UNACTIVATE_SIEVE %()", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
  ["APPLY LOCAL_MAILBOX %(MBOXNAME a)", "NO IMAP_PROTOCOL_BAD_PARAMETERS"],
];

const BACKUPD: [string, string][] = [
  ...BOTH,
  ["GET USER a b", "BAD Unexpected extra arguments to Get"],
  ["GET", "BAD Missing required argument to Get"],
  ["RESTORE (x)", "BAD IMAP_PROTOCOL_ERROR Unrecognized command"],
  ["APPLY (A) B", "BAD Missing required argument to Apply"],
  ["RESTORE UNMAILBOX x", "BAD IMAP_PROTOCOL_ERROR Unrecognized command"],
  ["RESTORE MAILBOX %(MBOXNAME user.nobody)", "BAD IMAP_PROTOCOL_ERROR Unrecognized command"],
  ["GET USER NIL", "NO IMAP_PROTOCOL_BAD_PARAMETERS Bad parameters"],
  ["GET MAILBOXES x", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["GET FETCH %(MBOXNAME a)", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["GET FETCH_SIEVE %(USERID a)", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["GET QUOTA nobody", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["GET ANNOTATION user.nobody", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY RESERVE %(PARTITION default GUID (x))", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY mailbox %(MBOXNAME user.fixt)", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY SUB %(USERID fixt)", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY EXPUNGE %(MBOXNAME a UID (1))", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY ANNOTATION %(MBOXNAME x ENTRY /comment USERID fixt)", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY UNANNOTATION %(MBOXNAME x ENTRY /comment)", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY UNQUOTA x", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY FORCE %()", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY CAPABILITIES ()", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY CAPABILITIES (SIEVE-MAILBOX)", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY MESSAGE (NIL)", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY MESSAGE ()", "NO IMAP_PROTOCOL_ERROR Protocol error"],
  ["APPLY LOCAL_MAILBOX %(MBOXNAME a)", "NO IMAP_PROTOCOL_ERROR Protocol error"],
];

/** Before authentication, both servers. */
const PRE_AUTH: [string, string][] = [
  ['AUTHENTICATE', 'BAD Missing required argument to Authenticate'],
  ['AUTHENTICATE "PLAIN"', 'BAD Invalid mechanism'],
  ['AUTHENTICATE PL*IN', 'BAD Invalid mechanism'],
  ['NOOP x', 'BAD Unexpected extra arguments to Noop'],
];

function replyOf(wire: string, profile: 'sync' | 'backup'): string {
  const [line] = parseCommandLines(Buffer.from(wire + '\r\n', 'latin1'), { sink: memoryBodySink() });
  const c = decodeCommand(line!, { profile, starttls: false });
  return c.verb === 'REFUSED' ? c.reply : `(accepted as ${c.verb})`;
}

for (const [profile, table] of [
  ['sync', [...SYNC_SERVER, ...PRE_AUTH]],
  ['backup', [...BACKUPD, ...PRE_AUTH]],
] as const) {
  test(`${profile}: refusals equal the real server's replies`, (t) => {
    for (const [wire, real] of table) t.is(replyOf(wire, profile), real, JSON.stringify(wire));
  });
}
