/**
 * `cyrsync cyr-backup`: the Cyrus 3.6 `cyr_backup` inspection tool as a
 * drop-in (same options, modes, commands and output), plus `--at TIME` on
 * list, show and json: the backup as it was at TIME, replayed from the data
 * file (pit.ts) instead of read from the index.
 *
 *   cyr-backup [-C FILE] [-v] [-f|-m|-u] [--at TIME] BACKUP COMMAND SUB [ARGS]
 *
 * Like cyr_backup it waits for the backup's lock and quick-verifies it
 * first. Output is written piece by piece with backpressure; message bodies
 * and chunks are streamed from the data file, never held whole.
 */
import { Writable } from 'node:stream';
import { defineCommand, formatHelp } from '../../cli-args.js';
import type { Config } from '../../config.js';
import { catalogFromIndex, catalogFromView, mailboxesOf, type Catalog, type CatMailbox } from './catalog.js';
import {
  EX_OK, EX_TEMPFAIL, EX_USAGE, errorText, fixed, internalName, janssonText, loadToolConfig, localTime, modeOfFlag, modeOptions, modeUsage, openToolBackup,
  resolveTargets, TOOL_OPTIONS, write, type JValue, type Mode, type ToolBackup,
} from './common.js';
import { messageBody, parseTime, viewAt } from './pit.js';
import type { ToolIO } from './ctl-backups.js';

/** cyr_backup's mode flags. */
const CYR_MODES = 'fmu';

export const CYR_USAGE = `Usage:
    cyr-backup [options] [mode] backup list chunks
    cyr-backup [options] [mode] backup list mailboxes
    cyr-backup [options] [mode] backup list messages
    cyr-backup [options] [mode] backup list all
    cyr-backup [options] [mode] backup show chunks id...
    cyr-backup [options] [mode] backup show mailboxes [mboxname | uniqueid]...
    cyr-backup [options] [mode] backup show messages guid...
    cyr-backup [options] [mode] backup dump chunk id
    cyr-backup [options] [mode] backup dump message guid
    cyr-backup [options] [mode] backup json chunks
    cyr-backup [options] [mode] backup json mailboxes
    cyr-backup [options] [mode] backup json messages
    cyr-backup [options] [mode] backup json headers guid...

Commands:
    list                # list specified items
    show                # show detailed information for specified items
    dump                # show entire item
    json                # show detailed information in json format

Options:
    -C alt_config       # alternate config file
    -v                  # verbose
    --at TIME           # list, show, json: the backup as it was at TIME
                        # (ISO 8601 or Unix time)

Modes:
${modeUsage(CYR_MODES, false)}`;

export const CYR_SPEC = defineCommand({
  name: 'cyr-backup',
  summary: 'Cyrus cyr_backup: list, show, dump and json of one backup (--at TIME: as it was then)',
  description: 'The Cyrus 3.6 cyr_backup, same options, modes, commands and output, plus --at TIME on list, show and json.',
  options: {
    ...TOOL_OPTIONS,
    ...modeOptions(CYR_MODES, false),
    at: { long: 'at', type: 'string', value: 'TIME', help: 'the backup as it was at TIME (ISO 8601 or Unix time)' },
  },
  positionals: { name: 'BACKUP COMMAND SUB [ARGS...]', min: 3 },
  epilog: CYR_USAGE,
});

interface CyrOptions {
  config?: string;
  verbose: number;
  mode: Mode;
  at: number | null;
  words: string[];
}

class Usage extends Error {}

function parseCyrArgs(argv: string[]): CyrOptions | 'help' {
  const o: CyrOptions = { verbose: 0, mode: 'user', at: null, words: [] };
  let modeSet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help') return 'help';
    if (a === '--at' || a.startsWith('--at=')) {
      const v = a === '--at' ? argv[++i] : a.slice(5);
      if (v === undefined) throw new Usage();
      o.at = parseTime(v);
      continue;
    }
    if (o.words.length > 0 || !a.startsWith('-') || a === '-') {
      o.words.push(a);
      continue;
    }
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      if (c === 'C') {
        o.config = a.length > j + 1 ? a.slice(j + 1) : argv[++i];
        if (o.config === undefined) throw new Usage();
        break;
      }
      const mode = modeOfFlag(c, CYR_MODES);
      if (c === 'v') o.verbose++;
      else if (mode !== null) {
        if (modeSet) throw new Usage();
        modeSet = true;
        o.mode = mode;
      } else throw new Usage();
    }
  }
  return o;
}

const VALID: Record<string, string[]> = {
  list: ['chunks', 'mailboxes', 'messages', 'all'],
  show: ['mailboxes', 'messages'],
  dump: ['chunk', 'message'],
  json: ['chunks', 'mailboxes', 'messages', 'headers'],
};

export async function runCyrBackup(argv: string[], io: ToolIO = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let o: CyrOptions | 'help';
  try {
    o = parseCyrArgs(argv);
  } catch (err) {
    if (!(err instanceof Usage)) {
      io.stderr.write(`cyr-backup: ${errorText(err)}\n`);
      return EX_USAGE;
    }
    o = { verbose: 0, mode: 'user', at: null, words: [] };
  }
  if (o === 'help') {
    io.stdout.write(formatHelp(CYR_SPEC));
    return EX_OK;
  }
  const [name, cmd, sub, ...args] = o.words;
  const needsArgs = (cmd === 'show' || cmd === 'dump' || (cmd === 'json' && sub === 'headers'));
  if (name === undefined || cmd === undefined || sub === undefined || !VALID[cmd]?.includes(sub) || (needsArgs && args.length === 0) ||
      (cmd === 'dump' && args.length !== 1) || (o.at !== null && cmd === 'dump')) {
    io.stderr.write(CYR_USAGE);
    return EX_USAGE;
  }
  const config = loadToolConfig(o.config, io.stderr);
  if (typeof config === 'number') return config;
  const quiet = new Writable({ write: (_c, _e, cb) => cb() });
  const { targets } = resolveTargets(config, o.mode, [name], quiet);
  if (targets.length === 0) {
    // What cyr_backup 3.6.1 prints for a backup missing from backups.db.
    io.stderr.write(`${name}: Unknown code ____ 251\n`);
    return EX_TEMPFAIL;
  }
  let b: ToolBackup;
  try {
    b = await openToolBackup(targets[0]!.fname, { wait: true });
  } catch (err) {
    io.stderr.write(`${name}: ${errorText(err)}\n`);
    return EX_TEMPFAIL;
  }
  try {
    if (o.verbose > 0) {
      const last = b.index.latestChunk();
      if (last !== null) io.stdout.write(`checking chunk ${last.id} checksums...\nok\n`);
    }
    const cat = o.at === null ? catalogFromIndex(b.index, b.lock.fd) : catalogFromView(await viewAt(b.lock.fd, o.at, { name: b.lock.path }), b.index, b.lock.fd);
    const ok = await runCommand(b, cat, cmd, sub, args, config, io);
    if (!ok) {
      io.stderr.write(`${name}: Item does not exist\n`);
      return EX_TEMPFAIL;
    }
    return EX_OK;
  } catch (err) {
    io.stderr.write(`${name}: ${errorText(err)}\n`);
    return EX_TEMPFAIL;
  } finally {
    b.close();
  }
}

async function runCommand(b: ToolBackup, cat: Catalog, cmd: string, sub: string, args: string[], config: Config, io: ToolIO): Promise<boolean> {
  const out = io.stdout;
  switch (`${cmd} ${sub}`) {
    case 'list chunks':
      return listChunks(cat, out);
    case 'list mailboxes':
      return listMailboxes(cat, out);
    case 'list messages':
      for (const m of cat.messages) await write(out, `${m.guid}\n`);
      return true;
    case 'list all':
      io.stderr.write('listing chunks:\n');
      await listChunks(cat, out);
      io.stderr.write('\nlisting mailboxes:\n');
      await listMailboxes(cat, out);
      io.stderr.write('\nlisting messages:\n');
      for (const m of cat.messages) await write(out, `${m.guid}\n`);
      return true;
    case 'show mailboxes':
      return showMailboxes(cat, args.map((a) => internalName(a, config.settings.unixhierarchysep)), args, out);
    case 'show messages':
      return showMessages(b, cat, args, out);
    case 'dump chunk':
      return dumpChunk(b, cat, args[0]!, out);
    case 'dump message': {
      const m = cat.messages.find((x) => x.guid === args[0]!.toLowerCase());
      if (!m || m.chunkOffset === null) return false;
      return messageBody(b.lock.fd, { guid: m.guid, chunkOffset: m.chunkOffset }, out, b.lock.path);
    }
    case 'json chunks':
      await write(out, `${janssonText(cat.chunks.map((c) => ({ id: c.id, offset: c.offset, length: c.length, ratio: { real: (100 * c.compressed) / c.length }, 'start time': localTime(c.tsStart), 'end time': localTime(c.tsEnd) })))}\n`);
      return true;
    case 'json mailboxes':
      await write(out, `${janssonText(cat.mailboxes.map(mailboxJson))}\n`);
      return true;
    case 'json messages':
      await write(out, `${janssonText(cat.messages.map((m) => {
        const o: Record<string, JValue> = { guid: m.guid };
        const boxes = mailboxesOf(cat, m.guid);
        if (boxes.length > 0) o['mailboxes'] = boxes.map((x) => ({ uniqueid: x.uniqueid, mboxname: x.mboxname }));
        return o;
      }))}\n`);
      return true;
    case 'json headers':
      return jsonHeaders(b, cat, args, out);
    default:
      return false;
  }
}

function mailboxJson(m: CatMailbox): Record<string, JValue> {
  const o: Record<string, JValue> = { uniqueid: m.uniqueid, mboxname: m.mboxname, last_appenddate: localTime(m.lastAppenddate) };
  if (m.records.length > 0) {
    o['messages'] = m.records.map((r) => {
      const x: Record<string, JValue> = { uid: r.uid, guid: r.guid };
      if (r.expunged !== null) x['expunged'] = localTime(r.expunged);
      return x;
    });
  }
  return o;
}

async function listChunks(cat: Catalog, out: Writable): Promise<boolean> {
  await write(out, '     id offset\tlength\tratio%\tstart time           end time\n');
  for (const c of cat.chunks) {
    await write(out, `${String(c.id).padStart(7)} ${c.offset}\t${c.length}\t${fixed((100 * c.compressed) / c.length, 6, 1)}\t${localTime(c.tsStart)}  ${localTime(c.tsEnd)}\n`);
  }
  return true;
}

async function listMailboxes(cat: Catalog, out: Writable): Promise<boolean> {
  await write(out, `${'uniqueid'.padEnd(36)}  ${'last append date'.padEnd(19)}  mboxname\n`);
  for (const m of cat.mailboxes) await write(out, `${m.uniqueid}  ${localTime(m.lastAppenddate)}  ${m.mboxname}\n`);
  return true;
}

async function showMailboxes(cat: Catalog, names: string[], raw: string[], out: Writable): Promise<boolean> {
  for (let i = 0; i < names.length; i++) {
    const byName = cat.mailboxes.filter((m) => m.mboxname === names[i]);
    const m = byName.find((x) => x.deleted === null) ?? byName[byName.length - 1] ?? cat.mailboxes.find((x) => x.uniqueid === raw[i]);
    if (!m) continue;
    let s = `mboxname: ${m.mboxname}\nuniqueid: ${m.uniqueid}\n`;
    if (m.deleted !== null) s += `deleted:  ${localTime(m.deleted)}\n`;
    s += 'messages:\n       uid  expunged time        guid\n';
    await write(out, s);
    for (const r of m.records) await write(out, `${String(r.uid).padStart(10)}  ${r.expunged === null ? ' '.repeat(19) : localTime(r.expunged)}  ${r.guid}\n`);
    await write(out, '\n');
  }
  return true;
}

/** The header block of a message (up to the first empty line), read from the data file. */
async function headerBlock(b: ToolBackup, guid: string, chunkOffset: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let have = 0;
  let done = false;
  const sink = new Writable({
    write: (c: Buffer, _e, cb) => {
      if (!done && have < 1024 * 1024) {
        parts.push(c);
        have += c.length;
        if (/\r?\n\r?\n/.test(Buffer.concat(parts).toString('latin1'))) done = true;
      }
      cb();
    },
  });
  await messageBody(b.lock.fd, { guid, chunkOffset }, sink, b.lock.path);
  const all = Buffer.concat(parts);
  const m = /\r?\n\r?\n/.exec(all.toString('latin1'));
  return m ? all.subarray(0, m.index + m[0].indexOf('\n') + 1) : all;
}

async function showMessages(b: ToolBackup, cat: Catalog, guids: string[], out: Writable): Promise<boolean> {
  for (const g of guids.map((x) => x.toLowerCase())) {
    const m = cat.messages.find((x) => x.guid === g);
    if (!m || m.chunkOffset === null) continue;
    let s = `guid:\t${m.guid}\nmailboxes:\n`;
    for (const mb of mailboxesOf(cat, m.guid)) s += `\t${mb.uniqueid}\t${mb.mboxname}\n`;
    await write(out, `${s}headers:\n`);
    await write(out, await headerBlock(b, m.guid, m.chunkOffset));
    await write(out, '\n');
  }
  return true;
}

function parseHeaders(block: Buffer): Record<string, JValue> {
  const o: Record<string, string[]> = {};
  const text = block.toString('latin1').replace(/\r?\n[ \t]+/g, ' ');
  for (const line of text.split(/\r?\n/)) {
    const c = line.indexOf(':');
    if (c <= 0) continue;
    const k = line.slice(0, c);
    (o[k] ??= []).push(line.slice(c + 1).trim());
  }
  return o;
}

async function jsonHeaders(b: ToolBackup, cat: Catalog, guids: string[], out: Writable): Promise<boolean> {
  const o: Record<string, JValue> = {};
  for (const g of guids.map((x) => x.toLowerCase())) {
    const m = cat.messages.find((x) => x.guid === g);
    if (!m || m.chunkOffset === null) continue;
    o[m.guid] = parseHeaders(await headerBlock(b, m.guid, m.chunkOffset));
  }
  await write(out, `${janssonText(o)}\n`);
  return true;
}

/** The inflated chunk, streamed from its gzip member. */
async function dumpChunk(b: ToolBackup, cat: Catalog, idText: string, out: Writable): Promise<boolean> {
  const c = cat.chunks.find((x) => String(x.id) === idText);
  if (!c) return false;
  const { readMember } = await import('../../../sinks/backup/datafile.js');
  await readMember(b.lock.fd, c.offset, (piece) => write(out, piece));
  return true;
}
