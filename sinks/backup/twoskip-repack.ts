/**
 * The twoskip checkpoint (mycheckpoint of lib/cyrusdb_twoskip.c): when the
 * file has grown past twice its repacked size, every live record is written
 * in order to `<file>.NEW` (generation + 1), which is renamed over the file.
 * Other processes notice the new inode after locking.
 */
import * as fs from 'node:fs';
import { TwoskipFile } from './twoskip-file.js';
import { MINREWRITE } from './twoskip-format.js';
import { commit, initialise, skipwrite } from './twoskip-list.js';

/** The file has grown enough to be rewritten. */
export function needsRepack(f: TwoskipFile): boolean {
  return f.header.currentSize > MINREWRITE && f.header.currentSize > 2 * f.header.repackSize;
}

/**
 * Writes the live records of `f` (exclusively locked, clean) to a new file
 * and renames it over `f.path`. The caller then re-opens `f`: its
 * descriptor names the replaced file.
 */
export function repack(f: TwoskipFile): void {
  f.consistent();
  const records = f.walk();
  const tmp = `${f.path}.NEW`;
  try {
    fs.unlinkSync(tmp);
  } catch {
    /* not there */
  }
  const fresh = new TwoskipFile(tmp, fs.openSync(tmp, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644), f.lockTimeoutMs);
  try {
    // The replacement keeps the owner and mode: the Cyrus tools run as
    // the cyrus user and must still be able to write it.
    const st = fs.fstatSync(f.fd);
    fs.fchmodSync(fresh.fd, st.mode & 0o7777);
    try {
      fs.fchownSync(fresh.fd, st.uid, st.gid);
    } catch {
      /* not permitted: only root can give files away */
    }
    initialise(fresh);
    fresh.lock(true);
    fresh.readHeader();
    for (const [k, v] of records) skipwrite(fresh, k, v);
    fresh.header.repackSize = fresh.end;
    fresh.header.generation = f.header.generation + 1n;
    commit(fresh);
    fs.renameSync(tmp, f.path);
  } catch (err) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* already gone */
    }
    throw err;
  } finally {
    fs.closeSync(fresh.fd);
  }
}
