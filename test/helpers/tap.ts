/**
 * Reader for `.tap` session recordings (and Cyrus telemetry / `sync_client -v -v`
 * logs, which use the same framing): chunks start with `>UNIXTIME>` or
 * `<UNIXTIME<` followed by the exact bytes, up to the next marker. Lines that
 * are not protocol bytes (`---------- ...` session separators and, outside
 * telemetry, interleaved `sync_client[pid]: ...` syslog lines) sit between
 * chunks, at line starts. Mirrors split_chunks()/streams() of the capture
 * tooling's peer_wire.py so both read a recording identically.
 */
import { readFileSync } from 'node:fs';

export type Direction = 'C' | 'S';

export interface TapChunk {
  /** 'C' client to server, 'S' server to client. */
  dir: Direction;
  /** Unix time of the chunk. */
  time: number;
  data: Buffer;
}

export interface TapStreams {
  /** Everything the client sent, in order. */
  client: Buffer;
  /** Everything the server sent, in order. */
  server: Buffer;
}

const MARK = /([<>])(\d{9,11})\1/y;
const MARK_ANY = /([<>])(\d{9,11})\1/g;
const SYSLOG = /[\w.@/-]*sync_client\[\d+\]: [^\n]*\n/g;
const SEPARATOR = /---------- [^\n]*\n/g;
const SYSLOG_AT = /[\w.@/-]*sync_client\[\d+\]: [^\n]*\n/y;
const SEPARATOR_AT = /---------- [^\n]*\n/y;

/** First match of rx in text[start, end) that begins at a line start. */
function lineStartMatch(rx: RegExp, text: string, start: number, end: number): number {
  rx.lastIndex = start;
  for (;;) {
    const m = rx.exec(text);
    if (m === null || m.index >= end) return end;
    if (m.index + m[0].length > end) {
      // Python's search(data, start, end) only matches wholly inside the window.
      rx.lastIndex = m.index + 1;
      continue;
    }
    if (m.index === start || text.charCodeAt(m.index - 1) === 10) return m.index;
    rx.lastIndex = m.index + 1;
  }
}

/**
 * Split a recording into chunks and notes. `telemetry`: a Cyrus server
 * telemetry file, where `<` marks what the server read (client to server).
 */
export function splitChunks(data: Buffer, telemetry = false): { chunks: TapChunk[]; notes: string[] } {
  // latin1: one char per octet, so string indexes are byte offsets.
  const text = data.toString('latin1');
  const chunks: TapChunk[] = [];
  const notes: string[] = [];
  let pos = 0;
  while (pos < text.length) {
    MARK.lastIndex = pos;
    const m = MARK.exec(text);
    if (m !== null) {
      const d = m[1];
      const dir: Direction = telemetry ? (d === '<' ? 'C' : 'S') : (d === '>' ? 'C' : 'S');
      pos = m.index + m[0].length;
      MARK_ANY.lastIndex = pos;
      const next = MARK_ANY.exec(text);
      let end = next === null ? text.length : next.index;
      end = Math.min(
        telemetry ? end : lineStartMatch(SYSLOG, text, pos, end),
        lineStartMatch(SEPARATOR, text, pos, end),
      );
      chunks.push({ dir, time: Number(m[2]), data: data.subarray(pos, end) });
      pos = end;
      continue;
    }
    let matched = false;
    for (const rx of [SEPARATOR_AT, SYSLOG_AT]) {
      rx.lastIndex = pos;
      const s = rx.exec(text);
      if (s !== null) {
        notes.push(s[0].trimEnd());
        pos += s[0].length;
        matched = true;
        break;
      }
    }
    if (!matched) {
      const nl = text.indexOf('\n', pos);
      const end = nl < 0 ? text.length : nl + 1;
      notes.push(text.slice(pos, end).trimEnd());
      pos = end;
    }
  }
  return { chunks, notes };
}

/** Join the chunks of each direction in order. */
export function streams(chunks: TapChunk[]): TapStreams {
  return {
    client: Buffer.concat(chunks.filter((c) => c.dir === 'C').map((c) => c.data)),
    server: Buffer.concat(chunks.filter((c) => c.dir === 'S').map((c) => c.data)),
  };
}

/** Read a `.tap` file into its two byte streams (and the chunks, in order). */
export function readTap(path: string, telemetry = false): TapStreams & { chunks: TapChunk[]; notes: string[] } {
  const { chunks, notes } = splitChunks(readFileSync(path), telemetry);
  return { ...streams(chunks), chunks, notes };
}
