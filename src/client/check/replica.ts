/**
 * `cyrsync check` of a replica store (sinks/replica): SQLite metadata plus
 * message files by GUID under the partitions. Read-only, and safe next to a
 * live server:
 *
 * - each mailbox is checked inside one read transaction (a WAL snapshot), so
 *   its row, its records and their blob rows are seen as one commit left
 *   them; a record can only reference a blob row committed with or before it;
 * - a file found missing, or a file found without a row, is looked up again
 *   after the walk (housekeeping may have collected the first, an upload may
 *   be between its rename and its commit for the second) and reported only
 *   if it is still so;
 * - staging files of a live process are in use, not leftovers.
 *
 * With users named, only their mailboxes and the files their records refer
 * to are checked; the whole-store walks (files without rows, staging) run
 * only for a full check.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { recordAnnotCrc, recordBasicCrc, ANNOT_CRC_INIT, type CrcRecord } from '../../protocol/crc.js';
import { belongsToUser, isGuid } from '../../protocol/names.js';
import { LIVE, mailboxFromRow, num, recordFromRow, type DB, type MailboxRow } from '../../../sinks/replica/db.js';
import { pool } from '../../../sinks/replica/blobs.js';
import type { ReplicaStore } from '../../../sinks/replica/store.js';
import { processAlive, readdirOrNull, type CheckCounts, type Problem } from './problems.js';

export interface ReplicaCheckOptions {
  /** only these users' mailboxes and files (default: the whole store) */
  users?: readonly string[];
  /** hash every message file against its GUID (default true) */
  hashContent?: boolean;
  /** pause before confirming suspects (tests use 0) */
  settleMs?: number;
}

type Report = (p: Problem) => void;

interface BlobRow {
  guid: string;
  partition: string;
  size: number;
}

/** Checks the store and calls `report` for every problem; returns what was looked at. */
export async function checkReplica(store: ReplicaStore, counts: CheckCounts, report: Report, opts: ReplicaCheckOptions = {}): Promise<void> {
  const users = opts.users ?? [];
  const wanted = (name: string): boolean => users.length === 0 || users.some((u) => belongsToUser(name, u, store.names));
  const referenced = new Set<string>();
  for (const id of mailboxIds(store.db)) {
    checkMailbox(store, id, counts, report, wanted, users.length > 0 ? referenced : null);
  }
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, opts.settleMs ?? 1000));
  const rows = users.length === 0 ? allBlobRows(store.db) : blobRowsFor(store.db, referenced);
  await checkBlobs(store, rows, counts, report, opts.hashContent !== false, settle);
  if (users.length === 0) await checkFileTree(store, counts, report, settle);
}

function mailboxIds(db: DB): number[] {
  return (db.prepare('SELECT id FROM mailbox ORDER BY name').all() as { id: bigint }[]).map((r) => num(r.id));
}

/** One mailbox in one snapshot: its records' CRCs, uids, modseqs and blob rows. */
function checkMailbox(store: ReplicaStore, id: number, counts: CheckCounts, report: Report, wanted: (n: string) => boolean, referenced: Set<string> | null): void {
  const db = store.db;
  db.transaction(() => {
    const row = db.prepare('SELECT * FROM mailbox WHERE id = ?').get(id) as Record<string, unknown> | undefined;
    if (row === undefined) return;
    const mb = mailboxFromRow(row);
    if (mb.state !== LIVE || !wanted(mb.name)) return;
    counts.mailboxes++;
    const annots = annotationsByUid(db, id);
    const at = (uid: number) => ({ store: 'replica' as const, mailbox: mb.name, uid });
    let basic = 0;
    let annot = 0;
    const records = db.prepare(
      `SELECT r.*, b.partition AS b_partition, b.size AS b_size FROM record r LEFT JOIN blob b ON b.guid = r.guid
       WHERE r.mailbox_id = ? ORDER BY r.uid`,
    );
    for (const raw of records.iterate(id) as Iterable<Record<string, unknown>>) {
      counts.records++;
      const r = recordFromRow(raw);
      basic ^= r.crcBasic;
      annot ^= r.crcAnnot;
      const c: CrcRecord = {
        uid: r.uid, modseq: r.modseq, lastUpdated: r.lastUpdated, internaldate: r.internaldate, guid: r.guid,
        systemFlags: r.sysflags, userFlags: r.userflags, expunged: r.expunged, annotations: annots.get(r.uid) ?? [],
        thrid: r.thrid, savedate: r.savedate, createdmodseq: r.createdmodseq,
      };
      const want = [recordBasicCrc(c), recordAnnotCrc(c)];
      if (want[0] !== r.crcBasic || want[1] !== r.crcAnnot) {
        report({ level: 'error', kind: 'record-crc', ...at(r.uid), detail: `stored CRC contributions ${hex(r.crcBasic)}/${hex(r.crcAnnot)}, its contents give ${hex(want[0]!)}/${hex(want[1]!)}` });
      }
      if (r.uid > mb.lastUid) report({ level: 'error', kind: 'last-uid', ...at(r.uid), detail: `record above the mailbox's last_uid ${mb.lastUid}` });
      if (r.modseq > mb.highestmodseq) report({ level: 'error', kind: 'highestmodseq', ...at(r.uid), detail: `record modseq ${r.modseq} above the mailbox's highestmodseq ${mb.highestmodseq}` });
      if (!r.hasBlob) continue;
      if (raw.b_partition === null || raw.b_partition === undefined) {
        report({ level: 'error', kind: 'missing-blob', ...at(r.uid), guid: r.guid, detail: 'the record refers to a message file the store has no row for' });
        continue;
      }
      referenced?.add(r.guid);
      const bsize = num(raw.b_size);
      if (bsize !== r.size) report({ level: 'error', kind: 'size-mismatch', ...at(r.uid), guid: r.guid, detail: `record size ${r.size}, stored file ${bsize} octets` });
    }
    checkMailboxCrc(mb, basic, annot, report);
  })();
}

function checkMailboxCrc(mb: MailboxRow, basic: number, annot: number, report: Report): void {
  const b = basic >>> 0;
  const a = annot >>> 0;
  if (b === mb.crcBasic && a === mb.crcAnnot) return;
  // As sync_crc is reported: the annotation CRC starts from its INIT value.
  const shown = (x: number, y: number): string => `${hex(x)}/${hex((y ^ ANNOT_CRC_INIT) >>> 0)}`;
  report({
    level: 'error',
    kind: 'mailbox-crc',
    store: 'replica',
    mailbox: mb.name,
    detail: `sync_crc/sync_crc_annot ${shown(mb.crcBasic, mb.crcAnnot)}, its records give ${shown(b, a)}`,
  });
}

function annotationsByUid(db: DB, id: number): Map<number, { entry: string; userid: string; value: Buffer }[]> {
  const out = new Map<number, { entry: string; userid: string; value: Buffer }[]>();
  const rows = db.prepare('SELECT uid, entry, userid, value FROM record_annot WHERE mailbox_id = ? ORDER BY uid, entry, userid').all(id) as Record<string, unknown>[];
  for (const r of rows) {
    const uid = num(r.uid);
    let list = out.get(uid);
    if (!list) out.set(uid, (list = []));
    list.push({ entry: r.entry as string, userid: r.userid as string, value: r.value as Buffer });
  }
  return out;
}

const hex = (n: number): string => (n >>> 0).toString(16).padStart(8, '0');

/** Every blob row, a page (one short read) at a time. */
function* allBlobRows(db: DB): Generator<BlobRow[]> {
  const page = db.prepare('SELECT guid, partition, size FROM blob WHERE guid > ? ORDER BY guid LIMIT 512');
  let after = '';
  for (;;) {
    const rows = (page.all(after) as Record<string, unknown>[]).map(blobRow);
    if (rows.length === 0) return;
    yield rows;
    after = rows[rows.length - 1]!.guid;
  }
}

function* blobRowsFor(db: DB, guids: Set<string>): Generator<BlobRow[]> {
  const one = db.prepare('SELECT guid, partition, size FROM blob WHERE guid = ?');
  const batch: BlobRow[] = [];
  for (const g of guids) {
    const r = one.get(g) as Record<string, unknown> | undefined;
    if (r) batch.push(blobRow(r));
    if (batch.length >= 512) yield batch.splice(0);
  }
  if (batch.length > 0) yield batch;
}

const blobRow = (r: Record<string, unknown>): BlobRow => ({ guid: r.guid as string, partition: r.partition as string, size: num(r.size) });

/** Each blob row's file: present, of its size, hashing to its GUID. */
async function checkBlobs(store: ReplicaStore, pages: Iterable<BlobRow[]>, counts: CheckCounts, report: Report, hash: boolean, settle: () => Promise<void>): Promise<void> {
  const missing: { row: BlobRow; file: string | null; why: string }[] = [];
  for (const rows of pages) {
    await pool(rows, 4, async (b) => {
      counts.blobs++;
      const root = store.blobs.partitions[b.partition];
      if (root === undefined) {
        missing.push({ row: b, file: null, why: `partition ${b.partition} is not configured` });
        return;
      }
      const file = store.blobs.blobPath(b.partition, b.guid);
      let size: number;
      try {
        size = (await fs.promises.stat(file)).size;
      } catch (err) {
        missing.push({ row: b, file, why: `${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
        return;
      }
      const where = { store: 'replica' as const, partition: b.partition, guid: b.guid, path: file };
      if (size !== b.size) {
        // One problem per file: a file of the wrong size cannot hash right either.
        report({ level: 'error', kind: 'size-mismatch', ...where, detail: `file has ${size} octets, its row says ${b.size}` });
        return;
      }
      if (!hash) return;
      try {
        const sha1 = await sha1File(file);
        if (sha1 !== b.guid) report({ level: 'error', kind: 'bad-content', ...where, detail: `content hashes to ${sha1}, not to its GUID` });
      } catch (err) {
        report({ level: 'error', kind: 'unreadable', ...where, detail: (err as Error).message });
      }
    });
  }
  if (missing.length === 0) return;
  // Collected by housekeeping since it was listed? Then nothing is wrong.
  await settle();
  const still = store.db.prepare('SELECT 1 FROM blob WHERE guid = ?');
  for (const m of missing) {
    if (still.get(m.row.guid) === undefined) continue;
    if (m.file !== null && fs.existsSync(m.file)) continue;
    report({ level: 'error', kind: 'missing-file', store: 'replica', partition: m.row.partition, guid: m.row.guid, ...(m.file ? { path: m.file } : {}), detail: `the message file of a blob row is missing (${m.why})` });
  }
}

export function sha1File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha1');
    createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** Files in the blob tree that no row knows, stray names, staging leftovers. */
async function checkFileTree(store: ReplicaStore, counts: CheckCounts, report: Report, settle: () => Promise<void>): Promise<void> {
  const suspects: { partition: string; guid: string; file: string }[] = [];
  const rowOf = store.db.prepare('SELECT partition FROM blob WHERE guid = ?');
  for (const [partition, root] of Object.entries(store.blobs.partitions)) {
    const blobsDir = path.join(root, 'blobs');
    for (const d of readdirOrNull(blobsDir) ?? []) {
      const dir = path.join(blobsDir, d.name);
      if (d.name === 'tmp' && d.isDirectory()) {
        checkStaging(dir, partition, report);
        continue;
      }
      if (!/^[0-9a-f]{2}$/.test(d.name) || !d.isDirectory()) {
        report({ level: 'warning', kind: 'stray-file', store: 'replica', partition, path: dir, detail: 'not a blob directory' });
        continue;
      }
      for (const f of readdirOrNull(dir) ?? []) {
        const file = path.join(dir, f.name);
        if (!isGuid(f.name) || !f.name.startsWith(d.name) || !f.isFile()) {
          report({ level: 'warning', kind: 'stray-file', store: 'replica', partition, path: file, detail: 'not a message file (the name is not the GUID of its directory)' });
          continue;
        }
        counts.files++;
        const row = rowOf.get(f.name) as { partition: string } | undefined;
        if (row === undefined || row.partition !== partition) suspects.push({ partition, guid: f.name, file });
      }
    }
  }
  if (suspects.length === 0) return;
  // An upload renames its file into place just before the commit of its row.
  await settle();
  for (const s of suspects) {
    const row = rowOf.get(s.guid) as { partition: string } | undefined;
    if (row?.partition === s.partition || !fs.existsSync(s.file)) continue;
    const detail = row === undefined ? 'a message file no blob row knows (space only; expire does not collect it)' : `a second copy: the blob row puts this message on partition ${row.partition}`;
    report({ level: 'warning', kind: 'orphan-file', store: 'replica', partition: s.partition, guid: s.guid, path: s.file, detail });
  }
}

/** Staging files are `<pid>-<n>-<random>.tmp`; a live pid's are in use. */
function checkStaging(dir: string, partition: string, report: Report): void {
  for (const f of readdirOrNull(dir) ?? []) {
    const pid = /^(\d+)-/.exec(f.name);
    if (pid && processAlive(Number(pid[1]))) continue;
    report({ level: 'warning', kind: 'staging-leftover', store: 'replica', partition, path: path.join(dir, f.name), detail: `staging file of a process that is gone${pid ? ` (pid ${pid[1]})` : ''}; removed at the next start of the server` });
  }
}

