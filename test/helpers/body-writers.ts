/**
 * Body writers that refuse chunks and drain later, as a slow disk or a
 * file stream does: the parser's and the reader's backpressure tests feed
 * bodies into them.
 */
import type { BodySink, BodyWriter } from '../../transforms/index.js';

/** Fires a refused chunk's drain at some later point (a timer, a microtask...). */
export type DrainLater = (fire: () => void) => void;

export interface LaggingWriterOptions {
  /**
   * Told every chunk: null accepts it (write() returns true); a DrainLater
   * refuses it (write() returns false) and is handed the drain to fire.
   */
  onWrite(chunk: Buffer): DrainLater | null;
  /** Told when the body ends. */
  onEnd?(): void;
}

/**
 * A writer whose refused chunks drain when their DrainLater fires. Each
 * drain callback fires at most once, and none after end() or abort(): like
 * fs.WriteStream, no 'drain' comes after the end.
 */
export function laggingWriter(opts: LaggingWriterOptions): BodyWriter {
  let drain: (() => void) | null = null;
  let closed = false;
  const fire = (): void => {
    const cb = drain;
    drain = null;
    if (!closed) cb?.();
  };
  return {
    write(chunk) {
      const later = opts.onWrite(chunk);
      if (later === null) return true;
      later(fire);
      return false;
    },
    onDrain(cb) {
      drain = cb;
    },
    end() {
      closed = true;
      opts.onEnd?.();
      return { done: Promise.resolve(), ref: null };
    },
    abort() {
      closed = true;
    },
  };
}

/** A sink whose every body goes to a laggingWriter with these options. */
export function laggingSink(opts: LaggingWriterOptions): BodySink {
  return { open: () => laggingWriter(opts) };
}

/** Drains one millisecond later, like a slow disk. */
export const drainSoon: DrainLater = (fire) => void setTimeout(fire, 1);
