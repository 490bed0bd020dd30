/**
 * Records one IMAP session against a real Cyrus imapd into a `.tap` file
 * (`>TIME>` client to server, `<TIME<` server to client, exact bytes), for
 * test/imap.test.ts. The session: LOGIN, SELECT INBOX, an APPEND with a
 * synchronizing literal (waits for `+`), an APPEND with a LITERAL+ `{N+}`
 * literal, FETCH BODY[] of every message, a header-field FETCH, LOGOUT.
 *
 *   node --import=tsx test/helpers/imap-record.ts HOST:PORT USER PASSWORD OUT.tap
 *
 * With cyrus-peer: `cyrus-peer master start`, `cyrus-peer populate imaprec 3 2k --plain`,
 * then `... 127.0.0.1:14143 imaprec userpw test/fixtures/imap/append-fetch.tap`.
 */
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';

/** The two appended messages (deterministic, CRLF line ends, one with 8-bit octets). */
export function appendedMessages(): Buffer[] {
  const lines = (n: number) => Array.from({ length: n }, (_, i) => `line ${i} of the body, with {braces} and a literal-looking {12}`).join('\r\n');
  const m1 = Buffer.from([
    'From: Recorder <rec@example.org>',
    'To: imaprec@example.org',
    'Subject: synchronizing literal',
    'Date: Mon, 23 Nov 2026 10:00:00 +0000',
    'Message-ID: <sync-literal@example.org>',
    '',
    lines(40),
    '',
  ].join('\r\n'), 'latin1');
  const m2 = Buffer.concat([
    Buffer.from([
      'From: Recorder <rec@example.org>',
      'To: imaprec@example.org',
      'Subject: non-synchronizing literal',
      'Date: Mon, 23 Nov 2026 10:01:00 +0000',
      'Message-ID: <literal-plus@example.org>',
      'Content-Type: text/plain; charset=iso-8859-1',
      'Content-Transfer-Encoding: 8bit',
      '',
      '',
    ].join('\r\n'), 'latin1'),
    Buffer.from('caf\xe9 cr\xe8me br\xfbl\xe9e\r\n', 'latin1'),
    Buffer.from(lines(2000) + '\r\n', 'latin1'),
  ]);
  return [m1, m2];
}

async function main(): Promise<void> {
  const [target, user, password, out] = process.argv.slice(2);
  if (!target || !user || !password || !out) throw new Error('usage: imap-record.ts HOST:PORT USER PASSWORD OUT.tap');
  const [host, port] = target.split(':');
  const sock: Socket = connect(Number(port), host);
  const log: Buffer[] = [];
  const mark = (dir: '>' | '<') => Buffer.from(`${dir}${Math.floor(Date.now() / 1000)}${dir}`);
  let inbox = Buffer.alloc(0);
  let waiter: (() => void) | null = null;
  sock.on('data', (d: Buffer) => {
    log.push(mark('<'), d);
    inbox = Buffer.concat([inbox, d]);
    waiter?.();
  });
  const send = (b: Buffer | string) => {
    const buf = typeof b === 'string' ? Buffer.from(b, 'latin1') : b;
    log.push(mark('>'), buf);
    sock.write(buf);
  };
  /** Wait until the server has sent a line starting with `prefix` (literal-unaware: enough here). */
  const until = (prefix: string) => new Promise<void>((resolve) => {
    const check = () => {
      const text = inbox.toString('latin1');
      const at = text.startsWith(prefix) ? 0 : text.indexOf('\r\n' + prefix);
      if (at >= 0) {
        const end = text.indexOf('\r\n', at + 2 + prefix.length - (at === 0 ? 2 : 0));
        if (end >= 0) {
          inbox = inbox.subarray(end + 2);
          waiter = null;
          resolve();
        }
      }
    };
    waiter = check;
    check();
  });
  await new Promise<void>((resolve) => sock.once('connect', resolve));
  await until('* OK');
  send(`a1 LOGIN ${user} ${password}\r\n`);
  await until('a1 ');
  send('a2 SELECT INBOX\r\n');
  await until('a2 ');
  const [m1, m2] = appendedMessages() as [Buffer, Buffer];
  send(`a3 APPEND INBOX (\\Seen) {${m1.length}}\r\n`);
  await until('+ ');
  send(Buffer.concat([m1, Buffer.from('\r\n')]));
  await until('a3 ');
  send(Buffer.concat([Buffer.from(`a4 APPEND INBOX {${m2.length}+}\r\n`), m2, Buffer.from('\r\n')]));
  await until('a4 ');
  send('a5 FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])\r\n');
  await until('a5 ');
  send('a6 FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n');
  await until('a6 ');
  send('a7 LOGOUT\r\n');
  await until('a7 ');
  sock.end();
  await new Promise((resolve) => sock.once('close', resolve));
  writeFileSync(out, Buffer.concat([Buffer.from(`---------- imap session ${new Date().toUTCString()}\n`), ...log]));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
