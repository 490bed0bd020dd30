/**
 * User metadata: GET USER / META / QUOTA and APPLY SEEN / SUB / UNSUB /
 * QUOTA / UNQUOTA / ANNOTATION / UNANNOTATION / UNUSER.
 */
import type { DlistValue } from '../../../transforms/dlist-types.js';
import type { BinaryValue, QuotaIn, SeenIn } from '../types.js';
import type { DecodeContext, SubDef } from './define.js';
import { binaryValue, fields, kvGet, num, parseDate, parseU32, parseU64, scalarText, str, U32_MAX } from './fields.js';

export interface UseridOp { userid: string }
export interface QuotaRootOp { root: string }
export interface QuotaOp { quota: QuotaIn }
export interface SubOp { userid: string; mboxname: string }
export interface SeenOp { seen: SeenIn }
export interface AnnotationOp { mboxname: string; entry: string; userid: string; value: BinaryValue }
export interface UnannotationOp { mboxname: string; entry: string; userid: string }
export interface UnuserOp { local: boolean; userid: string }

const useridOperand = (v: DlistValue, { f }: DecodeContext): UseridOp => ({ userid: f.operand(v, 'userid', true) });

export const GET_USER: SubDef<UseridOp> = {
  handler: 'store',
  decode: useridOperand,
  decodeBackup: useridOperand,
  encode: (op) => str(op.userid),
};

export const GET_META: SubDef<UseridOp> = GET_USER;

export const GET_QUOTA: SubDef<QuotaRootOp> = {
  handler: 'store',
  decode: (v, { f }) => ({ root: f.operand(v, 'quota root', true) }),
  encode: (op) => str(op.root),
};

/** Quota resources: our name, then the keys that set it (3.10+ names before the legacy `X-` names). */
const QUOTA_KEYS: [string, string[]][] = [
  ['STORAGE', ['STORAGE']],
  ['MESSAGE', ['MESSAGE']],
  ['X-ANNOTATION-STORAGE', ['ANNOTATION-STORAGE', 'X-ANNOTATION-STORAGE']],
  ['X-NUM-FOLDERS', ['MAILBOX', 'X-NUM-FOLDERS']],
];

/**
 * sync_decode_quota_limits: every resource unlimited (absent); LIMIT sets
 * STORAGE unless it is 4294967295; each named resource then overrides.
 */
function quotaLimits(v: DlistValue, root: string): QuotaIn {
  const limits: Record<string, number> = {};
  const limit = parseU32(kvGet(v, 'LIMIT'));
  if (limit !== null && limit !== U32_MAX) limits.STORAGE = limit;
  for (const [res, keys] of QUOTA_KEYS) {
    for (const k of keys) {
      const n = parseU32(kvGet(v, k));
      if (n !== null) {
        limits[res] = n;
        break;
      }
    }
  }
  return { root, limits, modseq: parseU64(kvGet(v, 'MODSEQ')) };
}

export const QUOTA: SubDef<QuotaOp> = {
  handler: 'store',
  decode: (v, { f }) => ({ quota: quotaLimits(v, f.str(v, 'ROOT')) }),
  decodeBackup: (v, { f }) => ({ quota: quotaLimits(v, f.strOpt(v, 'ROOT') ?? '') }),
  // sync_encode_quota_limits: LIMIT for old servers, then each resource set.
  encode: (op) =>
    fields([
      ['ROOT', str(op.quota.root)],
      ['LIMIT', op.quota.limits.STORAGE !== undefined ? num(op.quota.limits.STORAGE) : undefined],
      ...QUOTA_KEYS.map(([res]): [string, DlistValue | undefined] => [res, op.quota.limits[res] !== undefined ? num(op.quota.limits[res]!) : undefined]),
      ['MODSEQ', op.quota.modseq !== null ? num(op.quota.modseq) : undefined],
    ]),
};

export const UNQUOTA: SubDef<QuotaRootOp> = {
  handler: 'store',
  decode: (v, { f }) => ({ root: f.operand(v, 'quota root', true) }),
  encode: (op) => str(op.root),
};

export const SUB: SubDef<SubOp> = {
  handler: 'store',
  decode(v, { f }) {
    // sync_apply_changesub reads MBOXNAME first
    const mboxname = f.str(v, 'MBOXNAME');
    return { userid: f.str(v, 'USERID'), mboxname };
  },
  decodeBackup(v, { f }) {
    const userid = f.str(v, 'USERID');
    return { userid, mboxname: f.str(v, 'MBOXNAME') };
  },
  encode: (op) => fields([['USERID', str(op.userid)], ['MBOXNAME', str(op.mboxname)]]),
};

export const UNSUB: SubDef<SubOp> = SUB;

export const SEEN: SubDef<SeenOp> = {
  handler: 'store',
  // One typed read per field, as every decoder (see SIEVE in ./sieve.ts).
  decode(v, { f }) {
    const userid = f.str(v, 'USERID');
    const uniqueid = f.str(v, 'UNIQUEID');
    const lastread = f.date(v, 'LASTREAD');
    const lastuid = f.u32(v, 'LASTUID');
    const lastchange = f.date(v, 'LASTCHANGE');
    const seenuids = f.str(v, 'SEENUIDS');
    return { seen: { userid, uniqueid, lastread, lastuid, lastchange, seenuids } };
  },
  decodeBackup(v, { f }) {
    const userid = f.str(v, 'USERID');
    return {
      seen: {
        userid,
        uniqueid: f.strOpt(v, 'UNIQUEID') ?? '',
        lastread: parseDate(kvGet(v, 'LASTREAD')) ?? 0,
        lastuid: parseU32(kvGet(v, 'LASTUID')) ?? 0,
        lastchange: parseDate(kvGet(v, 'LASTCHANGE')) ?? 0,
        seenuids: f.strOpt(v, 'SEENUIDS') ?? '',
      },
    };
  },
  encode: ({ seen: s }) =>
    fields([
      ['USERID', str(s.userid)],
      ['UNIQUEID', str(s.uniqueid)],
      ['LASTREAD', num(s.lastread)],
      ['LASTUID', num(s.lastuid)],
      ['LASTCHANGE', num(s.lastchange)],
      ['SEENUIDS', str(s.seenuids)],
    ]),
};

function annotationKey(v: DlistValue, { f }: DecodeContext): UnannotationOp {
  const mboxname = f.str(v, 'MBOXNAME');
  const entry = f.str(v, 'ENTRY');
  const userid = f.str(v, 'USERID');
  return { mboxname, entry, userid };
}

export const ANNOTATION: SubDef<AnnotationOp> = {
  handler: 'store',
  decode: (v, c) => ({ ...annotationKey(v, c), value: c.f.map(v, 'VALUE') }),
  encode: (op, o) =>
    fields([['MBOXNAME', str(op.mboxname)], ['ENTRY', str(op.entry)], ['USERID', str(op.userid)], ['VALUE', binaryValue(op.value, o)]]),
};

export const UNANNOTATION: SubDef<UnannotationOp> = {
  handler: 'store',
  decode: annotationKey,
  encode: (op) => fields([['MBOXNAME', str(op.mboxname)], ['ENTRY', str(op.entry)], ['USERID', str(op.userid)]]),
};

export const UNUSER: SubDef<UnuserOp> = {
  handler: 'store',
  local: true,
  // An empty (or NIL) userid is accepted and ignored by the store.
  decode: (v, { key }) => ({ local: key === 'LOCAL_UNUSER', userid: scalarText(v) ?? '' }),
  decodeBackup: (v) => ({ local: false, userid: scalarText(v) ?? '' }),
  encode: (op) => str(op.userid),
};
