/**
 * What a restore sends, worked out from the backup index as Cyrus 3.6
 * backup/restore.c does (restore_add_object, restore_add_mailbox,
 * restore_add_message, apply_mailbox_options): a list of destination
 * mailboxes, each with the records to restore into it, and per partition
 * the GUIDs to reserve.
 */
import type { BackupIndex, MailboxRow, RecordRow } from '../../../sinks/backup/index-db.js';
import { DEFAULT_DELETED_PREFIX } from '../../protocol/names.js';
import type { ExpungedMode } from './args.js';

export interface PlanOptions {
  acl?: string;
  overrideMboxname?: string;
  overridePartition?: string;
  keepUidvalidity: boolean;
  keepDeletedPrefix: boolean;
  expunged: ExpungedMode;
  recurse: boolean;
  unixhierarchysep: boolean;
  deletedPrefix?: string;
}

export interface PlanMailbox {
  mboxname: string;
  /** The backup's mailbox row it came from (the first one, with -M). */
  source: MailboxRow | null;
  uniqueid: string | null;
  mboxtype: string | null;
  partition: string | null;
  acl: string | null;
  uidvalidity: number;
  highestmodseq: number | bigint;
  records: RecordRow[];
  /**
   * Records (ids) sent without their \Expunged flag: all of them with -x,
   * and a message named by its GUID. Deliberate difference from Cyrus
   * restore, which keeps the flag, so that `-x` or a GUID puts an expunged
   * message back as a still-expunged record no IMAP client sees; here it
   * comes back visible.
   */
  revive: Set<number>;
}

export interface Plan {
  mailboxes: PlanMailbox[];
  /** Every mailbox name in the backup (and -M's): where the server may look for GUIDs it already has. */
  reserveFolders: string[];
  /** partition -> GUIDs (no duplicates, first-seen order). */
  reserve: Map<string, string[]>;
  /** Objects that named nothing in the backup. */
  notFound: string[];
}

const HEX36 = /^[0-9a-z]+$/;

function isUniqueid(s: string): boolean {
  return (s.length === 24 && HEX36.test(s)) || (s.length === 36 && /^[-0-9a-z]+$/.test(s));
}

function isGuid(s: string): boolean {
  return /^[0-9a-fA-F]{40}$/.test(s);
}

/** Cyrus mbname_isdeleted + mbname_set_isdeleted(0): `DELETED.user.x.HEX` -> `user.x`. */
export function trimDeletedPrefix(name: string, prefix = DEFAULT_DELETED_PREFIX): string {
  const p = `${prefix}.`;
  let domain = '';
  let local = name;
  const bang = name.indexOf('!');
  if (bang >= 0) {
    domain = name.slice(0, bang + 1);
    local = name.slice(bang + 1);
  }
  if (!local.startsWith(p)) return name;
  const rest = local.slice(p.length);
  const dot = rest.lastIndexOf('.');
  if (dot <= 0 || !/^[0-9A-F]{8,}$/i.test(rest.slice(dot + 1))) return name;
  return domain + rest.slice(0, dot);
}

export class Planner {
  private readonly byName = new Map<string, PlanMailbox>();
  private readonly order: PlanMailbox[] = [];
  private readonly reserve = new Map<string, string[]>();
  private readonly reserveSeen = new Map<string, Set<string>>();
  private readonly folders: string[];
  private readonly notFound: string[] = [];

  constructor(
    private readonly index: BackupIndex,
    private readonly opts: PlanOptions,
  ) {
    this.folders = index.mailboxes().map((m) => m.mboxname);
  }

  /** `-a`: every mailbox in the backup. */
  addAll(): void {
    for (const m of this.index.mailboxes()) {
      // Deliberate difference from Cyrus restore -a: a mailbox the backup
      // records as deleted (APPLY UNMAILBOX, or renamed into the deleted
      // namespace by delete_mode: delayed) is left out, so that `-a`
      // rebuilds the user as it was (Cyrus trims DELETED.user.x.HEX back to
      // user.x and merges it into the live user.x). Name it, or give -D, to
      // get it back.
      if (m.deleted !== null) continue;
      if (!this.opts.keepDeletedPrefix && trimDeletedPrefix(m.mboxname, this.opts.deletedPrefix) !== m.mboxname) continue;
      this.addMailbox(m, null);
    }
  }

  /** One command-line object: a uniqueid, a message GUID or a mailbox name. */
  addObject(name: string): void {
    if (isUniqueid(name)) {
      const m = this.index.mailboxByUniqueid(name);
      if (m) return this.addMailboxTree(m);
    }
    if (isGuid(name)) {
      const guid = name.toLowerCase();
      const records = this.index.mailboxes().flatMap((m) => this.index.mailboxRecords(m.id).filter((r) => r.guid === guid).map((r) => ({ m, r })));
      if (records.length > 0 || this.index.hasMessage(guid)) {
        if (this.opts.overrideMboxname !== undefined) {
          const msg = this.index.messageByGuid(guid)!;
          const r = records[0]?.r ?? { guid, size: msg.size, uid: 0, expunged: null } as RecordRow;
          this.addMailbox(null, [r], msg.partition, true);
        } else {
          for (const { m, r } of records) this.addMailbox(m, [r], null, true);
        }
        return;
      }
    }
    const m = this.findMailbox(name);
    if (m) return this.addMailboxTree(m);
    this.notFound.push(name);
  }

  plan(): Plan {
    return { mailboxes: this.order, reserveFolders: [...this.folders], reserve: this.reserve, notFound: this.notFound };
  }

  private findMailbox(name: string): MailboxRow | null {
    const candidates = [name];
    if (this.opts.unixhierarchysep && name.includes('/')) candidates.push(name.replace(/\./g, '^').replace(/\//g, '.'));
    for (const n of candidates) {
      const m = this.index.mailboxByName(n);
      if (m) return m;
    }
    // A folder deleted with delete_mode: delayed lives on as DELETED.<name>.<hex>;
    // naming the folder finds its newest deleted copy.
    const prefix = this.opts.deletedPrefix ?? DEFAULT_DELETED_PREFIX;
    let best: MailboxRow | null = null;
    for (const m of this.index.mailboxes()) {
      for (const n of candidates) {
        if (trimDeletedPrefix(m.mboxname, prefix) === n && m.mboxname !== n && (best === null || m.id > best.id)) best = m;
      }
    }
    return best;
  }

  private addMailboxTree(m: MailboxRow): void {
    this.addMailbox(m, null);
    if (!this.opts.recurse) return;
    const prefix = `${m.mboxname}.`;
    for (const sub of this.index.mailboxes()) {
      if (sub.mboxname.startsWith(prefix)) this.addMailbox(sub, null);
    }
  }

  /** restore_add_mailbox / restore_add_message: `records` null = all of the mailbox's. */
  private addMailbox(m: MailboxRow | null, only: RecordRow[] | null, partition: string | null = null, reviveAll = false): void {
    const o = this.opts;
    let records = only ?? this.index.mailboxRecords(m!.id);
    if (o.expunged === 'exclude') records = records.filter((r) => r.expunged === null);
    if (o.expunged === 'only') records = records.filter((r) => r.expunged !== null);
    let mboxname = o.overrideMboxname ?? m!.mboxname;
    if (!o.keepDeletedPrefix) mboxname = trimDeletedPrefix(mboxname, o.deletedPrefix);
    const part = o.overridePartition ?? m?.partition ?? partition;
    let acl = m?.acl ?? null;
    if (o.acl !== undefined) acl = o.acl === '' ? null : o.acl;
    const entry: PlanMailbox = {
      mboxname,
      source: m,
      uniqueid: o.keepUidvalidity ? (m?.uniqueid ?? null) : null,
      mboxtype: m?.mboxtype ?? null,
      partition: part,
      acl,
      uidvalidity: o.keepUidvalidity ? Number(m?.uidvalidity ?? 0) : 0,
      highestmodseq: o.keepUidvalidity ? (m?.highestmodseq ?? 0) : 0,
      records,
      revive: new Set(o.expunged === 'only' || reviveAll ? records.map((r) => r.id) : []),
    };
    if (o.overrideMboxname !== undefined && !this.folders.includes(mboxname)) this.folders.push(mboxname);
    const reservePart = part ?? 'default';
    let list = this.reserve.get(reservePart);
    let seen = this.reserveSeen.get(reservePart);
    if (!list || !seen) {
      list = [];
      seen = new Set();
      this.reserve.set(reservePart, list);
      this.reserveSeen.set(reservePart, seen);
    }
    for (const r of records) {
      if (!seen.has(r.guid)) {
        seen.add(r.guid);
        list.push(r.guid);
      }
    }
    // my_mailbox_list_add: a second entry for the same name adds its records.
    const existing = this.byName.get(mboxname);
    if (existing) {
      const have = new Set(existing.records.map((r) => r.id));
      for (const r of records) if (!have.has(r.id)) existing.records.push(r);
      for (const id of entry.revive) existing.revive.add(id);
      return;
    }
    this.byName.set(mboxname, entry);
    this.order.push(entry);
  }
}
