/**
 * Keeping a streaming session's memory flat.
 *
 * Node allocates a fresh Buffer for every socket read (64 KiB) and every
 * inflated chunk. Their bytes live outside the V8 heap and are freed only
 * when the small JS objects holding them are collected. Those objects fill
 * the young generation slowly, so without help a session streaming a large
 * message carries tens of MB of dead buffers between collections (measured:
 * a bare socket-to-file pipe grows by ~40 MB over 200 MB of input; with a
 * minor GC every few MB of input it grows by ~10 MB).
 *
 * `noteInput(octets)` counts input across all sessions of the process and
 * runs a minor (scavenge) collection every RELEASE_EVERY octets. A scavenge
 * of mostly dead objects takes well under a millisecond, so the cost is a
 * small fraction of the time it takes to receive that many octets.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const RELEASE_EVERY = 4 * 1024 * 1024;

type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let gc: GcFunction | null | undefined;
let pending = 0;

function collector(): GcFunction | null {
  if (gc !== undefined) return gc;
  try {
    // Exposes `gc` to a fresh context only; the process's own global stays as it was.
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as GcFunction;
  } catch {
    gc = null; // no collector: memory is still bounded, only less tightly
  }
  return gc;
}

export function noteInput(octets: number): void {
  pending += octets;
  if (pending < RELEASE_EVERY) return;
  pending = 0;
  collector()?.({ type: 'minor' });
}
