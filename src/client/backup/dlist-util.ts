/**
 * Small accessors for parsed dlist values of backup records (the backup
 * tools read records as the data file holds them).
 */
import type { DlistItem, DlistValue } from '../../../transforms/dlist-types.js';
import { dlistNumber, dlistText } from '../../../sinks/backup/index-db.js';

export { dlistText };

export function kv(v: DlistValue | undefined): DlistItem[] | null {
  return v !== undefined && v.kind === 'kvlist' ? v.items : null;
}

export function list(v: DlistValue | undefined): DlistValue[] | null {
  if (v === undefined) return null;
  if (v.kind === 'list') return v.items;
  if (v.kind === 'kvlist') return v.items.map((i) => i.value);
  return null;
}

export function field(items: DlistItem[] | null, key: string): DlistValue | undefined {
  if (items === null) return undefined;
  for (const it of items) if (it.key === key) return it.value;
  return undefined;
}

export function text(items: DlistItem[] | null, key: string): string | null {
  return dlistText(field(items, key)) ?? null;
}

/** A number field as a JavaScript number (0 when absent or unparsable; huge values lose precision). */
export function num(items: DlistItem[] | null, key: string): number {
  const n = dlistNumber(field(items, key));
  return n === undefined ? 0 : Number(n);
}

/** A 64-bit field kept exact, as a decimal string ("0" when absent). */
export function bigText(items: DlistItem[] | null, key: string): string {
  const s = text(items, key);
  return s !== null && /^[0-9]{1,20}$/.test(s) ? s : '0';
}

/** The texts of a list (flags, names). */
export function texts(v: DlistValue | undefined): string[] {
  return (list(v) ?? []).map((x) => dlistText(x)).filter((x): x is string => x !== undefined);
}

/** Bytes of a string-like value (CONTENT of a SIEVE record, annotation VALUE). */
export function bytes(v: DlistValue | undefined): Buffer | null {
  if (v === undefined) return null;
  if (v.kind === 'literal') return v.value;
  if (v.kind === 'string' && Buffer.isBuffer(v.value)) return v.value;
  const t = dlistText(v);
  return t === undefined ? null : Buffer.from(t, 'latin1');
}
