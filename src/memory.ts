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

/* ------------------------------------------------------------------------ */
/* The process's memory budget                                              */
/* ------------------------------------------------------------------------ */

/**
 * One memory budget for the whole process: every session's input (command
 * lines, literals on their way to disk, the replies those commands build)
 * is admitted through it, and the server never takes in more while the
 * process is over it.
 *
 * The measure is the process's resident set, sampled as input arrives. It
 * counts everything a session holds, whatever holds it (parser buffers,
 * value trees, reply strings, zlib state, socket buffers), so no component
 * can escape the sum by under-reporting. Below the soft mark (the budget
 * less a headroom for what one command may add before the next sample)
 * every session reads freely. Above it, the budget first lets the garbage
 * collector release what is dead (a minor collection, then at most one full
 * collection per interval); if the process is still above, it serialises:
 * one session holds the pass and goes on until its command ends, every
 * other session waits before reading its next chunk (its socket stays
 * paused: backpressure to the client). When the pass is released, the next
 * waiter gets it, or every waiter goes on once the process is back under
 * the soft mark. A holder that stops reading (a slow client, a lock held by
 * a waiting session) loses the pass after `staleMs`, so the process always
 * makes progress.
 */
export interface MemoryBudgetOptions {
  /** The budget in octets. */
  limit: number;
  /** Resident set size now (default: process.memoryUsage.rss). */
  rss?: () => number;
  /** Garbage collection (default: V8's, when it can be exposed). */
  collect?: (type: 'minor' | 'major') => void;
  /** Clock in ms (default Date.now). */
  now?: () => number;
  /** Interval of the check while sessions wait, ms (default 20; 0: no timer, call poll()). */
  pollMs?: number;
  /** A holder that asked for nothing this long loses the pass (default 1000 ms). */
  staleMs?: number;
  /** Input octets between two samples while under the soft mark (default 256 KiB). */
  sampleEvery?: number;
}

/** Who asks: a session (any object identity). */
export type BudgetOwner = object;

const MAJOR_GC_INTERVAL_MS = 250;

export class MemoryBudget {
  readonly limit: number;
  /** Above this resident size the budget collects garbage, then serialises. */
  readonly soft: number;
  private readonly rss: () => number;
  private readonly collect: (type: 'minor' | 'major') => void;
  private readonly now: () => number;
  private readonly pollMs: number;
  private readonly staleMs: number;
  private readonly sampleEvery: number;
  private holder: BudgetOwner | null = null;
  private holderSeen = 0;
  private readonly waiters: { owner: BudgetOwner; resolve: () => void }[] = [];
  private sinceSample = Infinity;
  private lastRss = 0;
  private lastMajor = -Infinity;
  private timer: NodeJS.Timeout | null = null;
  /** Counters for logs and tests. */
  readonly stats = { waits: 0, passes: 0, majorCollections: 0, peakRss: 0 };

  constructor(opts: MemoryBudgetOptions) {
    if (!(opts.limit > 0)) throw new RangeError('memory budget must be positive');
    this.limit = opts.limit;
    this.soft = opts.limit - Math.max(8 * 1024 * 1024, Math.floor(opts.limit / 8));
    this.rss = opts.rss ?? (() => process.memoryUsage.rss());
    this.collect = opts.collect ?? ((type) => collector()?.({ type }));
    this.now = opts.now ?? Date.now;
    this.pollMs = opts.pollMs ?? 20;
    this.staleMs = opts.staleMs ?? 1000;
    this.sampleEvery = opts.sampleEvery ?? 256 * 1024;
  }

  /** Sessions waiting for the budget. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** The session currently allowed to go on while the process is over the soft mark. */
  get passHolder(): BudgetOwner | null {
    return this.holder;
  }

  /**
   * `owner` is about to take in `octets` more. True: go on now. False: call
   * wait(owner) and go on when it resolves.
   */
  tryEnter(owner: BudgetOwner, octets = 0): boolean {
    if (this.holder === owner) {
      this.holderSeen = this.now();
      return true;
    }
    if (this.waiters.length > 0) return false;
    this.sinceSample += octets;
    if (this.sinceSample < this.sampleEvery && this.lastRss < this.soft) return true;
    if (this.relieved()) return true;
    if (this.holder !== null) return false;
    this.grant(owner);
    return true;
  }

  /** Resolves when `owner` may go on (see tryEnter). */
  wait(owner: BudgetOwner): Promise<void> {
    this.stats.waits++;
    return new Promise((resolve) => {
      this.waiters.push({ owner, resolve });
      this.arm();
    });
  }

  /** Convenience: tryEnter, else wait. */
  async enter(owner: BudgetOwner, octets = 0): Promise<void> {
    if (!this.tryEnter(owner, octets)) await this.wait(owner);
  }

  /** `owner`'s command is over (or its session ended): it gives up the pass. */
  release(owner: BudgetOwner): void {
    if (this.holder !== owner) return;
    this.holder = null;
    this.dispatch();
  }

  /** `owner` is gone: it leaves the queue and gives up the pass. */
  forget(owner: BudgetOwner): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i]!.owner === owner) this.waiters.splice(i, 1)[0]!.resolve();
    }
    this.release(owner);
  }

  /** One check of the waiting sessions (the timer calls it). */
  poll(): void {
    if (this.holder !== null && this.now() - this.holderSeen >= this.staleMs) this.holder = null;
    this.dispatch();
  }

  private dispatch(): void {
    if (this.waiters.length === 0) {
      this.disarm();
      return;
    }
    if (this.relieved()) {
      const all = this.waiters.splice(0);
      for (const w of all) w.resolve();
      this.disarm();
      return;
    }
    if (this.holder === null) {
      const next = this.waiters.shift()!;
      this.grant(next.owner);
      next.resolve();
    }
    if (this.waiters.length === 0) this.disarm();
  }

  private grant(owner: BudgetOwner): void {
    this.holder = owner;
    this.holderSeen = this.now();
    this.stats.passes++;
  }

  /** Samples the resident size; over the soft mark, collects garbage first. True when under it. */
  private relieved(): boolean {
    this.sinceSample = 0;
    if (this.sample() < this.soft) return true;
    this.collect('minor');
    if (this.sample() < this.soft) return true;
    const t = this.now();
    if (t - this.lastMajor < MAJOR_GC_INTERVAL_MS) return false;
    this.lastMajor = t;
    this.stats.majorCollections++;
    this.collect('major');
    return this.sample() < this.soft;
  }

  private sample(): number {
    const r = this.rss();
    this.lastRss = r;
    if (r > this.stats.peakRss) this.stats.peakRss = r;
    return r;
  }

  private arm(): void {
    if (this.timer !== null || this.pollMs <= 0) return;
    this.timer = setInterval(() => this.poll(), this.pollMs);
    this.timer.unref?.();
  }

  private disarm(): void {
    if (this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
  }
}
