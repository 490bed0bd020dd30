/**
 * The twoskip record codec (lib/cyrusdb_twoskip.c of Cyrus 3.6.1): the
 * constants of the format, the 64-octet header and the record heads, as pure
 * functions over Buffers.
 *
 * File: a 64-octet big-endian header (magic, version 1, generation, record
 * count, repack size, committed size, flags, CRC32), then records: type
 * (`=` dummy, `+` record, `-` delete, `$` commit), level, u16 key length,
 * u32 value length (0xFFFF / 0xFFFFFFFF => a u64 follows), level+1 u64
 * forward pointers, CRC32 of the head, CRC32 of key+value+padding, key,
 * value, zero padding to 8. Level 0 has two alternating pointers
 * (nextloc[0], nextloc[1]); logical level i > 0 is nextloc[i+1].
 */
import * as fs from 'node:fs';
import { crc32 } from 'node:zlib';
import { CyrsyncError } from '../../transforms/errors.js';

export const MAXLEVEL = 31;
export const HEADER_SIZE = 64;
export const DUMMY_OFFSET = HEADER_SIZE;
export const MAXRECORDHEAD = (MAXLEVEL + 5) * 8;
export const BLOCKSIZE = 512;
export const VERSION = 1;
export const DIRTY = 1;
/** Default wait for another process's lock on a database file. */
export const DEFAULT_LOCK_TIMEOUT_MS = 20_000;
/** Checkpoint (rewrite) threshold of cyrusdb_twoskip.c. */
export const MINREWRITE = 16834;

export const DUMMY = 0x3d; /* = */
export const RECORD = 0x2b; /* + */
export const DELETE = 0x2d; /* - */
export const COMMIT = 0x24; /* $ */

export const MAGIC = Buffer.concat([Buffer.from([0xa1, 0x02, 0x8b, 0x0d]), Buffer.from('twoskip file\0\0\0\0', 'latin1')]);
/** Padding that keeps a record head inside one 512-octet block. */
export const BLANK = Buffer.from(' BLANK\x07\xa0', 'latin1');

/** Where the header fields are. */
const OFFSET = { VERSION: 20, GENERATION: 24, NUM_RECORDS: 32, REPACK_SIZE: 40, CURRENT_SIZE: 48, FLAGS: 56, CRC32: 60 } as const;

export interface Header {
  version: number;
  generation: bigint;
  numRecords: number;
  repackSize: number;
  currentSize: number;
  flags: number;
}

export interface Rec {
  offset: number;
  len: number;
  type: number;
  level: number;
  keylen: number;
  vallen: number;
  nextloc: number[];
  crcHead: number;
  crcTail: number;
  keyoffset: number;
  valoffset: number;
}

export function emptyRec(): Rec {
  return {
    offset: 0, len: 0, type: 0, level: 0, keylen: 0, vallen: 0,
    nextloc: new Array<number>(MAXLEVEL + 1).fill(0), crcHead: 0, crcTail: 0, keyoffset: 0, valoffset: 0,
  };
}

export function roundup(n: number, howfar: number): number {
  return n % howfar ? n + howfar - (n % howfar) : n;
}

/** bsearch_ncompare_raw: memcmp, then the shorter first. */
export function compareRaw(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

export function corrupt(file: string, what: string): CyrsyncError {
  return new CyrsyncError('IMAP_IOERROR', `twoskip ${file}: ${what}`);
}

export function toBuf(v: Buffer | string): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'latin1') : v;
}

function u64(b: Buffer, off: number): number {
  const v = b.readBigUInt64BE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('64-bit value beyond 2^53');
  return Number(v);
}

/** The header of a file (`file` names it in errors): magic, version and CRC checked. */
export function decodeHeader(b: Buffer, file: string): Header {
  if (!b.subarray(0, 20).equals(MAGIC)) throw corrupt(file, 'invalid magic header (not a twoskip file)');
  const version = b.readUInt32BE(OFFSET.VERSION);
  if (version > VERSION) throw corrupt(file, `version mismatch: version ${version}`);
  const crc = b.readUInt32BE(OFFSET.CRC32);
  if (crc32(b.subarray(0, OFFSET.CRC32)) !== crc) throw corrupt(file, 'header CRC failure');
  return {
    version,
    generation: b.readBigUInt64BE(OFFSET.GENERATION),
    numRecords: u64(b, OFFSET.NUM_RECORDS),
    repackSize: u64(b, OFFSET.REPACK_SIZE),
    currentSize: u64(b, OFFSET.CURRENT_SIZE),
    flags: b.readUInt32BE(OFFSET.FLAGS),
  };
}

export function encodeHeader(h: Header): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(b, 0);
  b.writeUInt32BE(h.version, OFFSET.VERSION);
  b.writeBigUInt64BE(h.generation, OFFSET.GENERATION);
  b.writeBigUInt64BE(BigInt(h.numRecords), OFFSET.NUM_RECORDS);
  b.writeBigUInt64BE(BigInt(h.repackSize), OFFSET.REPACK_SIZE);
  b.writeBigUInt64BE(BigInt(h.currentSize), OFFSET.CURRENT_SIZE);
  b.writeUInt32BE(h.flags >>> 0, OFFSET.FLAGS);
  b.writeUInt32BE(crc32(b.subarray(0, OFFSET.CRC32)), OFFSET.CRC32);
  return b;
}

/**
 * The record whose head starts `head` (read at `offset` of a file of `size`
 * octets): lengths, pointers and CRCs, the head CRC checked.
 */
export function decodeRecordHead(head: Buffer, offset: number, size: number, file: string): Rec {
  const r = emptyRec();
  r.offset = offset;
  r.type = head[0]!;
  r.level = head[1]!;
  r.keylen = head.readUInt16BE(2);
  r.vallen = head.readUInt32BE(4);
  let p = 8;
  if (r.level > MAXLEVEL) throw corrupt(file, `invalid level ${r.level} at ${offset}`);
  if (r.keylen === 0xffff) {
    r.keylen = u64(head, p);
    p += 8;
  }
  if (r.vallen === 0xffffffff) {
    r.vallen = u64(head, p);
    p += 8;
  }
  r.len = p + 8 * (1 + r.level) + 8 + roundup(r.keylen + r.vallen, 8);
  if (offset + r.len > size) throw corrupt(file, `record at ${offset} runs past the end of the file`);
  for (let i = 0; i <= r.level; i++) {
    r.nextloc[i] = u64(head, p);
    p += 8;
  }
  r.crcHead = head.readUInt32BE(p);
  r.crcTail = head.readUInt32BE(p + 4);
  r.keyoffset = offset + p + 8;
  r.valoffset = r.keyoffset + r.keylen;
  if (crc32(head.subarray(0, p)) !== r.crcHead) throw corrupt(file, `checksum head error at ${offset}`);
  return r;
}

/** prepare_record: the head (everything before key/value); sets the new head CRC in `r`. */
export function encodeRecordHead(r: Rec): Buffer {
  const b = Buffer.alloc(MAXRECORDHEAD);
  b[0] = r.type;
  b[1] = r.level;
  let len = 8;
  if (r.keylen < 0xffff) b.writeUInt16BE(r.keylen, 2);
  else {
    b.writeUInt16BE(0xffff, 2);
    b.writeBigUInt64BE(BigInt(r.keylen), len);
    len += 8;
  }
  if (r.vallen < 0xffffffff) b.writeUInt32BE(r.vallen, 4);
  else {
    b.writeUInt32BE(0xffffffff, 4);
    b.writeBigUInt64BE(BigInt(r.vallen), len);
    len += 8;
  }
  for (let i = 0; i <= r.level; i++) {
    b.writeBigUInt64BE(BigInt(r.nextloc[i]!), len);
    len += 8;
  }
  r.crcHead = crc32(b.subarray(0, len));
  b.writeUInt32BE(r.crcHead, len);
  b.writeUInt32BE(r.crcTail >>> 0, len + 4);
  len += 8;
  return b.subarray(0, len);
}

/** Key, value and zero padding to 8: the tail of a record, covered by its tail CRC. */
export function encodeRecordTail(key: Buffer, val: Buffer): Buffer {
  const tail = Buffer.alloc(roundup(key.length + val.length, 8));
  key.copy(tail, 0);
  val.copy(tail, key.length);
  return tail;
}

/**
 * True when the file starts with `magic` (20 octets: twoskip and skiplist
 * alike). The descriptor is opened and closed here: callers make sure this
 * process holds no lock on the file that closing it would drop.
 */
export function fileStartsWith(file: string, magic: Buffer): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    const b = Buffer.alloc(magic.length);
    return fs.readSync(fd, b, 0, magic.length, 0) === magic.length && b.equals(magic);
  } finally {
    fs.closeSync(fd);
  }
}
