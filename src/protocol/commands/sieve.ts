/** Sieve scripts: APPLY SIEVE / UNSIEVE / ACTIVATE_SIEVE / UNACTIVATE_SIEVE and GET FETCH_SIEVE. */
import type { BinaryValue } from '../types.js';
import type { SubDef } from './define.js';
import { binaryValue, fields, kvGet, num, parseDate, parseMap, str } from './fields.js';

export interface SieveOp { userid: string; filename: string; lastUpdate: number; content: BinaryValue }
export interface SieveFileOp { userid: string; filename: string }
export interface SieveUserOp { userid: string }

const sieveFile = (op: SieveFileOp) => fields([['USERID', str(op.userid)], ['FILENAME', str(op.filename)]]);

export const SIEVE: SubDef<SieveOp> = {
  handler: 'store',
  // Decoders of different sub-commands look alike (one typed read per field,
  // then the operand); each reads its own fields with their own types, which a
  // generic field-list decoder would lose.
  decode(v, { f }) {
    const userid = f.str(v, 'USERID');
    const filename = f.str(v, 'FILENAME');
    const lastUpdate = f.date(v, 'LAST_UPDATE');
    const content = f.map(v, 'CONTENT');
    return { userid, filename, lastUpdate, content };
  },
  decodeBackup(v, { f }) {
    const userid = f.str(v, 'USERID');
    return {
      userid,
      filename: f.strOpt(v, 'FILENAME') ?? '',
      lastUpdate: parseDate(kvGet(v, 'LAST_UPDATE')) ?? 0,
      content: parseMap(kvGet(v, 'CONTENT')) ?? { kind: 'buffer', value: Buffer.alloc(0) },
    };
  },
  encode: (op, o) =>
    fields([['USERID', str(op.userid)], ['FILENAME', str(op.filename)], ['LAST_UPDATE', num(op.lastUpdate)], ['CONTENT', binaryValue(op.content, o)]]),
};

export const UNSIEVE: SubDef<SieveFileOp> = {
  handler: 'store',
  decode: (v, { f }) => ({ userid: f.str(v, 'USERID'), filename: f.str(v, 'FILENAME') }),
  decodeBackup: (v, { f }) => ({ userid: f.str(v, 'USERID'), filename: f.strOpt(v, 'FILENAME') ?? '' }),
  encode: sieveFile,
};

export const ACTIVATE_SIEVE: SubDef<SieveFileOp> = {
  handler: 'store',
  decode: (v, { f }) => ({ userid: f.str(v, 'USERID'), filename: f.str(v, 'FILENAME') }),
  decodeBackup: (v, { f }) => ({ userid: f.strOpt(v, 'USERID') ?? '', filename: f.strOpt(v, 'FILENAME') ?? '' }),
  encode: sieveFile,
};

export const UNACTIVATE_SIEVE: SubDef<SieveUserOp> = {
  handler: 'store',
  decode: (v, { f }) => ({ userid: f.str(v, 'USERID') }),
  decodeBackup: (v, { f }) => ({ userid: f.strOpt(v, 'USERID') ?? '' }),
  encode: (op) => fields([['USERID', str(op.userid)]]),
};

export const GET_FETCH_SIEVE: SubDef<SieveFileOp> = {
  handler: 'store',
  decode: (v, { f }) => ({ userid: f.str(v, 'USERID'), filename: f.str(v, 'FILENAME') }),
  encode: sieveFile,
};
