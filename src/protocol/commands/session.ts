/**
 * Connection switches handled by the session itself, not by a store:
 * APPLY FORCE and APPLY CAPABILITIES (sync_server only; backupd refuses both).
 */
import type { SubDef } from './define.js';
import { kv, list, listItems, scalarText } from './fields.js';

export type ForceOp = Record<never, never>;
export interface CapabilitiesOp { names: string[] }

export const FORCE: SubDef<ForceOp, 'session'> = {
  handler: 'session',
  // sync_apply ignores FORCE's operand.
  decode: () => ({}),
  encode: () => kv([]),
};

export const CAPABILITIES: SubDef<CapabilitiesOp, 'session'> = {
  handler: 'session',
  decode(v) {
    // sync_apply_capabilities walks the members; a non-list has none.
    const names: string[] = [];
    for (const it of listItems(v) ?? []) {
      const t = scalarText(it);
      if (t !== null) names.push(t);
    }
    return { names };
  },
  encode: (op) => list(op.names.map((n) => ({ kind: 'atom', value: n }))),
};
