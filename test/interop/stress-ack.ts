/**
 * What a replica acknowledged in a recorded sync_client session (a cyrus-peer
 * `--tap` recording, decompressed): the commands paired in order with the
 * server's replies; those answered `OK` count. A session cut by a kill ends
 * in a partial command or a command without a reply: neither counts.
 */
import { memoryBodySink } from '../../transforms/dlist-parser.js';
import { decodeCommand } from '../../src/protocol/commands.js';
import { commandLines, serverResponses, tapStreams } from '../replica-helpers.js';

export interface Acknowledged {
  /** GUIDs of file literals in APPLY MESSAGE commands answered OK */
  guids: Set<string>;
  /** uniqueid -> highest HIGHESTMODSEQ of an APPLY MAILBOX answered OK (minus folders later deleted with OK) */
  mailboxes: Map<string, bigint>;
}

export async function acknowledgedByReplica(tapFile: string): Promise<Acknowledged> {
  const { client, server } = tapStreams(tapFile);
  const statuses = serverResponses(server).map((r) => {
    const lines = r.toString('latin1').trimEnd().split('\r\n');
    return lines[lines.length - 1] ?? '';
  });
  const out: Acknowledged = { guids: new Set(), mailboxes: new Map() };
  const names = new Map<string, string>(); // mboxname -> uniqueid
  let i = 0;
  try {
    for await (const line of commandLines(client, () => memoryBodySink())) {
      const status = statuses[i++];
      if (status === undefined) break;
      if (!status.startsWith('OK')) continue;
      const cmd = decodeCommand(line, { profile: 'sync', sieveMailbox: true });
      if (cmd.verb !== 'APPLY') continue;
      if (cmd.sub === 'MESSAGE') {
        for (const f of cmd.files) out.guids.add(f.guid.toLowerCase());
      } else if (cmd.sub === 'MAILBOX') {
        const m = cmd.mailbox;
        names.set(m.mboxname, m.uniqueid);
        const prev = out.mailboxes.get(m.uniqueid) ?? 0n;
        if (m.highestmodseq > prev) out.mailboxes.set(m.uniqueid, m.highestmodseq);
      } else if (cmd.sub === 'UNMAILBOX') {
        const u = names.get(cmd.mboxname);
        if (u) out.mailboxes.delete(u);
      }
    }
  } catch {
    // the recording ends inside a command cut by the kill
  }
  return out;
}
