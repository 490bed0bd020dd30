/**
 * The twoskip skiplist algorithms on a locked TwoskipFile, ported from
 * lib/cyrusdb_twoskip.c of Cyrus 3.6.1 (relocate, stitch, store, delete,
 * commit, recovery1) so that the real tools read what we write and we read
 * what they write, including after a crash mid-transaction.
 */
import { CyrsyncError } from '../../transforms/errors.js';
import type { TwoskipFile } from './twoskip-file.js';
import {
  COMMIT, DELETE, DIRTY, DUMMY, DUMMY_OFFSET, HEADER_SIZE, MAXLEVEL, RECORD, VERSION,
  compareRaw, corrupt, emptyRec, type Rec,
} from './twoskip-format.js';

/** opendb(): an empty file gets its dummy record and header; a dirty one is recovered. */
export function initialise(f: TwoskipFile): void {
  f.lock(true);
  try {
    if (f.size === 0) createEmpty(f);
    f.readHeader();
    if (!f.isClean()) recovery1(f);
  } finally {
    f.unlock();
  }
}

function createEmpty(f: TwoskipFile): void {
  const dummy = emptyRec();
  dummy.type = DUMMY;
  dummy.level = MAXLEVEL;
  f.end = DUMMY_OFFSET;
  f.writeRecord(dummy, Buffer.alloc(0), Buffer.alloc(0));
  f.header = { version: VERSION, generation: 1n, numRecords: 0, repackSize: f.end, currentSize: f.end, flags: 0 };
  f.commitHeader();
}

/** relocate: f.loc becomes the place of `key` (exact or where it would go), with its back and forward pointers. */
export function relocate(f: TwoskipFile, key: Buffer): void {
  const loc = f.loc;
  loc.key = key;
  loc.record = f.readRecord(DUMMY_OFFSET);
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
      loc.forwardloc[i] = f.getloc(loc.record, i);
    }
    return;
  }
  let oldoffset = 0;
  let cmp = -1;
  while (level) {
    const offset = f.getloc(loc.record, level - 1);
    loc.backloc[level - 1] = loc.record.offset;
    loc.forwardloc[level - 1] = offset;
    if (offset !== oldoffset) {
      oldoffset = offset;
      newrecord = f.readSkipDelete(offset);
      if (newrecord.offset) {
        if (newrecord.level < level) throw corrupt(f.path, `record at ${newrecord.offset} has level ${newrecord.level} below ${level}`);
        cmp = compareRaw(f.keyOf(newrecord), key);
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
    for (let i = 0; i < loc.record.level; i++) loc.forwardloc[i] = f.getloc(loc.record, i);
    f.checkTailCrc(loc.record);
  }
}

function stitch(f: TwoskipFile, maxlevel: number, newoffset: number): void {
  const loc = f.loc;
  let old = emptyRec();
  old.level = 0;
  while (old.level < maxlevel) {
    const level = old.level;
    old = f.readRecord(loc.backloc[level]!);
    if (old.level <= level) throw corrupt(f.path, `broken back pointer at ${old.offset}`);
    for (let i = level; i < maxlevel; i++) f.setloc(old, i, loc.forwardloc[i]!);
    f.rewriteRecord(old);
  }
  loc.record = f.readRecord(newoffset);
  for (let i = 0; i < loc.record.level; i++) loc.forwardloc[i] = f.getloc(loc.record, i);
}

function randlvl(): number {
  let lvl = 1;
  while (Math.random() < 0.5) {
    lvl++;
    if (lvl === MAXLEVEL) break;
  }
  return lvl;
}

function storeHere(f: TwoskipFile, val: Buffer): void {
  const loc = f.loc;
  let level = 0;
  if (loc.isExact) {
    level = loc.record.level;
    f.header.numRecords--;
  }
  const nr = emptyRec();
  nr.type = RECORD;
  nr.level = randlvl();
  for (let i = 0; i < nr.level; i++) nr.nextloc[i + 1] = loc.forwardloc[i]!;
  if (nr.level > level) level = nr.level;
  f.appendRecord(nr, loc.key, val);
  for (let i = 0; i < nr.level; i++) loc.forwardloc[i] = nr.offset;
  stitch(f, level, nr.offset);
  f.header.numRecords++;
  loc.isExact = true;
}

function deleteHere(f: TwoskipFile): void {
  const loc = f.loc;
  if (!loc.isExact) return;
  f.header.numRecords--;
  const next = f.readSkipDelete(loc.forwardloc[0]!);
  const nr = emptyRec();
  nr.type = DELETE;
  nr.nextloc[0] = next.offset;
  f.appendRecord(nr, Buffer.alloc(0), Buffer.alloc(0));
  loc.forwardloc[0] = nr.offset;
  stitch(f, loc.record.level, loc.backloc[0]!);
  loc.isExact = false;
}

/** skipwrite: store `val` under `key`, or delete `key` when `val` is null; an unchanged value writes nothing. */
export function skipwrite(f: TwoskipFile, key: Buffer, val: Buffer | null): void {
  if (key.length === 0) throw new CyrsyncError('IMAP_INTERNAL', 'twoskip keys must not be empty');
  if (f.locked !== 'write') throw new CyrsyncError('IMAP_INTERNAL', 'twoskip write outside a transaction');
  relocate(f, key);
  if (f.loc.isExact) {
    if (val === null) return deleteHere(f);
    const cur = f.valueOf(f.loc.record);
    if (cur.equals(val)) return;
    return storeHere(f, val);
  }
  if (val !== null) storeHere(f, val);
}

/** mycommit: a COMMIT record, sync, then the header with the new committed size. */
export function commit(f: TwoskipFile): void {
  if ((f.header.flags & DIRTY) === 0) return;
  const nr = emptyRec();
  nr.type = COMMIT;
  nr.nextloc[0] = f.header.currentSize;
  f.appendRecord(nr, Buffer.alloc(0), Buffer.alloc(0));
  f.sync();
  f.header.currentSize = f.end;
  f.header.flags &= ~DIRTY;
  f.commitHeader();
}

/** myabort: everything appended since the commit is cut off again. */
export function abort(f: TwoskipFile): void {
  if (f.locked !== 'write') return;
  f.end = f.header.currentSize;
  recovery1(f);
}

/** recovery1: relink from the committed pointers, truncate, clear DIRTY. */
export function recovery1(f: TwoskipFile): void {
  if (f.isClean()) return;
  if (f.locked !== 'write') throw new CyrsyncError('IMAP_INTERNAL', 'twoskip recovery without the write lock');
  if (f.header.currentSize <= HEADER_SIZE) throw corrupt(f.path, 'cannot recover a file that was never created');
  f.end = f.header.currentSize;
  if ((f.header.flags & DIRTY) === 0) {
    f.header.flags |= DIRTY;
    f.commitHeader();
  }
  const numRecords = relinkCommitted(f);
  f.truncateToCommitted();
  f.sync();
  f.header.flags &= ~DIRTY;
  f.header.numRecords = numRecords;
  f.commitHeader();
}

/** The pointer repair of recovery1: pointers past the committed end are cleared or relinked; returns the live record count. */
function relinkCommitted(f: TwoskipFile): number {
  const prev = new Array<number>(MAXLEVEL + 1).fill(0);
  const next = new Array<number>(MAXLEVEL + 1).fill(0);
  let prevrecord = f.readRecord(DUMMY_OFFSET);
  for (let i = 2; i <= MAXLEVEL; i++) {
    prev[i] = prevrecord.offset;
    next[i] = prevrecord.nextloc[i]!;
  }
  clearUncommittedLevel0(f, prevrecord);
  let nextoffset = f.getloc(prevrecord, 0);
  let numRecords = 0;
  let prevKey: Buffer = Buffer.alloc(0);
  while (nextoffset) {
    const record = f.readRecord(nextoffset);
    if (record.type === DELETE) {
      nextoffset = record.nextloc[0]!;
      continue;
    }
    const key = f.keyOf(record);
    if (compareRaw(key, prevKey) <= 0 && prevrecord.offset !== DUMMY_OFFSET) {
      throw corrupt(f.path, `records out of order at ${record.offset}; recovery impossible`);
    }
    for (let i = 2; i <= record.level; i++) {
      if (next[i] !== record.offset) {
        const fix = f.readRecord(prev[i]!);
        fix.nextloc[i] = record.offset;
        f.rewriteRecord(fix);
      }
      prev[i] = record.offset;
      next[i] = record.nextloc[i]!;
    }
    clearUncommittedLevel0(f, record);
    numRecords++;
    nextoffset = f.getloc(record, 0);
    prevrecord = record;
    prevKey = key;
  }
  for (let i = 2; i <= MAXLEVEL; i++) {
    if (next[i]) {
      const fix = f.readRecord(prev[i]!);
      fix.nextloc[i] = 0;
      f.rewriteRecord(fix);
    }
  }
  return numRecords;
}

/** Level-0 pointers of `record` that point past the committed end are zeroed. */
function clearUncommittedLevel0(f: TwoskipFile, record: Rec): void {
  for (let i = 0; i < 2; i++) {
    if (record.nextloc[i]! >= f.end) {
      record.nextloc[i] = 0;
      f.rewriteRecord(record);
    }
  }
}
