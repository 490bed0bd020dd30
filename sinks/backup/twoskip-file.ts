/**
 * One twoskip file under its fcntl lock (struct dbengine of
 * lib/cyrusdb_twoskip.c with lib/mappedfile.c): the descriptor, the header
 * and end of file as last read under the lock, positional reads and writes,
 * records read and appended, the level pointers, and the read-only walks
 * (every live record; the full consistency check).
 *
 * Locking follows lib/mappedfile.c: one descriptor per file per process
 * (fcntl locks are per process, and closing any descriptor drops them), a
 * shared lock for reads, an exclusive lock for a transaction, with the
 * inode re-check after locking (a checkpoint renames a new file over the
 * old one).
 */
import * as fs from 'node:fs';
import { crc32 } from 'node:zlib';
import { CyrsyncError } from '../../transforms/errors.js';
import { lockFdSync, unlockFd } from './lock.js';
import {
  BLANK, BLOCKSIZE, DELETE, DIRTY, DUMMY_OFFSET, HEADER_SIZE, MAXLEVEL, MAXRECORDHEAD, VERSION,
  compareRaw, corrupt, decodeHeader, decodeRecordHead, emptyRec, encodeHeader, encodeRecordHead, encodeRecordTail, roundup,
  type Header, type Rec,
} from './twoskip-format.js';

/** Where the last relocate() left off (struct skiploc). */
export interface Loc {
  key: Buffer;
  isExact: boolean;
  record: Rec;
  backloc: number[];
  forwardloc: number[];
}

export class TwoskipFile {
  header: Header = { version: VERSION, generation: 1n, numRecords: 0, repackSize: 0, currentSize: 0, flags: 0 };
  /** Where the next record is appended. */
  end = 0;
  /** File size as last seen under the lock (grows with our appends). */
  size = 0;
  locked: 'none' | 'read' | 'write' = 'none';
  loc: Loc = { key: Buffer.alloc(0), isExact: false, record: emptyRec(), backloc: [], forwardloc: [] };

  constructor(
    readonly path: string,
    public fd: number,
    readonly lockTimeoutMs: number,
  ) {}

  // -------------------------------------------------------------- locking

  /** Locks (shared or exclusive), then re-opens when a checkpoint replaced the file meanwhile. */
  lock(exclusive: boolean): void {
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
        this.locked = exclusive ? 'write' : 'read';
        return;
      }
      // Replaced by a checkpoint while we waited: use the new file.
      this.reopen();
    }
  }

  unlock(): void {
    if (this.locked === 'none') return;
    this.locked = 'none';
    unlockFd(this.fd);
  }

  /** Switches the descriptor to the file now at the path (this process's locks on the old one go). */
  reopen(): void {
    const fd = fs.openSync(this.path, fs.constants.O_RDWR);
    this.locked = 'none';
    fs.closeSync(this.fd);
    this.fd = fd;
  }

  // ---------------------------------------------------------------- I/O

  pread(pos: number, len: number): Buffer {
    const b = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const n = fs.readSync(this.fd, b, got, len - got, pos + got);
      if (n === 0) throw corrupt(this.path, `short read at ${pos + got}`);
      got += n;
    }
    return b;
  }

  pwrite(buf: Buffer, pos: number): void {
    let done = 0;
    while (done < buf.length) done += fs.writeSync(this.fd, buf, done, buf.length - done, pos + done);
    if (pos + buf.length > this.size) this.size = pos + buf.length;
  }

  sync(): void {
    fs.fdatasyncSync(this.fd);
  }

  /** Cuts the file back to the committed size. */
  truncateToCommitted(): void {
    fs.ftruncateSync(this.fd, this.header.currentSize);
    this.size = this.header.currentSize;
  }

  // -------------------------------------------------------------- header

  readHeader(): void {
    if (this.size < HEADER_SIZE) throw corrupt(this.path, 'file not large enough for header');
    this.header = decodeHeader(this.pread(0, HEADER_SIZE), this.path);
    this.end = this.header.currentSize;
  }

  commitHeader(): void {
    this.pwrite(encodeHeader(this.header), 0);
    this.sync();
  }

  isClean(): boolean {
    return this.header.currentSize === this.size && (this.header.flags & DIRTY) === 0;
  }

  // -------------------------------------------------------------- records

  readRecord(offset: number): Rec {
    if (!offset) return emptyRec();
    if (offset + 24 > this.size) throw corrupt(this.path, `record at ${offset} runs past the end of the file`);
    const head = this.pread(offset, Math.min(MAXRECORDHEAD, this.size - offset));
    return decodeRecordHead(head, offset, this.size, this.path);
  }

  readSkipDelete(offset: number): Rec {
    const r = this.readRecord(offset);
    if (r.type === DELETE) return this.readRecord(r.nextloc[0]!);
    return r;
  }

  checkTailCrc(r: Rec): void {
    const tail = this.pread(r.keyoffset, roundup(r.keylen + r.vallen, 8));
    if (crc32(tail) !== r.crcTail) throw corrupt(this.path, `invalid tail crc at ${r.offset}`);
  }

  keyOf(r: Rec): Buffer {
    return this.pread(r.keyoffset, r.keylen);
  }

  valueOf(r: Rec): Buffer {
    return this.pread(r.valoffset, r.vallen);
  }

  rewriteRecord(r: Rec): void {
    if ((this.header.flags & DIRTY) === 0 || !r.offset) throw new CyrsyncError('IMAP_INTERNAL', 'twoskip record rewrite outside a transaction');
    this.pwrite(encodeRecordHead(r), r.offset);
  }

  /** BLANK padding so that a record head never straddles a 512-octet block. */
  private addPadding(iolen: number): void {
    if (iolen > BLOCKSIZE - 8) return;
    while ((this.end + 8) % BLOCKSIZE > (this.end - 8 + iolen) % BLOCKSIZE) {
      this.pwrite(BLANK, this.end);
      this.end += 8;
    }
  }

  /** Writes `r` with its key and value at the end; fills in its offsets and lengths. */
  writeRecord(r: Rec, key: Buffer, val: Buffer): void {
    const tail = encodeRecordTail(key, val);
    r.keylen = key.length;
    r.vallen = val.length;
    r.crcTail = crc32(tail);
    const head = encodeRecordHead(r);
    this.addPadding(head.length);
    this.pwrite(Buffer.concat([head, tail]), this.end);
    r.offset = this.end;
    r.keyoffset = this.end + head.length;
    r.valoffset = r.keyoffset + r.keylen;
    r.len = head.length + tail.length;
    this.end += r.len;
  }

  /** writeRecord inside a transaction: the header is marked DIRTY (and synced) first. */
  appendRecord(r: Rec, key: Buffer, val: Buffer): void {
    if ((this.header.flags & DIRTY) === 0) {
      this.header.flags |= DIRTY;
      this.commitHeader();
    }
    this.writeRecord(r, key, val);
  }

  // ----------------------------------------------------------- locations

  getloc(r: Rec, level: number): number {
    if (level) return r.nextloc[level + 1]!;
    const a = r.nextloc[0]!;
    const b = r.nextloc[1]!;
    if (a >= this.end) return b;
    if (b >= this.end) return a;
    return a > b ? a : b;
  }

  setloc(r: Rec, level: number, offset: number): void {
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

  // --------------------------------------------------------------- walks

  /** Every live record in key order, tail CRCs checked. */
  walk(): [Buffer, Buffer][] {
    const out: [Buffer, Buffer][] = [];
    let r = this.readRecord(DUMMY_OFFSET);
    let next = this.getloc(r, 0);
    while (next) {
      r = this.readSkipDelete(next);
      if (!r.offset) break;
      this.checkTailCrc(r);
      out.push([this.keyOf(r), this.valueOf(r)]);
      next = this.getloc(r, 0);
    }
    return out;
  }

  /** myconsistent: order, linkage at every level, tail CRCs and the record count. */
  consistent(): void {
    let prevKey: Buffer | null = null;
    const fwd: number[] = [];
    const dummy = this.readRecord(DUMMY_OFFSET);
    for (let i = 0; i < MAXLEVEL; i++) fwd[i] = this.getloc(dummy, i);
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
      prevKey = key;
    }
    for (let i = 0; i < MAXLEVEL; i++) if (fwd[i]) throw corrupt(this.path, `broken tail at level ${i}`);
    if (n !== this.header.numRecords) throw corrupt(this.path, `record count mismatch: ${n} found, header says ${this.header.numRecords}`);
  }
}
