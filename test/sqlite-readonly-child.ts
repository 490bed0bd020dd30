/**
 * Child process of the read-only open tests: commits one chunk to a backup
 * index (or one row to the replica database), then opens a second
 * transaction, and either dies by SIGKILL inside it (`*-kill`) or reports
 * `open` and keeps the transaction open until its stdin closes (`*-hold`,
 * `*-spill`). Except in `*-hold`, the cache is one page, so the transaction
 * spills pages into the database file (rollback mode: under an EXCLUSIVE
 * lock).
 */
import * as path from 'node:path';
import { BackupIndex } from '../sinks/backup/index-db.js';
import { openDatabase } from '../sinks/replica/db.js';

const [mode, dir] = [process.argv[2]!, process.argv[3]!];
let db;
if (mode.startsWith('backup')) {
  const idx = BackupIndex.open(path.join(dir, 'x.index'), { dataFileSize: 0 });
  idx.beginChunk(1, 0, 'a'.repeat(40));
  idx.endChunk(2, 100, 'b'.repeat(40));
  if (!mode.endsWith('-hold')) idx.db.pragma('cache_size = 1');
  idx.beginChunk(3, 100, 'c'.repeat(40));
  const ins = idx.db.prepare('INSERT INTO chunk (ts_start, offset, file_sha1) VALUES (?, ?, ?)');
  for (let i = 0; i < 3000; i++) ins.run(4, 1000 + i, 'd'.repeat(40));
  db = idx.db;
} else {
  db = openDatabase(dir, true);
  db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('committed', 'yes');
  if (!mode.endsWith('-hold')) db.pragma('cache_size = 1');
  db.exec('BEGIN');
  const ins = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)');
  for (let i = 0; i < 3000; i++) ins.run(`torn-${i}`, 'x'.repeat(200));
}
if (mode.endsWith('-kill')) process.kill(process.pid, 'SIGKILL');
process.stdout.write('open\n');
process.stdin.resume();
process.stdin.on('end', () => {
  db.exec('ROLLBACK');
  db.close();
  process.exit(0);
});
