/** Sieve scripts on the replica: SIEVE, UNSIEVE, ACTIVATE_SIEVE, UNACTIVATE_SIEVE. */
import { createHash } from 'node:crypto';
import type { BinaryValue } from '../../src/protocol/types.js';
import { validateFilename, validateUserid } from '../../src/protocol/names.js';
import type { ReplicaStore } from './store.js';
import { bad, generic } from './records.js';

export async function applySieve(store: ReplicaStore, userid: string, filename: string, lastUpdate: number, content: BinaryValue): Promise<void> {
  if (typeof userid !== 'string' || typeof filename !== 'string' || !Number.isSafeInteger(lastUpdate) || !content) {
    throw bad('APPLY SIEVE needs USERID, FILENAME, LAST_UPDATE and CONTENT');
  }
  validateUserid(userid);
  validateFilename(filename);
  const bytes = await store.binary(content, `sieve script ${filename}`);
  if (!filename.endsWith('.script')) return;
  const name = filename.slice(0, -7);
  const guid = createHash('sha1').update(bytes).digest('hex');
  store.tx(() => {
    store.db
      .prepare('INSERT OR REPLACE INTO sieve (userid, name, content, last_update, guid) VALUES (?, ?, ?, ?, ?)')
      .run(userid, name, bytes, lastUpdate, guid);
  });
}

export function applyUnsieve(store: ReplicaStore, userid: string, filename: string): void {
  if (typeof userid !== 'string' || typeof filename !== 'string') throw bad('USERID and FILENAME are required');
  validateUserid(userid);
  validateFilename(filename);
  store.tx(() => {
    const active = store.q('SELECT name FROM sieve_active WHERE userid = ?').get(userid) as { name: string } | undefined;
    if (filename.endsWith('.script')) {
      const name = filename.slice(0, -7);
      const r = store.q('DELETE FROM sieve WHERE userid = ? AND name = ?').run(userid, name);
      if (r.changes === 0) throw generic(`No sieve script ${filename} for ${userid}`);
      if (active?.name === name) store.q('DELETE FROM sieve_active WHERE userid = ?').run(userid);
    } else if (filename.endsWith('.bc')) {
      if (active?.name === filename.slice(0, -3)) store.q('DELETE FROM sieve_active WHERE userid = ?').run(userid);
    }
  });
}

export function applyActivateSieve(store: ReplicaStore, userid: string, filename: string): void {
  if (typeof userid !== 'string' || typeof filename !== 'string') throw bad('USERID and FILENAME are required');
  validateUserid(userid);
  validateFilename(filename);
  const name = filename.endsWith('.bc') ? filename.slice(0, -3) : filename.endsWith('.script') ? filename.slice(0, -7) : filename;
  store.tx(() => {
    if (!store.q('SELECT 1 FROM sieve WHERE userid = ? AND name = ?').get(userid, name)) {
      throw generic(`No sieve script ${name} for ${userid}`);
    }
    store.q('INSERT OR REPLACE INTO sieve_active (userid, name) VALUES (?, ?)').run(userid, name);
  });
}

export function applyUnactivateSieve(store: ReplicaStore, userid: string): void {
  if (typeof userid !== 'string') throw bad('USERID is required');
  validateUserid(userid);
  store.tx(() => {
    store.q('DELETE FROM sieve_active WHERE userid = ?').run(userid);
  });
}
