/**
 * Cyrus "skiplist" databases (lib/cyrusdb_skiplist.c), read only: a
 * backups.db kept with `backup_db: skiplist` is read, never written.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CyrsyncError } from '../../transforms/errors.js';
import { lockFdSync } from './lock.js';
import { DEFAULT_LOCK_TIMEOUT_MS, corrupt, fileStartsWith, toBuf } from './twoskip-format.js';

const SKIPLIST_MAGIC = Buffer.concat([Buffer.from([0xa1, 0x02, 0x8b, 0x0d]), Buffer.from('skiplist file\0\0\0', 'latin1')]);
const SL_HEADER_SIZE = 48;
/** Record types of the skiplist log. */
const SL = { INORDER: 1, ADD: 2, DELETE: 4, COMMIT: 255, DUMMY: 257 } as const;

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
      if (type === SL.DELETE) return { type, key: EMPTY_BUF, val: EMPTY_BUF, ptrs: [], size: 8 };
      if (type === SL.COMMIT) return { type, key: EMPTY_BUF, val: EMPTY_BUF, ptrs: [], size: 4 };
      if (type !== SL.INORDER && type !== SL.ADD && type !== SL.DUMMY) throw bad(`unknown record type ${type} at ${off}`);
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
    if (dummy.type !== SL.DUMMY || dummy.ptrs.length !== maxlevel) throw bad('first node is not a DUMMY of maxlevel');
    // SAFE_TO_APPEND: the log ends with a commit (or is empty).
    let pos = logstart;
    let committed = logstart;
    while (pos < got) {
      const n = node(pos);
      pos += n.size;
      if (n.type === SL.COMMIT) committed = pos;
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
      if (n.type !== SL.INORDER && n.type !== SL.ADD) throw bad(`level-0 pointer to a record of type ${n.type} at ${next}`);
      out.push([Buffer.from(n.key), Buffer.from(n.val)]);
      next = n.ptrs[0] ?? 0;
    }
    return out;
  }
}

const EMPTY_BUF = Buffer.alloc(0);

/** True when the file starts with the skiplist magic. */
export function isSkiplistFile(file: string): boolean {
  return fileStartsWith(file, SKIPLIST_MAGIC);
}
