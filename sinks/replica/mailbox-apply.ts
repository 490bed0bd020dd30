/**
 * APPLY MAILBOX on the replica (replica-semantics §6): the checks in Cyrus's
 * order, then one transaction that writes records, annotations and the
 * mailbox row, then the CRC comparison. commitMailbox runs named steps.
 */
import { CommandError } from '../../transforms/errors.js';
import type { MailboxIn, RecordIn } from '../../src/protocol/types.js';
import { ANNOT_CRC_INIT, asciiLower, crcMatch } from '../../src/protocol/crc.js';
import {
  ancestors,
  mailboxOwner,
  parseMailboxName,
  validateMailboxName,
  validatePartition,
} from '../../src/protocol/names.js';
import {
  LIVE,
  PLACEHOLDER,
  TOMBSTONE,
  fromDb64,
  mailboxFromRow,
  recordFromRow,
  toDb64,
  type MailboxRow,
  type RecordRow,
} from './db.js';
import type { ReplicaStore, SessionFlags } from './store.js';
import { parseMboxtype } from './store.js';
import {
  bad,
  generic,
  ATOM_RE,
  optionLetters,
  ParsedRecord,
  ResolvedAnnot,
  mutableColumns,
  recordCrcs,
  insertRecord,
  parseRecord,
} from './records.js';

/** Resolves every staged value of an APPLY MAILBOX before its transaction. */
export async function prepareMailbox(store: ReplicaStore, m: MailboxIn): Promise<{ annots: ResolvedAnnot[] | null; recordAnnots: (ResolvedAnnot[] | null)[] }> {
  const annots = await store.resolveAnnots(m.annotations, 'MAILBOX');
  const recordAnnots: (ResolvedAnnot[] | null)[] = [];
  for (const r of m.records ?? []) recordAnnots.push(await store.resolveAnnots(r?.annotations, `RECORD ${r?.uid}`));
  return { annots, recordAnnots };
}

export async function applyMailbox(store: ReplicaStore, m: MailboxIn, flags: SessionFlags): Promise<void> {
  if (!m || typeof m.uniqueid !== 'string' || typeof m.mboxname !== 'string' || typeof m.highestmodseq !== 'bigint') {
    throw bad('APPLY MAILBOX needs UNIQUEID, MBOXNAME and HIGHESTMODSEQ');
  }
  const name = validateMailboxName(m.mboxname);
  // eslint-disable-next-line no-control-regex -- a UNIQUEID holds no control octets
  if (m.uniqueid.length === 0 || m.uniqueid.length > 256 || /[\x00-\x20\x7f]/.test(m.uniqueid)) {
    throw bad(`Invalid UNIQUEID ${JSON.stringify(m.uniqueid.slice(0, 60))}`);
  }
  const t = parseMboxtype(m.mboxtype);
  // Step 1: sieve gate.
  if (t.type === 'f' && !flags.sieveMailboxMode) {
    throw bad('A sieve-script mailbox (MBOXTYPE f) needs SIEVE-MAILBOX to be enabled first');
  }
  // Step 2: placeholder / tombstone stub.
  if (t.placeholder || t.tombstone) {
    applyStub(store, name, m, t.type, t.placeholder ? PLACEHOLDER : TOMBSTONE);
    return;
  }
  // Step 3: required fields.
  const missing: string[] = [];
  if (typeof m.partition !== 'string') missing.push('PARTITION');
  for (const [k, v] of [
    ['LAST_UID', m.lastUid],
    ['RECENTUID', m.recentUid],
    ['RECENTTIME', m.recentTime],
    ['LAST_APPENDDATE', m.lastAppenddate],
    ['POP3_LAST_LOGIN', m.pop3LastLogin],
    ['UIDVALIDITY', m.uidvalidity],
  ] as const) {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) missing.push(k);
  }
  if (typeof m.acl !== 'string') missing.push('ACL');
  if (typeof m.options !== 'string') missing.push('OPTIONS');
  if (!Array.isArray(m.records)) missing.push('RECORD');
  if (missing.length > 0) throw bad(`APPLY MAILBOX ${name}: missing or ill-typed ${missing.join(', ')}`);
  const partition = validatePartition(m.partition);
  const prepared = await prepareMailbox(store, m);
  commitMailbox(store, name, m, t.type, partition, prepared, flags);
}

export function applyStub(store: ReplicaStore, name: string, m: MailboxIn, type: string, state: number): void {
  store.tx(() => {
    const e = store.mailboxByName(name);
    const other = store.mailboxByUniqueid(m.uniqueid);
    if (state === PLACEHOLDER && other && other.name !== name) {
      throw generic(`Uniqueid ${m.uniqueid} is already used by ${other.name}`);
    }
    if (e) store.deleteEntry(e.id);
    store.db
      .prepare(
        `INSERT INTO mailbox (name, state, uniqueid, mbtype, foldermodseq, createdmodseq, uidvalidity) VALUES (?, ?, ?, ?, ?, ?, 0)`,
      )
      .run(name, state, m.uniqueid, type, toDb64(m.highestmodseq), toDb64(m.createdmodseq ?? 0n));
  });
}

type Prepared = { annots: ResolvedAnnot[] | null; recordAnnots: (ResolvedAnnot[] | null)[] };

/** The mailbox an APPLY MAILBOX lands on (step 5). */
interface Target {
  /** whatever entry holds the name (live, placeholder or tombstone) */
  entry: MailboxRow | null;
  /** the live mailbox with the same uniqueid: updated in place */
  existing: MailboxRow | null;
  /** a live mailbox of another uniqueid that is replaced (FORCE, or never used) */
  replace: MailboxRow | null;
}

interface Prior {
  highestmodseq: bigint;
  uidvalidity: number;
  lastUid: number;
  xconvmodseq: bigint;
  crcs: { basic: number; annot: number };
}

/** Step 9's outcome: what changes, and the mailbox's user flags afterwards. */
interface RecordPlan {
  updates: { rec: ParsedRecord; old: RecordRow }[];
  appends: { rec: ParsedRecord; size: number; hasBlob: boolean }[];
  mbFlags: string[];
  flagKey: Map<string, string>;
}

/** §6 steps 5-11 in one transaction; the CRC mismatch of step 11 is reported after the commit. */
export function commitMailbox(
  store: ReplicaStore,
  name: string,
  m: MailboxIn,
  type: string,
  partition: string,
  prepared: Prepared,
  flags: SessionFlags,
): void {
  const checksumAfter = store.tx(() => {
    const target = resolveTarget(store, name, m, flags);
    const prior = priorState(target.existing);
    checkSince(name, m, prior);
    if (target.existing && target.existing.mbtype !== type) {
      throw generic(`${name} is of type ${target.existing.mbtype}, not ${type}`);
    }
    if (!flags.forceMode) checkRegressions(name, m, prior);
    if (m.badRecord) throw new CommandError('IMAP_PROTOCOL_ERROR', `${name}: a RECORD could not be parsed`);
    const plan = planRecords(store, name, m, target.existing, prior, prepared, flags);
    const mb = targetRow(store, name, m, type, partition, target);
    addMailboxFlags(m, plan);
    const crcs = writeRecords(store, mb, plan);
    store.setAnnots('mailbox_annot', [mb.id], prepared.annots ?? []);
    updateMailboxRow(store, mb, m, plan.mbFlags, crcs, flags);
    updateOwner(store, name, m);
    return compareCrcs(store, name, m, crcs);
  });
  if (checksumAfter) throw checksumAfter;
}

/** Step 5: the uniqueid must not belong to another name; a live mailbox of another uniqueid is replaced only when allowed. */
function resolveTarget(store: ReplicaStore, name: string, m: MailboxIn, flags: SessionFlags): Target {
  const byUid = store.mailboxByUniqueid(m.uniqueid);
  if (byUid && byUid.name !== name) {
    throw new CommandError('IMAP_MAILBOX_MOVED', `Uniqueid ${m.uniqueid} belongs to ${byUid.name}, not ${name}`);
  }
  const entry = store.mailboxByName(name);
  let existing: MailboxRow | null = null;
  let replace: MailboxRow | null = null;
  if (entry && entry.state === LIVE) {
    if (entry.uniqueid === m.uniqueid) existing = entry;
    else if (flags.forceMode || entry.lastUid === 0) replace = entry;
    else throw new CommandError('IMAP_MAILBOX_MOVED', `${name} exists with uniqueid ${entry.uniqueid}, not ${m.uniqueid}`);
  }
  if (!existing) {
    const p = parseMailboxName(name, store.names);
    if (p.userid !== null && !p.deleted && p.rest !== '') {
      const liveAncestor = ancestors(name).some((a) => store.mailboxByName(a)?.state === LIVE);
      if (!liveAncestor) throw generic(`Cannot create ${name}: no live parent mailbox`);
    }
  }
  return { entry, existing, replace };
}

function priorState(existing: MailboxRow | null): Prior {
  return {
    highestmodseq: existing?.highestmodseq ?? 0n,
    uidvalidity: existing?.uidvalidity ?? 0,
    lastUid: existing?.lastUid ?? 0,
    xconvmodseq: existing?.xconvmodseq ?? 0n,
    crcs: { basic: existing?.crcBasic ?? 0, annot: ((existing?.crcAnnot ?? 0) ^ ANNOT_CRC_INIT) >>> 0 },
  };
}

/** Step 6: SINCE_MODSEQ / SINCE_CRC must describe what the replica holds. */
function checkSince(name: string, m: MailboxIn, prior: Prior): void {
  const since = m.sinceModseq ?? 0n;
  if (since !== 0n && (since !== prior.highestmodseq || !crcMatch({ basic: m.sinceCrc ?? 0, annot: m.sinceCrcAnnot ?? 0 }, prior.crcs))) {
    throw new CommandError('IMAP_SYNC_CHANGED', `${name} changed since modseq ${since}`);
  }
}

/** Step 8: without FORCE the master may not be behind the replica. */
function checkRegressions(name: string, m: MailboxIn, prior: Prior): void {
  const xconv = m.xconvmodseq ?? 0n;
  if (
    m.highestmodseq < prior.highestmodseq ||
    m.uidvalidity! < prior.uidvalidity ||
    m.lastUid! < prior.lastUid ||
    (xconv !== 0n && xconv < prior.xconvmodseq)
  ) {
    throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: the replica is ahead of the master`);
  }
}

/** Adds a record's user flags to the mailbox's (at most 128) and spells them as the mailbox does. */
function mergeRecordFlags(name: string, rec: ParsedRecord, plan: RecordPlan): void {
  for (const f of rec.userflags) {
    const k = asciiLower(f);
    if (!plan.flagKey.has(k)) {
      if (plan.flagKey.size >= 128) throw new CommandError('IMAP_PROTOCOL_ERROR', `${name}: more than 128 user flags`);
      plan.flagKey.set(k, f);
      plan.mbFlags.push(f);
    }
  }
  rec.userflags = rec.userflags.map((f) => plan.flagKey.get(asciiLower(f))!);
}

/** Step 9, one record that exists here: an update, or nothing when both are expunged. */
function planUpdate(name: string, rec: ParsedRecord, old: RecordRow, flags: SessionFlags, plan: RecordPlan): void {
  if (old.expunged && rec.expunged) return;
  if (old.guid !== rec.guid) throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: UID ${rec.uid} has another GUID here`);
  if (old.modseq > rec.modseq && !flags.forceMode) {
    throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: UID ${rec.uid} has a newer modseq here`);
  }
  if (old.expunged && !rec.expunged) throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: UID ${rec.uid} is expunged here`);
  plan.updates.push({ rec, old });
}

/** Step 9, one new record: an append, with its blob when the store has it. */
function planAppend(store: ReplicaStore, name: string, rec: ParsedRecord, sent: RecordIn, prior: Prior, plan: RecordPlan): void {
  if (rec.uid <= prior.lastUid) {
    if (rec.expunged) return;
    throw new CommandError('IMAP_SYNC_CHECKSUM', `${name}: UID ${rec.uid} is unknown here`);
  }
  // A verified blob anywhere in the store serves (the replica's option in §6.2 step 9):
  // every blob row was inserted only after its bytes hashed to the GUID and were fsynced.
  const blob = store.blobKnown(rec.guid);
  if (blob) plan.appends.push({ rec, size: blob.size, hasBlob: true });
  else if (rec.expunged) plan.appends.push({ rec, size: sent.size >>> 0, hasBlob: false });
  else throw new CommandError('IMAP_IOERROR', `${name}: message ${rec.guid} for UID ${rec.uid} was never uploaded`);
}

/** Step 9: every RECORD checked against what the replica holds, before anything is written. */
function planRecords(
  store: ReplicaStore,
  name: string,
  m: MailboxIn,
  existing: MailboxRow | null,
  prior: Prior,
  prepared: Prepared,
  flags: SessionFlags,
): RecordPlan {
  const mbFlags = [...(existing?.userflags ?? [])];
  const plan: RecordPlan = { updates: [], appends: [], mbFlags, flagKey: new Map(mbFlags.map((f) => [asciiLower(f), f])) };
  const getRec = store.q('SELECT * FROM record WHERE mailbox_id = ? AND uid = ?');
  let lastSeen = 0;
  const records = m.records ?? [];
  for (let i = 0; i < records.length; i++) {
    const rec = parseRecord(records[i]!, prepared.recordAnnots[i] ?? null);
    mergeRecordFlags(name, rec, plan);
    if (rec.uid <= lastSeen || rec.uid > m.lastUid!) {
      throw bad(`${name}: RECORD UIDs must ascend and not exceed LAST_UID (UID ${rec.uid})`);
    }
    lastSeen = rec.uid;
    const oldRow = existing ? (getRec.get(existing.id, rec.uid) as Record<string, unknown> | undefined) : undefined;
    if (oldRow) planUpdate(name, rec, recordFromRow(oldRow), flags, plan);
    else planAppend(store, name, rec, records[i]!, prior, plan);
  }
  return plan;
}

/** Step 10: the mailbox row written to: the existing one, or a new one replacing whatever held the name. */
function targetRow(store: ReplicaStore, name: string, m: MailboxIn, type: string, partition: string, t: Target): MailboxRow {
  if (t.existing) return t.existing;
  if (t.replace) store.deleteEntry(t.replace.id);
  if (t.entry && !t.replace) store.deleteEntry(t.entry.id);
  const uidvalidity = m.uidvalidity! !== 0 ? m.uidvalidity! : Math.floor(Date.now() / 1000) >>> 0;
  const info = store.db
    .prepare(`INSERT INTO mailbox (name, state, uniqueid, mbtype, partition, acl, options, uidvalidity) VALUES (?, 0, ?, ?, ?, ?, ?, ?)`)
    .run(name, m.uniqueid, type, partition, m.acl!, optionLetters(m.options), uidvalidity);
  return mailboxFromRow(store.q('SELECT * FROM mailbox WHERE id = ?').get(info.lastInsertRowid) as Record<string, unknown>);
}

/** USERFLAGS of the mailbox itself (atoms, not system flags, up to 128 in all). */
function addMailboxFlags(m: MailboxIn, plan: RecordPlan): void {
  for (const f of m.userflags ?? []) {
    if (typeof f !== 'string' || !ATOM_RE.test(f) || f.startsWith('\\')) continue;
    const k = asciiLower(f);
    if (!plan.flagKey.has(k) && plan.flagKey.size < 128) {
      plan.flagKey.set(k, f);
      plan.mbFlags.push(f);
    }
  }
}

/** Step 10: updates and appends, keeping the mailbox CRCs in step; returns them. */
function writeRecords(store: ReplicaStore, mb: MailboxRow, plan: RecordPlan): { basic: number; annot: number } {
  let crcBasic = mb.crcBasic;
  let crcAnnot = mb.crcAnnot;
  const upd = store.q(
    `UPDATE record SET modseq = ?, last_updated = ?, internaldate = ?, sysflags = ?, expunged = ?, userflags = ?,
     thrid = ?, basethrid = ?, savedate = ?, createdmodseq = ?, crc_basic = ?, crc_annot = ? WHERE mailbox_id = ? AND uid = ?`,
  );
  for (const { rec, old } of plan.updates) {
    const [b, a] = recordCrcs(rec);
    crcBasic = (crcBasic ^ old.crcBasic ^ b) >>> 0;
    crcAnnot = (crcAnnot ^ old.crcAnnot ^ a) >>> 0;
    upd.run(...mutableColumns(rec), b, a, mb.id, rec.uid);
    store.setAnnots('record_annot', [mb.id, rec.uid], rec.annots);
  }
  const now = Math.floor(Date.now() / 1000);
  for (const { rec, size, hasBlob } of plan.appends) {
    if (rec.internaldate === 0) rec.internaldate = now;
    const [b, a] = insertRecord(store, mb.id, rec, size, hasBlob);
    crcBasic = (crcBasic ^ b) >>> 0;
    crcAnnot = (crcAnnot ^ a) >>> 0;
  }
  return { basic: crcBasic, annot: crcAnnot };
}

/** Step 10: the mailbox row takes the master's fields (modseqs never go back). */
function updateMailboxRow(
  store: ReplicaStore,
  mb: MailboxRow,
  m: MailboxIn,
  mbFlags: string[],
  crcs: { basic: number; annot: number },
  flags: SessionFlags,
): void {
  const fm = m.foldermodseq && m.foldermodseq !== 0n ? m.foldermodseq : m.highestmodseq;
  const xconv = m.xconvmodseq ?? 0n;
  const newXconv = flags.forceMode ? (xconv !== 0n ? xconv : mb.xconvmodseq) : xconv > mb.xconvmodseq ? xconv : mb.xconvmodseq;
  const racl = m.raclmodseq ?? 0n;
  store.db
    .prepare(
      `UPDATE mailbox SET acl = ?, foldermodseq = ?, userflags = ?, last_uid = ?, recentuid = ?, highestmodseq = ?,
       recenttime = ?, last_appenddate = ?, pop3_last_login = ?, pop3_show_after = ?, createdmodseq = ?, options = ?,
       uidvalidity = ?, xconvmodseq = ?, raclmodseq = ?, crc_basic = ?, crc_annot = ? WHERE id = ?`,
    )
    .run(
      m.acl!,
      toDb64(fm > mb.foldermodseq ? fm : mb.foldermodseq),
      JSON.stringify(mbFlags),
      m.lastUid!,
      m.recentUid!,
      toDb64(m.highestmodseq),
      m.recentTime!,
      m.lastAppenddate!,
      m.pop3LastLogin!,
      m.pop3ShowAfter ?? 0,
      toDb64(m.createdmodseq ?? 0n),
      optionLetters(m.options),
      m.uidvalidity! !== 0 ? m.uidvalidity! : mb.uidvalidity,
      toDb64(newXconv),
      toDb64(racl > mb.raclmodseq ? racl : mb.raclmodseq),
      crcs.basic,
      crcs.annot,
      mb.id,
    );
}

/** The owner's groups and modseq high-water mark. */
function updateOwner(store: ReplicaStore, name: string, m: MailboxIn): void {
  const owner = mailboxOwner(name, store.names);
  if (owner === null) return;
  if (typeof m.usergroups === 'string') {
    store.q('INSERT OR REPLACE INTO user_groups (userid, groups) VALUES (?, ?)').run(owner, m.usergroups);
  }
  const hw = store.q('SELECT modseq FROM modseq_highwater WHERE userid = ?').get(owner) as { modseq: bigint } | undefined;
  if (!hw || fromDb64(hw.modseq) < m.highestmodseq) {
    store.q('INSERT OR REPLACE INTO modseq_highwater (userid, modseq) VALUES (?, ?)').run(owner, toDb64(m.highestmodseq));
  }
}

/** Step 11: the CRCs after applying against what the master computed; a mismatch is reported after the commit. */
function compareCrcs(store: ReplicaStore, name: string, m: MailboxIn, crcs: { basic: number; annot: number }): CommandError | null {
  const computed = { basic: crcs.basic, annot: (crcs.annot ^ ANNOT_CRC_INIT) >>> 0 };
  const sent = { basic: m.syncCrc ?? 0, annot: m.syncCrcAnnot ?? 0 };
  if (crcMatch(sent, computed)) return null;
  store.log?.info({ mailbox: name, computed, sent }, 'CRC differs after applying');
  return new CommandError(
    'IMAP_SYNC_CHECKSUM',
    `${name}: CRCs after applying are ${computed.basic}/${computed.annot}, the master sent ${sent.basic}/${sent.annot}`,
  );
}
