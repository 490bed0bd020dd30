/**
 * Cyrus "twoskip" key/value databases, read and written byte-compatibly
 * with lib/cyrusdb_twoskip.c of Cyrus 3.6.1 (the default backend of
 * backups.db, backup-format §2.2).
 *
 * File: a 64-octet big-endian header (magic, version 1, generation,
 * record count, repack size, committed size, flags, CRC32), then records:
 * type (`=` dummy, `+` record, `-` delete, `$` commit), level, u16 key
 * length, u32 value length (0xFFFF / 0xFFFFFFFF => a u64 follows), level+1
 * u64 forward pointers, CRC32 of the head, CRC32 of key+value+padding, key,
 * value, zero padding to 8. Level 0 has two alternating pointers
 * (nextloc[0], nextloc[1]); logical level i > 0 is nextloc[i+1].
 *
 * The algorithms (relocate, store, delete, stitch, commit, recovery1, the
 * BLANK padding that keeps a record head inside one 512-octet block) are
 * ported from that file so that the real tools read what we write and we
 * read what they write, including after a crash mid-transaction.
 *
 * Locking follows lib/mappedfile.c: one descriptor per file per process
 * (fcntl locks are per process, and closing any descriptor drops them), a
 * shared lock for reads, an exclusive lock for a transaction, with the
 * inode re-check after locking (a checkpoint renames a new file over the
 * old one). The API is synchronous: backups.db transactions are short.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { CyrsyncError } from '../../transforms/errors.js';
import { lockFdSync, unlockFd } from './lock.js';

const MAXLEVEL = 31;
const HEADER_SIZE = 64;
const DUMMY_OFFSET = HEADER_SIZE;
const MAXRECORDHEAD = (MAXLEVEL + 5) * 8;
const BLOCKSIZE = 512;
const VERSION = 1;
const DIRTY = 1;
/** Checkpoint (rewrite) thresholds of cyrusdb_twoskip.c. */
const MINREWRITE = 16834;

const DUMMY = 0x3d; /* = */
const RECORD = 0x2b; /* + */
const DELETE = 0x2d; /* - */
const COMMIT = 0x24; /* $ */

const MAGIC = Buffer.concat([Buffer.from([0xa1, 0x02, 0x8b, 0x0d]), Buffer.from('twoskip file\0\0\0\0', 'latin1')]);
const BLANK = Buffer.from(' BLANK\x07\xa0', 'latin1');

const OFFSET_VERSION = 20;
const OFFSET_GENERATION = 24;
const OFFSET_NUM_RECORDS = 32;
const OFFSET_REPACK_SIZE = 40;
const OFFSET_CURRENT_SIZE = 48;
const OFFSET_FLAGS = 56;
const OFFSET_CRC32 = 60;

/** Default wait for another process's lock on the database file. */
const DEFAULT_LOCK_TIMEOUT_MS = 20_000;

interface Header {
  version: number;
  generation: bigint;
  numRecords: number;
  repackSize: number;
  currentSize: number;
  flags: number;
}

interface Rec {
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

function emptyRec(): Rec {
  return {
    offset: 0, len: 0, type: 0, level: 0, keylen: 0, vallen: 0,
    nextloc: new Array<number>(MAXLEVEL + 1).fill(0), crcHead: 0, crcTail: 0, keyoffset: 0, valoffset: 0,
  };
}

function roundup(n: number, howfar: number): number {
  return n % howfar ? n + howfar - (n % howfar) : n;
}

/** bsearch_ncompare_raw: memcmp, then the shorter first. */
export function compareRaw(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

function corrupt(file: string, what: string): CyrsyncError {
  return new CyrsyncError('IMAP_IOERROR', `twoskip ${file}: ${what}`);
}

function u64(b: Buffer, off: number): number {
  const v = b.readBigUInt64BE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('64-bit value beyond 2^53');
  return Number(v);
}

export interface TwoskipOpenOptions {
  /** Create the file (and its directory) when missing. */
  create?: boolean;
  /** How long to wait for another process's lock (default 20 s). */
  lockTimeoutMs?: number;
}

interface Loc {
  key: Buffer;
  isExact: boolean;
  record: Rec;
  backloc: number[];
  forwardloc: number[];
}

/** Open handles by resolved path: one descriptor per file per process. */
const openDbs = new Map<string, TwoskipDb>();

export class TwoskipDb {
  private fd: number;
  private header: Header = { version: VERSION, generation: 1n, numRecords: 0, repackSize: 0, currentSize: 0, flags: 0 };
  private end = 0;
  /** File size as last seen under the lock (grows with our appends). */
  private size = 0;
  private locked: 'none' | 'read' | 'write' = 'none';
  private refs = 1;
  private closed = false;
  private loc: Loc = { key: Buffer.alloc(0), isExact: false, record: emptyRec(), backloc: [], forwardloc: [] };

  private constructor(readonly path: string, fd: number, private readonly lockTimeoutMs: number) {
    this.fd = fd;
  }

  /**
   * Opens (and with `create`, creates) a database. A second open of the same
   * file in this process returns the same handle (reference counted), as
   * Cyrus's open_twoskip list does.
   */
  static open(file: string, opts: TwoskipOpenOptions = {}): TwoskipDb {
    const abs = path.resolve(file);
    const existing = openDbs.get(abs);
    if (existing && !existing.closed) {
      existing.refs++;
      return existing;
    }
    let fd: number;
    try {
      fd = fs.openSync(abs, fs.constants.O_RDWR);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !opts.create) {
        throw new CyrsyncError('IMAP_IOERROR', `cannot open ${abs}: ${(err as Error).message}`, { cause: err });
      }
      fs.mkdirSync(path.dirname(abs), { recursive: true, mode: 0o755 });
      fd = fs.openSync(abs, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    }
    const db = new TwoskipDb(abs, fd, opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS);
    try {
      db.initialise();
    } catch (err) {
      db.dispose();
      throw err;
    }
    openDbs.set(abs, db);
    return db;
  }

  /** opendb(): create the dummy and header of an empty file; recover a dirty one. */
  private initialise(): void {
    this.writeLock(false);
    try {
      if (this.size === 0) {
        const dummy = emptyRec();
        dummy.type = DUMMY;
        dummy.level = MAXLEVEL;
        this.end = DUMMY_OFFSET;
        this.writeRecord(dummy, Buffer.alloc(0), Buffer.alloc(0));
        this.header = { version: VERSION, generation: 1n, numRecords: 0, repackSize: this.end, currentSize: this.end, flags: 0 };
        this.commitHeader();
      }
      this.readHeader();
      if (!this.isClean()) this.recovery1();
    } finally {
      this.unlock();
    }
  }

  // ------------------------------------------------------------------ API

  get(key: Buffer | string): Buffer | null {
    const k = toBuf(key);
    this.readLock();
    try {
      this.relocate(k);
      if (!this.loc.isExact) return null;
      return this.pread(this.loc.record.valoffset, this.loc.record.vallen);
    } finally {
      this.unlock();
    }
  }

  /** Create or replace (CYRUSDB force semantics). Empty keys are refused, as by cyrusdb. */
  set(key: Buffer | string, value: Buffer | string): void {
    const k = toBuf(key);
    const v = toBuf(value);
    this.transaction((tx) => tx.set(k, v));
  }

  /** Remove; a missing key is not an error (force). */
  delete(key: Buffer | string): void {
    const k = toBuf(key);
    this.transaction((tx) => tx.delete(k));
  }

  /** Every live record in key order (a snapshot taken under one read lock). */
  entries(): Iterable<[Buffer, Buffer]> {
    this.readLock();
    try {
      return this.walk();
    } finally {
      this.unlock();
    }
  }

  /** Number of live records (header count). */
  count(): number {
    this.readLock();
    try {
      return this.header.numRecords;
    } finally {
      this.unlock();
    }
  }

  /**
   * Several changes in one commit under one exclusive lock. A throw aborts:
   * everything appended is cut off again (recovery1), as myabort does.
   */
  transaction<T>(fn: (tx: TwoskipTxn) => T): T {
    this.writeLock(true);
    let result: T;
    try {
      const tx: TwoskipTxn = {
        get: (k) => {
          this.relocate(toBuf(k));
          return this.loc.isExact ? this.pread(this.loc.record.valoffset, this.loc.record.vallen) : null;
        },
        set: (k, v) => this.skipwrite(toBuf(k), toBuf(v)),
        delete: (k) => this.skipwrite(toBuf(k), null),
      };
      result = fn(tx);
      this.commit();
    } catch (err) {
      try {
        this.abort();
      } finally {
        this.unlock();
      }
      throw err;
    }
    this.unlock();
    this.maybeCheckpoint();
    return result;
  }

  /** Full structural check (myconsistent): order, linkage, record count. */
  checkConsistency(): void {
    this.readLock();
    try {
      this.consistent();
    } finally {
      this.unlock();
    }
  }

  /** A transaction or read of this handle is in progress. */
  get isLocked(): boolean {
    return this.locked !== 'none';
  }

  close(): void {
    if (this.closed) return;
    if (--this.refs > 0) return;
    this.dispose();
  }

  private dispose(): void {
    if (this.closed) return;
    this.closed = true;
    if (openDbs.get(this.path) === this) openDbs.delete(this.path);
    fs.closeSync(this.fd);
  }

  // -------------------------------------------------------------- locking

  /** lock_reopen_ex: exclusive lock, then the inode check; reread and recover. */
  private writeLock(isOpen = true): void {
    this.assertOpen();
    this.lockWithReopen(true);
    this.locked = 'write';
    if (isOpen && this.size > 0) {
      this.readHeader();
      if (!this.isClean()) this.recovery1();
    }
  }

  private readLock(): void {
    this.assertOpen();
    this.lockWithReopen(false);
    this.locked = 'read';
    this.readHeader();
    if (!this.isClean()) {
      // A crashed writer left it dirty: fix it under an exclusive lock first.
      this.unlock();
      this.writeLock(true);
      this.unlock();
      this.lockWithReopen(false);
      this.locked = 'read';
      this.readHeader();
    }
  }

  private lockWithReopen(exclusive: boolean): void {
    for (;;) {
      if (!lockFdSync(this.fd, exclusive, this.lockTimeoutMs)) {
        throw new CyrsyncError('IMAP_MAILBOX_LOCKED', `${this.path} is locked by another process`);
      }
      const st = fs.fstatSync(this.fd);
      let now: fs.Stats;
      try {
        now = fs.statSync(this.path);
      } catch (err) {
        unlockFd(this.fd);
        throw new CyrsyncError('IMAP_IOERROR', `cannot stat ${this.path}: ${(err as Error).message}`, { cause: err });
      }
      if (st.ino === now.ino && st.dev === now.dev) {
        this.size = st.size;
        return;
      }
      // Replaced by a checkpoint while we waited: use the new file.
      const fd = fs.openSync(this.path, fs.constants.O_RDWR);
      fs.closeSync(this.fd);
      this.fd = fd;
    }
  }

  private unlock(): void {
    if (this.locked === 'none') return;
    this.locked = 'none';
    unlockFd(this.fd);
  }

  private assertOpen(): void {
    if (this.closed) throw new CyrsyncError('IMAP_INTERNAL', `twoskip ${this.path} is closed`);
  }

  // ---------------------------------------------------------------- I/O

  private pread(pos: number, len: number): Buffer {
    const b = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const n = fs.readSync(this.fd, b, got, len - got, pos + got);
      if (n === 0) throw corrupt(this.path, `short read at ${pos + got}`);
      got += n;
    }
    return b;
  }

  private pwrite(buf: Buffer, pos: number): void {
    let done = 0;
    while (done < buf.length) done += fs.writeSync(this.fd, buf, done, buf.length - done, pos + done);
    if (pos + buf.length > this.size) this.size = pos + buf.length;
  }

  private sync(): void {
    fs.fdatasyncSync(this.fd);
  }

  // -------------------------------------------------------------- header

  private readHeader(): void {
    if (this.size < HEADER_SIZE) throw corrupt(this.path, 'file not large enough for header');
    const b = this.pread(0, HEADER_SIZE);
    if (!b.subarray(0, 20).equals(MAGIC)) throw corrupt(this.path, 'invalid magic header (not a twoskip file)');
    const version = b.readUInt32BE(OFFSET_VERSION);
    if (version > VERSION) throw corrupt(this.path, `version mismatch: version ${version}`);
    const crc = b.readUInt32BE(OFFSET_CRC32);
    if (crc32(b.subarray(0, OFFSET_CRC32)) !== crc) throw corrupt(this.path, 'header CRC failure');
    this.header = {
      version,
      generation: b.readBigUInt64BE(OFFSET_GENERATION),
      numRecords: u64(b, OFFSET_NUM_RECORDS),
      repackSize: u64(b, OFFSET_REPACK_SIZE),
      currentSize: u64(b, OFFSET_CURRENT_SIZE),
      flags: b.readUInt32BE(OFFSET_FLAGS),
    };
    this.end = this.header.currentSize;
  }

  private writeHeader(): void {
    const b = Buffer.alloc(HEADER_SIZE);
    MAGIC.copy(b, 0);
    const h = this.header;
    b.writeUInt32BE(h.version, OFFSET_VERSION);
    b.writeBigUInt64BE(h.generation, OFFSET_GENERATION);
    b.writeBigUInt64BE(BigInt(h.numRecords), OFFSET_NUM_RECORDS);
    b.writeBigUInt64BE(BigInt(h.repackSize), OFFSET_REPACK_SIZE);
    b.writeBigUInt64BE(BigInt(h.currentSize), OFFSET_CURRENT_SIZE);
    b.writeUInt32BE(h.flags >>> 0, OFFSET_FLAGS);
    b.writeUInt32BE(crc32(b.subarray(0, OFFSET_CRC32)), OFFSET_CRC32);
    this.pwrite(b, 0);
  }

  private commitHeader(): void {
    this.writeHeader();
    this.sync();
  }

  private isClean(): boolean {
    return this.header.currentSize === this.size && (this.header.flags & DIRTY) === 0;
  }

  // -------------------------------------------------------------- records

  private readRecord(offset: number): Rec {
    const r = emptyRec();
    if (!offset) return r;
    r.offset = offset;
    if (offset + 24 > this.size) throw corrupt(this.path, `record at ${offset} runs past the end of the file`);
    const head = this.pread(offset, Math.min(MAXRECORDHEAD, this.size - offset));
    r.type = head[0]!;
    r.level = head[1]!;
    r.keylen = head.readUInt16BE(2);
    r.vallen = head.readUInt32BE(4);
    let p = 8;
    if (r.level > MAXLEVEL) throw corrupt(this.path, `invalid level ${r.level} at ${offset}`);
    if (r.keylen === 0xffff) {
      r.keylen = u64(head, p);
      p += 8;
    }
    if (r.vallen === 0xffffffff) {
      r.vallen = u64(head, p);
      p += 8;
    }
    r.len = p + 8 * (1 + r.level) + 8 + roundup(r.keylen + r.vallen, 8);
    if (offset + r.len > this.size) throw corrupt(this.path, `record at ${offset} runs past the end of the file`);
    for (let i = 0; i <= r.level; i++) {
      r.nextloc[i] = u64(head, p);
      p += 8;
    }
    r.crcHead = head.readUInt32BE(p);
    r.crcTail = head.readUInt32BE(p + 4);
    r.keyoffset = offset + p + 8;
    r.valoffset = r.keyoffset + r.keylen;
    if (crc32(head.subarray(0, p)) !== r.crcHead) throw corrupt(this.path, `checksum head error at ${offset}`);
    return r;
  }

  private readSkipDelete(offset: number): Rec {
    const r = this.readRecord(offset);
    if (r.type === DELETE) return this.readRecord(r.nextloc[0]!);
    return r;
  }

  private checkTailCrc(r: Rec): void {
    const tail = this.pread(r.keyoffset, roundup(r.keylen + r.vallen, 8));
    if (crc32(tail) !== r.crcTail) throw corrupt(this.path, `invalid tail crc at ${r.offset}`);
  }

  private keyOf(r: Rec): Buffer {
    return this.pread(r.keyoffset, r.keylen);
  }

  /** prepare_record: the head (everything before key/value), new head CRC. */
  private prepareRecord(r: Rec): Buffer {
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

  private rewriteRecord(r: Rec): void {
    if ((this.header.flags & DIRTY) === 0 || !r.offset) throw new CyrsyncError('IMAP_INTERNAL', 'twoskip record rewrite outside a transaction');
    this.pwrite(this.prepareRecord(r), r.offset);
  }

  /** BLANK padding so that a record head never straddles a 512-octet block. */
  private addPadding(iolen: number): void {
    if (iolen > BLOCKSIZE - 8) return;
    while ((this.end + 8) % BLOCKSIZE > (this.end - 8 + iolen) % BLOCKSIZE) {
      this.pwrite(BLANK, this.end);
      this.end += 8;
    }
  }

  private writeRecord(r: Rec, key: Buffer, val: Buffer): void {
    const kvlen = key.length + val.length;
    const tail = Buffer.alloc(roundup(kvlen, 8));
    key.copy(tail, 0);
    val.copy(tail, key.length);
    r.keylen = key.length;
    r.vallen = val.length;
    r.crcTail = crc32(tail);
    const head = this.prepareRecord(r);
    this.addPadding(head.length);
    this.pwrite(Buffer.concat([head, tail]), this.end);
    r.offset = this.end;
    r.keyoffset = this.end + head.length;
    r.valoffset = r.keyoffset + r.keylen;
    r.len = head.length + tail.length;
    this.end += r.len;
  }

  private appendRecord(r: Rec, key: Buffer, val: Buffer): void {
    if ((this.header.flags & DIRTY) === 0) {
      this.header.flags |= DIRTY;
      this.commitHeader();
    }
    this.writeRecord(r, key, val);
  }

  // ----------------------------------------------------------- locations

  private getloc(r: Rec, level: number): number {
    if (level) return r.nextloc[level + 1]!;
    const a = r.nextloc[0]!;
    const b = r.nextloc[1]!;
    if (a >= this.end) return b;
    if (b >= this.end) return a;
    return a > b ? a : b;
  }

  private setloc(r: Rec, level: number, offset: number): void {
    if (level) {
      r.nextloc[level + 1] = offset;
      return;
    }
    const cs = this.header.currentSize;
    if (r.nextloc[0]! >= cs) r.nextloc[0] = offset;
    else if (r.nextloc[1]! >= cs) r.nextloc[1] = offset;
    else if (r.nextloc[1]! > r.nextloc[0]!) r.nextloc[0] = offset;
    else r.nextloc[1] = offset;
  }

  private relocate(key: Buffer): void {
    const loc = this.loc;
    loc.key = key;
    loc.record = this.readRecord(DUMMY_OFFSET);
    loc.isExact = false;
    loc.backloc = new Array<number>(MAXLEVEL + 1).fill(0);
    loc.forwardloc = new Array<number>(MAXLEVEL + 1).fill(0);
    let level = loc.record.level;
    let newrecord = emptyRec();
    loc.backloc[level] = loc.record.offset;
    loc.forwardloc[level] = 0;
    if (key.length === 0) {
      for (let i = 0; i < loc.record.level; i++) {
        loc.backloc[i] = loc.record.offset;
        loc.forwardloc[i] = this.getloc(loc.record, i);
      }
      return;
    }
    let oldoffset = 0;
    let cmp = -1;
    while (level) {
      const offset = this.getloc(loc.record, level - 1);
      loc.backloc[level - 1] = loc.record.offset;
      loc.forwardloc[level - 1] = offset;
      if (offset !== oldoffset) {
        oldoffset = offset;
        newrecord = this.readSkipDelete(offset);
        if (newrecord.offset) {
          if (newrecord.level < level) throw corrupt(this.path, `record at ${newrecord.offset} has level ${newrecord.level} below ${level}`);
          cmp = compareRaw(this.keyOf(newrecord), key);
          if (cmp < 0) {
            loc.record = newrecord;
            continue;
          }
        }
      }
      level--;
    }
    if (cmp === 0) {
      loc.isExact = true;
      loc.record = newrecord;
      for (let i = 0; i < loc.record.level; i++) loc.forwardloc[i] = this.getloc(loc.record, i);
      this.checkTailCrc(loc.record);
    }
  }

  private stitch(maxlevel: number, newoffset: number): void {
    const loc = this.loc;
    let old = emptyRec();
    old.level = 0;
    while (old.level < maxlevel) {
      const level = old.level;
      old = this.readRecord(loc.backloc[level]!);
      if (old.level <= level) throw corrupt(this.path, `broken back pointer at ${old.offset}`);
      for (let i = level; i < maxlevel; i++) this.setloc(old, i, loc.forwardloc[i]!);
      this.rewriteRecord(old);
    }
    loc.record = this.readRecord(newoffset);
    for (let i = 0; i < loc.record.level; i++) loc.forwardloc[i] = this.getloc(loc.record, i);
  }

  private randlvl(): number {
    let lvl = 1;
    while (Math.random() < 0.5) {
      lvl++;
      if (lvl === MAXLEVEL) break;
    }
    return lvl;
  }

  private storeHere(val: Buffer): void {
    const loc = this.loc;
    let level = 0;
    if (loc.isExact) {
      level = loc.record.level;
      this.header.numRecords--;
    }
    const nr = emptyRec();
    nr.type = RECORD;
    nr.level = this.randlvl();
    for (let i = 0; i < nr.level; i++) nr.nextloc[i + 1] = loc.forwardloc[i]!;
    if (nr.level > level) level = nr.level;
    this.appendRecord(nr, loc.key, val);
    for (let i = 0; i < nr.level; i++) loc.forwardloc[i] = nr.offset;
    this.stitch(level, nr.offset);
    this.header.numRecords++;
    loc.isExact = true;
  }

  private deleteHere(): void {
    const loc = this.loc;
    if (!loc.isExact) return;
    this.header.numRecords--;
    const next = this.readSkipDelete(loc.forwardloc[0]!);
    const nr = emptyRec();
    nr.type = DELETE;
    nr.nextloc[0] = next.offset;
    this.appendRecord(nr, Buffer.alloc(0), Buffer.alloc(0));
    loc.forwardloc[0] = nr.offset;
    this.stitch(loc.record.level, loc.backloc[0]!);
    loc.isExact = false;
  }

  private skipwrite(key: Buffer, val: Buffer | null): void {
    if (key.length === 0) throw new CyrsyncError('IMAP_INTERNAL', 'twoskip keys must not be empty');
    if (this.locked !== 'write') throw new CyrsyncError('IMAP_INTERNAL', 'twoskip write outside a transaction');
    this.relocate(key);
    if (this.loc.isExact) {
      if (val === null) return this.deleteHere();
      const cur = this.pread(this.loc.record.valoffset, this.loc.record.vallen);
      if (cur.equals(val)) return;
      return this.storeHere(val);
    }
    if (val !== null) this.storeHere(val);
  }

  private commit(): void {
    if ((this.header.flags & DIRTY) === 0) return;
    const nr = emptyRec();
    nr.type = COMMIT;
    nr.nextloc[0] = this.header.currentSize;
    this.appendRecord(nr, Buffer.alloc(0), Buffer.alloc(0));
    this.sync();
    this.header.currentSize = this.end;
    this.header.flags &= ~DIRTY;
    this.commitHeader();
  }

  private abort(): void {
    if (this.locked !== 'write') return;
    this.end = this.header.currentSize;
    this.recovery1();
  }

  /** recovery1: relink from the committed pointers, truncate, clear DIRTY. */
  private recovery1(): void {
    if (this.isClean()) return;
    if (this.locked !== 'write') throw new CyrsyncError('IMAP_INTERNAL', 'twoskip recovery without the write lock');
    if (this.header.currentSize <= HEADER_SIZE) throw corrupt(this.path, 'cannot recover a file that was never created');
    this.end = this.header.currentSize;
    if ((this.header.flags & DIRTY) === 0) {
      this.header.flags |= DIRTY;
      this.commitHeader();
    }
    const prev = new Array<number>(MAXLEVEL + 1).fill(0);
    const next = new Array<number>(MAXLEVEL + 1).fill(0);
    let prevrecord = this.readRecord(DUMMY_OFFSET);
    for (let i = 2; i <= MAXLEVEL; i++) {
      prev[i] = prevrecord.offset;
      next[i] = prevrecord.nextloc[i]!;
    }
    for (let i = 0; i < 2; i++) {
      if (prevrecord.nextloc[i]! >= this.end) {
        prevrecord.nextloc[i] = 0;
        this.rewriteRecord(prevrecord);
      }
    }
    let nextoffset = this.getloc(prevrecord, 0);
    let numRecords = 0;
    let prevKey: Buffer = Buffer.alloc(0);
    while (nextoffset) {
      const record = this.readRecord(nextoffset);
      if (record.type === DELETE) {
        nextoffset = record.nextloc[0]!;
        continue;
      }
      const key = this.keyOf(record);
      if (compareRaw(key, prevKey) <= 0 && prevrecord.offset !== DUMMY_OFFSET) {
        throw corrupt(this.path, `records out of order at ${record.offset}; recovery impossible`);
      }
      for (let i = 2; i <= record.level; i++) {
        if (next[i] !== record.offset) {
          const fix = this.readRecord(prev[i]!);
          fix.nextloc[i] = record.offset;
          this.rewriteRecord(fix);
        }
        prev[i] = record.offset;
        next[i] = record.nextloc[i]!;
      }
      for (let i = 0; i < 2; i++) {
        if (record.nextloc[i]! >= this.end) {
          record.nextloc[i] = 0;
          this.rewriteRecord(record);
        }
      }
      numRecords++;
      nextoffset = this.getloc(record, 0);
      prevrecord = record;
      prevKey = key;
    }
    for (let i = 2; i <= MAXLEVEL; i++) {
      if (next[i]) {
        const fix = this.readRecord(prev[i]!);
        fix.nextloc[i] = 0;
        this.rewriteRecord(fix);
      }
    }
    fs.ftruncateSync(this.fd, this.header.currentSize);
    this.size = this.header.currentSize;
    this.sync();
    this.header.flags &= ~DIRTY;
    this.header.numRecords = numRecords;
    this.commitHeader();
  }

  private walk(): [Buffer, Buffer][] {
    const out: [Buffer, Buffer][] = [];
    let r = this.readRecord(DUMMY_OFFSET);
    let next = this.getloc(r, 0);
    while (next) {
      r = this.readSkipDelete(next);
      if (!r.offset) break;
      this.checkTailCrc(r);
      out.push([this.pread(r.keyoffset, r.keylen), this.pread(r.valoffset, r.vallen)]);
      next = this.getloc(r, 0);
    }
    return out;
  }

  private consistent(): void {
    let prev = this.readRecord(DUMMY_OFFSET);
    let prevKey: Buffer | null = null;
    const fwd: number[] = [];
    for (let i = 0; i < MAXLEVEL; i++) fwd[i] = this.getloc(prev, i);
    let n = 0;
    while (fwd[0]) {
      const rec = this.readRecord(fwd[0]);
      if (rec.type === DELETE) {
        fwd[0] = rec.nextloc[0]!;
        continue;
      }
      const key = this.keyOf(rec);
      if (prevKey !== null && compareRaw(key, prevKey) <= 0) throw corrupt(this.path, `out of order at ${rec.offset}`);
      for (let i = 0; i < rec.level; i++) {
        if (fwd[i] !== rec.offset) throw corrupt(this.path, `broken linkage at ${rec.offset} level ${i}`);
        fwd[i] = this.getloc(rec, i);
      }
      this.checkTailCrc(rec);
      n++;
      prev = rec;
      prevKey = key;
    }
    for (let i = 0; i < MAXLEVEL; i++) if (fwd[i]) throw corrupt(this.path, `broken tail at level ${i}`);
    if (n !== this.header.numRecords) throw corrupt(this.path, `record count mismatch: ${n} found, header says ${this.header.numRecords}`);
  }

  /**
   * mycheckpoint: when the file has grown past twice its repacked size,
   * write every live record in order to `<file>.NEW` (generation + 1) and
   * rename it over the file. Other processes notice the new inode after
   * locking. Done after our lock was released, under a fresh one.
   */
  private maybeCheckpoint(): void {
    if (!(this.header.currentSize > MINREWRITE && this.header.currentSize > 2 * this.header.repackSize)) return;
    this.writeLock(true);
    try {
      if (!(this.header.currentSize > MINREWRITE && this.header.currentSize > 2 * this.header.repackSize)) return;
      this.consistent();
      const records = this.walk();
      const tmp = `${this.path}.NEW`;
      try {
        fs.unlinkSync(tmp);
      } catch {
        /* not there */
      }
      const fresh = new TwoskipDb(tmp, fs.openSync(tmp, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644), this.lockTimeoutMs);
      try {
        // The replacement keeps the owner and mode: the Cyrus tools run as
        // the cyrus user and must still be able to write it.
        const st = fs.fstatSync(this.fd);
        fs.fchmodSync(fresh.fd, st.mode & 0o7777);
        try {
          fs.fchownSync(fresh.fd, st.uid, st.gid);
        } catch {
          /* not permitted: only root can give files away */
        }
        fresh.initialise();
        fresh.lockWithReopen(true);
        fresh.locked = 'write';
        fresh.readHeader();
        for (const [k, v] of records) fresh.skipwrite(k, v);
        fresh.header.repackSize = fresh.end;
        fresh.header.generation = this.header.generation + 1n;
        fresh.commit();
        fs.renameSync(tmp, this.path);
      } catch (err) {
        try {
          fs.unlinkSync(tmp);
        } catch {
          /* already gone */
        }
        throw err;
      } finally {
        fresh.dispose();
      }
      // Our descriptor now names the replaced file: switch to the new one.
      const fd = fs.openSync(this.path, fs.constants.O_RDWR);
      this.locked = 'none';
      fs.closeSync(this.fd);
      this.fd = fd;
    } finally {
      this.unlock();
    }
  }
}

export interface TwoskipTxn {
  get(key: Buffer | string): Buffer | null;
  set(key: Buffer | string, value: Buffer | string): void;
  delete(key: Buffer | string): void;
}

function toBuf(v: Buffer | string): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'latin1') : v;
}

/** True when the file starts with the twoskip magic. */
export function isTwoskipFile(file: string): boolean {
  // A descriptor opened and closed here would drop this process's lock.
  const open = openDbs.get(path.resolve(file));
  if (open && open.isLocked) return true;
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    const b = Buffer.alloc(20);
    return fs.readSync(fd, b, 0, 20, 0) === 20 && b.equals(MAGIC);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------
// skiplist (lib/cyrusdb_skiplist.c), read only

const SKIPLIST_MAGIC = Buffer.concat([Buffer.from([0xa1, 0x02, 0x8b, 0x0d]), Buffer.from('skiplist file\0\0\0', 'latin1')]);
const SL_HEADER_SIZE = 48;
const SL_INORDER = 1;
const SL_ADD = 2;
const SL_DELETE = 4;
const SL_COMMIT = 255;
const SL_DUMMY = 257;

const round4 = (n: number): number => (n + 3) & ~3;

/**
 * Reads a Cyrus "skiplist" database under a shared fcntl lock (the lock its
 * writers respect). Only the committed list is read: a file whose log does
 * not end in a commit (a writer crashed mid-transaction) is refused, since
 * only Cyrus's own recovery may repair it.
 */
export class SkiplistReader {
  private constructor(readonly path: string) {}

  static open(file: string): SkiplistReader {
    const r = new SkiplistReader(path.resolve(file));
    r.entries();
    return r;
  }

  entries(): [Buffer, Buffer][] {
    // A descriptor of our own would drop a lock this process holds on the
    // file; a skiplist is never locked by cyrsync otherwise.
    let fd: number;
    try {
      fd = fs.openSync(this.path, fs.constants.O_RDWR);
    } catch (err) {
      throw new CyrsyncError('IMAP_IOERROR', `cannot open ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      for (;;) {
        if (!lockFdSync(fd, false, DEFAULT_LOCK_TIMEOUT_MS)) {
          throw new CyrsyncError('IMAP_MAILBOX_LOCKED', `${this.path} is locked by another process`);
        }
        const st = fs.fstatSync(fd);
        const now = fs.statSync(this.path);
        if (st.ino === now.ino) break;
        fs.closeSync(fd);
        fd = fs.openSync(this.path, fs.constants.O_RDWR);
      }
      return this.read(fs.fstatSync(fd).size, fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  get(key: Buffer | string): Buffer | null {
    const k = toBuf(key);
    for (const [kk, v] of this.entries()) if (kk.equals(k)) return v;
    return null;
  }

  private read(size: number, fd: number): [Buffer, Buffer][] {
    const b = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const n = fs.readSync(fd, b, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    const bad = (why: string): CyrsyncError => corrupt(this.path, `skiplist: ${why}`);
    if (got < SL_HEADER_SIZE || !b.subarray(0, 20).equals(SKIPLIST_MAGIC)) throw bad('invalid magic header (not a skiplist file)');
    const maxlevel = b.readUInt32BE(28);
    const logstart = b.readUInt32BE(40);
    const u32 = (off: number): number => {
      if (off + 4 > got) throw bad(`offset ${off} is past the end of the file`);
      return b.readUInt32BE(off);
    };
    const node = (off: number): { type: number; key: Buffer; val: Buffer; ptrs: number[]; size: number } => {
      const type = u32(off);
      if (type === SL_DELETE) return { type, key: EMPTY_BUF, val: EMPTY_BUF, ptrs: [], size: 8 };
      if (type === SL_COMMIT) return { type, key: EMPTY_BUF, val: EMPTY_BUF, ptrs: [], size: 4 };
      if (type !== SL_INORDER && type !== SL_ADD && type !== SL_DUMMY) throw bad(`unknown record type ${type} at ${off}`);
      const kl = u32(off + 4);
      const dOff = off + 8 + round4(kl);
      const dl = u32(dOff);
      let p = dOff + 4 + round4(dl);
      const ptrs: number[] = [];
      for (;;) {
        const v = u32(p);
        p += 4;
        if (v === 0xffffffff) break;
        ptrs.push(v);
        if (ptrs.length > 255) throw bad(`record at ${off} has no end marker`);
      }
      return { type, key: b.subarray(off + 8, off + 8 + kl), val: b.subarray(dOff + 4, dOff + 4 + dl), ptrs, size: p - off };
    };
    const dummy = node(SL_HEADER_SIZE);
    if (dummy.type !== SL_DUMMY || dummy.ptrs.length !== maxlevel) throw bad('first node is not a DUMMY of maxlevel');
    // SAFE_TO_APPEND: the log ends with a commit (or is empty).
    let pos = logstart;
    let committed = logstart;
    while (pos < got) {
      const n = node(pos);
      pos += n.size;
      if (n.type === SL_COMMIT) committed = pos;
    }
    if (pos !== got || committed !== got) {
      throw bad('the last transaction was not committed; let a Cyrus tool recover the file (for example ctl_cyrusdb -r)');
    }
    const out: [Buffer, Buffer][] = [];
    let next = dummy.ptrs[0] ?? 0;
    let guard = 0;
    while (next !== 0) {
      if (++guard > got) throw bad('the list loops');
      const n = node(next);
      if (n.type !== SL_INORDER && n.type !== SL_ADD) throw bad(`level-0 pointer to a record of type ${n.type} at ${next}`);
      out.push([Buffer.from(n.key), Buffer.from(n.val)]);
      next = n.ptrs[0] ?? 0;
    }
    return out;
  }
}

const EMPTY_BUF = Buffer.alloc(0);

/** True when the file starts with the skiplist magic. */
export function isSkiplistFile(file: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    const b = Buffer.alloc(20);
    return fs.readSync(fd, b, 0, 20, 0) === 20 && b.equals(SKIPLIST_MAGIC);
  } finally {
    fs.closeSync(fd);
  }
}
